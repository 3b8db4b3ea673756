// Package devfleet runs a whole Backup Key Vault on 127.0.0.1 for
// development, demos and tests: the key ceremony (once per directory), vault
// replicas and a relay, plus the app-backend key that mints account tokens.
// It is what `coffer dev` and `coffer demo` run, and what the benchmarks in
// bench/vault and vault/bench_test.go start (with the knobs in Options that
// benchmarks turn: Raft timing, SyncState, DisableBatching, RelayLogger,
// Fresh). Production fleets are started replica by replica with `coffer
// vault serve` (OPERATIONS.md).
package devfleet

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/cofferhq/coffer/internal/server/ceremony"
	"github.com/cofferhq/coffer/internal/server/vaultstate"

	"github.com/cofferhq/coffer/internal/protocol/bundle"
	"github.com/cofferhq/coffer/internal/server/replica"
	"github.com/cofferhq/coffer/internal/server/serve"
	"github.com/cofferhq/coffer/internal/server/vault"
	"github.com/cofferhq/coffer/token"
)

// DevPacing is the pacing of `coffer dev` fleets: the production schedule's
// shape (three guesses, then doubling waits) in seconds instead of
// minutes, so that a developer sees it without waiting for hours.
var DevPacing = vaultstate.Pacing{Free: 3, Base: 2, Max: 30}

// Token settings of development fleets.
const (
	Issuer   = "coffer-dev-app"
	Audience = "coffer-dev-relay"
	// VaultAudience is the audience of vault tokens, which travel sealed
	// inside requests and which the vault replicas check themselves.
	VaultAudience = "coffer-dev-vault"

	// TokenKeyFile is the app backend's Ed25519 private key (PKCS#8 PEM)
	// in the fleet's directory: whoever mints account tokens reads it.
	TokenKeyFile = "app-token.key"
	// TokenPubFile is its public key (PKIX PEM), which the relay and the
	// vault replicas verify tokens with.
	TokenPubFile = "app-token.pub"
)

// Options configure Start.
type Options struct {
	// Dir keeps the fleet's keys and state; reusing it restarts the same
	// fleet with its accounts.
	Dir string
	// GuessLimit for new registrations (default 10).
	GuessLimit uint32
	// Pacing of wrong guesses (nil: none, so tests spend budgets at once;
	// `coffer dev` gives DevPacing).
	Pacing *vaultstate.Pacing
	// StrictKSF refuses key-stretching profiles below PROTOCOL.md's floor
	// (off by default, so tests and demos can use cheap stretching).
	StrictKSF bool
	// Logger (default: discard).
	Logger *slog.Logger
	// Replicas is how many vault replicas run in this process (default
	// 1, at most 9). With more, StopLeader can fail one.
	Replicas int

	// The knobs below are for benchmarks (BenchmarkOptions); their
	// zero values are what `coffer dev`, `coffer demo` and tests run.

	// Raft timing of every replica (zero: 200 ms heartbeat and election
	// timeouts, 100 ms leader lease, 5 ms commit timeout: elections in a
	// fraction of a second, for tests and demos). Several replicas on a
	// loaded machine want longer timeouts (1 s heartbeat and election
	// timeouts, 500 ms lease), or leaders flap.
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout, CommitTimeout time.Duration
	// SyncState fsyncs every state-machine transaction (replica.Config;
	// default off: the Raft log is the durable truth).
	SyncState bool
	// DisableBatching applies committed entries one state-machine
	// transaction each (replica.Config; for comparison in benchmarks).
	DisableBatching bool
	// RelayLogger receives the relay's log, one line per request (default:
	// Logger). Benchmarks discard it, or keep it in a file as a deployed
	// relay's JSON log (it is part of a real relay's cost).
	RelayLogger *slog.Logger
	// Threshold gives the replicas OPRF shares (PROTOCOL.md §7), dealt
	// into Dir/oprf-shares at the first threshold start: registrations go
	// through the threshold OPRF. The fleet's OPRF seed, if its secrets
	// hold one (a fleet first started without Threshold), still serves
	// version-1 records until their clients re-enrol them.
	Threshold bool
	// Fresh removes the replicas' state that an earlier run left in Dir
	// before starting: a new fleet with the same keys and no accounts.
	Fresh bool
}

// Fleet is a running development fleet.
type Fleet struct {
	Dir       string
	RelayURL  string
	VaultURL  string   // the first (or only) vault replica
	VaultURLs []string // every vault replica the relay knows
	// MetricsURLs are the replicas' Prometheus endpoints (http://…/metrics
	// on 127.0.0.1, a port apart from the VaultService's), in the order of
	// VaultURLs; MetricsURL is the first's.
	MetricsURLs []string
	MetricsURL  string
	BundlePath  string
	RootPublic  string
	Bundle      *bundle.Bundle
	// TokenKeyPath is the file of the key Token signs account tokens
	// with (DIR/app-token.key), for minting them in another process.
	TokenKeyPath string
	tokenKey     ed25519.PrivateKey
	replicas     []*serve.Replica // nil once stopped (StopLeader)
	servers      []*http.Server   // the relay's
}

// Keys is a development fleet's key material, made on first use of its
// directory: the key ceremony's output in DIR/fleet (fleet secrets, root
// key, signed bundle, fleet CA) and the app-backend token key.
type Keys struct {
	Dir        string // the development directory
	FleetDir   string // DIR/fleet: the key ceremony's files
	BundlePath string
	RootPublic string
	Bundle     *bundle.Bundle
	Secrets    *vault.Secrets
	// TokenKeyPath is the app backend's token key (DIR/app-token.key).
	TokenKeyPath string
	tokenKey     ed25519.PrivateKey
	tokenPub     ed25519.PublicKey
}

// LoadKeys returns dir's key material, running the key ceremony (and
// making the token key) the first time.
func LoadKeys(dir string) (*Keys, error) {
	if dir == "" {
		return nil, errors.New("devfleet: a directory is required")
	}
	fleetDir := filepath.Join(dir, "fleet")
	if _, err := os.Stat(filepath.Join(fleetDir, ceremony.SecretsFile)); errors.Is(err, os.ErrNotExist) {
		if _, err := ceremony.Init(fleetDir, 0); err != nil {
			return nil, fmt.Errorf("key ceremony: %w", err)
		}
	}
	secrets, err := vault.LoadSecrets(filepath.Join(fleetDir, ceremony.SecretsFile))
	if err != nil {
		return nil, err
	}
	rootText, err := os.ReadFile(filepath.Join(fleetDir, ceremony.RootPubFile))
	if err != nil {
		return nil, err
	}
	signed, err := os.ReadFile(filepath.Join(fleetDir, ceremony.BundleFile))
	if err != nil {
		return nil, err
	}
	rootPub, err := bundle.ParseRootPublicKey(string(trimNL(rootText)))
	if err != nil {
		return nil, err
	}
	bundle, err := bundle.Verify(signed, rootPub, time.Now())
	if err != nil {
		return nil, fmt.Errorf("fleet bundle: %w", err)
	}
	tokenPriv, tokenPub, err := loadOrMakeTokenKey(dir)
	if err != nil {
		return nil, err
	}
	return &Keys{
		Dir: dir, FleetDir: fleetDir, BundlePath: filepath.Join(fleetDir, ceremony.BundleFile),
		RootPublic: string(trimNL(rootText)), Bundle: bundle, Secrets: secrets,
		TokenKeyPath: filepath.Join(dir, TokenKeyFile), tokenKey: tokenPriv, tokenPub: tokenPub,
	}, nil
}

// newFleet is a Fleet of keys' fleet, with nothing running yet.
func newFleet(k *Keys) *Fleet {
	return &Fleet{
		Dir: k.Dir, BundlePath: k.BundlePath, RootPublic: k.RootPublic, Bundle: k.Bundle,
		TokenKeyPath: k.TokenKeyPath, tokenKey: k.tokenKey,
	}
}

// Start runs the fleet (making its keys on first use) and returns once it
// serves requests.
func Start(ctx context.Context, o Options) (*Fleet, error) {
	if o.Dir == "" {
		return nil, errors.New("devfleet: a directory is required")
	}
	n := o.Replicas
	if n == 0 {
		n = 1
	}
	if n < 1 || n > 9 {
		return nil, fmt.Errorf("devfleet: %d replicas; want 1 to 9", o.Replicas)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RelayLogger == nil {
		o.RelayLogger = o.Logger
	}
	orDefault := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	orDefault(&o.HeartbeatTimeout, 200*time.Millisecond)
	orDefault(&o.ElectionTimeout, 200*time.Millisecond)
	orDefault(&o.LeaderLeaseTimeout, 100*time.Millisecond)
	orDefault(&o.CommitTimeout, 50*time.Millisecond)
	keys, err := LoadKeys(o.Dir)
	if err != nil {
		return nil, err
	}

	f := newFleet(keys)
	ids := make([]string, n)
	raftLns := make([]net.Listener, n)
	vaultLns := make([]net.Listener, n)
	ok := false
	defer func() {
		if !ok {
			f.Close()
			// Those no replica or server took (closing one twice is harmless).
			for _, ln := range append(raftLns, vaultLns...) {
				if ln != nil {
					ln.Close()
				}
			}
		}
	}()

	if o.Threshold {
		if _, err := os.Stat(filepath.Join(o.Dir, ceremony.SharesDir)); errors.Is(err, os.ErrNotExist) {
			if _, err := vault.DealShares(filepath.Join(o.Dir, ceremony.SharesDir), n); err != nil {
				return nil, err
			}
		}
	}
	urls := map[string]string{}
	var peers []replica.Peer
	for i := range n {
		ids[i] = fmt.Sprintf("r%d", i+1)
		if raftLns[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, err
		}
		if vaultLns[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, err
		}
		u := "http://" + vaultLns[i].Addr().String()
		urls[ids[i]] = u
		f.VaultURLs = append(f.VaultURLs, u)
		if n > 1 {
			peers = append(peers, replica.Peer{ID: ids[i], Addr: raftLns[i].Addr().String()})
		}
	}
	f.VaultURL = f.VaultURLs[0]
	// Followers forward requests to the leader (plain HTTP on 127.0.0.1).
	forwardClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second}}
	pacing := o.Pacing
	if pacing == nil {
		pacing = &vaultstate.Pacing{}
	}
	for i, id := range ids {
		dataDir := filepath.Join(o.Dir, "replica-"+id)
		if n > 1 {
			dataDir = filepath.Join(o.Dir, fmt.Sprintf("replicas-%d", n), id)
		}
		if o.Fresh {
			if err := os.RemoveAll(dataDir); err != nil {
				return nil, err
			}
		}
		var shares []*vault.ShareSet
		if o.Threshold {
			set, err := vault.LoadShareFile(filepath.Join(o.Dir, ceremony.SharesDir, fmt.Sprintf("share-%d.json", i+1)))
			if err != nil {
				return nil, err
			}
			shares = append(shares, set)
		}
		mln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		f.MetricsURLs = append(f.MetricsURLs, "http://"+mln.Addr().String()+"/metrics")
		r, err := serve.Start(&serve.Spec{
			ID: id, DataDir: dataDir, URL: urls[id], URLs: urls, Secrets: keys.Secrets,
			Listener: vaultLns[i], RaftListener: raftLns[i], MetricsListener: mln, Bootstrap: true, Peers: peers,
			GuessLimit: o.GuessLimit, InsecureDevKSF: !o.StrictKSF, Tokens: keys.VaultTokenVerifier(), Pacing: pacing,
			Timing:    serve.Timing{Heartbeat: o.HeartbeatTimeout, Election: o.ElectionTimeout, LeaderLease: o.LeaderLeaseTimeout, Commit: o.CommitTimeout},
			SyncState: o.SyncState, DisableBatching: o.DisableBatching,
			Forward: forwardClient, Shares: shares, Logger: o.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("starting vault replica %s: %w", id, err)
		}
		raftLns[i], vaultLns[i] = nil, nil // the replica has them
		f.replicas = append(f.replicas, r)
	}
	f.MetricsURL = f.MetricsURLs[0]
	// 15 s with the default timing; longer timeouts elect more slowly.
	wctx, cancel := context.WithTimeout(ctx, max(15*time.Second, 30*o.ElectionTimeout))
	defer cancel()
	for _, r := range f.replicas {
		if _, _, err := r.Replica().WaitForLeader(wctx); err != nil {
			return nil, fmt.Errorf("the vault replicas elected no leader: %w", err)
		}
	}

	if err := f.startRelay(keys, nil, o.RelayLogger); err != nil {
		return nil, err
	}
	ok = true
	return f, nil
}

func (f *Fleet) serve(h http.Handler, ln net.Listener) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	s := &http.Server{Handler: h, Protocols: &protocols, ReadHeaderTimeout: 10 * time.Second}
	f.servers = append(f.servers, s)
	go s.Serve(ln)
	return s
}

// Token mints an account token for the relay's audience, valid for ttl
// (at most an hour).
func (f *Fleet) Token(account string, ttl time.Duration) (string, error) {
	return mint(f.tokenKey, account, Audience, ttl)
}

// VaultToken mints an account token for the vault's audience, valid for
// ttl (at most an hour): the one that travels sealed inside requests.
func (f *Fleet) VaultToken(account string, ttl time.Duration) (string, error) {
	return mint(f.tokenKey, account, VaultAudience, ttl)
}

func mint(key ed25519.PrivateKey, account, audience string, ttl time.Duration) (string, error) {
	now := time.Now()
	return token.Mint(key, token.Claims{Issuer: Issuer, Subject: account, Audience: audience, IssuedAt: now, Expiry: now.Add(ttl)})
}

// VaultTokenVerifier is what the fleet's vault replicas check vault tokens
// with: the app-backend key of this directory, Issuer and VaultAudience.
func (k *Keys) VaultTokenVerifier() *token.Verifier {
	return &token.Verifier{Key: k.tokenPub, Issuer: Issuer, Audience: VaultAudience, Leeway: token.DefaultLeeway}
}

// Env returns the COFFER_* settings a client needs for account.
func (f *Fleet) Env(account string, ttl time.Duration) (map[string]string, error) {
	tok, err := f.Token(account, ttl)
	if err != nil {
		return nil, err
	}
	vtok, err := f.VaultToken(account, ttl)
	if err != nil {
		return nil, err
	}
	return map[string]string{
		"COFFER_RELAY":       f.RelayURL,
		"COFFER_ACCOUNT":     account,
		"COFFER_TOKEN":       tok,
		"COFFER_VAULT_TOKEN": vtok,
		"COFFER_FLEET":       f.BundlePath,
		"COFFER_FLEET_ROOT":  f.RootPublic,
	}, nil
}

// Close stops the relay, the vault servers and the replicas.
func (f *Fleet) Close() error {
	for _, s := range f.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.Shutdown(ctx)
		cancel()
	}
	var errs []error
	for _, r := range f.replicas {
		if r != nil {
			errs = append(errs, r.Stop(context.Background()))
		}
	}
	return errors.Join(errs...)
}

// StopLeader stops the replica that leads (its VaultService at once, then
// Raft), as if it failed, and returns its id. The others elect a new
// leader; the relay finds it.
func (f *Fleet) StopLeader() (string, error) {
	for i, r := range f.replicas {
		if r == nil || !r.Replica().IsLeader() {
			continue
		}
		f.replicas[i] = nil
		return r.Replica().ID(), r.Kill()
	}
	return "", errors.New("devfleet: no running replica leads")
}

func loadOrMakeTokenKey(dir string) (ed25519.PrivateKey, ed25519.PublicKey, error) {
	kp := filepath.Join(dir, TokenKeyFile)
	if b, err := os.ReadFile(kp); err == nil {
		priv, err := token.ParsePrivateKeyPEM(b)
		if err != nil {
			return nil, nil, err
		}
		return priv, priv.Public().(ed25519.PublicKey), nil
	}
	pub, priv, err := token.GenerateKey()
	if err != nil {
		return nil, nil, err
	}
	pp, err := token.MarshalPrivateKeyPEM(priv)
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(kp, pp, 0o600); err != nil {
		return nil, nil, err
	}
	pubPEM, _ := token.MarshalPublicKeyPEM(pub)
	if err := os.WriteFile(filepath.Join(dir, TokenPubFile), pubPEM, 0o644); err != nil {
		return nil, nil, err
	}
	return priv, pub, nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// FollowerURL returns the VaultService URL of a running replica that does
// not lead, or "" if there is none.
func (f *Fleet) FollowerURL() string {
	for i, r := range f.replicas {
		if r != nil && !r.Replica().IsLeader() && i < len(f.VaultURLs) {
			return f.VaultURLs[i]
		}
	}
	return ""
}

// WaitForLeader waits until every running replica follows the same running
// leader, and returns its id.
func (f *Fleet) WaitForLeader(ctx context.Context) (string, error) {
	for {
		running := map[string]bool{}
		for _, r := range f.replicas {
			if r != nil {
				running[r.Replica().ID()] = true
			}
		}
		leader, agreed := "", true
		for _, r := range f.replicas {
			if r == nil {
				continue
			}
			id, _ := r.Replica().Leader()
			if leader == "" {
				leader = id
			}
			if id == "" || id != leader {
				agreed = false
			}
		}
		if agreed && running[leader] {
			return leader, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("devfleet: no leader: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Raft timing of benchmark fleets. A loaded 2-core machine needs 1 s
// timeouts with 5 replicas, or leaders flap (devfleet's defaults are for
// quick elections in tests).
const (
	BenchHeartbeatTimeout   = time.Second
	BenchElectionTimeout    = time.Second
	BenchLeaderLeaseTimeout = 500 * time.Millisecond
	BenchCommitTimeout      = 50 * time.Millisecond
)

// BenchmarkOptions returns the options of a benchmark fleet of replicas
// Raft voters in dir: the Raft timing above, a fresh fleet each time
// (replica state left in dir by an earlier run is removed), the relay's
// request log discarded (set RelayLogger to keep it), no logs (set Logger),
// and, as in every devfleet, no relay rate limits and the state machine
// not fsynced (SyncState).
func BenchmarkOptions(dir string, replicas int) Options {
	return Options{
		Dir: dir, Replicas: replicas, Fresh: true,
		HeartbeatTimeout: BenchHeartbeatTimeout, ElectionTimeout: BenchElectionTimeout,
		LeaderLeaseTimeout: BenchLeaderLeaseTimeout, CommitTimeout: BenchCommitTimeout,
		RelayLogger: slog.New(slog.DiscardHandler),
	}
}
