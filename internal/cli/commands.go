package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cofferhq/coffer/internal/server/vault"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/internal/cli/progress"
)

const keyWarning = `Write this key down and keep it somewhere safe, away from this device.
Nobody can recover it: not Coffer, not your storage provider, not anyone.
It is the only way to restore these backups on a new device (unless you
turn on password recovery: 'coffer enable'). Anyone who has it can read
your backups.`

func (a *app) initCommand() *cobra.Command {
	var keyMode, passwordMode bool
	var keyFile string
	var vf vaultFlags
	var pf passwordFlags
	cmd := &cobra.Command{
		Use:   "init --repo URL [--key | --password] [--key-file FILE]",
		Short: "Set up backups: make a backup key and an empty repository",
		Long: fmt.Sprintf(`Init makes a fresh 256-bit backup key on this device, creates an empty
repository at --repo, and saves the key and the repository URL in this
device's state directory (--state).

--key (the default): 64-digit-key mode. Init shows the key once, as the
64-digit key. Write it down: nobody can recover it, and it is the only way
to restore on a new device. --key-file FILE also writes it to FILE (which
must not exist).

--password: password mode. Init also stores the backup key in the vault
fleet under a password, wrapped so that the vault never sees it, so a new
device restores with the password alone ('coffer restore --password').
The vault is named by --relay, --account, --fleet, --fleet-root and the
account token by --token (or COFFER_RELAY, COFFER_ACCOUNT, COFFER_FLEET,
COFFER_FLEET_ROOT, COFFER_TOKEN). The password is typed twice at a prompt,
or given with --password-stdin or COFFER_PASSWORD; it must be at least %d
characters. The vault allows %d wrong guesses (by default), then erases the
key for good: 'coffer key show' reveals the 64-digit key, which still
restores the backups then.`, client.MinPasswordLength, vault.DefaultGuessLimit),
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if passwordMode && cmd.Flags().Changed("key") && keyMode {
				return usagef("init: choose --key or --password, not both")
			}
			if !passwordMode && !keyMode {
				return usagef("init: choose a mode: --key (the 64-digit key) or --password (password recovery through the vault)")
			}
			if a.repo == "" {
				return usagef("init: name the new repository with --repo URL (a directory, file:///dir or s3://…), or set COFFER_REPO")
			}
			if keyFile != "" {
				if _, err := os.Lstat(keyFile); err == nil {
					return fail("init", fmt.Errorf("key file %s already exists; refusing to overwrite it", keyFile))
				}
				if fi, err := os.Stat(filepath.Dir(keyFile)); err != nil || !fi.IsDir() {
					return fail("init", fmt.Errorf("cannot write the key file %s: directory %s does not exist", keyFile, filepath.Dir(keyFile)))
				}
			}
			dev := client.NewDevice(a.statePath)
			if passwordMode {
				return a.initWithPassword(cmd, dev, &vf, &pf, keyFile)
			}
			res, err := dev.Init(cmd.Context(), a.repo)
			if err != nil {
				if errors.Is(err, client.ErrAlreadyInitialized) {
					return &opError{op: "init", err: err, hint: "To set up another repository, use another --state directory"}
				}
				return fail("init", err)
			}
			defer res.Key.Zero()
			keyFileErr := writeInitKeyFile(keyFile, res)
			if a.json {
				out := map[string]any{
					"repository":      res.Repository,
					"repository_id":   res.RepositoryID,
					"state":           dev.StateDir(),
					"key":             res.Key.Digits(),
					"key_fingerprint": res.Key.Fingerprint(),
					"warning":         strings.ReplaceAll(keyWarning, "\n", " "),
				}
				if keyFile != "" && keyFileErr == nil {
					out["key_file"] = keyFile
				}
				if err := a.printJSON(out); err != nil {
					return err
				}
			} else {
				d := res.Key.Digits()
				fmt.Fprintf(a.Stdout, "Created a Coffer repository at %s (id %s).\n", res.Location, res.RepositoryID)
				fmt.Fprintf(a.Stdout, "This device's state is in %s.\n\n", dev.StateDir())
				fmt.Fprintf(a.Stdout, "Your 64-digit backup key:\n\n    %s\n    %s\n\n", d[:39], d[40:])
				fmt.Fprintln(a.Stdout, keyWarning)
				if keyFile != "" && keyFileErr == nil {
					fmt.Fprintf(a.Stdout, "\nThe key was also written to %s (mode 0600): store that file away from this device.\n", keyFile)
				}
			}
			if keyFileErr != nil {
				return &opError{op: "init", err: fmt.Errorf("the repository was created, but writing the key file failed: %w", keyFileErr), hint: "Copy the key shown above by hand"}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&keyMode, "key", true, "64-digit-key mode: the key is shown once and you keep it (the default)")
	cmd.Flags().BoolVar(&passwordMode, "password", false, "password mode: also store the key in the vault under a password")
	cmd.Flags().StringVar(&keyFile, "key-file", "", "also write the 64-digit key to FILE (0600; FILE must not exist)")
	vf.add(cmd)
	pf.add(cmd)
	return cmd
}

// writeInitKeyFile writes the new key to keyFile, if one was named.
func writeInitKeyFile(keyFile string, res *client.InitResult) error {
	if keyFile == "" {
		return nil
	}
	return client.WriteKeyFile(keyFile, res.Key,
		"Coffer 64-digit backup key. Keep it secret and safe: it opens every backup in",
		"the repository "+res.Repository+" (id "+res.RepositoryID+").",
		"Restore on a new device with: coffer restore --repo URL --key-file THIS_FILE --to DIR")
}

// initWithPassword is 'coffer init --password'.
func (a *app) initWithPassword(cmd *cobra.Command, dev *client.Device, vf *vaultFlags, pf *passwordFlags, keyFile string) error {
	if dev.Initialized() {
		return &opError{op: "init", err: fmt.Errorf("%w (state %s)", client.ErrAlreadyInitialized, dev.StateDir()), hint: "To turn password recovery on for this device, run 'coffer enable'; to set up another repository, use another --state directory"}
	}
	s, err := a.loadSettings("init", a.vaultSettings(vf, nil))
	if err != nil {
		return err
	}
	pw, err := a.readPassword("init", pf, "Password for recovering the backup key", true)
	if err != nil {
		return err
	}
	defer clear(pw)
	res, err := dev.InitWithPassword(cmd.Context(), a.repo, pw, s)
	if res == nil {
		if errors.Is(err, client.ErrAlreadyInitialized) {
			return &opError{op: "init", err: err, hint: "To set up another repository, use another --state directory"}
		}
		return fail("init", err)
	}
	defer res.Key.Zero()
	keyFileErr := writeInitKeyFile(keyFile, res.InitResult)
	if err != nil {
		// The repository and the key exist; the vault does not hold the key.
		h := "Run 'coffer enable' to store the key in the vault; until then only the 64-digit key ('coffer key show') restores on a new device"
		if eh := hint(err); eh != "" {
			h = eh + ". Then r" + h[1:]
		}
		return &opError{op: "init", err: fmt.Errorf("the repository %s was created and this device holds its backup key, but password recovery is not on: %w", res.Location, err), hint: h}
	}
	if a.json {
		out := map[string]any{
			"repository":      res.Repository,
			"repository_id":   res.RepositoryID,
			"state":           dev.StateDir(),
			"key_fingerprint": res.Key.Fingerprint(),
			"vault": map[string]any{
				"relay": s.Relay, "account": s.Account, "epoch": res.Enrollment.Epoch, "guess_limit": res.Enrollment.GuessLimit,
			},
		}
		if keyFile != "" && keyFileErr == nil {
			out["key_file"] = keyFile
		}
		if err := a.printJSON(out); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(a.Stdout, "Created a Coffer repository at %s (id %s).\n", res.Location, res.RepositoryID)
		fmt.Fprintf(a.Stdout, "This device's state is in %s.\n\n", dev.StateDir())
		fmt.Fprintf(a.Stdout, "Password recovery is on: the backup key is stored in the vault (account %s, relay %s),\n", s.Account, s.Relay)
		fmt.Fprintf(a.Stdout, "wrapped under a key only your password derives; the vault never sees the key or the password.\n")
		fmt.Fprintf(a.Stdout, "It allows %s, then erases the key for good.\n\n", count(int64(res.Enrollment.GuessLimit), "wrong guess"))
		fmt.Fprintf(a.Stdout, "On a new device: coffer restore --password --repo %s --to DIR\n", res.Repository)
		fmt.Fprintf(a.Stdout, "(with COFFER_RELAY, COFFER_ACCOUNT, COFFER_TOKEN, COFFER_FLEET and COFFER_FLEET_ROOT set).\n")
		fmt.Fprintf(a.Stdout, "'coffer password check' practises the password without spending a guess; 'coffer key show'\n")
		fmt.Fprintf(a.Stdout, "reveals the 64-digit key, which restores the backups even if the vault erases its copy.\n")
		if keyFile != "" && keyFileErr == nil {
			fmt.Fprintf(a.Stdout, "\nThe 64-digit key was also written to %s (mode 0600): store that file away from this device.\n", keyFile)
		}
	}
	if keyFileErr != nil {
		return &opError{op: "init", err: fmt.Errorf("the repository was created and password recovery is on, but writing the key file failed: %w", keyFileErr), hint: "'coffer key show' reveals the key"}
	}
	return nil
}

func (a *app) backupCommand() *cobra.Command {
	var kf keyFlags
	var noCompress bool
	cmd := &cobra.Command{
		Use:   "backup PATH...",
		Short: "Back files and directories up as a new backup",
		Long: `Backup reads the files and directories named and stores them as a new backup
(a generation) in the repository. Files unchanged since the last backup are
not read again, and pieces already stored are not uploaded again. The new
backup becomes visible only once it is complete: an interrupted backup never
harms the ones before it.`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, paths []string) error {
			r, err := a.open(cmd.Context(), "backup", &kf)
			if err != nil {
				return err
			}
			defer r.Close()
			bar := progress.Auto(a.Stderr, "backup", a.quiet)
			s, err := r.Backup(cmd.Context(), paths, client.BackupOptions{
				NoCompress: noCompress,
				Progress:   bar,
				Version:    version(),
				Warn: func(path string, err error) {
					fmt.Fprintf(a.Stderr, "coffer: warning: skipped %s: %v\n", path, err)
				},
			})
			bar.Finish(err == nil)
			if err != nil {
				return fail("backup", err)
			}
			if a.json {
				return a.printJSON(s)
			}
			g := s.Generation
			a.say("Backup %d of %s: %s, %s, %s.", g.Number, strings.Join(g.Paths, ", "), count(g.Files, "file"), count(g.Dirs, "directory"), size(g.Bytes))
			a.say("Uploaded %s (%s read, %s stored); reused %s; %s unchanged and not read; %s.",
				count(s.NewPieces, "new piece"), size(s.NewBytes), size(s.StoredBytes), count(s.ReusedPieces, "piece"), count(s.UnchangedFiles, "file"), seconds(s.Duration))
			if s.Skipped > 0 {
				a.say("Skipped %s (see the warnings above).", count(s.Skipped, "special or unreadable entry"))
			}
			return nil
		},
	}
	kf.add(cmd)
	cmd.Flags().BoolVar(&noCompress, "no-compress", false, "store pieces without zstd compression")
	return cmd
}

func (a *app) listCommand() *cobra.Command {
	var kf keyFlags
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the backups in the repository",
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := a.open(cmd.Context(), "list", &kf)
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
	kf.add(cmd)
	return cmd
}

func (a *app) restoreCommand() *cobra.Command {
	var kf keyFlags
	var to string
	var gen uint64
	var withPassword bool
	var vf vaultFlags
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
				if kf.digits != "" || kf.file != "" {
					return usagef("restore: give the key (--key, --key-file) or --password, not both")
				}
				return a.restoreWithPassword(cmd, &vf, &pf, to, gen)
			}
			r, err := a.open(cmd.Context(), "restore", &kf)
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
	kf.add(cmd)
	cmd.Flags().StringVar(&to, "to", "", "directory to restore into (must not exist, or be empty)")
	cmd.Flags().Uint64Var(&gen, "backup", 0, "backup number to restore (default: the newest)")
	cmd.Flags().BoolVar(&withPassword, "password", false, "recover the backup key from the vault with the password")
	vf.add(cmd)
	pf.add(cmd)
	return cmd
}

func (a *app) verifyCommand() *cobra.Command {
	var kf keyFlags
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Read and authenticate every backup, writing nothing",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := a.open(cmd.Context(), "verify", &kf)
			if err != nil {
				return err
			}
			defer r.Close()
			bar := progress.Auto(a.Stderr, "verify", a.quiet)
			s, err := r.Verify(cmd.Context(), bar)
			bar.Finish(err == nil)
			if err != nil {
				return fail("verify", err)
			}
			if a.json {
				return a.printJSON(s)
			}
			a.say("Verified %s: %s, %s authenticated; all intact (%s).", count(int64(s.Generations), "backup"), count(s.Pieces, "piece"), size(s.Bytes), seconds(s.Duration))
			if s.Unreferenced > 0 {
				a.say("%s belong to no backup (left by an interrupted backup or prune); 'coffer prune' removes them.", count(s.Unreferenced, "stored object"))
			}
			return nil
		},
	}
	kf.add(cmd)
	return cmd
}

func (a *app) pruneCommand() *cobra.Command {
	var kf keyFlags
	var keep int
	cmd := &cobra.Command{
		Use:   "prune [--keep N]",
		Short: "Remove all but the newest N backups",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if keep < 1 {
				return usagef("prune: --keep must be at least 1, not %d", keep)
			}
			r, err := a.open(cmd.Context(), "prune", &kf)
			if err != nil {
				return err
			}
			defer r.Close()
			s, err := r.Prune(cmd.Context(), keep)
			if err != nil {
				return fail("prune", err)
			}
			if a.json {
				return a.printJSON(s)
			}
			a.say("Kept backups %s; removed %s; deleted %s (%s) in %s.", numbers(s.Kept), numbers(s.Removed), count(s.DeletedPieces, "piece"), size(s.DeletedBytes), seconds(s.Duration))
			if s.SweepDeferred {
				a.say("A backup was running, so unused pieces were left for the next prune.")
			}
			return nil
		},
	}
	kf.add(cmd)
	cmd.Flags().IntVar(&keep, "keep", 3, "number of newest backups to keep")
	return cmd
}

// count formats n things: "1 file", "2 files", "3 directories".
func count(n int64, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	switch {
	case strings.HasSuffix(thing, "y"):
		thing = strings.TrimSuffix(thing, "y") + "ies"
	case strings.HasSuffix(thing, "s"):
		thing += "es"
	default:
		thing += "s"
	}
	return fmt.Sprintf("%d %s", n, thing)
}

func numbers(ns []uint64) string {
	if len(ns) == 0 {
		return "none"
	}
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ", ")
}

// size formats a byte count for people (binary units).
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func seconds(d client.Duration) string {
	return fmt.Sprintf("%.2f s", time.Duration(d).Seconds())
}

// fileMode is used by the demo's comparison.
func fileMode(fi fs.FileInfo) fs.FileMode { return fi.Mode() & (fs.ModePerm | fs.ModeType) }
