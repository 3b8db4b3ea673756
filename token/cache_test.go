package token

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestCache(t *testing.T) {
	pub, priv, _ := GenerateKey()
	now := time.Unix(1_800_000_000, 0)
	v := verifier(pub, now)
	v.Leeway = 30 * time.Second
	v.Now = func() time.Time { return now }
	c := NewCache(v, 4)

	tok, err := Mint(priv, Claims{Issuer: vIssuer, Subject: "user-1", Audience: vAudience, IssuedAt: now, Expiry: now.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		cl, err := c.Verify(tok)
		if err != nil || cl.Subject != "user-1" {
			t.Fatalf("verify %d: %v %+v", i, err, cl)
		}
		cl.Subject = "changed by the caller"
	}
	if c.Len() != 1 {
		t.Fatalf("cache holds %d tokens, want 1", c.Len())
	}

	// Refused tokens are not remembered, and stay refused.
	// A changed character in the middle of the signature (the last one
	// carries only two bits, and lenient base64 may decode a change there
	// to the same bytes).
	i := len(tok) - 20
	ch := byte('A')
	if tok[i] == 'A' {
		ch = 'B'
	}
	bad := tok[:i] + string(ch) + tok[i+1:]
	for range 2 {
		if _, err := c.Verify(bad); !errors.Is(err, ErrSignature) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("altered token: %v", err)
		}
	}
	if c.Len() != 1 {
		t.Fatalf("a refused token was remembered (%d entries)", c.Len())
	}

	// A remembered token expires exactly when Verify would refuse it.
	now = now.Add(time.Minute + 29*time.Second)
	if _, err := c.Verify(tok); err != nil {
		t.Fatalf("inside the leeway: %v", err)
	}
	now = now.Add(time.Second)
	if _, err := c.Verify(tok); !errors.Is(err, ErrExpired) {
		t.Fatalf("after expiry + leeway: %v, want ErrExpired", err)
	}
	if c.Len() != 0 {
		t.Fatalf("expired token still cached (%d entries)", c.Len())
	}

	// Bounded: never more than its size.
	for i := range 20 {
		tk, _ := Mint(priv, Claims{Issuer: vIssuer, Subject: fmt.Sprintf("u%d", i), Audience: vAudience, IssuedAt: now, Expiry: now.Add(time.Minute)})
		cl, err := c.Verify(tk)
		if err != nil || cl.Subject != fmt.Sprintf("u%d", i) {
			t.Fatalf("token %d: %v", i, err)
		}
		if c.Len() > 4 {
			t.Fatalf("cache grew to %d entries, bound 4", c.Len())
		}
	}
}

// BenchmarkCacheHit vs BenchmarkVerify: what the relay saves on the second
// request of a recovery.
func BenchmarkVerify(b *testing.B) {
	for _, cached := range []bool{false, true} {
		b.Run(fmt.Sprintf("cached=%v", cached), func(b *testing.B) {
			pub, priv, _ := GenerateKey()
			now := time.Now()
			v := verifier(pub, now)
			tok, _ := Mint(priv, Claims{Issuer: vIssuer, Subject: "user-1", Audience: vAudience, IssuedAt: now, Expiry: now.Add(time.Hour)})
			verify := v.Verify
			if cached {
				verify = NewCache(v, 0).Verify
			}
			for b.Loop() {
				if _, err := verify(tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
