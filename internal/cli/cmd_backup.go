package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/internal/cli/progress"
	"github.com/cofferhq/coffer/internal/device/repository"
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
harms the ones before it.

An entry that cannot be read (a file or directory it has no permission
for, or a read error part-way through a file) is skipped with a warning
and the rest is backed up: the backup completes and restores, but exits
with code 7 ("completed with files skipped") and lists the skipped entries
and why (skipped_entries in --json). Sockets and device files, which
Coffer does not store, and the repository and the state directory when
they lie inside a backed-up path, are skipped with a warning too but do
not change the exit code (they are listed, with kind "special" or
"excluded").`,
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
					if !a.quiet {
						fmt.Fprintf(a.Stderr, "coffer: warning: %s: %v\n", path, err)
					}
				},
			})
			bar.Finish(err == nil)
			if err != nil {
				return fail("backup", err)
			}
			skipped := skippedError(s)
			if a.json {
				return a.printPartialJSON(s, skipped)
			}
			g := s.Generation
			a.say("Backup %d of %s: %s, %s, %s.", g.Number, strings.Join(g.Paths, ", "), count(g.Files, "file"), count(g.Dirs, "directory"), size(g.Bytes))
			a.say("Uploaded %s (%s read, %s stored); reused %s; %s unchanged and not read; %s.",
				count(s.NewPieces, "new piece"), size(s.NewBytes), size(s.StoredBytes), count(s.ReusedPieces, "piece"), count(s.UnchangedFiles, "file"), seconds(s.Duration))
			if s.Skipped > 0 && skipped == nil {
				a.say("Skipped %s that Coffer does not store (see the warnings above).", count(s.Skipped, "special or excluded entry"))
			}
			if skipped != nil {
				// Said even with --quiet: the backup is not a full copy.
				fmt.Fprintln(a.Stderr, "coffer: not backed up, because they could not be read:")
				for _, e := range s.SkippedEntries {
					if e.Kind == repository.SkipError {
						fmt.Fprintf(a.Stderr, "  %s: %s\n", e.Path, e.Reason)
					}
				}
			}
			return skipped
		},
	}
	addKeyFlags(cmd)
	cmd.Flags().BoolVar(&noCompress, "no-compress", false, "store pieces without zstd compression")
	return cmd
}

// skippedError is the outcome of a backup that completed with entries it
// could not read left out (ExitSkipped), or nil.
func skippedError(s *client.BackupSummary) error {
	n := s.SkippedErrors()
	if n == 0 {
		return nil
	}
	return &partialError{code: ExitSkipped, err: &opError{op: "backup", err: fmt.Errorf("backup %d completed, but %s could not be read and %s not in it", s.Generation.Number, count(int64(n), "entry"), map[bool]string{true: "is", false: "are"}[n == 1]),
		hint: "The rest is backed up and restorable. Fix the permissions or the disk and back up again; 'skipped_entries' in --json lists them (exit 7)"}}
}
