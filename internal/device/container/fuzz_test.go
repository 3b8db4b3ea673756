package container

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// FuzzOpen feeds arbitrary bytes to Open and NewReader under the key of
// the test vectors, expecting the kind and ref of one of them. Neither may
// panic, and they may succeed only on the good vectors themselves. The
// vectors (the small ones) seed the corpus; they are deterministic, so every
// fuzzing process agrees on what is valid.
func FuzzOpen(f *testing.F) {
	files, err := filepath.Glob("testdata/*_*")
	if err != nil || len(files) == 0 {
		f.Fatalf("no test vectors: %v", err)
	}
	type target struct {
		kind Kind
		ref  [32]byte
	}
	var (
		key     [32]byte
		targets []target
		valid   = map[string][]byte{} // target index and container -> plaintext
	)
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		v, err := parseVector(b)
		if err != nil {
			f.Fatalf("%s: %v", file, err)
		}
		if v.expect == "wrong_key" {
			continue
		}
		key = v.key // the same in all the others
		tg := target{v.kind, v.ref}
		idx := slices.Index(targets, tg)
		if idx < 0 {
			idx = len(targets)
			targets = append(targets, tg)
		}
		if v.expect == "ok" {
			plain, err := Open(&key, v.kind, v.ref, v.container, 1)
			if err != nil {
				f.Fatalf("%s: %v", file, err)
			}
			valid[string(rune(idx))+string(v.container)] = plain
		}
		if len(v.container) <= 8000 {
			f.Add(v.container, uint8(idx))
		}
	}

	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		idx := int(which) % len(targets)
		tg := targets[idx]
		want, isValid := valid[string(rune(idx))+string(data)]
		plain, err := Open(&key, tg.kind, tg.ref, data, 2)
		checkOutcome(t, "Open", plain, err, want, isValid)
		r, err := NewReader(bytes.NewReader(data), &key, tg.kind, tg.ref, 2)
		if err == nil {
			plain, err = io.ReadAll(r)
			if err != nil {
				plain = nil
			}
		}
		checkOutcome(t, "NewReader", plain, err, want, isValid)
	})
}

func checkOutcome(t *testing.T, what string, plain []byte, err error, want []byte, valid bool) {
	t.Helper()
	switch {
	case valid && (err != nil || !bytes.Equal(plain, want)):
		t.Fatalf("%s failed on a valid container: %v", what, err)
	case !valid && err == nil:
		t.Fatalf("%s accepted an input that is not a seeded container", what)
	case !valid && !errors.Is(err, ErrIntegrity) && !errors.Is(err, ErrWrongKey) && !errors.Is(err, ErrUnsupportedVersion):
		t.Fatalf("%s: error %v is none of the sentinel errors", what, err)
	}
}

// FuzzRoundTrip seals arbitrary plaintext with arbitrary parameters, with
// Seal and NewWriter, and opens it with Open and NewReader.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte(""), uint8(0), false, uint8(1), uint16(1))
	f.Add([]byte("hello"), uint8(1), true, uint8(2), uint16(3))
	f.Add(bytes.Repeat([]byte("chat line\n"), 100), uint8(2), true, uint8(3), uint16(100))
	key := testKey(12)
	f.Fuzz(func(t *testing.T, plain []byte, l uint8, compress bool, conc uint8, step uint16) {
		// Short plaintexts from the fuzzer; stretch some so that they
		// cover several chunks.
		if n := 3*smallC + int(step)%smallC; len(plain) > 0 && l&0x80 != 0 {
			plain = bytes.Repeat(plain, n/len(plain)+1)[:n]
		}
		p := Params{Kind: KindLock, Ref: testRef, ChunkLog2: smallLog2 + l%3, Compress: compress, Concurrency: int(conc % 5)}
		sealed := mustSeal(t, key, p, plain)
		got, err := Open(key, KindLock, testRef, sealed, int(conc%3))
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("Seal then Open: %v", err)
		}
		written := writeAll(t, key, p, plain, int(step)+1)
		if len(written) != len(sealed) && !compress {
			t.Fatalf("NewWriter wrote %d bytes, Seal %d", len(written), len(sealed))
		}
		got, err = readAll(key, KindLock, testRef, written, int(conc%4))
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("NewWriter then NewReader: %v", err)
		}
	})
}
