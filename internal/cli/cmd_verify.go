package cli

import (
	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/cli/progress"
)

func (a *app) verifyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Read and authenticate every backup, writing nothing",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := a.open(cmd, "verify")
			if err != nil {
				return err
			}
			defer r.Close()
			bar := progress.Auto(a.Stderr, "verify", a.quiet)
			s, err := r.Verify(cmd.Context(), bar)
			bar.Finish(err == nil)
			if err != nil {
				return fail("verify", err)
			}
			if a.json {
				return a.printJSON(s)
			}
			a.say("Verified %s: %s, %s authenticated; all intact (%s).", count(int64(s.Generations), "backup"), count(s.Pieces, "piece"), size(s.Bytes), seconds(s.Duration))
			if s.Unreferenced > 0 {
				a.say("%s belong to no backup (left by an interrupted backup or prune); 'coffer prune' removes them.", count(s.Unreferenced, "stored object"))
			}
			return nil
		},
	}
	addKeyFlags(cmd)
	return cmd
}
