package repository

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/container"
	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/local"
)

type fixture struct {
	t     *testing.T
	dir   string
	store *local.Backend
	key   *backupkey.Key
	repo  *Repository
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := local.New(filepath.Join(dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	key := backupkey.New()
	repo, err := Init(context.Background(), st, key)
	if err != nil {
		t.Fatal(err)
	}
	repo.pieceSize = 64 << 10 // many pieces from small files
	return &fixture{t: t, dir: dir, store: st, key: key, repo: repo}
}

func writeFile(t *testing.T, p string, data []byte, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, mode)
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// sampleTree makes a chat-like tree: a database, media, an empty file, an
// empty directory and a symbolic link.
func sampleTree(t *testing.T, root string) {
	t.Helper()
	var db bytes.Buffer
	for i := 0; db.Len() < 300<<10; i++ {
		fmt.Fprintf(&db, "2026-11-%02d 10:%02d alice: message number %d about lunch\n", i%28+1, i%60, i)
	}
	writeFile(t, filepath.Join(root, "chat", "msgstore.db"), db.Bytes(), 0o600)
	writeFile(t, filepath.Join(root, "chat", "wal"), nil, 0o644)
	writeFile(t, filepath.Join(root, "media", "2026", "a.jpg"), randBytes(150<<10), 0o644)
	writeFile(t, filepath.Join(root, "media", "2026", "b.jpg"), randBytes(64<<10), 0o640)
	writeFile(t, filepath.Join(root, "media", "b-side.jpg"), randBytes(1000), 0o644)
	writeFile(t, filepath.Join(root, "media", "run.sh"), []byte("#!/bin/sh\n"), 0o755)
	os.MkdirAll(filepath.Join(root, "media", "empty"), 0o750)
	os.Symlink("2026/a.jpg", filepath.Join(root, "media", "latest.jpg"))
	old := time.Date(2025, 3, 4, 5, 6, 7, 891011, time.UTC)
	os.Chtimes(filepath.Join(root, "media", "2026", "a.jpg"), old, old)
}

// treeDigest describes a tree: type, mode, size, content and mtime of every
// entry, so two trees compare equal only if restored exactly.
func treeDigest(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil // the target directory itself is not part of the backup
		}
		fi, _ := os.Lstat(p)
		line := fmt.Sprintf("%s %v", rel, fi.Mode())
		switch {
		case fi.Mode().IsRegular():
			data, _ := os.ReadFile(p)
			line += fmt.Sprintf(" %d %x %d", fi.Size(), data[:min(len(data), 16)], fi.ModTime().UnixNano())
			line += fmt.Sprintf(" %x", sha(data))
		case fi.Mode()&fs.ModeSymlink != 0:
			tgt, _ := os.Readlink(p)
			line += " -> " + tgt
		case fi.IsDir() && rel != ".":
			line += fmt.Sprintf(" %d", fi.ModTime().UnixNano())
		}
		lines = append(lines, line)
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func sha(b []byte) []byte {
	s := sha256Sum(b)
	return s[:8]
}

func TestBackupRestoreRoundTrip(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	sampleTree(t, src)
	ctx := context.Background()
	sum, err := f.repo.Backup(ctx, []string{filepath.Join(src, "chat"), filepath.Join(src, "media")}, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Generation.Number != 1 || sum.Generation.Files != 6 || sum.Generation.Links != 1 || sum.NewPieces == 0 {
		t.Fatalf("summary %+v", sum)
	}
	// A new device: open with only the storage and the key.
	k2, _ := backupkey.Parse(f.key.Digits())
	repo2, err := Open(ctx, f.store, k2)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(f.dir, "restored")
	rs, err := repo2.Restore(ctx, 0, out, RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rs.Files != 6 || rs.Generation.Number != 1 {
		t.Fatalf("restore summary %+v", rs)
	}
	if got, want := treeDigest(t, out), treeDigest(t, src); got != want {
		t.Fatalf("restored tree differs:\n got: %s\nwant: %s", got, want)
	}
	assertNoStaging(t, f.dir)
}

// TestVersionRecorded: the program's version comes in BackupOptions and
// is read back from the manifest; without one, DefaultVersion.
func TestVersionRecorded(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	writeFile(t, filepath.Join(src, "a"), []byte("a"), 0o644)
	ctx := context.Background()
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{Version: "v1.2.3"}); err != nil {
		t.Fatal(err)
	}
	gens, err := f.repo.Generations(ctx)
	if err != nil || len(gens) != 2 {
		t.Fatalf("Generations: %v, %v", gens, err)
	}
	if gens[0].Version != DefaultVersion || gens[1].Version != "v1.2.3" {
		t.Fatalf("versions recorded: %q, %q; want %q, %q", gens[0].Version, gens[1].Version, DefaultVersion, "v1.2.3")
	}
}

func TestIncremental(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	sampleTree(t, src)
	ctx := context.Background()
	s1, err := f.repo.Backup(ctx, []string{src}, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := f.repo.Backup(ctx, []string{src}, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s2.NewPieces != 0 || s2.UnchangedFiles != s1.Generation.Files {
		t.Fatalf("second backup of an unchanged tree uploaded %d pieces, skipped %d of %d files", s2.NewPieces, s2.UnchangedFiles, s1.Generation.Files)
	}
	// Change one 64 KiB piece in the middle of the database: only it is new.
	db := filepath.Join(src, "chat", "msgstore.db")
	data, _ := os.ReadFile(db)
	copy(data[100<<10:], []byte("EDITED"))
	os.WriteFile(db, data, 0o600)
	// A copy of a media file under another name is content we already have.
	a, _ := os.ReadFile(filepath.Join(src, "media", "2026", "a.jpg"))
	writeFile(t, filepath.Join(src, "media", "copy.jpg"), a, 0o644)
	s3, err := f.repo.Backup(ctx, []string{src}, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s3.NewPieces != 1 {
		t.Fatalf("after a one-piece edit and a copied file, %d new pieces, want 1", s3.NewPieces)
	}
	if s3.Generation.Parent != 2 || s3.Generation.Number != 3 {
		t.Fatalf("generation %+v", s3.Generation)
	}
	out := filepath.Join(f.dir, "out")
	if _, err := f.repo.Restore(ctx, 0, out, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, want := treeDigest(t, filepath.Join(out, "src")), treeDigest(t, src); got != want {
		t.Fatalf("restored tree differs")
	}
	// The first generation still restores as it was.
	out1 := filepath.Join(f.dir, "out1")
	if _, err := f.repo.Restore(ctx, 1, out1, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out1, "src", "media", "copy.jpg")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("generation 1 has a file added later")
	}
	gens, err := f.repo.Generations(ctx)
	if err != nil || len(gens) != 3 {
		t.Fatalf("Generations: %v %v", gens, err)
	}
}

func TestWrongKey(t *testing.T) {
	f := newFixture(t)
	_, err := Open(context.Background(), f.store, backupkey.New())
	if !errors.Is(err, container.ErrWrongKey) {
		t.Fatalf("Open with another key: %v", err)
	}
}

func TestOpenNoRepository(t *testing.T) {
	st, _ := local.New(t.TempDir())
	_, err := Open(context.Background(), st, backupkey.New())
	if !errors.Is(err, ErrNoRepository) {
		t.Fatalf("got %v", err)
	}
	f := newFixture(t)
	if _, err := Init(context.Background(), f.store, backupkey.New()); !errors.Is(err, ErrRepositoryExists) {
		t.Fatalf("second Init: %v", err)
	}
}

func TestRestoreTargetRules(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	sampleTree(t, src)
	ctx := context.Background()
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	full := filepath.Join(f.dir, "full")
	writeFile(t, filepath.Join(full, "x"), []byte("x"), 0o644)
	if _, err := f.repo.Restore(ctx, 0, full, RestoreOptions{}); !errors.Is(err, ErrTargetNotEmpty) {
		t.Fatalf("restore into a non-empty dir: %v", err)
	}
	empty := filepath.Join(f.dir, "empty")
	os.Mkdir(empty, 0o755)
	if _, err := f.repo.Restore(ctx, 0, empty, RestoreOptions{}); err != nil {
		t.Fatalf("restore into an empty dir: %v", err)
	}
	if _, err := f.repo.Restore(ctx, 9, filepath.Join(f.dir, "nine"), RestoreOptions{}); !errors.Is(err, ErrNoGeneration) {
		t.Fatalf("restore of a missing generation: %v", err)
	}
	assertNoStaging(t, f.dir)
}

// objects returns the names of stored objects with a prefix.
func (f *fixture) objects(prefix string) []string {
	var names []string
	f.store.List(context.Background(), prefix, func(oi storage.ObjectInfo) error {
		names = append(names, oi.Name)
		return nil
	})
	sort.Strings(names)
	return names
}

func (f *fixture) path(name string) string {
	return filepath.Join(f.dir, "repo", filepath.FromSlash(name))
}

func assertNoStaging(t *testing.T, dir string) {
	t.Helper()
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		if strings.HasPrefix(de.Name(), ".coffer-restore-") {
			t.Fatalf("staging directory %s left behind", de.Name())
		}
	}
}

func TestTamperedPieceLeavesNothing(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	sampleTree(t, src)
	ctx := context.Background()
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	data := f.objects(dataPrefix)
	for i, name := range []string{data[0], data[len(data)/2], data[len(data)-1]} {
		p := f.path(name)
		orig, _ := os.ReadFile(p)
		bad := bytes.Clone(orig)
		bad[len(bad)/2] ^= 0x40
		os.WriteFile(p, bad, 0o600)
		out := filepath.Join(f.dir, fmt.Sprint("out", i))
		_, err := f.repo.Restore(ctx, 0, out, RestoreOptions{})
		if !errors.Is(err, container.ErrIntegrity) {
			t.Fatalf("restore with a flipped byte in %s: %v", name, err)
		}
		if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("refused restore left %s behind", out)
		}
		assertNoStaging(t, f.dir)
		if _, err := f.repo.Verify(ctx, nil); !errors.Is(err, container.ErrIntegrity) {
			t.Fatalf("verify with a flipped byte: %v", err)
		}
		os.WriteFile(p, orig, 0o600)
	}
	// A missing piece.
	os.Remove(f.path(data[0]))
	if _, err := f.repo.Restore(ctx, 0, filepath.Join(f.dir, "outm"), RestoreOptions{}); !errors.Is(err, container.ErrIntegrity) {
		t.Fatalf("restore with a missing piece: %v", err)
	}
	// One piece renamed over another.
	orig, _ := os.ReadFile(f.path(data[1]))
	os.WriteFile(f.path(data[0]), orig, 0o600)
	if _, err := f.repo.Verify(ctx, nil); !errors.Is(err, container.ErrIntegrity) {
		t.Fatalf("verify with a swapped piece: %v", err)
	}
}

func TestManifestSwapRefused(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	sampleTree(t, src)
	ctx := context.Background()
	f.repo.Backup(ctx, []string{src}, BackupOptions{})
	os.WriteFile(filepath.Join(src, "new"), []byte("new"), 0o644)
	f.repo.Backup(ctx, []string{src}, BackupOptions{})
	m := f.objects(manifestsPrefix)
	old, _ := os.ReadFile(f.path(m[0]))
	os.WriteFile(f.path(m[1]), old, 0o600)
	if _, err := f.repo.Restore(ctx, 0, filepath.Join(f.dir, "o"), RestoreOptions{}); !errors.Is(err, container.ErrIntegrity) {
		t.Fatalf("restore of a manifest copied over a newer one: %v", err)
	}
}

func TestPrune(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	ctx := context.Background()
	for i := range 5 {
		writeFile(t, filepath.Join(src, "f"), randBytes(100<<10+i), 0o644)
		if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	before := len(f.objects(dataPrefix))
	sum, err := f.repo.Prune(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(sum.Kept) != "[4 5]" || fmt.Sprint(sum.Removed) != "[1 2 3]" || sum.SweepDeferred || sum.DeletedPieces == 0 {
		t.Fatalf("prune summary %+v", sum)
	}
	if after := len(f.objects(dataPrefix)); int64(before-after) != sum.DeletedPieces {
		t.Fatalf("%d → %d objects, summary says %d deleted", before, after, sum.DeletedPieces)
	}
	vs, err := f.repo.Verify(ctx, nil)
	if err != nil || vs.Generations != 2 || vs.Unreferenced != 0 {
		t.Fatalf("verify after prune: %+v %v", vs, err)
	}
	for _, g := range []uint64{4, 5} {
		if _, err := f.repo.Restore(ctx, g, filepath.Join(f.dir, fmt.Sprint("r", g)), RestoreOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if len(f.objects(locksPrefix)) != 0 {
		t.Fatal("locks left behind")
	}
}

func TestPruneDefersSweepWhileBackupRuns(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	ctx := context.Background()
	for i := range 3 {
		writeFile(t, filepath.Join(src, "f"), randBytes(10<<10+i), 0o644)
		f.repo.Backup(ctx, []string{src}, BackupOptions{})
	}
	lk, err := f.repo.lock(ctx, lockShared) // a backup in progress
	if err != nil {
		t.Fatal(err)
	}
	before := len(f.objects(dataPrefix))
	sum, err := f.repo.Prune(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !sum.SweepDeferred || len(sum.Removed) != 2 || len(f.objects(dataPrefix)) != before {
		t.Fatalf("prune during a backup: %+v", sum)
	}
	lk.release()
	sum, err = f.repo.Prune(ctx, 1)
	if err != nil || sum.SweepDeferred || sum.DeletedPieces+sum.DeletedPacks != 2 { // small pieces: packed
		t.Fatalf("prune after the backup: %+v %v", sum, err)
	}
}

func TestBackupWaitsForPruneSweep(t *testing.T) {
	f := newFixture(t)
	old := lockWait
	lockWait = 100 * time.Millisecond
	defer func() { lockWait = old }()
	lk, _ := f.repo.lock(context.Background(), lockExclusive)
	defer lk.release()
	_, err := f.repo.Backup(context.Background(), []string{t.TempDir()}, BackupOptions{})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("backup during a prune sweep: %v", err)
	}
}

func TestConcurrentBackups(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range 4 {
		src := filepath.Join(f.dir, fmt.Sprint("src", i))
		writeFile(t, filepath.Join(src, "f"), randBytes(50<<10), 0o644)
		wg.Go(func() { _, errs[i] = f.repo.Backup(ctx, []string{src}, BackupOptions{}) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if m := f.objects(manifestsPrefix); len(m) != 4 {
		t.Fatalf("%d generations after 4 concurrent backups", len(m))
	}
	if _, err := f.repo.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

func TestRootNameClash(t *testing.T) {
	f := newFixture(t)
	a := filepath.Join(f.dir, "a", "data")
	b := filepath.Join(f.dir, "b", "data")
	os.MkdirAll(a, 0o755)
	os.MkdirAll(b, 0o755)
	if _, err := f.repo.Backup(context.Background(), []string{a, b}, BackupOptions{}); err == nil {
		t.Fatal("two roots with one name accepted")
	}
}

func TestComparePaths(t *testing.T) {
	ordered := []string{"a", "a/b", "a/b/c", "a/c", "a-b", "a.b", "ab", "b"}
	for i := range ordered {
		for j := range ordered {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := comparePaths(ordered[i], ordered[j]); got != want {
				t.Errorf("comparePaths(%q, %q) = %d, want %d", ordered[i], ordered[j], got, want)
			}
		}
	}
}

func TestIsCleanRelative(t *testing.T) {
	for _, p := range []string{"a", "a/b", "a b/c.d", ".hidden", "..x", "a\\b", "x\xff/\xfe"} {
		if !isCleanRelative(p) {
			t.Errorf("%q refused", p)
		}
	}
	for _, p := range []string{"", "/a", "a/../b", "..", ".", "a//b", "a/", "./a", "a/./b", "a\x00b"} {
		if isCleanRelative(p) {
			t.Errorf("%q accepted", p)
		}
	}
}
