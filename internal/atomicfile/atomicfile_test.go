package atomicfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// names lists dir's entries.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func wantFile(t *testing.T, path, content string, perm fs.FileMode) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != content {
		t.Fatalf("%s holds %q, want %q", path, b, content)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != perm {
		t.Fatalf("%s has mode %v, want %v", path, fi.Mode().Perm(), perm)
	}
}

var errInjected = errors.New("injected fsync failure")

func failSync(*os.File) error { return errInjected }

func TestCreateExclusive(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if err := CreateExclusive(p, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantFile(t, p, "secret\n", 0o600)
	if got := names(t, dir); !slices.Equal(got, []string{"key"}) {
		t.Fatalf("directory holds %v, want only key", got)
	}
}

func TestCreateExclusiveRefusesExisting(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := CreateExclusive(p, []byte("new"), 0o600)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("CreateExclusive over an existing file: %v, want fs.ErrExist", err)
	}
	wantFile(t, p, "old", 0o600) // untouched, not removed
	if err := CreateExclusive(dir, []byte("new"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("CreateExclusive over a directory: %v, want fs.ErrExist", err)
	}
}

func TestCreateExclusiveFailureRemovesFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if err := createExclusive(p, []byte("secret"), 0o600, failSync); !errors.Is(err, errInjected) {
		t.Fatalf("got %v, want the fsync failure", err)
	}
	if got := names(t, dir); len(got) != 0 {
		t.Fatalf("a failed CreateExclusive left %v", got)
	}
	if err := CreateExclusive(filepath.Join(dir, "missing", "key"), nil, 0o600); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("CreateExclusive in a missing directory: %v, want fs.ErrNotExist", err)
	}
}

func TestReplace(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.json")
	// Creates when missing; the mode is exact (no umask).
	if err := Replace(p, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantFile(t, p, "one", 0o644)
	if err := Replace(p, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantFile(t, p, "two", 0o600)
	if got := names(t, dir); !slices.Equal(got, []string{"config.json"}) {
		t.Fatalf("directory holds %v, want only config.json", got)
	}
}

func TestReplaceFailureLeavesOld(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.json")
	if err := Replace(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := replace(p, []byte("new"), 0o600, failSync); !errors.Is(err, errInjected) {
		t.Fatalf("got %v, want the fsync failure", err)
	}
	wantFile(t, p, "old", 0o600)
	if got := names(t, dir); !slices.Equal(got, []string{"config.json"}) {
		t.Fatalf("a failed Replace left %v", got)
	}
	// The rename fails: path is a directory that is not empty.
	sub := filepath.Join(dir, "sub")
	if err := os.MkdirAll(filepath.Join(sub, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Replace(sub, []byte("new"), 0o600); err == nil {
		t.Fatal("Replace over a non-empty directory succeeded")
	}
	if got := names(t, dir); !slices.Equal(got, []string{"config.json", "sub"}) {
		t.Fatalf("a failed rename left %v", got)
	}
}

// TestReplaceAtomic reads the file while it is replaced over and over: each
// read sees one whole version, and the temporary files are beside the file,
// named after it.
func TestReplaceAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state")
	a, b := bytes.Repeat([]byte("a"), 1<<20), bytes.Repeat([]byte("b"), 1<<20)
	if err := Replace(p, a, 0o600); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var readErr error
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := os.ReadFile(p)
			if err != nil {
				readErr = err
				return
			}
			if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
				readErr = errors.New("read a mix of two versions or a partial file")
				return
			}
			ents, err := os.ReadDir(dir)
			if err != nil {
				readErr = err
				return
			}
			for _, e := range ents {
				if n := e.Name(); n != "state" && !strings.HasPrefix(n, ".state.tmp-") {
					readErr = errors.New("unexpected file " + n)
					return
				}
			}
		}
	})
	for i := range 50 {
		data := a
		if i%2 == 0 {
			data = b
		}
		if err := Replace(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if readErr != nil {
		t.Fatal(readErr)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"state"}) {
		t.Fatalf("directory holds %v, want only state", got)
	}
}

func TestSyncDir(t *testing.T) {
	if err := SyncDir(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("SyncDir of a missing directory: %v, want fs.ErrNotExist", err)
	}
}
