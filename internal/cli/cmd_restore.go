package cli

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/internal/cli/progress"
)

func (a *app) restoreCommand() *cobra.Command {
	var to string
	var gen backupNumber
	var withPassword, salvage, join bool
	var pf passwordFlags
	cmd := &cobra.Command{
		Use:   "restore --to DIR [--backup N|latest] [--salvage]",
		Short: "Restore a backup into a new directory",
		Long: `Restore writes backup N (default: the newest) into DIR, which must not exist
or be empty. Each backed-up path is restored as DIR/<its name>.

Every byte is authenticated before anything appears at DIR: a damaged,
tampered or mixed-up backup is refused with an integrity error (exit 5) and
DIR is left as it was. --salvage restores every intact file of a damaged
backup instead, names each damaged file it left out (damaged in --json),
and exits with code 8 if it left any out.

Restore removes the staging directories (.coffer-restore-*, holding
decrypted data) that an earlier restore killed part-way left behind, and
says so.

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
successful one, and when. --join also sets this device up to go on backing
up to the repository (as 'coffer join'), with the key just recovered: no
second recovery.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to == "" {
				return usagef("restore: name the directory to restore into with --to DIR")
			}
			if withPassword {
				if a.keyGiven(cmd) {
					return usagef("restore: give the key (--key, --key-file) or --password, not both")
				}
				return a.restoreWithPassword(cmd, &pf, to, uint64(gen), salvage, join)
			}
			if join {
				return usagef("restore: --join goes with --password (with the 64-digit key, run 'coffer join --repo URL' to set this device up)")
			}
			r, err := a.open(cmd, "restore")
			if err != nil {
				return err
			}
			defer r.Close()
			return a.restore(cmd, r, uint64(gen), to, salvage, nil)
		},
	}
	addKeyFlags(cmd)
	cmd.Flags().StringVar(&to, "to", "", "directory to restore into (must not exist, or be empty)")
	cmd.Flags().Var(&gen, "backup", "backup number to restore, or latest (default: the newest)")
	cmd.Flags().BoolVar(&salvage, "salvage", false, "restore every intact file of a damaged backup, leaving out and naming the damaged ones (exit 8)")
	cmd.Flags().BoolVar(&join, "join", false, "with --password: also set this device up to go on backing up to the repository")
	cmd.Flags().BoolVar(&withPassword, "password", false, "recover the backup key from the vault with the password")
	addVaultFlags(cmd)
	pf.add(cmd)
	return cmd
}

// restoreWithPassword is 'coffer restore --password'.
func (a *app) restoreWithPassword(cmd *cobra.Command, pf *passwordFlags, to string, gen uint64, salvage, join bool) error {
	ctx := cmd.Context()
	dev := client.NewDevice(a.statePath)
	if err := dev.StateError(); err != nil {
		return fail("restore", err)
	}
	if join && dev.Initialized() {
		return &opError{op: "restore", err: fmt.Errorf("--join: %w (state %s)", client.ErrAlreadyInitialized, dev.StateDir()), hint: "This device is set up already: restore without --join, or use another --state directory"}
	}
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
	if err != nil {
		clear(pw)
		return recoverError("restore", err, s)
	}
	defer key.Zero()
	a.saySession(s, sess)
	var r *client.Repo
	if join {
		r, err = dev.JoinRecovered(ctx, a.repo, key, s, sess, pw)
		clear(pw)
		if err != nil {
			return fail("restore", err)
		}
		a.say("This device is now set up with the repository %s: 'coffer backup PATH...' goes on backing up to it.", r.Location())
	} else {
		clear(pw)
		if r, err = a.openWithKey(ctx, "restore", key); err != nil {
			return err
		}
	}
	defer r.Close()
	extra := func(sum *client.RestoreSummary) any {
		return struct {
			*client.RestoreSummary
			Account  string          `json:"account"`
			Recovery *client.Session `json:"recovery"`
		}{sum, s.Account, sess}
	}
	return a.restore(cmd, r, gen, to, salvage, extra)
}

// restore restores backup gen of r into to and reports it; extra, if
// set, makes the JSON output from the summary.
func (a *app) restore(cmd *cobra.Command, r *client.Repo, gen uint64, to string, salvage bool, extra func(*client.RestoreSummary) any) error {
	bar := progress.Auto(a.Stderr, "restore", a.quiet)
	sum, err := r.Restore(cmd.Context(), gen, to, client.RestoreOptions{Progress: bar, Salvage: salvage})
	bar.Finish(err == nil)
	if sum != nil {
		for _, p := range sum.CleanedStaging {
			a.sayErr("coffer: removed %s, the staging directory of an earlier restore that was interrupted (it held decrypted data).", p)
		}
	}
	var partial error
	if err != nil {
		if !salvage || sum == nil || !errors.Is(err, client.ErrIntegrity) {
			return fail("restore", err)
		}
		partial = &partialError{code: ExitSalvaged, err: &opError{op: "restore", err: fmt.Errorf("salvaged backup %d into %s: %s restored, %s damaged and left out: %w", sum.Generation.Number, sum.Target, count(sum.Files, "file"), count(int64(len(sum.Damaged)), "entry"), err),
			hint: "Every file restored is intact (authenticated). 'coffer verify' names the damaged pieces; an older backup (--backup N) may still hold the files left out (exit 8)"}}
	}
	if a.json {
		var v any = sum
		if extra != nil {
			v = extra(sum)
		}
		return a.printPartialJSON(v, partial)
	}
	if partial == nil {
		a.say("Restored backup %d (%s, %s) into %s in %s.", sum.Generation.Number, count(sum.Files, "file"), size(sum.Bytes), sum.Target, seconds(sum.Duration))
	} else {
		a.say("Restored the intact files of backup %d (%s, %s) into %s in %s.", sum.Generation.Number, count(sum.Files, "file"), size(sum.Bytes), sum.Target, seconds(sum.Duration))
		fmt.Fprintf(a.Stderr, "coffer: damaged, not restored (%d):\n", len(sum.Damaged))
		for _, d := range sum.Damaged {
			fmt.Fprintf(a.Stderr, "  %s: %s\n", d.Path, d.Reason)
		}
	}
	return partial
}

// saySession reports a successful recovery: the account, and the wrong
// guesses since the previous one (on stderr even when quiet, if any).
func (a *app) saySession(s client.VaultSettings, sess *client.Session) {
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
}

// recoverError adds what to do to a failed recovery.
func recoverError(op string, err error, s client.VaultSettings) error {
	if errors.Is(err, client.ErrVaultIntegrity) && strings.Contains(err.Error(), "key-stretching") && !s.InsecureDevKSF {
		return &opError{op: op, err: err, hint: "If this account was set up with --insecure-dev-ksf (a development fleet), give that flag or COFFER_DEV_KSF=1 here too; otherwise the vault is misbehaving (exit 5)"}
	}
	return fail(op, err)
}

// backupNumber is the value of --backup: a backup number, or latest (0:
// the newest).
type backupNumber uint64

func (b *backupNumber) String() string {
	if *b == 0 {
		return "latest"
	}
	return strconv.FormatUint(uint64(*b), 10)
}

func (b *backupNumber) Set(s string) error {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "latest", "newest", "last":
		*b = 0
		return nil
	}
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return fmt.Errorf("want a backup number (see 'coffer list') or latest, not %q", s)
	}
	*b = backupNumber(n)
	return nil
}

func (b *backupNumber) Type() string { return "N|latest" }
