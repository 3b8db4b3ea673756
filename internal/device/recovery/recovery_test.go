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

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/recovery"
	"github.com/cofferhq/coffer/internal/protocol/bundle"
	"github.com/cofferhq/coffer/internal/server/devfleet"
)

func newClient(t *testing.T, f *devfleet.Fleet, relayURL, account string) *recovery.Client {
	t.Helper()
	tok, err := f.Token(account, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	vtok, err := f.VaultToken(account, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := recovery.New(recovery.Settings{Relay: relayURL, Account: account, Token: tok, VaultToken: vtok, Bundle: f.Bundle, InsecureDevKSF: true})
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
	other, _, _ := bundle.GenerateRoot()
	if _, err := recovery.LoadBundle(f.BundlePath, bundle.FormatRootPublicKey(other)); !errors.Is(err, recovery.ErrIntegrity) {
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
	c, _ := recovery.New(recovery.Settings{Relay: f.RelayURL, Account: "x", Token: "not.a.token", VaultToken: "not.a.token", Bundle: f.Bundle, InsecureDevKSF: true})
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

// holdTransport counts an operation's requests and calls hook(n) before
// sending the n-th (1-based), and done(n) after its answer.
type holdTransport struct {
	n          int
	hook, done func(n int)
}

func (h *holdTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	h.n++
	n := h.n
	if h.hook != nil {
		h.hook(n)
	}
	resp, err := http.DefaultTransport.RoundTrip(r)
	if h.done != nil {
		h.done(n)
	}
	return resp, err
}

func clientWith(t *testing.T, f *devfleet.Fleet, account string, rt http.RoundTripper) *recovery.Client {
	t.Helper()
	tok, err := f.Token(account, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	vtok, err := f.VaultToken(account, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := recovery.New(recovery.Settings{Relay: f.RelayURL, Account: account, Token: tok, VaultToken: vtok, Bundle: f.Bundle,
		InsecureDevKSF: true, HTTPClient: &http.Client{Transport: rt, Timeout: 20 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// interleave runs a(ca) and b(cb), two two-request operations, in the order
// a1 b1 a2 b2 (each request sent once the one before was answered): a's
// second step meets the state b's first step left.
func interleave(t *testing.T, f *devfleet.Fleet, account string, a, b func(c *recovery.Client) error) (errA, errB error) {
	aStarted, bStarted, aDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	wait := func(ch chan struct{}) {
		select {
		case <-ch:
		case <-time.After(20 * time.Second):
		}
	}
	ca := clientWith(t, f, account, &holdTransport{
		hook: func(n int) {
			if n == 2 {
				wait(bStarted)
			}
		},
		done: func(n int) {
			switch n {
			case 1:
				close(aStarted)
			case 2:
				close(aDone)
			}
		},
	})
	cb := clientWith(t, f, account, &holdTransport{hook: func(n int) {
		switch n {
		case 1:
			wait(aStarted)
		case 2:
			close(bStarted)
			wait(aDone)
		}
	}})
	resB := make(chan error, 1)
	go func() { resB <- b(cb) }()
	errA = a(ca)
	return errA, <-resB
}

// TestDistinctErrors: outcomes that share ErrDestroyed or ErrUnavailable
// have errors of their own (the fault harness tells them apart), and the
// shared ones still match.
func TestDistinctErrors(t *testing.T) {
	ctx := context.Background()
	f, err := devfleet.Start(ctx, devfleet.Options{Dir: t.TempDir(), GuessLimit: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pw := []byte("correct horse battery")

	// A registration overtaken by another RegisterStart is stale.
	enroll := func(c *recovery.Client) error {
		_, err := c.Enroll(ctx, pw, backupkey.New(), recovery.Authorization{})
		return err
	}
	errA, errB := interleave(t, f, "stale", enroll, enroll)
	if !errors.Is(errA, recovery.ErrRegistrationSuperseded) || errB != nil {
		t.Fatalf("interleaved registrations: %v; %v", errA, errB)
	}

	// A login superseded by a newer LoginStart cannot finish.
	c := newClient(t, f, f.RelayURL, "login")
	if err := enroll(c); err != nil {
		t.Fatal(err)
	}
	recoverOnce := func(c *recovery.Client) error {
		_, _, err := c.Recover(ctx, pw)
		return err
	}
	errA, errB = interleave(t, f, "login", recoverOnce, recoverOnce)
	if !errors.Is(errA, recovery.ErrLoginExpired) || !errors.Is(errA, recovery.ErrUnavailable) || errB != nil {
		t.Fatalf("superseded login: %v; %v", errA, errB)
	}

	// A replayed request is refused as such.
	replay := clientWith(t, f, "login", roundTripFunc(func(r *http.Request) (*http.Response, error) {
		body, _ := io.ReadAll(r.Body)
		for i := 0; ; i++ {
			r2 := r.Clone(r.Context())
			r2.Body, r2.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
			resp, err := http.DefaultTransport.RoundTrip(r2)
			if err != nil || i == 1 {
				return resp, err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}))
	if _, err := replay.Status(ctx); !errors.Is(err, recovery.ErrReplayed) || !errors.Is(err, recovery.ErrUnavailable) {
		t.Fatalf("replayed request: %v", err)
	}

	// The last wrong guess destroys the record; later ones find it gone.
	for i := range 2 {
		_, _, err := c.Recover(ctx, []byte("wrong password number "+strconv.Itoa(i)))
		if last := i == 1; errors.Is(err, recovery.ErrLastGuess) != last || errors.Is(err, recovery.ErrDestroyed) != last {
			t.Fatalf("wrong guess %d: %v", i+1, err)
		}
	}
	if _, _, err := c.Recover(ctx, pw); !errors.Is(err, recovery.ErrDestroyed) || errors.Is(err, recovery.ErrLastGuess) {
		t.Fatalf("after the last guess: %v", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
