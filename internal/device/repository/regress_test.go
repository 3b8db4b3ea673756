package repository

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unicode/utf8"
)

// TestRegressNames (bug 1): a backslash, and two names differing only in
// invalid UTF-8, must survive backup → restore → another backup.
func TestRegressNames(t *testing.T) {
	for name, files := range map[string][]string{
		"backslash": {`back\slash`},
		"invalid":   {"x\xff", "x\xfe"},
		"single":    {"y\xff"},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			src := filepath.Join(f.dir, "src")
			for i, n := range files {
				writeFile(t, filepath.Join(src, n), []byte{byte(i), 'a'}, 0o644)
			}
			ctx := context.Background()
			if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(f.dir, "out")
			if _, err := f.repo.Restore(ctx, 0, out, RestoreOptions{}); err != nil {
				t.Fatalf("restore: %v", err)
			}
			if got, want := treeDigest(t, filepath.Join(out, "src")), treeDigest(t, src); got != want {
				t.Fatalf("restored tree differs:\n got: %q\nwant: %q", got, want)
			}
			if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
				t.Fatalf("second backup: %v", err)
			}
		})
	}
}

// TestRegressLostPiece (bug 2): a piece deleted from storage is uploaded
// again by the next backup of a changed file with the same content.
func TestRegressLostPiece(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	writeFile(t, filepath.Join(src, "a"), randBytes(300<<10), 0o644)
	ctx := context.Background()
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	data := f.objects(dataPrefix)
	os.Remove(f.path(data[0]))
	// touch
	fi, _ := os.Stat(filepath.Join(src, "a"))
	os.Chtimes(filepath.Join(src, "a"), fi.ModTime().Add(1e9), fi.ModTime().Add(1e9))
	s, err := f.repo.Backup(ctx, []string{src}, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second backup: %d new, %d reused", s.NewPieces, s.ReusedPieces)
	if s.NewPieces != 1 {
		t.Fatalf("backup after a lost piece uploaded %d pieces, want 1", s.NewPieces)
	}
	if _, err := f.repo.Restore(ctx, 0, filepath.Join(f.dir, "out"), RestoreOptions{}); err != nil {
		t.Fatalf("restore of the backup after a lost piece: %v", err)
	}
	// Untouched file (change detection says unchanged): still re-read.
	data = f.objects(dataPrefix)
	os.Remove(f.path(data[1]))
	if s, err = f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil || s.NewPieces != 1 || s.UnchangedFiles != 0 {
		t.Fatalf("backup of an unchanged file with a lost piece: %+v %v", s, err)
	}
	if _, err := f.repo.Restore(ctx, 0, filepath.Join(f.dir, "out2"), RestoreOptions{}); err != nil {
		t.Fatalf("restore: %v", err)
	}
}

// TestRegressResume (bug 6): the pieces an interrupted backup stored (no
// manifest references them) are not uploaded again.
func TestRegressResume(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	writeFile(t, filepath.Join(src, "a"), randBytes(300<<10), 0o644)
	ctx := context.Background()
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	// As if killed before the commit: the pieces are there, the manifest not.
	for _, m := range f.objects(manifestsPrefix) {
		os.Remove(f.path(m))
	}
	s, err := f.repo.Backup(ctx, []string{src}, BackupOptions{})
	if err != nil || s.NewPieces != 0 || s.ReusedPieces != 5 {
		t.Fatalf("resumed backup: %+v %v", s, err)
	}
}

func TestEscapeNameRoundTrip(t *testing.T) {
	names := []string{"", "plain", "%", "%41", "a%b", "x\xff", "\xfe\xff", "é", "\uFFFD", "\xef\xbf", "\x01\x1f\x7f", `back\slash`}
	var all []byte
	for c := 1; c < 256; c++ {
		all = append(all, byte(c))
	}
	names = append(names, string(all))
	for _, n := range names {
		e := escapeName(n)
		if !utf8.ValidString(e) {
			t.Errorf("escape(%q) = %q is not UTF-8", n, e)
		}
		u, err := unescapeName(e)
		if err != nil || u != n {
			t.Errorf("unescape(escape(%q)) = %q, %v", n, u, err)
		}
	}
	for _, bad := range []string{"%", "%4", "%zz", "a%"} {
		if _, err := unescapeName(bad); err == nil {
			t.Errorf("unescape(%q) accepted", bad)
		}
	}
}

// TestReadV1Manifest: version 1 manifests are still read, names verbatim
// (no unescaping), and a backslash is accepted in them.
func TestReadV1Manifest(t *testing.T) {
	f := newFixture(t)
	gen := f.commitRawFormat(1, []string{
		`{"path":"x","type":"dir","mode":493,"mtime":0}`,
		`{"path":"x/%41","type":"file","mode":420,"mtime":0}`,
		`{"path":"x/a\\b","type":"file","mode":420,"mtime":0}`,
	}, genStats{Entries: 3, Dirs: 1, Files: 2})
	out := filepath.Join(f.dir, "out")
	if _, err := f.repo.Restore(context.Background(), gen, out, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"%41", `a\b`} {
		if _, err := os.Lstat(filepath.Join(out, "x", n)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRegressReadError (bug 3): a read error in the middle of a file skips
// that file, records it in the summary, and backs up the rest.
func TestRegressReadError(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	writeFile(t, filepath.Join(src, "bad"), randBytes(300<<10), 0o644)
	writeFile(t, filepath.Join(src, "good"), randBytes(100<<10), 0o644)
	testFault = func(op, rel string, off int64) error {
		if op == "read" && rel == "src/bad" && off > 0 {
			return syscall.EIO
		}
		return nil
	}
	defer func() { testFault = nil }()
	ctx := context.Background()
	var warned []string
	s, err := f.repo.Backup(ctx, []string{src}, BackupOptions{Warn: func(p string, err error) { warned = append(warned, p) }})
	if err != nil {
		t.Fatalf("backup with a read error in one file: %v", err)
	}
	if s.Skipped != 1 || len(s.SkippedEntries) != 1 || s.SkippedEntries[0].Path != filepath.Join(src, "bad") || !strings.Contains(s.SkippedEntries[0].Reason, "input/output error") {
		t.Fatalf("summary: %+v", s)
	}
	if len(warned) != 1 || s.Generation.Files != 1 {
		t.Fatalf("warned %v, %d files", warned, s.Generation.Files)
	}
	out := filepath.Join(f.dir, "out")
	if _, err := f.repo.Restore(ctx, 0, out, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(out, "src", "bad")); err == nil {
		t.Fatal("the unreadable file was restored")
	}
}
