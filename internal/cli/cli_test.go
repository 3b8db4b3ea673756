package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// run runs the command in-process.
func run(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }})
	return code, out.String(), errb.String()
}

func TestInProcessFlow(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "a"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"COFFER_STATE": filepath.Join(dir, "state")}
	repo := filepath.Join(dir, "repo")
	code, out, errs := run(t, env, "init", "--repo", repo, "--json")
	if code != 0 {
		t.Fatalf("init: %d %s %s", code, out, errs)
	}
	var ini struct{ Key string }
	if err := json.Unmarshal([]byte(out), &ini); err != nil || len(ini.Key) != 79 {
		t.Fatalf("init output %q: %v", out, err)
	}
	if code, out, errs := run(t, env, "backup", data); code != 0 || !strings.Contains(out, "Backup 1") {
		t.Fatalf("backup: %d %s %s", code, out, errs)
	}
	newDevice := map[string]string{"COFFER_STATE": filepath.Join(dir, "state2"), "COFFER_KEY": ini.Key, "COFFER_REPO": repo}
	if code, out, errs := run(t, newDevice, "restore", "--to", filepath.Join(dir, "out")); code != 0 {
		t.Fatalf("restore: %d %s %s", code, out, errs)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "out", "data", "a")); err != nil || string(b) != "hello" {
		t.Fatalf("restored: %q %v", b, err)
	}
	// The backup recorded this program's version, passed down as a value.
	code, out, errs = run(t, newDevice, "list", "--json")
	var ls struct {
		Generations []struct {
			Version string `json:"coffer_version"`
		}
	}
	if err := json.Unmarshal([]byte(out), &ls); err != nil || code != 0 || len(ls.Generations) != 1 || ls.Generations[0].Version != version() {
		t.Fatalf("list: %d %q %s (want coffer_version %q)", code, out, errs, version())
	}
	code, out, _ = run(t, newDevice, "list", "--json", "--bogus")
	if code != ExitUsage {
		t.Fatalf("bad flag: exit %d", code)
	}
	code, out, _ = run(t, map[string]string{"COFFER_STATE": filepath.Join(dir, "state3"), "COFFER_REPO": repo, "COFFER_KEY": strings.Repeat("ab", 32)}, "list", "--json")
	var e struct {
		Error string `json:"error"`
		Code  int    `json:"code"`
	}
	if err := json.Unmarshal([]byte(out), &e); err != nil || code != ExitWrongKey || e.Code != ExitWrongKey {
		t.Fatalf("wrong key: exit %d, %q", code, out)
	}
}
