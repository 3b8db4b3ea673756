// Package benchfleet runs a Backup Key Vault fleet of 1 to 7 replicas and
// one relay on 127.0.0.1, for benchmarks: the same parts as package
// devfleet (key ceremony, vault.Server over vault/replica, relay), but with
// any number of Raft voters, tunable Raft timing, and the relay's request
// log optionally kept (it is part of a real relay's cost).
//
// It is used by `go run ./bench/vault/fleet` (a fleet in its own process,
// so a load generator does not share its address space) and by the vault
// package's benchmarks.
package benchfleet

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cofferhq/coffer/devfleet"
	"github.com/cofferhq/coffer/fleet"
	"github.com/cofferhq/coffer/pake"
	"github.com/cofferhq/coffer/relay"
	"github.com/cofferhq/coffer/token"
	"github.com/cofferhq/coffer/vault"
	"github.com/cofferhq/coffer/vault/replica"
)

// Token settings: the same as devfleet's.
const (
	Issuer   = devfleet.Issuer
	Audience = devfleet.Audience
	// TokenKeyFile is the app backend's Ed25519 private key (PKCS#8 PEM),
	// in Options.Dir: load generators mint account tokens with it.
	TokenKeyFile = "app-token.key"
)

// Options configure Start.
type Options struct {
	// Dir keeps the fleet's keys and state (a fresh fleet each time:
	// replica directories left by an earlier run are removed).
	Dir string
	// Replicas is the number of Raft voters (default 1).
	Replicas int
	// GuessLimit for new registrations (default 10).
	GuessLimit uint32
	// Raft timing (zero: 1 s heartbeat and election timeouts, 500 ms
	// lease, 5 ms commit timeout). A loaded 2-core machine needs the
	// 1 s defaults with 5 replicas, or leaders flap.
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout, CommitTimeout time.Duration
	// SyncState fsyncs every state-machine transaction (replica.Config).
	SyncState bool
	// DisableBatching applies one entry per state-machine transaction.
	DisableBatching bool
	// RelayLog, if set, receives the relay's JSON request log (one line
	// per request, as a deployed relay writes); nil discards it.
	RelayLog io.Writer
	// Logger for Raft and the vault (default: discard).
	Logger *slog.Logger
}

// Fleet is a running benchmark fleet.
type Fleet struct {
	Dir          string
	RelayURL     string
	VaultURLs    []string
	BundlePath   string
	RootPublic   string
	TokenKeyPath string
	Bundle       *fleet.Bundle
	Replicas     []*replica.Replica
	tokenKey     ed25519.PrivateKey
	servers      []*http.Server
}

// Start runs the fleet and returns once a leader is elected and the relay
// listens.
func Start(ctx context.Context, o Options) (_ *Fleet, err error) {
	if o.Dir == "" {
		return nil, errors.New("benchfleet: a directory is required")
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Replicas < 1 || o.Replicas > 7 {
		return nil, fmt.Errorf("benchfleet: %d replicas; want 1 to 7", o.Replicas)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.HeartbeatTimeout == 0 {
		o.HeartbeatTimeout = time.Second
	}
	if o.ElectionTimeout == 0 {
		o.ElectionTimeout = time.Second
	}
	if o.LeaderLeaseTimeout == 0 {
		o.LeaderLeaseTimeout = 500 * time.Millisecond
	}
	if o.CommitTimeout == 0 {
		o.CommitTimeout = 5 * time.Millisecond
	}
	fleetDir := filepath.Join(o.Dir, "fleet")
	if _, err := os.Stat(filepath.Join(fleetDir, vault.SecretsFile)); errors.Is(err, os.ErrNotExist) {
		if _, err := vault.Init(fleetDir, 0); err != nil {
			return nil, fmt.Errorf("key ceremony: %w", err)
		}
	}
	secrets, err := vault.LoadSecrets(filepath.Join(fleetDir, vault.SecretsFile))
	if err != nil {
		return nil, err
	}
	rootText, err := os.ReadFile(filepath.Join(fleetDir, vault.RootPubFile))
	if err != nil {
		return nil, err
	}
	signed, err := os.ReadFile(filepath.Join(fleetDir, vault.BundleFile))
	if err != nil {
		return nil, err
	}
	rootPub, err := fleet.ParseRootPublicKey(strings.TrimSpace(string(rootText)))
	if err != nil {
		return nil, err
	}
	bundle, err := fleet.Verify(signed, rootPub, time.Now())
	if err != nil {
		return nil, fmt.Errorf("fleet bundle: %w", err)
	}
	pub, priv, err := token.GenerateKey()
	if err != nil {
		return nil, err
	}
	pemBytes, err := token.MarshalPrivateKeyPEM(priv)
	if err != nil {
		return nil, err
	}
	f := &Fleet{
		Dir: o.Dir, BundlePath: filepath.Join(fleetDir, vault.BundleFile),
		RootPublic: strings.TrimSpace(string(rootText)), Bundle: bundle,
		TokenKeyPath: filepath.Join(o.Dir, TokenKeyFile), tokenKey: priv,
	}
	if err := os.WriteFile(f.TokenKeyPath, pemBytes, 0o600); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()

	// Listeners first, so every replica knows its peers' addresses.
	n := o.Replicas
	var peers []replica.Peer
	var raftLns, vaultLns []net.Listener
	urls := map[string]string{}
	for i := range n {
		rl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		vl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			rl.Close()
			return nil, err
		}
		raftLns, vaultLns = append(raftLns, rl), append(vaultLns, vl)
		id := fmt.Sprintf("r%d", i+1)
		peers = append(peers, replica.Peer{ID: id, Addr: rl.Addr().String()})
		u := "http://" + vl.Addr().String()
		urls[id] = u
		f.VaultURLs = append(f.VaultURLs, u)
	}
	for i := range n {
		dir := filepath.Join(o.Dir, "replica-"+peers[i].ID)
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
		r, err := replica.Open(replica.Config{
			ID: peers[i].ID, Dir: dir, Listener: raftLns[i], Bootstrap: true, Peers: peers,
			GuessLimit: o.GuessLimit, Logger: o.Logger,
			HeartbeatTimeout: o.HeartbeatTimeout, ElectionTimeout: o.ElectionTimeout,
			LeaderLeaseTimeout: o.LeaderLeaseTimeout, CommitTimeout: o.CommitTimeout,
			SyncState: o.SyncState, DisableBatching: o.DisableBatching,
		})
		if err != nil {
			for _, l := range raftLns[i:] {
				l.Close()
			}
			for _, l := range vaultLns {
				l.Close()
			}
			return nil, fmt.Errorf("starting vault replica %s: %w", peers[i].ID, err)
		}
		f.Replicas = append(f.Replicas, r)
	}
	for i, r := range f.Replicas {
		srv, err := vault.New(vault.Config{
			Secrets: secrets, Replica: r, URLs: urls,
			GuessLimit: o.GuessLimit, FakeKSF: pake.DefaultKSF, AllowWeakKSF: true, Logger: o.Logger,
		})
		if err != nil {
			return nil, err
		}
		f.serve(srv.Handler(), vaultLns[i])
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, _, err := f.Replicas[0].WaitForLeader(wctx); err != nil {
		return nil, fmt.Errorf("the fleet elected no leader: %w", err)
	}

	relayLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.RelayURL = "http://" + relayLn.Addr().String()
	rlog := slog.New(slog.DiscardHandler)
	if o.RelayLog != nil {
		rlog = slog.New(slog.NewJSONHandler(o.RelayLog, nil))
	}
	rl, err := relay.New(relay.Config{
		Vaults:     f.VaultURLs,
		Verifier:   &token.Verifier{Key: pub, Issuer: Issuer, Audience: Audience, Leeway: token.DefaultLeeway},
		PerAccount: relay.Unlimited, PerSource: relay.Unlimited,
		Logger: rlog,
	})
	if err != nil {
		relayLn.Close()
		return nil, err
	}
	f.serve(rl.Handler(), relayLn)
	return f, nil
}

func (f *Fleet) serve(h http.Handler, ln net.Listener) {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	s := &http.Server{Handler: h, Protocols: &protocols, ReadHeaderTimeout: 10 * time.Second}
	f.servers = append(f.servers, s)
	go s.Serve(ln)
}

// Token mints an account token for account, valid for ttl (at most an hour).
func (f *Fleet) Token(account string, ttl time.Duration) (string, error) {
	now := time.Now()
	return token.Mint(f.tokenKey, token.Claims{Issuer: Issuer, Subject: account, Audience: Audience, IssuedAt: now, Expiry: now.Add(ttl)})
}

// Leader returns the replica that leads, or nil.
func (f *Fleet) Leader() *replica.Replica {
	for _, r := range f.Replicas {
		if r.IsLeader() {
			return r
		}
	}
	return nil
}

// Close stops the relay, the vault servers and the replicas.
func (f *Fleet) Close() error {
	for _, s := range f.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.Shutdown(ctx)
		cancel()
	}
	var errs []error
	for _, r := range f.Replicas {
		errs = append(errs, r.Close())
	}
	return errors.Join(errs...)
}

// Settings is the JSON file `go run ./bench/vault/fleet` writes and the load
// generator reads (-settings).
type Settings struct {
	Relay       string   `json:"relay"`
	Fleet       string   `json:"fleet"`
	FleetRoot   string   `json:"fleet_root"`
	TokenKey    string   `json:"token_key"`
	Issuer      string   `json:"issuer"`
	Audience    string   `json:"audience"`
	Vaults      []string `json:"vaults"`
	Replicas    int      `json:"replicas"`
	PID         int      `json:"pid"`
	Pprof       string   `json:"pprof"`
	GOMAXPROCS  int      `json:"gomaxprocs"`
	StartedUnix int64    `json:"started_unix"`
}
