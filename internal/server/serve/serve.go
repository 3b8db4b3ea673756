// Package serve assembles one vault replica — Raft over (mutual-TLS)
// sockets, the sealed state on disk, the vault server and its HTTP(S)
// endpoint — from a Spec, and stops it cleanly. It is the one place a
// replica is put together: `coffer vault serve` (from a Config file and
// flags, through Open), `coffer dev` and the fault harness (which run
// `coffer vault serve` processes), and the in-process development fleet
// (devfleet, which builds Specs directly on its own listeners).
//
// Use:
//
//	cfg, _ := serve.LoadConfig(path)      // or fill a Config from flags
//	spec, err := serve.Open(cfg, serve.Env{Logger: log})
//	r, err := serve.Start(spec)
//	select { case <-ctx.Done(): case err = <-r.Failed(): }
//	r.Stop(context.Background())         // drains HTTP, hands leadership over, closes files
//
// What it guarantees: a replica that started serves only after its Raft
// node, sealed state and vault server are all up; Stop stops taking
// requests, finishes those in flight (15 s at most), closes the Raft node
// (handing leadership over first) and then the sealing token, in that
// order, whatever failed before.
package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cofferhq/coffer/internal/server/fleetca"
	"github.com/cofferhq/coffer/internal/server/replica"
	"github.com/cofferhq/coffer/internal/server/sealing"
	"github.com/cofferhq/coffer/internal/server/vault"
	"github.com/cofferhq/coffer/internal/server/vaultstate"
	"github.com/cofferhq/coffer/token"
)

// Spec is everything a replica is assembled from, with files already read.
type Spec struct {
	ID         string
	DataCentre string
	DataDir    string
	// URL is this replica's VaultService base URL as relays and peers
	// reach it (default http://LISTEN, https:// with TLS).
	URL string
	// URLs and DataCentres of other members known from the configuration
	// (the replicated member directory takes over once running).
	URLs, DataCentres map[string]string
	Secrets           *vault.Secrets
	// Shares are this replica's OPRF shares on a threshold fleet (nil: the
	// fleet's OPRF seed in Secrets evaluates).
	Shares []*vault.ShareSet
	// Tokens verifies every request's vault token (required).
	Tokens *token.Verifier
	// TLS: mutual TLS for Raft, HTTPS for the VaultService and a client
	// certificate for /admin/ and forwarding. Nil: plain TCP and HTTP.
	TLS *fleetca.TLS
	// SealingKey seals the replica's disk (nil: unsealed); Marks is the
	// rollback high-water mark store (a PKCS#11 token), nil without one.
	SealingKey sealing.Key
	Marks      sealing.MarkStore
	// LegacySealingKey is the fleet's storage key from before per-replica
	// keys (vault.Secrets.StorageKey), to re-seal a version 1 snapshot a
	// not-yet-upgraded replica sends (replica.Config.LegacySealingKey).
	LegacySealingKey sealing.Key
	// The VaultService listens on Listener, or on Listen.
	Listen   string
	Listener net.Listener
	// Prometheus metrics (/metrics) are served on MetricsListener, or on
	// MetricsListen (a bare port or ":PORT": 127.0.0.1), and nowhere
	// if neither is set: not on the VaultService port.
	MetricsListen   string
	MetricsListener net.Listener
	// Raft listens on RaftListener, or on RaftBind; peers dial
	// RaftAdvertise (default: the bound address). Outgoing Raft
	// connections leave from RaftSource's local address when set.
	RaftBind       string
	RaftListener   net.Listener
	RaftAdvertise  string
	RaftSource     *net.Dialer
	RaftSourceAddr string
	// InsecurePlainRaft lets Raft run without TLS on an address that is not
	// loopback (Config.InsecurePlainRaft): anyone who reaches it can
	// commit commands.
	InsecurePlainRaft bool
	// Bootstrap a new fleet with Peers (this replica alone if empty).
	Bootstrap bool
	Peers     []replica.Peer
	// GuessLimit of new registrations (0: vault.DefaultGuessLimit).
	GuessLimit uint32
	// Pacing of wrong guesses (nil: vault.DefaultPacing).
	Pacing *vaultstate.Pacing
	// InsecureDevKSF accepts cheap key stretching (development fleets and
	// tests) and shows the cheap profile in fake answers.
	InsecureDevKSF bool
	Timing         Timing
	// Snapshot tuning and the high-water mark interval (zero: defaults).
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	MarkInterval      time.Duration
	// SyncState and DisableBatching are replica.Config's benchmark knobs.
	SyncState, DisableBatching bool
	// Forward is the HTTP client a follower forwards requests to the leader
	// with (default: one over the fleet's mutual TLS, or plain HTTP).
	Forward *http.Client
	Logger  *slog.Logger

	closers []func() error // what Open opened (the sealing token)
}

// Timing is Raft's timing (zero values: replica's defaults).
type Timing struct {
	Heartbeat, Election, LeaderLease, Commit time.Duration
}

// Close releases what Open opened, for a Spec that was never started
// (Start's Replica closes it otherwise).
func (s *Spec) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	s.closers = nil
	return errors.Join(errs...)
}

// Replica is a running replica.
type Replica struct {
	spec    *Spec
	rep     *replica.Replica
	vault   *vault.Server
	hs      *http.Server
	ln      net.Listener
	mhs     *http.Server // metrics
	mln     net.Listener
	forward *http.Client
	failed  chan error
	url     string
	peers   *raftPeers
}

// Start assembles and starts the replica spec describes. On error nothing
// is left running and spec is closed.
func Start(spec *Spec) (_ *Replica, err error) {
	s := spec
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	log := s.Logger
	r := &Replica{spec: s, failed: make(chan error, 1)}
	defer func() {
		if err != nil {
			r.close()
		}
	}()

	r.ln, r.mln = s.Listener, s.MetricsListener
	if r.ln == nil {
		if r.ln, err = net.Listen("tcp", s.Listen); err != nil {
			return nil, fmt.Errorf("listen for the VaultService on %q: %w", s.Listen, err)
		}
	}
	r.url = s.URL
	if r.url == "" {
		scheme := "http://"
		if s.TLS != nil {
			scheme = "https://"
		}
		r.url = scheme + r.ln.Addr().String()
	}
	urls := map[string]string{s.ID: r.url}
	for id, u := range s.URLs {
		if id != s.ID {
			urls[id] = u
		}
	}
	peers := s.Peers
	if len(peers) > 0 && !hasPeer(peers, s.ID) {
		adv := s.RaftAdvertise
		if adv == "" {
			adv = s.RaftBind
		}
		peers = append(append([]replica.Peer(nil), peers...), replica.Peer{ID: s.ID, Addr: adv})
	}
	if s.InsecureDevKSF {
		log.Warn("--insecure-dev-ksf: registrations with cheap key stretching are accepted; development fleets only")
	}

	if err := s.checkPlainRaft(); err != nil {
		return nil, err
	}
	r.peers = newRaftPeers(s.ID, peers)
	rcfg := replica.Config{
		ID: s.ID, Dir: s.DataDir, Bootstrap: s.Bootstrap, Peers: peers, Logger: log,
		SealingKey: s.SealingKey, LegacySealingKey: s.LegacySealingKey, Marks: s.Marks, MarkInterval: s.MarkInterval,
		HeartbeatTimeout: s.Timing.Heartbeat, ElectionTimeout: s.Timing.Election,
		LeaderLeaseTimeout: s.Timing.LeaderLease, CommitTimeout: s.Timing.Commit,
		SnapshotThreshold: s.SnapshotThreshold, SnapshotInterval: s.SnapshotInterval, TrailingLogs: s.TrailingLogs,
		SyncState: s.SyncState, DisableBatching: s.DisableBatching,
	}
	if rcfg.StreamLayer, err = s.streamLayer(r.peers); err != nil {
		return nil, err
	}
	if rcfg.StreamLayer == nil {
		rcfg.Listener, rcfg.BindAddr, rcfg.AdvertiseAddr = s.RaftListener, s.RaftBind, s.RaftAdvertise
	}
	if r.rep, err = replica.Open(rcfg); err != nil {
		var hint string
		switch {
		case errors.Is(err, replica.ErrRolledBack), errors.Is(err, replica.ErrNoMark):
			hint = "SECURITY.md, 'Rollback': move the data directory away and restart the replica empty; it catches up from its peers"
		case errors.Is(err, vaultstate.ErrStateTampered):
			hint = "SECURITY.md, 'Splicing old values into a replica's disk': move the data directory away and restart the replica empty; it catches up from its peers"
		}
		return nil, &HintError{Err: err, Hint: hint}
	}
	r.peers.set(r.rep)

	// A follower forwards requests to the leader, over mutual TLS when the
	// fleet has it.
	r.forward = s.Forward
	if r.forward == nil {
		if s.TLS != nil {
			r.forward = s.TLS.HTTPClient()
		} else {
			r.forward = &http.Client{Transport: &http.Transport{
				DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext, MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second,
			}}
		}
	}
	if r.vault, err = vault.New(vault.Config{
		Forward: r.forward, Tokens: s.Tokens, Pacing: s.Pacing,
		Secrets: s.Secrets, Replica: r.rep, URLs: urls, GuessLimit: s.GuessLimit,
		DataCentre: s.DataCentre, DataCentres: s.DataCentres, AdminRequiresCert: s.TLS != nil,
		AllowWeakKSF: s.InsecureDevKSF, Shares: s.Shares, Logger: log,
	}); err != nil {
		return nil, err
	}

	r.hs = HTTPServer(vaultHandler(r.vault.Handler(), s.TLS != nil), log)
	if s.TLS != nil {
		r.hs.TLSConfig = s.TLS.OptionalClientConfig()
		r.hs.Protocols.SetHTTP2(true)
		go func() { r.served(r.hs.ServeTLS(r.ln, "", "")) }()
	} else {
		if h, _, _ := net.SplitHostPort(r.ln.Addr().String()); !IsLoopbackHost(h) {
			log.Warn("no TLS: the admin endpoint (/admin/) answers loopback callers only; configure the fleet CA certificates for remote administration")
		}
		go func() { r.served(r.hs.Serve(r.ln)) }()
	}
	if err := r.serveMetrics(); err != nil {
		return nil, err
	}
	log.Info("vault replica serving", "id", s.ID, "fleet_id", fmt.Sprintf("%x", s.Secrets.FleetID), "listen", r.ln.Addr().String(),
		"url", r.url, "raft", r.rep.Addr(), "raft_source_addr", s.RaftSourceAddr, "data", s.DataDir,
		"bootstrap", s.Bootstrap, "peers", len(peers), "tls", s.TLS != nil, "sealed", s.SealingKey != nil)
	return r, nil
}

// MetricsAddress is where a metrics_listen value listens: a bare port or
// ":PORT" on loopback, anything else as given.
func MetricsAddress(v string) string {
	if _, err := strconv.Atoi(v); err == nil {
		return net.JoinHostPort("127.0.0.1", v)
	}
	if h, p, err := net.SplitHostPort(v); err == nil && h == "" {
		return net.JoinHostPort("127.0.0.1", p)
	}
	return v
}

// serveMetrics serves /metrics on the metrics listener, if configured.
func (r *Replica) serveMetrics() error {
	s := r.spec
	if r.mln == nil {
		if s.MetricsListen == "" {
			return nil
		}
		var err error
		if r.mln, err = net.Listen("tcp", MetricsAddress(s.MetricsListen)); err != nil {
			return fmt.Errorf("listen for metrics on %q: %w", s.MetricsListen, err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", r.vault.MetricsHandler())
	r.mhs = HTTPServer(mux, s.Logger)
	ln := r.mln
	go func() { r.served(r.mhs.Serve(ln)) }()
	if h, _, _ := net.SplitHostPort(ln.Addr().String()); !IsLoopbackHost(h) {
		s.Logger.Warn("metrics are served on a non-loopback address, without authentication", "metrics", ln.Addr().String())
	}
	s.Logger.Info("serving metrics", "metrics", ln.Addr().String())
	return nil
}

// MetricsAddr is the address /metrics is served on (nil: none).
func (r *Replica) MetricsAddr() net.Addr {
	if r.mln == nil {
		return nil
	}
	return r.mln.Addr()
}

// streamLayer is Raft's transport: mutual TLS with the fleet CA, and/or
// outgoing connections from RaftSource; nil for plain TCP on RaftBind or
// RaftListener.
func (s *Spec) streamLayer(peers *raftPeers) (raft.StreamLayer, error) {
	if s.TLS == nil && s.RaftSource == nil {
		return nil, nil
	}
	ln := s.RaftListener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.RaftBind); err != nil {
			return nil, fmt.Errorf("listen for peers on %q: %w", s.RaftBind, err)
		}
	}
	var sl raft.StreamLayer
	var err error
	if s.TLS != nil {
		sl, err = replica.NewStreamLayer(s.TLS.PeerListener(ln, peers.allow), s.RaftAdvertise, s.TLS.Dial())
		if err == nil && s.RaftSource != nil {
			sl = replica.WithDial(sl, s.TLS.DialFrom(s.RaftSource))
		}
	} else {
		src := s.RaftSource
		sl, err = replica.NewStreamLayer(ln, s.RaftAdvertise, func(ctx context.Context, addr string) (net.Conn, error) {
			return src.DialContext(ctx, "tcp", addr)
		})
	}
	if err != nil {
		ln.Close()
		return nil, err
	}
	return sl, nil
}

// checkPlainRaft refuses Raft without TLS on an address that is not
// loopback, unless InsecurePlainRaft: anyone who reaches a plain Raft port
// can claim a higher term and commit commands (SECURITY.md).
func (s *Spec) checkPlainRaft() error {
	if s.TLS != nil || s.InsecurePlainRaft {
		if s.TLS == nil {
			s.Logger.Warn("insecure_plain_raft: Raft without TLS on a reachable address; anyone who reaches it can commit commands", "raft", s.RaftBind)
		}
		return nil
	}
	addr := s.RaftBind
	if s.RaftListener != nil {
		addr = s.RaftListener.Addr().String()
	}
	host, _, err := net.SplitHostPort(addr)
	if err == nil && IsLoopbackHost(host) {
		return nil
	}
	return &HintError{
		Err: fmt.Errorf("%w: Raft would listen on %q without TLS: anyone who reaches that port can claim a higher term and commit commands to this fleet", ErrConfig, addr),
		Hint: "Give the replica its fleet certificate (--tls-cert/--tls-key/--tls-ca from 'coffer vault cert', or tls in --config), " +
			"or bind Raft to loopback (127.0.0.1) for a development fleet on one host, or accept the risk with --insecure-plain-raft (insecure_plain_raft in --config)",
	}
}

// raftPeers decides which certificates Raft's port accepts: a replica's
// (not an operator's or a relay's), naming a member of the fleet — a
// server in the Raft configuration, a configured peer, or this replica.
// A replica whose configuration is still empty (started to be joined)
// accepts any replica's certificate: it cannot know the leader yet.
type raftPeers struct {
	self       string
	configured map[string]bool
	mu         sync.Mutex
	rep        *replica.Replica
}

func newRaftPeers(self string, peers []replica.Peer) *raftPeers {
	p := &raftPeers{self: self, configured: map[string]bool{self: true}}
	for _, x := range peers {
		p.configured[x.ID] = true
	}
	return p
}

func (p *raftPeers) set(r *replica.Replica) {
	p.mu.Lock()
	p.rep = r
	p.mu.Unlock()
}

func (p *raftPeers) allow(role fleetca.Role, name string) error {
	if err := fleetca.AllowRoles(fleetca.RoleReplica)(role, name); err != nil {
		return err
	}
	p.mu.Lock()
	rep := p.rep
	p.mu.Unlock()
	var servers []replica.Peer
	if rep != nil {
		servers, _ = rep.Servers()
	}
	if len(servers) == 0 && (rep != nil || len(p.configured) == 1) {
		return nil // no configuration yet: waiting to be joined
	}
	if p.configured[name] {
		return nil
	}
	for _, sv := range servers {
		if sv.ID == name {
			return nil
		}
	}
	return fmt.Errorf("fleetca: replica certificate %q: %w: not a member of this fleet", name, fleetca.ErrRole)
}

// vaultHandler is the vault's handler as the VaultService port serves it:
// without /metrics (Config.MetricsListen serves it on a port of its own),
// and, with TLS, /admin/ only for replica and operator certificates (not a
// relay's).
func vaultHandler(h http.Handler, withTLS bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/metrics":
			http.NotFound(w, r)
			return
		case !withTLS || r.URL.Path == "/healthz" || r.URL.Path == "/readyz":
			// Liveness and readiness tell anyone only that the port serves.
		case r.URL.Path == vault.EvaluatePath:
			// Partial evaluations (PROTOCOL.md §7): between replicas only.
			if err := fleetca.CheckPeer(r.TLS, fleetca.AllowRoles(fleetca.RoleReplica)); err != nil {
				http.Error(w, "partial evaluations are for the fleet's replicas only: "+err.Error(), http.StatusForbidden)
				return
			}
		case strings.HasPrefix(r.URL.Path, "/admin/"):
			if err := fleetca.CheckPeer(r.TLS, fleetca.AdminAllowed); err != nil {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusForbidden)
				json.NewEncoder(w).Encode(vault.AdminError{Error: "the admin endpoint needs a replica or operator certificate from the fleet CA ('coffer vault cert --role operator'): " + err.Error()})
				return
			}
		default:
			// The VaultService: relays and forwarding replicas only. The
			// vault token inside each sealed request is checked as well;
			// this keeps everyone else from reaching the vault at all.
			if err := fleetca.CheckPeer(r.TLS, fleetca.ExchangeAllowed); err != nil {
				http.Error(w, "the vault service needs a relay or replica certificate from the fleet CA ('coffer vault cert --role relay'): "+err.Error(), http.StatusForbidden)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

func hasPeer(ps []replica.Peer, id string) bool {
	for _, p := range ps {
		if p.ID == id {
			return true
		}
	}
	return false
}

// Replica is the Raft node.
func (r *Replica) Replica() *replica.Replica { return r.rep }

// Vault is the vault server.
func (r *Replica) Vault() *vault.Server { return r.vault }

// URL is the VaultService's base URL.
func (r *Replica) URL() string { return r.url }

// Addr is the address the VaultService listens on.
func (r *Replica) Addr() net.Addr { return r.ln.Addr() }

// Failed delivers the error that stopped the HTTP server on its own (it
// never delivers because of Stop or Kill).
func (r *Replica) Failed() <-chan error { return r.failed }

// served passes on why the HTTP server stopped, unless it was asked to.
func (r *Replica) served(err error) {
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		r.failed <- err
	}
}

// Kill stops the replica abruptly, as if it failed: the VaultService at
// once (requests in flight are cut), then the Raft node and the files.
func (r *Replica) Kill() error {
	if r.hs != nil {
		r.hs.Close()
	}
	if r.mhs != nil {
		r.mhs.Close()
	}
	return r.close()
}

// Stop stops the replica cleanly: no new requests, those in flight finish
// (until ctx ends, 15 s at most), leadership is handed over, files close.
func (r *Replica) Stop(ctx context.Context) error {
	var errs []error
	if r.hs != nil {
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		if err := r.hs.Shutdown(sctx); err != nil {
			r.hs.Close()
			r.spec.Logger.Warn("shutting the HTTP server down", "error", err)
		}
		cancel()
	}
	if r.mhs != nil {
		r.mhs.Close()
	}
	errs = append(errs, r.close())
	return errors.Join(errs...)
}

// close closes the Raft node, the forwarding client and what Open opened,
// once.
func (r *Replica) close() error {
	var errs []error
	if r.rep != nil {
		errs = append(errs, r.rep.Close())
		r.rep = nil
	}
	if r.forward != nil && r.spec.Forward == nil {
		r.forward.CloseIdleConnections()
	}
	if r.ln != nil && r.hs == nil {
		r.ln.Close()
	}
	if r.mln != nil && r.mhs == nil {
		r.mln.Close()
	}
	errs = append(errs, r.spec.Close())
	return errors.Join(errs...)
}

// HTTPServer returns a server of h speaking HTTP/1.1 and h2c (HTTP/2 too
// with TLS), with the timeouts and limits every Coffer server uses.
func HTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           h,
		Protocols:         &p,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
