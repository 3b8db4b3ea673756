package recovery_test

import (
	"encoding/base64"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/internal/device/devicestate"
	"github.com/cofferhq/coffer/internal/device/recovery"
	"github.com/cofferhq/coffer/internal/server/devfleet"
)

func TestValidatePassword(t *testing.T) {
	for _, c := range []struct {
		pw string
		ok bool
	}{
		{"", false},
		{"1234567", false},                      // 7 characters
		{"12345678", true},                      // 8
		{"ééééééé", false},                      // 7 characters in 14 bytes
		{"éééééééé", true},                      // 8 characters in 16 bytes
		{"🔑🔑🔑🔑🔑🔑🔑", false},                      // 7 characters in 28 bytes
		{"🔑🔑🔑🔑🔑🔑🔑🔑", true},                      // 8
		{"pässwör", false},                      // 7, mixed
		{"\xff\xfe\xfd\xfc\xfb\xfa\xf9", false}, // 7 bytes that are not UTF-8 count one each
		{"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8", true},
	} {
		err := recovery.ValidatePassword([]byte(c.pw))
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, recovery.ErrWeakPassword)) {
			t.Errorf("ValidatePassword(%q) = %v, want ok %v", c.pw, err, c.ok)
		}
	}
	if recovery.MinPasswordLength != 8 {
		t.Fatalf("MinPasswordLength = %d: the cases above are for 8", recovery.MinPasswordLength)
	}
	if !strings.Contains(recovery.ErrWeakPassword.Error(), "8 characters") {
		t.Errorf("ErrWeakPassword does not name the length: %q", recovery.ErrWeakPassword)
	}
}

// fakeToken is an account token for sub, unsigned: Validate reads the
// subject without verifying it (the relay verifies).
func fakeToken(sub string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"EdDSA"}`)) + "." + enc([]byte(`{"sub":"`+sub+`"}`)) + ".c2ln"
}

func TestSettingsValidate(t *testing.T) {
	good := recovery.Settings{Relay: "http://127.0.0.1:1", Account: "ana", Token: fakeToken("ana"), VaultToken: fakeToken("ana"), Fleet: "bundle.json", FleetRoot: "coffer-fleet-root:x"}
	if err := good.Validate(); err != nil {
		t.Fatalf("complete settings: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(*recovery.Settings)
		want []string // in the message: what, and what to do
	}{
		{"no relay", func(s *recovery.Settings) { s.Relay = "" }, []string{"no relay URL", "--relay", "COFFER_RELAY"}},
		{"no account", func(s *recovery.Settings) { s.Account = "" }, []string{"no account", "--account", "COFFER_ACCOUNT"}},
		{"no token", func(s *recovery.Settings) { s.Token = "" }, []string{"no account token", "--token", "COFFER_TOKEN"}},
		{"token for another account", func(s *recovery.Settings) { s.Token = fakeToken("bob") }, []string{`for account "bob", not "ana"`, "COFFER_ACCOUNT"}},
		{"no vault token", func(s *recovery.Settings) { s.VaultToken = "" }, []string{"no vault token", "COFFER_VAULT_TOKEN"}},
		{"vault token for another account", func(s *recovery.Settings) { s.VaultToken = fakeToken("bob") }, []string{`vault token is for account "bob"`, "COFFER_VAULT_TOKEN"}},
		{"no fleet", func(s *recovery.Settings) { s.Fleet = "" }, []string{"no fleet bundle", "--fleet", "COFFER_FLEET"}},
		{"no fleet root", func(s *recovery.Settings) { s.FleetRoot = " " }, []string{"no pinned fleet root key", "--fleet-root", "COFFER_FLEET_ROOT"}},
	} {
		s := good
		c.edit(&s)
		err := s.Validate()
		if !errors.Is(err, recovery.ErrSettings) {
			t.Errorf("%s: %v, want an ErrSettings", c.name, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", c.name, err, w)
			}
		}
		if _, err2 := s.Load(); err2 == nil || err2.Error() != err.Error() {
			t.Errorf("%s: Load says %v, Validate %v", c.name, err2, err)
		}
		if _, err2 := recovery.New(s); err2 == nil || err2.Error() != err.Error() {
			t.Errorf("%s: New says %v, Validate %v", c.name, err2, err)
		}
	}
	// A token that cannot be read is left to the relay.
	s := good
	s.Token = "opaque"
	if err := s.Validate(); err != nil {
		t.Errorf("unreadable token: %v", err)
	}
}

// TestSettingsLoad: Load reads and verifies the bundle once, and what it
// returns needs the file no more.
func TestSettingsLoad(t *testing.T) {
	k, err := devfleet.LoadKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := recovery.Settings{Relay: "http://127.0.0.1:1", Account: "ana", Token: fakeToken("ana"), VaultToken: fakeToken("ana"), Fleet: k.BundlePath, FleetRoot: k.RootPublic}
	loaded, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Bundle == nil || loaded.Bundle.FleetID != k.Bundle.FleetID || s.Bundle != nil {
		t.Fatalf("Load: bundle %v (the original's %v)", loaded.Bundle, s.Bundle)
	}
	if err := os.Remove(k.BundlePath); err != nil {
		t.Fatal(err)
	}
	if _, err := recovery.New(loaded); err != nil {
		t.Fatalf("New read the bundle again: %v", err)
	}
	if again, err := loaded.Load(); err != nil || again.Bundle != loaded.Bundle {
		t.Fatalf("Load of loaded settings: %v", err)
	}
	if _, err := recovery.New(s); !errors.Is(err, recovery.ErrSettings) || !strings.Contains(err.Error(), "reading the fleet bundle") {
		t.Fatalf("unloaded settings without the file: %v", err)
	}
	// A verified bundle in hand stands for Fleet and FleetRoot.
	if _, err := recovery.New(recovery.Settings{Relay: s.Relay, Account: "ana", Token: s.Token, VaultToken: s.VaultToken, Bundle: k.Bundle}); err != nil {
		t.Fatal(err)
	}
	bad := s
	bad.FleetRoot = "coffer-fleet-root:nonsense"
	if _, err := bad.Load(); !errors.Is(err, recovery.ErrSettings) || !strings.Contains(err.Error(), "--fleet-root") {
		t.Fatalf("unparsable root key: %v", err)
	}
}

func TestSettingsMerge(t *testing.T) {
	saved := &devicestate.Vault{Relay: "http://saved", Account: "saved", Fleet: "/saved/bundle.json", FleetRoot: "coffer-fleet-root:saved"}
	got := recovery.Settings{Account: "given", Token: "t"}.Merge(saved)
	want := recovery.Settings{Relay: "http://saved", Account: "given", Token: "t", Fleet: "/saved/bundle.json", FleetRoot: "coffer-fleet-root:saved"}
	if got != want {
		t.Fatalf("Merge = %+v, want %+v", got, want)
	}
	if got := want.Merge(nil); got != want {
		t.Fatalf("Merge(nil) = %+v", got)
	}
}
