package cli

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/internal/cli/progress"
)

func (a *app) checkCommand() *cobra.Command {
	var readData bool
	var subset string
	cmd := &cobra.Command{
		Use:   "check [--read-data | --read-data-subset N%|n/t]",
		Short: "Check the repository for missing or damaged data, writing nothing",
		Long: `Check checks the repository, writing nothing. By default it is fast and
downloads no data: every backup's manifest must decrypt and parse, and
every piece a backup references must be stored (one listing of the
storage). --read-data also downloads and authenticates every piece (what
'coffer verify' does; on S3 that costs a full download). --read-data-subset
reads only part of the data: "n/t" reads group n of t, chosen from the
piece ids, so that "1/7" … "7/7" on seven days read everything once; "N%"
reads a random N percent, different on each run.

Check names every missing or damaged piece with the backups and files it
breaks, and every damaged manifest (damaged and bad_manifests in --json),
and then exits with code 5. 'coffer repair' heals what it finds.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if readData && subset != "" {
				return usagef("check: give --read-data or --read-data-subset, not both")
			}
			if subset != "" {
				if err := client.ValidateSubset(subset); err != nil {
					return usagef("check: --read-data-subset: %v", err)
				}
			}
			r, err := a.open(cmd, "check")
			if err != nil {
				return err
			}
			defer r.Close()
			bar := progress.Auto(a.Stderr, "check", a.quiet || (!readData && subset == ""))
			s, err := r.Check(cmd.Context(), client.CheckOptions{ReadData: readData, ReadDataSubset: subset, Progress: bar})
			bar.Finish(err == nil)
			if err != nil && (s == nil || !errors.Is(err, client.ErrIntegrity)) {
				return fail("check", err)
			}
			if a.json {
				return a.printPartialJSON(s, damageError("check", err))
			}
			what := "every manifest decrypts and every piece referenced is stored; no data read"
			if s.ReadPieces > 0 || readData || subset != "" {
				what = "read and authenticated " + count(s.ReadPieces, "piece") + " (" + size(s.ReadBytes) + ")"
			}
			state := "all intact"
			if err != nil {
				state = "DAMAGE FOUND"
			}
			a.say("Checked %s using %s: %s; %s (%s).", count(int64(s.Generations), "backup"), count(s.Pieces, "piece"), what, state, seconds(s.Duration))
			if err != nil {
				a.printDamage(s.Damaged, s.BadManifests)
			}
			if s.Unreferenced > 0 {
				a.say("%s belong to no backup; 'coffer prune' or 'coffer repair' removes them.", count(s.Unreferenced, "stored object"))
			}
			return damageError("check", err)
		},
	}
	addKeyFlags(cmd)
	cmd.Flags().BoolVar(&readData, "read-data", false, "also download and authenticate every piece")
	cmd.Flags().StringVar(&subset, "read-data-subset", "", `download and authenticate part of the pieces: "n/t" (group n of t) or "N%"`)
	return cmd
}
