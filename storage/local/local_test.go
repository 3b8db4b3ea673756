package local_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/local"
	"github.com/cofferhq/coffer/storage/storagetest"
)

func newBackend(t *testing.T) *local.Backend {
	t.Helper()
	b, err := local.New(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend { return newBackend(t) })
}

func put(t *testing.T, b *local.Backend, name, data string) {
	t.Helper()
	if err := b.Put(t.Context(), name, strings.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
}

func TestLayoutAndModes(t *testing.T) {
	b := newBackend(t)
	put(t, b, "data/ab/ab12", "hello")
	if err := b.PutIfAbsent(t.Context(), "manifests/1", strings.NewReader("m"), 1); err != nil {
		t.Fatal(err)
	}
	for path, wantMode := range map[string]os.FileMode{
		"":             os.ModeDir | 0o700,
		"data":         os.ModeDir | 0o700,
		"data/ab":      os.ModeDir | 0o700,
		"data/ab/ab12": 0o600,
		"manifests":    os.ModeDir | 0o700,
		"manifests/1":  0o600,
	} {
		fi, err := os.Stat(filepath.Join(b.Dir(), path))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != wantMode {
			t.Errorf("mode of %q = %v, want %v", path, fi.Mode(), wantMode)
		}
	}
	got, err := os.ReadFile(filepath.Join(b.Dir(), "data", "ab", "ab12"))
	if err != nil || string(got) != "hello" {
		t.Fatalf("file content = %q, %v; want \"hello\"", got, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(b.Dir(), ".tmp")); len(entries) != 0 {
		t.Errorf(".tmp holds %d files after successful puts, want 0", len(entries))
	}
	if err := b.PutIfAbsent(t.Context(), "manifests/1", strings.NewReader("n"), 1); err == nil {
		t.Fatal("second PutIfAbsent succeeded")
	}
	if entries, _ := os.ReadDir(filepath.Join(b.Dir(), ".tmp")); len(entries) != 0 {
		t.Errorf(".tmp holds %d files after a refused PutIfAbsent, want 0", len(entries))
	}
	if err := b.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestTempFilesIgnoredAndCleaned(t *testing.T) {
	b := newBackend(t)
	put(t, b, "a", "x")
	tmp := filepath.Join(b.Dir(), ".tmp")
	old := filepath.Join(tmp, "obj-old")
	fresh := filepath.Join(tmp, "obj-fresh")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	// A stray dot-file elsewhere is not an object either.
	if err := os.WriteFile(filepath.Join(b.Dir(), ".DS_Store"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := b.List(t.Context(), "", func(i storage.ObjectInfo) error {
		names = append(names, i.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != "a" {
		t.Fatalf("List = %q, want [a]", names)
	}
	if err := b.CleanTemp(time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("stale temp file still there (err %v)", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temp file removed: %v", err)
	}
}

func TestTmpDirRecreated(t *testing.T) {
	b := newBackend(t)
	if err := os.RemoveAll(filepath.Join(b.Dir(), ".tmp")); err != nil {
		t.Fatal(err)
	}
	put(t, b, "a", "x")
	if err := b.CleanTemp(0); err != nil {
		t.Fatal(err)
	}
}

func TestNew(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "x", "y")
	b, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.Location() != dir {
		t.Errorf("Location() = %q, want %q", b.Location(), dir)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := local.New(file); err == nil {
		t.Error("New on a regular file succeeded")
	}
	if _, err := local.New(""); err == nil {
		t.Error("New(\"\") succeeded")
	}
}

func TestNameBelowObject(t *testing.T) {
	b := newBackend(t)
	put(t, b, "a", "x")
	err := b.Put(t.Context(), "a/b", bytes.NewReader([]byte("y")), 1)
	if err == nil {
		t.Fatal("Put below an object succeeded")
	}
	t.Log(err)
}
