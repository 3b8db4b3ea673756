package cli

import (
	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/server/vault"
)

func (a *app) vaultSealShareCommand() *cobra.Command {
	var in, out, keyFile string
	var p pkcs11Flags
	cmd := &cobra.Command{
		Use:   "seal-share --in share-N.json --out FILE (--key-file FILE | --pkcs11-token LABEL --pkcs11-key-label LABEL)",
		Short: "Seal one replica's OPRF share file with its key file or token key",
		Long: `Seal-share writes a copy of a replica's OPRF share file (from 'coffer vault
init --replicas N' or 'coffer vault deal-shares') sealed under that
replica's key file or PKCS#11 token key, as 'coffer vault seal-secrets'
does for the fleet secrets. Point the replica's --oprf-share ("oprf_share")
at the sealed copy and delete the plaintext one: the share then opens only
with the replica's own key. A replica that seals its disk warns at start
about a plaintext share file.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if in == "" || out == "" {
				return usagef("vault seal-share: give --in and --out")
			}
			seal, err := a.openSealingFlags("vault seal-share", keyFile, &p)
			if err != nil {
				return err
			}
			defer seal.Close()
			if err := vault.SealShareFile(in, out, seal.Key); err != nil {
				return fail("vault seal-share", err)
			}
			if a.json {
				return a.printJSON(map[string]any{"out": out, "sealed_by": seal.Key.Name()})
			}
			a.say("Wrote %s, sealed by %s.", out, seal.Key.Name())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&in, "in", "", "the OPRF share file")
	f.StringVar(&out, "out", "", "the sealed copy to write")
	f.StringVar(&keyFile, "key-file", "", "the replica's sealing key file")
	p.add(cmd)
	return cmd
}
