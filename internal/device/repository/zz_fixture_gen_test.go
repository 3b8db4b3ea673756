package repository

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/storage/local"
)

func TestGenFixture(t *testing.T) {
	out := os.Getenv("FIXTURE_OUT")
	if out == "" {
		t.Skip()
	}
	key, err := backupkey.Parse("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := local.New(filepath.Join(out, "repo"))
	repo, err := Init(context.Background(), st, key)
	if err != nil {
		t.Fatal(err)
	}
	repo.pieceSize = 64 << 10
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "small.txt"), []byte("hello from the version 2 layout\n"), 0o644)
	big := make([]byte, 150<<10)
	for i := range big {
		big[i] = byte(i * 7 % 251)
	}
	writeFile(t, filepath.Join(src, "sub", "big.bin"), big, 0o600)
	for i := range 20 {
		writeFile(t, filepath.Join(src, "many", string(rune('a'+i))+".txt"), []byte(string(rune('a'+i))+" small file\n"), 0o644)
	}
	ts := time.Unix(1765000000, 0)
	filepath.Walk(src, func(p string, _ os.FileInfo, _ error) error { os.Chtimes(p, ts, ts); return nil })
	if _, err := repo.Backup(context.Background(), []string{src}, BackupOptions{Host: "fixture", Version: "0.1.0-v2-layout"}); err != nil {
		t.Fatal(err)
	}
}
