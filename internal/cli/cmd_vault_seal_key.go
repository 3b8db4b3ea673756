package cli

import (
	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/server/sealing/keyfile"
)

func (a *app) vaultSealKeyCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "seal-key --out FILE",
		Short: "Make a sealing key file (for replicas without a PKCS#11 token)",
		Long: `Seal-key makes a random sealing key file (0600; refuses to overwrite). A
replica configured with it ("sealing": {"key_file": FILE}, or
--sealing-key-file) seals its fleet secrets file and everything it stores.
Keep it off the data disk (another volume, a secrets mount): a key file
beside the data protects nothing. A PKCS#11 token is stronger and adds the
rollback defence ('coffer vault pkcs11-keygen').`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usagef("vault seal-key: name the file with --out FILE")
			}
			k, err := keyfile.Create(out)
			if err != nil {
				return fail("vault seal-key", err)
			}
			if a.json {
				return a.printJSON(map[string]any{"key_file": out, "key_id": k.ID()})
			}
			a.say("Wrote sealing key %s (key id %s).", out, k.ID())
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "the key file to make (0600)")
	return cmd
}
