package cli

import (
	"errors"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/server/vault"
)

func (a *app) vaultStatusCommand() *cobra.Command {
	var url string
	var af adminFlags
	cmd := &cobra.Command{
		Use:   "status --url URL [--json]",
		Short: "Show a replica's view of the fleet: members, leader, indexes, health",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if url == "" {
				return usagef("vault status: give a replica's VaultService URL with --url")
			}
			c, err := af.client()
			if err != nil {
				return fail("vault status", err)
			}
			var st vault.Status
			if err := adminCall(cmd.Context(), c, url, "/admin/status", nil, &st); err != nil {
				return &opError{op: "vault status", err: err}
			}
			if err := a.printFleetStatus(st); err != nil {
				return err
			}
			if !st.Healthy {
				return &opError{op: "vault status", err: errors.New("unhealthy: " + strings.Join(st.Problems, "; "))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "a replica's VaultService URL")
	af.add(cmd)
	return cmd
}
