package cli

// The operator's commands: the vault fleet (key ceremony, one replica),
// the relay (serve, account tokens for development) and the development
// fleet ('coffer dev').

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/cofferhq/coffer/internal/server/ceremony"

	"github.com/cofferhq/coffer/internal/server/serve"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/atomicfile"
	"github.com/cofferhq/coffer/internal/server/devfleet"
	"github.com/cofferhq/coffer/internal/server/fleetca"
	"github.com/cofferhq/coffer/internal/server/relay"
	"github.com/cofferhq/coffer/internal/server/vault"
	"github.com/cofferhq/coffer/token"
)

// pick returns flag if set, else the environment variable env.
func (a *app) pick(flag, env string) string {
	if flag != "" {
		return flag
	}
	return a.Getenv(env)
}

func (a *app) vaultCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vault",
		Short: "Run the vault fleet: key ceremony, replicas",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(a.vaultInitCommand(), a.vaultServeCommand(), a.vaultCertCommand(), a.vaultSealKeyCommand(),
		a.vaultSealSecretsCommand(), a.vaultPKCS11KeygenCommand(), a.vaultJoinCommand(), a.vaultRemoveCommand(), a.vaultStatusCommand())
	return cmd
}

func (a *app) vaultInitCommand() *cobra.Command {
	var dir string
	var validity time.Duration
	cmd := &cobra.Command{
		Use:   "init --dir DIR",
		Short: "Key ceremony: make a new fleet's secrets, root key and signed bundle",
		Long: `Init is the fleet's key ceremony. In DIR (made 0700 if needed) it writes:

  secrets.json  the fleet secrets (HPKE key, OPAQUE keys, record-id key):
                copy to every replica, keep nowhere else
  root.key      the fleet root private key, which signs fleet bundles:
                MOVE IT OFFLINE (a USB stick in a safe) and delete it here
  root.pub      the root public key clients pin (COFFER_FLEET_ROOT)
  bundle.json   the signed fleet bundle clients load (COFFER_FLEET)
  fleet-ca.crt  the fleet CA certificate (replicas' mutual TLS): give it to
                every replica, operator and relay
  fleet-ca.key  the fleet CA private key, which issues replica certificates
                ('coffer vault cert'): MOVE IT OFFLINE with root.key

It refuses to overwrite any of them.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir = a.pick(dir, "COFFER_VAULT_DIR")
			if dir == "" {
				return usagef("vault init: name the fleet directory with --dir DIR (or COFFER_VAULT_DIR)")
			}
			c, err := ceremony.Init(dir, validity)
			if err != nil {
				return fail("vault init", err)
			}
			abs := func(name string) string {
				p, err := filepath.Abs(filepath.Join(dir, name))
				if err != nil {
					return filepath.Join(dir, name)
				}
				return p
			}
			if a.json {
				return a.printJSON(map[string]any{
					"dir":         dir,
					"fleet_id":    fmt.Sprintf("%x", c.Bundle.FleetID),
					"secrets":     abs(ceremony.SecretsFile),
					"root_key":    abs(ceremony.RootKeyFile),
					"root_pub":    abs(ceremony.RootPubFile),
					"root_public": c.RootPublic,
					"bundle":      abs(ceremony.BundleFile),
					"ca_cert":     abs(ceremony.CACertFile),
					"ca_key":      abs(ceremony.CAKeyFile),
					"not_after":   c.Bundle.NotAfter,
				})
			}
			w := a.Stdout
			fmt.Fprintf(w, "Made fleet %x in %s.\n\n", c.Bundle.FleetID, dir)
			fmt.Fprintf(w, "  fleet secrets   %s\n                  copy to every replica's --dir; keep nowhere else\n", abs(ceremony.SecretsFile))
			fmt.Fprintf(w, "  root key        %s\n                  MOVE IT OFFLINE now, and delete it here: it signs fleet bundles\n", abs(ceremony.RootKeyFile))
			fmt.Fprintf(w, "  root public key %s\n                  clients pin it: COFFER_FLEET_ROOT=%s\n", abs(ceremony.RootPubFile), c.RootPublic)
			fmt.Fprintf(w, "  fleet bundle    %s\n                  clients load it: COFFER_FLEET=<that file>; valid until %s\n\n", abs(ceremony.BundleFile), c.Bundle.NotAfter.Format(time.DateOnly))
			fmt.Fprintf(w, "  fleet CA        %s\n                  issues replica certificates: 'coffer vault cert'; then MOVE %s OFFLINE too\n\n", abs(ceremony.CACertFile), abs(ceremony.CAKeyFile))
			fmt.Fprintf(w, "Start a replica with: coffer vault serve --dir %s --id r1 --listen 127.0.0.1:7100 --raft 127.0.0.1:7101 --bootstrap\n", dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the fleet directory (env COFFER_VAULT_DIR)")
	cmd.Flags().DurationVar(&validity, "validity", ceremony.DefaultBundleValidity, "how long the first fleet bundle is valid")
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

// newLogger returns a JSON logger on stderr.
func (a *app) newLogger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(a.Stderr, &slog.HandlerOptions{Level: level}))
}

// serverGCPercent is the garbage collector's target for the long-running
// servers (vault replicas, relays) when GOGC is not set: their live heaps
// are small (tens of MB) and they allocate per request, so collecting half
// as often costs little memory and saved 5 % of a fleet's CPU per recovery
// (bench/vault/README.md). GOGC or GOMEMLIMIT in the environment win.
const serverGCPercent = 200

// tuneGC applies serverGCPercent unless the operator set GOGC.
func (a *app) tuneGC() {
	if a.Getenv("GOGC") == "" {
		debug.SetGCPercent(serverGCPercent)
	}
}

// startPprof serves Go's net/http/pprof on the loopback address in
// COFFER_PPROF, if set, for profiling a server under load (OPERATIONS.md,
// "Profiling"). It refuses other addresses: profiles reveal memory layout
// and timing, and the endpoint has no authentication.
func (a *app) startPprof(log *slog.Logger) error {
	addr := a.Getenv("COFFER_PPROF")
	if addr == "" {
		return nil
	}
	if h, _, err := net.SplitHostPort(addr); err != nil || !serve.IsLoopbackHost(h) {
		return usagef("COFFER_PPROF=%q: give a loopback HOST:PORT, e.g. 127.0.0.1:6060", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("COFFER_PPROF: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("serving net/http/pprof (COFFER_PPROF)", "addr", ln.Addr().String())
	go (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
	return nil
}

func (a *app) relayCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Run the relay; make account tokens for development",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(a.relayServeCommand(), a.relayTokenCommand(), a.relayKeygenCommand())
	return cmd
}

func (a *app) relayServeCommand() *cobra.Command {
	var listen, vaults, keyFile, issuer, audience, proxies, vaultCA string
	var accRate, srcRate float64
	var accBurst, srcBurst int
	var noLimits bool
	var timeout, maxLifetime, leeway time.Duration
	cmd := &cobra.Command{
		Use:   "serve --listen ADDR --vault URL[,URL...] --token-key PUB.pem --issuer ISS --audience AUD",
		Short: "Run a relay: the front end that authenticates accounts and forwards sealed requests",
		Long: `Serve runs a relay: it serves RelayService (HTTP/1.1 and h2c; put a TLS
proxy in front of it on the internet) and GET /healthz. For every request it
checks the account token (an EdDSA JWT signed by the app's backend, whose
public key is --token-key, for --issuer and --audience), applies the rate
limits, and forwards the sealed request, which it cannot read, to the vault
replicas' leader (--vault, every replica's VaultService URL).

Rate limits are token buckets per account and per source address (an IPv6
/64): a burst, then a steady rate per second. --no-rate-limits turns them
off (tests only). Logs are JSON lines on stderr, one per request, without
tokens or payloads. SIGINT or SIGTERM stops it after the requests in flight.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			a.tuneGC()
			listen = a.pick(listen, "COFFER_RELAY_LISTEN")
			vaults = a.pick(vaults, "COFFER_RELAY_VAULTS")
			keyFile = a.pick(keyFile, "COFFER_TOKEN_KEY")
			issuer = a.pick(issuer, "COFFER_TOKEN_ISSUER")
			audience = a.pick(audience, "COFFER_TOKEN_AUDIENCE")
			switch {
			case listen == "":
				return usagef("relay serve: give the address to listen on with --listen HOST:PORT (or COFFER_RELAY_LISTEN)")
			case vaults == "":
				return usagef("relay serve: name the vault replicas with --vault URL[,URL...] (or COFFER_RELAY_VAULTS)")
			case keyFile == "":
				return usagef("relay serve: give the app backend's token public key with --token-key PUB.pem (or COFFER_TOKEN_KEY)")
			case issuer == "" || audience == "":
				return usagef("relay serve: give the tokens' --issuer and --audience (or COFFER_TOKEN_ISSUER, COFFER_TOKEN_AUDIENCE)")
			}
			pemBytes, err := os.ReadFile(keyFile)
			if err != nil {
				return fail("relay serve", err)
			}
			pub, err := token.ParsePublicKeyPEM(pemBytes)
			if err != nil {
				return fail("relay serve", fmt.Errorf("token key %s: %w", keyFile, err))
			}
			var trusted []netip.Prefix
			for _, s := range splitList(proxies) {
				p, err := netip.ParsePrefix(s)
				if err != nil {
					addr, aerr := netip.ParseAddr(s)
					if aerr != nil {
						return usagef("relay serve: --trusted-proxy %q: want an address or CIDR prefix", s)
					}
					p = netip.PrefixFrom(addr, addr.BitLen())
				}
				trusted = append(trusted, p)
			}
			log := a.newLogger(slog.LevelInfo)
			if err := a.startPprof(log); err != nil {
				return err
			}
			perAccount := relay.Limit{Rate: accRate, Burst: accBurst}
			perSource := relay.Limit{Rate: srcRate, Burst: srcBurst}
			if noLimits {
				perAccount, perSource = relay.Unlimited, relay.Unlimited
			}
			if !noLimits && (accRate < 0 || srcRate < 0 || math.IsNaN(accRate) || math.IsNaN(srcRate) || accBurst < 1 || srcBurst < 1) {
				return usagef("relay serve: rates must be ≥ 0 and bursts ≥ 1")
			}
			var hc *http.Client
			if vaultCA != "" {
				pool, err := fleetca.LoadCAPool(vaultCA)
				if errors.Is(err, fleetca.ErrNoCertificate) {
					return usagef("relay serve: --vault-ca %s holds no PEM certificate", vaultCA)
				}
				if err != nil {
					return fail("relay serve", err)
				}
				hc = &http.Client{Transport: &http.Transport{
					ForceAttemptHTTP2: true, TLSClientConfig: fleetca.AnonymousClientConfig(pool),
					MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second,
				}}
			}
			rl, err := relay.New(relay.Config{
				Listen:     listen,
				HTTPClient: hc,
				Vaults:     splitList(vaults),
				Verifier: &token.Verifier{
					Key: pub, Issuer: issuer, Audience: audience,
					MaxLifetime: maxLifetime, Leeway: leeway,
				},
				PerAccount: perAccount, PerSource: perSource,
				TrustedProxies: trusted,
				RequestTimeout: timeout,
				Logger:         log,
			})
			if err != nil {
				return fail("relay serve", err)
			}
			if err := rl.ListenAndServe(cmd.Context()); err != nil {
				return fail("relay serve", err)
			}
			log.Info("relay stopped")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "", "address to listen on, HOST:PORT (env COFFER_RELAY_LISTEN)")
	f.StringVar(&vaults, "vault", "", "the vault replicas' base URLs, comma-separated (env COFFER_RELAY_VAULTS)")
	f.StringVar(&vaultCA, "vault-ca", "", "the fleet CA certificate (fleet-ca.crt), to reach replicas serving https:// with the fleet's TLS")
	f.StringVar(&keyFile, "token-key", "", "the app backend's Ed25519 public key, PEM (env COFFER_TOKEN_KEY)")
	f.StringVar(&issuer, "issuer", "", "the tokens' issuer, iss (env COFFER_TOKEN_ISSUER)")
	f.StringVar(&audience, "audience", "", "the tokens' audience, aud (env COFFER_TOKEN_AUDIENCE)")
	f.Float64Var(&accRate, "account-rate", relay.DefaultPerAccount.Rate, "requests per second per account, after the burst")
	f.IntVar(&accBurst, "account-burst", relay.DefaultPerAccount.Burst, "burst of requests per account")
	f.Float64Var(&srcRate, "source-rate", relay.DefaultPerSource.Rate, "requests per second per source address, after the burst")
	f.IntVar(&srcBurst, "source-burst", relay.DefaultPerSource.Burst, "burst of requests per source address")
	f.BoolVar(&noLimits, "no-rate-limits", false, "turn the rate limits off (tests only)")
	f.StringVar(&proxies, "trusted-proxy", "", "load balancers whose X-Forwarded-For names the source, comma-separated addresses or CIDR prefixes")
	f.DurationVar(&timeout, "request-timeout", relay.DefaultRequestTimeout, "time allowed for one request at the vaults, retries included")
	f.DurationVar(&maxLifetime, "max-token-lifetime", token.DefaultMaxLifetime, "longest token lifetime (exp − iat) accepted")
	f.DurationVar(&leeway, "leeway", token.DefaultLeeway, "clock skew allowed on token times")
	return cmd
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (a *app) relayTokenCommand() *cobra.Command {
	var keyFile, account, issuer, audience string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "token --key PRIV.pem --account ID --issuer ISS --audience AUD [--ttl 15m]",
		Short: "Mint an account token (development: the app's backend does this)",
		Long: `Token signs an account token (an EdDSA JWT) with the app backend's private
key and prints it. In production the app's backend issues tokens to its
signed-in users; this is for development and tests. Tokens are short-lived:
the relay refuses ones that live longer than its --max-token-lifetime
(1 hour by default).`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			keyFile = a.pick(keyFile, "COFFER_TOKEN_PRIVATE_KEY")
			account = a.pick(account, "COFFER_ACCOUNT")
			issuer = a.pick(issuer, "COFFER_TOKEN_ISSUER")
			audience = a.pick(audience, "COFFER_TOKEN_AUDIENCE")
			switch {
			case keyFile == "":
				return usagef("relay token: give the private key with --key PRIV.pem (or COFFER_TOKEN_PRIVATE_KEY)")
			case account == "":
				return usagef("relay token: name the account with --account ID (or COFFER_ACCOUNT)")
			case issuer == "" || audience == "":
				return usagef("relay token: give --issuer and --audience (or COFFER_TOKEN_ISSUER, COFFER_TOKEN_AUDIENCE), as the relay is configured")
			case ttl <= 0:
				return usagef("relay token: --ttl must be positive")
			}
			if err := token.ValidSubject(account); err != nil {
				return usagef("relay token: --account: %v", err)
			}
			b, err := os.ReadFile(keyFile)
			if err != nil {
				return fail("relay token", err)
			}
			priv, err := token.ParsePrivateKeyPEM(b)
			clear(b)
			if err != nil {
				return fail("relay token", fmt.Errorf("key %s: %w", keyFile, err))
			}
			now := time.Now()
			exp := now.Add(ttl)
			tok, err := token.Mint(priv, token.Claims{Issuer: issuer, Subject: account, Audience: audience, IssuedAt: now, Expiry: exp})
			if err != nil {
				return fail("relay token", err)
			}
			if a.json {
				return a.printJSON(map[string]any{"token": tok, "account": account, "expires": exp.UTC().Truncate(time.Second)})
			}
			fmt.Fprintln(a.Stdout, tok)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&keyFile, "key", "", "the app backend's Ed25519 private key, PEM (env COFFER_TOKEN_PRIVATE_KEY)")
	f.StringVar(&account, "account", "", "the account id, the token's subject (env COFFER_ACCOUNT)")
	f.StringVar(&issuer, "issuer", "", "issuer, as the relay expects (env COFFER_TOKEN_ISSUER)")
	f.StringVar(&audience, "audience", "", "audience, as the relay expects (env COFFER_TOKEN_AUDIENCE)")
	f.DurationVar(&ttl, "ttl", 15*time.Minute, "how long the token is valid")
	return cmd
}

func (a *app) relayKeygenCommand() *cobra.Command {
	var privFile, pubFile string
	cmd := &cobra.Command{
		Use:   "keygen --private PRIV.pem --public PUB.pem",
		Short: "Make an Ed25519 key pair for signing account tokens (development)",
		Long: `Keygen makes the app backend's token-signing key pair, in the PEM forms
'openssl genpkey -algorithm ed25519' writes: the private key (0600) signs
tokens ('coffer relay token'), the relay checks them with the public key
('coffer relay serve --token-key'). It refuses to overwrite files.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if privFile == "" || pubFile == "" {
				return usagef("relay keygen: name both files with --private FILE and --public FILE")
			}
			pub, priv, err := token.GenerateKey()
			if err != nil {
				return fail("relay keygen", err)
			}
			pp, err := token.MarshalPrivateKeyPEM(priv)
			if err != nil {
				return fail("relay keygen", err)
			}
			up, err := token.MarshalPublicKeyPEM(pub)
			if err != nil {
				return fail("relay keygen", err)
			}
			if err := atomicfile.CreateExclusive(privFile, pp, 0o600); err != nil {
				return fail("relay keygen", err)
			}
			if err := atomicfile.CreateExclusive(pubFile, up, 0o644); err != nil {
				return fail("relay keygen", err)
			}
			if a.json {
				return a.printJSON(map[string]any{"private": privFile, "public": pubFile})
			}
			a.say("Wrote the private key to %s (keep it with the app's backend) and the public key to %s (give it to the relays).", privFile, pubFile)
			return nil
		},
	}
	cmd.Flags().StringVar(&privFile, "private", "", "file for the private key (0600)")
	cmd.Flags().StringVar(&pubFile, "public", "", "file for the public key")
	return cmd
}

// devTokenTTL is how long the tokens 'coffer dev' writes are valid;
// devRefresh how often it writes new ones while it runs.
const (
	devTokenTTL = time.Hour
	devRefresh  = 30 * time.Minute
)

func (a *app) devCommand() *cobra.Command {
	var dir, account, readyFile string
	var guessLimit uint32
	var replicas int
	cmd := &cobra.Command{
		Use:   "dev --dir DIR [--account NAME] [--replicas 1|3|5]",
		Short: "Run a development vault fleet and relay on 127.0.0.1",
		Long: `Dev runs a whole vault fleet on 127.0.0.1 for development: the key ceremony
(the first time), one vault replica and a relay, with cheap key stretching
allowed. Reusing DIR restarts the same fleet, with its accounts.

It writes DIR/env, shell lines that set COFFER_RELAY, COFFER_ACCOUNT,
COFFER_TOKEN, COFFER_FLEET, COFFER_FLEET_ROOT and COFFER_DEV_KSF=1 for the
account (default "dev"). In another shell:

    source DIR/env
    coffer init --password --repo /tmp/coffer-repo

The token in DIR/env is valid for 1 hour. While 'coffer dev' runs it writes
a fresh one every 30 minutes: source DIR/env again (or re-run 'coffer dev')
when the relay says the token expired.

It prints "coffer dev: ready" (and writes --ready-file, if given) once the
fleet serves, and runs until interrupted (SIGINT or SIGTERM).

--replicas 3 or 5 runs that many vault replicas instead, each a separate
'coffer vault serve --config FILE' child process, with Raft over mutual TLS
from the fleet CA and sealed disks (a key file per replica), so replicas
can be killed and restarted to try failures. DIR/env then also sets
COFFER_DEV_REPLICAS, COFFER_DEV_FLEET_CA (the fleet CA certificate the
replicas' https:// URLs use: curl --cacert) and COFFER_DEV_REPLICA_<i>_PID,
_URL and _RAFT (i from 1), and DIR/replicas.json lists each replica's id,
pid, url, raft address, data directory, config file, log
(DIR/replica-<id>.log) and the command line that restarts it (restart, for
a shell; restart_argv). 'coffer dev' logs a replica's exit but never
restarts it; on SIGINT or SIGTERM it stops the relay, then every replica
it started (SIGTERM, then SIGKILL after 15 s). A replica a script
restarted is the script's to stop. On Linux the replicas die with a killed
'coffer dev'. Keep a DIR's replica count: a 3-replica DIR cannot be reused
with 5.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir = a.pick(dir, "COFFER_DEV_DIR")
			if dir == "" {
				return usagef("dev: name a directory for the fleet with --dir DIR (or COFFER_DEV_DIR)")
			}
			if err := token.ValidSubject(account); err != nil {
				return usagef("dev: --account: %v", err)
			}
			if replicas != 1 && replicas != 3 && replicas != 5 {
				return usagef("dev: --replicas must be 1, 3 or 5")
			}
			abs, err := filepath.Abs(dir)
			if err != nil {
				return fail("dev", err)
			}
			if err := os.MkdirAll(abs, 0o700); err != nil {
				return fail("dev", err)
			}
			ctx := cmd.Context()
			a.tuneGC()
			if err := a.startPprof(a.newLogger(slog.LevelInfo)); err != nil {
				return err
			}
			if replicas > 1 {
				return a.runDevReplicas(ctx, abs, account, readyFile, replicas, guessLimit)
			}
			f, err := devfleet.Start(ctx, devfleet.Options{Dir: abs, GuessLimit: guessLimit, Logger: a.newLogger(slog.LevelWarn)})
			if err != nil {
				return fail("dev", err)
			}
			closed := false
			defer func() {
				if !closed {
					f.Close()
				}
			}()
			envFile := filepath.Join(abs, "env")
			exp, err := writeDevEnv(f, envFile, account)
			if err != nil {
				return fail("dev", err)
			}
			if a.json {
				if err := a.printJSON(map[string]any{
					"ready": true, "dir": abs, "env": envFile, "relay": f.RelayURL, "vault": f.VaultURL,
					"account": account, "bundle": f.BundlePath, "root_public": f.RootPublic, "token_expires": exp,
				}); err != nil {
					return err
				}
			} else {
				w := a.Stdout
				fmt.Fprintf(w, "Development vault fleet in %s (cheap key stretching allowed: never for real accounts).\n", abs)
				fmt.Fprintf(w, "  vault replica  %s\n  relay          %s\n  fleet bundle   %s\n  account        %s\n\n", f.VaultURL, f.RelayURL, f.BundlePath, account)
				fmt.Fprintf(w, "The settings for account %s are in %s; in another shell:\n\n", account, envFile)
				fmt.Fprintf(w, "    source %s\n    coffer init --password --repo /tmp/coffer-repo\n    coffer backup DIR...\n    coffer status\n\n", envFile)
				fmt.Fprintf(w, "The token there expires at %s; a fresh one is written every 30 minutes while this runs\n", when(exp))
				fmt.Fprintf(w, "(source the file again). Stop with Ctrl-C.\n")
				fmt.Fprintln(w, "coffer dev: ready")
			}
			if readyFile != "" {
				if err := atomicfile.Replace(readyFile, []byte(envFile+"\n"), 0o600); err != nil {
					return fail("dev", err)
				}
			}
			t := time.NewTicker(devRefresh)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					closed = true
					if err := f.Close(); err != nil {
						return fail("dev", err)
					}
					if !a.json {
						fmt.Fprintln(a.Stdout, "coffer dev: stopped")
					}
					return nil
				case <-t.C:
					if _, err := writeDevEnv(f, envFile, account); err != nil {
						fmt.Fprintf(a.Stderr, "coffer: dev: warning: refreshing %s: %v\n", envFile, err)
					}
				}
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory for the fleet's keys and state (env COFFER_DEV_DIR)")
	f.StringVar(&account, "account", "dev", "the account the env file's token is for")
	f.StringVar(&readyFile, "ready-file", "", "write FILE (holding the env file's path) once the fleet serves")
	f.Uint32Var(&guessLimit, "guess-limit", 0, fmt.Sprintf("wrong guesses allowed for new registrations (default %d)", vault.DefaultGuessLimit))
	f.IntVar(&replicas, "replicas", 1, "vault replicas: 1 (in this process), or 3 or 5 (child processes, mutual TLS)")
	return cmd
}

// writeDevEnv writes the shell settings for account, with a fresh token,
// and returns when the token expires.
// extra settings (if any) are written too.
func writeDevEnv(f *devfleet.Fleet, path, account string, extra ...map[string]string) (time.Time, error) {
	env, err := f.Env(account, devTokenTTL)
	if err != nil {
		return time.Time{}, err
	}
	for _, m := range extra {
		maps.Copy(env, m)
	}
	env["COFFER_DEV_KSF"] = "1"
	exp := time.Now().Add(devTokenTTL)
	var sb strings.Builder
	fmt.Fprintf(&sb, "# Coffer development fleet ('coffer dev'), written %s.\n", time.Now().Format(time.RFC3339))
	fmt.Fprintf(&sb, "# The token expires at %s (1 hour): 'coffer dev' writes a fresh one every\n", exp.Format(time.RFC3339))
	fmt.Fprintf(&sb, "# 30 minutes while it runs; source this file again, or re-run 'coffer dev'.\n")
	fmt.Fprintf(&sb, "# COFFER_DEV_KSF=1: cheap key stretching, for this development fleet only.\n")
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&sb, "export %s=%s\n", k, shellQuote(env[k]))
	}
	return exp, atomicfile.Replace(path, []byte(sb.String()), 0o600)
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
