package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/internal/cli/progress"
	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/protocol/pake"
)

// devKSFWarning is printed whenever the insecure development key
// stretching is on.
const devKSFWarning = "coffer: warning: --insecure-dev-ksf (COFFER_DEV_KSF) is on: the password is stretched so cheaply that anyone who steals the vault's records can search for it offline in moments. Use it only with a development fleet ('coffer dev', tests, the demo), never for a real account."

// vaultFlags say how to reach the vault fleet.
type vaultFlags struct {
	relay, account, token, fleet, fleetRoot string
	devKSF                                  bool
}

func (v *vaultFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&v.relay, "relay", "", "the relay's URL (env COFFER_RELAY; default: this device's)")
	f.StringVar(&v.account, "account", "", "the account id (env COFFER_ACCOUNT; default: this device's)")
	f.StringVar(&v.token, "token", "", "the short-lived account token from the app's backend (env COFFER_TOKEN; never saved)")
	f.StringVar(&v.fleet, "fleet", "", "the signed fleet bundle file (env COFFER_FLEET; default: this device's)")
	f.StringVar(&v.fleetRoot, "fleet-root", "", "the pinned fleet root public key, coffer-fleet-root:… (env COFFER_FLEET_ROOT; default: this device's)")
	f.BoolVar(&v.devKSF, "insecure-dev-ksf", false, "cheap key stretching for development fleets, tests and demos only (env COFFER_DEV_KSF=1)")
}

// truthy reports whether an environment value means "on".
func truthy(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// vaultSettings resolves the vault settings: flags, then the environment,
// then what the device saved (saved may be nil). loadSettings checks them.
func (a *app) vaultSettings(v *vaultFlags, saved *client.SavedVault) client.VaultSettings {
	pick := func(flag, env string) string {
		if flag != "" {
			return flag
		}
		return a.Getenv(env)
	}
	s := client.VaultSettings{
		Relay:          pick(v.relay, "COFFER_RELAY"),
		Account:        pick(v.account, "COFFER_ACCOUNT"),
		Token:          strings.TrimSpace(pick(v.token, "COFFER_TOKEN")),
		Fleet:          pick(v.fleet, "COFFER_FLEET"),
		FleetRoot:      pick(v.fleetRoot, "COFFER_FLEET_ROOT"),
		InsecureDevKSF: v.devKSF || truthy(a.Getenv("COFFER_DEV_KSF")),
	}
	return s.Merge(saved)
}

// warnDevKSF warns, before a password is stretched, that the insecure
// development key stretching is on.
func (a *app) warnDevKSF(s client.VaultSettings) {
	if s.InsecureDevKSF {
		fmt.Fprintln(a.Stderr, devKSFWarning)
	}
}

// deviceVault returns the device's saved vault settings, if it is set up
// and has any.
func deviceVault(dev *client.Device) *client.SavedVault {
	if !dev.Initialized() {
		return nil
	}
	v, _ := dev.VaultConfig()
	return v
}

// loadSettings checks the settings and reads and verifies the fleet
// bundle, failing early, before a password is asked for, if they cannot
// work. The loaded settings it returns carry the bundle: pass them on, and
// nothing reads it again.
func (a *app) loadSettings(op string, s client.VaultSettings) (client.VaultSettings, error) {
	s, err := s.Load()
	if err != nil {
		return s, fail(op, err)
	}
	if op != "disable" {
		a.warnDevKSF(s)
	}
	return s, nil
}

// passwordFlags are the ways to give a password.
type passwordFlags struct {
	stdin bool
}

func (p *passwordFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&p.stdin, "password-stdin", false, "read the password from the first line of standard input (for scripts; or set COFFER_PASSWORD)")
}

// readPassword gets a password: the first line of stdin (--password-stdin),
// COFFER_PASSWORD, or a prompt without echo when stdin is a terminal. A new
// password (confirm) is checked for length and typed twice at a prompt.
func (a *app) readPassword(op string, p *passwordFlags, prompt string, confirm bool) ([]byte, error) {
	var pw []byte
	switch {
	case p.stdin:
		line, err := bufio.NewReader(a.Stdin).ReadString('\n')
		if err != nil && line == "" {
			return nil, usagef("%s: --password-stdin: no password on standard input", op)
		}
		pw = []byte(strings.TrimRight(line, "\r\n"))
	case a.Getenv("COFFER_PASSWORD") != "":
		pw = []byte(a.Getenv("COFFER_PASSWORD"))
	default:
		f, ok := a.Stdin.(*os.File)
		if !ok || !term.IsTerminal(int(f.Fd())) {
			return nil, usagef("%s: no password: type it at a terminal, or give it with --password-stdin (first line of standard input) or the COFFER_PASSWORD environment variable", op)
		}
		fmt.Fprintf(a.Stderr, "%s: ", prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.Stderr)
		if err != nil {
			return nil, fail(op, fmt.Errorf("reading the password: %w", err))
		}
		pw = b
		if confirm {
			if err := client.ValidatePassword(pw); err != nil {
				return nil, fail(op, err)
			}
			fmt.Fprint(a.Stderr, "Type it again: ")
			again, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(a.Stderr)
			if err != nil {
				return nil, fail(op, fmt.Errorf("reading the password: %w", err))
			}
			same := bytes.Equal(pw, again)
			clear(again)
			if !same {
				clear(pw)
				return nil, usagef("%s: the two passwords differ; nothing was changed", op)
			}
		}
	}
	if len(pw) == 0 {
		return nil, usagef("%s: the password is empty", op)
	}
	if confirm {
		if err := client.ValidatePassword(pw); err != nil {
			clear(pw)
			return nil, fail(op, err)
		}
	}
	return pw, nil
}

// when formats a time for people.
func when(t time.Time) string {
	return t.Local().Format("2006-01-02 15:04:05 MST")
}

func whens(ts []time.Time) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = when(t)
	}
	return strings.Join(s, ", ")
}

// sessionLines describes a successful recovery: the wrong guesses since
// the previous success, and when that was.
func sessionLines(s *client.Session) []string {
	var out []string
	switch s.FailedGuesses {
	case 0:
		out = append(out, "No wrong guesses since the last successful recovery.")
	default:
		line := count(int64(s.FailedGuesses), "wrong guess") + " since the last successful recovery"
		if len(s.FailedTimes) > 0 {
			line += " (" + whens(s.FailedTimes) + ")"
		}
		out = append(out, line+". If that was not you, someone is trying to guess your password: change it ('coffer password change').")
	}
	if s.PreviousSuccess.IsZero() {
		out = append(out, "This is the first successful recovery since the password was set.")
	} else {
		out = append(out, "The previous successful recovery was at "+when(s.PreviousSuccess)+".")
	}
	return out
}

// recoverError adds what to do to a failed recovery.
func recoverError(op string, err error, s client.VaultSettings) error {
	if errors.Is(err, client.ErrVaultIntegrity) && strings.Contains(err.Error(), "key-stretching") && !s.InsecureDevKSF {
		return &opError{op: op, err: err, hint: "If this account was set up with --insecure-dev-ksf (a development fleet), give that flag or COFFER_DEV_KSF=1 here too; otherwise the vault is misbehaving (exit 5)"}
	}
	return fail(op, err)
}

// restoreWithPassword is 'coffer restore --password'.
func (a *app) restoreWithPassword(cmd *cobra.Command, vf *vaultFlags, pf *passwordFlags, to string, gen uint64) error {
	ctx := cmd.Context()
	dev := client.NewDevice(a.statePath)
	if !dev.Initialized() && a.repo == "" {
		return usagef("restore: name the repository with --repo URL (or COFFER_REPO)")
	}
	s, err := a.loadSettings("restore", a.vaultSettings(vf, deviceVault(dev)))
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
	var r *client.Repo
	if dev.Initialized() {
		r, err = dev.Open(ctx, client.OpenOptions{Repository: a.repo, Key: key})
	} else {
		r, err = client.Open(ctx, a.repo, key)
	}
	if err != nil {
		return fail("restore", err)
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

// keyForVault returns the key to prove to the vault: given with
// --key/--key-file/COFFER_KEY, else nil (the device's own). On a device
// that is not set up a key must be given.
func (a *app) keyForVault(op string, dev *client.Device, kf *keyFlags) (*backupkey.Key, error) {
	key, err := a.key(kf)
	if err != nil {
		return nil, fail(op, err)
	}
	if key == nil && !dev.Initialized() {
		return nil, usagef("%s: this device has no Coffer set up (state directory %s), so it holds no backup key; run it on a device that holds the key, or give the 64-digit key with --key-file FILE or COFFER_KEY", op, a.statePath)
	}
	return key, nil
}

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
	var vf vaultFlags
	var pf passwordFlags
	var kf keyFlags
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
			dev := client.NewDevice(a.statePath)
			key, err := a.keyForVault("password change", dev, &kf)
			if err != nil {
				return err
			}
			if key != nil {
				defer key.Zero()
			}
			if dev.Initialized() && !dev.PasswordEnabled() {
				return &opError{op: "password change", err: client.ErrNoPassword}
			}
			s, err := a.loadSettings("password change", a.vaultSettings(&vf, deviceVault(dev)))
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
	vf.add(cmd)
	pf.add(cmd)
	kf.add(cmd)
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
			dev := client.NewDevice(a.statePath)
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

func (a *app) enableCommand() *cobra.Command {
	var vf vaultFlags
	var pf passwordFlags
	var kf keyFlags
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
			dev := client.NewDevice(a.statePath)
			key, err := a.keyForVault("enable", dev, &kf)
			if err != nil {
				return err
			}
			if key != nil {
				defer key.Zero()
			}
			s, err := a.loadSettings("enable", a.vaultSettings(&vf, deviceVault(dev)))
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
	vf.add(cmd)
	pf.add(cmd)
	kf.add(cmd)
	return cmd
}

func (a *app) disableCommand() *cobra.Command {
	var vf vaultFlags
	var kf keyFlags
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
			dev := client.NewDevice(a.statePath)
			key, err := a.keyForVault("disable", dev, &kf)
			if err != nil {
				return err
			}
			if key != nil {
				defer key.Zero()
			}
			s, err := a.loadSettings("disable", a.vaultSettings(&vf, deviceVault(dev)))
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
	vf.add(cmd)
	kf.add(cmd)
	return cmd
}

// statusOutput is what 'coffer status --json' prints.
type statusOutput struct {
	Device     *deviceStatus      `json:"device,omitempty"`
	Repository *repoStatus        `json:"repository,omitempty"`
	Vault      *vaultStatus       `json:"vault,omitempty"`
	Recovery   *client.SavedVault `json:"password_recovery,omitempty"`
	VaultNote  string             `json:"vault_not_asked,omitempty"`
}

type deviceStatus struct {
	State          string `json:"state"`
	KeyFingerprint string `json:"key_fingerprint"`
	LastGeneration uint64 `json:"last_generation_seen"`
	PasswordCheck  bool   `json:"local_password_verifier"`
}

type repoStatus struct {
	URL        string    `json:"url"`
	ID         string    `json:"id"`
	Location   string    `json:"location"`
	Backups    int       `json:"backups"`
	Newest     uint64    `json:"newest,omitempty"`
	NewestTime time.Time `json:"newest_time,omitzero"`
}

type vaultStatus struct {
	Relay   string `json:"relay"`
	Account string `json:"account"`
	*client.Status
	GuessesLeft int `json:"guesses_left"`
}

func (a *app) statusCommand() *cobra.Command {
	var vf vaultFlags
	var kf keyFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this device's repository and what the vault holds (spends no guess)",
		Long: `Status shows this device's repository (its backups) and, if password
recovery is set up, what the vault holds for the account: whether a key is
stored, turned off or destroyed, how many of the allowed wrong guesses have
been used, when the last successful recovery was, and when the wrong
guesses since then were made. Asking spends no guess.

On a device that is not set up, give the vault settings (COFFER_RELAY,
COFFER_ACCOUNT, COFFER_TOKEN, COFFER_FLEET, COFFER_FLEET_ROOT) to ask the
vault about an account.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			dev := client.NewDevice(a.statePath)
			var out statusOutput
			saved := deviceVault(dev)
			if dev.Initialized() {
				cfg, err := dev.Config()
				if err != nil {
					return fail("status", err)
				}
				out.Device = &deviceStatus{State: dev.StateDir(), KeyFingerprint: cfg.KeyFingerprint, LastGeneration: cfg.LastGeneration, PasswordCheck: dev.HasPasswordVerifier()}
				out.Recovery = cfg.Vault
				rs, err := a.repoStatus(ctx, &kf)
				if err != nil {
					return err
				}
				out.Repository = rs
			}
			vflagsGiven := vf.relay != "" || vf.account != "" || vf.fleet != "" || a.Getenv("COFFER_RELAY") != "" || a.Getenv("COFFER_ACCOUNT") != ""
			if saved != nil || vflagsGiven {
				s := a.vaultSettings(&vf, saved)
				if s.Token == "" && !vflagsGiven && out.Device != nil {
					out.VaultNote = "no account token (--token or COFFER_TOKEN), so the vault was not asked"
				} else {
					st, err := client.VaultStatus(ctx, s)
					if err != nil {
						return fail("status", err)
					}
					out.Vault = &vaultStatus{Relay: s.Relay, Account: s.Account, Status: st, GuessesLeft: max(st.GuessLimit-st.GuessesUsed, 0)}
				}
			}
			if out.Device == nil && out.Vault == nil {
				return usagef("status: this device has no Coffer set up (state directory %s) and no vault was named: run 'coffer init', or give COFFER_RELAY, COFFER_ACCOUNT, COFFER_TOKEN, COFFER_FLEET and COFFER_FLEET_ROOT to ask the vault", a.statePath)
			}
			if a.json {
				return a.printJSON(out)
			}
			a.printStatus(&out)
			return nil
		},
	}
	vf.add(cmd)
	kf.add(cmd)
	return cmd
}

func (a *app) repoStatus(ctx context.Context, kf *keyFlags) (*repoStatus, error) {
	r, err := a.open(ctx, "status", kf)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	gens, err := r.Generations(ctx)
	if err != nil {
		return nil, fail("status", err)
	}
	rs := &repoStatus{URL: r.URL(), ID: r.ID(), Location: r.Location(), Backups: len(gens)}
	if len(gens) > 0 {
		g := gens[len(gens)-1]
		rs.Newest, rs.NewestTime = g.Number, g.Time
	}
	return rs, nil
}

func (a *app) printStatus(out *statusOutput) {
	w := a.Stdout
	if d := out.Device; d != nil {
		fmt.Fprintf(w, "Device state:      %s\n", d.State)
		fmt.Fprintf(w, "Backup key:        fingerprint %s ('coffer key show' reveals the 64-digit key)\n", d.KeyFingerprint)
	}
	if r := out.Repository; r != nil {
		line := fmt.Sprintf("%s (id %s): %s", r.Location, r.ID, count(int64(r.Backups), "backup"))
		if r.Backups > 0 {
			line += fmt.Sprintf(", the newest %d at %s", r.Newest, when(r.NewestTime))
		}
		fmt.Fprintf(w, "Repository:        %s\n", line)
	}
	if out.Device != nil {
		switch v := out.Recovery; {
		case v == nil:
			fmt.Fprintln(w, "Password recovery: not set up on this device ('coffer enable' turns it on); only the 64-digit key restores on a new device")
		case v.Enabled:
			fmt.Fprintf(w, "Password recovery: on (account %s, relay %s)\n", v.Account, v.Relay)
		default:
			fmt.Fprintf(w, "Password recovery: turned off on this device (account %s); 'coffer enable' turns it on again\n", v.Account)
		}
	}
	if out.VaultNote != "" {
		fmt.Fprintf(w, "Vault:             %s\n", out.VaultNote)
	}
	if v := out.Vault; v != nil {
		st := v.Status
		switch {
		case st.Destroyed:
			fmt.Fprintf(w, "Vault:             DESTROYED: the vault erased the key of account %s after too many wrong passwords; only the 64-digit key restores the backups\n", v.Account)
		case st.Disabled:
			fmt.Fprintf(w, "Vault:             turned off: no key is stored for account %s\n", v.Account)
		case !st.Registered:
			fmt.Fprintf(w, "Vault:             no key is stored for account %s\n", v.Account)
		default:
			fmt.Fprintf(w, "Vault:             key stored for account %s; %d of %d wrong guesses used (%d left)\n", v.Account, st.GuessesUsed, st.GuessLimit, v.GuessesLeft)
			if st.KSF != "" {
				note := ""
				if st.KSF == pake.TestKSF.String() {
					note = " (insecure development profile: --insecure-dev-ksf)"
				}
				fmt.Fprintf(w, "Key stretching:    %s%s\n", st.KSF, note)
			}
		}
		if !st.LastSuccess.IsZero() {
			fmt.Fprintf(w, "Last recovery:     %s\n", when(st.LastSuccess))
		}
		if len(st.FailedTimes) > 0 {
			fmt.Fprintf(w, "Wrong guesses:     %s\n", whens(st.FailedTimes))
		}
	}
}

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
			dev := client.NewDevice(a.statePath)
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
