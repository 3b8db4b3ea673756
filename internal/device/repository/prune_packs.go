package repository

import (
	"context"
	"crypto/hmac"
	"fmt"

	"github.com/cofferhq/coffer/storage"
)

// packSweep is what sweepPacks did.
type packSweep struct {
	deletedPacks, repackedPacks, repackedBytes, deletedIndexes, deletedBytes int64
	skipped                                                                  string
}

// sweepPacks removes the packed pieces no backup in refs uses, under an
// exclusive lock that no other live lock shares (the caller's check):
//
//   - a pack none of whose pieces is used, and a pack no index lists (an
//     interrupted backup's), is deleted;
//   - a pack more than half of whose blob bytes are unused, and every
//     pack with less than a quarter of a full pack in use when there are
//     at least two such, is repacked: its used pieces are copied into new
//     packs (each authenticated and checked against its name first);
//   - one index listing every pack kept and every new pack is written
//     (create-only) and made durable, and only then are the indexes it
//     replaces deleted, and then the packs no longer listed.
//
// A crash at any point leaves every used piece listed by some index in
// some present pack: before the new index exists the old ones list the old
// packs, which are all still there; after it, the new one lists the kept
// and new packs. If an index is damaged, or a backup in refs uses a piece
// found nowhere (a lost index, which Repair can rebuild from its packs),
// packs are left alone.
func (r *Repository) sweepPacks(ctx context.Context, refs map[pieceID]bool) (*packSweep, error) {
	ps := &packSweep{}
	x, err := r.loadIndex(ctx)
	if err != nil {
		return nil, err
	}
	if len(x.bad) > 0 {
		ps.skipped = fmt.Sprintf("index %s is damaged: run repair", x.bad[0].Name)
		return ps, nil
	}
	listed, err := r.listPieces(ctx)
	if err != nil {
		return nil, err
	}
	for id := range refs {
		if _, ok := x.lookup(id); ok {
			continue
		}
		if _, ok := listed[id]; !ok {
			ps.skipped = fmt.Sprintf("a kept backup uses piece %s, which is neither stored nor in an index: run check and repair", id.String()[:16])
			return ps, nil
		}
	}
	doomed := map[objID]bool{}
	for _, p := range x.unindexed() {
		doomed[p.id] = true
	}
	var repack, small []*packInfo
	stale := false // an index lists a pack that is not stored
	for _, p := range x.packs {
		if !p.indexed {
			continue
		}
		if !p.present {
			stale = true
			continue
		}
		var live, total int64
		off := uint32(packHeader)
		for _, b := range p.blobs {
			total += int64(b.n)
			if l := x.blobs[b.id]; refs[b.id] && l.pack == p && l.off == off {
				live += int64(b.n)
			}
			off += blobHeader + b.n
		}
		switch {
		case live == 0:
			doomed[p.id] = true
		case (total-live)*repackGarbageDen > total*repackGarbageNum:
			repack = append(repack, p)
		case live < int64(r.packTarget/4):
			small = append(small, p)
		}
	}
	if len(small) >= 2 {
		repack = append(repack, small...)
	}
	if len(doomed) == 0 && len(repack) == 0 && len(x.indexes) <= 1 && !stale {
		return ps, nil
	}

	pk := r.newPacker(ctx)
	defer pk.wait()
	replaced := map[objID]bool{}
	for _, p := range repack {
		plain, err := r.openPack(ctx, p.id)
		if err != nil {
			if isDamage(err) {
				continue // left as it is: Check reports it
			}
			return nil, err
		}
		type blob struct {
			id  pieceID
			enc []byte
		}
		var copies []blob
		ok := true
		off := uint32(packHeader)
		for _, b := range p.blobs {
			at := off
			off += blobHeader + b.n
			if l := x.blobs[b.id]; !refs[b.id] || l.pack != p || l.off != at {
				continue
			}
			if int(at)+blobHeader+int(b.n) > len(plain) {
				ok = false
				break
			}
			enc := plain[at : at+blobHeader+b.n]
			data, _, err := decodeBlob(nil, enc, int64(r.pieceSize))
			if id := r.pieceID(data); err != nil || !hmac.Equal(id[:], b.id[:]) {
				ok = false
				break
			}
			copies = append(copies, blob{b.id, enc})
		}
		if !ok {
			continue // damaged: kept, for Check to report
		}
		for _, c := range copies {
			if err := pk.addEncoded(ctx, c.id, c.enc); err != nil {
				return nil, err
			}
			ps.repackedBytes += int64(len(c.enc) - blobHeader)
		}
		replaced[p.id] = true
		ps.repackedPacks++
	}
	newPacks, err := pk.finish(ctx)
	if err != nil {
		return nil, err
	}
	var keep []packRec
	for _, p := range x.packs {
		if p.indexed && p.present && !doomed[p.id] && !replaced[p.id] {
			keep = append(keep, packRec{id: p.id, blobs: p.blobs})
		}
	}
	keep = append(keep, newPacks...)
	if len(keep) > 0 {
		if _, _, err := r.putIndex(ctx, keep); err != nil {
			return nil, err
		}
	}
	if s, ok := r.b.(storage.Syncer); ok {
		if err := s.Sync(ctx); err != nil {
			return nil, fmt.Errorf("making the new packs and index durable: %w", err)
		}
	}
	for _, name := range x.indexes {
		if err := r.b.Delete(ctx, name); err != nil {
			return nil, fmt.Errorf("deleting a replaced index: %w", err)
		}
		ps.deletedIndexes++
	}
	for id := range replaced {
		doomed[id] = true
	}
	for id := range doomed {
		if err := r.b.Delete(ctx, packName(id)); err != nil {
			return nil, fmt.Errorf("deleting an unused pack: %w", err)
		}
		ps.deletedPacks++
		ps.deletedBytes += x.packs[id].size
	}
	return ps, nil
}
