// Package atomicfile writes small files durably: a new file created
// exclusively (CreateExclusive), a file replaced atomically through a
// temporary file and a rename (Replace), and the directory fsync that makes
// a created, renamed or removed entry survive a crash (SyncDir).
//
// It imports only the standard library, so the device and server wings and
// the public storage providers may all use it.
package atomicfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// CreateExclusive writes data to a new file at path, created with mode perm
// (less the umask), and fsyncs the file and its directory. It refuses to
// replace anything: if path exists it returns an error satisfying
// errors.Is(err, fs.ErrExist) and leaves that file alone. On any other
// failure it removes the file it created, so path holds either all of data
// or nothing.
func CreateExclusive(path string, data []byte, perm fs.FileMode) error {
	return createExclusive(path, data, perm, (*os.File).Sync)
}

// createExclusive is CreateExclusive with the file's fsync given (tests
// make it fail).
func createExclusive(path string, data []byte, perm fs.FileMode, sync func(*os.File) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = sync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = SyncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// Replace makes path hold data, with mode perm exactly (no umask), as one
// atomic step: it writes a temporary file beside path (".NAME.tmp-RANDOM"),
// fsyncs it, renames it over path and fsyncs the directory. A reader, or the
// file after a crash, has the old content or the new, never a mix. The
// temporary file is removed on failure; path is then unchanged, except when
// only the final directory fsync failed (the new content is in place but
// may not survive a crash).
func Replace(path string, data []byte, perm fs.FileMode) error {
	return replace(path, data, perm, (*os.File).Sync)
}

func replace(path string, data []byte, perm fs.FileMode, sync func(*os.File) error) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = sync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return SyncDir(dir)
}

// SyncDir fsyncs the directory dir, so that entries created, renamed or
// removed in it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
