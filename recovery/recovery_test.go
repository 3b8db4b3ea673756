package recovery_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cofferhq/coffer/backupkey"
	"github.com/cofferhq/coffer/devfleet"
	"github.com/cofferhq/coffer/fleet"
	"github.com/cofferhq/coffer/pake"
	"github.com/cofferhq/coffer/recovery"
)

func newClient(t *testing.T, f *devfleet.Fleet, relayURL, account string) *recovery.Client {
	t.Helper()
	tok, err := f.Token(account, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := recovery.New(recovery.Config{RelayURL: relayURL, Account: account, Token: tok, Bundle: f.Bundle, KSF: pake.TestKSF, AllowWeakKSF: true})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLoadBundle(t *testing.T) {
	f, err := devfleet.Start(context.Background(), devfleet.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := recovery.LoadBundle(f.BundlePath, f.RootPublic)
	if err != nil || b.FleetID != f.Bundle.FleetID {
		t.Fatalf("LoadBundle: %v", err)
	}
	other, _, _ := fleet.GenerateRoot()
	if _, err := recovery.LoadBundle(f.BundlePath, fleet.FormatRootPublicKey(other)); !errors.Is(err, recovery.ErrIntegrity) {
		t.Fatalf("bundle under another root: %v", err)
	}
	data, _ := os.ReadFile(f.BundlePath)
	tampered := filepath.Join(t.TempDir(), "b.json")
	os.WriteFile(tampered, bytes.Replace(data, []byte(`"bundle":"`), []byte(`"bundle":"A`), 1), 0o600)
	if _, err := recovery.LoadBundle(tampered, f.RootPublic); err == nil {
		t.Fatal("tampered bundle accepted")
	}
	if _, err := recovery.LoadBundle(f.BundlePath, ""); err == nil {
		t.Fatal("no pinned root accepted")
	}
}

// TestTamperingRelay puts a proxy between the client and the relay that
// flips a byte of every answer (or of every request): the client must
// refuse the answer, and no key may come back.
func TestTamperingRelay(t *testing.T) {
	ctx := context.Background()
	f, err := devfleet.Start(ctx, devfleet.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pw := []byte("correct horse battery")
	if _, err := newClient(t, f, f.RelayURL, "zoe").Enroll(ctx, pw, backupkey.New(), recovery.Authorization{}); err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse(f.RelayURL)
	for _, mode := range []string{"response", "request"} {
		proxy := httputil.NewSingleHostReverseProxy(target)
		if mode == "response" {
			proxy.ModifyResponse = func(r *http.Response) error {
				body, _ := io.ReadAll(r.Body)
				if len(body) > 40 {
					body[len(body)-20] ^= 1
				}
				r.Body = io.NopCloser(bytes.NewReader(body))
				r.ContentLength = int64(len(body))
				r.Header.Set("Content-Length", strconv.Itoa(len(body)))
				return nil
			}
		}
		h := http.Handler(proxy)
		if mode == "request" {
			h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				if len(body) > 100 {
					body[len(body)/2] ^= 1
				}
				r.Body = io.NopCloser(bytes.NewReader(body))
				r.ContentLength = int64(len(body))
				proxy.ServeHTTP(w, r)
			})
		}
		srv := httptest.NewServer(h)
		key, _, err := newClient(t, f, srv.URL, "zoe").Recover(ctx, pw)
		srv.Close()
		if key != nil || err == nil {
			t.Fatalf("%s tampering: recovered a key", mode)
		}
		if mode == "response" && !errors.Is(err, recovery.ErrIntegrity) {
			t.Fatalf("tampered response: %v", err)
		}
		if !errors.Is(err, recovery.ErrIntegrity) {
			t.Fatalf("%s tampering: %v", mode, err)
		}
	}
	// The untampered path still works and the budget is intact enough.
	if _, _, err := newClient(t, f, f.RelayURL, "zoe").Recover(ctx, pw); err != nil {
		t.Fatal(err)
	}
}

func TestTransportErrors(t *testing.T) {
	ctx := context.Background()
	f, err := devfleet.Start(ctx, devfleet.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, _ := recovery.New(recovery.Config{RelayURL: f.RelayURL, Account: "x", Token: "not.a.token", Bundle: f.Bundle, AllowWeakKSF: true})
	if _, err := c.Status(ctx); !errors.Is(err, recovery.ErrAuthentication) {
		t.Fatalf("bad token: %v", err)
	}
	srv := httptest.NewServer(http.NotFoundHandler())
	dead := srv.URL
	srv.Close()
	if _, err := newClient(t, f, dead, "x").Status(ctx); !errors.Is(err, recovery.ErrUnavailable) {
		t.Fatalf("unreachable relay: %v", err)
	}
}
