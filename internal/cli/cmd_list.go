package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
)

func (a *app) listCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the backups in the repository",
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := a.open(cmd, "list")
			if err != nil {
				return err
			}
			defer r.Close()
			gens, err := r.Generations(cmd.Context())
			if err != nil {
				return fail("list", err)
			}
			if a.json {
				if gens == nil {
					gens = []client.Generation{}
				}
				return a.printJSON(map[string]any{
					"repository":    r.Location(),
					"repository_id": r.ID(),
					"generations":   gens,
				})
			}
			if len(gens) == 0 {
				a.say("No backups yet in %s: run 'coffer backup PATH...'.", r.Location())
				return nil
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "BACKUP\tTIME\tHOST\tFILES\tSIZE\tPATHS")
			for _, g := range gens {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", g.Number, g.Time.Local().Format("2006-01-02 15:04:05"), g.Host, g.Files, size(g.Bytes), strings.Join(g.Paths, " "))
			}
			return fail("list", tw.Flush())
		},
	}
	addKeyFlags(cmd)
	return cmd
}
