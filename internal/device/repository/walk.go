package repository

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// The walk (DESIGN.md, "Walking safely"). Every entry below a root is
// reached relative to its parent directory's descriptor (openat), never by
// a path, so a directory swapped for a symbolic link during the backup is
// not followed: each open uses O_NOFOLLOW, and the opened descriptor's
// device, inode and type must equal those the directory listed (fstatat),
// or the entry is skipped as changed. FIFOs, sockets and devices are never
// opened (O_NONBLOCK guards the race where one is swapped in between the
// listing and the open).

// testFault, when set (by tests only), is called before each open ("open")
// and each read ("read", at the offset reached) of the walk, with the
// entry's path in the backup; an error it returns is taken as that
// operation's error. It lets tests inject a read error in the middle of a
// file, or an unreadable directory, which running as root cannot produce.
var testFault func(op, rel string, off int64) error

// SetTestFault sets the walk's fault hook (testFault) for the tests of
// other packages (the command's exit-code tests), and returns the function
// that removes it. Never call it outside tests.
func SetTestFault(f func(op, rel string, off int64) error) (undo func()) {
	testFault = f
	return func() { testFault = nil }
}

func fault(op, rel string, off int64) error {
	if testFault == nil {
		return nil
	}
	return testFault(op, rel, off)
}

// SkippedEntry is an entry a backup did not store, and why.
type SkippedEntry struct {
	Path   string `json:"path"`   // on disk
	Reason string `json:"reason"` // the error, or why such entries are not stored
	// Kind says what sort of skip it was: SkipError (the entry could not
	// be read: its data is missing from the backup), SkipSpecial (a
	// socket or device file, which Coffer never stores) or SkipExcluded
	// (the repository or the state directory, never backed up).
	Kind string `json:"kind"`
}

// The kinds of SkippedEntry.
const (
	SkipError    = "error"
	SkipSpecial  = "special"
	SkipExcluded = "excluded"
)

// SkippedErrors counts the skipped entries of kind SkipError: those a
// backup meant to store and could not.
func (s *BackupSummary) SkippedErrors() int {
	n := 0
	for _, e := range s.SkippedEntries {
		if e.Kind == SkipError {
			n++
		}
	}
	return n
}

// devIno identifies a file.
type devIno struct{ dev, ino uint64 }

func statID(st *unix.Stat_t) devIno { return devIno{uint64(st.Dev), st.Ino} }

func (b *backupRun) skip(abs string, err error) { b.skipKind(abs, SkipError, err) }

func (b *backupRun) skipKind(abs, kind string, err error) {
	b.skipped = append(b.skipped, SkippedEntry{Path: abs, Reason: err.Error(), Kind: kind})
	b.opts.Warn(abs, err)
}

func (b *backupRun) emit(s *slot) error {
	select {
	case b.ordered <- s:
		return nil
	case <-b.ctx.Done():
		return context.Cause(b.ctx)
	}
}

func (b *backupRun) walk(ctx context.Context, roots []root) error {
	for _, rt := range roots {
		// The root is the path the user named: symbolic links in it, and
		// the root itself, are followed, as the user meant.
		if err := b.entry(ctx, unix.AT_FDCWD, rt.abs, rt.abs, rt.name, true); err != nil {
			return err
		}
	}
	return nil
}

// validName reports whether name can be a file name on a Unix file system.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}

// entry backs up the entry name of the directory dirfd; abs is its path on
// disk (for messages), rel its path in the backup.
func (b *backupRun) entry(ctx context.Context, dirfd int, name, abs, rel string, follow bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	flags := unix.AT_SYMLINK_NOFOLLOW
	if follow {
		flags = 0
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, flags); err != nil {
		b.skip(abs, &fs.PathError{Op: "lstat", Path: abs, Err: err})
		return nil
	}
	e := &entry{Path: rel, Mode: modeFromUnix(st.Mode), MTime: st.Mtim.Nano()}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e.Type = typeFile
		e.Inode, e.Dev, e.CTime = st.Ino, uint64(st.Dev), st.Ctim.Nano()
		return b.file(ctx, dirfd, name, abs, e, &st, follow)
	case unix.S_IFDIR:
		e.Type = typeDir
		return b.dir(ctx, dirfd, name, abs, e, &st, follow)
	case unix.S_IFLNK:
		e.Type = typeSymlink
		t, err := readlinkat(dirfd, name)
		if err != nil || t == "" {
			if err == nil {
				err = errors.New("empty symbolic link")
			}
			b.skip(abs, &fs.PathError{Op: "readlink", Path: abs, Err: err})
			return nil
		}
		e.Target = t
		return b.emit(&slot{e: e})
	case unix.S_IFIFO:
		e.Type = typeFIFO // recorded, never opened
		return b.emit(&slot{e: e})
	default:
		b.skipKind(abs, SkipSpecial, fmt.Errorf("not backed up: it is %s, which Coffer does not store (only regular files, directories, symbolic links and FIFOs)", specialName(st.Mode)))
		return nil
	}
}

// openChecked opens name in dirfd without following a symbolic link and
// without blocking, and checks that what it opened is the entry listed.
func openChecked(dirfd int, name string, listed *unix.Stat_t, extra int, follow bool) (int, error) {
	flags := unix.O_RDONLY | unix.O_NONBLOCK | unix.O_CLOEXEC | unix.O_NOCTTY | extra
	if !follow {
		flags |= unix.O_NOFOLLOW
	}
	fd, err := unix.Openat(dirfd, name, flags, 0)
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if st.Mode&unix.S_IFMT != listed.Mode&unix.S_IFMT || statID(&st) != statID(listed) {
		unix.Close(fd)
		return -1, errors.New("changed while being backed up (replaced between listing and opening); not backed up")
	}
	return fd, nil
}

func (b *backupRun) dir(ctx context.Context, dirfd int, name, abs string, e *entry, st *unix.Stat_t, follow bool) error {
	if why, ok := b.exclude[statID(st)]; ok {
		b.skipKind(abs, SkipExcluded, errors.New(why))
		return nil
	}
	if err := fault("open", e.Path, 0); err != nil {
		b.skip(abs, &fs.PathError{Op: "open", Path: abs, Err: err})
		return nil
	}
	fd, err := openChecked(dirfd, name, st, unix.O_DIRECTORY, follow)
	if err != nil {
		b.skip(abs, &fs.PathError{Op: "open", Path: abs, Err: err})
		return nil
	}
	d := os.NewFile(uintptr(fd), abs)
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		b.skip(abs, &fs.PathError{Op: "readdir", Path: abs, Err: err})
		return nil
	}
	// Byte order of sibling names is walk order (FORMAT.md 3.3).
	sort.Strings(names)
	if err := b.emit(&slot{e: e}); err != nil {
		return err
	}
	for _, n := range names {
		cabs := abs + "/" + n
		if !validName(n) {
			b.skip(cabs, fmt.Errorf("name %q is not a valid file name; not backed up", n))
			continue
		}
		if err := b.entry(ctx, fd, n, cabs, e.Path+"/"+n, false); err != nil {
			return err
		}
	}
	return nil
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
		if size > 1<<20 {
			return "", errors.New("symbolic link target too long")
		}
	}
}

// faultReader injects testFault's read errors.
type faultReader struct {
	r   io.Reader
	rel string
	off int64
}

func (f *faultReader) Read(p []byte) (int, error) {
	if err := fault("read", f.rel, f.off); err != nil {
		return 0, err
	}
	n, err := f.r.Read(p)
	f.off += int64(n)
	return n, err
}

func (b *backupRun) file(ctx context.Context, dirfd int, name, abs string, e *entry, st *unix.Stat_t, follow bool) error {
	size := st.Size
	if b.prev != nil {
		if pe := b.prev.find(e.Path); pe != nil && pe.Type == typeFile && pe.Size == size &&
			pe.MTime == e.MTime && pe.CTime == e.CTime && pe.Inode == e.Inode && pe.Dev == e.Dev && e.CTime != 0 &&
			b.allKnown(pe.Pieces) {
			e.Size = pe.Size
			e.Pieces = pe.Pieces
			b.unchanged++
			b.reused.Add(int64(len(pe.Pieces)))
			if b.opts.Progress != nil {
				b.opts.Progress.Add(size)
			}
			return b.emit(&slot{e: e})
		}
	}
	err := fault("open", e.Path, 0)
	fd := -1
	if err == nil {
		fd, err = openChecked(dirfd, name, st, 0, follow)
	}
	if err != nil {
		b.skip(abs, &fs.PathError{Op: "open", Path: abs, Err: err})
		return nil
	}
	f := os.NewFile(uintptr(fd), abs)
	defer f.Close()
	var rd io.Reader = f
	if testFault != nil {
		rd = &faultReader{r: f, rel: e.Path}
	}
	s := &slot{e: e}
	for {
		var buf []byte
		select {
		case buf = <-b.bufs:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		if buf == nil {
			buf = make([]byte, b.r.pieceSize)
		}
		buf = buf[:b.r.pieceSize]
		n, err := io.ReadFull(rd, buf)
		if n > 0 {
			e.Size += int64(n)
			if b.opts.Progress != nil {
				b.opts.Progress.Add(int64(n))
			}
			j := &pieceJob{buf: buf[:n], res: make(chan pieceResult, 1), path: abs}
			s.jobs = append(s.jobs, j)
			select {
			case b.work <- j:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		} else {
			b.bufs <- buf
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			// The file cannot be read to its end: it is left out of this
			// backup (its pieces already handed to the workers are
			// uploaded, unreferenced, and reused by a later backup), and
			// the rest of the backup goes on.
			b.skip(abs, fmt.Errorf("read error after %d bytes, file not backed up: %w", e.Size, err))
			return nil
		}
	}
	var after unix.Stat_t
	if unix.Fstat(fd, &after) == nil && (after.Size != st.Size || after.Mtim != st.Mtim) {
		b.opts.Warn(abs, errors.New("changed while being read; stored as read"))
	}
	return b.emit(s)
}

// modeFromUnix converts st_mode's permission bits to the manifest's mode
// (Go's fs.FileMode bits for setuid, setgid and sticky).
func modeFromUnix(m uint32) uint32 {
	mode := fs.FileMode(m & 0o777)
	if m&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return uint32(mode)
}

// specialName names a file type the walk does not store, in words.
func specialName(m uint32) string {
	switch m & unix.S_IFMT {
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	}
	return fmt.Sprintf("a special file of unknown type (mode %#o)", m&unix.S_IFMT)
}

// scanSize adds up the sizes of the regular files under roots, for
// progress (an estimate: it follows paths, the walk does not).
func scanSize(roots []root) int64 {
	var total int64
	for _, rt := range roots {
		walkSizes(unix.AT_FDCWD, rt.abs, &total, 0)
	}
	return total
}

func walkSizes(dirfd int, name string, total *int64, depth int) {
	var st unix.Stat_t
	flags := unix.AT_SYMLINK_NOFOLLOW
	if depth == 0 {
		flags = 0
	}
	if unix.Fstatat(dirfd, name, &st, flags) != nil {
		return
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		*total += st.Size
	case unix.S_IFDIR:
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return
		}
		d := os.NewFile(uintptr(fd), name)
		names, _ := d.Readdirnames(-1)
		for _, n := range names {
			walkSizes(fd, n, total, depth+1)
		}
		d.Close()
	}
}
