package repository

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/storage"
)

// DefaultKeep is the number of generations Prune keeps by default.
const DefaultKeep = 3

// Prune keeps the newest keep generations (at least 1), deletes the older
// manifests, then deletes the pieces no remaining generation references,
// and repacks the packs that are mostly garbage (sweepPacks).
//
// It is safe while backups run: it takes an exclusive lock, and if any
// backup holds a live shared lock it deletes only manifests and leaves the
// pieces for a later prune (SweepDeferred). A backup that starts during
// the sweep waits for it. See DESIGN.md, "Concurrency".
func (r *Repository) Prune(ctx context.Context, keep int) (*PruneSummary, error) {
	start := time.Now()
	if keep < 1 {
		return nil, errors.New("prune must keep at least 1 backup")
	}
	lk, err := r.lock(ctx, lockExclusive)
	if err != nil {
		return nil, err
	}
	defer lk.release()

	gens, err := r.manifestNumbers(ctx)
	if err != nil {
		return nil, err
	}
	sum := &PruneSummary{Kept: []uint64{}, Removed: []uint64{}}
	cut := max(0, len(gens)-keep)
	sum.Kept = append(sum.Kept, gens[cut:]...)
	// Read the kept generations first: if one is damaged, stop before
	// deleting anything.
	refs := map[pieceID]bool{}
	for _, g := range sum.Kept {
		err := r.forEachEntry(ctx, g, func(e *entry) error {
			for _, p := range e.Pieces {
				refs[p.ID] = true
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("reading backup %d (kept): %w; nothing was deleted", g, err)
		}
	}
	for _, g := range gens[:cut] {
		if err := r.b.Delete(ctx, manifestName(g)); err != nil {
			return sum, fmt.Errorf("deleting backup %d: %w", g, err)
		}
		sum.Removed = append(sum.Removed, g)
	}

	others, err := lk.others(ctx)
	if err != nil {
		return sum, err
	}
	if len(others) > 0 {
		sum.SweepDeferred = true
		sum.DeferredBy = others
		sum.Duration = Duration(time.Since(start))
		return sum, nil
	}
	var doomed []storage.ObjectInfo
	err = r.b.List(ctx, dataPrefix, func(oi storage.ObjectInfo) error {
		if id, ok := parsePieceName(oi.Name); !ok || !refs[id] {
			doomed = append(doomed, oi)
		}
		return nil
	})
	if err != nil {
		return sum, fmt.Errorf("listing data in %s: %w", r.b.Location(), err)
	}
	for _, oi := range doomed {
		if err := r.b.Delete(ctx, oi.Name); err != nil {
			return sum, fmt.Errorf("deleting unreferenced data: %w", err)
		}
		sum.DeletedPieces++
		sum.DeletedBytes += oi.Size
	}
	ps, err := r.sweepPacks(ctx, refs)
	if err != nil {
		return sum, err
	}
	sum.DeletedPacks, sum.RepackedPacks, sum.RepackedBytes = ps.deletedPacks, ps.repackedPacks, ps.repackedBytes
	sum.DeletedIndexes, sum.PackSweepSkipped = ps.deletedIndexes, ps.skipped
	sum.DeletedBytes += ps.deletedBytes
	sum.Duration = Duration(time.Since(start))
	return sum, nil
}
