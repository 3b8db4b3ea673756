package wire

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cofferhq/coffer/internal/protocol/vaultv1"
)

// Every request pads to one block whatever its operation, and every
// response likewise; the padding survives a round trip unread.
func TestPaddingHidesTheOperation(t *testing.T) {
	reqs := []*vaultv1.Request{
		{Account: "a", RequestId: make([]byte, 16), Op: &vaultv1.Request_Status{Status: &vaultv1.Status{}}},
		{Account: "someone@example.com", RequestId: make([]byte, 16), VaultToken: string(bytes.Repeat([]byte("t"), 300)),
			Op: &vaultv1.Request_RegisterFinish{RegisterFinish: &vaultv1.RegisterFinish{
				RegistrationRecord: make([]byte, 192), WrappedKey: make([]byte, 60), KeyProofHash: make([]byte, 32),
				LoginTicket: make([]byte, 32), Ksf: &vaultv1.KSFParams{Algorithm: "argon2id", Time: 2, MemoryKib: 262144, Threads: 4},
			}}},
		{Account: "x", RequestId: make([]byte, 16), Op: &vaultv1.Request_LoginStart{LoginStart: &vaultv1.LoginStart{Ke1: make([]byte, 96)}}},
	}
	for _, r := range reqs {
		PadRequest(r)
		b, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != RequestPadSize {
			t.Errorf("%T: %d bytes, want %d", r.GetOp(), len(b), RequestPadSize)
		}
		var back vaultv1.Request
		if err := proto.Unmarshal(b, &back); err != nil || back.GetAccount() != r.GetAccount() {
			t.Fatalf("round trip: %v", err)
		}
	}
	times := make([]int64, 100)
	for i := range times {
		times[i] = 1_800_000_000_000 + int64(i)
	}
	resps := []*vaultv1.Response{
		{RequestId: make([]byte, 16), Error: &vaultv1.Error{Code: vaultv1.Code_CODE_WRONG_PASSWORD, Message: "wrong password"}},
		{RequestId: make([]byte, 16), Result: &vaultv1.Response_LoginFinish{LoginFinish: &vaultv1.LoginFinishResult{
			WrappedKey: make([]byte, 60), FailedGuessTimesUnixMs: times, LoginTicket: make([]byte, 32), FailedGuesses: 100}}},
	}
	for _, r := range resps {
		PadResponse(r)
		if n := proto.Size(r); n != ResponsePadSize {
			t.Errorf("response: %d bytes, want %d", n, ResponsePadSize)
		}
	}
}

// Whatever the size, padding lands on a block boundary.
func TestPadLenEverySize(t *testing.T) {
	for n := 0; n < 3*RequestPadSize; n++ {
		p := padLen(n, RequestPadSize)
		if total := n + 2 + varintLen(p) + p; total%RequestPadSize != 0 || total <= n {
			t.Fatalf("n=%d: padding %d gives %d", n, p, total)
		}
	}
}
