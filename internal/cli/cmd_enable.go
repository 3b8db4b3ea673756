package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
)

func (a *app) enableCommand() *cobra.Command {
	var pf passwordFlags
	cmd := &cobra.Command{
		Use:   "enable",
		Short: "Turn password recovery on: store the backup key in the vault under a password",
		Long: fmt.Sprintf(`Enable stores this device's backup key in the vault fleet under a new
password, so that a new device can restore with the password alone
('coffer restore --password'). The key is wrapped under a key that only the
password derives (OPAQUE): the vault never sees the key or the password. It
allows a limited number of wrong guesses (10 by default) and then erases
the key for good.

The vault is named by --relay, --account, --fleet and --fleet-root (or
COFFER_RELAY, COFFER_ACCOUNT, COFFER_FLEET, COFFER_FLEET_ROOT), and the
account token by --token or COFFER_TOKEN. The settings (not the token) are
saved in the device's state.

The password is typed twice at a prompt (or given with --password-stdin or
COFFER_PASSWORD); it must be at least %d characters. The device proves it
holds the backup key, so enable also works after 'coffer disable', and after
the vault erased the key.`, client.MinPasswordLength),
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			dev, derr := a.device("enable")
			if derr != nil {
				return derr
			}
			key, err := a.keyForVault(cmd, "enable", dev)
			if err != nil {
				return err
			}
			if key != nil {
				defer key.Zero()
			}
			s, err := a.loadSettings("enable", a.vaultSettings(cmd).Merge(deviceVault(dev)))
			if err != nil {
				return err
			}
			pw, err := a.readPassword("enable", &pf, "New password", true)
			if err != nil {
				return err
			}
			defer clear(pw)
			var e *client.Enrollment
			if dev.Initialized() {
				e, err = dev.EnablePassword(cmd.Context(), s, key, pw)
			} else {
				e, err = client.EnablePassword(cmd.Context(), s, key, pw)
			}
			if err != nil {
				return fail("enable", err)
			}
			if a.json {
				return a.printJSON(map[string]any{"enabled": true, "account": s.Account, "relay": s.Relay, "epoch": e.Epoch, "guess_limit": e.GuessLimit})
			}
			a.say("Password recovery is on for account %s: the backup key is in the vault, wrapped under your password.", s.Account)
			a.say("The vault allows %s, then erases the key for good. On a new device: coffer restore --password --repo URL --to DIR.", count(int64(e.GuessLimit), "wrong guess"))
			return nil
		},
	}
	addVaultFlags(cmd)
	pf.add(cmd)
	addKeyFlags(cmd)
	return cmd
}
