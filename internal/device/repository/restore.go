package repository

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/atomicfile"
	"github.com/cofferhq/coffer/internal/device/container"
	"github.com/cofferhq/coffer/storage"
)

// Generations lists the committed backups, oldest first.
func (r *Repository) Generations(ctx context.Context) ([]Generation, error) {
	nums, err := r.manifestNumbers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Generation, 0, len(nums))
	for _, n := range nums {
		mr, err := r.openManifest(ctx, n)
		if err != nil {
			if errors.Is(err, ErrNoGeneration) {
				continue // pruned meanwhile
			}
			return nil, err
		}
		out = append(out, mr.header.generation(n))
		mr.Close()
	}
	return out, nil
}

// Latest returns the newest generation number, or 0 if there is none.
func (r *Repository) Latest(ctx context.Context) (uint64, error) {
	nums, err := r.manifestNumbers(ctx)
	if err != nil || len(nums) == 0 {
		return 0, err
	}
	return nums[len(nums)-1], nil
}

// forEachEntry reads a whole generation, calling fn for every entry.
func (r *Repository) forEachEntry(ctx context.Context, gen uint64, fn func(*entry) error) error {
	mr, err := r.openManifest(ctx, gen)
	if err != nil {
		return err
	}
	defer mr.Close()
	for {
		e, err := mr.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

// plainBufs holds buffers for opened pieces (restore and verify return
// them once the data is written or checked).
var plainBufs = sync.Pool{New: func() any { return new([]byte) }}

// putPlain hands a buffer returned by fetchPiece back for reuse; the
// caller must not touch data afterwards.
func putPlain(data []byte) {
	if cap(data) > 0 {
		b := data[:0]
		plainBufs.Put(&b)
	}
}

// fetchPiece downloads and opens one piece, checking its size. The
// plaintext is in a buffer from plainBufs; the caller may hand it back
// with putPlain when done with it.
func (r *Repository) fetchPiece(ctx context.Context, p piece) ([]byte, error) {
	name := pieceName(p.ID)
	rc, err := r.b.Get(ctx, name)
	if errors.Is(err, storage.ErrNotExist) {
		return nil, integrityf("piece %s is missing from storage", p.ID.String()[:16])
	}
	if err != nil {
		return nil, fmt.Errorf("downloading piece %s: %w", p.ID.String()[:16], err)
	}
	defer rc.Close()
	// A sealed piece is at most its plaintext plus per-chunk overhead.
	limit := p.Size + p.Size/1024 + 1024
	bp := sealedBufs.Get().(*[]byte)
	defer sealedBufs.Put(bp)
	sealed, err := readInto((*bp)[:0], rc, limit+1)
	*bp = sealed
	if err != nil {
		return nil, fmt.Errorf("downloading piece %s: %w", p.ID.String()[:16], wrapRead(err))
	}
	if int64(len(sealed)) > limit {
		return nil, integrityf("piece %s is larger than its size allows", p.ID.String()[:16])
	}
	pb := plainBufs.Get().(*[]byte)
	plain, err := container.AppendOpen((*pb)[:0], r.key, container.KindData, r.ref(name), sealed, 1)
	if err != nil {
		plainBufs.Put(pb)
		return nil, fmt.Errorf("piece %s: %w", p.ID.String()[:16], err)
	}

	if int64(len(plain)) != p.Size {
		putPlain(plain)
		return nil, integrityf("piece %s holds %d bytes, the manifest says %d", p.ID.String()[:16], len(plain), p.Size)
	}
	return plain, nil
}

// readInto reads r to its end (at most limit bytes) into buf, growing it
// once to the limit if needed.
func readInto(buf []byte, r io.Reader, limit int64) ([]byte, error) {
	if int64(cap(buf)) < limit {
		buf = make([]byte, 0, limit)
	}
	for int64(len(buf)) < limit {
		n, err := r.Read(buf[len(buf):limit])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// Restore restores generation gen (0 = the newest) into target. target
// must not exist or be an empty directory. Everything is written into a
// staging directory beside target and moved into place only after every
// byte has been authenticated; on any failure the staging directory is
// removed and target is left as it was.
func (r *Repository) Restore(ctx context.Context, gen uint64, target string, opts RestoreOptions) (*RestoreSummary, error) {
	start := time.Now()
	if gen == 0 {
		latest, err := r.Latest(ctx)
		if err != nil {
			return nil, err
		}
		if latest == 0 {
			return nil, fmt.Errorf("%w: the repository at %s has no backups yet", ErrNoGeneration, r.b.Location())
		}
		gen = latest
	}
	abs, err := filepath.Abs(target)
	if err != nil {
		return nil, err
	}
	replaceEmpty := false
	if fi, err := os.Lstat(abs); err == nil {
		if !fi.IsDir() {
			return nil, fmt.Errorf("%w: %s is a file; choose a new directory", ErrTargetNotEmpty, abs)
		}
		des, err := os.ReadDir(abs)
		if err != nil {
			return nil, err
		}
		if len(des) > 0 {
			return nil, fmt.Errorf("%w: %s; choose a new or empty directory", ErrTargetNotEmpty, abs)
		}
		replaceEmpty = true
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	parentDir := filepath.Dir(abs)
	if err := os.MkdirAll(parentDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", parentDir, err)
	}
	mr, err := r.openManifest(ctx, gen)
	if err != nil {
		return nil, err
	}
	defer mr.Close()

	var rnd [6]byte
	rand.Read(rnd[:])
	staging := filepath.Join(parentDir, ".coffer-restore-"+hex.EncodeToString(rnd[:]))
	if err := os.Mkdir(staging, 0o700); err != nil {
		return nil, fmt.Errorf("creating a staging directory beside %s: %w", abs, err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(staging)
		}
	}()
	if opts.Progress != nil {
		opts.Progress.SetTotal(mr.header.Stats.Bytes)
	}
	rs := &restoreRun{r: r, staging: staging, progress: opts.Progress, dirs: map[string]bool{}}
	if err := rs.run(ctx, mr); err != nil {
		return nil, err
	}
	// Make everything durable before it appears at the target.
	if d, err := os.Open(staging); err == nil {
		err = unix.Syncfs(int(d.Fd()))
		d.Close()
		if err != nil {
			return nil, fmt.Errorf("syncing restored files: %w", err)
		}
	}
	if replaceEmpty {
		if err := os.Remove(abs); err != nil {
			return nil, fmt.Errorf("replacing the empty directory %s: %w", abs, err)
		}
	}
	if err := os.Rename(staging, abs); err != nil {
		return nil, fmt.Errorf("moving the restored files into %s: %w", abs, err)
	}
	ok = true
	atomicfile.SyncDir(parentDir) // best effort: the files are in place
	return &RestoreSummary{
		Generation: mr.header.generation(gen),
		Target:     abs,
		Files:      mr.stats.Files,
		Bytes:      mr.stats.Bytes,
		Duration:   Duration(time.Since(start)),
	}, nil
}

type fetchJob struct {
	p   piece
	res chan fetchResult
}

type fetchResult struct {
	data []byte
	err  error
	held bool // the job holds a slot of the fetch window
}

// fileWork is one file to write, with its pieces being fetched.
type fileWork struct {
	e    *entry
	jobs []*fetchJob
}

type restoreRun struct {
	r        *Repository
	staging  string
	progress Progress
	dirs     map[string]bool // entry paths of directories created
	later    []*entry        // directories (metadata) and symlinks, applied at the end
}

func (rs *restoreRun) run(ctx context.Context, mr *manifestReader) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	n := rs.r.concurrency
	work := make(chan *fetchJob, 2*n)
	files := make(chan *fileWork, 2*n)
	// sem bounds the pieces fetched but not yet written.
	sem := make(chan struct{}, 2*n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for j := range work {
				res := fetchResult{held: true}
				if err := ctx.Err(); err != nil {
					res.err = context.Cause(ctx)
				} else {
					res.data, res.err = rs.r.fetchPiece(ctx, j.p)
				}
				j.res <- res
			}
		})
	}
	writeErr := make(chan error, 1)
	go func() {
		var err error
		for fw := range files {
			if err != nil {
				for _, j := range fw.jobs {
					discard(sem, <-j.res)
				}
				continue
			}
			if err = rs.writeFile(fw, sem); err != nil {
				cancel(err)
			}
		}
		writeErr <- err
	}()

	var readErr error
loop:
	for {
		e, err := mr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
		if err := rs.checkParent(e); err != nil {
			readErr = err
			break
		}
		switch e.Type {
		case typeDir:
			if err := os.Mkdir(filepath.Join(rs.staging, filepath.FromSlash(e.Path)), 0o700); err != nil {
				readErr = integrityf("creating directory %q: %v", e.Path, err)
				break loop
			}
			rs.dirs[e.Path] = true
			rs.later = append(rs.later, e)
			continue
		case typeSymlink, typeFIFO:
			rs.later = append(rs.later, e)
			continue
		}
		fw := &fileWork{e: e}
		for _, p := range e.Pieces {
			fw.jobs = append(fw.jobs, &fetchJob{p: p, res: make(chan fetchResult, 1)})
		}
		handed := false
		select {
		case files <- fw:
			handed = true
		case <-ctx.Done():
		}
		if !handed {
			break
		}
		// Every job of a file handed to the writer gets exactly one
		// result: from a worker, or here if the restore was cancelled.
		for _, j := range fw.jobs {
			select {
			case sem <- struct{}{}:
				work <- j
			case <-ctx.Done():
				j.res <- fetchResult{err: context.Cause(ctx)}
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	close(files)
	wg.Wait()
	werr := <-writeErr
	if werr != nil {
		return werr
	}
	if readErr != nil {
		return readErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return rs.finish()
}

// checkParent refuses an entry whose directory is not a directory restored
// before it, so that nothing is ever written through a symbolic link or
// outside the staging directory.
func (rs *restoreRun) checkParent(e *entry) error {
	dir := path.Dir(e.Path)
	if dir == "." {
		return nil
	}
	if !rs.dirs[dir] {
		return integrityf("entry %q is not inside a restored directory", e.Path)
	}
	return nil
}

func (rs *restoreRun) writeFile(fw *fileWork, sem chan struct{}) (err error) {
	p := filepath.Join(rs.staging, filepath.FromSlash(fw.e.Path))
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	i := 0
	defer func() {
		// Drain what is still being fetched for this file.
		for ; i < len(fw.jobs); i++ {
			discard(sem, <-fw.jobs[i].res)
		}
	}()
	if err != nil {
		return integrityf("creating file %q: %v", fw.e.Path, err)
	}
	for ; i < len(fw.jobs); i++ {
		res := <-fw.jobs[i].res
		release(sem, res)
		if res.err != nil {
			f.Close()
			i++
			return fmt.Errorf("restoring %s: %w", fw.e.Path, res.err)
		}
		if err := writeSliced(f, res.data); err != nil {
			f.Close()
			i++
			return fmt.Errorf("writing %s: %w", p, err)
		}
		if rs.progress != nil {
			rs.progress.Add(int64(len(res.data)))
		}
		putPlain(res.data)
	}
	if err := f.Chmod(fs.FileMode(fw.e.Mode).Perm() | modeBits(fw.e.Mode)); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	t := time.Unix(0, fw.e.MTime)
	return os.Chtimes(p, t, t)
}

// writeSize is the size of each write(2) of a restored file: large writes
// cost some kernels several times more per byte (BENCHMARKS.md).
const writeSize = 256 << 10

// writeSliced writes data to w in writeSize slices, never a whole 4 MiB
// piece in one write(2). Pieces are large, so no buffering is needed.
func writeSliced(w io.Writer, data []byte) error {
	for len(data) > 0 {
		n := min(len(data), writeSize)
		if _, err := w.Write(data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

func release(sem chan struct{}, res fetchResult) {
	if res.held {
		<-sem
	}
}

// discard releases a result that will not be written.
func discard(sem chan struct{}, res fetchResult) {
	putPlain(res.data)
	release(sem, res)
}

func modeBits(m uint32) fs.FileMode {
	return fs.FileMode(m) & (fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

// finish creates symbolic links and sets directory modes and times, deepest
// first so that setting a directory's time is not undone by its contents.
func (rs *restoreRun) finish() error {
	for i := len(rs.later) - 1; i >= 0; i-- {
		e := rs.later[i]
		p := filepath.Join(rs.staging, filepath.FromSlash(e.Path))
		ts := []unix.Timespec{unix.NsecToTimespec(e.MTime), unix.NsecToTimespec(e.MTime)}
		switch e.Type {
		case typeSymlink:
			if err := os.Symlink(e.Target, p); err != nil {
				return integrityf("creating symbolic link %q: %v", e.Path, err)
			}
			unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
		case typeFIFO:
			if err := unix.Mkfifo(p, uint32(fs.FileMode(e.Mode).Perm())); err != nil {
				return integrityf("creating FIFO %q: %v", e.Path, err)
			}
			unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
		case typeDir:
			if err := os.Chmod(p, fs.FileMode(e.Mode).Perm()|modeBits(e.Mode)); err != nil {
				return err
			}
			unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
	}
	return nil
}
