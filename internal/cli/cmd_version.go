package cli

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
)

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print Coffer's version",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.json {
				return a.printJSON(map[string]any{
					"version":            version(),
					"go":                 runtime.Version(),
					"platform":           runtime.GOOS + "/" + runtime.GOARCH,
					"format":             1,
					"repository_version": client.FormatVersion,
				})
			}
			fmt.Fprintf(a.Stdout, "coffer %s (%s, %s/%s; backup format 1)\n", version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
