package bundle

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSignVerifyRoundTrip(t *testing.T) {
	pub, priv, err := GenerateRoot()
	if err != nil {
		t.Fatal(err)
	}
	b := testBundle(t)
	signed, err := Sign(b, priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Verify(signed, pub, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != b.Version || got.FleetID != b.FleetID ||
		!bytes.Equal(got.HPKEPublicKey, b.HPKEPublicKey) ||
		!bytes.Equal(got.OPAQUEServerPublicKey, b.OPAQUEServerPublicKey) ||
		!got.NotBefore.Equal(b.NotBefore) || !got.NotAfter.Equal(b.NotAfter) {
		t.Fatalf("round trip changed the bundle: %+v", got)
	}
}

func TestSignRefusesBadBundles(t *testing.T) {
	_, priv, _ := GenerateRoot()
	for name, edit := range map[string]func(*Bundle){
		"version":       func(b *Bundle) { b.Version = 2 },
		"zero fleet id": func(b *Bundle) { b.FleetID = [16]byte{} },
		"short hpke":    func(b *Bundle) { b.HPKEPublicKey = b.HPKEPublicKey[:100] },
		"short opaque":  func(b *Bundle) { b.OPAQUEServerPublicKey = b.OPAQUEServerPublicKey[:31] },
		"no validity":   func(b *Bundle) { b.NotAfter = time.Time{} },
		"backwards":     func(b *Bundle) { b.NotAfter = b.NotBefore },
		"year 10000":    func(b *Bundle) { b.NotAfter = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
	} {
		b := testBundle(t)
		edit(b)
		if _, err := Sign(b, priv); err == nil {
			t.Errorf("%s: Sign accepted a bad bundle", name)
		}
	}
	if _, err := Sign(testBundle(t), priv[:10]); err == nil {
		t.Error("Sign accepted a short root key")
	}
}

func TestVerifyErrors(t *testing.T) {
	if _, err := Verify([]byte("{}"), make([]byte, 5), time.Now()); err == nil {
		t.Error("Verify accepted a short root key")
	}
	pub, _, _ := GenerateRoot()
	big := bytes.Repeat([]byte(" "), MaxSignedSize+1)
	if _, err := Verify(big, pub, time.Now()); !errors.Is(err, ErrMalformed) {
		t.Errorf("oversized file: %v", err)
	}
	for _, s := range []string{"", "null", "[]", `{"bundle":1}`, `{"bundle":"","signature":""}`} {
		if _, err := Verify([]byte(s), pub, time.Now()); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v", s, err)
		}
	}
}

func TestRootKeyText(t *testing.T) {
	pub, priv, _ := GenerateRoot()
	s := FormatRootPublicKey(pub)
	if !strings.HasPrefix(s, "coffer-fleet-root:") || len(s) != 61 {
		t.Fatalf("FormatRootPublicKey = %q", s)
	}
	got, err := ParseRootPublicKey(" " + s + "\n")
	if err != nil || !got.Equal(pub) {
		t.Fatalf("ParseRootPublicKey: %v", err)
	}
	ps := FormatRootPrivateKey(priv)
	gotPriv, err := ParseRootPrivateKey(ps)
	if err != nil || !gotPriv.Equal(priv) {
		t.Fatalf("ParseRootPrivateKey: %v", err)
	}
	for _, bad := range []string{"", s[:60], s + "A", "coffer-fleet-root:" + strings.Repeat("=", 43), ps, strings.Replace(s, "root:", "root-secret:", 1)} {
		if _, err := ParseRootPublicKey(bad); err == nil {
			t.Errorf("ParseRootPublicKey(%q) accepted", bad)
		}
	}
	if _, err := ParseRootPrivateKey(s); err == nil {
		t.Error("ParseRootPrivateKey accepted a public key")
	}
	_, err = ParseRootPrivateKey(ps[:len(ps)-2])
	if err == nil || strings.Contains(err.Error(), ps[30:40]) {
		t.Errorf("ParseRootPrivateKey error leaks or is missing: %v", err)
	}
	var _ ed25519.PublicKey = got
}

func FuzzVerify(f *testing.F) {
	root := seedKey("root")
	pub := root.Public().(ed25519.PublicKey)
	for _, v := range makeVectors(f) {
		f.Add(v.signed)
	}
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Verify(data, pub, now)
		if err != nil {
			if b != nil {
				t.Fatal("bundle returned with an error")
			}
			return
		}
		// Whatever verifies must be re-signable to something that verifies
		// to the same content.
		again, err := Sign(b, root)
		if err != nil {
			t.Fatalf("verified bundle cannot be signed again: %v", err)
		}
		b2, err := Verify(again, pub, now)
		if err != nil || b2.FleetID != b.FleetID || !bytes.Equal(b2.HPKEPublicKey, b.HPKEPublicKey) {
			t.Fatalf("re-signed bundle differs: %v", err)
		}
	})
}
