package cli

import (
	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/server/vault"
)

func (a *app) vaultJoinCommand() *cobra.Command {
	var leader, id, raftAddr, url, dc string
	var af adminFlags
	cmd := &cobra.Command{
		Use:   "join --leader URL --id ID --raft ADDR --url URL [--dc DC]",
		Short: "Add a replica to a running fleet as a voter",
		Long: `Join asks the fleet (--leader: any replica's VaultService URL; a follower's
answer names the leader, and join follows it once) to add replica ID, whose
Raft address is --raft and VaultService is --url, as a voter. Start the new
replica first ('coffer vault serve' without --bootstrap, empty data
directory): it waits for the leader, which sends it the log or a snapshot.
Add one replica at a time and wait for 'coffer vault status' to show it
caught up.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if leader == "" || id == "" || raftAddr == "" {
				return usagef("vault join: give --leader URL, --id ID and --raft ADDR (and --url)")
			}
			c, err := af.client()
			if err != nil {
				return fail("vault join", err)
			}
			var st vault.Status
			if err := adminCall(cmd.Context(), c, leader, "/admin/join", vault.JoinRequest{ID: id, Raft: raftAddr, URL: url, DataCentre: dc}, &st); err != nil {
				return &opError{op: "vault join", err: err}
			}
			return a.printFleetStatus(st)
		},
	}
	f := cmd.Flags()
	f.StringVar(&leader, "leader", "", "a replica's VaultService URL (the leader's, or any: join follows the leader)")
	f.StringVar(&id, "id", "", "the new replica's id")
	f.StringVar(&raftAddr, "raft", "", "the new replica's Raft address HOST:PORT, as peers dial it")
	f.StringVar(&url, "url", "", "the new replica's VaultService URL")
	f.StringVar(&dc, "dc", "", "the new replica's data centre label")
	af.add(cmd)
	return cmd
}
