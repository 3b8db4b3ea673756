// Package devfleet runs a whole Backup Key Vault on 127.0.0.1 for
// development, demos and tests: the key ceremony (once per directory), vault
// replicas and a relay, plus the app-backend key that mints account tokens.
// It is what `coffer dev` and `coffer demo` run. Production fleets are
// started replica by replica with `coffer vault serve` (OPERATIONS.md).
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

	"github.com/cofferhq/coffer/fleet"
	"github.com/cofferhq/coffer/pake"
	"github.com/cofferhq/coffer/relay"
	"github.com/cofferhq/coffer/token"
	"github.com/cofferhq/coffer/vault"
	"github.com/cofferhq/coffer/vault/replica"
)

// Token settings of development fleets.
const (
	Issuer   = "coffer-dev-app"
	Audience = "coffer-dev-relay"

	tokenKeyFile = "app-token.key"
	tokenPubFile = "app-token.pub"
)

// Options configure Start.
type Options struct {
	// Dir keeps the fleet's keys and state; reusing it restarts the same
	// fleet with its accounts.
	Dir string
	// GuessLimit for new registrations (default 10).
	GuessLimit uint32
	// StrictKSF refuses key-stretching profiles below PROTOCOL.md's floor
	// (off by default, so tests and demos can use cheap stretching).
	StrictKSF bool
	// Logger (default: discard).
	Logger *slog.Logger
}

// Fleet is a running development fleet.
type Fleet struct {
	Dir        string
	RelayURL   string
	VaultURL   string
	BundlePath string
	RootPublic string
	Bundle     *fleet.Bundle
	tokenKey   ed25519.PrivateKey
	replica    *replica.Replica
	servers    []*http.Server
}

// Start runs the fleet (making its keys on first use) and returns once it
// serves requests.
func Start(ctx context.Context, o Options) (*Fleet, error) {
	if o.Dir == "" {
		return nil, errors.New("devfleet: a directory is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
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
	rootPub, err := fleet.ParseRootPublicKey(string(trimNL(rootText)))
	if err != nil {
		return nil, err
	}
	bundle, err := fleet.Verify(signed, rootPub, time.Now())
	if err != nil {
		return nil, fmt.Errorf("fleet bundle: %w", err)
	}
	tokenPriv, tokenPub, err := loadOrMakeTokenKey(o.Dir)
	if err != nil {
		return nil, err
	}

	f := &Fleet{Dir: o.Dir, BundlePath: filepath.Join(fleetDir, vault.BundleFile), RootPublic: string(trimNL(rootText)), Bundle: bundle, tokenKey: tokenPriv}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()

	raftLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.replica, err = replica.Open(replica.Config{
		ID: "r1", Dir: filepath.Join(o.Dir, "replica-r1"), Listener: raftLn, Bootstrap: true,
		GuessLimit: o.GuessLimit, Logger: o.Logger,
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
	})
	if err != nil {
		return nil, fmt.Errorf("starting the vault replica: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, _, err := f.replica.WaitForLeader(wctx); err != nil {
		return nil, fmt.Errorf("the vault replica elected no leader: %w", err)
	}

	vaultLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.VaultURL = "http://" + vaultLn.Addr().String()
	ksf := pake.DefaultKSF
	srv, err := vault.New(vault.Config{
		Secrets: secrets, Replica: f.replica, URLs: map[string]string{"r1": f.VaultURL},
		GuessLimit: o.GuessLimit, FakeKSF: ksf, AllowWeakKSF: !o.StrictKSF, Logger: o.Logger,
	})
	if err != nil {
		return nil, err
	}
	f.serve(srv.Handler(), vaultLn)

	relayLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.RelayURL = "http://" + relayLn.Addr().String()
	rl, err := relay.New(relay.Config{
		Vaults:     []string{f.VaultURL},
		Verifier:   &token.Verifier{Key: tokenPub, Issuer: Issuer, Audience: Audience, Leeway: token.DefaultLeeway},
		PerAccount: relay.Unlimited, PerSource: relay.Unlimited,
		Logger: o.Logger,
	})
	if err != nil {
		return nil, err
	}
	f.serve(rl.Handler(), relayLn)
	ok = true
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

// Env returns the COFFER_* settings a client needs for account.
func (f *Fleet) Env(account string, ttl time.Duration) (map[string]string, error) {
	tok, err := f.Token(account, ttl)
	if err != nil {
		return nil, err
	}
	return map[string]string{
		"COFFER_RELAY":      f.RelayURL,
		"COFFER_ACCOUNT":    account,
		"COFFER_TOKEN":      tok,
		"COFFER_FLEET":      f.BundlePath,
		"COFFER_FLEET_ROOT": f.RootPublic,
	}, nil
}

// Close stops the relay, the vault server and the replica.
func (f *Fleet) Close() error {
	for _, s := range f.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.Shutdown(ctx)
		cancel()
	}
	if f.replica != nil {
		return f.replica.Close()
	}
	return nil
}

func loadOrMakeTokenKey(dir string) (ed25519.PrivateKey, ed25519.PublicKey, error) {
	kp := filepath.Join(dir, tokenKeyFile)
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
	if err := os.WriteFile(filepath.Join(dir, tokenPubFile), pubPEM, 0o644); err != nil {
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
