package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/client"
)

// TestJoinWithPassword (item 10): the lost-phone story completes. After
// the phone is lost, a new phone that knows only the password (and the
// vault settings) joins the repository, and 'coffer backup' goes on where
// the old phone left off: the next backup is numbered after the old
// phone's and uploads nothing already stored; password recovery is on for
// the new phone ('password check'). 'restore --password --join' does both
// in one recovery. init on the existing repository points to join.
func TestJoinWithPassword(t *testing.T) {
	dir := t.TempDir()
	with := devFleetEnv(t, dir, "ana", map[string]string{"COFFER_PASSWORD": "correct horse battery"})
	data := filepath.Join(dir, "data")
	write12(t, filepath.Join(data, "chat.db"), strings.Repeat("chat", 5000))
	repo := filepath.Join(dir, "repo")
	phone := with(map[string]string{"COFFER_STATE": filepath.Join(dir, "phone")})
	if code, out, errs := run(t, phone, "init", "--password", "--repo", repo, "-q"); code != 0 || out != "" {
		t.Fatalf("init --password -q: %d %q %s", code, out, errs)
	}
	if code, out, errs := run(t, phone, "backup", data); code != 0 {
		t.Fatalf("backup: %d %s %s", code, out, errs)
	}

	newPhone := with(map[string]string{"COFFER_STATE": filepath.Join(dir, "new-phone"), "COFFER_REPO": repo})
	if code, _, errs := run(t, newPhone, "backup", data); code != ExitUsage || !strings.Contains(errs, "coffer join --repo URL") {
		t.Fatalf("backup on a new phone before join: %d %s", code, errs)
	}
	if code, _, errs := run(t, newPhone, "init", "--password"); code == 0 || !strings.Contains(errs, "coffer join") {
		t.Fatalf("init on the existing repository: %d %s", code, errs)
	}
	code, out, errs := run(t, newPhone, "join", "--password")
	if code != 0 || !strings.Contains(out, "This device is now set up with the repository") || !strings.Contains(out, "since the password was set") {
		t.Fatalf("join --password: %d %s %s", code, out, errs)
	}
	code, out, errs = run(t, newPhone, "backup", data, "--json")
	var bs struct {
		Generation struct{ Generation uint64 } `json:"generation"`
		NewPieces  int64                       `json:"new_pieces"`
	}
	if err := json.Unmarshal([]byte(out), &bs); err != nil || code != 0 || bs.Generation.Generation != 2 || bs.NewPieces != 0 {
		t.Fatalf("backup after join: %d %s %s", code, out, errs)
	}
	if code, out, errs := run(t, newPhone, "password", "check"); code != 0 || !strings.Contains(out, "That is the password") {
		t.Fatalf("password check after join: %d %s %s", code, out, errs)
	}
	if code, _, errs := run(t, newPhone, "join", "--password"); code != ExitError || !strings.Contains(errs, "already set up") {
		t.Fatalf("join twice: %d %s", code, errs)
	}

	// Restore and join in one recovery.
	third := with(map[string]string{"COFFER_STATE": filepath.Join(dir, "third"), "COFFER_REPO": repo})
	to := filepath.Join(dir, "restored")
	code, out, errs = run(t, third, "restore", "--password", "--join", "--to", to)
	if code != 0 || !strings.Contains(out, "This device is now set up") || !strings.Contains(out, "The previous successful recovery was at") {
		t.Fatalf("restore --password --join: %d %s %s", code, out, errs)
	}
	if b, err := os.ReadFile(filepath.Join(to, "data", "chat.db")); err != nil || len(b) != 20000 {
		t.Fatalf("restored: %v", err)
	}
	if code, out, errs := run(t, third, "backup", data, "-q"); code != 0 {
		t.Fatalf("backup after restore --join: %d %s %s", code, out, errs)
	}
	if !client.NewDevice(filepath.Join(dir, "third")).Initialized() {
		t.Fatal("restore --join did not set the device up")
	}
}

// TestJoinWithKey (items 10 and 11): a new device joins with the 64-digit
// key from COFFER_KEY_FILE and goes on backing up; without any key and no
// terminal, join says how to give one; 'init --key DIGITS' is refused as a
// usage error without printing the key back, and so is a stray key
// argument.
func TestJoinWithKey(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	keyFile := filepath.Join(dir, "key.txt")
	old := map[string]string{"COFFER_STATE": filepath.Join(dir, "old")}
	if code, out, errs := run(t, old, "init", "--repo", repo, "--key-file", keyFile, "-q"); code != 0 || !strings.Contains(out, "64-digit backup key") {
		t.Fatalf("init -q (the key is still shown): %d %s %s", code, out, errs)
	}
	k, err := client.ReadKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	digits := k.Digits()
	data := filepath.Join(dir, "data")
	write12(t, filepath.Join(data, "f"), "hello")
	if code, out, errs := run(t, old, "backup", data, "-q"); code != 0 || out != "" {
		t.Fatalf("backup -q: %d %q %s", code, out, errs)
	}

	dev := map[string]string{"COFFER_STATE": filepath.Join(dir, "new"), "COFFER_REPO": repo}
	if code, _, errs := run(t, dev, "join"); code != ExitUsage || !strings.Contains(errs, "COFFER_KEY_FILE") {
		t.Fatalf("join without a key: %d %s", code, errs)
	}
	dev["COFFER_KEY_FILE"] = keyFile
	if code, out, errs := run(t, dev, "join"); code != 0 || !strings.Contains(out, "1 backup, newest 1") {
		t.Fatalf("join with COFFER_KEY_FILE: %d %s %s", code, out, errs)
	}
	delete(dev, "COFFER_KEY_FILE")
	if code, out, errs := run(t, dev, "backup", data); code != 0 || !strings.Contains(out, "Backup 2") {
		t.Fatalf("backup after join: %d %s %s", code, out, errs)
	}

	// --key has one meaning: a key. init refuses one, unshown.
	fresh := map[string]string{"COFFER_STATE": filepath.Join(dir, "fresh")}
	for _, args := range [][]string{
		{"init", "--repo", filepath.Join(dir, "r2"), "--key", digits},
		{"init", "--repo", filepath.Join(dir, "r2"), "--key=" + digits},
		{"init", "--repo", filepath.Join(dir, "r2"), digits},
		{"init", "--key", digits[:4], digits[5:9], "--repo", filepath.Join(dir, "r2")},
		{digits},
	} {
		for _, asJSON := range []bool{false, true} {
			a := args
			if asJSON {
				a = append(slices.Clone(args), "--json")
			}
			code, out, errs := run(t, fresh, a...)
			all := strings.ToLower(out + errs)
			if code != ExitUsage || strings.Contains(all, strings.ToLower(digits[:9])) || strings.Contains(all, strings.ToLower(digits[5:9])) || strings.Contains(all, strings.ReplaceAll(strings.ToLower(digits), " ", "")[:8]) {
				t.Errorf("%d args: exit %d, output %q %q", len(args), code, out, errs)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "r2")); err == nil {
		t.Error("init --key made a repository")
	}
	code, _, errs := run(t, fresh, "init", "--repo", filepath.Join(dir, "r2"), "--key", digits)
	if !strings.Contains(errs, "coffer join --repo URL") {
		t.Errorf("init --key: %d %s", code, errs)
	}
}

// openPTY opens a pseudo-terminal: what a person types is written to
// master, and the command reads it from slave.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// TestKeyPrompt (item 11): on a device that is not set up, with no key
// given and standard input a terminal, the key is asked for at a prompt
// (not echoed to the output) for a one-off command and for join.
func TestKeyPrompt(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	code, out, errs := run(t, map[string]string{"COFFER_STATE": filepath.Join(dir, "old")}, "init", "--repo", repo, "--json")
	var ini struct{ Key string }
	if err := json.Unmarshal([]byte(out), &ini); err != nil || code != 0 {
		t.Fatalf("init: %d %s %s", code, out, errs)
	}
	env := map[string]string{"COFFER_STATE": filepath.Join(dir, "new"), "COFFER_REPO": repo}
	for _, args := range [][]string{{"list"}, {"join"}} {
		master, slave := openPTY(t)
		if _, err := master.WriteString(ini.Key + "\n"); err != nil {
			t.Fatal(err)
		}
		var o, e bytes.Buffer
		code := Main(context.Background(), args, Env{Stdin: slave, Stdout: &o, Stderr: &e, Getenv: func(k string) string { return env[k] }})
		if code != 0 || !strings.Contains(e.String(), "64-digit backup key (not shown as you type)") || strings.Contains(o.String()+e.String(), ini.Key[:9]) {
			t.Fatalf("%v with the key typed: %d %q %q", args, code, o.String(), e.String())
		}
	}
	if !client.NewDevice(filepath.Join(dir, "new")).Initialized() {
		t.Fatal("join with the typed key did not set the device up")
	}
}
