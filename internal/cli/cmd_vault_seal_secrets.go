package cli

import (
	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/server/serve"
	"github.com/cofferhq/coffer/internal/server/vault"
)

func (a *app) vaultSealSecretsCommand() *cobra.Command {
	var in, out, keyFile string
	var p pkcs11Flags
	cmd := &cobra.Command{
		Use:   "seal-secrets --in secrets.json --out FILE (--key-file FILE | --pkcs11-token LABEL --pkcs11-key-label LABEL)",
		Short: "Seal the fleet secrets for one replica with its key file or token key",
		Long: `Seal-secrets writes a copy of the fleet secrets (secrets.json from 'coffer
vault init', plaintext, or a sealed copy if --in is sealed under the same
key) sealed under one replica's key file or PKCS#11 token key. Give each
replica its own sealed copy (its "secrets" path), and keep the plaintext
file only offline. The secrets also give the replica its storage key, so
this one file is all the sealed state a new replica needs.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if in == "" || out == "" {
				return usagef("vault seal-secrets: give --in and --out")
			}
			seal, err := a.openSealingFlags("vault seal-secrets", keyFile, &p)
			if err != nil {
				return err
			}
			defer seal.Close()
			s, err := vault.LoadSecretsSealed(in, seal.Key)
			if err != nil {
				return fail("vault seal-secrets", err)
			}
			if err := s.SaveSealed(out, seal.Key); err != nil {
				return fail("vault seal-secrets", err)
			}
			if a.json {
				return a.printJSON(map[string]any{"out": out, "sealed_by": seal.Key.Name()})
			}
			a.say("Wrote %s, sealed by %s.", out, seal.Key.Name())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&in, "in", "", "the fleet secrets file")
	f.StringVar(&out, "out", "", "the sealed copy to write")
	f.StringVar(&keyFile, "key-file", "", "the replica's sealing key file")
	p.add(cmd)
	return cmd
}

// openSealingFlags opens the key file or token key a sealing command's
// flags name (op names the command in errors).
func (a *app) openSealingFlags(op, keyFile string, p *pkcs11Flags) (*serve.OpenedSealing, error) {
	sc := &serve.Sealing{KeyFile: keyFile}
	if p.cfg.TokenLabel != "" {
		pc := p.cfg
		sc.PKCS11 = &pc
	}
	seal, err := serve.OpenSealing(sc, a.Getenv)
	if err != nil {
		return nil, fail(op, err)
	}
	if seal == nil {
		return nil, usagef("%s: give --key-file or the --pkcs11-* flags", op)
	}
	return seal, nil
}
