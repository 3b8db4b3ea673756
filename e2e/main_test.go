// Package e2e tests the real coffer binary end to end: whole command-line
// flows, exit codes, tampered and mixed-up repositories, and backups killed
// at random points.
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cofferBin is the binary under test, built once by TestMain.
var cofferBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "coffer-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	cofferBin = filepath.Join(dir, "coffer")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", cofferBin, "./cmd/coffer")
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building coffer: %v\n", err)
		return 1
	}
	return m.Run()
}

// result is what one run of the binary did.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// env is the environment of a simulated device: its state directory and
// extra variables. Variables of the test process named COFFER_* are not
// passed on.
type env struct {
	t     testing.TB
	state string
	tmp   string
	vars  []string
}

func newEnv(t testing.TB) *env {
	d := t.TempDir()
	e := &env{t: t, state: filepath.Join(d, "state"), tmp: filepath.Join(d, "tmp")}
	if err := os.Mkdir(e.tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) environ(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "COFFER_") || strings.HasPrefix(kv, "TMPDIR=") {
			continue
		}
		out = append(out, kv)
	}
	out = append(out, "COFFER_STATE="+e.state, "TMPDIR="+e.tmp)
	out = append(out, e.vars...)
	return append(out, extra...)
}

// command prepares a run of coffer with args.
func (e *env) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, cofferBin, args...)
	cmd.Env = e.environ()
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs coffer with args to the end (at most two minutes).
func (e *env) run(args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		e.t.Fatalf("coffer %s: %v\n%s", strings.Join(args, " "), err, r)
	}
	return r
}

// ok runs coffer and fails the test unless it exits 0.
func (e *env) ok(args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("coffer %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// want runs coffer and fails the test unless it exits with code.
func (e *env) want(code int, args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != code {
		e.t.Fatalf("coffer %s: want exit %d, got %s", strings.Join(args, " "), code, r)
	}
	return r
}

// okJSON runs coffer with --json, expects exit 0 and decodes stdout.
func (e *env) okJSON(v any, args ...string) {
	e.t.Helper()
	r := e.ok(append(args, "--json")...)
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		e.t.Fatalf("coffer %s --json printed no JSON object: %v\n%s", strings.Join(args, " "), err, r)
	}
}

// wantJSONError runs coffer with --json, expects exit code and an error
// object with that code on stdout.
func (e *env) wantJSONError(code int, args ...string) string {
	e.t.Helper()
	r := e.want(code, append(args, "--json")...)
	var v struct {
		Error string `json:"error"`
		Code  int    `json:"code"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.Code != code || v.Error == "" {
		e.t.Fatalf("coffer %s --json: want {\"error\": …, \"code\": %d} on stdout, got %v\n%s", strings.Join(args, " "), code, err, r)
	}
	return v.Error
}

// writeRandom writes n pseudo-random bytes to path.
func writeRandom(t testing.TB, path string, rng *rand.Rand, n int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, n)
	fillRandom(rng, b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func fillRandom(rng *rand.Rand, b []byte) {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for ; i < len(b); i++ {
		b[i] = byte(rng.Uint32())
	}
}

func writeFile(t testing.TB, path, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// smallTree makes a small tree in dir/name: a few small files (one 0600,
// one empty), a nested directory, a symbolic link and one file of bigSize
// random bytes (several container chunks). It returns the tree's root.
func smallTree(t testing.TB, dir string, bigSize int) string {
	t.Helper()
	root := filepath.Join(dir, "data")
	writeFile(t, filepath.Join(root, "notes.txt"), strings.Repeat("chat line with some words\n", 40), 0o644)
	writeFile(t, filepath.Join(root, "secret.txt"), "only me\n", 0o600)
	writeFile(t, filepath.Join(root, "empty"), "", 0o644)
	writeFile(t, filepath.Join(root, "sub", "deeper", "c.txt"), "c\n", 0o640)
	if err := os.Symlink("sub/deeper/c.txt", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if bigSize > 0 {
		writeRandom(t, filepath.Join(root, "sub", "big.bin"), rand.New(rand.NewPCG(7, 7)), bigSize)
	}
	return root
}

// snapshot is what a tree holds: for every entry, its type and mode, and
// for files the SHA-256 of the contents, for links the target.
type snapshot map[string]string

func snap(t testing.TB, root string) snapshot {
	t.Helper()
	s := snapshot{}
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %x", sha256.Sum256(b))
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		}
		s[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (s snapshot) diff(o snapshot) string {
	var sb strings.Builder
	for k, v := range s {
		if w, ok := o[k]; !ok {
			fmt.Fprintf(&sb, "missing %s\n", k)
		} else if v != w {
			fmt.Fprintf(&sb, "%s: want %s, got %s\n", k, v, w)
		}
	}
	for k := range o {
		if _, ok := s[k]; !ok {
			fmt.Fprintf(&sb, "extra %s\n", k)
		}
	}
	return sb.String()
}

func sameTree(t testing.TB, want snapshot, dir string) {
	t.Helper()
	if d := want.diff(snap(t, dir)); d != "" {
		t.Fatalf("restored tree %s differs:\n%s", dir, d)
	}
}

// objects lists a local repository's stored objects (names relative to the
// repository, slash-separated), leaving out the backend's temporary files.
func objects(t testing.TB, repo string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(repo, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name, _ := filepath.Rel(repo, p)
		name = filepath.ToSlash(name)
		if de.IsDir() {
			if strings.HasPrefix(de.Name(), ".") && p != repo {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasPrefix(de.Name(), ".") {
			return nil
		}
		names = append(names, name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func objectsWithPrefix(t testing.TB, repo, prefix string) []string {
	var out []string
	for _, n := range objects(t, repo) {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}

// largest returns the largest object with the prefix.
// largestData returns the largest object holding file data: a piece of
// its own (data/) or a pack of small pieces (packs/).
func largestData(t testing.TB, repo string) string {
	t.Helper()
	best, bestSize := "", int64(-1)
	for _, prefix := range []string{"data/", "packs/"} {
		for _, n := range objectsWithPrefix(t, repo, prefix) {
			if fi, err := os.Stat(filepath.Join(repo, n)); err == nil && fi.Size() > bestSize {
				best, bestSize = n, fi.Size()
			}
		}
	}
	if best == "" {
		t.Fatalf("no data object in %s", repo)
	}
	return best
}

func largest(t testing.TB, repo, prefix string) string {
	t.Helper()
	var best string
	var bestSize int64 = -1
	for _, n := range objectsWithPrefix(t, repo, prefix) {
		fi, err := os.Stat(filepath.Join(repo, n))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > bestSize {
			best, bestSize = n, fi.Size()
		}
	}
	if best == "" {
		t.Fatalf("no object %s* in %s", prefix, repo)
	}
	return best
}

// flip flips one bit of byte off of object name, and returns a function
// that flips it back.
func flip(t testing.TB, repo, name string, off int64) func() {
	t.Helper()
	p := filepath.Join(repo, filepath.FromSlash(name))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b[0] ^= 0x01
		if _, err := f.WriteAt(b[:], off); err != nil {
			t.Fatal(err)
		}
	}
}

// saveObject returns a function that puts the object back as it is now.
func saveObject(t testing.TB, repo, name string) func() {
	t.Helper()
	p := filepath.Join(repo, filepath.FromSlash(name))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func readKeyDigits(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			return line
		}
	}
	t.Fatalf("no key in %s", path)
	return ""
}

// nothingAt fails unless target does not exist and its parent directory
// holds no staging directory left by a restore.
func nothingAt(t testing.TB, target string) {
	t.Helper()
	if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a refused restore left %s behind (%v)", target, err)
	}
	des, err := os.ReadDir(filepath.Dir(target))
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		if strings.HasPrefix(de.Name(), ".coffer") || strings.HasPrefix(de.Name(), filepath.Base(target)) {
			t.Fatalf("a refused restore left %s behind in %s", de.Name(), filepath.Dir(target))
		}
	}
}

// twoBackups is the start of a storage flow: a phone inits a repository at
// loc, backs up a small tree (one file of bigSize bytes among small ones)
// twice, with a file added in between, and checks that list shows both.
// It returns the test directory, the key file, the phone, the data
// directory and the tree the second backup holds.
func twoBackups(t *testing.T, loc string, bigSize int) (dir, keyFile string, phone *env, data string, want snapshot) {
	t.Helper()
	dir = t.TempDir()
	data = smallTree(t, dir, bigSize)
	keyFile = filepath.Join(dir, "key.txt")
	phone = newEnv(t)
	phone.ok("init", "--repo", loc, "--key-file", keyFile)
	phone.ok("backup", data)
	writeFile(t, filepath.Join(data, "later.txt"), "later\n", 0o644)
	phone.ok("backup", data)
	want = snap(t, data)
	var list listOutput
	phone.okJSON(&list, "list")
	if len(list.Generations) != 2 {
		t.Fatalf("list: %+v", list)
	}
	return dir, keyFile, phone, data, want
}
