package cli

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/token"
)

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
			keyFile, _ = a.setting(cmd, "key", "COFFER_TOKEN_PRIVATE_KEY")
			account, _ = a.setting(cmd, "account", "COFFER_ACCOUNT")
			issuer, _ = a.setting(cmd, "issuer", "COFFER_TOKEN_ISSUER")
			audience, _ = a.setting(cmd, "audience", "COFFER_TOKEN_AUDIENCE")
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
