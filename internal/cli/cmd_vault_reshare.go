package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/server/vault"
)

func (a *app) vaultReshareCommand() *cobra.Command {
	var leader string
	var gen uint32
	var af adminFlags
	cmd := &cobra.Command{
		Use:   "reshare --leader URL --generation G",
		Short: "Move every threshold record to a new generation of OPRF shares",
		Long: `Reshare asks the fleet's leader to move every threshold record to share
generation G (PROTOCOL.md §7, resharing; OPERATIONS.md, "Membership changes
on a threshold fleet"), after 'coffer vault deal-shares --members …
--generation G' and restarting the replicas with their new share files. The
replicas in both memberships send the leader their deltas; the leader
commits each record's new public correction. Nothing changes for the users:
not the password, not the guesses.

It prints what it did. "done" means every record that can move is at G:
restart every replica with its generation-G file only and delete the old
files. A record that failed (a login under way, too few replicas up) stays
where it was; run reshare again. Threshold records registered before
records kept their credential id cannot be reshared: they move when their
owner next recovers (the vault asks the client to enrol again).`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if leader == "" || gen < 2 {
				return usagef("vault reshare: give --leader URL and --generation G (2 or more)")
			}
			c, err := af.client()
			if err != nil {
				return fail("vault reshare", err)
			}
			c.Timeout = 0 // a reshare walks every record; the caller's interrupt ends it
			var rep vault.ReshareReport
			if err := adminCall(cmd.Context(), c, leader, "/admin/reshare", vault.ReshareRequest{Generation: gen}, &rep); err != nil {
				return &opError{op: "vault reshare", err: err}
			}
			if a.json {
				if err := a.printJSON(rep); err != nil {
					return err
				}
			} else {
				a.say("Generation %d: %d records moved, %d there already, %d failed, %d to move at their next recovery, %d version-1 records.",
					rep.Generation, rep.Moved, rep.Already, rep.Failed, rep.Unmovable, rep.Version1)
				for _, e := range rep.Errors {
					a.say("  %s", e)
				}
			}
			if !rep.Done {
				return &opError{op: "vault reshare", err: fmt.Errorf("%d records are still at their old generation; run 'coffer vault reshare' again once the replicas are up", rep.Failed)}
			}
			if !a.json {
				a.say("Done: restart every replica with its generation-%d share file only, and delete the old share files.", rep.Generation)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&leader, "leader", "", "a replica's VaultService URL")
	f.Uint32Var(&gen, "generation", 0, "the share generation to move the records to")
	af.add(cmd)
	return cmd
}
