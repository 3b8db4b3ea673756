package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"github.com/cofferhq/coffer/internal/protocol/wire"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	vaultv1 "github.com/cofferhq/coffer/internal/protocol/vaultv1"
	"github.com/cofferhq/coffer/internal/protocol/vaultv1/vaultv1connect"
	"github.com/cofferhq/coffer/token"
)

const (
	testIssuer   = "https://app.example"
	testAudience = "coffer-relay-test"
)

// fakeVault is a VaultService on 127.0.0.1 whose answers a test scripts.
type fakeVault struct {
	srv    *httptest.Server
	calls  atomic.Int64
	mu     sync.Mutex
	seen   []*vaultv1.VaultExchangeRequest
	reqIDs []string
	answer func(ctx context.Context, req *vaultv1.VaultExchangeRequest) (*vaultv1.ExchangeResponse, error)
}

func (f *fakeVault) Exchange(ctx context.Context, req *vaultv1.VaultExchangeRequest) (*vaultv1.ExchangeResponse, error) {
	f.calls.Add(1)
	f.mu.Lock()
	f.seen = append(f.seen, req)
	if ci, ok := connect.CallInfoForHandlerContext(ctx); ok {
		f.reqIDs = append(f.reqIDs, ci.RequestHeader().Get(wire.RequestIDHeader))
	}
	answer := f.answer
	f.mu.Unlock()
	if answer == nil {
		// Echo: the sealed bytes reversed, so the test can tell they passed.
		out := bytes.Clone(req.Sealed)
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
		return &vaultv1.ExchangeResponse{Sealed: out}, nil
	}
	return answer(ctx, req)
}

func newFakeVault(t *testing.T, wrap func(http.Handler) http.Handler) *fakeVault {
	f := &fakeVault{}
	mux := http.NewServeMux()
	mux.Handle(vaultv1connect.NewVaultServiceHandler(f))
	var h http.Handler = mux
	if wrap != nil {
		h = wrap(mux)
	}
	f.srv = httptest.NewServer(h)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeVault) setAnswer(a func(context.Context, *vaultv1.VaultExchangeRequest) (*vaultv1.ExchangeResponse, error)) {
	f.mu.Lock()
	f.answer = a
	f.mu.Unlock()
}

type testEnv struct {
	relay  *Relay
	url    string
	priv   ed25519.PrivateKey
	logBuf *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startRelay runs a relay with cfg (vaults and verifier filled in) on a
// real 127.0.0.1 listener through Serve.
func startRelay(t *testing.T, cfg Config, vaults ...string) *testEnv {
	t.Helper()
	pub, priv, _ := token.GenerateKey()
	if cfg.Verifier == nil {
		cfg.Verifier = &token.Verifier{Key: pub, Issuer: testIssuer, Audience: testAudience}
	}
	cfg.Vaults = vaults
	if cfg.PerSource == (Limit{}) {
		cfg.PerSource = Unlimited
	}
	if cfg.PerAccount == (Limit{}) {
		cfg.PerAccount = Unlimited
	}
	buf := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewJSONHandler(buf, nil))
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testEnv{relay: r, url: "http://" + ln.Addr().String(), priv: priv, logBuf: buf}
}

func (e *testEnv) token(t *testing.T, account string) string {
	t.Helper()
	now := time.Now()
	tok, err := token.Mint(e.priv, token.Claims{Issuer: testIssuer, Subject: account, Audience: testAudience,
		IssuedAt: now, Expiry: now.Add(5 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type clientKind int

const (
	connectHTTP1 clientKind = iota
	connectH2C
	grpcH2C
)

func (k clientKind) String() string {
	return [...]string{"connect-http1.1", "connect-h2c", "grpc-h2c"}[k]
}

func (e *testEnv) client(t *testing.T, k clientKind) vaultv1connect.RelayServiceClient {
	var p http.Protocols
	var opts []connect.ClientOption
	switch k {
	case connectHTTP1:
		p.SetHTTP1(true)
	case connectH2C:
		p.SetUnencryptedHTTP2(true)
	case grpcH2C:
		p.SetUnencryptedHTTP2(true)
		opts = append(opts, connect.WithGRPC())
	}
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections) // before the relay shuts down
	hc := &http.Client{Transport: tr}
	return vaultv1connect.NewRelayServiceClient(hc, e.url, opts...)
}

// call sends sealed with the given Authorization header value (none if
// empty) and returns the answer and the response headers.
func call(c vaultv1connect.RelayServiceClient, auth string, sealed []byte) (*vaultv1.ExchangeResponse, http.Header, error) {
	ctx, ci := connect.NewClientContext(context.Background())
	if auth != "" {
		ci.RequestHeader().Set("Authorization", auth)
	}
	resp, err := c.Exchange(ctx, &vaultv1.ExchangeRequest{Sealed: sealed})
	return resp, ci.ResponseHeader(), err
}

func wantCode(t *testing.T, err error, code connect.Code, msgPart string) {
	t.Helper()
	if connect.CodeOf(err) != code {
		t.Fatalf("error %v, want code %v", err, code)
	}
	if msgPart != "" && !strings.Contains(err.Error(), msgPart) {
		t.Fatalf("error %q does not mention %q", err, msgPart)
	}
}

func TestForwardsUnchanged(t *testing.T) {
	v := newFakeVault(t, nil)
	e := startRelay(t, Config{}, v.srv.URL)
	sealed := []byte("\x01 opaque sealed bytes \x00\xff")
	want := bytes.Clone(sealed)
	for i, j := 0, len(want)-1; i < j; i, j = i+1, j-1 {
		want[i], want[j] = want[j], want[i]
	}
	for _, k := range []clientKind{connectHTTP1, connectH2C, grpcH2C} {
		t.Run(k.String(), func(t *testing.T) {
			resp, hdr, err := call(e.client(t, k), "Bearer "+e.token(t, "alice@example.com"), sealed)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(resp.Sealed, want) {
				t.Fatalf("response changed: %q", resp.Sealed)
			}
			v.mu.Lock()
			last, lastID := v.seen[len(v.seen)-1], v.reqIDs[len(v.reqIDs)-1]
			v.mu.Unlock()
			if last.Account != "alice@example.com" || !bytes.Equal(last.Sealed, sealed) {
				t.Fatalf("vault got account %q sealed %q", last.Account, last.Sealed)
			}
			if id := hdr.Get(wire.RequestIDHeader); len(id) != 16 || id != lastID {
				t.Fatalf("request id to client %q, to vault %q", id, lastID)
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	v := newFakeVault(t, nil)
	e := startRelay(t, Config{}, v.srv.URL)
	resp, err := http.Get(e.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "ok") {
		t.Fatalf("healthz: %d %s", resp.StatusCode, body)
	}
	resp, err = http.Get(e.url + "/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("unknown path: %d", resp.StatusCode)
	}
}

func TestTokenChecks(t *testing.T) {
	v := newFakeVault(t, nil)
	e := startRelay(t, Config{}, v.srv.URL)
	c := e.client(t, connectHTTP1)
	now := time.Now()
	mint := func(priv ed25519.PrivateKey, cl token.Claims) string {
		tok, err := token.Mint(priv, cl)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	_, otherKey, _ := token.GenerateKey()
	good := token.Claims{Issuer: testIssuer, Subject: "alice", Audience: testAudience, IssuedAt: now, Expiry: now.Add(time.Minute)}
	expired := good
	expired.IssuedAt, expired.Expiry = now.Add(-10*time.Minute), now.Add(-5*time.Minute)
	wrongAud := good
	wrongAud.Audience = "another-relay"
	wrongIss := good
	wrongIss.Issuer = "https://evil.example"
	for _, tc := range []struct {
		name, auth, msg string
	}{
		{"missing", "", "Authorization: Bearer"},
		{"basic scheme", "Basic YWxpY2U6cHc=", "Authorization: Bearer"},
		{"empty bearer", "Bearer ", "Authorization: Bearer"},
		{"garbage", "Bearer not-a-token", "malformed"},
		{"expired", "Bearer " + mint(e.priv, expired), "expired"},
		{"wrong audience", "Bearer " + mint(e.priv, wrongAud), "audience"},
		{"wrong issuer", "Bearer " + mint(e.priv, wrongIss), "issuer"},
		{"wrong key", "Bearer " + mint(otherKey, good), "signature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := call(c, tc.auth, []byte("x"))
			wantCode(t, err, connect.CodeUnauthenticated, tc.msg)
		})
	}
	if n := v.calls.Load(); n != 0 {
		t.Fatalf("vault called %d times for unauthenticated requests", n)
	}
	// Lower-case scheme is accepted (RFC 9110: case-insensitive).
	if _, _, err := call(c, "bearer "+mint(e.priv, good), []byte("x")); err != nil {
		t.Fatal(err)
	}
}

func TestRateLimitPerAccount(t *testing.T) {
	v := newFakeVault(t, nil)
	e := startRelay(t, Config{PerAccount: Limit{Rate: 0.01, Burst: 3}}, v.srv.URL)
	c := e.client(t, connectHTTP1)
	alice, bob := "Bearer "+e.token(t, "alice"), "Bearer "+e.token(t, "bob")
	for i := range 3 {
		if _, _, err := call(c, alice, []byte("x")); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	_, _, err := call(c, alice, []byte("x"))
	wantCode(t, err, connect.CodeResourceExhausted, "this account")
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Meta().Get("Retry-After") == "" {
		t.Fatalf("no Retry-After in %v", err)
	}
	if ra := ce.Meta().Get("Retry-After"); ra != "100" {
		t.Errorf("Retry-After = %s, want 100 (1 token at 0.01/s)", ra)
	}
	if _, _, err := call(c, bob, []byte("x")); err != nil {
		t.Fatalf("another account was limited: %v", err)
	}
	if n := v.calls.Load(); n != 4 {
		t.Fatalf("vault called %d times, want 4", n)
	}
}

func TestRateLimitPerSource(t *testing.T) {
	v := newFakeVault(t, nil)
	e := startRelay(t, Config{PerSource: Limit{Rate: 0.01, Burst: 2}}, v.srv.URL)
	c := e.client(t, connectH2C)
	for i, acct := range []string{"a", "b"} {
		if _, _, err := call(c, "Bearer "+e.token(t, acct), []byte("x")); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	// Also counted before the token is checked: a flood of bad tokens from
	// one source is cut off too.
	_, _, err := call(c, "Bearer "+e.token(t, "c"), []byte("x"))
	wantCode(t, err, connect.CodeResourceExhausted, "source address")
	_, _, err = call(c, "", []byte("x"))
	wantCode(t, err, connect.CodeResourceExhausted, "source address")
}

func TestSizeLimits(t *testing.T) {
	v := newFakeVault(t, nil)
	e := startRelay(t, Config{MaxRequestBytes: 1000}, v.srv.URL)
	auth := "Bearer " + e.token(t, "alice")
	for _, k := range []clientKind{connectHTTP1, grpcH2C} {
		c := e.client(t, k)
		if _, _, err := call(c, auth, make([]byte, 1000)); err != nil {
			t.Fatalf("%v: 1000 bytes: %v", k, err)
		}
		_, _, err := call(c, auth, make([]byte, 1001))
		wantCode(t, err, connect.CodeResourceExhausted, "limit of 1000")
		_, _, err = call(c, auth, make([]byte, 100_000))
		wantCode(t, err, connect.CodeResourceExhausted, "")
		_, _, err = call(c, auth, nil)
		wantCode(t, err, connect.CodeInvalidArgument, "empty")
	}
	if n := v.calls.Load(); n != 2 {
		t.Fatalf("vault called %d times, want 2", n)
	}
}

func TestLeaderFollowing(t *testing.T) {
	a, b := newFakeVault(t, nil), newFakeVault(t, nil)
	a.setAnswer(func(context.Context, *vaultv1.VaultExchangeRequest) (*vaultv1.ExchangeResponse, error) {
		return nil, wire.NotLeaderError(b.srv.URL + "/")
	})
	e := startRelay(t, Config{}, a.srv.URL, b.srv.URL)
	for _, k := range []clientKind{connectHTTP1, connectH2C} {
		if _, _, err := call(e.client(t, k), "Bearer "+e.token(t, "alice"), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	// The first request asked a, was sent to b; the second went to b at once.
	if a.calls.Load() != 1 || b.calls.Load() != 2 {
		t.Fatalf("calls: a=%d b=%d, want 1 and 2", a.calls.Load(), b.calls.Load())
	}
	// Leadership moves back to a; b now points at a.
	a.setAnswer(nil)
	b.setAnswer(func(context.Context, *vaultv1.VaultExchangeRequest) (*vaultv1.ExchangeResponse, error) {
		return nil, wire.NotLeaderError(a.srv.URL)
	})
	if _, _, err := call(e.client(t, connectHTTP1), "Bearer "+e.token(t, "alice"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if a.calls.Load() != 2 || b.calls.Load() != 3 {
		t.Fatalf("calls: a=%d b=%d, want 2 and 3", a.calls.Load(), b.calls.Load())
	}
}

func TestLeaderHintOutsideConfigIgnored(t *testing.T) {
	a, b := newFakeVault(t, nil), newFakeVault(t, nil)
	evil := newFakeVault(t, nil)
	a.setAnswer(func(context.Context, *vaultv1.VaultExchangeRequest) (*vaultv1.ExchangeResponse, error) {
		return nil, wire.NotLeaderError(evil.srv.URL)
	})
	e := startRelay(t, Config{}, a.srv.URL, b.srv.URL)
	if _, _, err := call(e.client(t, connectHTTP1), "Bearer "+e.token(t, "alice"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if evil.calls.Load() != 0 || b.calls.Load() != 1 {
		t.Fatalf("calls: evil=%d b=%d", evil.calls.Load(), b.calls.Load())
	}
}

func TestFailover(t *testing.T) {
	// a: nothing listens; b: Unavailable without a hint (an election is
	// going on); c: serves.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	down := "http://" + ln.Addr().String()
	ln.Close()
	b, c := newFakeVault(t, nil), newFakeVault(t, nil)
	b.setAnswer(func(context.Context, *vaultv1.VaultExchangeRequest) (*vaultv1.ExchangeResponse, error) {
		return nil, wire.NotLeaderError("")
	})
	e := startRelay(t, Config{RequestTimeout: 5 * time.Second}, down, b.srv.URL, c.srv.URL)
	if _, _, err := call(e.client(t, connectHTTP1), "Bearer "+e.token(t, "alice"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if b.calls.Load() != 1 || c.calls.Load() != 1 {
		t.Fatalf("calls: b=%d c=%d", b.calls.Load(), c.calls.Load())
	}
}

func TestHungReplica(t *testing.T) {
	a, b := newFakeVault(t, nil), newFakeVault(t, nil)
	a.setAnswer(func(ctx context.Context, _ *vaultv1.VaultExchangeRequest) (*vaultv1.ExchangeResponse, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	e := startRelay(t, Config{RequestTimeout: 3 * time.Second, AttemptTimeout: 200 * time.Millisecond}, a.srv.URL, b.srv.URL)
	start := time.Now()
	if _, _, err := call(e.client(t, connectH2C), "Bearer "+e.token(t, "alice"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %s", d)
	}
}

func TestAllReplicasDown(t *testing.T) {
	var urls []string
	var lns []net.Listener
	for range 2 {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		urls = append(urls, "http://"+ln.Addr().String())
		lns = append(lns, ln)
	}
	for _, ln := range lns {
		ln.Close()
	}
	u := newFakeVault(t, nil)
	u.setAnswer(func(context.Context, *vaultv1.VaultExchangeRequest) (*vaultv1.ExchangeResponse, error) {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("no quorum"))
	})
	urls = append(urls, u.srv.URL)
	e := startRelay(t, Config{RequestTimeout: 400 * time.Millisecond}, urls...)
	for _, k := range []clientKind{connectHTTP1, grpcH2C} {
		start := time.Now()
		_, _, err := call(e.client(t, k), "Bearer "+e.token(t, "alice"), []byte("x"))
		wantCode(t, err, connect.CodeUnavailable, "retry later")
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Fatalf("%v: took %s with a 400ms timeout", k, d)
		}
	}
	if n := u.calls.Load(); n < 2 || n > maxRounds*2 {
		t.Fatalf("the reachable replica was asked %d times", n)
	}
	if !strings.Contains(e.logBuf.String(), `"outcome":"unavailable"`) {
		t.Fatal("no unavailable log line")
	}
}

func TestVaultErrorPassedOn(t *testing.T) {
	a, b := newFakeVault(t, nil), newFakeVault(t, nil)
	a.setAnswer(func(context.Context, *vaultv1.VaultExchangeRequest) (*vaultv1.ExchangeResponse, error) {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("sealed request did not open"))
	})
	e := startRelay(t, Config{}, a.srv.URL, b.srv.URL)
	_, _, err := call(e.client(t, connectHTTP1), "Bearer "+e.token(t, "alice"), []byte("x"))
	wantCode(t, err, connect.CodeInvalidArgument, "did not open")
	if b.calls.Load() != 0 {
		t.Fatal("a non-retryable error was retried on another replica")
	}
}

func TestLogsNoSecrets(t *testing.T) {
	v := newFakeVault(t, nil)
	e := startRelay(t, Config{LogKey: []byte("k")}, v.srv.URL)
	c := e.client(t, connectHTTP1)
	account := "+15551234567"
	tok := e.token(t, account)
	sealed := []byte("SECRET-SEALED-PAYLOAD-0123456789")
	if _, _, err := call(c, "Bearer "+tok, sealed); err != nil {
		t.Fatal(err)
	}
	bad := []byte(tok) // still base64url, another signature
	if i := len(bad) - 10; bad[i] == 'A' {
		bad[i] = 'B'
	} else {
		bad[i] = 'A'
	}
	_, _, _ = call(c, "Bearer "+string(bad), sealed)
	logs := e.logBuf.String()
	for _, secret := range []string{tok, strings.Split(tok, ".")[2], account, string(sealed),
		base64.StdEncoding.EncodeToString(sealed), hex.EncodeToString(sealed)} {
		if strings.Contains(logs, secret) {
			t.Fatalf("logs contain %q:\n%s", secret, logs)
		}
	}
	for _, want := range []string{`"account":"` + AccountLogID([]byte("k"), account) + `"`, `"outcome":"ok"`,
		`"reason":"bad_signature"`, `"request_id":`, `"latency_ms":`} {
		if !strings.Contains(logs, want) {
			t.Fatalf("logs lack %s:\n%s", want, logs)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	pub, _, _ := token.GenerateKey()
	ver := &token.Verifier{Key: pub, Issuer: "i", Audience: "a"}
	for name, cfg := range map[string]Config{
		"no verifier":      {Vaults: []string{"http://v:1"}},
		"empty verifier":   {Vaults: []string{"http://v:1"}, Verifier: &token.Verifier{}},
		"no vaults":        {Verifier: ver},
		"bad scheme":       {Verifier: ver, Vaults: []string{"ftp://v"}},
		"no host":          {Verifier: ver, Vaults: []string{"http://"}},
		"duplicate vaults": {Verifier: ver, Vaults: []string{"http://v:1", "http://v:1/"}},
		"bad limit":        {Verifier: ver, Vaults: []string{"http://v:1"}, PerAccount: Limit{Rate: 1}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted", name)
		}
	}
}

func TestSource(t *testing.T) {
	r := &Relay{cfg: Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}
	h := http.Header{}
	h.Add("X-Forwarded-For", "198.51.100.7, 10.1.1.1")
	h.Add("X-Forwarded-For", "10.2.2.2")
	for _, tc := range []struct {
		peer string
		hdr  http.Header
		want string
	}{
		{"203.0.113.5:4000", h, "203.0.113.5"}, // untrusted peer: header ignored
		{"10.0.0.1:4000", h, "198.51.100.7"},   // rightmost untrusted hop
		{"10.0.0.1:4000", nil, "10.0.0.1"},
		{"10.0.0.1:4000", http.Header{"X-Forwarded-For": {"junk"}}, "10.0.0.1"},
		{"[::ffff:192.0.2.1]:1", nil, "192.0.2.1"},
	} {
		if got := r.source(tc.peer, tc.hdr); got.String() != tc.want {
			t.Errorf("source(%s) = %s, want %s", tc.peer, got, tc.want)
		}
	}
	if k := sourceKey(netip.MustParseAddr("2001:db8:1:2:3:4:5:6")); k != "2001:db8:1:2::/64" {
		t.Errorf("IPv6 key %s", k)
	}
}

func TestLimiter(t *testing.T) {
	l := newLimiter(Limit{Rate: 2, Burst: 2})
	t0 := time.Unix(1000, 0)
	for i := range 2 {
		if ok, _ := l.allow("k", t0); !ok {
			t.Fatalf("request %d refused", i)
		}
	}
	ok, wait := l.allow("k", t0)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("third: %v %s", ok, wait)
	}
	if ok, _ := l.allow("k", t0.Add(500*time.Millisecond)); !ok {
		t.Fatal("not refilled after 500ms")
	}
	// Idle buckets are dropped at the next sweep.
	l.allow("other", t0)
	l.allow("x", t0.Add(2*time.Minute))
	if n := l.size(); n != 1 {
		t.Fatalf("%d buckets after sweep, want 1", n)
	}
	if ok, _ := newLimiter(Unlimited).allow("k", t0); !ok {
		t.Fatal("unlimited refused")
	}
	zero := newLimiter(Limit{Rate: 0, Burst: 1})
	zero.allow("k", t0)
	if ok, wait := zero.allow("k", t0.Add(time.Hour)); ok || wait <= 0 {
		t.Fatal("rate 0 refilled")
	}
}

func TestNotLeaderError(t *testing.T) {
	e := wire.NotLeaderError("http://v2:7000")
	if e.Code() != connect.CodeUnavailable || e.Meta().Get(wire.LeaderHeader) != "http://v2:7000" {
		t.Fatalf("%v %v", e, e.Meta())
	}
	if wire.NotLeaderError("").Meta().Get(wire.LeaderHeader) != "" {
		t.Fatal("empty leader set a header")
	}
}
