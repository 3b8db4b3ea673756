// Package softhsmtest gives tests a private SoftHSM2 token store: a
// softhsm2.conf and a token directory under t.TempDir(), SOFTHSM2_CONF set
// for the test, and tokens initialized with softhsm2-util.
//
// When SoftHSM2 is missing the test is skipped with the install command, or
// fails when CI=true, so CI proves the PKCS#11 path (.ci/install-softhsm.sh
// installs it).
package softhsmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// PINs of the tokens Setup makes.
const (
	PIN   = "1234"
	SOPIN = "12345678"
)

// DefaultModule is where Debian's softhsm2 package installs SoftHSM2.
const DefaultModule = "/usr/lib/softhsm/libsofthsm2.so"

// Module returns the SoftHSM2 module path: $COFFER_PKCS11_MODULE or
// DefaultModule.
func Module() string {
	if m := os.Getenv("COFFER_PKCS11_MODULE"); m != "" {
		return m
	}
	return DefaultModule
}

// Setup makes a fresh SoftHSM2 store with one token per label (user PIN
// PIN), points SOFTHSM2_CONF at it for the rest of the test, and returns the
// module path. SoftHSM2 reads SOFTHSM2_CONF when the module is initialized,
// so every pkcs11.Token of the previous test must be closed (the module is
// finalized with the last one) and tests using Setup must not run in
// parallel.
func Setup(t testing.TB, labels ...string) string {
	t.Helper()
	module := Module()
	util, err := exec.LookPath("softhsm2-util")
	_, statErr := os.Stat(module)
	if err != nil || statErr != nil {
		msg := fmt.Sprintf("SoftHSM2 is not installed (module %s: %v; softhsm2-util: %v): run .ci/install-softhsm.sh (apt-get install -y softhsm2) or set COFFER_PKCS11_MODULE", module, statErr, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	for _, l := range labels {
		cmd := exec.Command(util, "--init-token", "--free", "--label", l, "--so-pin", SOPIN, "--pin", PIN)
		cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("softhsm2-util --init-token %s: %v\n%s", l, err, out)
		}
	}
	return module
}
