package wire

import (
	"google.golang.org/protobuf/proto"

	"github.com/cofferhq/coffer/internal/protocol/vaultv1"
)

// Every sealed request, whatever its operation, is padded to a multiple of
// RequestPadSize bytes before sealing, and every response to a multiple of
// ResponsePadSize (PROTOCOL.md §3, "Padding"): the relay and the network
// see one size for every request of today's protocol and one for every
// answer, so lengths tell nobody whether a request registers, logs in or
// asks for status, or whether an account has a record. The largest request
// (RegisterFinish with a ticket) and the largest answer (LoginFinish with a
// full guess history of MaxGuessLimit times) fit in one block each.
const (
	RequestPadSize  = 1024
	ResponsePadSize = 2048
)

// PadRequest sets req.Padding so that req marshals to a multiple of
// RequestPadSize bytes.
func PadRequest(req *vaultv1.Request) {
	req.Padding = nil
	req.Padding = make([]byte, padLen(proto.Size(req), RequestPadSize))
}

// PadResponse sets resp.Padding so that resp marshals to a multiple of
// ResponsePadSize bytes.
func PadResponse(resp *vaultv1.Response) {
	resp.Padding = nil
	resp.Padding = make([]byte, padLen(proto.Size(resp), ResponsePadSize))
}

// padLen is the length p of a padding field (field 100: a 2-byte key, a
// varint length, p bytes) that brings a message of n bytes to a multiple
// of block.
func padLen(n, block int) int {
	for target := (n/block + 1) * block; ; target += block {
		if n+3 > target && n != target {
			continue
		}
		for vl := 1; vl <= 3; vl++ {
			p := target - n - 2 - vl
			if p >= 0 && varintLen(p) == vl {
				return p
			}
		}
	}
}

func varintLen(v int) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
