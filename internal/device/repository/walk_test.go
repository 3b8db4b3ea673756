package repository

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWalkSwapDirForSymlink (bug 8): a directory replaced by a symbolic
// link between the listing and the open is not followed.
func TestWalkSwapDirForSymlink(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	secret := filepath.Join(f.dir, "secret")
	writeFile(t, filepath.Join(secret, "shadow"), []byte("root:hash"), 0o600)
	writeFile(t, filepath.Join(src, "d", "x"), []byte("x"), 0o644)
	testFault = func(op, rel string, off int64) error {
		if op == "open" && rel == "src/d" {
			os.Rename(filepath.Join(src, "d"), filepath.Join(f.dir, "moved"))
			os.Symlink(secret, filepath.Join(src, "d"))
		}
		return nil
	}
	defer func() { testFault = nil }()
	s, err := f.repo.Backup(context.Background(), []string{src}, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.SkippedEntries) != 1 || !strings.HasSuffix(s.SkippedEntries[0].Path, "/src/d") {
		t.Fatalf("skipped %+v", s.SkippedEntries)
	}
	out := filepath.Join(f.dir, "out")
	if _, err := f.repo.Restore(context.Background(), 0, out, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(out, "src", "d", "shadow")); err == nil {
		t.Fatal("the backup followed a symbolic link swapped in for a directory")
	}
}

// TestWalkSwapFileForFIFO (bug 8): a file replaced by a FIFO is not
// opened for reading (the backup does not hang); a FIFO listed as one is
// recorded and restored as a FIFO.
func TestWalkSwapFileForFIFO(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	writeFile(t, filepath.Join(src, "f"), []byte("data"), 0o644)
	if err := syscall.Mkfifo(filepath.Join(src, "pipe"), 0o640); err != nil {
		t.Fatal(err)
	}
	testFault = func(op, rel string, off int64) error {
		if op == "open" && rel == "src/f" {
			os.Remove(filepath.Join(src, "f"))
			syscall.Mkfifo(filepath.Join(src, "f"), 0o644)
		}
		return nil
	}
	defer func() { testFault = nil }()
	done := make(chan struct{})
	var s *BackupSummary
	var err error
	go func() { s, err = f.repo.Backup(context.Background(), []string{src}, BackupOptions{}); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("backup hung on a FIFO")
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(s.SkippedEntries) != 1 || !strings.HasSuffix(s.SkippedEntries[0].Path, "/src/f") {
		t.Fatalf("skipped %+v", s.SkippedEntries)
	}
	out := filepath.Join(f.dir, "out")
	if _, err := f.repo.Restore(context.Background(), 0, out, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(filepath.Join(out, "src", "pipe"))
	if err != nil || fi.Mode().Type() != os.ModeNamedPipe || fi.Mode().Perm() != 0o640 {
		t.Fatalf("restored FIFO: %v %v", fi, err)
	}
}

// TestWalkExcludesRepository (bug 8): the repository inside a backed-up
// path is skipped with a warning.
func TestWalkExcludesRepository(t *testing.T) {
	f := newFixture(t)
	writeFile(t, filepath.Join(f.dir, "file"), []byte("x"), 0o644)
	s, err := f.repo.Backup(context.Background(), []string{f.dir}, BackupOptions{Exclude: []Exclusion{{Path: filepath.Join(f.dir, "repo"), What: "the repository"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.SkippedEntries) != 1 || s.SkippedEntries[0].Path != filepath.Join(f.dir, "repo") || !strings.Contains(s.SkippedEntries[0].Reason, "the repository") {
		t.Fatalf("skipped %+v", s.SkippedEntries)
	}
	if s.Generation.Files != 1 {
		t.Fatalf("%d files backed up", s.Generation.Files)
	}
}

// TestSkippedKinds (issue 12, item 11): a socket is skipped as a special
// file named in words, an excluded directory as excluded, a file that
// cannot be opened as an error; only the last counts in SkippedErrors.
func TestSkippedKinds(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	writeFile(t, filepath.Join(src, "ok"), []byte("x"), 0o644)
	writeFile(t, filepath.Join(src, "locked"), []byte("x"), 0o644)
	writeFile(t, filepath.Join(src, "state", "k"), []byte("x"), 0o600)
	sock := filepath.Join(src, "sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	defer SetTestFault(func(op, rel string, off int64) error {
		if op == "open" && rel == "src/locked" {
			return syscall.EACCES
		}
		return nil
	})()
	s, err := f.repo.Backup(context.Background(), []string{src}, BackupOptions{Exclude: []Exclusion{{Path: filepath.Join(src, "state"), What: "the state"}}})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]SkippedEntry{}
	for _, e := range s.SkippedEntries {
		kinds[filepath.Base(e.Path)] = e
	}
	if e := kinds["sock"]; e.Kind != SkipSpecial || !strings.Contains(e.Reason, "it is a socket") {
		t.Errorf("socket: %+v", e)
	}
	if e := kinds["state"]; e.Kind != SkipExcluded {
		t.Errorf("excluded: %+v", e)
	}
	if e := kinds["locked"]; e.Kind != SkipError || !strings.Contains(e.Reason, "permission denied") {
		t.Errorf("unreadable: %+v", e)
	}
	if len(s.SkippedEntries) != 3 || s.SkippedErrors() != 1 {
		t.Errorf("skipped %+v, %d errors", s.SkippedEntries, s.SkippedErrors())
	}
}
