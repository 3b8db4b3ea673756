package repository

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/device/container"
	"github.com/cofferhq/coffer/storage"
)

// sealedBufs holds buffers for sealed pieces, so that a backup does not
// allocate (and the kernel does not fault in) a fresh buffer per piece.
var sealedBufs = sync.Pool{New: func() any { return new([]byte) }}

func defaultConcurrency() int { return max(4, 2*runtime.GOMAXPROCS(0)) }

func sortU64(s []uint64) { sort.Slice(s, func(i, j int) bool { return s[i] < s[j] }) }

type root struct {
	name string // entry path of the root: the base name
	abs  string
}

func resolveRoots(paths []string) ([]root, error) {
	if len(paths) == 0 {
		return nil, errors.New("nothing to back up: name at least one file or directory")
	}
	var roots []root
	seen := map[string]string{}
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("cannot back up %s: %w", p, err)
		}
		name := filepath.Base(abs)
		if name == string(filepath.Separator) || name == "." {
			return nil, fmt.Errorf("cannot back up %s as a whole: name the directories inside it", p)
		}
		if other, dup := seen[name]; dup {
			return nil, fmt.Errorf("%s and %s would both be restored as %q: back them up separately, or from a common parent directory", other, p, name)
		}
		seen[name] = p
		roots = append(roots, root{name: name, abs: abs})
	}
	sort.Slice(roots, func(i, j int) bool { return comparePaths(roots[i].name, roots[j].name) < 0 })
	return roots, nil
}

// knownSet is the set of pieces the backup may reference without
// uploading: those the storage listed at the start of the backup (taken
// under the backup's shared lock, so no prune can delete them while it
// runs), and those uploaded by this backup. A piece the previous
// generation references but the storage no longer has is not in it, so it
// is uploaded again; a piece an interrupted backup stored is in it, so it
// is not.
type knownSet struct {
	mu sync.Mutex
	m  map[pieceID]struct{}
}

func (k *knownSet) has(id pieceID) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.m[id]
	return ok
}

func (k *knownSet) add(id pieceID) {
	k.mu.Lock()
	k.m[id] = struct{}{}
	k.mu.Unlock()
}

// listPieces lists the pieces stored in the repository.
func (r *Repository) listPieces(ctx context.Context) (map[pieceID]storage.ObjectInfo, error) {
	m := map[pieceID]storage.ObjectInfo{}
	err := r.b.List(ctx, dataPrefix, func(oi storage.ObjectInfo) error {
		if id, ok := parsePieceName(oi.Name); ok {
			m[id] = oi
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing data in %s: %w", r.b.Location(), err)
	}
	return m, nil
}

// Backup backs up paths as a new generation and commits it.
func (r *Repository) Backup(ctx context.Context, paths []string, opts BackupOptions) (*BackupSummary, error) {
	start := time.Now()
	roots, err := resolveRoots(paths)
	if err != nil {
		return nil, err
	}
	if opts.Host == "" {
		opts.Host, _ = os.Hostname()
	}
	if opts.Warn == nil {
		opts.Warn = func(string, error) {}
	}
	if opts.Version == "" {
		opts.Version = DefaultVersion
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	lk, err := r.lock(ctx, lockShared)
	if err != nil {
		return nil, err
	}
	defer lk.release()

	gens, err := r.manifestNumbers(ctx)
	if err != nil {
		return nil, err
	}
	var parent uint64
	if len(gens) > 0 {
		parent = gens[len(gens)-1]
	}
	listed, err := r.listPieces(ctx)
	if err != nil {
		return nil, err
	}
	known := &knownSet{m: make(map[pieceID]struct{}, len(listed))}
	for id, oi := range listed {
		if oi.Size > minSealedSize {
			known.m[id] = struct{}{}
		}
	}
	// Packed pieces are known if their pack is listed. Packs no index
	// lists (an interrupted backup's) are read and indexed by this one, so
	// that what they hold is not uploaded again.
	x, err := r.loadIndex(ctx)
	if err != nil {
		return nil, err
	}
	adopted, err := r.adopt(ctx, x)
	if err != nil {
		return nil, err
	}
	for id, l := range x.blobs {
		if l.pack.present {
			known.m[id] = struct{}{}
		}
	}
	if opts.Progress != nil {
		opts.Progress.SetTotal(scanSize(roots))
	}

	b := &backupRun{r: r, ctx: ctx, opts: opts, known: known, compress: !opts.NoCompress, exclude: map[devIno]string{}, pk: r.newPacker(ctx)}
	defer b.pk.wait()
	for _, x := range opts.Exclude {
		var st unix.Stat_t
		if unix.Stat(x.Path, &st) == nil {
			b.exclude[statID(&st)] = fmt.Sprintf("not backed up: this is %s, which lies inside the backed-up paths", x.What)
		}
	}
	if parent != 0 {
		mr, err := r.openManifest(ctx, parent)
		if err != nil {
			return nil, fmt.Errorf("reading the previous backup: %w", err)
		}
		defer mr.Close()
		b.prev = &cursor{mr: mr}
	}

	// Entries go to a temporary manifest sealed under a throwaway key, so
	// no plaintext metadata touches the disk; it is re-sealed under the
	// repository key once the generation number is known.
	tmp, err := os.CreateTemp("", "coffer-manifest-*")
	if err != nil {
		return nil, fmt.Errorf("creating a temporary file for the manifest: %w", err)
	}
	defer func() { tmp.Close(); os.Remove(tmp.Name()) }()
	eph := new([32]byte)
	rand.Read(eph[:])
	defer clear(eph[:])
	cw, err := container.NewWriter(tmp, eph, container.Params{Kind: container.KindManifest, Compress: true})
	if err != nil {
		return nil, err
	}
	b.mw = &manifestWriter{w: bufio.NewWriterSize(cw, 256<<10)}

	if err := b.run(roots); err != nil {
		return nil, err
	}
	// The packs, then their index, are stored before the manifest that
	// references them is.
	packs, err := b.pk.finish(ctx)
	if err != nil {
		return nil, err
	}
	b.storedBytes.Add(b.pk.stored.Load()) // packs, and the indexes written along the way
	if packs = append(packs, adopted...); len(packs) > 0 {
		_, n, err := r.putIndex(ctx, packs)
		if err != nil {
			return nil, err
		}
		b.storedBytes.Add(n)
	}
	if err := b.mw.w.Flush(); err != nil {
		return nil, fmt.Errorf("writing the temporary manifest: %w", err)
	}
	if err := cw.Close(); err != nil {
		return nil, fmt.Errorf("writing the temporary manifest: %w", err)
	}
	if s, ok := r.b.(storage.Syncer); ok {
		if err := s.Sync(ctx); err != nil {
			return nil, fmt.Errorf("making uploaded data durable: %w", err)
		}
	}
	hdr := manifestHeader{
		Format:     manifestFormat,
		Repository: hex.EncodeToString(r.id[:]),
		Time:       time.Now().UTC(),
		Host:       opts.Host,
		Parent:     parent,
		Version:    opts.Version,
		Stats:      b.mw.stats,
	}
	for _, rt := range roots {
		hdr.Paths = append(hdr.Paths, rt.name)
	}
	gen, err := r.commit(ctx, &hdr, tmp, eph, gens)
	if err != nil {
		return nil, err
	}
	return &BackupSummary{
		Generation:     hdr.generation(gen),
		NewPieces:      b.newPieces.Load(),
		NewBytes:       b.newBytes.Load(),
		StoredBytes:    b.storedBytes.Load(),
		ReusedPieces:   b.reused.Load(),
		UnchangedFiles: b.unchanged,
		Skipped:        int64(len(b.skipped)),
		SkippedEntries: b.skipped,
		Duration:       Duration(time.Since(start)),
	}, nil
}

func (h *manifestHeader) generation(n uint64) Generation {
	return Generation{
		Number: n, Time: h.Time, Host: h.Host, Paths: h.Paths, Parent: h.Parent,
		Files: h.Stats.Files, Dirs: h.Stats.Dirs, Links: h.Stats.Links,
		Bytes: h.Stats.Bytes, Pieces: h.Stats.Pieces, Version: h.Version,
		RepairedFrom: h.Repaired,
	}
}

// commit seals the manifest for the next free generation number and writes
// it create-only. If a concurrent backup took the number, it takes the next.
// On a store without atomic create-only writes it commits under the commit
// lock instead (commitlock.go).
func (r *Repository) commit(ctx context.Context, hdr *manifestHeader, tmp *os.File, eph *[32]byte, gens []uint64) (uint64, error) {
	if !r.b.Capabilities().AtomicCreate {
		return r.commitLocked(ctx, hdr, tmp, eph)
	}
	return r.putManifest(ctx, hdr, tmp, eph, gens, nil)
}

// putManifest seals the manifest for the generation after gens and
// stores it create-only; verify (nil: nothing to check, an atomic
// create-only store) then reads it back and reports whether the copy
// stored is ours and the only one. While a number is taken, or another
// writer's copy is found, it commits under the next one, up to 20 times.
func (r *Repository) putManifest(ctx context.Context, hdr *manifestHeader, tmp *os.File, eph *[32]byte, gens []uint64,
	verify func(ctx context.Context, name string, sum [32]byte) (bool, error)) (uint64, error) {
	var next uint64 = 1
	if len(gens) > 0 {
		next = gens[len(gens)-1] + 1
	}
	for attempt := 0; attempt < 20; attempt++ {
		name := manifestName(next)
		out, err := os.CreateTemp("", "coffer-manifest-*")
		if err != nil {
			return 0, err
		}
		size, err := r.sealManifest(out, name, hdr, tmp, eph)
		var sum [32]byte
		if err == nil && verify != nil {
			sum, err = fileSum(out, size)
		}
		if err == nil {
			err = r.b.PutIfAbsent(ctx, name, out, size)
		}
		out.Close()
		os.Remove(out.Name())
		if errors.Is(err, storage.ErrExist) {
			next++ // taken: by a concurrent backup, or one the listing had not shown
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("committing backup %d: %w", next, err)
		}
		if verify == nil {
			return next, nil
		}
		ok, err := verify(ctx, name, sum)
		if err != nil {
			return 0, fmt.Errorf("committing backup %d: reading it back: %w", next, err)
		}
		if ok {
			return next, nil
		}
		// Someone wrote this name too, against the protocol (an older
		// client, or a store lagging beyond its ListLag): ours is not
		// the one there. Commit under the next number.
		next++
	}
	return 0, fmt.Errorf("committing the backup: 20 generation numbers in a row were taken by other backups, or the manifest written was replaced; run the backup again")
}

func (r *Repository) sealManifest(out *os.File, name string, hdr *manifestHeader, tmp *os.File, eph *[32]byte) (int64, error) {
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	in, err := container.NewReader(bufio.NewReader(tmp), eph, container.KindManifest, [32]byte{}, 0)
	if err != nil {
		return 0, fmt.Errorf("reading back the temporary manifest: %w", err)
	}
	w, err := container.NewWriter(out, r.key, container.Params{Kind: container.KindManifest, Ref: r.ref(name), Compress: true})
	if err != nil {
		return 0, err
	}
	wire := *hdr
	wire.Paths = make([]string, len(hdr.Paths))
	for i, p := range hdr.Paths {
		wire.Paths[i] = escapeName(p)
	}
	hb, _ := json.Marshal(&wire)
	w.Write(append(hb, '\n'))
	if _, err := io.Copy(w, in); err != nil {
		return 0, fmt.Errorf("sealing the manifest: %w", err)
	}
	eb, _ := json.Marshal(manifestEnd{End: hdr.Stats})
	if _, err := w.Write(append(eb, '\n')); err != nil {
		return 0, err
	}
	if err := w.Close(); err != nil {
		return 0, err
	}
	if err := out.Sync(); err != nil {
		return 0, err
	}
	return out.Seek(0, io.SeekCurrent)
}

// cursor walks the parent manifest in step with the file-system walk.
type cursor struct {
	mr   *manifestReader
	cur  *entry
	done bool
	err  error
}

// find returns the parent's entry for path, or nil.
func (c *cursor) find(p string) *entry {
	for !c.done {
		if c.cur == nil {
			e, err := c.mr.next()
			if err != nil {
				c.done = true
				if err != io.EOF {
					c.err = err
				}
				return nil
			}
			c.cur = e
		}
		switch cmp := comparePaths(c.cur.Path, p); {
		case cmp < 0:
			c.cur = nil
		case cmp == 0:
			return c.cur
		default:
			return nil
		}
	}
	return nil
}

type pieceResult struct {
	p   piece
	err error
}

type pieceJob struct {
	buf  []byte
	res  chan pieceResult
	path string
}

type slot struct {
	e    *entry
	jobs []*pieceJob
}

type backupRun struct {
	r        *Repository
	ctx      context.Context
	opts     BackupOptions
	known    *knownSet
	prev     *cursor
	mw       *manifestWriter
	compress bool
	pk       *packer

	bufs    chan []byte
	work    chan *pieceJob
	ordered chan *slot

	newPieces, newBytes, storedBytes, reused atomic.Int64
	unchanged                                int64
	skipped                                  []SkippedEntry
	exclude                                  map[devIno]string
}

func (b *backupRun) run(roots []root) error {
	n := b.r.concurrency
	b.bufs = make(chan []byte, n+2)
	for range n + 2 {
		b.bufs <- nil // allocated lazily, at most n+2 buffers live
	}
	b.work = make(chan *pieceJob, n)
	b.ordered = make(chan *slot, 256)

	ctx, cancel := context.WithCancelCause(b.ctx)
	defer cancel(nil)
	b.ctx = ctx
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for j := range b.work {
				p, err := b.store(ctx, j)
				b.bufs <- j.buf
				j.res <- pieceResult{p, err}
			}
		})
	}
	commitErr := make(chan error, 1)
	go func() {
		var err error
		for s := range b.ordered {
			if err != nil {
				continue // drain
			}
			for _, j := range s.jobs {
				res := <-j.res
				if res.err != nil {
					err = res.err
					cancel(err)
					break
				}
				s.e.Pieces = append(s.e.Pieces, res.p)
			}
			if err == nil {
				err = b.mw.add(s.e)
				if err != nil {
					cancel(err)
				}
			}
		}
		commitErr <- err
	}()

	walkErr := b.walk(ctx, roots)
	close(b.work)
	wg.Wait()
	close(b.ordered)
	cerr := <-commitErr
	if cerr != nil {
		return cerr
	}
	if walkErr != nil {
		if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
			return c
		}
		return walkErr
	}
	if b.prev != nil && b.prev.err != nil {
		return fmt.Errorf("reading the previous backup: %w", b.prev.err)
	}
	return ctx.Err()
}

func (b *backupRun) store(ctx context.Context, j *pieceJob) (piece, error) {
	if err := ctx.Err(); err != nil {
		return piece{}, err
	}
	id := b.r.pieceID(j.buf)
	p := piece{ID: id, Size: int64(len(j.buf))}
	if b.known.has(id) {
		b.reused.Add(1)
		return p, nil
	}
	if len(j.buf) < b.r.packThreshold() {
		sp := sealedBufs.Get().(*[]byte)
		err := b.pk.add(ctx, id, j.buf, b.compress, sp)
		sealedBufs.Put(sp)
		if err != nil {
			return piece{}, fmt.Errorf("storing data of %s: %w", j.path, err)
		}
	} else {
		stored, err := b.r.putPiece(ctx, id, j.buf, b.compress)
		if err != nil {
			return piece{}, fmt.Errorf("uploading data of %s: %w", j.path, err)
		}
		b.storedBytes.Add(stored)
	}
	b.known.add(id)
	b.newPieces.Add(1)
	b.newBytes.Add(p.Size)
	return p, nil
}

// allKnown reports whether every piece is in the known set: an unchanged
// file is taken from the previous generation only if the storage still has
// all its pieces; otherwise it is read again and what is missing uploaded.
func (b *backupRun) allKnown(ps []piece) bool {
	for _, p := range ps {
		if !b.known.has(p.ID) {
			return false
		}
	}
	return true
}
