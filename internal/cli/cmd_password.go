package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
)

func (a *app) passwordCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "password",
		Short: "Change or check the password that recovers the backup key",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(a.passwordChangeCommand(), a.passwordCheckCommand())
	return cmd
}

func (a *app) passwordChangeCommand() *cobra.Command {
	var pf passwordFlags
	cmd := &cobra.Command{
		Use:   "change",
		Short: "Set a new password for the backup key in the vault",
		Long: fmt.Sprintf(`Change stores this device's backup key in the vault under a new password. The
device proves it holds the backup key, so no guess is spent and the vault's
guess count starts again. The old password stops working at once.

The new password is typed twice at a prompt (or given with --password-stdin
or COFFER_PASSWORD); it must be at least %d characters.

On a device that is not set up, give the 64-digit key (--key-file FILE or
COFFER_KEY): without the key (or the password, through 'coffer restore
--password'), the vault refuses to replace its record.`, client.MinPasswordLength),
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			dev, derr := a.device("password change")
			if derr != nil {
				return derr
			}
			key, err := a.keyForVault(cmd, "password change", dev)
			if err != nil {
				return err
			}
			if key != nil {
				defer key.Zero()
			}
			if dev.Initialized() && !dev.PasswordEnabled() {
				return &opError{op: "password change", err: client.ErrNoPassword}
			}
			s, err := a.loadSettings("password change", a.vaultSettings(cmd).Merge(deviceVault(dev)))
			if err != nil {
				return err
			}
			pw, err := a.readPassword("password change", &pf, "New password", true)
			if err != nil {
				return err
			}
			defer clear(pw)
			var e *client.Enrollment
			if dev.Initialized() {
				e, err = dev.ChangePassword(cmd.Context(), s, key, pw)
			} else {
				e, err = client.EnablePassword(cmd.Context(), s, key, pw)
			}
			if err != nil {
				return fail("password change", err)
			}
			if a.json {
				return a.printJSON(map[string]any{"changed": true, "account": s.Account, "epoch": e.Epoch, "guess_limit": e.GuessLimit})
			}
			a.say("Changed the password for account %s. The old one no longer works; the vault's guess count starts again (%s allowed).", s.Account, count(int64(e.GuessLimit), "wrong guess"))
			return nil
		},
	}
	addVaultFlags(cmd)
	pf.add(cmd)
	addKeyFlags(cmd)
	return cmd
}

func (a *app) passwordCheckCommand() *cobra.Command {
	var pf passwordFlags
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that you remember the password, spending no guess",
		Long: `Check tests a password against a verifier kept on this device (an Argon2id
hash made when the password was set). It does not ask the vault, so no
guess is spent, however often you check: use it to practise the password.
A wrong password exits with code 3.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			dev, derr := a.device("password check")
			if derr != nil {
				return derr
			}
			if !dev.Initialized() {
				return usagef("password check: this device has no Coffer set up (state directory %s); the check uses the verifier kept by the device that set the password", a.statePath)
			}
			if _, err := dev.VaultConfig(); err != nil {
				return fail("password check", err)
			}
			pw, err := a.readPassword("password check", &pf, "Password", false)
			if err != nil {
				return err
			}
			err = dev.CheckPassword(pw)
			clear(pw)
			if err != nil {
				return fail("password check", err)
			}
			if a.json {
				return a.printJSON(map[string]any{"match": true, "guess_spent": false})
			}
			a.say("That is the password. (Checked on this device only: no guess was spent in the vault.)")
			return nil
		},
	}
	pf.add(cmd)
	return cmd
}
