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
	var configFile string
	var peers []string
	var guessLimit uint32
	cmd := &cobra.Command{
		Use:   "serve [--config FILE] [--dir DIR --id ID --listen ADDR --raft ADDR] [--bootstrap]",
		Short: "Run one vault replica",
		Long: `Serve runs one replica of the vault fleet: a Raft node (peers on --raft)
holding the guess counts and the wrapped keys, and the VaultService the
relays call (--listen), with GET /healthz (up), GET /readyz (a leader is
known) and the admin endpoint /admin/ (status, join, remove: 'coffer vault
status|join|remove'). Prometheus metrics are served only on their own
address, --metrics-listen.

Every request carries a vault token the app's backend minted for the
vault's audience, sealed so the relay never sees it: the replica checks it
itself against --token-key, --issuer and --vault-audience (required), so a
relay is only transport.

--config FILE reads a JSON replica configuration (OPERATIONS.md documents
every field: id, data centre, directories, addresses, peers, TLS, sealing,
guess limit, bootstrap). Flags given on the command line override it.

--dir is the fleet directory holding secrets.json (from 'coffer vault
init'); the replica keeps its state in --data (default DIR/replica-ID).
--bootstrap starts a new fleet: alone, or with the voters named by --peer
(give every replica the same --bootstrap --peer list). Restarting a replica
that has state ignores --bootstrap.

With TLS (--tls-cert/--tls-key/--tls-ca, from 'coffer vault cert'), Raft
runs over mutual TLS 1.3 with the fleet CA and accepts only member
replicas' certificates, the VaultService port serves HTTPS, and /admin/
requires a replica or operator certificate. Without TLS, the admin endpoint
answers loopback callers only, and Raft may listen only on loopback unless
--insecure-plain-raft. --raft-source-addr IP makes
outgoing Raft connections leave from that local address (a multi-homed
host); certificates are unaffected.

With sealing (--sealing-key-file, or "sealing" in the config with a
PKCS#11 token), everything on disk is sealed, the secrets file must be
sealed for this replica ('coffer vault seal-secrets'), a keyed digest of
the state is checked at every start, and with a token the replica keeps a
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
			// The --config file is the saved value: flags, then the
			// environment, override it field by field (settings.go).
			a.overrideString(&c.FleetDir, cmd, "dir", "COFFER_VAULT_DIR")
			a.overrideString(&c.ID, cmd, "id", "COFFER_VAULT_ID")
			a.overrideString(&c.Listen, cmd, "listen", "COFFER_VAULT_LISTEN")
			a.overrideString(&c.RaftBind, cmd, "raft", "COFFER_VAULT_RAFT")
			a.overrideString(&c.RaftAdvertise, cmd, "advertise-raft", "")
			a.overrideString(&c.RaftSourceAddr, cmd, "raft-source-addr", "")
			a.overrideString(&c.URL, cmd, "url", "")
			a.overrideString(&c.DataDir, cmd, "data", "")
			a.overrideString(&c.DataCentre, cmd, "dc", "COFFER_VAULT_DC")
			a.overrideBool(&c.Bootstrap, cmd, "bootstrap", "")
			a.overrideBool(&c.InsecureDevKSF, cmd, "insecure-dev-ksf", "")
			a.overrideBool(&c.Debug, cmd, "debug", "")
			a.overrideString(&c.AppTokenKey, cmd, "token-key", "COFFER_TOKEN_KEY")
			a.overrideString(&c.AppTokenIssuer, cmd, "issuer", "COFFER_TOKEN_ISSUER")
			a.overrideString(&c.VaultAudience, cmd, "vault-audience", "COFFER_VAULT_AUDIENCE")
			a.overrideString(&c.MetricsListen, cmd, "metrics-listen", "")
			a.overrideBool(&c.InsecurePlainRaft, cmd, "insecure-plain-raft", "")
			if a.given(cmd, "guess-limit") {
				c.GuessLimit = guessLimit
			}
			if a.given(cmd, "tls-cert", "tls-key", "tls-ca") {
				if c.TLS == nil {
					c.TLS = &serve.TLS{}
				}
				a.overrideString(&c.TLS.Cert, cmd, "tls-cert", "")
				a.overrideString(&c.TLS.Key, cmd, "tls-key", "")
				a.overrideString(&c.TLS.CA, cmd, "tls-ca", "")
			}
			a.overrideString(&c.OPRFShare, cmd, "oprf-share", "COFFER_VAULT_OPRF_SHARE")
			if v, ok := a.setting(cmd, "sealing-key-file", ""); ok {
				c.Sealing = &serve.Sealing{KeyFile: v}
			}
			if a.given(cmd, "peer") {
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
	f.String("dir", "", "the fleet directory with secrets.json (env COFFER_VAULT_DIR)")
	f.String("id", "", "this replica's id, unique and stable (env COFFER_VAULT_ID)")
	f.String("listen", "", "address of the VaultService, HOST:PORT (env COFFER_VAULT_LISTEN)")
	f.String("raft", "", "address for Raft peers, HOST:PORT (env COFFER_VAULT_RAFT)")
	f.String("advertise-raft", "", "Raft address the peers dial (default: --raft)")
	f.String("raft-source-addr", "", "local IP address outgoing Raft connections leave from (default: the system's choice)")
	f.String("url", "", "base URL of this replica's VaultService as relays reach it (default http://LISTEN, https:// with TLS)")
	f.String("data", "", "this replica's state directory (default DIR/replica-ID)")
	f.String("dc", "", "this replica's data centre label (status, metrics) (env COFFER_VAULT_DC)")
	f.Bool("bootstrap", false, "start a new fleet (ignored if the replica has state)")
	f.StringArrayVar(&peers, "peer", nil, "a voter of a new fleet, ID=RAFT_ADDRESS=VAULT_URL (repeat; with --bootstrap)")
	f.Uint32Var(&guessLimit, "guess-limit", 0, fmt.Sprintf("wrong guesses allowed for new registrations (default %d)", vault.DefaultGuessLimit))
	f.String("tls-cert", "", "this replica's certificate from the fleet CA ('coffer vault cert')")
	f.String("tls-key", "", "its private key")
	f.String("tls-ca", "", "the fleet CA certificate (fleet-ca.crt)")
	f.String("oprf-share", "", "this replica's OPRF share file on a threshold fleet ('coffer vault init --replicas N'); around a reshare its files of two generations, comma-separated (env COFFER_VAULT_OPRF_SHARE)")
	f.String("sealing-key-file", "", "seal this replica's disk and secrets with a key file ('coffer vault seal-key')")
	f.Bool("insecure-dev-ksf", false, "accept registrations with cheap key stretching: development fleets and tests only")
	f.Bool("debug", false, "log every request")
	f.String("token-key", "", "the app backend's Ed25519 public key, PEM: vault tokens are checked against it (env COFFER_TOKEN_KEY)")
	f.String("issuer", "", "the vault tokens' issuer, iss (env COFFER_TOKEN_ISSUER)")
	f.String("vault-audience", "", "the vault tokens' audience, aud: not the relay's (env COFFER_VAULT_AUDIENCE)")
	f.String("metrics-listen", "", "serve Prometheus /metrics on HOST:PORT, or PORT/:PORT for 127.0.0.1:PORT (default: none; never on the VaultService port)")
	f.Bool("insecure-plain-raft", false, "run Raft without TLS on a non-loopback address: anyone who reaches it can commit commands")
	return cmd
}

// peer is one --peer ID=RAFT_ADDR=VAULT_URL.
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
