package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
)

// How a device command reaches the vault fleet: the vault settings flags.

// devKSFWarning is printed whenever the insecure development key
// stretching is on.
const devKSFWarning = "coffer: warning: --insecure-dev-ksf (COFFER_DEV_KSF) is on: the password is stretched so cheaply that anyone who steals the vault's records can search for it offline in moments. Use it only with a development fleet ('coffer dev', tests, the demo), never for a real account."

// vaultFlags say how to reach the vault fleet.
type vaultFlags struct {
	relay, account, token, vaultToken, fleet, fleetRoot string
	devKSF                                              bool
}

func (v *vaultFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&v.relay, "relay", "", "the relay's URL (env COFFER_RELAY; default: this device's)")
	f.StringVar(&v.account, "account", "", "the account id (env COFFER_ACCOUNT; default: this device's)")
	f.StringVar(&v.token, "token", "", "the short-lived account token for the relay, from the app's backend (env COFFER_TOKEN; never saved)")
	f.StringVar(&v.vaultToken, "vault-token", "", "the short-lived account token for the vault, from the app's backend; it travels sealed, the relay never sees it (env COFFER_VAULT_TOKEN; never saved)")
	f.StringVar(&v.fleet, "fleet", "", "the signed fleet bundle file (env COFFER_FLEET; default: this device's)")
	f.StringVar(&v.fleetRoot, "fleet-root", "", "the pinned fleet root public key, coffer-fleet-root:… (env COFFER_FLEET_ROOT; default: this device's)")
	f.BoolVar(&v.devKSF, "insecure-dev-ksf", false, "cheap key stretching for development fleets, tests and demos only (env COFFER_DEV_KSF=1)")
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
		VaultToken:     strings.TrimSpace(pick(v.vaultToken, "COFFER_VAULT_TOKEN")),
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
