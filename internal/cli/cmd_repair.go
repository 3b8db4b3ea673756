package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
)

func (a *app) repairCommand() *cobra.Command {
	var paths []string
	var readData, noCompress bool
	cmd := &cobra.Command{
		Use:   "repair [--path DIR]... [--read-data]",
		Short: "Make every backup restorable again after pieces were lost or damaged",
		Long: `Repair heals the damage 'coffer check' finds, never editing a stored object
in place:

  1. it checks the repository (with --read-data, downloading every piece,
     so that damaged pieces are found, not only missing ones);
  2. it uploads again every lost piece it finds in the files under the
     --path directories (the backed-up paths whose files are still on
     disk): a backup whose lost pieces all came back needs nothing more;
  3. every backup that still uses lost data (or whose manifest is
     damaged) is written again as a new backup, numbered after the newest,
     without the files whose data is lost, and only then is the damaged
     one removed; the files left out are listed;
  4. it deletes the objects no backup uses any more.

It refuses while a backup or prune runs ('coffer unlock' removes the lock
of one that was killed). Exit 0 when the repository is whole again.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := a.open(cmd, "repair")
			if err != nil {
				return err
			}
			defer r.Close()
			s, err := r.Repair(cmd.Context(), client.RepairOptions{Paths: paths, ReadData: readData, NoCompress: noCompress})
			if err != nil {
				if errors.Is(err, client.ErrLocked) {
					return fail("repair", err)
				}
				if s == nil {
					return fail("repair", err)
				}
				if a.json {
					if perr := a.printJSON(s); perr != nil {
						return perr
					}
				}
				return &opError{op: "repair", err: err, hint: "What was done before the failure is listed; run 'coffer repair' again"}
			}
			if a.json {
				return a.printJSON(s)
			}
			if s.Check != nil && s.Check.OK() && s.Reuploaded == 0 && len(s.Repaired) == 0 {
				a.say("Nothing to repair: %s intact.", count(int64(s.Check.Generations), "backup"))
			} else if s.Check != nil {
				a.say("Found %s and %s.", count(int64(len(s.Check.Damaged)), "missing or damaged piece"), count(int64(len(s.Check.BadManifests)), "damaged manifest"))
			}
			if s.Reuploaded > 0 {
				a.say("Uploaded again %s from the files on disk.", count(s.Reuploaded, "lost piece"))
			}
			for _, rb := range s.Repaired {
				what := fmt.Sprintf("backup %d", rb.To)
				if rb.To == 0 {
					what = "nothing (no intact file was left)"
				}
				trunc := ""
				if rb.Truncated {
					trunc = "; its manifest was damaged part-way, so the entries after the damage are lost too"
				}
				a.say("Replaced backup %d by %s, without %s whose data is lost%s:", rb.From, what, count(int64(len(rb.Dropped)), "entry"), trunc)
				for _, p := range rb.Dropped {
					a.say("  %s", p)
				}
			}
			if s.DeletedObjects > 0 {
				a.say("Deleted %s (%s) that no backup uses.", count(s.DeletedObjects, "object"), size(s.DeletedBytes))
			}
			a.say("The repository is whole (%s).", seconds(s.Duration))
			return nil
		},
	}
	addKeyFlags(cmd)
	cmd.Flags().StringArrayVar(&paths, "path", nil, "a backed-up path whose files are still on disk, to upload lost pieces again from (repeatable)")
	cmd.Flags().BoolVar(&readData, "read-data", false, "download and authenticate every piece first, so that damaged pieces are repaired too, not only missing ones")
	cmd.Flags().BoolVar(&noCompress, "no-compress", false, "store re-uploaded pieces without zstd compression")
	return cmd
}
