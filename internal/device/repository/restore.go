package repository

import (
	"bytes"
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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/atomicfile"
	"github.com/cofferhq/coffer/internal/device/container"
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
// staging directory and moved into place only after every byte has been
// authenticated; on any failure the staging directory is removed and
// target is left as it was. When target does not exist, the staging
// directory is made beside it and renamed to it (target is then mode
// 0700); when target is an existing empty directory (a mount point, say),
// the staging directory is made inside it and its contents moved into
// target, which keeps its inode, owner and mode.
//
// With opts.Salvage, a file whose data is missing or damaged is left out
// instead of failing the restore: every intact file is restored, the
// damaged ones are listed in RestoreSummary.Damaged, and the error
// returned (with the summary) wraps container.ErrIntegrity.
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
	parentDir := filepath.Dir(abs)
	if err := os.MkdirAll(parentDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", parentDir, err)
	}
	sum := &RestoreSummary{Target: abs}
	// Staging directories left by a restore that was killed hold
	// decrypted data: remove them.
	sum.CleanedStaging = cleanStaging(parentDir)
	inside := false
	if fi, err := os.Lstat(abs); err == nil {
		if !fi.IsDir() {
			return nil, fmt.Errorf("%w: %s is a file; choose a new directory", ErrTargetNotEmpty, abs)
		}
		sum.CleanedStaging = append(sum.CleanedStaging, cleanStaging(abs)...)
		des, err := os.ReadDir(abs)
		if err != nil {
			return nil, err
		}
		if len(des) > 0 {
			return nil, fmt.Errorf("%w: %s; choose a new or empty directory", ErrTargetNotEmpty, abs)
		}
		inside = true
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if _, err := r.loadIndex(ctx); err != nil {
		return nil, err
	}
	mr, err := r.openManifest(ctx, gen)
	if err != nil {
		return nil, err
	}
	defer mr.Close()

	stageIn := parentDir
	if inside {
		stageIn = abs
	}
	staging, sfd, err := makeStaging(stageIn)
	if err != nil {
		return nil, fmt.Errorf("creating a staging directory in %s: %w", stageIn, err)
	}
	ok := false
	defer func() {
		if !ok {
			removeTree(staging)
		}
		unix.Close(sfd) // releases the staging lock
	}()
	if opts.Progress != nil {
		opts.Progress.SetTotal(mr.header.Stats.Bytes)
	}
	rs := &restoreRun{r: r, sfd: sfd, progress: opts.Progress, salvage: opts.Salvage}
	if err := rs.run(ctx, mr); err != nil {
		return nil, err
	}
	// Make everything durable before it appears at the target.
	if err := unix.Syncfs(sfd); err != nil {
		return nil, fmt.Errorf("syncing restored files: %w", err)
	}
	if inside {
		if err := moveContents(sfd, staging, abs); err != nil {
			return nil, err
		}
		atomicfile.SyncDir(abs)
	} else {
		if err := os.Rename(staging, abs); err != nil {
			return nil, fmt.Errorf("moving the restored files into %s: %w", abs, err)
		}
		atomicfile.SyncDir(parentDir) // best effort: the files are in place
	}
	ok = true
	sum.Generation = mr.header.generation(gen)
	sum.Files = rs.files.Load()
	sum.Bytes = rs.bytes.Load()
	sum.Damaged = rs.damaged
	sum.Duration = Duration(time.Since(start))
	if len(rs.damaged) > 0 {
		return sum, fmt.Errorf("%w: restored what was intact into %s, but %d entries were damaged or missing and were left out (first: %s: %s)",
			container.ErrIntegrity, abs, len(rs.damaged), rs.damaged[0].Path, rs.damaged[0].Reason)
	}
	return sum, nil
}

const stagingPrefix = ".coffer-restore-"

// makeStaging creates a staging directory in dir and holds an flock on it
// for as long as the returned descriptor is open, so that another restore
// can tell a staging directory in use from one a killed restore left.
func makeStaging(dir string) (string, int, error) {
	var rnd [6]byte
	rand.Read(rnd[:])
	p := filepath.Join(dir, stagingPrefix+hex.EncodeToString(rnd[:]))
	if err := os.Mkdir(p, 0o700); err != nil {
		return "", -1, err
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		os.Remove(p)
		return "", -1, err
	}
	return p, fd, nil
}

// stagingGrace is how young a staging directory with no lock is left
// alone: its restore may be between creating it and locking it.
var stagingGrace = 2 * time.Second

// cleanStaging removes the staging directories in dir that no running
// restore holds (left by one that was killed), and returns their paths.
func cleanStaging(dir string) []string {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var cleaned []string
	for _, de := range des {
		if !de.IsDir() || !strings.HasPrefix(de.Name(), stagingPrefix) {
			continue
		}
		p := filepath.Join(dir, de.Name())
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil && unix.Fstat(fd, &st) == nil &&
			time.Since(time.Unix(st.Ctim.Unix())) > stagingGrace {
			if removeTree(p) == nil {
				cleaned = append(cleaned, p)
			}
		}
		unix.Close(fd)
	}
	return cleaned
}

// removeTree removes a staging tree, even one whose directories a restore
// had already made read-only.
func removeTree(p string) error {
	if err := os.RemoveAll(p); err == nil {
		return nil
	}
	filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if d != nil && d.IsDir() {
			os.Chmod(q, 0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}

// moveContents moves every entry of the staging directory into target,
// refusing to replace anything, then removes the staging directory.
func moveContents(sfd int, staging, target string) error {
	tfd, err := unix.Open(target, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", target, err)
	}
	defer unix.Close(tfd)
	d, err := os.Open(staging)
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := unix.Renameat2(sfd, n, tfd, n, unix.RENAME_NOREPLACE); err != nil {
			return fmt.Errorf("moving the restored %s into %s: %w", n, target, err)
		}
	}
	if err := os.Remove(staging); err != nil {
		return fmt.Errorf("removing the staging directory %s: %w", staging, err)
	}
	return nil
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

// fileWork is one file to write, with its pieces being fetched. f was
// created (O_EXCL|O_NOFOLLOW) in the directory dirfd, a descriptor of its
// own that the writer closes.
type fileWork struct {
	e     *entry
	jobs  []*fetchJob
	f     *os.File
	dirfd int
	name  string
}

type restoreRun struct {
	r        *Repository
	sfd      int // the staging directory
	progress Progress
	salvage  bool
	later    []*entry // directories (metadata), symlinks and FIFOs, applied at the end

	mu      sync.Mutex
	damaged []DamagedFile

	files, bytes atomic.Int64
}

// damage records an entry left out by a salvaging restore.
func (rs *restoreRun) damage(p string, err error) {
	rs.mu.Lock()
	rs.damaged = append(rs.damaged, DamagedFile{Path: p, Reason: err.Error()})
	rs.mu.Unlock()
}

// dirFrame is an open directory of the staging tree.
type dirFrame struct {
	path string // entry path ("" for the staging directory)
	fd   int
	e    *entry
}

// dirStack holds the open directories from the staging directory down to
// the current one. Entries come in walk order, so every entry's directory
// is on the stack (or it is not a directory restored before it).
type dirStack struct {
	s []dirFrame
	// pop, if set, is called with a frame and its parent's descriptor
	// before the frame's descriptor is closed.
	pop func(f dirFrame, parentFd int) error
}

// parent returns the descriptor of p's directory, closing the directories
// the walk has left; ok is false if p's directory was not restored.
func (ds *dirStack) parent(p string) (fd int, ok bool, err error) {
	dir := path.Dir(p)
	if dir == "." {
		dir = ""
	}
	for len(ds.s) > 1 && ds.s[len(ds.s)-1].path != dir {
		if err := ds.popOne(); err != nil {
			return -1, false, err
		}
	}
	top := ds.s[len(ds.s)-1]
	return top.fd, top.path == dir, nil
}

func (ds *dirStack) popOne() error {
	n := len(ds.s) - 1
	f := ds.s[n]
	ds.s = ds.s[:n]
	var err error
	if ds.pop != nil {
		err = ds.pop(f, ds.s[n-1].fd)
	}
	unix.Close(f.fd)
	return err
}

// closeAll pops every directory but the staging directory.
func (ds *dirStack) closeAll() error {
	var first error
	for len(ds.s) > 1 {
		if err := ds.popOne(); err != nil && first == nil {
			first = err
		}
	}
	return first
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
				fw.abandon(sem)
				continue
			}
			if err = rs.writeFile(fw, sem); err != nil {
				cancel(err)
			}
		}
		writeErr <- err
	}()

	ds := &dirStack{s: []dirFrame{{fd: rs.sfd}}}
	readErr := rs.read(ctx, mr, ds, files, work, sem)
	ds.closeAll()
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

// read streams the manifest, creating directories and files and handing
// files to the writer.
func (rs *restoreRun) read(ctx context.Context, mr *manifestReader, ds *dirStack, files chan<- *fileWork, work chan<- *fetchJob, sem chan struct{}) error {
	last := ""
	for {
		e, err := mr.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if rs.salvage && errors.Is(err, container.ErrIntegrity) {
				// The rest of the manifest cannot be trusted; keep
				// what was read before.
				what := "the entries after " + last
				if last == "" {
					what = "the whole backup"
				}
				rs.damage(what, err)
				return nil
			}
			return err
		}
		last = e.Path
		pfd, ok, err := ds.parent(e.Path)
		if err != nil {
			return err
		}
		if !ok {
			err := integrityf("entry %q is not inside a restored directory", e.Path)
			if rs.salvage {
				rs.damage(e.Path, err)
				continue
			}
			return err
		}
		name := path.Base(e.Path)
		switch e.Type {
		case typeDir:
			if err := unix.Mkdirat(pfd, name, 0o700); err != nil {
				return integrityf("creating directory %q: %v", e.Path, err)
			}
			fd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("opening the restored directory %q: %w", e.Path, err)
			}
			ds.s = append(ds.s, dirFrame{path: e.Path, fd: fd})
			rs.later = append(rs.later, e)
			continue
		case typeSymlink, typeFIFO:
			rs.later = append(rs.later, e)
			continue
		}
		fd, err := unix.Openat(pfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return integrityf("creating file %q: %v", e.Path, err)
		}
		dfd, err := unix.FcntlInt(uintptr(pfd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			unix.Close(fd)
			return err
		}
		fw := &fileWork{e: e, f: os.NewFile(uintptr(fd), e.Path), dirfd: dfd, name: name}
		for _, p := range e.Pieces {
			fw.jobs = append(fw.jobs, &fetchJob{p: p, res: make(chan fetchResult, 1)})
		}
		select {
		case files <- fw:
		case <-ctx.Done():
			fw.f.Close()
			unix.Close(dfd)
			return context.Cause(ctx)
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
			return context.Cause(ctx)
		}
	}
}

// abandon drains a file's results and closes it, unwritten.
func (fw *fileWork) abandon(sem chan struct{}) {
	for _, j := range fw.jobs {
		discard(sem, <-j.res)
	}
	fw.f.Close()
	unix.Close(fw.dirfd)
}

func (rs *restoreRun) writeFile(fw *fileWork, sem chan struct{}) (err error) {
	f, e := fw.f, fw.e
	i := 0
	defer func() {
		// Drain what is still being fetched for this file.
		for ; i < len(fw.jobs); i++ {
			discard(sem, <-fw.jobs[i].res)
		}
		f.Close()
		unix.Close(fw.dirfd)
	}()
	var off int64
	for ; i < len(fw.jobs); i++ {
		res := <-fw.jobs[i].res
		release(sem, res)
		if res.err != nil {
			i++
			if rs.salvage && errors.Is(res.err, container.ErrIntegrity) {
				// Leave the damaged file out; restore the others.
				unix.Unlinkat(fw.dirfd, fw.name, 0)
				rs.damage(e.Path, res.err)
				return nil
			}
			return fmt.Errorf("restoring %s: %w", e.Path, res.err)
		}
		err := writeSparse(f, res.data, off)
		off += int64(len(res.data))
		putPlain(res.data)
		if err != nil {
			i++
			return fmt.Errorf("writing %s: %w", e.Path, err)
		}
		if rs.progress != nil {
			rs.progress.Add(fw.jobs[i].p.Size)
		}
	}
	// Holes at the end: set the size.
	if err := f.Truncate(off); err != nil {
		return fmt.Errorf("writing %s: %w", e.Path, err)
	}
	if err := unix.Fchmod(int(f.Fd()), unixMode(e.Mode, false)); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", e.Path, err)
	}
	ts := []unix.Timespec{unix.NsecToTimespec(e.MTime), unix.NsecToTimespec(e.MTime)}
	if err := unix.UtimesNanoAt(fw.dirfd, fw.name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting the time of %s: %w", e.Path, err)
	}
	rs.files.Add(1)
	rs.bytes.Add(e.Size)
	return nil
}

// writeSize is the size of each write(2) of a restored file: large writes
// cost some kernels several times more per byte (BENCHMARKS.md).
const writeSize = 256 << 10

// holeBlock is the granularity at which runs of zeros are skipped.
const holeBlock = 4 << 10

var zeroBlock [holeBlock]byte

// writeSparse writes data at off in writeSize slices, skipping every
// all-zero holeBlock-aligned block, so that the file system leaves holes
// there: a sparse file comes back sparse. The file is new (unwritten
// ranges read as zeros); the caller sets its final size.
func writeSparse(f *os.File, data []byte, off int64) error {
	for i := 0; i < len(data); {
		j := min(i+holeBlock, len(data))
		if bytes.Equal(data[i:j], zeroBlock[:j-i]) {
			i = j
			continue
		}
		// A run of blocks with data, up to writeSize.
		k := j
		for k < len(data) && k-i < writeSize {
			l := min(k+holeBlock, len(data))
			if bytes.Equal(data[k:l], zeroBlock[:l-k]) {
				break
			}
			k = l
		}
		if _, err := f.WriteAt(data[i:k], off+int64(i)); err != nil {
			return err
		}
		i = k
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

// unixMode is the mode a restored entry gets. Ownership is not stored
// (DESIGN.md), so a restore never makes a setuid or setgid program: both
// bits are dropped from files (a restore by root would otherwise create
// setuid-root binaries from anyone's backup). A directory keeps setgid
// (new files inherit its group: no privilege) and sticky; setuid means
// nothing on a directory on Linux and is dropped.
func unixMode(m uint32, dir bool) uint32 {
	fm := fs.FileMode(m)
	u := uint32(fm.Perm())
	if fm&fs.ModeSticky != 0 {
		u |= unix.S_ISVTX
	}
	if dir && fm&fs.ModeSetgid != 0 {
		u |= unix.S_ISGID
	}
	return u
}

// finish creates symbolic links and FIFOs and sets directory modes and
// times, each directory after its contents (so that its time is not
// undone by them, and a read-only directory is made so last), all relative
// to directory descriptors.
func (rs *restoreRun) finish() error {
	ds := &dirStack{s: []dirFrame{{fd: rs.sfd}}, pop: func(f dirFrame, parentFd int) error {
		if err := unix.Fchmod(f.fd, unixMode(f.e.Mode, true)); err != nil {
			return fmt.Errorf("setting the mode of %s: %w", f.e.Path, err)
		}
		ts := []unix.Timespec{unix.NsecToTimespec(f.e.MTime), unix.NsecToTimespec(f.e.MTime)}
		unix.UtimesNanoAt(parentFd, path.Base(f.e.Path), ts, unix.AT_SYMLINK_NOFOLLOW)
		return nil
	}}
	for _, e := range rs.later {
		pfd, ok, err := ds.parent(e.Path)
		if err != nil {
			ds.closeAll()
			return err
		}
		if !ok {
			continue // its directory was left out by a salvaging restore
		}
		name := path.Base(e.Path)
		ts := []unix.Timespec{unix.NsecToTimespec(e.MTime), unix.NsecToTimespec(e.MTime)}
		switch e.Type {
		case typeDir:
			fd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				ds.closeAll()
				return fmt.Errorf("opening the restored directory %q: %w", e.Path, err)
			}
			ds.s = append(ds.s, dirFrame{path: e.Path, fd: fd, e: e})
		case typeSymlink:
			if err := unix.Symlinkat(e.Target, pfd, name); err != nil {
				ds.closeAll()
				return integrityf("creating symbolic link %q: %v", e.Path, err)
			}
			unix.UtimesNanoAt(pfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
		case typeFIFO:
			if err := unix.Mkfifoat(pfd, name, uint32(fs.FileMode(e.Mode).Perm())); err != nil {
				ds.closeAll()
				return integrityf("creating FIFO %q: %v", e.Path, err)
			}
			unix.UtimesNanoAt(pfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
	}
	return ds.closeAll()
}
