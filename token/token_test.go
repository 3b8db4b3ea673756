package token

import (
	"crypto/ed25519"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func verifier(pub ed25519.PublicKey, now time.Time) *Verifier {
	return &Verifier{Key: pub, Issuer: vIssuer, Audience: vAudience, Leeway: DefaultLeeway, Now: func() time.Time { return now }}
}

func TestMintVerify(t *testing.T) {
	pub, priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	tok, err := Mint(priv, Claims{Issuer: vIssuer, Subject: "user-1", Audience: vAudience, IssuedAt: now, Expiry: now.Add(10 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := verifier(pub, now.Add(time.Minute)).Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "user-1" || !c.IssuedAt.Equal(now) || !c.Expiry.Equal(now.Add(10*time.Minute)) || !c.NotBefore.IsZero() {
		t.Fatalf("claims = %+v", c)
	}
	hdr, _ := b64.DecodeString(strings.Split(tok, ".")[0])
	if string(hdr) != `{"alg":"EdDSA","typ":"JWT"}` {
		t.Fatalf("header = %s", hdr)
	}
	// Expired exactly at exp (plus leeway).
	if _, err := verifier(pub, now.Add(10*time.Minute+DefaultLeeway)).Verify(tok); !errors.Is(err, ErrExpired) {
		t.Fatalf("at exp+leeway: %v", err)
	}
	// Default Now and default MaxLifetime.
	tok2, err := Mint(priv, Claims{Issuer: vIssuer, Subject: "u", Audience: vAudience, Expiry: time.Now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&Verifier{Key: pub, Issuer: vIssuer, Audience: vAudience}).Verify(tok2); err != nil {
		t.Fatal(err)
	}
	long, _ := Mint(priv, Claims{Issuer: vIssuer, Subject: "u", Audience: vAudience, Expiry: time.Now().Add(2 * time.Hour)})
	if _, err := (&Verifier{Key: pub, Issuer: vIssuer, Audience: vAudience}).Verify(long); !errors.Is(err, ErrLifetime) {
		t.Fatalf("2 h token with default max lifetime: %v", err)
	}
	if _, err := (&Verifier{Key: pub, Issuer: vIssuer, Audience: vAudience, MaxLifetime: 3 * time.Hour}).Verify(long); err != nil {
		t.Fatalf("2 h token with 3 h max lifetime: %v", err)
	}
}

func TestMintRefuses(t *testing.T) {
	_, priv, _ := GenerateKey()
	now := time.Now()
	base := Claims{Issuer: "i", Subject: "s", Audience: "a", IssuedAt: now, Expiry: now.Add(time.Minute)}
	for name, edit := range map[string]func(*Claims){
		"empty subject":  func(c *Claims) { c.Subject = "" },
		"space subject":  func(c *Claims) { c.Subject = "a b" },
		"long subject":   func(c *Claims) { c.Subject = strings.Repeat("x", 129) },
		"utf-8 subject":  func(c *Claims) { c.Subject = "zoë" },
		"no issuer":      func(c *Claims) { c.Issuer = "" },
		"no audience":    func(c *Claims) { c.Audience = "" },
		"no expiry":      func(c *Claims) { c.Expiry = time.Time{} },
		"exp before iat": func(c *Claims) { c.Expiry = now.Add(-time.Minute) },
		"huge issuer":    func(c *Claims) { c.Issuer = strings.Repeat("i", 4000) },
	} {
		c := base
		edit(&c)
		if _, err := Mint(priv, c); err == nil {
			t.Errorf("%s: Mint accepted", name)
		}
	}
	if _, err := Mint(priv[:5], base); err == nil {
		t.Error("Mint accepted a short key")
	}
	if err := ValidSubject(strings.Repeat("~", 128)); err != nil {
		t.Error(err)
	}
}

func TestVerifierMisconfigured(t *testing.T) {
	pub, priv, _ := GenerateKey()
	tok, _ := Mint(priv, Claims{Issuer: "i", Subject: "s", Audience: "a", Expiry: time.Now().Add(time.Minute)})
	for _, v := range []*Verifier{{Issuer: "i", Audience: "a"}, {Key: pub, Audience: "a"}, {Key: pub, Issuer: "i"}} {
		if _, err := v.Verify(tok); err == nil {
			t.Errorf("%+v accepted a token", v)
		}
	}
	if _, err := (&Verifier{Key: pub, Issuer: "i", Audience: "a"}).Verify(""); !errors.Is(err, ErrMalformed) {
		t.Error("empty token accepted")
	}
}

func TestPEM(t *testing.T) {
	pub, priv, _ := GenerateKey()
	privPEM, err := MarshalPrivateKeyPEM(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := MarshalPublicKeyPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := ParsePrivateKeyPEM(privPEM)
	if err != nil || !p2.Equal(priv) {
		t.Fatalf("private key round trip: %v", err)
	}
	q2, err := ParsePublicKeyPEM(pubPEM)
	if err != nil || !q2.Equal(pub) {
		t.Fatalf("public key round trip: %v", err)
	}
	if _, err := ParsePrivateKeyPEM(pubPEM); err == nil {
		t.Error("public PEM read as private")
	}
	if _, err := ParsePublicKeyPEM(privPEM); err == nil {
		t.Error("private PEM read as public")
	}
	if _, err := ParsePublicKeyPEM(append(pubPEM, pubPEM...)); err == nil {
		t.Error("two PEM blocks accepted")
	}
	if _, err := ParsePublicKeyPEM([]byte("garbage")); err == nil {
		t.Error("garbage accepted")
	}
}

// A key made by OpenSSL signs tokens the relay accepts, and OpenSSL reads
// the keys this package writes.
func TestOpenSSLInterop(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "k.pem")
	if out, err := exec.Command(openssl, "genpkey", "-algorithm", "ed25519", "-out", keyFile).CombinedOutput(); err != nil {
		t.Skipf("openssl genpkey ed25519: %v %s", err, out)
	}
	pubOut, err := exec.Command(openssl, "pkey", "-in", keyFile, "-pubout").Output()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ParsePrivateKeyPEM(mustRead(t, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKeyPEM(pubOut)
	if err != nil || !pub.Equal(priv.Public()) {
		t.Fatalf("openssl public key: %v", err)
	}
	// A token signed by OpenSSL (an independent Ed25519) verifies.
	now := time.Now()
	signing := b64.EncodeToString([]byte(`{"alg":"EdDSA","typ":"JWT"}`)) + "." +
		b64.EncodeToString([]byte(`{"iss":"`+vIssuer+`","sub":"user-7","aud":"`+vAudience+`","exp":`+
			strconv.FormatInt(now.Add(time.Minute).Unix(), 10)+`,"iat":`+strconv.FormatInt(now.Unix(), 10)+`}`))
	in := filepath.Join(dir, "in")
	os.WriteFile(in, []byte(signing), 0o600)
	sig, err := exec.Command(openssl, "pkeyutl", "-sign", "-inkey", keyFile, "-rawin", "-in", in).Output()
	if err != nil {
		t.Skipf("openssl pkeyutl -rawin: %v", err)
	}
	c, err := verifier(pub, now).Verify(signing + "." + b64.EncodeToString(sig))
	if err != nil || c.Subject != "user-7" {
		t.Fatalf("OpenSSL-signed token: %v", err)
	}
	mine, _ := MarshalPrivateKeyPEM(priv)
	mineFile := filepath.Join(dir, "mine.pem")
	os.WriteFile(mineFile, mine, 0o600)
	pub2, err := exec.Command(openssl, "pkey", "-in", mineFile, "-pubout").Output()
	if err != nil || string(pub2) != string(pubOut) {
		t.Fatalf("openssl cannot read our PKCS#8: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	priv := testKey()
	pub := priv.Public().(ed25519.PublicKey)
	for _, v := range makeTokVectors(f) {
		f.Add(v.token)
	}
	v := &Verifier{Key: pub, Issuer: vIssuer, Audience: vAudience, Leeway: vLeeway, Now: func() time.Time { return vNow }}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := v.Verify(tok)
		if err != nil {
			if c != nil {
				t.Fatal("claims returned with an error")
			}
			if strings.Contains(err.Error(), tok) && len(tok) > 8 {
				t.Fatalf("error %q contains the token", err)
			}
			return
		}
		if ValidSubject(c.Subject) != nil || c.Issuer != vIssuer || c.Audience != vAudience {
			t.Fatalf("accepted bad claims %+v", c)
		}
		if strings.Count(tok, ".") != 2 || len(tok) > MaxTokenSize {
			t.Fatal("accepted a token with a bad shape")
		}
	})
}
