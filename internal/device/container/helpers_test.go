package container

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

func testKey(seed byte) *[32]byte {
	var k [32]byte
	for i := range k {
		k[i] = seed + byte(i)*7
	}
	return &k
}

var (
	testRef   = Ref([16]byte{1, 2, 3}, "data/00/0001")
	otherRef  = Ref([16]byte{1, 2, 3}, "data/00/0002")
	testKind  = KindData
	smallLog2 = uint8(minChunkLog2)
	smallC    = 1 << minChunkLog2
)

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 0xc0})
	r.Read(b)
	return b
}

func mustSeal(t testing.TB, key *[32]byte, p Params, plain []byte) []byte {
	t.Helper()
	sealed, err := Seal(key, p, plain)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return sealed
}

func writeAll(t testing.TB, key *[32]byte, p Params, plain []byte, step int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, key, p)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	for len(plain) > 0 {
		k := min(step, len(plain))
		n, err := w.Write(plain[:k])
		if err != nil || n != k {
			t.Fatalf("Write: %d, %v", n, err)
		}
		plain = plain[k:]
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return buf.Bytes()
}

// readAll opens sealed with NewReader and reads it all.
func readAll(key *[32]byte, kind Kind, ref [32]byte, sealed []byte, conc int) ([]byte, error) {
	r, err := NewReader(bytes.NewReader(sealed), key, kind, ref, conc)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// openBoth opens sealed with Open and with NewReader and checks that they
// agree: both succeed with the same plaintext, or both fail with the same
// error. The reader may have released a verified prefix; it is returned.
func openBoth(t testing.TB, key *[32]byte, kind Kind, ref [32]byte, sealed []byte) (plain, prefix []byte, err error) {
	t.Helper()
	plain, err = Open(key, kind, ref, sealed, 2)
	prefix, rerr := readAll(key, kind, ref, sealed, 2)
	if (err == nil) != (rerr == nil) {
		t.Fatalf("Open error %v, NewReader error %v", err, rerr)
	}
	if err != nil {
		if plain != nil {
			t.Fatalf("Open returned plaintext with error %v", err)
		}
		if err.Error() != rerr.Error() {
			t.Fatalf("Open error %q, NewReader error %q", err, rerr)
		}
		return nil, prefix, err
	}
	if !bytes.Equal(plain, prefix) {
		t.Fatalf("Open and NewReader disagree on the plaintext")
	}
	return plain, prefix, nil
}

func wantErr(t testing.TB, err, target error, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v (%q)", target, substr)
	}
	if !errors.Is(err, target) {
		t.Fatalf("got error %q, want one wrapping %q", err, target)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("got error %q, want it to contain %q", err, substr)
	}
}

// splitContainer cuts a well-formed container into its header and its
// chunks, each chunk with its length field.
func splitContainer(t testing.TB, b []byte) (hdr []byte, chunks [][]byte) {
	t.Helper()
	hdr, b = b[:HeaderSize], b[HeaderSize:]
	for len(b) > 0 {
		n := lengthSize + int(binary.BigEndian.Uint32(b))
		chunks = append(chunks, b[:n])
		b = b[n:]
	}
	return hdr, chunks
}

func join(hdr []byte, chunks ...[]byte) []byte {
	out := bytes.Clone(hdr)
	for _, c := range chunks {
		out = append(out, c...)
	}
	return out
}

// fixCheck recomputes the header's unkeyed check field after an edit.
func fixCheck(b []byte) []byte {
	sum := sha256.Sum256(b[:offCheck])
	copy(b[offCheck:HeaderSize], sum[:checkSize])
	return b
}
