package repository

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRegressStaleStaging (bug 6): a staging directory left by a killed
// restore (decrypted data) is removed by the next restore into the same
// parent, and reported; one a running restore holds is not.
func TestRegressStaleStaging(t *testing.T) {
	old := stagingGrace
	stagingGrace = 0
	defer func() { stagingGrace = old }()
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	writeFile(t, filepath.Join(src, "a"), []byte("a"), 0o644)
	ctx := context.Background()
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	parent := filepath.Join(f.dir, "p")
	stale := filepath.Join(parent, ".coffer-restore-0123456789ab")
	writeFile(t, filepath.Join(stale, "src", "secret"), []byte("decrypted"), 0o600)
	os.Chmod(filepath.Join(stale, "src"), 0o500)
	held, fd, err := makeStaging(parent) // a restore in progress
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	sum, err := f.repo.Restore(ctx, 0, filepath.Join(parent, "out"), RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.CleanedStaging) != 1 || sum.CleanedStaging[0] != stale {
		t.Fatalf("cleaned %v", sum.CleanedStaging)
	}
	if _, err := os.Lstat(stale); err == nil {
		t.Fatal("stale staging directory left")
	}
	if _, err := os.Lstat(held); err != nil {
		t.Fatal("the staging directory of a running restore was removed")
	}
}

// TestRegressRestoreIntoEmptyDir (bug 7): an existing empty target keeps
// its inode and mode.
func TestRegressRestoreIntoEmptyDir(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	sampleTree(t, src)
	ctx := context.Background()
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(f.dir, "target")
	os.Mkdir(target, 0o750)
	os.Chmod(target, 0o750)
	var before, after syscall.Stat_t
	syscall.Stat(target, &before)
	if _, err := f.repo.Restore(ctx, 0, target, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	syscall.Stat(target, &after)
	if before.Ino != after.Ino || after.Mode&0o7777 != 0o750 {
		t.Fatalf("target replaced: inode %d → %d, mode %o", before.Ino, after.Ino, after.Mode&0o7777)
	}
	if got, want := treeDigest(t, filepath.Join(target, "src")), treeDigest(t, src); got != want {
		t.Fatalf("restored tree differs")
	}
	assertNoStaging(t, target)
	assertNoStaging(t, f.dir)
}

// TestRestoreIntoMountPoint (bug 7): an empty mount point is a valid
// target (staging happens inside it, on its file system).
func TestRestoreIntoMountPoint(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	sampleTree(t, src)
	ctx := context.Background()
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(f.dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	defer exec.Command("umount", mnt).Run()
	if _, err := f.repo.Restore(ctx, 0, mnt, RestoreOptions{}); err != nil {
		t.Fatalf("restore into a mount point: %v", err)
	}
	if got, want := treeDigest(t, filepath.Join(mnt, "src")), treeDigest(t, src); got != want {
		t.Fatalf("restored tree differs")
	}
}

// TestRegressSparse (bug 7): a sparse file comes back sparse.
func TestRegressSparse(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	os.MkdirAll(src, 0o755)
	p := filepath.Join(src, "sparse")
	fh, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	fh.WriteAt([]byte("head"), 0)
	fh.WriteAt([]byte("tail"), 64<<20-4)
	fh.Truncate(64 << 20)
	fh.Close()
	os.WriteFile(filepath.Join(src, "zeros"), nil, 0o644)
	os.Truncate(filepath.Join(src, "zeros"), 8<<20)
	ctx := context.Background()
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(f.dir, "out")
	if _, err := f.repo.Restore(ctx, 0, out, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"sparse", "zeros"} {
		var st syscall.Stat_t
		syscall.Stat(filepath.Join(out, "src", n), &st)
		t.Logf("%s: size %d, %d bytes allocated", n, st.Size, st.Blocks*512)
		if st.Blocks*512 > 1<<20 {
			t.Fatalf("%s: %d bytes allocated for a sparse file of %d", n, st.Blocks*512, st.Size)
		}
	}
	if got, want := treeDigest(t, filepath.Join(out, "src")), treeDigest(t, src); got != want {
		t.Fatalf("restored tree differs")
	}
}

// TestRegressSetuidStripped (bug 7): setuid and setgid are not restored on
// files, since ownership is not.
func TestRegressSetuidStripped(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	writeFile(t, filepath.Join(src, "su"), []byte("#!/bin/sh\n"), 0o755)
	os.Chmod(filepath.Join(src, "su"), 0o755|os.ModeSetuid|os.ModeSetgid)
	os.MkdirAll(filepath.Join(src, "shared"), 0o775)
	os.Chmod(filepath.Join(src, "shared"), 0o775|os.ModeSetgid|os.ModeSticky)
	ctx := context.Background()
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(f.dir, "out")
	if _, err := f.repo.Restore(ctx, 0, out, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(out, "src", "su"))
	if fi.Mode() != 0o755 {
		t.Fatalf("restored mode %v, want -rwxr-xr-x", fi.Mode())
	}
	di, _ := os.Stat(filepath.Join(out, "src", "shared"))
	if di.Mode() != os.ModeDir|0o775|os.ModeSetgid|os.ModeSticky {
		t.Fatalf("restored directory mode %v", di.Mode())
	}
}

// TestRestoreDeepPath: a path longer than PATH_MAX restores (everything
// is created relative to directory descriptors).
func TestRestoreDeepPath(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	comp := strings.Repeat("d", 200)
	// Build it relative, chdir-free: with openat.
	os.MkdirAll(src, 0o755)
	fd, _ := unix.Open(src, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	for range 30 { // 30 × 201 bytes > 4096
		unix.Mkdirat(fd, comp, 0o755)
		nfd, err := unix.Openat(fd, comp, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		fd = nfd
	}
	ffd, _ := unix.Openat(fd, "leaf", unix.O_WRONLY|unix.O_CREAT, 0o644)
	unix.Write(ffd, []byte("deep"))
	unix.Close(ffd)
	unix.Close(fd)
	ctx := context.Background()
	s, err := f.repo.Backup(ctx, []string{src}, BackupOptions{})
	if err != nil || s.Generation.Files != 1 || len(s.SkippedEntries) != 0 {
		t.Fatalf("backup: %+v %v", s, err)
	}
	out := filepath.Join(f.dir, "out")
	if _, err := f.repo.Restore(ctx, 0, out, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	removeTree(out)
	removeTree(src)
	if _, err := os.Lstat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("cleanup: %v", err)
	}
}
