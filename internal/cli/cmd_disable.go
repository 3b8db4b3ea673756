package cli

import (
	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
)

func (a *app) disableCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "disable",
		Short: "Turn password recovery off: the vault erases the backup key",
		Long: `Disable asks the vault to erase its record of the backup key, proving that
this device holds the key, and forgets the local password verifier. From
then on only the 64-digit key restores the backups on a new device
('coffer key show' reveals it). 'coffer enable' turns recovery on again.

On a device that is not set up, give the 64-digit key (--key-file FILE or
COFFER_KEY): without the key the vault refuses.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			dev, derr := a.device("disable")
			if derr != nil {
				return derr
			}
			key, err := a.keyForVault(cmd, "disable", dev)
			if err != nil {
				return err
			}
			if key != nil {
				defer key.Zero()
			}
			s, err := a.loadSettings("disable", a.vaultSettings(cmd).Merge(deviceVault(dev)))
			if err != nil {
				return err
			}
			if dev.Initialized() {
				err = dev.DisablePassword(cmd.Context(), s, key)
			} else {
				err = client.DisablePassword(cmd.Context(), s, key)
			}
			if err != nil {
				return fail("disable", err)
			}
			if a.json {
				return a.printJSON(map[string]any{"disabled": true, "account": s.Account})
			}
			a.say("Password recovery is off for account %s: the vault erased its record of the backup key.", s.Account)
			a.say("On a new device only the 64-digit key restores the backups now ('coffer key show' reveals it). 'coffer enable' turns recovery on again.")
			return nil
		},
	}
	addVaultFlags(cmd)
	addKeyFlags(cmd)
	return cmd
}
