package repository

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cofferhq/coffer/internal/device/container"
	"github.com/cofferhq/coffer/storage"
)

// RepairOptions tune Repair.
type RepairOptions struct {
	// Paths are backed-up paths (as given to Backup) whose files are still
	// on disk: a lost piece is uploaded again from a file there that still
	// holds the same content, and the backups that use it need no
	// rewriting.
	Paths []string
	// ReadData authenticates every piece first (Check's ReadData), so
	// that damaged pieces, not only missing ones, are repaired.
	ReadData bool
	// NoCompress turns zstd off for re-uploaded pieces.
	NoCompress bool
}

// RepairedBackup is a backup Repair replaced.
type RepairedBackup struct {
	From    uint64   `json:"from"`    // the damaged backup, removed
	To      uint64   `json:"to"`      // its repaired copy (0: nothing was left to keep)
	Dropped []string `json:"dropped"` // entries left out: files with lost data
	// Truncated: the manifest was damaged part-way; the entries after
	// the damage are lost.
	Truncated bool `json:"truncated,omitempty"`
}

// RepairSummary reports what Repair did.
type RepairSummary struct {
	Check      *CheckSummary    `json:"check"`      // what was found before repairing
	Reuploaded int64            `json:"reuploaded"` // pieces uploaded again from files on disk
	Repaired   []RepairedBackup `json:"repaired"`
	// DeletedObjects are the orphans removed: pieces no backup
	// references (damaged ones, those of interrupted backups).
	DeletedObjects int64 `json:"deleted_objects"`
	// IndexedPacks counts the packs no readable index listed (an
	// interrupted backup's, or whose index was lost or damaged) that
	// Repair read and indexed again, before its Check; DeletedIndexes
	// the damaged indexes it then deleted.
	IndexedPacks   int64    `json:"indexed_packs,omitempty"`
	DeletedIndexes int64    `json:"deleted_indexes,omitempty"`
	DeletedBytes   int64    `json:"deleted_bytes"`
	Duration       Duration `json:"duration"`
}

// Repair makes every backup restorable again, as far as the lost data
// allows, never editing an object in place:
//
//  1. it takes an exclusive lock, and refuses (ErrLocked) while a backup or
//     prune holds a live lock;
//  2. it checks the repository (Check, with ReadData if asked);
//  3. it uploads again every lost piece it finds in the files under
//     opts.Paths (read piece by piece: a piece whose keyed hash is that of
//     a lost one is that piece);
//  4. each backup that still uses lost data, or whose manifest is damaged,
//     is written as a new generation (a new manifest, numbered after the
//     newest, recording RepairedFrom) without the files whose data is lost
//     (and without what follows the damage in a damaged manifest); only
//     then is the old manifest deleted;
//  5. it deletes the orphan objects: pieces no remaining backup
//     references.
//
// A manifest written by a newer Coffer (unsupported version) is never
// touched: Repair refuses to run.
func (r *Repository) Repair(ctx context.Context, opts RepairOptions) (*RepairSummary, error) {
	start := time.Now()
	lk, err := r.lock(ctx, lockExclusive)
	if err != nil {
		return nil, err
	}
	defer lk.release()
	if others, err := lk.others(ctx); err != nil {
		return nil, err
	} else if len(others) > 0 {
		o := others[0]
		return nil, fmt.Errorf("%w: a %s lock of %s (pid %d, %s) is live; repair when no backup or prune runs (see Unlock for stale locks)", ErrLocked, o.Type, o.Host, o.PID, o.Time.Format(time.RFC3339))
	}
	indexed, dropped, err := r.reindex(ctx)
	if err != nil {
		return nil, err
	}
	cs, err := r.Check(ctx, CheckOptions{ReadData: opts.ReadData})
	if err != nil && !errors.Is(err, container.ErrIntegrity) {
		return nil, err
	}
	sum := &RepairSummary{Check: cs, Repaired: []RepairedBackup{}, IndexedPacks: indexed, DeletedIndexes: dropped}
	badManifest := map[uint64]bool{}
	for _, bm := range cs.BadManifests {
		if strings.Contains(bm.Problem, container.ErrUnsupportedVersion.Error()) {
			return nil, fmt.Errorf("%w: backup %d was written by a newer Coffer; upgrade before repairing", container.ErrUnsupportedVersion, bm.Generation)
		}
		badManifest[bm.Generation] = true
	}
	lost := map[pieceID]bool{}
	lostV1 := false
	affected := map[uint64]bool{}
	var paths []string
	seenPath := map[string]bool{}
	for _, d := range cs.Damaged {
		var id pieceID
		hex.Decode(id[:], []byte(d.ID))
		lost[id] = true
		lostV1 = lostV1 || d.V1
		for _, f := range d.Files {
			affected[f.Generation] = true
			if !seenPath[f.Path] {
				seenPath[f.Path] = true
				paths = append(paths, f.Path)
			}
		}
	}
	if len(opts.Paths) > 0 && len(lost) > 0 {
		n, err := r.reupload(ctx, opts, paths, lost, lostV1)
		sum.Reuploaded = n
		if err != nil {
			return sum, err
		}
	}
	gens, err := r.manifestNumbers(ctx)
	if err != nil {
		return sum, err
	}
	for _, g := range gens {
		if !badManifest[g] && !affected[g] {
			continue
		}
		rb, err := r.rewrite(ctx, g, lost)
		if err != nil {
			return sum, err
		}
		if rb != nil {
			sum.Repaired = append(sum.Repaired, *rb)
		}
	}
	// A damaged pack's pieces are all lost: uploaded again above, or their
	// files dropped by the rewrites. Deleting it makes the indexes point
	// at the pieces uploaded again.
	for _, name := range cs.DamagedPacks {
		if err := r.b.Delete(ctx, name); err != nil {
			return sum, fmt.Errorf("deleting the damaged pack %s: %w", name, err)
		}
		sum.DeletedObjects++
	}
	if err := r.sweepOrphans(ctx, lk, sum); err != nil {
		return sum, err
	}
	sum.Duration = Duration(time.Since(start))
	return sum, nil
}

// reupload reads the files of the damaged entries that are still on disk
// under opts.Paths and uploads every piece among them that is lost,
// removing it from lost.
func (r *Repository) reupload(ctx context.Context, opts RepairOptions, entryPaths []string, lost map[pieceID]bool, lostV1 bool) (int64, error) {
	roots, err := resolveRoots(opts.Paths)
	if err != nil {
		return 0, err
	}
	byName := map[string]string{}
	for _, rt := range roots {
		byName[rt.name] = rt.abs
	}
	var n int64
	buf := make([]byte, r.pieceSize)
	pk := r.newPacker(ctx)
	defer pk.wait()
	var scratch []byte
	for _, ep := range entryPaths {
		first, rest, _ := strings.Cut(ep, "/")
		abs, ok := byName[first]
		if !ok {
			continue
		}
		if rest != "" {
			abs = filepath.Join(abs, filepath.FromSlash(rest))
		}
		f, err := os.OpenFile(abs, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
		if err != nil {
			continue // gone or unreadable: its data stays lost
		}
		if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
			f.Close()
			continue
		}
		for {
			k, rerr := io.ReadFull(f, buf)
			if k > 0 {
				id := r.pieceID(buf[:k])
				var put func(context.Context, pieceID, []byte, bool) (int64, error) // nil: a version 2 piece
				if !lost[id] && lostV1 {
					id, put = r.pieceIDv1(buf[:k]), r.putPieceV1
				}
				if lost[id] && k < r.packThreshold() && put == nil {
					if err := pk.add(ctx, id, buf[:k], !opts.NoCompress, &scratch); err != nil {
						f.Close()
						return n, fmt.Errorf("uploading again data of %s: %w", abs, err)
					}
					delete(lost, id)
					n++
				} else if lost[id] {
					if put == nil {
						put = r.putPiece
					}
					if _, err := put(ctx, id, buf[:k], !opts.NoCompress); err != nil {
						f.Close()
						return n, fmt.Errorf("uploading again data of %s: %w", abs, err)
					}
					delete(lost, id)
					n++
				}
			}
			if rerr != nil {
				break
			}
		}
		f.Close()
	}
	packs, err := pk.finish(ctx)
	if err != nil {
		return n, err
	}
	if len(packs) > 0 {
		if _, _, err := r.putIndex(ctx, packs); err != nil {
			return n, err
		}
	}
	if n > 0 {
		if s, ok := r.b.(storage.Syncer); ok {
			if err := s.Sync(ctx); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// rewrite commits a copy of generation g without the files that use lost
// pieces (and without what follows damage in its manifest), then deletes
// g. It returns nil if g needs no rewriting after all.
func (r *Repository) rewrite(ctx context.Context, g uint64, lost map[pieceID]bool) (*RepairedBackup, error) {
	rb := &RepairedBackup{From: g, Dropped: []string{}}
	mr, err := r.openManifest(ctx, g)
	if err != nil {
		if !isDamage(err) {
			return nil, err
		}
		// Nothing of it can be read: the whole backup is lost.
		rb.Truncated = true
		if err := r.b.Delete(ctx, manifestName(g)); err != nil {
			return nil, fmt.Errorf("deleting the unreadable backup %d: %w", g, err)
		}
		return rb, nil
	}
	defer mr.Close()
	tmp, err := os.CreateTemp("", "coffer-manifest-*")
	if err != nil {
		return nil, err
	}
	defer func() { tmp.Close(); os.Remove(tmp.Name()) }()
	eph := new([32]byte)
	rand.Read(eph[:])
	defer clear(eph[:])
	cw, err := container.NewWriter(tmp, eph, container.Params{Kind: container.KindManifest, Compress: true})
	if err != nil {
		return nil, err
	}
	mw := &manifestWriter{w: bufio.NewWriterSize(cw, 256<<10)}
	for {
		e, err := mr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if !isDamage(err) {
				return nil, err
			}
			rb.Truncated = true
			break
		}
		drop := false
		for _, p := range e.Pieces {
			if lost[p.ID] {
				drop = true
				break
			}
		}
		if drop {
			rb.Dropped = append(rb.Dropped, e.Path)
			continue
		}
		if err := mw.add(e); err != nil {
			return nil, err
		}
	}
	if len(rb.Dropped) == 0 && !rb.Truncated {
		return nil, nil // its lost pieces were all uploaded again
	}
	if err := mw.w.Flush(); err != nil {
		return nil, err
	}
	if err := cw.Close(); err != nil {
		return nil, err
	}
	hdr := mr.header
	hdr.Format = manifestFormat
	hdr.Repaired = g
	hdr.Stats = mw.stats
	gens, err := r.manifestNumbers(ctx)
	if err != nil {
		return nil, err
	}
	to, err := r.commit(ctx, &hdr, tmp, eph, gens)
	if err != nil {
		return nil, fmt.Errorf("writing the repaired copy of backup %d: %w", g, err)
	}
	rb.To = to
	if err := r.b.Delete(ctx, manifestName(g)); err != nil {
		return rb, fmt.Errorf("backup %d was repaired as backup %d, but deleting the damaged one failed: %w", g, to, err)
	}
	return rb, nil
}

// sweepOrphans deletes every piece no backup references, if no other
// process holds a live lock (a running backup may reuse an unreferenced
// piece it listed).
func (r *Repository) sweepOrphans(ctx context.Context, lk *heldLock, sum *RepairSummary) error {
	gens, err := r.manifestNumbers(ctx)
	if err != nil {
		return err
	}
	refs := map[pieceID]bool{}
	for _, g := range gens {
		err := r.forEachEntry(ctx, g, func(e *entry) error {
			for _, p := range e.Pieces {
				refs[p.ID] = true
			}
			return nil
		})
		if errors.Is(err, ErrNoGeneration) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading backup %d before removing orphans: %w; nothing was removed", g, err)
		}
	}
	if others, err := lk.others(ctx); err != nil || len(others) > 0 {
		return err
	}
	listed, err := r.listPieces(ctx)
	if err != nil {
		return err
	}
	for id, oi := range listed {
		if refs[id] {
			continue
		}
		if err := r.b.Delete(ctx, oi.Name); err != nil {
			return fmt.Errorf("deleting unreferenced data: %w", err)
		}
		sum.DeletedObjects++
		sum.DeletedBytes += oi.Size
	}
	ps, err := r.sweepPacks(ctx, refs)
	if err != nil {
		return err
	}
	sum.DeletedObjects += ps.deletedPacks
	sum.DeletedBytes += ps.deletedBytes
	return nil
}

// reindex reads the packs no readable index lists, writes an index of
// those it can read (create-only) and makes it durable, and then deletes
// the damaged indexes: the pieces of a pack whose index was lost or
// damaged are found again, from the pack itself (their names are
// recomputed from their data).
func (r *Repository) reindex(ctx context.Context) (indexed, deleted int64, err error) {
	x, err := r.loadIndex(ctx)
	if err != nil {
		return 0, 0, err
	}
	adopted, err := r.adopt(ctx, x)
	if err != nil {
		return 0, 0, err
	}
	if len(adopted) > 0 {
		if _, _, err := r.putIndex(ctx, adopted); err != nil {
			return 0, 0, err
		}
		if s, ok := r.b.(storage.Syncer); ok {
			if err := s.Sync(ctx); err != nil {
				return 0, 0, err
			}
		}
	}
	for _, bi := range x.bad {
		if err := r.b.Delete(ctx, bi.Name); err != nil {
			return int64(len(adopted)), deleted, fmt.Errorf("deleting the damaged index %s: %w", bi.Name, err)
		}
		deleted++
	}
	return int64(len(adopted)), deleted, nil
}
