package e2e

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type generation struct {
	Number uint64 `json:"generation"`
	Files  int64  `json:"files"`
	Bytes  int64  `json:"bytes"`
}

type listOutput struct {
	Repository   string       `json:"repository"`
	RepositoryID string       `json:"repository_id"`
	Generations  []generation `json:"generations"`
}

// TestCLIFlow: init → backup → change → backup → list → verify → restore
// on a new device (key file, COFFER_KEY, --key) → prune, with --json
// output parsed at every step.
func TestCLIFlow(t *testing.T) {
	dir := t.TempDir()
	data := smallTree(t, dir, 2500<<10)
	repo := filepath.Join(dir, "repo")
	keyFile := filepath.Join(dir, "key.txt")
	phone := newEnv(t)

	var ini struct {
		Repository   string `json:"repository"`
		RepositoryID string `json:"repository_id"`
		Key          string `json:"key"`
		Fingerprint  string `json:"key_fingerprint"`
		KeyFile      string `json:"key_file"`
		Warning      string `json:"warning"`
	}
	phone.okJSON(&ini, "init", "--repo", repo, "--key-file", keyFile)
	if len(ini.Key) != 79 || strings.Count(ini.Key, " ") != 15 {
		t.Fatalf("init printed key %q, want 16 groups of 4 digits", ini.Key)
	}
	if ini.Repository != repo || len(ini.RepositoryID) != 32 || ini.KeyFile != keyFile || !strings.Contains(ini.Warning, "recover") {
		t.Fatalf("init output: %+v", ini)
	}
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, fi.Mode())
	}
	if got := readKeyDigits(t, keyFile); got != ini.Key {
		t.Fatalf("key file holds %q, init showed %q", got, ini.Key)
	}

	// The first backup.
	var b1 struct {
		Generation generation `json:"generation"`
		NewPieces  int64      `json:"new_pieces"`
	}
	phone.okJSON(&b1, "backup", data)
	if b1.Generation.Number != 1 || b1.NewPieces == 0 || b1.Generation.Files != 5 {
		t.Fatalf("backup 1: %+v", b1)
	}
	snap1 := snap(t, data)

	// Change a little and back up again: unchanged files are not read.
	writeFile(t, filepath.Join(data, "notes.txt"), "new notes\n", 0o644)
	writeFile(t, filepath.Join(data, "sub", "new.txt"), "new file\n", 0o644)
	if err := os.Remove(filepath.Join(data, "secret.txt")); err != nil {
		t.Fatal(err)
	}
	var b2 struct {
		Generation     generation `json:"generation"`
		UnchangedFiles int64      `json:"unchanged_files"`
		ReusedPieces   int64      `json:"reused_pieces"`
	}
	phone.okJSON(&b2, "backup", data)
	if b2.Generation.Number != 2 || b2.UnchangedFiles < 2 {
		t.Fatalf("backup 2: %+v", b2)
	}
	snap2 := snap(t, data)

	var list listOutput
	phone.okJSON(&list, "list")
	if len(list.Generations) != 2 || list.Generations[0].Number != 1 || list.Generations[1].Number != 2 || list.RepositoryID != ini.RepositoryID {
		t.Fatalf("list: %+v", list)
	}
	if r := phone.ok("list"); !strings.Contains(r.stdout, "BACKUP") || !strings.Contains(r.stdout, "data") {
		t.Fatalf("list for people:\n%s", r.stdout)
	}
	var ver struct {
		Generations int   `json:"generations"`
		Pieces      int64 `json:"pieces"`
	}
	phone.okJSON(&ver, "verify")
	if ver.Generations != 2 || ver.Pieces == 0 {
		t.Fatalf("verify: %+v", ver)
	}

	// A new device: only the repository URL and the key.
	laptop := newEnv(t)
	out := filepath.Join(dir, "restored-latest")
	var rs struct {
		Generation generation `json:"generation"`
		Target     string     `json:"target"`
	}
	laptop.okJSON(&rs, "restore", "--repo", repo, "--key-file", keyFile, "--to", out)
	if rs.Generation.Number != 2 || rs.Target != out {
		t.Fatalf("restore: %+v", rs)
	}
	sameTree(t, snap2, filepath.Join(out, "data"))
	if _, err := os.Stat(laptop.state); err == nil {
		t.Fatalf("a restore on a device that is not set up created its state directory")
	}

	// Backup 1 with the key in COFFER_KEY.
	laptop.vars = []string{"COFFER_KEY=" + ini.Key, "COFFER_REPO=" + repo}
	out1 := filepath.Join(dir, "restored-1")
	laptop.ok("restore", "--backup", "1", "--to", out1)
	sameTree(t, snap1, filepath.Join(out1, "data"))

	// --key works but warns that other users can see it.
	laptop.vars = nil
	out3 := filepath.Join(dir, "restored-key-flag")
	r := laptop.ok("restore", "--repo", repo, "--key", strings.ToUpper(strings.ReplaceAll(ini.Key, " ", "-")), "--to", out3)
	if !strings.Contains(r.stderr, "warning") || !strings.Contains(r.stderr, "--key-file") {
		t.Fatalf("--key gave no warning:\n%s", r)
	}
	sameTree(t, snap2, filepath.Join(out3, "data"))

	// Restoring into a non-empty directory is refused.
	laptop.want(1, "restore", "--repo", repo, "--key-file", keyFile, "--to", out3)

	// Prune down to one backup.
	var pr struct {
		Kept    []uint64 `json:"kept"`
		Removed []uint64 `json:"removed"`
	}
	phone.okJSON(&pr, "prune", "--keep", "1")
	if len(pr.Kept) != 1 || pr.Kept[0] != 2 || len(pr.Removed) != 1 || pr.Removed[0] != 1 {
		t.Fatalf("prune: %+v", pr)
	}
	phone.okJSON(&list, "list")
	if len(list.Generations) != 1 || list.Generations[0].Number != 2 {
		t.Fatalf("list after prune: %+v", list)
	}
	phone.ok("verify")
	phone.want(2, "prune", "--keep", "0")

	var v struct {
		Version string `json:"version"`
	}
	phone.okJSON(&v, "version")
	if v.Version == "" {
		t.Fatal("version printed no version")
	}
}

// TestInitRefusals: init does not overwrite a key file, a device's state
// or a repository.
func TestInitRefusals(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t)
	keyFile := filepath.Join(dir, "key.txt")
	writeFile(t, keyFile, "precious\n", 0o600)
	repo := filepath.Join(dir, "repo")
	msg := e.wantJSONError(1, "init", "--repo", repo, "--key-file", keyFile)
	if !strings.Contains(msg, "already exists") {
		t.Fatalf("init over a key file: %s", msg)
	}
	if b, _ := os.ReadFile(keyFile); string(b) != "precious\n" {
		t.Fatal("init overwrote the key file")
	}
	if _, err := os.Stat(repo); err == nil {
		t.Fatal("init created the repository before refusing the key file")
	}
	e.want(2, "init")
	r := e.ok("init", "--repo", repo)
	if !strings.Contains(r.stdout, "Nobody can recover it") {
		t.Fatalf("init printed no warning:\n%s", r)
	}
	e.want(1, "init", "--repo", filepath.Join(dir, "repo2"))
	other := newEnv(t)
	msg = other.wantJSONError(1, "init", "--repo", repo)
	if !strings.Contains(msg, "already exists") {
		t.Fatalf("init over a repository: %s", msg)
	}
}

// TestExitCodes checks the documented exit codes.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	data := smallTree(t, dir, 300<<10)
	repo := filepath.Join(dir, "repo")
	keyFile := filepath.Join(dir, "key.txt")
	phone := newEnv(t)
	phone.ok("init", "--repo", repo, "--key-file", keyFile)
	phone.ok("backup", data)
	key := readKeyDigits(t, keyFile)
	laptop := newEnv(t)

	// 2: usage.
	laptop.want(2, "frobnicate")
	laptop.want(2, "list", "--no-such-flag")
	laptop.want(2, "restore", "--repo", repo, "--key-file", keyFile) // no --to
	laptop.want(2, "list")                                           // no repository, no state
	laptop.want(2, "list", "--repo", repo)                           // no key
	laptop.want(2, "list", "--repo", repo, "--key", key, "--key-file", keyFile)
	// 2: a malformed key, with a message that says what is wrong.
	r := laptop.want(2, "list", "--repo", repo, "--key", key[:70])
	if !strings.Contains(r.stderr, "missing") {
		t.Fatalf("malformed key message: %s", r)
	}
	laptop.vars = []string{"COFFER_KEY=" + strings.Replace(key, "0", "O", 1) + "0"}
	laptop.wantJSONError(2, "list", "--repo", repo)
	laptop.vars = nil

	// 3: a wrong key, reported as a wrong key.
	wrong := "0123 4567 89ab cdef 0123 4567 89ab cdef 0123 4567 89ab cdef 0123 4567 89ab cdef"
	if wrong == key {
		t.Skip("astronomically unlikely")
	}
	laptop.vars = []string{"COFFER_KEY=" + wrong}
	msg := laptop.wantJSONError(3, "restore", "--repo", repo, "--to", filepath.Join(dir, "x"))
	if !strings.Contains(msg, "key") {
		t.Fatalf("wrong-key message: %s", msg)
	}
	r = laptop.want(3, "list", "--repo", repo)
	if !strings.HasPrefix(r.stderr, "coffer: list: ") || !strings.Contains(r.stderr, "64-digit key") {
		t.Fatalf("wrong-key message for people: %s", r)
	}
	nothingAt(t, filepath.Join(dir, "x"))

	// 1: no repository there (and none is created by looking).
	laptop.vars = []string{"COFFER_KEY=" + key}
	missing := filepath.Join(dir, "no-such-repo")
	msg = laptop.wantJSONError(1, "list", "--repo", missing)
	if !strings.Contains(msg, "repository") {
		t.Fatalf("missing repository message: %s", msg)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Fatal("looking for a repository created its directory")
	}
	empty := filepath.Join(dir, "empty-dir")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	laptop.want(1, "list", "--repo", empty)

	// 6: storage unreachable (nothing listens on the port).
	port := closedPort(t)
	start := time.Now()
	laptop.vars = append(laptop.vars, "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_REGION=us-east-1")
	r = laptop.run("list", "--repo", s3URL(port, "bucket"))
	if r.code != 6 {
		t.Fatalf("unreachable S3: want exit 6, got %s", r)
	}
	if time.Since(start) > 90*time.Second {
		t.Errorf("reporting unreachable storage took %v", time.Since(start))
	}

	// 5: a tampered object.
	laptop.vars = []string{"COFFER_KEY=" + key}
	obj := largestData(t, repo)
	undo := flip(t, repo, obj, 200)
	target := filepath.Join(dir, "restore-tampered")
	msg = laptop.wantJSONError(5, "restore", "--repo", repo, "--to", target)
	if !strings.Contains(msg, "integrity") {
		t.Fatalf("tamper message: %s", msg)
	}
	nothingAt(t, target)
	laptop.want(5, "verify", "--repo", repo)
	phone.want(5, "verify")
	undo()
	laptop.ok("verify", "--repo", repo)
}

// closedPort returns a loopback TCP port nothing listens on.
func closedPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// TestRollback: a device that has seen backup N refuses a repository whose
// newest backup is older (exit 5); a new device cannot tell.
func TestRollback(t *testing.T) {
	dir := t.TempDir()
	data := smallTree(t, dir, 0)
	repo := filepath.Join(dir, "repo")
	keyFile := filepath.Join(dir, "key.txt")
	phone := newEnv(t)
	phone.ok("init", "--repo", repo, "--key-file", keyFile)
	phone.ok("backup", data)
	// Keep a copy of the repository as it was after backup 1.
	old := filepath.Join(dir, "repo-after-1")
	if out, err := exec.Command("cp", "-a", repo, old).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	writeFile(t, filepath.Join(data, "more.txt"), "more\n", 0o644)
	phone.ok("backup", data)
	phone.ok("list")

	newer := filepath.Join(dir, "repo-after-2")
	if out, err := exec.Command("cp", "-a", repo, newer).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}

	// The storage provider serves the old state.
	if err := os.RemoveAll(repo); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(old, repo); err != nil {
		t.Fatal(err)
	}
	msg := phone.wantJSONError(5, "list")
	if !strings.Contains(msg, "rolled back") {
		t.Fatalf("rollback message: %s", msg)
	}
	target := filepath.Join(dir, "out")
	phone.want(5, "restore", "--to", target)
	nothingAt(t, target)
	phone.want(5, "verify")
	phone.want(5, "backup", data)

	// A new device has no way to know.
	laptop := newEnv(t)
	laptop.vars = []string{"COFFER_KEY=" + readKeyDigits(t, keyFile), "COFFER_REPO=" + repo}
	var list listOutput
	laptop.okJSON(&list, "list")
	if len(list.Generations) != 1 {
		t.Fatalf("list: %+v", list)
	}

	// The newer state back: all is well again.
	if err := os.RemoveAll(repo); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", newer, repo).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	phone.ok("list")

	// The newest manifest deleted.
	manifests := objectsWithPrefix(t, repo, "manifests/")
	if len(manifests) != 2 {
		t.Fatalf("manifests: %v", manifests)
	}
	if err := os.Remove(filepath.Join(repo, manifests[1])); err != nil {
		t.Fatal(err)
	}
	r := phone.want(5, "list")
	if !strings.Contains(r.stderr, "rolled back") {
		t.Fatalf("rollback message: %s", r)
	}

	// A repository replaced by another one, under another key, at the
	// same URL: the device's key does not open it. (The same key in a new
	// repository is tested in TestReplacedRepository.)
	if err := os.RemoveAll(repo); err != nil {
		t.Fatal(err)
	}
	other := newEnv(t)
	other.ok("init", "--repo", repo)
	phone.want(3, "list")
}

// TestHumanOutput checks messages meant for people on a few commands.
func TestHumanOutput(t *testing.T) {
	dir := t.TempDir()
	data := smallTree(t, dir, 0)
	e := newEnv(t)
	repo := filepath.Join(dir, "repo")
	r := e.ok("init", "--repo", repo)
	if !strings.Contains(r.stdout, "64-digit") {
		t.Fatalf("init:\n%s", r.stdout)
	}
	r = e.ok("backup", data)
	if !strings.Contains(r.stdout, "Backup 1") || r.stderr != "" {
		t.Fatalf("backup:\n%s", r)
	}
	r = e.ok("backup", "--quiet", data)
	if r.stdout != "" || r.stderr != "" {
		t.Fatalf("backup --quiet printed something:\n%s", r)
	}
	r = e.ok("list")
	if !strings.Contains(r.stdout, "BACKUP") {
		t.Fatalf("list:\n%s", r.stdout)
	}
	var any map[string]any
	if err := json.Unmarshal([]byte(e.ok("verify", "--json").stdout), &any); err != nil {
		t.Fatal(err)
	}
	r = e.want(2, "restore")
	if !strings.HasPrefix(r.stderr, "coffer: restore: ") || !strings.Contains(r.stderr, "--to") {
		t.Fatalf("usage error:\n%s", r)
	}
}
