package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (a *app) keyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Show this device's 64-digit backup key",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	show := &cobra.Command{
		Use:   "show",
		Short: "Reveal this device's 64-digit backup key",
		Long: `Show prints the device's 64-digit backup key. Anyone who sees it can read
every backup: make sure nobody is watching the screen, and keep the key
offline. It restores the backups even if the vault erased its copy after
too many wrong passwords, or password recovery is off.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			dev, derr := a.device("key show")
			if derr != nil {
				return derr
			}
			if !dev.Initialized() {
				return usagef("key show: this device has no Coffer set up (state directory %s)", a.statePath)
			}
			k, err := dev.Key()
			if err != nil {
				return fail("key show", err)
			}
			defer k.Zero()
			const warn = "Anyone who has this key can read every backup. Keep it offline, away from this device; it restores the backups even if the vault erased its copy."
			if a.json {
				return a.printJSON(map[string]any{"key": k.Digits(), "key_fingerprint": k.Fingerprint(), "warning": warn})
			}
			fmt.Fprintln(a.Stderr, "coffer: warning: the 64-digit backup key follows; make sure nobody else can see the screen.")
			d := k.Digits()
			fmt.Fprintf(a.Stdout, "Your 64-digit backup key:\n\n    %s\n    %s\n\n%s\n", d[:39], d[40:], warn)
			return nil
		},
	}
	cmd.AddCommand(show)
	return cmd
}
