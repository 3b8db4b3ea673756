package cli

import (
	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/server/vault"
)

func (a *app) vaultDealSharesCommand() *cobra.Command {
	var out string
	var replicas int
	cmd := &cobra.Command{
		Use:   "deal-shares --out DIR --replicas N",
		Short: "Deal OPRF shares to move a version-1 fleet to the threshold OPRF",
		Long: `Deal-shares is the ceremony step that moves an existing fleet to the
threshold OPRF (PROTOCOL.md §7, migration). It writes share-1.json …
share-N.json in DIR (0600, never overwritten): give each replica its own
('vault serve --oprf-share FILE', "oprf_share" in --config) and delete them
here. A majority of the N replicas together evaluate an account's OPRF; fewer
learn nothing about any password.

Restarted with shares, the fleet registers every new record through the
threshold OPRF and still serves version-1 records with the fleet's OPRF seed;
at each such record's next recovery the vault asks the client to register it
again under the same password, which moves it. When the records have
moved, remove "opaque_oprf_seed" from the secrets file on every replica:
from then on no replica can test a guess alone, and a record that has not
moved cannot log in any more (its owner restores with the 64-digit key and
enables recovery again). A new fleet gets its shares from 'coffer vault init --replicas N'.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" || replicas < 1 {
				return usagef("vault deal-shares: name the directory with --out DIR and the fleet's size with --replicas N")
			}
			paths, err := vault.DealShares(out, replicas)
			if err != nil {
				return fail("vault deal-shares", err)
			}
			if a.json {
				return a.printJSON(map[string]any{"oprf_shares": paths})
			}
			for i, p := range paths {
				a.say("OPRF share %d: %s (to replica %d only)", i+1, p, i+1)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "the directory to write the share files to")
	cmd.Flags().IntVar(&replicas, "replicas", 0, "the number of replicas (the threshold is a majority)")
	return cmd
}
