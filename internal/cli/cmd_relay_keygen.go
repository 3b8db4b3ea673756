package cli

import (
	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/atomicfile"
	"github.com/cofferhq/coffer/token"
)

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
