//go:build cgo

package pkcs11

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/cofferhq/coffer/internal/server/sealing"
	"github.com/cofferhq/coffer/internal/server/sealing/pkcs11/softhsmtest"
)

func cfg(module, token, key string) Config {
	return Config{Module: module, TokenLabel: token, PIN: softhsmtest.PIN, KeyLabel: key}
}

func TestTokenKeySealOpen(t *testing.T) {
	module := softhsmtest.Setup(t, "vault0", "vault1")

	if _, err := Open(cfg(module, "vault0", "seal")); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Open before GenerateKey: %v, want ErrNoKey", err)
	}
	tok, err := GenerateKey(cfg(module, "vault0", "seal"))
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	if _, err := GenerateKey(cfg(module, "vault0", "seal")); !errors.Is(err, ErrKeyExists) {
		t.Fatalf("second GenerateKey: %v, want ErrKeyExists", err)
	}

	k := tok.Key()
	aad := sealing.AAD("test", []byte("record 1"))
	msg := []byte("an OPAQUE record and a wrapped key")
	sealed, err := k.Seal(aad, msg)
	if err != nil {
		t.Fatal(err)
	}
	if sealed[0] != sealing.VersionTokenGCM || len(sealed) != 1+12+len(msg)+16 {
		t.Fatalf("sealed: version %d, %d bytes", sealed[0], len(sealed))
	}
	if bytes.Contains(sealed, msg) {
		t.Fatal("plaintext visible")
	}
	got, err := k.Open(aad, sealed)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("Open: %q, %v", got, err)
	}
	// Wrong AAD, flipped bit: authentication errors.
	if _, err := k.Open(sealing.AAD("test", []byte("record 2")), sealed); !errors.Is(err, sealing.ErrAuthentication) {
		t.Fatalf("wrong aad: %v", err)
	}
	bad := bytes.Clone(sealed)
	bad[len(bad)-1] ^= 1
	if _, err := k.Open(aad, bad); !errors.Is(err, sealing.ErrAuthentication) {
		t.Fatalf("tampered: %v", err)
	}
	// Concurrent use of the session pool.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				s, err := k.Seal(aad, msg)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := k.Open(aad, s); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()

	// The key cannot be read out of the token.
	err = tok.with(func(s p11.SessionHandle) error {
		_, err := tok.mod.ctx.GetAttributeValue(s, tok.key, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)})
		return err
	})
	if !errors.Is(err, p11.Error(p11.CKR_ATTRIBUTE_SENSITIVE)) {
		t.Fatalf("reading CKA_VALUE: %v, want CKR_ATTRIBUTE_SENSITIVE", err)
	}

	// Reopening finds the same key; another token's key of the same label
	// does not open it.
	again, err := Open(cfg(module, "vault0", "seal"))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if got, err := again.Key().Open(aad, sealed); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("reopened: %q %v", got, err)
	}
	other, err := GenerateKey(cfg(module, "vault1", "seal"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Key().Open(aad, sealed); !errors.Is(err, sealing.ErrAuthentication) {
		t.Fatalf("other token: %v, want ErrAuthentication", err)
	}
}

func TestOpenErrors(t *testing.T) {
	module := softhsmtest.Setup(t, "vault0")
	if _, err := Open(Config{Module: module, TokenLabel: "vault0"}); err == nil {
		t.Fatal("no key label accepted")
	}
	if _, err := Open(cfg(module, "nope", "seal")); err == nil || !bytes.Contains([]byte(err.Error()), []byte(`no token labelled "nope"`)) {
		t.Fatalf("unknown token: %v", err)
	}
	c := cfg(module, "vault0", "seal")
	c.PIN = "9999"
	if _, err := Open(c); err == nil || !bytes.Contains([]byte(err.Error()), []byte("wrong PIN")) {
		t.Fatalf("wrong PIN: %v", err)
	}
	if _, err := Open(cfg(filepath.Join(t.TempDir(), "missing.so"), "vault0", "seal")); err == nil {
		t.Fatal("missing module accepted")
	}
}

// The envelope: the token wraps a data key once; the data key seals values
// in memory. Another token cannot unwrap it.
func TestWrappedDataKey(t *testing.T) {
	module := softhsmtest.Setup(t, "vault0", "vault1")
	tok, err := GenerateKey(cfg(module, "vault0", "seal"))
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	path := filepath.Join(t.TempDir(), "data.key")
	dk, err := sealing.CreateWrappedKey(tok.Key(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := dk.Seal([]byte("aad"), []byte("value"))
	file, _ := os.ReadFile(path)

	dk2, err := sealing.LoadWrappedKey(tok.Key(), path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := dk2.Open([]byte("aad"), sealed); err != nil || string(got) != "value" {
		t.Fatalf("reloaded data key: %q %v", got, err)
	}
	if dk2.ID() != dk.ID() || !bytes.Contains(file, []byte(dk.ID())) {
		t.Fatal("key id")
	}

	other, err := GenerateKey(cfg(module, "vault1", "seal"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, err = sealing.LoadWrappedKey(other.Key(), path)
	if !errors.Is(err, sealing.ErrAuthentication) {
		t.Fatalf("other token unwrapped the data key: %v", err)
	}
	t.Logf("wrong token: %v", err)
}

func TestMarksMonotonic(t *testing.T) {
	module := softhsmtest.Setup(t, "vault0")
	tok, err := GenerateKey(cfg(module, "vault0", "replica-a"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := tok.ReadMark()
	if err != nil || !m.IsZero() {
		t.Fatalf("initial mark %v, %v", m, err)
	}
	d := func(b byte) (x [32]byte) { x[0] = b; return }
	steps := []sealing.Mark{{Index: 10, Term: 1, Digest: d(1)}, {Index: 10, Term: 1, Digest: d(1)}, {Index: 25, Term: 2, Digest: d(2)}}
	for _, s := range steps {
		if err := tok.WriteMark(s); err != nil {
			t.Fatalf("WriteMark(%v): %v", s, err)
		}
	}
	for _, bad := range []struct {
		m    sealing.Mark
		want error
	}{
		{sealing.Mark{Index: 24, Term: 2, Digest: d(2)}, sealing.ErrRollback},
		{sealing.Mark{Index: 30, Term: 1, Digest: d(3)}, sealing.ErrRollback},
		{sealing.Mark{Index: 25, Term: 2, Digest: d(9)}, sealing.ErrMarkConflict},
		{sealing.Mark{Index: 25, Term: 3, Digest: d(2)}, sealing.ErrMarkConflict},
	} {
		if err := tok.WriteMark(bad.m); !errors.Is(err, bad.want) {
			t.Fatalf("WriteMark(%v): %v, want %v", bad.m, err, bad.want)
		}
	}
	// Marks are per key label and persist in the token.
	tok.Close()
	tok, err = Open(cfg(module, "vault0", "replica-a"))
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	if m, err := tok.ReadMark(); err != nil || m != steps[2] {
		t.Fatalf("mark after reopen: %v %v", m, err)
	}
	otherLabel, err := GenerateKey(cfg(module, "vault0", "replica-b"))
	if err != nil {
		t.Fatal(err)
	}
	defer otherLabel.Close()
	if m, err := otherLabel.ReadMark(); err != nil || !m.IsZero() {
		t.Fatalf("other label's mark: %v %v", m, err)
	}
	// A crash between creating the new object and destroying the old one
	// leaves two: the highest counts, and the next write cleans up.
	err = tok.with(func(s p11.SessionHandle) error {
		v, _ := sealing.Mark{Index: 40, Term: 3}.MarshalBinary()
		_, err := tok.mod.ctx.CreateObject(s, append(tok.markTemplate(),
			p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_PRIVATE, true), p11.NewAttribute(p11.CKA_VALUE, v)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := tok.ReadMark(); m.Index != 40 {
		t.Fatalf("two marks: read %v", m)
	}
	if err := tok.WriteMark(sealing.Mark{Index: 41, Term: 3}); err != nil {
		t.Fatal(err)
	}
	err = tok.with(func(s p11.SessionHandle) error {
		objs, err := tok.findObjects(s, tok.markTemplate())
		if len(objs) != 1 {
			t.Errorf("%d mark objects after a write", len(objs))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func benchToken(b *testing.B) sealing.Key {
	module := softhsmtest.Setup(b, "bench")
	tok, err := GenerateKey(cfg(module, "bench", "seal"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tok.Close() })
	return tok.Key()
}

func BenchmarkTokenSeal300(b *testing.B) {
	k := benchToken(b)
	aad := sealing.AAD("coffer vault v1 record", make([]byte, 32))
	v := make([]byte, 300)
	for b.Loop() {
		if _, err := k.Seal(aad, v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTokenOpen300(b *testing.B) {
	k := benchToken(b)
	aad := sealing.AAD("coffer vault v1 record", make([]byte, 32))
	s, _ := k.Seal(aad, make([]byte, 300))
	for b.Loop() {
		if _, err := k.Open(aad, s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTokenWriteMark(b *testing.B) {
	module := softhsmtest.Setup(b, "bench")
	tok, err := GenerateKey(cfg(module, "bench", "seal"))
	if err != nil {
		b.Fatal(err)
	}
	defer tok.Close()
	i := uint64(0)
	for b.Loop() {
		i++
		if err := tok.WriteMark(sealing.Mark{Index: i, Term: 1}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTokenReadMark(b *testing.B) {
	module := softhsmtest.Setup(b, "bench")
	tok, err := GenerateKey(cfg(module, "bench", "seal"))
	if err != nil {
		b.Fatal(err)
	}
	defer tok.Close()
	if err := tok.WriteMark(sealing.Mark{Index: 1, Term: 1}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := tok.ReadMark(); err != nil {
			b.Fatal(err)
		}
	}
}
