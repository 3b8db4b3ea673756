package repository

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/container"
	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/retry"
	_ "github.com/cofferhq/coffer/storage/s3"
	"github.com/cofferhq/coffer/storage/s3/s3test"
)

// TestS3EndToEnd runs a backup, an incremental backup, a restore, verify
// and prune against a real S3 server (versitygw) on 127.0.0.1.
func TestS3EndToEnd(t *testing.T) {
	endpoint, bucket := s3test.Start(t)
	ctx := context.Background()
	loc, err := storage.Parse("s3://" + bucket + "/backups/phone?endpoint=" + endpoint)
	if err != nil {
		t.Fatal(err)
	}
	b, err := retry.Open(ctx, loc, retry.DefaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	key := backupkey.New()
	repo, err := Init(ctx, b, key)
	if err != nil {
		t.Fatal(err)
	}
	repo.pieceSize = 256 << 10
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	sampleTree(t, src)
	writeFile(t, filepath.Join(src, "big.bin"), randBytes(1<<20+12345), 0o600)
	if _, err := repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "media", "new.jpg"), randBytes(5000), 0o644)
	s2, err := repo.Backup(ctx, []string{src}, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s2.NewPieces != 1 {
		t.Fatalf("incremental backup to S3 uploaded %d pieces, want 1", s2.NewPieces)
	}
	// A new device.
	b2, _ := retry.Open(ctx, loc, retry.DefaultPolicy)
	repo2, err := Open(ctx, b2, key)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if _, err := repo2.Restore(ctx, 0, out, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, want := treeDigest(t, filepath.Join(out, "src")), treeDigest(t, src); got != want {
		t.Fatal("tree restored from S3 differs")
	}
	if _, err := repo2.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := repo2.Prune(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, b2, backupkey.New()); !errors.Is(err, container.ErrWrongKey) {
		t.Fatalf("wrong key on S3: %v", err)
	}
	os.RemoveAll(out)
}
