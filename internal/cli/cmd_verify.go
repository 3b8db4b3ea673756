package cli

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/internal/cli/progress"
)

func (a *app) verifyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Read and authenticate every backup, writing nothing",
		Long: `Verify downloads and authenticates every backup and every piece it uses,
writing nothing (as 'coffer check --read-data'). It does not stop at the
first damage: it names every missing or damaged piece, with the backups and
files it affects, and every damaged backup manifest (damaged and
bad_manifests in --json), then exits with code 5. 'coffer restore
--salvage' restores the intact files of a damaged backup; 'coffer repair'
makes the repository whole again.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := a.open(cmd, "verify")
			if err != nil {
				return err
			}
			defer r.Close()
			bar := progress.Auto(a.Stderr, "verify", a.quiet)
			s, err := r.Verify(cmd.Context(), bar)
			bar.Finish(err == nil)
			if err != nil && (s == nil || !errors.Is(err, client.ErrIntegrity)) {
				return fail("verify", err)
			}
			if a.json {
				return a.printPartialJSON(s, damageError("verify", err))
			}
			if err == nil {
				a.say("Verified %s: %s, %s authenticated; all intact (%s).", count(int64(s.Generations), "backup"), count(s.Pieces, "piece"), size(s.Bytes), seconds(s.Duration))
			} else {
				a.say("Verified %s: %s, %s authenticated (%s).", count(int64(s.Generations), "backup"), count(s.Pieces, "piece"), size(s.Bytes), seconds(s.Duration))
				a.printDamage(s.Damaged, s.BadManifests)
			}
			if s.Unreferenced > 0 {
				a.say("%s belong to no backup (left by an interrupted backup or prune); 'coffer prune' removes them.", count(s.Unreferenced, "stored object"))
			}
			return damageError("verify", err)
		},
	}
	addKeyFlags(cmd)
	return cmd
}
