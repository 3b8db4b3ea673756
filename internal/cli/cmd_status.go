package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/internal/protocol/pake"
)

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
	// NotMine: the vault's live record is not the one this device enrolled
	// (someone registered their own after destroying or replacing it);
	// unset when the device holds no key to tell.
	NotMine bool `json:"not_this_devices_record,omitempty"`
}

func (a *app) statusCommand() *cobra.Command {
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
			dev, derr := a.device("status")
			if derr != nil {
				return derr
			}
			var out statusOutput
			saved := deviceVault(dev)
			if dev.Initialized() {
				cfg, err := dev.Config()
				if err != nil {
					return fail("status", err)
				}
				out.Device = &deviceStatus{State: dev.StateDir(), KeyFingerprint: cfg.KeyFingerprint, LastGeneration: cfg.LastGeneration, PasswordCheck: dev.HasPasswordVerifier()}
				out.Recovery = cfg.Vault
				rs, err := a.repoStatus(cmd)
				if err != nil {
					return err
				}
				out.Repository = rs
			}
			s := a.vaultSettings(cmd)
			// A vault is named by a relay or an account, or by --fleet
			// (COFFER_FLEET alone does not name one).
			fleetFlag, _ := a.setting(cmd, "fleet", "")
			vflagsGiven := s.Relay != "" || s.Account != "" || fleetFlag != ""
			if saved != nil || vflagsGiven {
				s = s.Merge(saved)
				if s.Token == "" && !vflagsGiven && out.Device != nil {
					out.VaultNote = "no account token (--token or COFFER_TOKEN), so the vault was not asked"
				} else {
					st, err := client.VaultStatus(ctx, s)
					if err != nil {
						return fail("status", err)
					}
					out.Vault = &vaultStatus{Relay: s.Relay, Account: s.Account, Status: st, GuessesLeft: max(st.GuessLimit-st.GuessesUsed, 0)}
					if st.Registered && dev.Initialized() && out.Recovery != nil && !dev.RecordIsMine(s.Account, st) {
						out.Vault.NotMine = true
					}
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
	addVaultFlags(cmd)
	addKeyFlags(cmd)
	return cmd
}

func (a *app) repoStatus(cmd *cobra.Command) (*repoStatus, error) {
	ctx := cmd.Context()
	r, err := a.open(cmd, "status")
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
		case v.NotMine:
			fmt.Fprintf(w, "Vault:             WARNING: the vault holds a record for account %s that this device did not enrol (its key proof is not this key's): someone registered their own, after destroying or replacing this device's. Your password no longer recovers this backup key; run 'coffer enable' to store it again, and find out who did this\n", v.Account)
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
