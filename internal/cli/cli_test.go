package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/internal/device/recovery"
	"github.com/cofferhq/coffer/storage"
)

func TestExitCode(t *testing.T) {
	_, malformed := client.ParseKey("xyz")
	for _, c := range []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{fail("list", errors.New("boom")), ExitError},
		{fail("list", fmt.Errorf("x: %w", client.ErrNoRepository)), ExitError},
		{usagef("restore: no --to"), ExitUsage},
		{errors.New("unknown command \"x\" for \"coffer\""), ExitUsage}, // cobra's own
		{fail("list", fmt.Errorf("--key: %w", malformed)), ExitUsage},
		{fail("list", fmt.Errorf("opening: %w", client.ErrWrongKey)), ExitWrongKey},
		{fail("restore", fmt.Errorf("piece: %w: chunk 2", client.ErrIntegrity)), ExitIntegrity},
		{fail("list", fmt.Errorf("%w: %w: seen 5", client.ErrIntegrity, client.ErrRollback)), ExitIntegrity},
		{fail("backup", fmt.Errorf("put: %w: dial tcp", storage.ErrUnavailable)), ExitUnavailable},
		{fail("restore", fmt.Errorf("recovering: %w", &recovery.WrongPasswordError{GuessesLeft: 7, GuessLimit: 10})), ExitWrongKey},
		{fail("restore", fmt.Errorf("wrong password, and that was the last guess: %w", recovery.ErrDestroyed)), ExitKeyDestroyed},
		{fail("restore", fmt.Errorf("recovering: %w", recovery.ErrDestroyed)), ExitKeyDestroyed},
		{fail("restore", fmt.Errorf("%w: relay x: connection refused", recovery.ErrUnavailable)), ExitUnavailable},
		{fail("restore", fmt.Errorf("%w: fleet bundle: bad signature", recovery.ErrIntegrity)), ExitIntegrity},
		{fail("restore", fmt.Errorf("%w: expired", recovery.ErrAuthentication)), ExitError},
		{fail("disable", fmt.Errorf("turning off: %w", recovery.ErrUnauthorized)), ExitError},
		{fail("init", recovery.ErrWeakPassword), ExitUsage},
		{fail("password check", client.ErrPasswordMismatch), ExitWrongKey},
	} {
		if got := ExitCode(c.err); got != c.want {
			t.Errorf("ExitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

func TestMessage(t *testing.T) {
	msg := message(fail("restore", fmt.Errorf("the key does not open the repository at /r: %w", client.ErrWrongKey)))
	if !strings.HasPrefix(msg, "restore: the key does not open") || !strings.Contains(msg, ". Check the 64-digit key") || !strings.HasSuffix(msg, ".") {
		t.Errorf("wrong-key message: %q", msg)
	}
	msg = message(fail("restore", fmt.Errorf("piece ab: %w: chunk 1", client.ErrIntegrity)))
	if !strings.Contains(msg, "nothing was restored") {
		t.Errorf("integrity message: %q", msg)
	}
	msg = message(fail("backup", fmt.Errorf("%w: dial tcp 127.0.0.1:1: connection refused", storage.ErrUnavailable)))
	if !strings.Contains(msg, "try again") {
		t.Errorf("unavailable message: %q", msg)
	}
	msg = message(fail("restore", &recovery.WrongPasswordError{GuessesLeft: 7, GuessLimit: 10}))
	if !strings.HasPrefix(msg, "restore: wrong password: 7 guesses left of 10.") || !strings.Contains(msg, "64-digit key") {
		t.Errorf("wrong-password message: %q", msg)
	}
	msg = message(fail("restore", fmt.Errorf("recovering: %w", recovery.ErrDestroyed)))
	if !strings.Contains(msg, "the backups can only be restored with the 64-digit key, if you kept it") {
		t.Errorf("destroyed message: %q", msg)
	}
	msg = message(fail("init", recovery.ErrWeakPassword))
	if !strings.Contains(msg, "Choose a password of at least 8 characters") {
		t.Errorf("weak-password message: %q", msg)
	}
	msg = message(fail("status", fmt.Errorf("%w: token has expired", recovery.ErrAuthentication)))
	if !strings.Contains(msg, "fresh account token") {
		t.Errorf("token message: %q", msg)
	}
}

func TestReadPassword(t *testing.T) {
	var errb bytes.Buffer
	a := &app{Env: Env{Stdin: strings.NewReader("from stdin\nsecond line\n"), Stdout: &errb, Stderr: &errb, Getenv: func(k string) string {
		return map[string]string{"COFFER_PASSWORD": "from the environment"}[k]
	}}}
	pw, err := a.readPassword("t", &passwordFlags{stdin: true}, "Password", true)
	if err != nil || string(pw) != "from stdin" {
		t.Fatalf("--password-stdin: %q %v", pw, err)
	}
	pw, err = a.readPassword("t", &passwordFlags{}, "Password", true)
	if err != nil || string(pw) != "from the environment" {
		t.Fatalf("COFFER_PASSWORD: %q %v", pw, err)
	}
	a.Stdin = strings.NewReader("short\r\n")
	if _, err := a.readPassword("t", &passwordFlags{stdin: true}, "Password", true); ExitCode(err) != ExitUsage || !errors.Is(err, recovery.ErrWeakPassword) {
		t.Fatalf("a short new password: %v", err)
	}
	a.Stdin = strings.NewReader("short\n")
	if pw, err := a.readPassword("t", &passwordFlags{stdin: true}, "Password", false); err != nil || string(pw) != "short" {
		t.Fatalf("a short password to check: %q %v", pw, err)
	}
	a.Stdin = strings.NewReader("")
	if _, err := a.readPassword("t", &passwordFlags{stdin: true}, "Password", false); ExitCode(err) != ExitUsage {
		t.Fatalf("empty stdin: %v", err)
	}
	a.Getenv = func(string) string { return "" }
	if _, err := a.readPassword("t", &passwordFlags{}, "Password", false); ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "COFFER_PASSWORD") {
		t.Fatalf("no password and no terminal: %v", err)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{"abc": "'abc'", "it's": `'it'\''s'`, "": "''"} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

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

func TestDemo(t *testing.T) {
	var out bytes.Buffer
	if err := runDemo(context.Background(), &out, false); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{"Compared the trees", "refused", "Exit code 5", "Exit code 3",
		"cheap key stretching", "9 guesses left of 10", "1 wrong guess since the last successful recovery"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestCount(t *testing.T) {
	for _, c := range []struct {
		n    int64
		what string
		want string
	}{{1, "file", "1 file"}, {0, "file", "0 files"}, {3, "directory", "3 directories"}, {2, "new piece", "2 new pieces"}} {
		if got := count(c.n, c.what); got != c.want {
			t.Errorf("count(%d, %q) = %q", c.n, c.what, got)
		}
	}
	if got := size(1536); got != "1.5 KiB" {
		t.Errorf("size(1536) = %q", got)
	}
}
