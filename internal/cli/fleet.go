package cli

// 'coffer vault serve' (flags and/or --config FILE), and the fleet's
// certificate, sealing and membership commands.

import (
	"github.com/cofferhq/coffer/internal/protocol/pake"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/server/replica"
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
			c := &replicaConfig{}
			if configFile != "" {
				var err error
				if c, err = loadReplicaConfig(configFile); err != nil {
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
					c.TLS = &tlsConfig{}
				}
				set(&c.TLS.Cert, "tls-cert", "", tlsCert)
				set(&c.TLS.Key, "tls-key", "", tlsKey)
				set(&c.TLS.CA, "tls-ca", "", tlsCA)
			}
			if fl.Changed("sealing-key-file") {
				c.Sealing = &sealingConfig{KeyFile: sealKeyFile}
			}
			if fl.Changed("peer") {
				c.Peers = nil
				for _, s := range peers {
					p, err := parsePeer(s)
					if err != nil {
						return &usageError{err: fmt.Errorf("vault serve: %w", err)}
					}
					c.Peers = append(c.Peers, peerConfig{ID: p.id, Raft: p.raft, URL: p.url})
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
	f.Uint32Var(&guessLimit, "guess-limit", 0, "wrong guesses allowed for new registrations (default 10)")
	f.StringVar(&tlsCert, "tls-cert", "", "this replica's certificate from the fleet CA ('coffer vault cert')")
	f.StringVar(&tlsKey, "tls-key", "", "its private key")
	f.StringVar(&tlsCA, "tls-ca", "", "the fleet CA certificate (fleet-ca.crt)")
	f.StringVar(&sealKeyFile, "sealing-key-file", "", "seal this replica's disk and secrets with a key file ('coffer vault seal-key')")
	f.BoolVar(&devKSF, "insecure-dev-ksf", false, "accept registrations with cheap key stretching: development fleets and tests only")
	f.BoolVar(&debug, "debug", false, "log every request")
	return cmd
}

// serveReplica runs a replica from its configuration until ctx ends.
func (a *app) serveReplica(ctx context.Context, c *replicaConfig) error {
	switch {
	case c.FleetDir == "" && c.Secrets == "":
		return usagef("vault serve: name the fleet directory with --dir DIR (or COFFER_VAULT_DIR, or fleet_dir / secrets in --config)")
	case c.ID == "":
		return usagef("vault serve: name this replica with --id ID (or COFFER_VAULT_ID, or id in --config)")
	case c.Listen == "":
		return usagef("vault serve: give the VaultService address with --listen HOST:PORT (or COFFER_VAULT_LISTEN, or listen in --config)")
	case c.RaftBind == "":
		return usagef("vault serve: give the Raft peer address with --raft HOST:PORT (or COFFER_VAULT_RAFT, or raft_bind in --config)")
	}
	var source *net.Dialer // outgoing Raft connections, when bound to raft_source_addr
	if c.RaftSourceAddr != "" {
		var err error
		if source, err = replica.SourceDialer(c.RaftSourceAddr); err != nil {
			return usagef("vault serve: --raft-source-addr (raft_source_addr): %v", err)
		}
	}
	secretsPath := c.Secrets
	if secretsPath == "" {
		secretsPath = filepath.Join(c.FleetDir, vault.SecretsFile)
	}
	dataDir := c.DataDir
	if dataDir == "" {
		if c.FleetDir == "" {
			return usagef("vault serve: give data_dir (--data)")
		}
		dataDir = filepath.Join(c.FleetDir, "replica-"+c.ID)
	}
	level := slog.LevelInfo
	if c.Debug {
		level = slog.LevelDebug
	}
	log := a.newLogger(level)
	if c.DataCentre != "" {
		log = log.With("data_centre", c.DataCentre)
	}
	if err := a.startPprof(log); err != nil {
		return err
	}

	tl, err := loadTLS(c.TLS)
	if err != nil {
		return fail("vault serve", err)
	}
	if tl != nil && tl.ID != c.ID {
		log.Warn("the TLS certificate names another replica id", "certificate_id", tl.ID, "id", c.ID)
	}
	url := strings.TrimRight(c.URL, "/")
	if url == "" {
		if tl != nil {
			url = "https://" + c.Listen
		} else {
			url = "http://" + c.Listen
		}
	}
	urls := map[string]string{c.ID: url}
	dcs := map[string]string{}
	var rpeers []replica.Peer
	for _, p := range c.Peers {
		if p.ID == "" || p.Raft == "" {
			return usagef("vault serve: every peer needs an id and a raft address")
		}
		if p.URL != "" {
			urls[p.ID] = strings.TrimRight(p.URL, "/")
		}
		if p.DataCentre != "" {
			dcs[p.ID] = p.DataCentre
		}
		rpeers = append(rpeers, replica.Peer{ID: p.ID, Addr: p.Raft})
	}
	if len(rpeers) > 0 && !containsPeer(rpeers, c.ID) {
		adv := c.RaftAdvertise
		if adv == "" {
			adv = c.RaftBind
		}
		rpeers = append(rpeers, replica.Peer{ID: c.ID, Addr: adv})
	}

	seal, err := a.openSealing(c.Sealing)
	if err != nil {
		return &opError{op: "vault serve", err: err, hint: "Check the sealing configuration: a key file from 'coffer vault seal-key', or a PKCS#11 token key from 'coffer vault pkcs11-keygen' (OPERATIONS.md)"}
	}
	var rcfg replica.Config
	var secrets *vault.Secrets
	if seal != nil {
		defer seal.close()
		secrets, err = vault.LoadSecretsSealed(secretsPath, seal.kek)
		if err == nil {
			rcfg.SealingKey = secrets.StorageKey()
			rcfg.Marks = seal.marks
			if seal.marks == nil {
				log.Warn("sealing with a key file: no rollback defence (the high-water mark needs a PKCS#11 token)")
			}
		}
	} else {
		secrets, err = vault.LoadSecrets(secretsPath)
	}
	if err != nil {
		h := "Run 'coffer vault init --dir DIR' once for the fleet, and copy secrets.json to every replica's --dir"
		if errors.Is(err, vault.ErrSecretsSealed) {
			h = "Configure the key file or PKCS#11 token the secrets were sealed with ('sealing' in --config, or --sealing-key-file)"
		}
		return &opError{op: "vault serve", err: err, hint: h}
	}
	if c.InsecureDevKSF {
		log.Warn("--insecure-dev-ksf: registrations with cheap key stretching are accepted; development fleets only")
	}

	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fail("vault serve", err)
	}
	defer ln.Close()
	rcfg.ID, rcfg.Dir, rcfg.Bootstrap, rcfg.Peers, rcfg.GuessLimit, rcfg.Logger = c.ID, dataDir, c.Bootstrap, rpeers, c.GuessLimit, log
	rcfg.MarkInterval = c.MarkInterval.Duration
	if t := c.RaftTiming; t != nil {
		rcfg.HeartbeatTimeout, rcfg.ElectionTimeout = t.Heartbeat.Duration, t.Election.Duration
		rcfg.LeaderLeaseTimeout, rcfg.CommitTimeout = t.LeaderLease.Duration, t.Commit.Duration
	}
	if sn := c.Snapshots; sn != nil {
		rcfg.SnapshotThreshold, rcfg.SnapshotInterval, rcfg.TrailingLogs = sn.Threshold, sn.Interval.Duration, sn.TrailingLogs
	}
	if tl != nil || source != nil {
		rln, err := net.Listen("tcp", c.RaftBind)
		if err != nil {
			return fail("vault serve", fmt.Errorf("listen for peers on %q: %w", c.RaftBind, err))
		}
		var sl raft.StreamLayer
		if tl != nil {
			sl, err = tl.StreamLayer(rln, c.RaftAdvertise)
			if err == nil && source != nil {
				sl = replica.WithDial(sl, tl.DialFrom(source))
			}
		} else {
			sl, err = replica.NewStreamLayer(rln, c.RaftAdvertise, func(ctx context.Context, addr string) (net.Conn, error) {
				return source.DialContext(ctx, "tcp", addr)
			})
		}
		if err != nil {
			rln.Close()
			return fail("vault serve", err)
		}
		rcfg.StreamLayer = sl
	} else {
		rcfg.BindAddr, rcfg.AdvertiseAddr = c.RaftBind, c.RaftAdvertise
	}
	rep, err := replica.Open(rcfg)
	if err != nil {
		var hint string
		if errors.Is(err, replica.ErrRolledBack) {
			hint = "SECURITY.md, 'Rollback': move the data directory away and restart the replica empty; it catches up from its peers"
		}
		return &opError{op: "vault serve", err: err, hint: hint}
	}
	closed := false
	defer func() {
		if !closed {
			rep.Close()
		}
	}()
	// A follower forwards requests to the leader, over mutual TLS when the
	// fleet has it.
	forward := &http.Client{Transport: &http.Transport{
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext, MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second,
	}}
	if tl != nil {
		forward = tl.HTTPClient()
	}
	defer forward.CloseIdleConnections()
	srv, err := vault.New(vault.Config{
		Forward: forward,
		Secrets: secrets, Replica: rep, URLs: urls, GuessLimit: c.GuessLimit,
		DataCentre: c.DataCentre, DataCentres: dcs, AdminRequiresCert: tl != nil,
		AllowWeakKSF: c.InsecureDevKSF, FakeKSF: fakeKSF(c.InsecureDevKSF), Logger: log,
	})
	if err != nil {
		return fail("vault serve", err)
	}
	hs := httpServer(srv.Handler(), log)
	errc := make(chan error, 1)
	if tl != nil {
		hs.TLSConfig = tl.OptionalClientConfig()
		hs.Protocols.SetHTTP2(true)
		go func() { errc <- hs.ServeTLS(ln, "", "") }()
	} else {
		if h, _, _ := net.SplitHostPort(c.Listen); !isLoopbackHost(h) {
			log.Warn("no TLS: the admin endpoint (/admin/) answers loopback callers only; configure the fleet CA certificates for remote administration")
		}
		go func() { errc <- hs.Serve(ln) }()
	}
	log.Info("vault replica serving", "id", c.ID, "fleet_id", fmt.Sprintf("%x", secrets.FleetID), "listen", ln.Addr().String(), "url", url, "raft", rep.Addr(), "raft_source_addr", c.RaftSourceAddr, "data", dataDir, "bootstrap", c.Bootstrap, "peers", len(rpeers), "tls", tl != nil, "sealed", seal != nil)
	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("vault replica stopping")
	case serveErr = <-errc:
		log.Error("serving failed", "error", serveErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
		log.Warn("shutting the HTTP server down", "error", err)
	}
	closed = true
	if err := rep.Close(); err != nil {
		return fail("vault serve", err)
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fail("vault serve", serveErr)
	}
	return nil
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// fakeKSF is the profile shown in answers for unknown accounts: the one real
// accounts use, so a development fleet's cheap profile does not single out
// the registered accounts.
func fakeKSF(dev bool) pake.KSF {
	if dev {
		return pake.TestKSF
	}
	return pake.DefaultKSF
}
