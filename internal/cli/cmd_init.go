package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/internal/server/vault"
)

const keyWarning = `Write this key down and keep it somewhere safe, away from this device.
Nobody can recover it: not Coffer, not your storage provider, not anyone.
It is the only way to restore these backups on a new device (unless you
turn on password recovery: 'coffer enable'). Anyone who has it can read
your backups.`

func (a *app) initCommand() *cobra.Command {
	var passwordMode bool
	var keyFile string
	var pf passwordFlags
	cmd := &cobra.Command{
		Use:   "init --repo URL [--password] [--key-file FILE]",
		Short: "Set up backups: make a backup key and an empty repository",
		Long: fmt.Sprintf(`Init makes a fresh 256-bit backup key on this device, creates an empty
repository at --repo, and saves the key and the repository URL in this
device's state directory (--state).

By default Init shows the key once, as the 64-digit key. Write it down:
nobody can recover it, and it is the only way to restore on a new device.
--key-file FILE also writes it to FILE (which must not exist). Init never
takes a key: --key DIGITS, which gives an existing key to the other
commands, is refused here without being shown; to set a device up with an
existing repository and its key, run 'coffer join --repo URL'.

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
		Args: func(cmd *cobra.Command, rest []string) error {
			if a.given(cmd, "key") {
				// Never shown: it may be the key.
				return usagef("init: --key gives an existing 64-digit key, and init makes a new one (the value given is not shown). To set this device up with an existing repository and its key, run 'coffer join --repo URL' (the key from --key-file FILE, COFFER_KEY_FILE, COFFER_KEY or a prompt); to make a new repository, run 'coffer init --repo URL' without --key")
			}
			return args(cobra.NoArgs)(cmd, rest)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
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
			dev, err := a.device("init")
			if err != nil {
				return err
			}
			if passwordMode {
				return a.initWithPassword(cmd, dev, &pf, keyFile)
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
				// With --quiet the key and its warning are still shown:
				// they are shown only this once.
				d := res.Key.Digits()
				a.say("Created a Coffer repository at %s (id %s).", res.Location, res.RepositoryID)
				a.say("This device's state is in %s.\n", dev.StateDir())
				fmt.Fprintf(a.Stdout, "Your 64-digit backup key:\n\n    %s\n    %s\n\n", d[:39], d[40:])
				fmt.Fprintln(a.Stdout, keyWarning)
				if keyFile != "" && keyFileErr == nil {
					a.say("\nThe key was also written to %s (mode 0600): store that file away from this device.", keyFile)
				}
			}
			if keyFileErr != nil {
				return &opError{op: "init", err: fmt.Errorf("the repository was created, but writing the key file failed: %w", keyFileErr), hint: "Copy the key shown above by hand"}
			}
			return nil
		},
	}
	cmd.Flags().String("key", "", "not taken by init, which makes a new key: to use an existing repository and its key, run 'coffer join'")
	cmd.Flags().BoolVar(&passwordMode, "password", false, "password mode: also store the key in the vault under a password")
	cmd.Flags().StringVar(&keyFile, "key-file", "", "also write the 64-digit key to FILE (0600; FILE must not exist)")
	addVaultFlags(cmd)
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
func (a *app) initWithPassword(cmd *cobra.Command, dev *client.Device, pf *passwordFlags, keyFile string) error {
	if dev.Initialized() {
		return &opError{op: "init", err: fmt.Errorf("%w (state %s)", client.ErrAlreadyInitialized, dev.StateDir()), hint: "To turn password recovery on for this device, run 'coffer enable'; to set up another repository, use another --state directory"}
	}
	s, err := a.loadSettings("init", a.vaultSettings(cmd))
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
		w := a.out()
		fmt.Fprintf(w, "Created a Coffer repository at %s (id %s).\n", res.Location, res.RepositoryID)
		fmt.Fprintf(w, "This device's state is in %s.\n\n", dev.StateDir())
		fmt.Fprintf(w, "Password recovery is on: the backup key is stored in the vault (account %s, relay %s),\n", s.Account, s.Relay)
		fmt.Fprintf(w, "wrapped under a key only your password derives; the vault never sees the key or the password.\n")
		fmt.Fprintf(w, "It allows %s, then erases the key for good.\n\n", count(int64(res.Enrollment.GuessLimit), "wrong guess"))
		fmt.Fprintf(w, "On a new device: coffer restore --password --repo %s --to DIR\n", res.Repository)
		fmt.Fprintf(w, "(with COFFER_RELAY, COFFER_ACCOUNT, COFFER_TOKEN, COFFER_FLEET and COFFER_FLEET_ROOT set).\n")
		fmt.Fprintf(w, "'coffer password check' practises the password without spending a guess; 'coffer key show'\n")
		fmt.Fprintf(w, "reveals the 64-digit key, which restores the backups even if the vault erases its copy.\n")
		if keyFile != "" && keyFileErr == nil {
			fmt.Fprintf(w, "\nThe 64-digit key was also written to %s (mode 0600): store that file away from this device.\n", keyFile)
		}
	}
	if keyFileErr != nil {
		return &opError{op: "init", err: fmt.Errorf("the repository was created and password recovery is on, but writing the key file failed: %w", keyFileErr), hint: "'coffer key show' reveals the key"}
	}
	return nil
}
