package repository

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"

	"github.com/cofferhq/coffer/storage"
)

// Commit on a store without atomic create-only writes (FORMAT.md,
// "Commit"; DESIGN.md, "Stores and their guarantees").
//
// Where the backend states Capabilities.AtomicCreate, a generation is
// committed by one PutIfAbsent of its manifest (commit, in backup.go).
// Elsewhere two backups could both find manifests/N free and both write
// it, one overwriting the other (WebDAV, SFTP) or both creating a file of
// that name (Google Drive). There a backup commits under a commit lock:
//
//  1. write locks/<random> of type "commit" (a unique name, so it cannot
//     collide, even where names can be duplicated);
//  2. wait the store's ListLag, so that the listing that follows sees
//     every lock whose write completed before ours did;
//  3. list the locks: if another live commit lock is there, remove ours,
//     wait a random while and start again (both back off; one wins a
//     later round);
//  4. alone: list the manifests (again after ListLag, so every
//     generation committed by an earlier holder, which wrote its
//     manifest before removing its lock, is seen), take the next number,
//     write the manifest, and read it back: it must be byte for byte what
//     was written (and, where names can be duplicated, listed once);
//     otherwise take the next number and write again;
//  5. remove the lock.
//
// Of two committers, the one whose lock write completed second lists
// after both writes completed and sees the other's lock, so at most one
// holds the lock at a time: the argument needs only that a listing made
// ListLag after a write completed shows it, which is what ListLag states.
var (
	// commitWait is how long a backup keeps trying to take the commit
	// lock before it gives up (its data is uploaded, and a later backup
	// reuses it).
	commitWait = 3 * time.Minute
	// commitBackoff bounds the random wait after a lost round, before the
	// store's ListLag is added.
	commitBackoff = 500 * time.Millisecond
)

const lockCommit = "commit"

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// commitLocked commits the manifest under the commit lock. It returns the
// generation number taken.
func (r *Repository) commitLocked(ctx context.Context, hdr *manifestHeader, tmp *os.File, eph *[32]byte) (uint64, error) {
	caps := r.b.Capabilities()
	lag := caps.ListLag
	deadline := time.Now().Add(commitWait + 20*lag)
	for round := 0; ; round++ {
		l, err := r.lock(ctx, lockCommit)
		if err != nil {
			return 0, fmt.Errorf("committing the backup: %w", err)
		}
		if err := sleepCtx(ctx, lag); err != nil {
			l.release()
			return 0, err
		}
		others, err := l.others(ctx)
		if err != nil {
			l.release()
			return 0, fmt.Errorf("committing the backup: %w", err)
		}
		var holder *LockInfo
		for i := range others {
			if others[i].Type == lockCommit {
				holder = &others[i]
			}
		}
		if holder == nil {
			gen, err := r.commitHeld(ctx, hdr, tmp, eph, caps)
			l.release()
			return gen, err
		}
		l.release()
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%w: another backup, by %s (pid %d), has been committing since %s; if it died, 'coffer unlock' removes its lock once stale",
				ErrLocked, holder.Host, holder.PID, holder.Time.Format(time.RFC3339))
		}
		wait := lag + time.Duration(rand.Int64N(int64(commitBackoff)*int64(min(round+1, 8))))
		if err := sleepCtx(ctx, wait); err != nil {
			return 0, err
		}
	}
}

// commitHeld writes the manifest for the next free generation while the
// commit lock is held, and reads it back.
func (r *Repository) commitHeld(ctx context.Context, hdr *manifestHeader, tmp *os.File, eph *[32]byte, caps storage.Capabilities) (uint64, error) {
	gens, err := r.manifestNumbers(ctx)
	if err != nil {
		return 0, err
	}
	return r.putManifest(ctx, hdr, tmp, eph, gens, func(ctx context.Context, name string, sum [32]byte) (bool, error) {
		return r.readBack(ctx, name, sum, caps)
	})
}

func fileSum(f *os.File, size int64) ([32]byte, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		return [32]byte{}, err
	}
	return [32]byte(h.Sum(nil)), nil
}

// readBack reports whether the object name holds exactly the bytes whose
// hash is sum and, where names can be duplicated, is its only copy. The
// store is given ListLag to show what it holds.
func (r *Repository) readBack(ctx context.Context, name string, sum [32]byte, caps storage.Capabilities) (bool, error) {
	if err := sleepCtx(ctx, caps.ListLag); err != nil {
		return false, err
	}
	if caps.DuplicateNames {
		copies := 0
		err := r.b.List(ctx, name, func(oi storage.ObjectInfo) error {
			if oi.Name == name {
				copies++
			}
			return nil
		})
		if err != nil {
			return false, err
		}
		if copies != 1 {
			return false, nil
		}
	}
	rc, err := r.b.Get(ctx, name)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return false, wrapRead(err)
	}
	return bytes.Equal(h.Sum(nil), sum[:]), nil
}
