package cli

import "github.com/spf13/cobra"

func (a *app) pruneCommand() *cobra.Command {
	var keep int
	cmd := &cobra.Command{
		Use:   "prune [--keep N]",
		Short: "Remove all but the newest N backups",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if keep < 1 {
				return usagef("prune: --keep must be at least 1, not %d", keep)
			}
			r, err := a.open(cmd, "prune")
			if err != nil {
				return err
			}
			defer r.Close()
			s, err := r.Prune(cmd.Context(), keep)
			if err != nil {
				return fail("prune", err)
			}
			if a.json {
				return a.printJSON(s)
			}
			a.say("Kept backups %s; removed %s; deleted %s (%s) in %s.", numbers(s.Kept), numbers(s.Removed), count(s.DeletedPieces, "piece"), size(s.DeletedBytes), seconds(s.Duration))
			if s.DeletedPacks > 0 || s.RepackedPacks > 0 {
				a.say("Packs of small files: deleted %s; repacked %s (%s of pieces still used, copied into new packs).", count(s.DeletedPacks, "pack"), count(s.RepackedPacks, "pack"), size(s.RepackedBytes))
			}
			if s.PackSweepSkipped != "" {
				a.say("Packs were left as they are: %s.", s.PackSweepSkipped)
			}
			if s.SweepDeferred {
				by := "a backup"
				if len(s.DeferredBy) > 0 {
					by = lockOwners(s.DeferredBy)
				}
				a.say("Unused pieces were left for the next prune, because a backup may still reference them: %s. If that backup was killed, 'coffer unlock' removes its lock.", by)
			}
			return nil
		},
	}
	addKeyFlags(cmd)
	cmd.Flags().IntVar(&keep, "keep", 3, "number of newest backups to keep")
	return cmd
}
