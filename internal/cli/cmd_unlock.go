package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
)

func (a *app) unlockCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "unlock [--force]",
		Short: "Remove the stale locks of backups or prunes that were killed",
		Long: `A backup holds a shared lock on the repository while it runs, and a prune or
repair an exclusive one; each names its owner (host, pid, process start
time). Unlock removes the stale ones: a lock whose owner was a Coffer
process on this machine that has exited (killed, or the machine
restarted), and a lock not refreshed for 30 minutes (a running Coffer
refreshes its lock every 5 minutes). Prune and backup already ignore such
locks; unlock clears them away.

A live lock is kept and named, and unlock then exits with code 1: another
Coffer is using the repository. --force removes every lock, live or not:
use it only when you know that no other Coffer process (on any machine) is
using the repository, since a prune that runs beside a backup it cannot
see may delete pieces that backup is about to reference.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := a.open(cmd, "unlock")
			if err != nil {
				return err
			}
			defer r.Close()
			s, err := r.Unlock(cmd.Context(), force)
			if err != nil {
				return fail("unlock", err)
			}
			var kept error
			if len(s.Kept) > 0 {
				kept = &opError{op: "unlock", err: fmt.Errorf("kept %s still in use: %s", count(int64(len(s.Kept)), "live lock"), lockOwners(s.Kept)),
					hint: "Another Coffer is using the repository: wait for it to finish. If you are sure none is (its machine is gone), run 'coffer unlock --force'"}
			}
			if a.json {
				if err := a.printJSON(s); err != nil {
					return err
				}
				return kept
			}
			if len(s.Removed) == 0 && len(s.Kept) == 0 {
				a.say("The repository has no locks.")
			}
			for _, l := range s.Removed {
				why := l.Reason
				if why == "" {
					why = "live; removed with --force"
				}
				a.say("Removed the %s lock of %s: %s.", l.Type, lockOwner(l), why)
			}
			return kept
		},
	}
	addKeyFlags(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "remove live locks too (only when no other Coffer uses the repository)")
	return cmd
}

// lockOwner names a lock's owner: "host (pid N), refreshed at …".
func lockOwner(l client.LockInfo) string {
	return fmt.Sprintf("%s (pid %d), last refreshed %s", l.Host, l.PID, when(l.Time))
}

func lockOwners(ls []client.LockInfo) string {
	s := ""
	for i, l := range ls {
		if i > 0 {
			s += "; "
		}
		s += "the " + l.Type + " lock of " + lockOwner(l)
	}
	return s
}
