package container

import (
	"bytes"
	"crypto/rand"
	"testing"
)

func TestAppendSealOpen(t *testing.T) {
	var key [32]byte
	rand.Read(key[:])
	ref := Ref([16]byte{1}, "data/x")
	for _, size := range []int{0, 1, 1 << 16, 3<<16 + 5} {
		plain := make([]byte, size)
		rand.Read(plain[:size/2]) // half random, half zeros: some chunks compress
		for _, compress := range []bool{false, true} {
			p := Params{Kind: KindData, Ref: ref, ChunkLog2: 16, Compress: compress}
			prefix := []byte("prefix")
			sealed, err := AppendSeal(append([]byte(nil), prefix...), &key, p, plain)
			if err != nil || !bytes.HasPrefix(sealed, prefix) {
				t.Fatalf("AppendSeal: %v", err)
			}
			body := sealed[len(prefix):]
			for _, spare := range []int{0, size + 100} {
				dst := make([]byte, 3, 3+spare)
				copy(dst, "abc")
				out, err := AppendOpen(dst, &key, KindData, ref, body, 2)
				if err != nil {
					t.Fatalf("AppendOpen(size %d, spare %d): %v", size, spare, err)
				}
				if string(out[:3]) != "abc" || !bytes.Equal(out[3:], plain) {
					t.Fatalf("AppendOpen(size %d, spare %d) gave wrong plaintext", size, spare)
				}
				if spare > 0 && size > 0 && &out[0] != &dst[0] {
					t.Fatalf("AppendOpen did not use the spare capacity")
				}
			}
			bad := bytes.Clone(body)
			bad[len(bad)-1] ^= 1
			if _, err := AppendOpen(make([]byte, 0, size+10), &key, KindData, ref, bad, 1); err == nil {
				t.Fatal("tampered container opened")
			}
		}
	}
}
