package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
)

func (a *app) joinCommand() *cobra.Command {
	var withPassword bool
	var pf passwordFlags
	cmd := &cobra.Command{
		Use:   "join --repo URL [--password]",
		Short: "Set this device up to go on backing up to an existing repository",
		Long: `Join sets up a new device (a new phone, a reinstalled machine) with an
existing repository, so that 'coffer backup' goes on where the old device
left off: later backups reuse the pieces already stored. Nothing in the
repository changes.

The backup key is the repository's 64-digit key: --key-file FILE (or
COFFER_KEY_FILE), COFFER_KEY, or typed at a prompt without echo when
standard input is a terminal (--key DIGITS works too, but other users can
see it in ps). Or --password: the key is recovered from the vault with the
password, as 'coffer restore --password' does (a wrong password is counted
and says how many guesses are left), and password recovery stays on for
this device ('coffer password check', 'coffer status').

'coffer restore --password --join' restores and joins in one recovery.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			dev, err := a.device("join")
			if err != nil {
				return err
			}
			if dev.Initialized() {
				cfg, _ := dev.Config()
				repo := ""
				if cfg != nil {
					repo = ", repository " + cfg.Repository
				}
				return &opError{op: "join", err: fmt.Errorf("%w (state %s%s)", client.ErrAlreadyInitialized, dev.StateDir(), repo), hint: "This device backs up already; to set it up for another repository, use another --state directory"}
			}
			if a.repo == "" {
				return usagef("join: name the existing repository with --repo URL (or COFFER_REPO)")
			}
			var r *client.Repo
			var sess *client.Session
			var account string
			if withPassword {
				if a.keyGiven(cmd) {
					return usagef("join: give the key (--key, --key-file) or --password, not both")
				}
				s, err := a.loadSettings("join", a.vaultSettings(cmd))
				if err != nil {
					return err
				}
				pw, err := a.readPassword("join", &pf, "Password", false)
				if err != nil {
					return err
				}
				r, sess, err = dev.JoinWithPassword(ctx, a.repo, pw, s)
				clear(pw)
				if err != nil {
					if sess == nil {
						return recoverError("join", err, s)
					}
					return fail("join", err)
				}
				account = s.Account
				a.saySession(s, sess)
			} else {
				key, err := a.keyOrPrompt(cmd, "join")
				if err != nil {
					return fail("join", err)
				}
				if key == nil {
					return usagef("join: no key: give the 64-digit key with --key-file FILE, COFFER_KEY_FILE or COFFER_KEY, type it at the prompt (standard input a terminal), or use --password")
				}
				defer key.Zero()
				r, err = dev.Join(ctx, a.repo, key)
				if err != nil {
					if errors.Is(err, client.ErrNoRepository) {
						return &opError{op: "join", err: err, hint: "Check the repository URL; to start a new repository, run 'coffer init --repo URL'"}
					}
					return fail("join", err)
				}
			}
			defer r.Close()
			gens, err := r.Generations(ctx)
			if err != nil {
				return fail("join", err)
			}
			var newest uint64
			if len(gens) > 0 {
				newest = gens[len(gens)-1].Number
			}
			if a.json {
				out := map[string]any{
					"repository":    r.URL(),
					"repository_id": r.ID(),
					"state":         dev.StateDir(),
					"backups":       len(gens),
					"newest":        newest,
				}
				if sess != nil {
					out["account"] = account
					out["recovery"] = sess
				}
				return a.printJSON(out)
			}
			a.say("This device is now set up with the repository at %s (id %s; %s, newest %d).", r.Location(), r.ID(), count(int64(len(gens)), "backup"), newest)
			a.say("Its state is in %s. 'coffer backup PATH...' goes on backing up to it; pieces already stored are not uploaded again.", dev.StateDir())
			return nil
		},
	}
	addKeyFlags(cmd)
	cmd.Flags().BoolVar(&withPassword, "password", false, "recover the backup key from the vault with the password")
	addVaultFlags(cmd)
	pf.add(cmd)
	return cmd
}
