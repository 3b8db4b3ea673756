package cli

import "github.com/spf13/cobra"

func (a *app) relayCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Run the relay; make account tokens for development",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(a.relayServeCommand(), a.relayTokenCommand(), a.relayKeygenCommand())
	return cmd
}
