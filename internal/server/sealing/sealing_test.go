package sealing

import (
	"bytes"
	"crypto/rand"
	"crypto/sha3"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// XAES-256-GCM test vectors from https://c2sp.org/XAES-256-GCM.
func TestXAESVectors(t *testing.T) {
	for _, v := range []struct {
		key  byte
		aad  string
		want string
	}{
		{0x01, "", "ce546ef63c9cc60765923609b33a9a1974e96e52daf2fcf7075e2271"},
		{0x03, "c2sp.org/XAES-256-GCM", "986ec1832593df5443a179437fd083bf3fdb41abd740a21f71eb769d"},
	} {
		x, err := newXAES(bytes.Repeat([]byte{v.key}, 32))
		if err != nil {
			t.Fatal(err)
		}
		nonce := []byte("ABCDEFGHIJKLMNOPQRSTUVWX")
		ct := x.seal(nil, nonce, []byte("XAES-256-GCM"), []byte(v.aad))
		if got := hex.EncodeToString(ct); got != v.want {
			t.Errorf("key %#x: got %s, want %s", v.key, got, v.want)
		}
		if pt, err := x.open(nil, nonce, ct, []byte(v.aad)); err != nil || string(pt) != "XAES-256-GCM" {
			t.Errorf("open: %q %v", pt, err)
		}
	}
}

// The accumulated vector of c2sp.org/XAES-256-GCM (10,000 iterations).
func TestXAESAccumulated(t *testing.T) {
	s, d := sha3.NewSHAKE128(), sha3.NewSHAKE128()
	for range 10_000 {
		key := make([]byte, 32)
		s.Read(key)
		nonce := make([]byte, 24)
		s.Read(nonce)
		n := make([]byte, 1)
		s.Read(n)
		plaintext := make([]byte, int(n[0]))
		s.Read(plaintext)
		s.Read(n)
		aad := make([]byte, int(n[0]))
		s.Read(aad)
		x, _ := newXAES(key)
		ct := x.seal(nil, nonce, plaintext, aad)
		if pt, err := x.open(nil, nonce, ct, aad); err != nil || !bytes.Equal(pt, plaintext) {
			t.Fatal("round trip", err)
		}
		d.Write(ct)
	}
	sum := make([]byte, 32)
	d.Read(sum)
	if got := hex.EncodeToString(sum); got != "e6b9edf2df6cec60c8cbd864e2211b597fb69a529160cd040d56c0c210081939" {
		t.Errorf("got %s", got)
	}
}

func testKey(t testing.TB) *SoftKey {
	var s [32]byte
	rand.Read(s[:])
	return NewKey(&s, "test key")
}

func TestSoftKey(t *testing.T) {
	k := testKey(t)
	aad := AAD("coffer vault v1 record", bytes.Repeat([]byte{7}, 32))
	msg := []byte("account value")
	s1, _ := k.Seal(aad, msg)
	s2, _ := k.Seal(aad, msg)
	if bytes.Equal(s1, s2) || len(s1) != len(msg)+Overhead || s1[0] != VersionXAES {
		t.Fatalf("sealed %x", s1)
	}
	if got, err := k.Open(aad, s1); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("open: %q %v", got, err)
	}
	for name, f := range map[string]func() ([]byte, []byte){
		"other aad":     func() ([]byte, []byte) { return AAD("coffer vault v1 record", bytes.Repeat([]byte{8}, 32)), s1 },
		"other purpose": func() ([]byte, []byte) { return AAD("coffer vault v1 raft log", bytes.Repeat([]byte{7}, 32)), s1 },
		"flipped bit": func() ([]byte, []byte) {
			b := bytes.Clone(s1)
			b[len(b)/2] ^= 0x10
			return aad, b
		},
	} {
		a, s := f()
		if _, err := k.Open(a, s); !errors.Is(err, ErrAuthentication) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := testKey(t).Open(aad, s1); !errors.Is(err, ErrAuthentication) || !strings.Contains(err.Error(), "test key (key id") {
		t.Errorf("other key: %v", err)
	}
	v := bytes.Clone(s1)
	v[0] = 9
	if _, err := k.Open(aad, v); !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("version: %v", err)
	}
	if _, err := k.Open(aad, s1[:Overhead-1]); !errors.Is(err, ErrFormat) {
		t.Errorf("short: %v", err)
	}
	// An empty plaintext seals and opens.
	e, _ := k.Seal(nil, nil)
	if got, err := k.Open(nil, e); err != nil || len(got) != 0 {
		t.Errorf("empty: %v", err)
	}
}

func TestKeyIDAndSubkey(t *testing.T) {
	var s [32]byte
	k := NewKey(&s, "")
	if k.ID() != KeyID(&s) || len(k.ID()) != 16 || !strings.Contains(k.Name(), k.ID()) {
		t.Fatal(k.Name())
	}
	// The AEAD key is a subkey, not the secret itself.
	x, _ := newXAES(s[:])
	sealed, _ := k.Seal([]byte("a"), []byte("b"))
	if _, err := x.open(nil, sealed[1:25], sealed[25:], versionedAAD(1, []byte("a"))); err == nil {
		t.Fatal("the raw secret opens sealed values")
	}
}

func TestAADUnambiguousForFixedLayouts(t *testing.T) {
	if bytes.Equal(AAD("a", []byte("b")), AAD("ab")) {
		t.Fatal("purpose and parts run together")
	}
}

func TestWrappedKey(t *testing.T) {
	kek := testKey(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "data.key")
	var fleet [32]byte
	rand.Read(fleet[:])
	dk, err := CreateWrappedKey(kek, path, &fleet)
	if err != nil {
		t.Fatal(err)
	}
	if dk.ID() != KeyID(&fleet) {
		t.Fatal("data key is not the given secret")
	}
	if _, err := CreateWrappedKey(kek, path, nil); err == nil {
		t.Fatal("overwrote a wrapped key")
	}
	raw, _ := os.ReadFile(path)
	if bytes.Contains(raw, fleet[:]) {
		t.Fatal("data key in the clear")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	dk2, err := LoadWrappedKey(kek, path)
	if err != nil || dk2.ID() != dk.ID() {
		t.Fatal(err)
	}
	if _, err := LoadWrappedKey(testKey(t), path); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("other kek: %v", err)
	}
	// Editing the key id breaks the binding.
	edited := bytes.Replace(raw, []byte(dk.ID()), []byte("0000000000000000"), 1)
	if _, err := UnwrapSecret(kek, edited); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("edited key id: %v", err)
	}
}

func TestWrapFile(t *testing.T) {
	k := testKey(t)
	secret := []byte(`{"coffer_fleet_secrets":1,"opaque_oprf_seed":"c2VjcmV0"}`)
	f, err := WrapFile(k, "fleet secrets", secret)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(f, []byte("c2VjcmV0")) || !IsWrappedFile(f) || IsWrappedFile(secret) {
		t.Fatalf("%s", f)
	}
	if got, err := UnwrapFile(k, "fleet secrets", f); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("%q %v", got, err)
	}
	if _, err := UnwrapFile(k, "other", f); !errors.Is(err, ErrFormat) {
		t.Fatalf("purpose: %v", err)
	}
	// Relabelling the purpose does not help: it is bound.
	relabelled := bytes.Replace(f, []byte(`"fleet secrets"`), []byte(`"other"`), 1)
	if _, err := UnwrapFile(k, "other", relabelled); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("relabelled: %v", err)
	}
	if _, err := UnwrapFile(testKey(t), "fleet secrets", f); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("other key: %v", err)
	}
	path := filepath.Join(t.TempDir(), "secrets.sealed")
	if err := WriteWrappedFile(k, path, "fleet secrets", secret); err != nil {
		t.Fatal(err)
	}
	if err := WriteWrappedFile(k, path, "fleet secrets", secret); err == nil {
		t.Fatal("overwrote")
	}
	if got, err := ReadWrappedFile(k, path, "fleet secrets"); err != nil || !bytes.Equal(got, secret) {
		t.Fatal(err)
	}
}

func TestMarkAdvance(t *testing.T) {
	cur := Mark{Index: 10, Term: 2, Digest: [32]byte{1}}
	for _, c := range []struct {
		next Mark
		want error
	}{
		{cur, nil},
		{Mark{Index: 11, Term: 2}, nil},
		{Mark{Index: 11, Term: 3}, nil},
		{Mark{Index: 9, Term: 2}, ErrRollback},
		{Mark{Index: 12, Term: 1}, ErrRollback},
		{Mark{Index: 10, Term: 2, Digest: [32]byte{2}}, ErrMarkConflict},
		{Mark{Index: 10, Term: 3, Digest: [32]byte{1}}, ErrMarkConflict},
	} {
		if err := cur.CheckAdvance(c.next); !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("%v → %v: %v, want %v", cur, c.next, err, c.want)
		}
	}
	b, _ := cur.MarshalBinary()
	var m Mark
	if err := m.UnmarshalBinary(b); err != nil || m != cur {
		t.Fatal(m, err)
	}
	if err := m.UnmarshalBinary(b[1:]); err == nil {
		t.Fatal("short mark decoded")
	}
}

func sealStream(t testing.TB, k Key, aad, plain []byte) ([]byte, int) {
	var buf bytes.Buffer
	w, err := NewStreamWriter(&buf, k, aad)
	if err != nil {
		t.Fatal(err)
	}
	// Odd write sizes exercise the chunk boundaries.
	for p := plain; len(p) > 0; {
		n := min(len(p), 7777)
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), w.HeaderSize()
}

func openStream(k Key, aad, sealed []byte) ([]byte, error) {
	r, err := NewStreamReader(bytes.NewReader(sealed), k, aad)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func TestStream(t *testing.T) {
	k := testKey(t)
	aad := []byte("snapshot 7/2")
	C := StreamChunkSize
	for _, n := range []int{0, 1, C - 1, C, C + 1, 3 * C, 3*C + 5} {
		plain := make([]byte, n)
		rand.Read(plain)
		sealed, hdr := sealStream(t, k, aad, plain)
		if int64(len(sealed)) != StreamSealedSize(int64(n), int64(hdr)) {
			t.Fatalf("%d: sealed %d bytes, expected %d", n, len(sealed), StreamSealedSize(int64(n), int64(hdr)))
		}
		if p, err := StreamPlaintextSize(int64(len(sealed)), int64(hdr)); err != nil || p != int64(n) {
			t.Fatalf("%d: plaintext size %d %v", n, p, err)
		}
		got, err := openStream(k, aad, sealed)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if n >= 16 && bytes.Contains(sealed, plain[:16]) {
			t.Fatal("plaintext visible")
		}
		// Every truncation is an error.
		for _, cut := range []int{len(sealed) - 1, len(sealed) - 16, hdr + C + 16, hdr + 2*(C+16), hdr, hdr - 1, 3} {
			if cut < 0 || cut >= len(sealed) {
				continue
			}
			if _, err := openStream(k, aad, sealed[:cut]); err == nil {
				t.Fatalf("%d bytes truncated to %d opened", n, cut)
			}
		}
		if _, err := openStream(k, append(aad, '!'), sealed); !errors.Is(err, ErrAuthentication) {
			t.Fatalf("wrong aad: %v", err)
		}
		if _, err := openStream(testKey(t), aad, sealed); !errors.Is(err, ErrAuthentication) {
			t.Fatalf("wrong key: %v", err)
		}
		if _, err := openStream(k, aad, append(bytes.Clone(sealed), 0)); err == nil {
			t.Fatalf("%d: trailing byte accepted", n)
		}
	}
	// Swapped chunks and a flipped bit.
	plain := make([]byte, 3*C)
	rand.Read(plain)
	sealed, hdr := sealStream(t, k, aad, plain)
	sw := bytes.Clone(sealed)
	c0, c1 := sw[hdr:hdr+C+16], sw[hdr+C+16:hdr+2*(C+16)]
	tmp := bytes.Clone(c0)
	copy(c0, c1)
	copy(c1, tmp)
	if _, err := openStream(k, aad, sw); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("swapped chunks: %v", err)
	}
	fl := bytes.Clone(sealed)
	fl[hdr+C] ^= 1
	if _, err := openStream(k, aad, fl); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("flipped bit: %v", err)
	}
	// Dropping the final (empty) chunk of a stream that is a whole number
	// of chunks.
	if _, err := openStream(k, aad, sealed[:len(sealed)-16]); err == nil {
		t.Fatal("dropped final chunk accepted")
	}
	if _, err := StreamPlaintextSize(int64(hdr+C+16), int64(hdr)); err == nil {
		t.Fatal("size without a final chunk accepted")
	}
}

func BenchmarkSoftKeySeal300(b *testing.B) {
	k := testKey(b)
	aad := AAD("coffer vault v1 record", make([]byte, 32))
	v := make([]byte, 300)
	b.SetBytes(300)
	for b.Loop() {
		k.Seal(aad, v)
	}
}

func BenchmarkSoftKeyOpen300(b *testing.B) {
	k := testKey(b)
	aad := AAD("coffer vault v1 record", make([]byte, 32))
	s, _ := k.Seal(aad, make([]byte, 300))
	b.SetBytes(300)
	for b.Loop() {
		if _, err := k.Open(aad, s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStream(b *testing.B) {
	k := testKey(b)
	plain := make([]byte, 8<<20)
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		w, _ := NewStreamWriter(io.Discard, k, nil)
		w.Write(plain)
		w.Close()
	}
}

// TestDeriveKey: subkeys are deterministic per key and purpose, differ
// between purposes and keys, and are not the sealing key's secret.
func TestDeriveKey(t *testing.T) {
	var s1, s2 [32]byte
	s1[0], s2[0] = 1, 2
	k1, k2 := NewKey(&s1, "a"), NewKey(&s2, "b")
	a, b := k1.DeriveKey("p"), NewKey(&s1, "again").DeriveKey("p")
	if len(a) != 32 || !bytes.Equal(a, b) {
		t.Fatal("not deterministic")
	}
	if bytes.Equal(a, k1.DeriveKey("q")) || bytes.Equal(a, k2.DeriveKey("p")) || bytes.Equal(a, s1[:]) {
		t.Fatal("subkeys collide")
	}
}

// TestMarkFirstWrite: anything replaces the zero mark, a first mark at
// index 0 included; after it, the usual rules.
func TestMarkFirstWrite(t *testing.T) {
	first := Mark{Digest: [32]byte{1}}
	if err := (Mark{}).CheckAdvance(first); err != nil {
		t.Fatal(err)
	}
	if err := first.CheckAdvance(Mark{Index: 0, Digest: [32]byte{2}}); !errors.Is(err, ErrMarkConflict) {
		t.Fatalf("other digest at index 0: %v", err)
	}
	if err := first.CheckAdvance(Mark{Index: 5, Term: 1}); err != nil {
		t.Fatal(err)
	}
}
