package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/device/repository"
)

// The regression tests of issue 12 ("a backup that says it succeeded can
// always be restored") for the command: exit codes, what --json lists,
// and the commands check, repair, unlock and join.

// device12 sets up a device with a repository in dir and returns its
// environment.
func device12(t *testing.T, dir string) map[string]string {
	t.Helper()
	env := map[string]string{"COFFER_STATE": filepath.Join(dir, "state")}
	if code, out, errs := run(t, env, "init", "--repo", filepath.Join(dir, "repo"), "-q"); code != 0 {
		t.Fatalf("init: %d %s %s", code, out, errs)
	}
	return env
}

func write12(t *testing.T, p string, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBackupSkippedExitCode (item 3): a file that cannot be opened and a
// file whose read fails midway are skipped, the rest is backed up, and
// the backup exits 7 (not 0) listing both with their reasons in --json and
// by name on stderr; a socket is listed as special, named in words, and
// alone does not change the exit code. The backup restores.
func TestBackupSkippedExitCode(t *testing.T) {
	dir := t.TempDir()
	env := device12(t, dir)
	src := filepath.Join(dir, "src")
	write12(t, filepath.Join(src, "ok"), "fine")
	write12(t, filepath.Join(src, "locked"), "secret")
	write12(t, filepath.Join(src, "midway"), strings.Repeat("x", 3<<20))
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: filepath.Join(src, "sock")}); err != nil {
		t.Fatal(err)
	}
	undo := repository.SetTestFault(func(op, rel string, off int64) error {
		switch {
		case op == "open" && rel == "src/locked":
			return syscall.EACCES
		case op == "read" && rel == "src/midway" && off > 0:
			return syscall.EIO
		}
		return nil
	})
	defer undo()
	code, out, errs := run(t, env, "backup", src, "--json")
	if code != ExitSkipped {
		t.Fatalf("backup: exit %d, want %d: %s %s", code, ExitSkipped, out, errs)
	}
	var s struct {
		Code    int    `json:"code"`
		Warning string `json:"warning"`
		Skipped []struct {
			Path, Reason, Kind string
		} `json:"skipped_entries"`
		Generation struct{ Files int } `json:"generation"`
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("one JSON object on stdout: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, e := range s.Skipped {
		got[filepath.Base(e.Path)] = e.Kind + ": " + e.Reason
	}
	if s.Code != ExitSkipped || !strings.Contains(got["locked"], "error: ") || !strings.Contains(got["locked"], "permission denied") ||
		!strings.Contains(got["midway"], "error: read error after") || !strings.Contains(got["sock"], "special: not backed up: it is a socket") || len(got) != 3 {
		t.Fatalf("skipped entries %v (code %d)", got, s.Code)
	}
	if s.Generation.Files != 1 {
		t.Fatalf("%d files backed up, want 1 (ok)", s.Generation.Files)
	}
	// Human output names the entries, even with -q.
	code, out, errs = run(t, env, "backup", src, "-q")
	if code != ExitSkipped || !strings.Contains(errs, filepath.Join(src, "locked")) || !strings.Contains(errs, filepath.Join(src, "midway")) ||
		!strings.Contains(errs, "2 entries could not be read") || out != "" {
		t.Fatalf("backup -q: %d %q %q", code, out, errs)
	}
	undo()
	// Readable again, the same tree backs up with exit 0: the socket alone
	// is only a warning.
	if code, out, errs := run(t, env, "backup", src); code != 0 || !strings.Contains(errs, "it is a socket") {
		t.Fatalf("backup after the faults: %d %s %s", code, out, errs)
	}
	to := filepath.Join(dir, "out")
	if code, out, errs := run(t, env, "restore", "--to", to, "--backup", "latest"); code != 0 {
		t.Fatalf("restore --backup latest: %d %s %s", code, out, errs)
	}
	if b, err := os.ReadFile(filepath.Join(to, "src", "midway")); err != nil || len(b) != 3<<20 {
		t.Fatalf("restored midway: %d bytes, %v", len(b), err)
	}
}

// pieces lists the data objects of the local repository at repo.
func pieces(t *testing.T, repo string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(repo, "data"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestDamagedPiecesVerifySalvageCheckRepair (items 4 and 5): with two
// pieces of a backup lost, verify and check name both, with the files and
// backups they break (and exit 5); restore refuses by default, and
// restore --salvage restores the intact file, names the two damaged ones
// and exits 8; repair --path uploads the lost pieces again from the files
// on disk, and then check and restore succeed.
func TestDamagedPiecesVerifySalvageCheckRepair(t *testing.T) {
	dir := t.TempDir()
	env := device12(t, dir)
	repo := filepath.Join(dir, "repo")
	src := filepath.Join(dir, "src")
	lost := map[string]string{}
	for _, name := range []string{"a", "b", "c"} {
		before := pieces(t, repo)
		write12(t, filepath.Join(src, name), strings.Repeat(name, 1100000)) // above the pack threshold (1 MiB): a piece object of its own
		if code, out, errs := run(t, env, "backup", src, "-q"); code != 0 {
			t.Fatalf("backup: %d %s %s", code, out, errs)
		}
		for _, p := range pieces(t, repo) {
			if !slices.Contains(before, p) {
				lost[name] = p
			}
		}
	}
	for _, name := range []string{"a", "b"} {
		if err := os.Remove(lost[name]); err != nil {
			t.Fatalf("removing the piece of %s: %v", name, err)
		}
	}
	type damage struct {
		Damaged []struct {
			ID    string
			Files []struct {
				Generation uint64
				Path       string
			}
		}
	}
	check := func(args ...string) map[string][]uint64 {
		t.Helper()
		code, out, errs := run(t, env, append(args, "--json")...)
		var d damage
		if err := json.Unmarshal([]byte(out), &d); err != nil || code != ExitIntegrity {
			t.Fatalf("%v: exit %d, %v: %s %s", args, code, err, out, errs)
		}
		files := map[string][]uint64{}
		for _, p := range d.Damaged {
			for _, f := range p.Files {
				files[f.Path] = append(files[f.Path], f.Generation)
			}
		}
		if len(d.Damaged) != 2 {
			t.Fatalf("%v: %d damaged pieces, want 2: %s", args, len(d.Damaged), out)
		}
		return files
	}
	for _, args := range [][]string{{"verify"}, {"check"}, {"check", "--read-data"}, {"check", "--read-data-subset", "100%"}} {
		files := check(args...)
		// a is in backups 1, 2 and 3; b in 2 and 3.
		if !slices.Equal(files["src/a"], []uint64{1, 2, 3}) || !slices.Equal(files["src/b"], []uint64{2, 3}) || len(files) != 2 {
			t.Fatalf("%v: damaged files %v", args, files)
		}
	}
	code, out, errs := run(t, env, "verify")
	if code != ExitIntegrity || strings.Count(out, "DAMAGED piece") != 2 || !strings.Contains(out, "backup 3: src/a") || !strings.Contains(out, "backup 2: src/b") {
		t.Fatalf("verify: %d %s %s", code, out, errs)
	}
	if code, _, errs := run(t, env, "check", "--read-data-subset", "0/3"); code != ExitUsage {
		t.Fatalf("check with a malformed subset: exit %d %s", code, errs)
	}

	to := filepath.Join(dir, "all-or-nothing")
	if code, _, errs := run(t, env, "restore", "--to", to); code != ExitIntegrity {
		t.Fatalf("restore: exit %d %s", code, errs)
	}
	if _, err := os.Lstat(to); err == nil {
		t.Fatal("a failed restore left its target")
	}
	to = filepath.Join(dir, "salvaged")
	code, out, errs = run(t, env, "restore", "--salvage", "--to", to, "--json")
	var rs struct {
		Code    int
		Damaged []struct{ Path, Reason string }
	}
	if err := json.Unmarshal([]byte(out), &rs); err != nil || code != ExitSalvaged || rs.Code != ExitSalvaged || len(rs.Damaged) != 2 {
		t.Fatalf("restore --salvage: exit %d %v: %s %s", code, err, out, errs)
	}
	if b, err := os.ReadFile(filepath.Join(to, "src", "c")); err != nil || string(b) != strings.Repeat("c", 1100000) {
		t.Fatalf("salvaged c: %v", err)
	}
	for _, name := range []string{"a", "b"} {
		if _, err := os.Lstat(filepath.Join(to, "src", name)); err == nil {
			t.Fatalf("salvage restored the damaged %s", name)
		}
	}
	code, _, errs = run(t, env, "restore", "--salvage", "--to", filepath.Join(dir, "salvaged2"))
	if code != ExitSalvaged || !strings.Contains(errs, "src/a") || !strings.Contains(errs, "src/b") {
		t.Fatalf("restore --salvage (human): %d %s", code, errs)
	}

	if code, out, errs := run(t, env, "repair", "--path", src); code != 0 || !strings.Contains(out, "Uploaded again 2 lost pieces") {
		t.Fatalf("repair: %d %s %s", code, out, errs)
	}
	if code, out, errs := run(t, env, "check", "--read-data"); code != 0 || !strings.Contains(out, "all intact") {
		t.Fatalf("check after repair: %d %s %s", code, out, errs)
	}
	if code, out, errs := run(t, env, "restore", "--to", filepath.Join(dir, "whole")); code != 0 {
		t.Fatalf("restore after repair: %d %s %s", code, out, errs)
	}
}

// TestRepairWithoutFiles (item 5): with the files gone from disk, repair
// rewrites the backups without the lost file and names it; every backup
// restores afterwards.
func TestRepairWithoutFiles(t *testing.T) {
	dir := t.TempDir()
	env := device12(t, dir)
	repo := filepath.Join(dir, "repo")
	src := filepath.Join(dir, "src")
	write12(t, filepath.Join(src, "keep"), strings.Repeat("k", 1100000))
	before := pieces(t, repo)
	if code, out, errs := run(t, env, "backup", src, "-q"); code != 0 {
		t.Fatalf("backup: %d %s %s", code, out, errs)
	}
	write12(t, filepath.Join(src, "gone"), strings.Repeat("g", 1100000))
	before = pieces(t, repo)
	if code, out, errs := run(t, env, "backup", src, "-q"); code != 0 {
		t.Fatalf("backup: %d %s %s", code, out, errs)
	}
	for _, p := range pieces(t, repo) {
		if !slices.Contains(before, p) {
			os.Remove(p)
		}
	}
	code, out, errs := run(t, env, "repair")
	if code != 0 || !strings.Contains(out, "Replaced backup 2 by backup 3, without 1 entry whose data is lost") || !strings.Contains(out, "src/gone") {
		t.Fatalf("repair: %d %s %s", code, out, errs)
	}
	if code, out, errs := run(t, env, "check"); code != 0 {
		t.Fatalf("check after repair: %d %s %s", code, out, errs)
	}
	to := filepath.Join(dir, "out")
	if code, out, errs := run(t, env, "restore", "--to", to); code != 0 {
		t.Fatalf("restore: %d %s %s", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(to, "src", "keep")); err != nil {
		t.Fatal(err)
	}
}

// waitLock waits until the repository holds a lock.
func waitLock(t *testing.T, repo string) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if des, _ := os.ReadDir(filepath.Join(repo, "locks")); len(des) > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no lock appeared")
}

// TestHelperBlockedBackup is not a test: TestLocks runs the test binary
// with COFFER_TEST_BLOCKED_BACKUP set, as a coffer backup that takes its
// lock and then blocks until it is killed.
func TestHelperBlockedBackup(t *testing.T) {
	src := os.Getenv("COFFER_TEST_BLOCKED_BACKUP")
	if src == "" {
		t.Skip("helper process only")
	}
	repository.SetTestFault(func(op, rel string, off int64) error {
		select {} // blocks until killed
	})
	run(t, map[string]string{"COFFER_STATE": os.Getenv("COFFER_STATE")}, "backup", src)
}

// TestLocks (item 6): a backup killed with SIGKILL leaves a lock that
// names a process that has exited: prune does not defer for it, and
// unlock removes it at once saying why. A live backup's lock defers
// prune's sweep with a message naming its host and pid, and unlock keeps
// it (exit 1) unless --force. A killed restore's staging directory is
// removed by the next restore, which says so.
func TestLocks(t *testing.T) {
	dir := t.TempDir()
	env := device12(t, dir)
	repo := filepath.Join(dir, "repo")
	src := filepath.Join(dir, "src")
	write12(t, filepath.Join(src, "f"), "data")
	if code, out, errs := run(t, env, "backup", src, "-q"); code != 0 {
		t.Fatalf("backup: %d %s %s", code, out, errs)
	}

	// A backup killed while it holds its lock.
	child := exec.Command(os.Args[0], "-test.run=^TestHelperBlockedBackup$", "-test.count=1")
	child.Env = append(os.Environ(), "COFFER_TEST_BLOCKED_BACKUP="+src, "COFFER_STATE="+env["COFFER_STATE"])
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	waitLock(t, repo)
	child.Process.Kill()
	child.Wait()
	code, out, errs := run(t, env, "prune", "--keep", "1", "--json")
	var ps struct {
		SweepDeferred bool `json:"sweep_deferred"`
	}
	if err := json.Unmarshal([]byte(out), &ps); err != nil || code != 0 || ps.SweepDeferred {
		t.Fatalf("prune after a killed backup: %d %s %s", code, out, errs)
	}
	code, out, errs = run(t, env, "unlock")
	if code != 0 || !strings.Contains(out, "Removed the shared lock of") || !strings.Contains(out, "its process has exited") {
		t.Fatalf("unlock of a killed backup's lock: %d %s %s", code, out, errs)
	}
	if code, out, _ := run(t, env, "unlock"); code != 0 || !strings.Contains(out, "no locks") {
		t.Fatalf("unlock again: %d %s", code, out)
	}

	// A live backup, blocked in this process.
	release := make(chan struct{})
	defer repository.SetTestFault(func(op, rel string, off int64) error {
		<-release
		return nil
	})()
	done := make(chan int)
	go func() {
		code, _, _ := run(t, env, "backup", src, "-q")
		done <- code
	}()
	waitLock(t, repo)
	host, _ := os.Hostname()
	owner := host + " (pid " + strconv.Itoa(os.Getpid()) + ")"
	code, out, errs = run(t, env, "prune", "--keep", "1")
	if code != 0 || !strings.Contains(out, "Unused pieces were left for the next prune") || !strings.Contains(out, "the shared lock of "+owner) {
		t.Fatalf("prune beside a live backup: %d %s %s", code, out, errs)
	}
	code, out, errs = run(t, env, "unlock")
	if code != ExitError || !strings.Contains(errs, "kept 1 live lock") || !strings.Contains(errs, owner) || !strings.Contains(errs, "--force") {
		t.Fatalf("unlock of a live lock: %d %s %s", code, out, errs)
	}
	code, out, errs = run(t, env, "unlock", "--force", "--json")
	var us struct{ Removed []struct{ PID int } }
	if err := json.Unmarshal([]byte(out), &us); err != nil || code != 0 || len(us.Removed) != 1 || us.Removed[0].PID != os.Getpid() {
		t.Fatalf("unlock --force: %d %s %s", code, out, errs)
	}
	close(release)
	if code := <-done; code != 0 {
		t.Fatalf("the blocked backup: exit %d", code)
	}

	// A restore killed part-way left its staging directory.
	stale := filepath.Join(dir, ".coffer-restore-0123456789abcdef")
	write12(t, filepath.Join(stale, "decrypted"), "secret")
	time.Sleep(2500 * time.Millisecond) // older than the grace for a starting restore
	code, out, errs = run(t, env, "restore", "--to", filepath.Join(dir, "out"))
	if code != 0 || !strings.Contains(errs, "removed "+stale) || !strings.Contains(errs, "interrupted") {
		t.Fatalf("restore beside a stale staging directory: %d %s %s", code, out, errs)
	}
	if _, err := os.Lstat(stale); err == nil {
		t.Fatal("the stale staging directory is still there")
	}
}

// TestMessages12 (item 11): SIGINT exits 130; a malformed repository URL
// and missing vault settings (no token) are usage errors (2); -q leaves
// stdout empty; a state directory that cannot be read is reported as
// unreadable, not as "not set up".
func TestMessages12(t *testing.T) {
	dir := t.TempDir()
	env := device12(t, dir)
	src := filepath.Join(dir, "src")
	write12(t, filepath.Join(src, "f"), "data")

	// Interrupted during the walk, as by SIGINT (main cancels the context).
	ctx, cancel := context.WithCancel(context.Background())
	undo := repository.SetTestFault(func(op, rel string, off int64) error {
		cancel()
		return nil
	})
	var out, errb bytes.Buffer
	code := Main(ctx, []string{"backup", src}, Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }})
	undo()
	if code != ExitInterrupted || !strings.Contains(errb.String(), "interrupted") {
		t.Fatalf("interrupted backup: exit %d %s %s", code, out.String(), errb.String())
	}

	for _, bad := range []string{"rclone:", "s3://", "ftp://host/x"} {
		other := map[string]string{"COFFER_STATE": filepath.Join(dir, "other")}
		if code, _, errs := run(t, other, "init", "--repo", bad); code != ExitUsage {
			t.Errorf("init --repo %s: exit %d %s", bad, code, errs)
		}
	}
	noToken := map[string]string{"COFFER_STATE": filepath.Join(dir, "other"), "COFFER_RELAY": "http://127.0.0.1:1", "COFFER_ACCOUNT": "a", "COFFER_PASSWORD": "correct horse battery"}
	if code, _, errs := run(t, noToken, "init", "--password", "--repo", filepath.Join(dir, "r3")); code != ExitUsage || !strings.Contains(errs, "no account token") {
		t.Errorf("init --password without a token: exit %d %s", code, errs)
	}
	badRelay := maps.Clone(noToken)
	badRelay["COFFER_RELAY"] = "127.0.0.1:7200"
	badRelay["COFFER_TOKEN"], badRelay["COFFER_VAULT_TOKEN"] = "t", "t"
	if code, _, errs := run(t, badRelay, "status"); code != ExitUsage || !strings.Contains(errs, "relay URL") {
		t.Errorf("a relay URL without a scheme: exit %d %s", code, errs)
	}

	if code, out, errs := run(t, env, "backup", src, "-q"); code != 0 || out != "" {
		t.Fatalf("backup -q: %d %q %s", code, out, errs)
	}
	for _, args := range [][]string{
		{"restore", "--to", filepath.Join(dir, "q1"), "-q"},
		{"verify", "-q"}, {"check", "-q"}, {"check", "--read-data", "-q"},
		{"repair", "-q"}, {"unlock", "-q"}, {"prune", "-q"},
	} {
		if code, out, errs := run(t, env, args...); code != 0 || out != "" || errs != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}

	// A state "directory" that is a file: unreadable, not "not set up".
	notDir := filepath.Join(dir, "state-file")
	write12(t, notDir, "x")
	for _, args := range [][]string{{"list"}, {"backup", src}, {"join", "--repo", filepath.Join(dir, "repo")}, {"init", "--repo", filepath.Join(dir, "r4")}} {
		code, _, errs := run(t, map[string]string{"COFFER_STATE": notDir}, args...)
		if code == 0 || !strings.Contains(errs, "cannot read this device's state directory") || strings.Contains(errs, "no Coffer set up") {
			t.Errorf("%v with an unreadable state: exit %d %s", args, code, errs)
		}
	}
}
