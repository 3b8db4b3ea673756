// Package local stores a repository in a directory of the local file
// system.
//
// Object "data/ab/ab12…" is the file <dir>/data/ab/ab12…. Every object is
// first written to a temporary file in <dir>/.tmp and then moved into
// place, so a reader never sees a partial object:
//
//   - Put renames the temporary file over the final name and does not
//     fsync: Sync (storage.Syncer) makes everything durable at once with
//     syncfs(2) before the repository commits a generation.
//   - PutIfAbsent fsyncs the temporary file, hard-links it to the final
//     name (link(2) fails if the name exists, atomically) and fsyncs the
//     directories up to <dir>, so it is durable when it returns.
//
// Files are created 0600 and directories 0700. A writer that crashes may
// leave files in <dir>/.tmp: List ignores them and CleanTemp removes them.
//
// One limitation of a directory tree: a name cannot be both an object and
// the directory part of another name ("a" and "a/b"). The repository's
// names never are.
//
// Importing the package registers, with package storage, the scheme "file"
// and plain paths: "/abs/dir", "relative/dir" (made absolute when parsed),
// "./name:with-colon" and "file:///abs/dir" all parse to a Config, whose
// canonical form is the absolute path.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/atomicfile"
	"github.com/cofferhq/coffer/storage"
)

const (
	tmpDirName = ".tmp"
	dirPerm    = 0o700
	// bufSize is the size of each write(2). Writes of 256 KiB cost the
	// kernel far less than writes of 1 MiB and more on VMs with large
	// page-cache folios (BENCHMARKS.md, "Where Coffer's time goes").
	bufSize = 256 << 10
)

// Backend is a directory holding a repository. It is safe for concurrent
// use, also by several processes.
type Backend struct {
	dir string // absolute, cleaned
	tmp string // dir/.tmp
}

var (
	_ storage.Backend = (*Backend)(nil)
	_ storage.Syncer  = (*Backend)(nil)
)

// New opens the directory dir as a backend, creating it (mode 0700, with
// any missing parents, durably) if it does not exist.
func New(dir string) (*Backend, error) {
	if dir == "" {
		return nil, errors.New("local: no directory given")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("local: resolving %q: %w", dir, err)
	}
	b := &Backend{dir: abs, tmp: filepath.Join(abs, tmpDirName)}
	// The nearest existing ancestor: the directories below it are new
	// and their entries must be made durable.
	existing := abs
	for {
		if _, err := os.Stat(existing); err == nil || existing == filepath.Dir(existing) {
			break
		}
		existing = filepath.Dir(existing)
	}
	if err := os.MkdirAll(b.tmp, dirPerm); err != nil {
		return nil, fmt.Errorf("local: cannot create the repository directory: %w%s", err, hint(err, abs))
	}
	if existing != abs {
		for d := abs; ; d = filepath.Dir(d) {
			if err := atomicfile.SyncDir(filepath.Dir(d)); err != nil {
				return nil, fmt.Errorf("local: creating the repository directory: %w", err)
			}
			if filepath.Dir(d) == existing {
				break
			}
		}
	}
	return b, nil
}

// Capabilities implements storage.Backend: PutIfAbsent is atomic (link(2),
// or rename(2) with RENAME_NOREPLACE, both refuse an existing name; a file
// system with neither makes PutIfAbsent fail rather than overwrite).
func (b *Backend) Capabilities() storage.Capabilities {
	return storage.Capabilities{AtomicCreate: true}
}

// Dir returns the absolute path of the backend's directory.
func (b *Backend) Dir() string { return b.dir }

// Location implements storage.Backend.
func (b *Backend) Location() string { return b.dir }

// path maps a checked name to its file.
func (b *Backend) path(op, name string) (string, error) {
	if err := storage.CheckName(name); err != nil {
		return "", fmt.Errorf("local: %s: %w", op, err)
	}
	return filepath.Join(b.dir, filepath.FromSlash(name)), nil
}

// Put implements storage.Backend. The object is visible when Put returns
// but durable only after Sync.
func (b *Backend) Put(ctx context.Context, name string, body io.ReaderAt, size int64) error {
	final, err := b.path("put", name)
	if err != nil {
		return err
	}
	tmp, err := b.writeTemp(ctx, body, size, false)
	if err != nil {
		return b.wrap("put", name, err)
	}
	err = os.Rename(tmp, final)
	if isNotExist(err) {
		if err = b.mkdirParent(final); err == nil {
			err = os.Rename(tmp, final)
		}
	}
	if err != nil {
		os.Remove(tmp)
		return b.wrap("put", name, err)
	}
	return nil
}

// PutIfAbsent implements storage.Backend. Unlike Put, the object and the
// directory entries leading to it are durable when PutIfAbsent returns.
func (b *Backend) PutIfAbsent(ctx context.Context, name string, body io.ReaderAt, size int64) error {
	final, err := b.path("put-if-absent", name)
	if err != nil {
		return err
	}
	tmp, err := b.writeTemp(ctx, body, size, true)
	if err != nil {
		return b.wrap("put-if-absent", name, err)
	}
	defer os.Remove(tmp) // after a successful link, the name stays
	err = createOnce(tmp, final)
	if isNotExist(err) {
		if err = b.mkdirParent(final); err == nil {
			err = createOnce(tmp, final)
		}
	}
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("local: put-if-absent %q in %s: %w", name, b.dir, storage.ErrExist)
	}
	if err != nil {
		return b.wrap("put-if-absent", name, err)
	}
	if err := b.syncParents(final); err != nil {
		return b.wrap("put-if-absent", name, err)
	}
	return nil
}

// createOnce makes tmp visible as final unless final exists, atomically.
// It hard-links (tmp remains and is removed by the caller); on file
// systems without hard links it renames with RENAME_NOREPLACE.
func createOnce(tmp, final string) error {
	err := os.Link(tmp, final)
	if err == nil || !linkUnsupported(err) {
		return err
	}
	err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return &os.LinkError{Op: "renameat2", Old: tmp, New: final, Err: fs.ErrExist}
	case errors.Is(err, unix.EINVAL), linkUnsupported(err):
		return fmt.Errorf("the file system supports neither hard links nor rename without replace, so a create-once write cannot be atomic here: use another file system for the repository (%w)", err)
	default:
		return &os.LinkError{Op: "renameat2", Old: tmp, New: final, Err: err}
	}
}

func linkUnsupported(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) ||
		errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EXDEV)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// writeTemp copies size bytes of body to a new file in .tmp and returns
// its path. On error nothing is left behind.
func (b *Backend) writeTemp(ctx context.Context, body io.ReaderAt, size int64, durable bool) (path string, err error) {
	if size < 0 {
		return "", fmt.Errorf("negative size %d", size)
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(b.tmp, "obj-*")
	if isNotExist(err) { // .tmp removed by hand: recreate it
		if err = os.MkdirAll(b.tmp, dirPerm); err == nil {
			f, err = os.CreateTemp(b.tmp, "obj-*")
		}
	}
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		chunk := buf[:min(int64(len(buf)), size-off)]
		n, rerr := body.ReadAt(chunk, off)
		if n < len(chunk) {
			if rerr == nil || rerr == io.EOF {
				rerr = io.ErrUnexpectedEOF
			}
			return "", fmt.Errorf("reading the body at offset %d of %d: %w", off+int64(n), size, rerr)
		}
		if _, err := f.Write(chunk); err != nil {
			return "", err
		}
		off += int64(n)
	}
	if durable {
		if err := f.Sync(); err != nil {
			return "", err
		}
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return f.Name(), nil
}

func (b *Backend) mkdirParent(final string) error {
	return os.MkdirAll(filepath.Dir(final), dirPerm)
}

// syncParents fsyncs every directory from final's parent up to b.dir, so
// that final's entry and any directory created for it are durable.
func (b *Backend) syncParents(final string) error {
	for d := filepath.Dir(final); len(d) >= len(b.dir); d = filepath.Dir(d) {
		if err := atomicfile.SyncDir(d); err != nil {
			return err
		}
		if d == b.dir {
			break
		}
	}
	return nil
}

// Sync implements storage.Syncer: it flushes the whole file system holding
// the directory with syncfs(2), making every Put so far durable (file data
// and directory entries alike).
func (b *Backend) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("local: sync %s: %w", b.dir, err)
	}
	f, err := os.Open(b.dir)
	if err != nil {
		return fmt.Errorf("local: sync: %w%s", err, hint(err, b.dir))
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("local: syncfs %s: %w: written data may not be durable; check the disk and the kernel log", b.dir, err)
	}
	return nil
}

// Get implements storage.Backend. The returned reader is an *os.File.
func (b *Backend) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	path, err := b.path("get", name)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("local: get %q: %w", name, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, b.wrap("get", name, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fs.ErrNotExist // a directory: no object of that name
	}
	if err != nil {
		f.Close()
		return nil, b.wrap("get", name, err)
	}
	return f, nil
}

// Stat implements storage.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (storage.ObjectInfo, error) {
	path, err := b.path("stat", name)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("local: stat %q: %w", name, err)
	}
	fi, err := os.Stat(path)
	if err == nil && !fi.Mode().IsRegular() {
		err = fs.ErrNotExist
	}
	if err != nil {
		return storage.ObjectInfo{}, b.wrap("stat", name, err)
	}
	return storage.ObjectInfo{Name: name, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Delete implements storage.Backend. Directories left empty stay.
func (b *Backend) Delete(ctx context.Context, name string) error {
	path, err := b.path("delete", name)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("local: delete %q: %w", name, err)
	}
	// unlink(2), unlike os.Remove, never removes a directory.
	err = unix.Unlink(path)
	if err == nil || isNotExist(err) || errors.Is(err, unix.EISDIR) {
		return nil
	}
	return b.wrap("delete", name, &fs.PathError{Op: "unlink", Path: path, Err: err})
}

// List implements storage.Backend. It reads only the directory named by
// prefix up to its last slash and the subdirectories that can match, and
// skips dot-names (among them the .tmp directory).
func (b *Backend) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := storage.CheckPrefix(prefix); err != nil {
		return fmt.Errorf("local: list: %w", err)
	}
	i := strings.LastIndexByte(prefix, '/')
	dir, match := prefix[:i+1], prefix[i+1:]
	return b.walk(ctx, dir, match, fn)
}

// walk lists the directory for rel ("" or "a/b/") and recurses into its
// subdirectories; at this level only entries starting with match count.
func (b *Backend) walk(ctx context.Context, rel, match string, fn func(storage.ObjectInfo) error) error {
	f, err := os.Open(filepath.Join(b.dir, filepath.FromSlash(rel)))
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("local: list %q: %w%s", rel, err, hint(err, b.dir))
	}
	defer f.Close()
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("local: list %q: %w", rel, err)
		}
		entries, rerr := f.ReadDir(256)
		for _, e := range entries {
			n := e.Name()
			if n[0] == '.' || !strings.HasPrefix(n, match) {
				continue
			}
			switch {
			case e.IsDir():
				if err := b.walk(ctx, rel+n+"/", "", fn); err != nil {
					return err
				}
			case e.Type().IsRegular():
				fi, err := e.Info()
				if isNotExist(err) {
					continue // deleted since ReadDir
				}
				if err != nil {
					return fmt.Errorf("local: list %q: %w", rel, err)
				}
				if err := fn(storage.ObjectInfo{Name: rel + n, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF || isNotExist(rerr) { // ENOTDIR: prefix "obj/" names a file
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("local: list %q: %w", rel, rerr)
		}
	}
}

// CleanTemp removes temporary files that writers (of this or another
// process) left in <dir>/.tmp and that were last modified more than
// olderThan ago. Pass an age well above the longest Put (an hour, say): a
// younger file may belong to a write in progress.
func (b *Backend) CleanTemp(olderThan time.Duration) error {
	entries, err := os.ReadDir(b.tmp)
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("local: clean temporary files: %w%s", err, hint(err, b.tmp))
	}
	cutoff := time.Now().Add(-olderThan)
	var errs []error
	for _, e := range entries {
		fi, err := e.Info()
		if isNotExist(err) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !fi.Mode().IsRegular() || !fi.ModTime().Before(cutoff) {
			continue
		}
		if err := os.Remove(filepath.Join(b.tmp, e.Name())); err != nil && !isNotExist(err) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("local: clean temporary files: %w", err)
	}
	return nil
}

// wrap turns an error of op on name into a message saying what failed.
// For get and stat, "no such file" becomes storage.ErrNotExist; for a put
// it means a damaged directory tree and stays an ordinary error.
func (b *Backend) wrap(op, name string, err error) error {
	if isNotExist(err) && (op == "get" || op == "stat") {
		return fmt.Errorf("local: %s %q in %s: %w", op, name, b.dir, storage.ErrNotExist)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("local: %s %q: %w", op, name, err)
	}
	return fmt.Errorf("local: %s %q in %s: %w%s", op, name, b.dir, err, hint(err, b.dir))
}

func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// hint suggests what to do about common file system errors.
func hint(err error, dir string) string {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return " (check the owner and permissions of " + dir + ")"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return " (free space on the file system of " + dir + ")"
	case errors.Is(err, syscall.EROFS):
		return " (the file system is read-only)"
	}
	return ""
}
