package cli

import (
	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/server/sealing/pkcs11"
	"github.com/cofferhq/coffer/internal/server/serve"
)

func (a *app) vaultPKCS11KeygenCommand() *cobra.Command {
	var p pkcs11Flags
	cmd := &cobra.Command{
		Use:   "pkcs11-keygen --pkcs11-token LABEL --pkcs11-key-label LABEL [--pkcs11-module LIB] [--pkcs11-pin-file FILE]",
		Short: "Generate a replica's sealing key inside a PKCS#11 token",
		Long: `Pkcs11-keygen generates an AES-256 key inside the token (sensitive,
non-extractable, encrypt/decrypt only) under --pkcs11-key-label; the
replica's high-water mark (rollback defence) is kept beside it under the
same label. Then seal the fleet secrets for this replica with it ('coffer
vault seal-secrets --pkcs11-...') and configure "sealing": {"pkcs11": {...}}.
OPERATIONS.md has the SoftHSM2 and HSM set-up.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if p.cfg.TokenLabel == "" || p.cfg.KeyLabel == "" {
				return usagef("vault pkcs11-keygen: give --pkcs11-token and --pkcs11-key-label")
			}
			pin, err := serve.PKCS11PIN(&p.cfg, a.Getenv)
			if err != nil {
				return usagef("vault pkcs11-keygen: %v", err)
			}
			tok, err := pkcs11.GenerateKey(pkcs11.Config{Module: p.cfg.Module, TokenLabel: p.cfg.TokenLabel, KeyLabel: p.cfg.KeyLabel, PIN: pin})
			if err != nil {
				return fail("vault pkcs11-keygen", err)
			}
			name := tok.Key().Name()
			tok.Close()
			if a.json {
				return a.printJSON(map[string]any{"key": name})
			}
			a.say("Generated %s.", name)
			return nil
		},
	}
	p.add(cmd)
	return cmd
}
