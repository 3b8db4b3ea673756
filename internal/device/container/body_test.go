package container

import (
	"bytes"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// Chunks that only a key holder could make but that break the format's
// rules: a reader must refuse them all.
func TestForgedChunkBodies(t *testing.T) {
	key := testKey(4)
	c := smallC
	zhdr, _ := splitContainer(t, mustSeal(t, key, Params{Kind: KindData, Ref: testRef, ChunkLog2: smallLog2, Compress: true}, nil))
	rhdr, _ := splitContainer(t, mustSeal(t, key, Params{Kind: KindData, Ref: testRef, ChunkLog2: smallLog2}, nil))

	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	frame := func(n int) []byte { return enc.EncodeAll(make([]byte, n), nil) }
	// A frame without a content size in its header: the streaming
	// encoder does not know the size in advance.
	frameNoFCS := func(n int) []byte {
		var b bytes.Buffer
		w, _ := zstd.NewWriter(&b)
		w.Write(make([]byte, n))
		w.Close()
		var h zstd.Header
		if err := h.Decode(b.Bytes()); err != nil || h.HasFCS {
			t.Fatalf("streamed frame has a content size (%v)", err)
		}
		return b.Bytes()
	}
	z := func(f []byte) []byte { return append([]byte{encodingZstd}, f...) }
	raw := func(n int) []byte { return append([]byte{encodingRaw}, make([]byte, n)...) }
	full := sealedChunk(t, key, zhdr, 0, false, raw(c))
	fullR := sealedChunk(t, key, rhdr, 0, false, raw(c))

	for _, tc := range []struct {
		name   string
		hdr    []byte
		chunks [][]byte
		want   string
	}{
		{"zstd bomb in final chunk", zhdr, [][]byte{sealedChunk(t, key, zhdr, 0, true, z(frame(c+1)))},
			"chunk 0: zstd frame declares 65537 bytes, more than the chunk size 65536"},
		{"big zstd bomb", zhdr, [][]byte{sealedChunk(t, key, zhdr, 0, true, z(frame(1<<25)))},
			"chunk 0: zstd frame declares 33554432 bytes"},
		{"zstd bomb without content size", zhdr, [][]byte{sealedChunk(t, key, zhdr, 0, true, z(frameNoFCS(64*c)))},
			"chunk 0: zstd frame decodes to more than the chunk size 65536"},
		{"zstd bomb in middle chunk", zhdr, [][]byte{full, sealedChunk(t, key, zhdr, 1, false, z(frameNoFCS(2*c))), sealedChunk(t, key, zhdr, 2, true, raw(1))},
			"chunk 1: zstd frame decodes to more than the chunk size"},
		{"zstd chunk without compression", rhdr, [][]byte{sealedChunk(t, key, rhdr, 0, true, z(frame(100)))},
			"chunk 0: compressed, but the header says the object is not"},
		{"bad zstd frame", zhdr, [][]byte{sealedChunk(t, key, zhdr, 0, true, z([]byte("not zstd")))},
			"chunk 0: bad zstd frame header"},
		{"cut zstd frame", zhdr, [][]byte{sealedChunk(t, key, zhdr, 0, true, z(enc.EncodeAll(chatText(5000, 1), nil)[:100]))},
			"chunk 0: bad zstd frame"},
		{"unknown encoding", zhdr, [][]byte{sealedChunk(t, key, zhdr, 0, true, append([]byte{2}, 'x'))},
			"chunk 0: unknown encoding 2"},
		{"short non-final raw chunk", rhdr, [][]byte{sealedChunk(t, key, rhdr, 0, false, raw(c-1)), sealedChunk(t, key, rhdr, 1, true, raw(1))},
			"chunk 0: holds 65535 bytes, but only the final chunk may hold fewer than 65536"},
		{"short non-final zstd chunk", zhdr, [][]byte{sealedChunk(t, key, zhdr, 0, false, z(frame(c-1))), sealedChunk(t, key, zhdr, 1, true, raw(1))},
			"chunk 0: holds 65535 bytes"},
		{"empty final chunk after a full one", rhdr, [][]byte{fullR, sealedChunk(t, key, rhdr, 1, true, raw(0))},
			"chunk 1: the final chunk is empty"},
		{"empty final zstd chunk after a full one", zhdr, [][]byte{full, sealedChunk(t, key, zhdr, 1, true, z(frame(0)))},
			"chunk 1: the final chunk is empty"},
		{"two final chunks", rhdr, [][]byte{sealedChunk(t, key, rhdr, 0, true, raw(5)), sealedChunk(t, key, rhdr, 1, true, raw(5))},
			"trailing data after the final chunk (chunk 0)"},
		{"no final chunk", rhdr, [][]byte{sealedChunk(t, key, rhdr, 0, false, raw(c))},
			"truncated: no final chunk (input ends after chunk 0)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := join(tc.hdr, tc.chunks...)
			_, prefix, err := openBoth(t, key, KindData, testRef, bad)
			wantErr(t, err, ErrIntegrity, tc.want)
			if len(prefix)%c != 0 {
				t.Fatalf("reader released %d bytes", len(prefix))
			}
		})
	}

	// What the rules allow, a reader accepts, even if no Coffer writer
	// makes it: a zstd chunk that does not shrink, a streamed frame, an
	// empty zstd chunk 0, a full final chunk.
	plain := chatText(c+10, 2)
	for _, tc := range []struct {
		name   string
		chunks [][]byte
		plain  []byte
	}{
		{"stored frame", [][]byte{sealedChunk(t, key, zhdr, 0, true, z(frameNoFCS(100)))}, make([]byte, 100)},
		{"empty zstd chunk 0", [][]byte{sealedChunk(t, key, zhdr, 0, true, z(frame(0)))}, nil},
		{"zstd full final", [][]byte{sealedChunk(t, key, zhdr, 0, true, z(enc.EncodeAll(plain[:c], nil)))}, plain[:c]},
		{"zstd then raw", [][]byte{sealedChunk(t, key, zhdr, 0, false, z(enc.EncodeAll(plain[:c], nil))), sealedChunk(t, key, zhdr, 1, true, append([]byte{0}, plain[c:]...))}, plain},
	} {
		got, _, err := openBoth(t, key, KindData, testRef, join(zhdr, tc.chunks...))
		if err != nil || !bytes.Equal(got, tc.plain) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
