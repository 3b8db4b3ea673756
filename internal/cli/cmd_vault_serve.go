package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/server/serve"
	"github.com/cofferhq/coffer/internal/server/vault"
)

func (a *app) vaultServeCommand() *cobra.Command {
	var configFile, dir, id, listen, raftAddr, advertiseRaft, raftSource, url, data, dc string
	var tlsCert, tlsKey, tlsCA, sealKeyFile string
	var bootstrap, devKSF, debug bool
	var peers []string
	var guessLimit uint32
	cmd := &cobra.Command{
		Use:   "serve [--config FILE] [--dir DIR --id ID --listen ADDR --raft ADDR] [--bootstrap]",
		Short: "Run one vault replica",
		Long: `Serve runs one replica of the vault fleet: a Raft node (peers on --raft)
holding the guess counts and the wrapped keys, and the VaultService the
relays call (--listen), with GET /healthz (up), GET /readyz (a leader is
known), GET /metrics (Prometheus) and the admin endpoint /admin/ (status,
join, remove: 'coffer vault status|join|remove').

--config FILE reads a JSON replica configuration (OPERATIONS.md documents
every field: id, data centre, directories, addresses, peers, TLS, sealing,
guess limit, bootstrap). Flags given on the command line override it.

--dir is the fleet directory holding secrets.json (from 'coffer vault
init'); the replica keeps its state in --data (default DIR/replica-ID).
--bootstrap starts a new fleet: alone, or with the voters named by --peer
(give every replica the same --bootstrap --peer list). Restarting a replica
that has state ignores --bootstrap.

With TLS (--tls-cert/--tls-key/--tls-ca, from 'coffer vault cert'), Raft
runs over mutual TLS 1.3 with the fleet CA, the VaultService port serves
HTTPS, and /admin/ requires a fleet-CA client certificate. Without TLS, the
admin endpoint answers loopback callers only. --raft-source-addr IP makes
outgoing Raft connections leave from that local address (a multi-homed
host); certificates are unaffected.

With sealing (--sealing-key-file, or "sealing" in the config with a
PKCS#11 token), everything on disk is sealed, the secrets file may be
sealed ('coffer vault seal-secrets'), and with a token the replica keeps a
high-water mark in it and refuses a disk restored from an old copy.

Logs are JSON lines on stderr. SIGINT or SIGTERM stops it cleanly: it stops
taking requests, finishes those in flight, hands leadership to another
replica and closes its files.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := &serve.Config{}
			if configFile != "" {
				var err error
				if c, err = serve.LoadConfig(configFile); err != nil {
					return usagef("vault serve: %v", err)
				}
			}
			fl := cmd.Flags()
			set := func(dst *string, flag, env string, v string) {
				if fl.Changed(flag) {
					*dst = v
				} else if e := a.Getenv(env); e != "" && env != "" {
					*dst = e
				}
			}
			set(&c.FleetDir, "dir", "COFFER_VAULT_DIR", dir)
			set(&c.ID, "id", "COFFER_VAULT_ID", id)
			set(&c.Listen, "listen", "COFFER_VAULT_LISTEN", listen)
			set(&c.RaftBind, "raft", "COFFER_VAULT_RAFT", raftAddr)
			set(&c.RaftAdvertise, "advertise-raft", "", advertiseRaft)
			set(&c.RaftSourceAddr, "raft-source-addr", "", raftSource)
			set(&c.URL, "url", "", url)
			set(&c.DataDir, "data", "", data)
			set(&c.DataCentre, "dc", "COFFER_VAULT_DC", dc)
			if fl.Changed("bootstrap") {
				c.Bootstrap = bootstrap
			}
			if fl.Changed("insecure-dev-ksf") {
				c.InsecureDevKSF = devKSF
			}
			if fl.Changed("debug") {
				c.Debug = debug
			}
			if fl.Changed("guess-limit") {
				c.GuessLimit = guessLimit
			}
			if fl.Changed("tls-cert") || fl.Changed("tls-key") || fl.Changed("tls-ca") {
				if c.TLS == nil {
					c.TLS = &serve.TLS{}
				}
				set(&c.TLS.Cert, "tls-cert", "", tlsCert)
				set(&c.TLS.Key, "tls-key", "", tlsKey)
				set(&c.TLS.CA, "tls-ca", "", tlsCA)
			}
			if fl.Changed("sealing-key-file") {
				c.Sealing = &serve.Sealing{KeyFile: sealKeyFile}
			}
			if fl.Changed("peer") {
				c.Peers = nil
				for _, s := range peers {
					p, err := parsePeer(s)
					if err != nil {
						return &usageError{err: fmt.Errorf("vault serve: %w", err)}
					}
					c.Peers = append(c.Peers, serve.Peer{ID: p.id, Raft: p.raft, URL: p.url})
				}
			}
			a.tuneGC()
			return a.serveReplica(cmd.Context(), c)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "JSON replica configuration (OPERATIONS.md); flags override it")
	f.StringVar(&dir, "dir", "", "the fleet directory with secrets.json (env COFFER_VAULT_DIR)")
	f.StringVar(&id, "id", "", "this replica's id, unique and stable (env COFFER_VAULT_ID)")
	f.StringVar(&listen, "listen", "", "address of the VaultService, HOST:PORT (env COFFER_VAULT_LISTEN)")
	f.StringVar(&raftAddr, "raft", "", "address for Raft peers, HOST:PORT (env COFFER_VAULT_RAFT)")
	f.StringVar(&advertiseRaft, "advertise-raft", "", "Raft address the peers dial (default: --raft)")
	f.StringVar(&raftSource, "raft-source-addr", "", "local IP address outgoing Raft connections leave from (default: the system's choice)")
	f.StringVar(&url, "url", "", "base URL of this replica's VaultService as relays reach it (default http://LISTEN, https:// with TLS)")
	f.StringVar(&data, "data", "", "this replica's state directory (default DIR/replica-ID)")
	f.StringVar(&dc, "dc", "", "this replica's data centre label (status, metrics) (env COFFER_VAULT_DC)")
	f.BoolVar(&bootstrap, "bootstrap", false, "start a new fleet (ignored if the replica has state)")
	f.StringArrayVar(&peers, "peer", nil, "a voter of a new fleet, ID=RAFT_ADDRESS=VAULT_URL (repeat; with --bootstrap)")
	f.Uint32Var(&guessLimit, "guess-limit", 0, fmt.Sprintf("wrong guesses allowed for new registrations (default %d)", vault.DefaultGuessLimit))
	f.StringVar(&tlsCert, "tls-cert", "", "this replica's certificate from the fleet CA ('coffer vault cert')")
	f.StringVar(&tlsKey, "tls-key", "", "its private key")
	f.StringVar(&tlsCA, "tls-ca", "", "the fleet CA certificate (fleet-ca.crt)")
	f.StringVar(&sealKeyFile, "sealing-key-file", "", "seal this replica's disk and secrets with a key file ('coffer vault seal-key')")
	f.BoolVar(&devKSF, "insecure-dev-ksf", false, "accept registrations with cheap key stretching: development fleets and tests only")
	f.BoolVar(&debug, "debug", false, "log every request")
	return cmd
}

// peerFlag is one --peer ID=RAFT_ADDR=VAULT_URL.
type peer struct {
	id, raft, url string
}

func parsePeer(s string) (peer, error) {
	parts := strings.SplitN(s, "=", 3)
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return peer{}, fmt.Errorf("--peer %q: want ID=RAFT_ADDRESS=VAULT_URL, e.g. r2=10.0.0.2:7101=http://10.0.0.2:7100", s)
	}
	return peer{parts[0], parts[1], strings.TrimRight(parts[2], "/")}, nil
}

// serveReplica runs a replica from its configuration until ctx ends.
func (a *app) serveReplica(ctx context.Context, c *serve.Config) error {
	if err := c.Check(); err != nil {
		return serveError(err)
	}
	level := slog.LevelInfo
	if c.Debug {
		level = slog.LevelDebug
	}
	log := a.newLogger(level)
	if err := a.startPprof(log); err != nil {
		return err
	}
	spec, err := serve.Open(c, serve.Env{Logger: log, Getenv: a.Getenv})
	if err != nil {
		return serveError(err)
	}
	r, err := serve.Start(spec)
	if err != nil {
		return serveError(err)
	}
	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("vault replica stopping")
	case serveErr = <-r.Failed():
		log.Error("serving failed", "error", serveErr)
	}
	if err := r.Stop(context.Background()); err != nil {
		return fail("vault serve", err)
	}
	return fail("vault serve", serveErr)
}

// serveError is how 'vault serve' reports what package serve refused: a
// configuration mistake is a usage error; others carry serve's hint.
func serveError(err error) error {
	var he *serve.HintError
	switch {
	case errors.Is(err, serve.ErrConfig):
		return &usageError{err: fmt.Errorf("vault serve: %w", err)}
	case errors.As(err, &he) && he.Hint != "":
		return &opError{op: "vault serve", err: err, hint: he.Hint}
	}
	return fail("vault serve", err)
}
