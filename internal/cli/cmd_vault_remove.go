package cli

import (
	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/server/vault"
)

func (a *app) vaultRemoveCommand() *cobra.Command {
	var leader, id string
	var af adminFlags
	cmd := &cobra.Command{
		Use:   "remove --leader URL --id ID",
		Short: "Remove a replica from the fleet",
		Long: `Remove asks the fleet's leader to remove replica ID from the configuration.
Remove a dead replica before adding its replacement, so the quorum does not
count it; stop the removed replica afterwards.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if leader == "" || id == "" {
				return usagef("vault remove: give --leader URL and --id ID")
			}
			c, err := af.client()
			if err != nil {
				return fail("vault remove", err)
			}
			var st vault.Status
			if err := adminCall(cmd.Context(), c, leader, "/admin/remove", vault.RemoveRequest{ID: id}, &st); err != nil {
				return &opError{op: "vault remove", err: err}
			}
			return a.printFleetStatus(st)
		},
	}
	f := cmd.Flags()
	f.StringVar(&leader, "leader", "", "a replica's VaultService URL")
	f.StringVar(&id, "id", "", "the replica to remove")
	af.add(cmd)
	return cmd
}
