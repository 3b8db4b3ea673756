package cli

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/server/devfleet"
)

// TestPasswordCommandsInProcess runs the vault commands against a
// development fleet on 127.0.0.1: init --password, status, password check,
// and restore --password on a new device; and a missing setting fails
// before any password is asked for, saying what to give.
func TestPasswordCommandsInProcess(t *testing.T) {
	dir := t.TempDir()
	with := devFleetEnv(t, dir, "ana", nil)
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "a"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(dir, "repo")
	phone := with(map[string]string{"COFFER_STATE": filepath.Join(dir, "phone"), "COFFER_PASSWORD": "short"})
	if code, out, errs := run(t, phone, "init", "--password", "--repo", repo); code != ExitUsage || !strings.Contains(errs, "at least 8 characters") {
		t.Fatalf("init with a short password: %d %s %s", code, out, errs)
	}
	phone["COFFER_PASSWORD"] = "correct horse battery"
	if code, out, errs := run(t, phone, "init", "--password", "--repo", repo, "--json"); code != 0 {
		t.Fatalf("init --password: %d %s %s", code, out, errs)
	}
	if code, out, errs := run(t, phone, "backup", data); code != 0 {
		t.Fatalf("backup: %d %s %s", code, out, errs)
	}
	code, out, errs := run(t, phone, "status", "--json")
	var st struct {
		Device struct {
			PasswordCheck bool `json:"local_password_verifier"`
		} `json:"device"`
		Vault struct {
			Registered  bool `json:"registered"`
			GuessesLeft int  `json:"guesses_left"`
		} `json:"vault"`
		Recovery struct {
			Enabled bool   `json:"enabled"`
			Account string `json:"account"`
		} `json:"password_recovery"`
	}
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || !st.Device.PasswordCheck || !st.Vault.Registered || st.Vault.GuessesLeft != 10 || !st.Recovery.Enabled || st.Recovery.Account != "ana" {
		t.Fatalf("status: %d %s %s (%+v)", code, out, errs, st)
	}
	if code, out, errs := run(t, phone, "password", "check"); code != 0 || !strings.Contains(out, "That is the password") {
		t.Fatalf("password check: %d %s %s", code, out, errs)
	}

	// A new device: no state, the vault settings and the password.
	laptop := with(map[string]string{"COFFER_STATE": filepath.Join(dir, "laptop"), "COFFER_REPO": repo, "COFFER_PASSWORD": "correct horse battery"})
	noRoot := maps.Clone(laptop)
	delete(noRoot, "COFFER_FLEET_ROOT")
	if code, out, errs := run(t, noRoot, "restore", "--password", "--to", filepath.Join(dir, "out0")); code != ExitUsage ||
		!strings.Contains(errs, "restore: vault settings: no pinned fleet root key") || !strings.Contains(errs, "COFFER_FLEET_ROOT") {
		t.Fatalf("restore without the fleet root: %d %s %s", code, out, errs)
	}
	to := filepath.Join(dir, "out")
	if code, out, errs := run(t, laptop, "restore", "--password", "--to", to); code != 0 || !strings.Contains(out, "No wrong guesses") {
		t.Fatalf("restore --password: %d %s %s", code, out, errs)
	}
	if b, err := os.ReadFile(filepath.Join(to, "data", "a")); err != nil || string(b) != "hello" {
		t.Fatalf("restored: %q %v", b, err)
	}
}

// devFleetEnv starts a development fleet in dir/fleet (stopped at the end
// of the test) and returns a function making environments for account
// against it: its vault settings, the fast development key stretching,
// fixed, then the extra variables given.
func devFleetEnv(t *testing.T, dir, account string, fixed map[string]string) func(extra map[string]string) map[string]string {
	t.Helper()
	f, err := devfleet.Start(context.Background(), devfleet.Options{Dir: filepath.Join(dir, "fleet")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	vault, err := f.Env(account, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return func(extra map[string]string) map[string]string {
		m := maps.Clone(vault)
		m["COFFER_DEV_KSF"] = "1"
		maps.Copy(m, fixed)
		maps.Copy(m, extra)
		return m
	}
}
