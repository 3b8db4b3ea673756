package client

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/container"
	"github.com/cofferhq/coffer/internal/device/devicestate"
	"github.com/cofferhq/coffer/internal/device/repository"
	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/memory"
)

// countingBackend counts listings of a memory backend.
type countingBackend struct {
	*memory.Backend
	lists atomic.Int64
}

func (b *countingBackend) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	b.lists.Add(1)
	return b.Backend.List(ctx, prefix, fn)
}

// rollbackFixture is a repository in memory with n backups, opened as the
// own repository of a device that has seen backup seen.
func rollbackFixture(t *testing.T, n int, seen uint64) (*Repo, *countingBackend) {
	t.Helper()
	ctx := context.Background()
	b := &countingBackend{Backend: memory.New()}
	key := backupkey.New()
	t.Cleanup(key.Zero)
	repo, err := repository.Init(ctx, b, key)
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	for range n {
		if _, err := repo.Backup(ctx, []string{data}, repository.BackupOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dev := NewDevice(filepath.Join(t.TempDir(), "state"))
	if _, err := devicestate.Open(dev.StateDir()); err != nil {
		t.Fatal(err)
	}
	if err := dev.dir.Save(&devicestate.Config{Repository: "memory", RepositoryID: repo.ID(), LastGeneration: seen}); err != nil {
		t.Fatal(err)
	}
	r := &Repo{repo: repo, backend: b, dev: dev}
	t.Cleanup(func() { r.Close() })
	return r, b
}

func lastSeen(t *testing.T, r *Repo) uint64 {
	t.Helper()
	cfg, err := r.dev.Config()
	if err != nil {
		t.Fatal(err)
	}
	return cfg.LastGeneration
}

func TestCheckRollback(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name       string
		backups    int
		seen       uint64
		rolledBack bool
		after      uint64 // what the device has seen afterwards
	}{
		{"new and empty", 0, 0, false, 0},
		{"up to date", 3, 3, false, 3},
		{"newer backups by another device", 3, 1, false, 3},
		{"one backup gone", 2, 3, true, 3},
		{"all backups gone", 0, 2, true, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, _ := rollbackFixture(t, c.backups, c.seen)
			gens, err := r.checkRollback(ctx)
			if c.rolledBack {
				if !errors.Is(err, ErrRollback) || !errors.Is(err, container.ErrIntegrity) {
					t.Fatalf("checkRollback = %v, want ErrRollback and ErrIntegrity", err)
				}
			} else if err != nil || len(gens) != c.backups {
				t.Fatalf("checkRollback = %d backups, %v; want %d", len(gens), err, c.backups)
			}
			if got := lastSeen(t, r); got != c.after {
				t.Fatalf("the device has seen %d afterwards, want %d", got, c.after)
			}
		})
	}
}

// Every operation goes through checkRollback: on a rolled-back repository
// each one fails before doing anything.
func TestEveryOperationChecksRollback(t *testing.T) {
	ctx := context.Background()
	r, _ := rollbackFixture(t, 1, 2)
	data := t.TempDir()
	out := filepath.Join(t.TempDir(), "out")
	for name, op := range map[string]func() error{
		"Backup":      func() error { _, err := r.Backup(ctx, []string{data}, repository.BackupOptions{}); return err },
		"Generations": func() error { _, err := r.Generations(ctx); return err },
		"Restore":     func() error { _, err := r.Restore(ctx, 0, out, repository.RestoreOptions{}); return err },
		"Verify":      func() error { _, err := r.Verify(ctx, nil); return err },
		"Prune":       func() error { _, err := r.Prune(ctx, 1); return err },
	} {
		if err := op(); !errors.Is(err, ErrRollback) {
			t.Errorf("%s on a rolled-back repository: %v, want ErrRollback", name, err)
		}
	}
	if gens, _ := r.repo.Generations(ctx); len(gens) != 1 {
		t.Errorf("the refused operations changed the repository: %d backups", len(gens))
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a refused Restore wrote its target")
	}
}

// On a repository that is not the device's own there is nothing to check
// against, and the check costs no listing.
func TestCheckRollbackUntracked(t *testing.T) {
	r, b := rollbackFixture(t, 2, 5)
	r.dev = nil
	before := b.lists.Load()
	if gens, err := r.checkRollback(context.Background()); err != nil || gens != nil {
		t.Fatalf("checkRollback on an untracked repository = %v, %v; want nil, nil", gens, err)
	}
	if b.lists.Load() != before {
		t.Error("checkRollback listed an untracked repository")
	}
	if gens, err := r.Generations(context.Background()); err != nil || len(gens) != 2 {
		t.Fatalf("Generations on an untracked repository = %d, %v", len(gens), err)
	}
}
