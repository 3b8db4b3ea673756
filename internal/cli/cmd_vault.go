package cli

import (
	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/server/sealing/pkcs11"
	"github.com/cofferhq/coffer/internal/server/serve"
)

func (a *app) vaultCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vault",
		Short: "Run the vault fleet: key ceremony, replicas",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(a.vaultInitCommand(), a.vaultDealSharesCommand(), a.vaultServeCommand(), a.vaultCertCommand(), a.vaultSealKeyCommand(),
		a.vaultSealSecretsCommand(), a.vaultSealShareCommand(), a.vaultPKCS11KeygenCommand(), a.vaultJoinCommand(), a.vaultRemoveCommand(), a.vaultReshareCommand(), a.vaultStatusCommand())
	return cmd
}

// pkcs11Flags select a token key on the command line.
type pkcs11Flags struct{ cfg serve.PKCS11 }

func (p *pkcs11Flags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&p.cfg.Module, "pkcs11-module", pkcs11.DefaultModule, "the PKCS#11 library")
	f.StringVar(&p.cfg.TokenLabel, "pkcs11-token", "", "the token's label")
	f.StringVar(&p.cfg.KeyLabel, "pkcs11-key-label", "", "the key's label (one per replica, e.g. coffer-vault-r1)")
	f.StringVar(&p.cfg.PINFile, "pkcs11-pin-file", "", "file holding the user PIN (else env COFFER_PKCS11_PIN)")
}
