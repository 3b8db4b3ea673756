package container

import (
	"encoding/binary"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// zstdLevel is the encoder level writers use; see README.md for why.
const zstdLevel = zstd.SpeedFastest

// The zstd encoder and decoder are shared: EncodeAll and DecodeAll may be
// called concurrently.
var (
	zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
		e, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstdLevel),
			zstd.WithEncoderCRC(false), // the AEAD tag covers the frame
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithZeroFrames(true),
		)
		if err != nil {
			panic("container: creating zstd encoder: " + err.Error())
		}
		return e
	})
	zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(1<<maxChunkLog2),
			zstd.WithDecoderMaxWindow(1<<maxChunkLog2),
			// DecodeAll never writes past cap(dst): that is the
			// per-chunk output limit of C bytes.
			zstd.WithDecodeAllCapLimit(true),
		)
		if err != nil {
			panic("container: creating zstd decoder: " + err.Error())
		}
		return d
	})
)

// Pooled buffers, one pool per chunk size. They hold a chunk's plaintext,
// its sealed form, its decrypted body or its zstd frame, so they have room
// for C bytes plus the worst-case growth of zstd on incompressible data.
var bufPools [maxChunkLog2 - minChunkLog2 + 1]sync.Pool

func bufCap(l uint8) int { return 1<<l + 1<<(l-7) + 512 }

func getBuf(l uint8) *[]byte {
	if b, ok := bufPools[l-minChunkLog2].Get().(*[]byte); ok {
		*b = (*b)[:0]
		return b
	}
	b := make([]byte, 0, bufCap(l))
	return &b
}

func putBuf(l uint8, b *[]byte) {
	if b != nil && cap(*b) == bufCap(l) {
		bufPools[l-minChunkLog2].Put(b)
	}
}

func nonce(i uint64, final bool) [12]byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[3:11], i)
	if final {
		n[11] = 1
	}
	return n
}

// numChunks returns how many chunks a plaintext of n bytes has: at least
// one, and the last one is empty only if n is 0.
func numChunks(n int, l uint8) int {
	if n == 0 {
		return 1
	}
	return (n-1)>>l + 1
}

// sealChunk appends chunk i, length field included, to dst. It seals in
// place: with cap(dst)-len(dst) >= len(plain)+chunkOverhead it does not
// allocate. scratch (a pooled buffer) holds the zstd frame while it is
// compared with the plaintext.
// sampleSize is how much of a chunk worthCompressing tries first.
const sampleSize = 32 << 10

// worthCompressing compresses a sample from the start of a large chunk and
// says whether the whole chunk is worth trying: random data, media and
// already-compressed files fail the sample, which costs about 3 % of
// compressing the chunk. This is writer policy only; the format allows
// either encoding for any chunk.
func worthCompressing(plain, scratch []byte) bool {
	if len(plain) < 4*sampleSize {
		return true
	}
	z := zstdEncoder().EncodeAll(plain[:sampleSize], scratch[:0])
	return len(z) < sampleSize*97/100
}

func (s *stream) sealChunk(dst, scratch []byte, i uint64, final bool, plain []byte) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	bodyStart := len(dst)
	stored := false
	if s.compress && len(plain) > 0 && worthCompressing(plain, scratch) {
		if z := zstdEncoder().EncodeAll(plain, scratch[:0]); len(z) < len(plain) {
			dst = append(dst, encodingZstd)
			dst = append(dst, z...)
			stored = true
		}
	}
	if !stored {
		dst = append(dst, encodingRaw)
		dst = append(dst, plain...)
	}
	n := nonce(i, final)
	dst = s.aead.Seal(dst[:bodyStart], n[:], dst[bodyStart:], s.aad[:])
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-bodyStart))
	return dst
}

// openChunk authenticates and decodes sealed chunk i (without its length
// field), appending its plaintext to dst. atEOF says whether the chunk is
// followed by the end of the input, which makes it the final chunk.
// scratch needs room for len(sealed) bytes. Nothing is appended unless the
// chunk is valid.
func (s *stream) openChunk(dst, scratch []byte, i uint64, atEOF bool, sealed []byte) ([]byte, error) {
	n := nonce(i, atEOF)
	body, err := s.aead.Open(scratch[:0], n[:], sealed, s.aad[:])
	if err != nil {
		// Tell truncation at a chunk boundary and trailing data from
		// corruption: only an error path pays for the second try.
		n = nonce(i, !atEOF)
		if _, err2 := s.aead.Open(scratch[:0], n[:], sealed, s.aad[:]); err2 == nil {
			if atEOF {
				return dst, integrityError("truncated: no final chunk (input ends after chunk %d)", i)
			}
			return dst, integrityError("trailing data after the final chunk (chunk %d)", i)
		}
		return dst, integrityError("chunk %d: authentication failed", i)
	}
	encoding, data := body[0], body[1:]
	start := len(dst)
	switch encoding {
	case encodingRaw:
		if len(data) > s.chunkSize {
			return dst, integrityError("chunk %d: holds %d bytes, more than the chunk size %d", i, len(data), s.chunkSize)
		}
		dst = append(dst, data...)
	case encodingZstd:
		if !s.compress {
			return dst, integrityError("chunk %d: compressed, but the header says the object is not", i)
		}
		dst, err = s.decodeZstd(dst, data, i)
		if err != nil {
			return dst[:start], err
		}
	default:
		return dst, integrityError("chunk %d: unknown encoding %d", i, encoding)
	}
	got := len(dst) - start
	switch {
	case !atEOF && got != s.chunkSize:
		return dst[:start], integrityError("chunk %d: holds %d bytes, but only the final chunk may hold fewer than %d", i, got, s.chunkSize)
	case atEOF && got == 0 && i > 0:
		return dst[:start], integrityError("chunk %d: the final chunk is empty", i)
	}
	return dst, nil
}

// decodeZstd appends the zstd frame's content to dst, refusing anything
// that would decode to more than the chunk size (a zstd bomb).
func (s *stream) decodeZstd(dst, frame []byte, i uint64) ([]byte, error) {
	var h zstd.Header
	if err := h.Decode(frame); err != nil {
		return dst, integrityError("chunk %d: bad zstd frame header: %v", i, err)
	}
	if h.Skippable {
		return dst, integrityError("chunk %d: zstd data is a skippable frame", i)
	}
	if h.DictionaryID != 0 {
		return dst, integrityError("chunk %d: zstd frame needs dictionary %d", i, h.DictionaryID)
	}
	if h.HasFCS && h.FrameContentSize > uint64(s.chunkSize) {
		return dst, integrityError("chunk %d: zstd frame declares %d bytes, more than the chunk size %d", i, h.FrameContentSize, s.chunkSize)
	}
	need := s.chunkSize
	if h.HasFCS {
		need = int(h.FrameContentSize)
	}
	dst = slices.Grow(dst, need)
	start := len(dst)
	limit := min(cap(dst)-start, s.chunkSize)
	out, err := zstdDecoder().DecodeAll(frame, dst[start:start:start+limit])
	if err != nil {
		if err == zstd.ErrDecoderSizeExceeded {
			return dst, integrityError("chunk %d: zstd frame decodes to more than the chunk size %d", i, s.chunkSize)
		}
		return dst, integrityError("chunk %d: bad zstd frame: %v", i, err)
	}
	if len(out) > s.chunkSize {
		return dst, integrityError("chunk %d: zstd frame decodes to more than the chunk size %d", i, s.chunkSize)
	}
	if len(out) > 0 && &out[0] != &dst[start : start+1][0] {
		// Not decoded in place (cannot happen with the cap limit, but
		// cheap to be sure of).
		return append(dst, out...), nil
	}
	return dst[:start+len(out)], nil
}

// forEach calls fn(worker, i) for i in [0, n) on up to workers goroutines.
func forEach(n, workers int, fn func(worker, i int)) {
	workers = min(workers, n)
	if workers <= 1 {
		for i := range n {
			fn(0, i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(w, i)
			}
		})
	}
	wg.Wait()
}
