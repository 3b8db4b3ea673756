package repository

import (
	"context"
	"crypto/hmac"
	"fmt"
	"sync"
	"time"

	"github.com/cofferhq/coffer/storage"
)

// Verify reads and authenticates every generation and every piece they
// reference, and checks each piece's content against its keyed name. It
// writes nothing. Pieces that no generation references are counted (prune
// removes them); a referenced piece that is missing or damaged fails with
// an error wrapping container.ErrIntegrity.
func (r *Repository) Verify(ctx context.Context, p Progress) (*VerifySummary, error) {
	start := time.Now()
	gens, err := r.manifestNumbers(ctx)
	if err != nil {
		return nil, err
	}
	refs := map[pieceID]int64{}
	var total int64
	for _, g := range gens {
		err := r.forEachEntry(ctx, g, func(e *entry) error {
			for _, pc := range e.Pieces {
				if _, seen := refs[pc.ID]; !seen {
					refs[pc.ID] = pc.Size
					total += pc.Size
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("verifying backup %d: %w", g, err)
		}
	}
	sum := &VerifySummary{Generations: len(gens)}
	err = r.b.List(ctx, dataPrefix, func(oi storage.ObjectInfo) error {
		if id, ok := parsePieceName(oi.Name); !ok || refs[id] == 0 {
			sum.Unreferenced++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing data in %s: %w", r.b.Location(), err)
	}
	if p != nil {
		p.SetTotal(total)
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan piece)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range r.concurrency {
		wg.Go(func() {
			for pc := range jobs {
				data, err := r.fetchPiece(ctx, pc)
				if err == nil {
					id := r.pieceID(data)
					putPlain(data)
					if !hmac.Equal(id[:], pc.ID[:]) {
						err = integrityf("piece %s does not hold the content its name commits to", pc.ID.String()[:16])
					}
				}
				if err != nil {
					cancel(err)
					continue
				}
				mu.Lock()
				sum.Pieces++
				sum.Bytes += pc.Size
				mu.Unlock()
				if p != nil {
					p.Add(pc.Size)
				}
			}
		})
	}
feed:
	for id, size := range refs {
		select {
		case jobs <- piece{ID: id, Size: size}:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	sum.Duration = Duration(time.Since(start))
	return sum, nil
}
