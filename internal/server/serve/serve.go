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
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cofferhq/coffer/internal/protocol/pake"
	"github.com/cofferhq/coffer/internal/server/fleetca"
	"github.com/cofferhq/coffer/internal/server/replica"
	"github.com/cofferhq/coffer/internal/server/sealing"
	"github.com/cofferhq/coffer/internal/server/vault"
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
	// TLS: mutual TLS for Raft, HTTPS for the VaultService and a client
	// certificate for /admin/ and forwarding. Nil: plain TCP and HTTP.
	TLS *fleetca.TLS
	// SealingKey and Marks seal the replica's disk (Sealed reports that a
	// sealing key was configured); Marks is the rollback high-water mark
	// store (a PKCS#11 token), nil without one.
	SealingKey sealing.Key
	Marks      sealing.MarkStore
	Sealed     bool
	// The VaultService listens on Listener, or on Listen.
	Listen   string
	Listener net.Listener
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
	forward *http.Client
	failed  chan error
	url     string
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

	r.ln = s.Listener
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

	rcfg := replica.Config{
		ID: s.ID, Dir: s.DataDir, Bootstrap: s.Bootstrap, Peers: peers, Logger: log,
		SealingKey: s.SealingKey, Marks: s.Marks, MarkInterval: s.MarkInterval,
		HeartbeatTimeout: s.Timing.Heartbeat, ElectionTimeout: s.Timing.Election,
		LeaderLeaseTimeout: s.Timing.LeaderLease, CommitTimeout: s.Timing.Commit,
		SnapshotThreshold: s.SnapshotThreshold, SnapshotInterval: s.SnapshotInterval, TrailingLogs: s.TrailingLogs,
		SyncState: s.SyncState, DisableBatching: s.DisableBatching,
	}
	if rcfg.StreamLayer, err = s.streamLayer(); err != nil {
		return nil, err
	}
	if rcfg.StreamLayer == nil {
		rcfg.Listener, rcfg.BindAddr, rcfg.AdvertiseAddr = s.RaftListener, s.RaftBind, s.RaftAdvertise
	}
	if r.rep, err = replica.Open(rcfg); err != nil {
		var hint string
		if errors.Is(err, replica.ErrRolledBack) {
			hint = "SECURITY.md, 'Rollback': move the data directory away and restart the replica empty; it catches up from its peers"
		}
		return nil, &HintError{Err: err, Hint: hint}
	}

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
	fake := pake.DefaultKSF
	if s.InsecureDevKSF {
		// The profile shown for unknown accounts is the one real accounts
		// use, so a development fleet's cheap profile does not single out
		// the registered accounts.
		fake = pake.TestKSF
	}
	if r.vault, err = vault.New(vault.Config{
		Forward: r.forward,
		Secrets: s.Secrets, Replica: r.rep, URLs: urls, GuessLimit: s.GuessLimit,
		DataCentre: s.DataCentre, DataCentres: s.DataCentres, AdminRequiresCert: s.TLS != nil,
		AllowWeakKSF: s.InsecureDevKSF, FakeKSF: fake, Logger: log,
	}); err != nil {
		return nil, err
	}

	r.hs = HTTPServer(r.vault.Handler(), log)
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
	log.Info("vault replica serving", "id", s.ID, "fleet_id", fmt.Sprintf("%x", s.Secrets.FleetID), "listen", r.ln.Addr().String(),
		"url", r.url, "raft", r.rep.Addr(), "raft_source_addr", s.RaftSourceAddr, "data", s.DataDir,
		"bootstrap", s.Bootstrap, "peers", len(peers), "tls", s.TLS != nil, "sealed", s.Sealed)
	return r, nil
}

// streamLayer is Raft's transport: mutual TLS with the fleet CA, and/or
// outgoing connections from RaftSource; nil for plain TCP on RaftBind or
// RaftListener.
func (s *Spec) streamLayer() (raft.StreamLayer, error) {
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
		sl, err = replica.NewStreamLayer(s.TLS.Listener(ln), s.RaftAdvertise, s.TLS.Dial())
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
