package cli

import (
	"fmt"
	"github.com/spf13/cobra"
	"strconv"
	"strings"

	"github.com/cofferhq/coffer/internal/server/vault"
)

func (a *app) vaultDealSharesCommand() *cobra.Command {
	var out, members string
	var replicas int
	var gen uint32
	cmd := &cobra.Command{
		Use:   "deal-shares --out DIR (--replicas N | --members I,J,K --generation G)",
		Short: "Deal OPRF shares: to move a version-1 fleet to the threshold OPRF, or for a membership change",
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
enables recovery again). A new fleet gets its shares from 'coffer vault init --replicas N'.

With --members and --generation it deals the next generation of shares for a
membership change (PROTOCOL.md §7, resharing; OPERATIONS.md): the indices of
the replicas that stay keep theirs, a new replica gets an index no replica
ever had. Files are share-<index>-gen<G>.json. Restart each staying replica
with both its files (--oprf-share OLD,NEW), start each new replica with its
new file, run 'coffer vault reshare --generation G', then restart every
replica with its new file only and delete the old ones.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var paths []string
			var err error
			switch {
			case out == "":
				return usagef("vault deal-shares: name the directory with --out DIR")
			case members != "" && replicas == 0:
				if gen < 2 {
					return usagef("vault deal-shares: --members deals a later generation: give --generation G (2 or more, one above the fleet's current)")
				}
				idx, perr := parseIndices(members)
				if perr != nil {
					return usagef("vault deal-shares: --members: %v", perr)
				}
				paths, err = vault.DealGeneration(out, idx, gen)
			case replicas >= 1 && members == "" && gen <= 1:
				paths, err = vault.DealShares(out, replicas)
			default:
				return usagef("vault deal-shares: give --replicas N (the first shares), or --members I,J,K with --generation G (a membership change)")
			}
			if err != nil {
				return fail("vault deal-shares", err)
			}
			if a.json {
				return a.printJSON(map[string]any{"oprf_shares": paths})
			}
			for _, p := range paths {
				a.say("OPRF share: %s (to its replica only)", p)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "the directory to write the share files to")
	cmd.Flags().IntVar(&replicas, "replicas", 0, "the number of replicas (the threshold is a majority)")
	cmd.Flags().StringVar(&members, "members", "", "the share indices of the new membership, e.g. 1,2,4 (the threshold is a majority)")
	cmd.Flags().Uint32Var(&gen, "generation", 0, "the share generation to deal (the fleet's current one plus one)")
	return cmd
}

// parseIndices reads a comma-separated list of share indices (1 to 65535).
func parseIndices(s string) ([]uint16, error) {
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%q is not a share index (1 to 65535)", f)
		}
		out = append(out, uint16(n))
	}
	return out, nil
}
