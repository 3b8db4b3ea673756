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

// addVaultFlags adds the flags that say how to reach the vault fleet;
// vaultSettings reads them.
func addVaultFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.String("relay", "", "the relay's URL (env COFFER_RELAY; default: this device's)")
	f.String("account", "", "the account id (env COFFER_ACCOUNT; default: this device's)")
	f.String("token", "", "the short-lived account token from the app's backend (env COFFER_TOKEN; never saved)")
	f.String("vault-token", "", "the short-lived account token for the vault, from the app's backend; it travels sealed, the relay never sees it (env COFFER_VAULT_TOKEN; never saved)")
	f.String("fleet", "", "the signed fleet bundle file (env COFFER_FLEET; default: this device's)")
	f.String("fleet-root", "", "the pinned fleet root public key, coffer-fleet-root:… (env COFFER_FLEET_ROOT; default: this device's)")
	f.Bool("insecure-dev-ksf", false, "cheap key stretching for development fleets, tests and demos only (env COFFER_DEV_KSF=1)")
}

// vaultSettings resolves the vault settings given with the flags of
// addVaultFlags or in the environment (settings.go). What the device saved
// is the caller's to fill in, with Merge(deviceVault(dev)); loadSettings
// checks them.
func (a *app) vaultSettings(cmd *cobra.Command) client.VaultSettings {
	str := func(flag, env string) string {
		v, _ := a.setting(cmd, flag, env)
		return v
	}
	devKSF, _ := a.boolSetting(cmd, "insecure-dev-ksf", "COFFER_DEV_KSF")
	return client.VaultSettings{
		Relay:          str("relay", "COFFER_RELAY"),
		Account:        str("account", "COFFER_ACCOUNT"),
		Token:          strings.TrimSpace(str("token", "COFFER_TOKEN")),
		VaultToken:     strings.TrimSpace(str("vault-token", "COFFER_VAULT_TOKEN")),
		Fleet:          str("fleet", "COFFER_FLEET"),
		FleetRoot:      str("fleet-root", "COFFER_FLEET_ROOT"),
		InsecureDevKSF: devKSF,
	}
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
