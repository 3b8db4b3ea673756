package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/server/fleetca"
	"github.com/cofferhq/coffer/internal/server/relay"
	"github.com/cofferhq/coffer/token"
)

func (a *app) relayServeCommand() *cobra.Command {
	var listen, vaults, keyFile, issuer, audience, proxies, vaultCA, vaultCert, vaultKey string
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
replicas' leader (--vault, every replica's VaultService URL). Replicas
serving https:// take only callers with a relay certificate of the fleet CA
(--vault-ca, --vault-cert, --vault-key; 'coffer vault cert --role relay').

Rate limits are token buckets per account and per source address (an IPv6
/64): a burst, then a steady rate per second. --no-rate-limits turns them
off (tests only). Logs are JSON lines on stderr, one per request, without
tokens or payloads. SIGINT or SIGTERM stops it after the requests in flight.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			a.tuneGC()
			listen, _ = a.setting(cmd, "listen", "COFFER_RELAY_LISTEN")
			vaults, _ = a.setting(cmd, "vault", "COFFER_RELAY_VAULTS")
			keyFile, _ = a.setting(cmd, "token-key", "COFFER_TOKEN_KEY")
			issuer, _ = a.setting(cmd, "issuer", "COFFER_TOKEN_ISSUER")
			audience, _ = a.setting(cmd, "audience", "COFFER_TOKEN_AUDIENCE")
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
				if vaultCert == "" || vaultKey == "" {
					return usagef("relay serve: replicas serving https:// take relays with a relay certificate of the fleet CA only: give --vault-cert and --vault-key ('coffer vault cert --role relay --id NAME --out DIR' makes them)")
				}
				t, err := fleetca.LoadTLS(vaultCert, vaultKey, vaultCA)
				if errors.Is(err, fleetca.ErrNoCertificate) {
					return usagef("relay serve: --vault-ca %s holds no PEM certificate", vaultCA)
				}
				if err != nil {
					return fail("relay serve", err)
				}
				if t.Role != fleetca.RoleRelay {
					return usagef("relay serve: --vault-cert %s is a %q certificate; a relay needs one of role relay ('coffer vault cert --role relay')", vaultCert, t.Role)
				}
				hc = &http.Client{Transport: &http.Transport{
					ForceAttemptHTTP2: true, TLSClientConfig: t.ClientConfig(""),
					MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second,
				}}
			} else if vaultCert != "" || vaultKey != "" {
				return usagef("relay serve: --vault-cert and --vault-key go with --vault-ca (the fleet CA the replicas' certificates chain to)")
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
	f.StringVar(&vaultCert, "vault-cert", "", "the relay's certificate of the fleet CA (role relay), presented to the replicas (with --vault-ca)")
	f.StringVar(&vaultKey, "vault-key", "", "the key of --vault-cert")
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
