// Package relay is Coffer's stateless front end (PROTOCOL.md sections 3
// and 4). It serves RelayService.Exchange over Connect RPC (the Connect,
// gRPC and gRPC-Web protocols, over HTTP/1.1 and HTTP/2, cleartext h2c or
// TLS, on one port), and for each request it
//
//  1. rate-limits the source address,
//  2. verifies the account token in "Authorization: Bearer <token>",
//  3. rate-limits the account (the token's subject),
//  4. bounds the sealed request's size, and
//  5. forwards VaultExchangeRequest{account, sealed} to the vault fleet's
//     leader, following leader hints and failing over between replicas
//     within the request timeout, and returns the vault's answer unchanged.
//
// It cannot read the sealed bytes (package channel) and keeps no state
// beyond the rate-limit buckets and the last known leader, so any number of
// relays can run side by side. It logs one JSON line per request with a
// request id, a keyed hash of the account, the outcome and the latency;
// never a token or a payload.
package relay

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	vaultv1 "github.com/cofferhq/coffer/internal/protocol/vaultv1"
	"github.com/cofferhq/coffer/internal/protocol/vaultv1/vaultv1connect"
	"github.com/cofferhq/coffer/internal/protocol/wire"
	"github.com/cofferhq/coffer/token"
)

// Defaults for zero Config fields.
const (
	DefaultMaxRequestBytes = 64 << 10
	DefaultRequestTimeout  = 10 * time.Second
	// MaxResponseBytes bounds what the relay reads from a vault.
	MaxResponseBytes = 1 << 20
)

// maxRounds bounds the attempts of one request to maxRounds × the number of
// replicas (the backoff between rounds grows to 1 s, so 10 rounds cover a
// leader election of several seconds).
const maxRounds = 10

// Config configures a Relay.
type Config struct {
	// Listen is the address ListenAndServe listens on, e.g. ":8443".
	Listen string
	// TLS, if set, makes ListenAndServe and Serve serve TLS (HTTP/1.1 and
	// HTTP/2); otherwise they serve cleartext HTTP/1.1 and h2c, for use
	// behind a TLS-terminating load balancer.
	TLS *tls.Config
	// Vaults are the base URLs of the vault replicas' VaultService, e.g.
	// "http://vault-1.internal:7000". A replica's Coffer-Leader hint is
	// followed only if it names one of these (compared without a trailing
	// slash).
	Vaults []string
	// HTTPClient makes the calls to the vaults (e.g. with mutual TLS); nil
	// means a client with sensible connection timeouts.
	HTTPClient *http.Client
	// Verifier checks account tokens. Required.
	Verifier *token.Verifier
	// TokenCacheSize is how many accepted tokens the relay remembers until
	// they expire, so a token reused across requests is verified once
	// (token.Cache); zero means token.DefaultCacheSize, negative disables
	// the cache.
	TokenCacheSize int
	// PerAccount and PerSource are the rate limits; a zero Limit means
	// DefaultPerAccount or DefaultPerSource, Unlimited disables one.
	PerAccount, PerSource Limit
	// TrustedProxies are the addresses of load balancers whose
	// X-Forwarded-For header names the real source. Without them the
	// source is the TCP peer.
	TrustedProxies []netip.Prefix
	// MaxRequestBytes bounds the sealed request; zero means
	// DefaultMaxRequestBytes.
	MaxRequestBytes int
	// RequestTimeout bounds the time spent on the vaults for one request,
	// retries included; zero means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// AttemptTimeout bounds one call to one replica, so a hung replica does
	// not use up the whole RequestTimeout; zero means RequestTimeout/2.
	AttemptTimeout time.Duration
	// LogKey keys the account hashes in the logs (see AccountLogID). Give
	// every relay of a deployment the same key so their logs correlate;
	// nil means a random key per process.
	LogKey []byte
	// Logger receives one line per request; nil means JSON on stderr.
	Logger *slog.Logger
}

// Relay is the front end. Create it with New; it is safe for concurrent use.
type Relay struct {
	cfg        Config
	vaults     []vault
	leader     atomic.Int64 // index of the last known leader, -1 if none
	verify     func(string) (*token.Claims, error)
	perAccount *limiter
	perSource  *limiter
	log        *slog.Logger
	handler    http.Handler
}

type vault struct {
	url    string
	client vaultv1connect.VaultServiceClient
}

// New checks cfg, fills in defaults and returns a Relay.
func New(cfg Config) (*Relay, error) {
	if cfg.Verifier == nil {
		return nil, errors.New("relay: no token verifier configured")
	}
	if len(cfg.Verifier.Key) == 0 || cfg.Verifier.Issuer == "" || cfg.Verifier.Audience == "" {
		return nil, errors.New("relay: token verifier needs the app backend's key, the issuer and the audience")
	}
	if len(cfg.Vaults) == 0 {
		return nil, errors.New("relay: no vault replicas configured")
	}
	if cfg.PerAccount == (Limit{}) {
		cfg.PerAccount = DefaultPerAccount
	}
	if cfg.PerSource == (Limit{}) {
		cfg.PerSource = DefaultPerSource
	}
	for _, l := range []Limit{cfg.PerAccount, cfg.PerSource} {
		if !l.unlimited() && (l.Rate < 0 || l.Burst < 1) {
			return nil, fmt.Errorf("relay: bad rate limit %+v: rate must be ≥ 0 and burst ≥ 1", l)
		}
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.AttemptTimeout <= 0 || cfg.AttemptTimeout > cfg.RequestTimeout {
		cfg.AttemptTimeout = cfg.RequestTimeout / 2
	}
	if cfg.LogKey == nil {
		cfg.LogKey = make([]byte, 32)
		rand.Read(cfg.LogKey)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: cfg.RequestTimeout,
		}}
	}
	r := &Relay{
		cfg:        cfg,
		perAccount: newLimiter(cfg.PerAccount),
		perSource:  newLimiter(cfg.PerSource),
		log:        cfg.Logger,
		verify:     cfg.Verifier.Verify,
	}
	if cfg.TokenCacheSize >= 0 {
		r.verify = token.NewCache(cfg.Verifier, cfg.TokenCacheSize).Verify
	}
	r.leader.Store(-1)
	seen := map[string]bool{}
	for _, raw := range cfg.Vaults {
		u, err := normalizeURL(raw)
		if err != nil {
			return nil, fmt.Errorf("relay: vault URL %q: %w", raw, err)
		}
		if seen[u] {
			return nil, fmt.Errorf("relay: vault URL %q is listed twice", raw)
		}
		seen[u] = true
		r.vaults = append(r.vaults, vault{url: u, client: vaultv1connect.NewVaultServiceClient(cfg.HTTPClient, u,
			connect.WithReadMaxBytes(MaxResponseBytes),
			// Sealed bytes are ciphertext: compressing them only costs CPU.
			connect.WithAcceptCompression("gzip", nil, nil))})
	}

	mux := http.NewServeMux()
	path, h := vaultv1connect.NewRelayServiceHandler((*service)(r),
		// Coarse bound on the encoded message (the JSON codec writes bytes
		// as base64); Exchange checks the sealed bytes exactly.
		connect.WithReadMaxBytes(cfg.MaxRequestBytes*4/3+4096),
		// Sealed bytes are ciphertext: never spend CPU compressing them.
		connect.WithCompressMinBytes(math.MaxInt32))
	mux.Handle(path, http.MaxBytesHandler(h, int64(cfg.MaxRequestBytes)*4/3+8192))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	r.handler = mux
	return r, nil
}

func normalizeURL(raw string) (string, error) {
	s := strings.TrimRight(strings.TrimSpace(raw), "/")
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", errors.New("want an http:// or https:// base URL without query, fragment or user")
	}
	return s, nil
}

// Handler returns the relay's HTTP handler: RelayService at
// /coffer.vault.v1.RelayService/ and a liveness probe at GET /healthz.
func (r *Relay) Handler() http.Handler { return r.handler }

// Server returns an http.Server for the relay on cfg.Listen, speaking
// HTTP/1.1 and HTTP/2 (h2c without TLS).
func (r *Relay) Server() *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	if r.cfg.TLS != nil {
		p.SetHTTP2(true)
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	return &http.Server{
		Addr:              r.cfg.Listen,
		Handler:           r.handler,
		Protocols:         &p,
		TLSConfig:         r.cfg.TLS,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       r.cfg.RequestTimeout + 30*time.Second,
		WriteTimeout:      r.cfg.RequestTimeout + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(r.log.Handler(), slog.LevelWarn),
	}
}

// ListenAndServe listens on cfg.Listen and serves until ctx is done, then
// shuts down gracefully (waiting up to RequestTimeout, at least 5 s, for
// requests in flight).
func (r *Relay) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", r.cfg.Listen)
	if err != nil {
		return fmt.Errorf("relay: listening on %q: %w", r.cfg.Listen, err)
	}
	return r.Serve(ctx, ln)
}

// Serve serves on ln until ctx is done, then shuts down gracefully.
func (r *Relay) Serve(ctx context.Context, ln net.Listener) error {
	srv := r.Server()
	errc := make(chan error, 1)
	go func() {
		if r.cfg.TLS != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	r.log.Info("relay listening", "addr", ln.Addr().String(), "tls", r.cfg.TLS != nil, "vaults", len(r.vaults))
	select {
	case err := <-errc:
		return fmt.Errorf("relay: serving: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), max(r.cfg.RequestTimeout, 5*time.Second))
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return fmt.Errorf("relay: shutting down: %w", err)
	}
	return nil
}

// AccountLogID is how the logs name an account: the first 8 bytes of
// HMAC-SHA-256(key, account) in hex. Without the key, log readers cannot
// tell which account (e.g. which phone number) a line is about; with it,
// an operator can find an account's lines.
func AccountLogID(key []byte, account string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(account))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// service implements RelayService.
type service Relay

// outcome of one request, for the log line.
type outcome struct {
	account  string
	result   string
	vault    string
	attempts int
	respLen  int
	reason   string
}

// tokenReason names the class of a token error for the logs (the error's
// text may quote claims, which the logs do without).
func tokenReason(err error) string {
	for _, c := range []struct {
		err  error
		name string
	}{
		{token.ErrExpired, "expired"}, {token.ErrNotYetValid, "not_yet_valid"}, {token.ErrSignature, "bad_signature"},
		{token.ErrAlgorithm, "bad_algorithm"}, {token.ErrIssuer, "wrong_issuer"}, {token.ErrAudience, "wrong_audience"},
		{token.ErrLifetime, "lifetime_too_long"}, {token.ErrSubject, "bad_subject"}, {token.ErrMalformed, "malformed"},
	} {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return "invalid"
}

func (s *service) Exchange(ctx context.Context, req *vaultv1.ExchangeRequest) (*vaultv1.ExchangeResponse, error) {
	r := (*Relay)(s)
	start := time.Now()
	id := newRequestID()
	var o outcome
	var hdr http.Header
	var peer string
	if ci, ok := connect.CallInfoForHandlerContext(ctx); ok {
		ci.ResponseHeader().Set(wire.RequestIDHeader, id)
		hdr, peer = ci.RequestHeader(), ci.Peer().Addr
	}
	src := r.source(peer, hdr)
	resp, err := r.exchange(ctx, id, src, hdr, req, &o)
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
	}
	attrs := []any{
		"request_id", id,
		"source", src.String(),
		"outcome", o.result,
		"code", code,
		"latency_ms", float64(time.Since(start).Microseconds()) / 1000,
		"request_bytes", len(req.GetSealed()),
	}
	if o.reason != "" {
		attrs = append(attrs, "reason", o.reason)
	}
	if o.account != "" {
		attrs = append(attrs, "account", AccountLogID(r.cfg.LogKey, o.account))
	}
	if o.attempts > 0 {
		attrs = append(attrs, "vault", o.vault, "attempts", o.attempts)
	}
	if err == nil {
		attrs = append(attrs, "response_bytes", o.respLen)
	}
	level := slog.LevelInfo
	if o.result == "unavailable" || o.result == "vault_error" {
		level = slog.LevelWarn
	}
	r.log.Log(ctx, level, "exchange", attrs...)
	return resp, err
}

func (r *Relay) exchange(ctx context.Context, id string, src netip.Addr, hdr http.Header, req *vaultv1.ExchangeRequest, o *outcome) (*vaultv1.ExchangeResponse, error) {
	if ok, wait := r.perSource.allow(sourceKey(src), time.Now()); !ok {
		o.result = "rate_limited_source"
		return nil, rateLimited("this source address", wait)
	}
	tok, ok := bearer(hdr.Get("Authorization"))
	if !ok {
		o.result = "unauthenticated"
		o.reason = "no_token"
		return nil, connect.NewError(connect.CodeUnauthenticated,
			errors.New("no account token: send the header \"Authorization: Bearer <token>\" with a token from the app's backend"))
	}
	claims, err := r.verify(tok)
	if err != nil {
		o.result = "unauthenticated"
		o.reason = tokenReason(err)
		return nil, connect.NewError(connect.CodeUnauthenticated,
			fmt.Errorf("account token refused: %s", strings.TrimPrefix(err.Error(), "token: ")))
	}
	o.account = claims.Subject
	if ok, wait := r.perAccount.allow(claims.Subject, time.Now()); !ok {
		o.result = "rate_limited_account"
		return nil, rateLimited("this account", wait)
	}
	if n := len(req.GetSealed()); n == 0 || n > r.cfg.MaxRequestBytes {
		o.result = "bad_size"
		if n == 0 {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("empty sealed request"))
		}
		return nil, connect.NewError(connect.CodeResourceExhausted,
			fmt.Errorf("sealed request is %d bytes, more than this relay's limit of %d", n, r.cfg.MaxRequestBytes))
	}
	resp, err := r.forward(ctx, id, &vaultv1.VaultExchangeRequest{Account: claims.Subject, Sealed: req.GetSealed()}, o)
	if err != nil {
		return nil, err
	}
	o.result = "ok"
	o.respLen = len(resp.GetSealed())
	return resp, nil
}

func rateLimited(what string, wait time.Duration) error {
	secs := int64((wait + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	e := connect.NewError(connect.CodeResourceExhausted,
		fmt.Errorf("rate limit for %s reached; retry after %d s", what, secs))
	e.Meta().Set("Retry-After", strconv.FormatInt(secs, 10))
	return e
}

// bearer extracts the token from an Authorization header value.
func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// forward sends the request to the leader, following Coffer-Leader hints
// and trying the replicas in turn on Unavailable, with exponential backoff
// after each full round, within RequestTimeout.
func (r *Relay) forward(ctx context.Context, id string, vreq *vaultv1.VaultExchangeRequest, o *outcome) (*vaultv1.ExchangeResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	n := len(r.vaults)
	next := int(r.leader.Load())
	if next < 0 {
		next = 0
	}
	tried := make([]bool, n)
	backoff := 25 * time.Millisecond
	var lastErr error
	for {
		if o.attempts >= maxRounds*n {
			return nil, r.giveUp(ctx, o, lastErr)
		}
		if tried[next] {
			// Every replica named so far in this round failed: wait, then
			// start a new round.
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, r.giveUp(ctx, o, lastErr)
			case <-t.C:
			}
			backoff = min(2*backoff, time.Second)
			clear(tried)
		}
		tried[next] = true
		i := next
		o.attempts++
		o.vault = r.vaults[i].url
		actx, acancel := context.WithTimeout(ctx, r.cfg.AttemptTimeout)
		cctx, ci := connect.NewClientContext(actx)
		ci.RequestHeader().Set(wire.RequestIDHeader, id)
		resp, err := r.vaults[i].client.Exchange(cctx, vreq)
		acancel()
		if err == nil {
			// A follower that forwarded the request to the leader names
			// it: go straight there next time.
			leader := i
			if hint := ci.ResponseHeader().Get(wire.LeaderHeader); hint != "" {
				if j := r.vaultIndex(hint); j >= 0 {
					leader = j
				}
			}
			r.leader.Store(int64(leader))
			return resp, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			return nil, r.giveUp(ctx, o, lastErr)
		}
		code := connect.CodeOf(err)
		if code != connect.CodeUnavailable && code != connect.CodeDeadlineExceeded {
			// The vault answered: pass its verdict on.
			o.result = "vault_error"
			var ce *connect.Error
			msg := err.Error()
			if errors.As(err, &ce) {
				msg = ce.Message()
			}
			return nil, connect.NewError(code, fmt.Errorf("vault: %s", msg))
		}
		next = (i + 1) % n
		r.leader.CompareAndSwap(int64(i), -1)
		if hint := wire.LeaderHint(err); hint != "" {
			if j := r.vaultIndex(hint); j >= 0 && j != i {
				next = j
				r.leader.Store(int64(j))
			}
		}
	}
}

func (r *Relay) giveUp(ctx context.Context, o *outcome, lastErr error) error {
	if ctx.Err() == context.Canceled {
		o.result = "canceled"
		return connect.NewError(connect.CodeCanceled, errors.New("the client canceled the request"))
	}
	o.result = "unavailable"
	last := "none answered"
	if lastErr != nil {
		last = "last: " + connect.CodeOf(lastErr).String()
	}
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf(
		"no vault replica could serve the request (%d attempts in %s, %s); the fleet may be down or without quorum: retry later",
		o.attempts, r.cfg.RequestTimeout, last))
}

func (r *Relay) vaultIndex(u string) int {
	s, err := normalizeURL(u)
	if err != nil {
		return -1
	}
	for i, v := range r.vaults {
		if v.url == s {
			return i
		}
	}
	return -1
}

// source returns the request's source address: the TCP peer, or, if the
// peer is a trusted proxy, the rightmost untrusted X-Forwarded-For entry.
func (r *Relay) source(peer string, hdr http.Header) netip.Addr {
	ap, err := netip.ParseAddrPort(peer)
	if err != nil {
		return netip.Addr{}
	}
	addr := ap.Addr().Unmap()
	if !r.trusted(addr) || hdr == nil {
		return addr
	}
	var hops []string
	for _, v := range hdr.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return addr
		}
		a = a.Unmap()
		if !r.trusted(a) {
			return a
		}
		addr = a
	}
	return addr
}

func (r *Relay) trusted(a netip.Addr) bool {
	for _, p := range r.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// sourceKey is the rate-limit key of an address: IPv4 addresses alone,
// IPv6 addresses by /64 (one host usually owns a whole /64).
func sourceKey(a netip.Addr) string {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

func newRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
