package repository

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/local"
	"github.com/cofferhq/coffer/storage/memory"
	"github.com/cofferhq/coffer/storage/rclone"
	"github.com/cofferhq/coffer/storage/rclone/rclonetest"
	"github.com/cofferhq/coffer/storage/retry"
	"github.com/cofferhq/coffer/storage/s3/s3test"
)

// TestConcurrentBackupsEachKind runs two backups of different trees at
// the same moment, from two processes' worth of Repository values, against
// each kind of store: a local directory and S3 (versitygw) commit with an
// atomic create-only write; WebDAV (Apache mod_dav) and SFTP (OpenSSH)
// through rclone, and the Drive stand-in (duplicate names, listings 300 ms
// behind), commit under the commit lock. Both generations must survive:
// two distinct numbers, each restoring its own tree, and on the stand-in
// each manifest name held by exactly one file.
func TestConcurrentBackupsEachKind(t *testing.T) {
	kinds := []struct {
		name string
		open func(t *testing.T) storage.Backend
	}{
		{"local", func(t *testing.T) storage.Backend {
			b, err := local.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return b
		}},
		{"s3", func(t *testing.T) storage.Backend {
			endpoint, bucket := s3test.Start(t)
			loc, err := storage.Parse("s3://" + bucket + "/two?endpoint=" + endpoint)
			if err != nil {
				t.Fatal(err)
			}
			b, err := loc.Open(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return b
		}},
		{"webdav", func(t *testing.T) storage.Backend {
			s := rclonetest.StartWebDAV(t)
			return openRclone(t, s.Remote(t, 1))
		}},
		{"sftp", func(t *testing.T) storage.Backend {
			s := rclonetest.StartSFTP(t)
			return openRclone(t, s.Remote(t, 1))
		}},
		{"drive-stand-in", func(t *testing.T) storage.Backend {
			return memory.NewDriveStandIn(300 * time.Millisecond)
		}},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			b := k.open(t)
			rb := retry.New(b, retry.Policy{Attempts: 3, Base: 10 * time.Millisecond, Max: 50 * time.Millisecond})
			ctx := t.Context()
			key := backupkey.New()
			if _, err := Init(ctx, rb, key); err != nil {
				t.Fatal(err)
			}
			if lag := rb.Capabilities().ListLag; lag > 0 {
				time.Sleep(lag) // let the config be listed
			}
			dir := t.TempDir()
			var srcs [2]string
			var gens [2]uint64
			var errs [2]error
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range 2 {
				srcs[i] = filepath.Join(dir, fmt.Sprintf("src%d", i))
				sampleTree(t, srcs[i])
				writeFile(t, filepath.Join(srcs[i], "who"), []byte(fmt.Sprintf("backup %d", i)), 0o600)
				repo, err := Open(ctx, rb, key)
				if err != nil {
					t.Fatal(err)
				}
				wg.Go(func() {
					<-start
					sum, err := repo.Backup(ctx, []string{srcs[i]}, BackupOptions{Host: fmt.Sprintf("host%d", i)})
					if err == nil {
						gens[i] = sum.Generation.Number
					}
					errs[i] = err
				})
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("backup %d: %v", i, err)
				}
			}
			if gens[0] == gens[1] {
				t.Fatalf("both backups report generation %d", gens[0])
			}
			if lag := rb.Capabilities().ListLag; lag > 0 {
				time.Sleep(lag)
			}
			repo, err := Open(ctx, rb, key)
			if err != nil {
				t.Fatal(err)
			}
			list, err := repo.Generations(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 2 {
				t.Fatalf("Generations = %d, want 2: %+v", len(list), list)
			}
			for i, g := range gens {
				out := filepath.Join(dir, fmt.Sprintf("out%d", i))
				if _, err := repo.Restore(ctx, g, out, RestoreOptions{}); err != nil {
					t.Fatalf("restoring generation %d (backup %d): %v", g, i, err)
				}
				if got, want := treeDigest(t, filepath.Join(out, filepath.Base(srcs[i]))), treeDigest(t, srcs[i]); got != want {
					t.Errorf("generation %d does not restore backup %d's tree", g, i)
				}
				if d, ok := b.(*memory.DriveStandIn); ok {
					if n := d.Copies(manifestName(g)); n != 1 {
						t.Errorf("%s has %d files on the Drive stand-in, want 1", manifestName(g), n)
					}
				}
			}
			t.Logf("%s (%+v): generations %v", b.Location(), b.Capabilities(), gens)
		})
	}
}

func openRclone(t *testing.T, remote string) storage.Backend {
	b, err := rclone.Open(context.Background(), remote)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
