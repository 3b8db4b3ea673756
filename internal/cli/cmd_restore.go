package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/internal/cli/progress"
)

func (a *app) restoreCommand() *cobra.Command {
	var to string
	var gen uint64
	var withPassword bool
	var pf passwordFlags
	cmd := &cobra.Command{
		Use:   "restore --to DIR [--backup N]",
		Short: "Restore a backup into a new directory",
		Long: `Restore writes backup N (default: the newest) into DIR, which must not exist
or be empty. Each backed-up path is restored as DIR/<its name>.

Every byte is authenticated before anything appears at DIR: a damaged,
tampered or mixed-up backup is refused with an integrity error (exit 5) and
DIR is left as it was.

On a new device, name the repository with --repo URL and give the key with
--key-file FILE or COFFER_KEY (or --key, which other users can see in ps),
or use --password: the backup key is recovered from the vault with the
password (typed at a prompt, or --password-stdin, or COFFER_PASSWORD), with
the vault named by --relay, --account, --fleet, --fleet-root and --token
(or COFFER_RELAY, COFFER_ACCOUNT, COFFER_FLEET, COFFER_FLEET_ROOT,
COFFER_TOKEN). Every wrong password is counted: a wrong one exits with code
3 and says how many guesses are left; after the last, the vault erases the
key (exit 4) and only the 64-digit key restores. After a successful
recovery, restore says how many wrong guesses were made since the previous
successful one, and when.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to == "" {
				return usagef("restore: name the directory to restore into with --to DIR")
			}
			if withPassword {
				if a.keyGiven(cmd) {
					return usagef("restore: give the key (--key, --key-file) or --password, not both")
				}
				return a.restoreWithPassword(cmd, &pf, to, gen)
			}
			r, err := a.open(cmd, "restore")
			if err != nil {
				return err
			}
			defer r.Close()
			bar := progress.Auto(a.Stderr, "restore", a.quiet)
			s, err := r.Restore(cmd.Context(), gen, to, client.RestoreOptions{Progress: bar})
			bar.Finish(err == nil)
			if err != nil {
				return fail("restore", err)
			}
			if a.json {
				return a.printJSON(s)
			}
			a.say("Restored backup %d (%s, %s) into %s in %s.", s.Generation.Number, count(s.Files, "file"), size(s.Bytes), s.Target, seconds(s.Duration))
			return nil
		},
	}
	addKeyFlags(cmd)
	cmd.Flags().StringVar(&to, "to", "", "directory to restore into (must not exist, or be empty)")
	cmd.Flags().Uint64Var(&gen, "backup", 0, "backup number to restore (default: the newest)")
	cmd.Flags().BoolVar(&withPassword, "password", false, "recover the backup key from the vault with the password")
	addVaultFlags(cmd)
	pf.add(cmd)
	return cmd
}

// restoreWithPassword is 'coffer restore --password'.
func (a *app) restoreWithPassword(cmd *cobra.Command, pf *passwordFlags, to string, gen uint64) error {
	ctx := cmd.Context()
	dev := client.NewDevice(a.statePath)
	if !dev.Initialized() && a.repo == "" {
		return usagef("restore: name the repository with --repo URL (or COFFER_REPO)")
	}
	s, err := a.loadSettings("restore", a.vaultSettings(cmd).Merge(deviceVault(dev)))
	if err != nil {
		return err
	}
	pw, err := a.readPassword("restore", pf, "Password", false)
	if err != nil {
		return err
	}
	key, sess, err := client.RecoverKey(ctx, s, pw)
	clear(pw)
	if err != nil {
		return recoverError("restore", err, s)
	}
	defer key.Zero()
	switch {
	case !a.json && !a.quiet:
		a.say("Recovered the backup key from the vault (account %s).", s.Account)
		for _, l := range sessionLines(sess) {
			a.say("%s", l)
		}
	case a.quiet && sess.FailedGuesses > 0:
		// Someone may be guessing the password: say so even when quiet.
		fmt.Fprintf(a.Stderr, "coffer: warning: %s\n", sessionLines(sess)[0])
	}
	r, err := a.openWithKey(ctx, "restore", key)
	if err != nil {
		return err
	}
	defer r.Close()
	bar := progress.Auto(a.Stderr, "restore", a.quiet)
	sum, err := r.Restore(ctx, gen, to, client.RestoreOptions{Progress: bar})
	bar.Finish(err == nil)
	if err != nil {
		return fail("restore", err)
	}
	if a.json {
		return a.printJSON(struct {
			*client.RestoreSummary
			Account  string          `json:"account"`
			Recovery *client.Session `json:"recovery"`
		}{sum, s.Account, sess})
	}
	a.say("Restored backup %d (%s, %s) into %s in %s.", sum.Generation.Number, count(sum.Files, "file"), size(sum.Bytes), sum.Target, seconds(sum.Duration))
	return nil
}

// recoverError adds what to do to a failed recovery.
func recoverError(op string, err error, s client.VaultSettings) error {
	if errors.Is(err, client.ErrVaultIntegrity) && strings.Contains(err.Error(), "key-stretching") && !s.InsecureDevKSF {
		return &opError{op: op, err: err, hint: "If this account was set up with --insecure-dev-ksf (a development fleet), give that flag or COFFER_DEV_KSF=1 here too; otherwise the vault is misbehaving (exit 5)"}
	}
	return fail(op, err)
}
