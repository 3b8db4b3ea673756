package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/internal/cli/progress"
)

func (a *app) backupCommand() *cobra.Command {
	var noCompress bool
	cmd := &cobra.Command{
		Use:   "backup PATH...",
		Short: "Back files and directories up as a new backup",
		Long: `Backup reads the files and directories named and stores them as a new backup
(a generation) in the repository. Files unchanged since the last backup are
not read again, and pieces already stored are not uploaded again. The new
backup becomes visible only once it is complete: an interrupted backup never
harms the ones before it.`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, paths []string) error {
			r, err := a.open(cmd, "backup")
			if err != nil {
				return err
			}
			defer r.Close()
			bar := progress.Auto(a.Stderr, "backup", a.quiet)
			s, err := r.Backup(cmd.Context(), paths, client.BackupOptions{
				NoCompress: noCompress,
				Progress:   bar,
				Version:    version(),
				Warn: func(path string, err error) {
					fmt.Fprintf(a.Stderr, "coffer: warning: skipped %s: %v\n", path, err)
				},
			})
			bar.Finish(err == nil)
			if err != nil {
				return fail("backup", err)
			}
			if a.json {
				return a.printJSON(s)
			}
			g := s.Generation
			a.say("Backup %d of %s: %s, %s, %s.", g.Number, strings.Join(g.Paths, ", "), count(g.Files, "file"), count(g.Dirs, "directory"), size(g.Bytes))
			a.say("Uploaded %s (%s read, %s stored); reused %s; %s unchanged and not read; %s.",
				count(s.NewPieces, "new piece"), size(s.NewBytes), size(s.StoredBytes), count(s.ReusedPieces, "piece"), count(s.UnchangedFiles, "file"), seconds(s.Duration))
			if s.Skipped > 0 {
				a.say("Skipped %s (see the warnings above).", count(s.Skipped, "special or unreadable entry"))
			}
			return nil
		},
	}
	addKeyFlags(cmd)
	cmd.Flags().BoolVar(&noCompress, "no-compress", false, "store pieces without zstd compression")
	return cmd
}
