package client

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// TestBackupExcludesRepositoryAndState: backing up a directory that holds
// the repository and the device's state (with the backup key) stores
// neither, and says so.
func TestBackupExcludesRepositoryAndState(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a"), []byte("one"), 0o644)
	dev := NewDevice(filepath.Join(dir, "state"))
	if _, err := dev.Init(ctx, filepath.Join(dir, "repo")); err != nil {
		t.Fatal(err)
	}
	r, err := dev.Open(ctx, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s, err := r.Backup(ctx, []string{dir}, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var skipped []string
	for _, e := range s.SkippedEntries {
		skipped = append(skipped, e.Path)
	}
	sort.Strings(skipped)
	if len(skipped) != 2 || skipped[0] != filepath.Join(dir, "repo") || skipped[1] != filepath.Join(dir, "state") || s.Generation.Files != 1 {
		t.Fatalf("skipped %v, %d files", skipped, s.Generation.Files)
	}
}
