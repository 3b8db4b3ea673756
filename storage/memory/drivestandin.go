package memory

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer/storage"
)

// DriveStandIn is a STAND-IN for Google Drive, for tests: an in-memory
// store that reproduces the two behaviours of Drive that the repository
// must survive, and nothing else of Drive. It is not Drive, and passing
// against it says only that those two behaviours are handled.
//
//   - Duplicate names. Drive names files by id; a name is only a label,
//     and two files may carry the same one. As rclone's drive backend
//     does, Put looks the name up and updates the file it finds, or
//     creates a new file when it finds none, so two writers that both
//     look before either creates make two files of one name. PutIfAbsent
//     is the same look-then-create, so it is not atomic. List reports
//     every copy; Get and Stat read one copy, chosen at random; Delete
//     removes one copy.
//   - Eventual listing. Looking a name up (List, and the look-ups of Get,
//     Stat, Put, PutIfAbsent and Delete) sees the store as it was lag
//     ago: a file created less than lag ago is not found, one deleted
//     less than lag ago still is (though reading it then fails with
//     ErrNotExist, as a trashed Drive file does).
//
// Its Capabilities say so: no AtomicCreate, DuplicateNames, ListLag lag.
type DriveStandIn struct {
	lag time.Duration

	mu     sync.Mutex
	files  []*driveFile
	nextID int
}

type driveFile struct {
	id      int
	name    string
	data    []byte
	modTime time.Time
	created time.Time
	deleted time.Time // zero while the file exists
}

var _ storage.Backend = (*DriveStandIn)(nil)

// NewDriveStandIn returns an empty Drive stand-in whose listings lag by
// lag (0: duplicate names only).
func NewDriveStandIn(lag time.Duration) *DriveStandIn {
	return &DriveStandIn{lag: lag}
}

// visible reports whether f is found by a look-up made at now.
func (d *DriveStandIn) visible(f *driveFile, now time.Time) bool {
	seen := now.Add(-d.lag)
	return !f.created.After(seen) && (f.deleted.IsZero() || f.deleted.After(seen))
}

// lookup returns the files named name that a look-up at now finds, in
// random order. d.mu is held.
func (d *DriveStandIn) lookup(name string, now time.Time) []*driveFile {
	var out []*driveFile
	for _, f := range d.files {
		if f.name == name && d.visible(f, now) {
			out = append(out, f)
		}
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func (d *DriveStandIn) read(ctx context.Context, op, name string, body io.ReaderAt, size int64) ([]byte, error) {
	if err := storage.CheckName(name); err != nil {
		return nil, fmt.Errorf("drive stand-in: %s: %w", op, err)
	}
	if size < 0 {
		return nil, fmt.Errorf("drive stand-in: %s %q: negative size %d", op, name, size)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("drive stand-in: %s %q: %w", op, name, err)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(io.NewSectionReader(body, 0, size), data); err != nil {
		return nil, fmt.Errorf("drive stand-in: %s %q: reading the %d-byte body: %w", op, name, size, err)
	}
	return data, nil
}

func (d *DriveStandIn) create(name string, data []byte, now time.Time) {
	d.nextID++
	d.files = append(d.files, &driveFile{id: d.nextID, name: name, data: data, modTime: now, created: now})
}

// Put implements storage.Backend: it updates a file of that name that a
// look-up finds, or creates one.
func (d *DriveStandIn) Put(ctx context.Context, name string, body io.ReaderAt, size int64) error {
	data, err := d.read(ctx, "put", name, body, size)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	for _, f := range d.lookup(name, now) {
		if f.deleted.IsZero() {
			f.data, f.modTime = data, now
			return nil
		}
	}
	d.create(name, data, now)
	return nil
}

// PutIfAbsent implements storage.Backend, not atomically: it fails with
// ErrExist when a look-up finds the name, and otherwise creates a file.
// Two callers whose look-ups both come before either creates both
// succeed, and the name then has two files.
func (d *DriveStandIn) PutIfAbsent(ctx context.Context, name string, body io.ReaderAt, size int64) error {
	data, err := d.read(ctx, "put-if-absent", name, body, size)
	if err != nil {
		return err
	}
	d.mu.Lock()
	found := len(d.lookup(name, time.Now())) > 0
	d.mu.Unlock()
	if found {
		return fmt.Errorf("drive stand-in: put-if-absent %q: %w", name, storage.ErrExist)
	}
	// The look-up and the create are two requests, as on Drive: let other
	// writers run between them.
	time.Sleep(time.Millisecond)
	d.mu.Lock()
	d.create(name, data, time.Now())
	d.mu.Unlock()
	return nil
}

func (d *DriveStandIn) find(ctx context.Context, op, name string) (*driveFile, error) {
	if err := storage.CheckName(name); err != nil {
		return nil, fmt.Errorf("drive stand-in: %s: %w", op, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("drive stand-in: %s %q: %w", op, name, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range d.lookup(name, time.Now()) {
		if f.deleted.IsZero() {
			c := *f
			return &c, nil
		}
	}
	return nil, fmt.Errorf("drive stand-in: %s %q: %w", op, name, storage.ErrNotExist)
}

// Get implements storage.Backend: one of the files of that name.
func (d *DriveStandIn) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	f, err := d.find(ctx, "get", name)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(f.data)), nil
}

// Stat implements storage.Backend: one of the files of that name.
func (d *DriveStandIn) Stat(ctx context.Context, name string) (storage.ObjectInfo, error) {
	f, err := d.find(ctx, "stat", name)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	return storage.ObjectInfo{Name: name, Size: int64(len(f.data)), ModTime: f.modTime}, nil
}

// List implements storage.Backend: every file a look-up finds, so a name
// with two files is reported twice.
func (d *DriveStandIn) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := storage.CheckPrefix(prefix); err != nil {
		return fmt.Errorf("drive stand-in: list: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("drive stand-in: list %q: %w", prefix, err)
	}
	d.mu.Lock()
	now := time.Now()
	var infos []storage.ObjectInfo
	for _, f := range d.files {
		if strings.HasPrefix(f.name, prefix) && d.visible(f, now) {
			infos = append(infos, storage.ObjectInfo{Name: f.name, Size: int64(len(f.data)), ModTime: f.modTime})
		}
	}
	d.mu.Unlock()
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("drive stand-in: list %q: %w", prefix, err)
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements storage.Backend: it removes one file of that name
// that a look-up finds (rclone deletes the file its look-up returned).
func (d *DriveStandIn) Delete(ctx context.Context, name string) error {
	if err := storage.CheckName(name); err != nil {
		return fmt.Errorf("drive stand-in: delete: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("drive stand-in: delete %q: %w", name, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range d.lookup(name, time.Now()) {
		if f.deleted.IsZero() {
			f.deleted = time.Now()
			return nil
		}
	}
	return nil
}

// Copies returns how many files named name exist now (lag aside): more
// than one is a duplicate name.
func (d *DriveStandIn) Copies(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, f := range d.files {
		if f.name == name && f.deleted.IsZero() {
			n++
		}
	}
	return n
}

// Location implements storage.Backend.
func (d *DriveStandIn) Location() string {
	return fmt.Sprintf("drive stand-in (memory, list lag %v)", d.lag)
}

// Capabilities implements storage.Backend: what Drive through rclone
// states.
func (d *DriveStandIn) Capabilities() storage.Capabilities {
	return storage.Capabilities{DuplicateNames: true, ListLag: d.lag, Transfers: 8}
}
