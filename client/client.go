// Package client is the Go API an application embeds to make end-to-end
// encrypted backups with Coffer. The coffer command is a thin layer over it.
//
// There are two ways in:
//
//   - A Device is an enrolled device: a state directory holding the backup
//     key, the repository's location and the newest generation the device
//     has seen. Device.Init sets one up with a fresh backup key;
//     Device.Open opens its repository. A Device notices a storage provider
//     rolling the repository back to an older state (ErrRollback).
//   - Open and Create work from a repository location and a key alone,
//     with no state: a new device restoring with the 64-digit key, or a
//     tool.
//
// Both give a *Repo, whose methods back up, list, restore, verify and
// prune:
//
//	dev := client.NewDevice(stateDir)
//	res, err := dev.Init(ctx, "s3://bucket/phone") // once; show res.Key.Digits() to the owner
//	…
//	repo, err := dev.Open(ctx, client.OpenOptions{})
//	defer repo.Close()
//	sum, err := repo.Backup(ctx, []string{"/home/me/Documents"}, client.BackupOptions{})
//
// A repository location is any form storage.Parse takes: a directory
// (/var/backups/coffer, or relative, or ./name:with-colon), file:///dir,
// s3://bucket/prefix?…, or rclone:REMOTE:path (any rclone remote: Google
// Drive, iCloud Drive, WebDAV, SFTP…); the package registers the local, S3
// and rclone providers. It is parsed once per call, the device saves it in canonical
// form (a plain path absolute), and storage is reached through
// retry.Open with retry.DefaultPolicy, so short outages are ridden out.
//
// The types of those operations (Key, BackupOptions, Generation,
// RestoreSummary…) and their errors (ErrWrongKey, ErrIntegrity,
// ErrNoRepository…) are named in this package, so that a program outside
// Coffer's module can use them; they are Coffer's internal types.
//
// # Guarantees
//
// Everything stored is encrypted and authenticated under the backup key,
// which never leaves the device unwrapped: the storage sees objects whose
// names reveal no file names (FORMAT.md §3 says what their number, sizes
// and times do reveal). A backup becomes visible only once complete, so an
// interrupted one never harms those before it. A restore authenticates
// every byte before anything appears at its target, and leaves nothing
// there if it fails; a tampered, truncated or mixed-up backup fails with
// ErrIntegrity. Device.Open checks that the repository at the device's
// location is still the one it was set up with (ErrReplaced), and on a
// device's own repository every operation first checks that the newest
// backup is not older than the newest the device has made or seen
// (ErrRollback).
//
// The backup key stays on the device, or leaves it only wrapped for the
// vault: password recovery (password.go, over package recovery) stores it
// with the vault fleet under a password (Device.InitWithPassword,
// Device.EnablePassword) and gets it back on a new device (RecoverKey).
// The package never imports the vault's or the relay's server code.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/cofferhq/coffer/internal/atomicfile"
	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/devicestate"
	"github.com/cofferhq/coffer/internal/device/repository"
	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/local"
	_ "github.com/cofferhq/coffer/storage/rclone" // registers rclone: locations
	"github.com/cofferhq/coffer/storage/retry"
	_ "github.com/cofferhq/coffer/storage/s3" // registers s3:// locations
)

// Errors of this package. Each is wrapped so that errors.Is works.
var (
	// ErrRollback: the repository's newest backup is older than one this
	// device has already written or seen, so the storage has been rolled
	// back (or backups were deleted behind the device's back). Errors that
	// wrap it also wrap ErrIntegrity.
	ErrRollback = errors.New("repository rolled back")
	// ErrReplaced: the repository at the device's URL is not the one the
	// device was set up with. Errors that wrap it also wrap
	// ErrIntegrity.
	ErrReplaced = errors.New("repository replaced")
	// ErrAlreadyInitialized: Init on a device that is already set up.
	ErrAlreadyInitialized = errors.New("this device is already set up")
	// ErrStateUnreadable: the device's state directory is there but
	// cannot be read (Device.StateError).
	ErrStateUnreadable = devicestate.ErrUnreadable
)

// Device is an enrolled device: its state directory.
type Device struct {
	dir *devicestate.Dir
}

// NewDevice returns the device whose state lives in dir (see
// state.DefaultPath). It touches nothing on disk; Init creates the
// directory.
func NewDevice(dir string) *Device {
	return &Device{dir: &devicestate.Dir{Path: dir}}
}

// StateDir is the device's state directory.
func (d *Device) StateDir() string { return d.dir.Path }

// Initialized reports whether the device has been set up (Init or Join).
func (d *Device) Initialized() bool { return d.dir.Exists() }

// StateError returns nil if the device's state directory can be read (or
// does not exist yet), and an error wrapping ErrStateUnreadable if it is
// there but cannot be read, so that "not set up" is never reported for a
// device whose state is only unreadable.
func (d *Device) StateError() error { return d.dir.Readable() }

// Config returns the device's configuration (devicestate.ErrNotInitialized
// if it has none).
func (d *Device) Config() (*devicestate.Config, error) { return d.dir.Load() }

// Key returns the device's backup key. The caller zeroes it when done.
func (d *Device) Key() (*Key, error) { return d.dir.LoadKey() }

// InitResult is what Init did. Key is the new backup key: show it to its
// owner once (Key.Digits), then Zero it.
type InitResult struct {
	Key          *Key
	Repository   string // the location in canonical form, as saved in the state
	RepositoryID string
	Location     string // storage.Backend.Location, for messages
}

// Init sets the device up: it makes a fresh backup key, creates an empty
// repository at repoURL (which must not hold one) and saves the key and the
// configuration in the state directory. The key is the only way to restore
// on another device: the caller must show it to its owner.
func (d *Device) Init(ctx context.Context, repoURL string) (*InitResult, error) {
	if d.Initialized() {
		c, err := d.dir.Load()
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w (state %s, repository %s)", ErrAlreadyInitialized, d.dir.Path, c.Repository)
	}
	if d.dir.HasKey() {
		return nil, fmt.Errorf("%w: %s holds a backup key but no configuration; refusing to replace it", ErrAlreadyInitialized, d.dir.Path)
	}
	loc, err := storage.Parse(repoURL)
	if err != nil {
		return nil, err
	}
	key := backupkey.New()
	r, err := create(ctx, loc, key)
	if err != nil {
		key.Zero()
		return nil, err
	}
	defer r.Close()
	if err := d.enroll(r, key, 0); err != nil {
		key.Zero()
		return nil, err
	}
	return &InitResult{Key: key, Repository: loc.String(), RepositoryID: r.ID(), Location: r.Location()}, nil
}

// Join enrolls the device with an existing repository and its key (a new
// device that will go on backing up where another left off). The device
// then tracks the repository's newest generation from now on.
func (d *Device) Join(ctx context.Context, repoURL string, key *Key) (*Repo, error) {
	if d.Initialized() {
		return nil, fmt.Errorf("%w (state %s)", ErrAlreadyInitialized, d.dir.Path)
	}
	loc, err := storage.Parse(repoURL)
	if err != nil {
		return nil, err
	}
	r, err := open(ctx, loc, key)
	if err != nil {
		return nil, err
	}
	gens, err := r.repo.Generations(ctx)
	if err != nil {
		r.Close()
		return nil, err
	}
	var newest uint64
	if len(gens) > 0 {
		newest = gens[len(gens)-1].Number
	}
	if err := d.enroll(r, key, newest); err != nil {
		r.Close()
		return nil, err
	}
	r.dev = d
	r.stateDir = d.dir.Path
	return r, nil
}

func (d *Device) enroll(r *Repo, key *Key, last uint64) error {
	if _, err := devicestate.Open(d.dir.Path); err != nil {
		return err
	}
	if err := d.dir.SaveKey(key); err != nil {
		return err
	}
	return d.dir.Save(&devicestate.Config{
		Repository:     r.loc.String(),
		RepositoryID:   r.ID(),
		KeyFingerprint: key.Fingerprint(),
		LastGeneration: last,
	})
}

// OpenOptions override what an enrolled device would use.
type OpenOptions struct {
	// Repository, if set, is used instead of the device's repository
	// location (any form storage.Parse takes).
	Repository string
	// Key, if set, is used instead of the device's key.
	Key *Key
}

// Open opens the device's repository with its key. Rollback detection
// applies whenever the repository opened is the device's own (same id),
// even if reached through opts.Repository.
func (d *Device) Open(ctx context.Context, opts OpenOptions) (*Repo, error) {
	cfg, err := d.dir.Load()
	if err != nil {
		return nil, err
	}
	own := opts.Repository == ""
	repoURL := opts.Repository
	if own {
		repoURL = cfg.Repository
	}
	loc, err := storage.Parse(repoURL)
	if err != nil {
		return nil, err
	}
	key := opts.Key
	if key == nil {
		if key, err = d.dir.LoadKey(); err != nil {
			return nil, err
		}
	}
	r, err := open(ctx, loc, key)
	if err != nil {
		return nil, err
	}
	r.stateDir = d.dir.Path
	switch {
	case r.ID() == cfg.RepositoryID:
		r.dev = d
	case own || sameLocation(loc, cfg.Repository):
		r.Close()
		return nil, fmt.Errorf("%w: %w: the repository at %s has id %s, but this device was set up with repository %s; it was replaced or tampered with (if you re-created it on purpose, set this device up again with a new --state directory)",
			ErrIntegrity, ErrReplaced, r.Location(), r.ID(), cfg.RepositoryID)
	}
	return r, nil
}

// sameLocation reports whether loc names the location saved as saved (a
// canonical form, or the form an older Coffer saved).
func sameLocation(loc storage.Location, saved string) bool {
	if loc.String() == saved {
		return true
	}
	s, err := storage.Parse(saved)
	return err == nil && s.String() == loc.String()
}

// Repo is an open repository.
type Repo struct {
	repo    *repository.Repository
	backend storage.Backend
	loc     storage.Location
	dev     *Device // nil unless the repository is the device's own
	// stateDir is the state directory of the device that opened the
	// repository (even another one than its own), never backed up.
	stateDir string
}

// Open opens the repository at repoURL with key, with no device state: a
// new device restoring with the 64-digit key. A wrong key fails with an
// error wrapping ErrWrongKey; no repository there, with
// ErrNoRepository. repoURL is any form storage.Parse takes.
func Open(ctx context.Context, repoURL string, key *Key) (*Repo, error) {
	loc, err := storage.Parse(repoURL)
	if err != nil {
		return nil, err
	}
	return open(ctx, loc, key)
}

func open(ctx context.Context, loc storage.Location, key *Key) (*Repo, error) {
	if c, ok := loc.Config().(local.Config); ok {
		// Opening must not create a directory where there is none.
		if _, err := os.Stat(c.Dir); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s does not exist; check the repository URL, or run 'coffer init' to create one", ErrNoRepository, c.Dir)
		}
	}
	b, err := openBackend(ctx, loc)
	if err != nil {
		return nil, err
	}
	r, err := repository.Open(ctx, b, key)
	if err != nil {
		closeBackend(b)
		return nil, err
	}
	tuneTransfers(r, b)
	return &Repo{repo: r, backend: b, loc: loc}, nil
}

// Create makes a new, empty repository at repoURL under an existing key,
// with no device state. (Device.Init is the usual way in: it makes the key
// too.) Two repositories under one key are independent: an object of one is
// refused by the other.
func Create(ctx context.Context, repoURL string, key *Key) (*Repo, error) {
	loc, err := storage.Parse(repoURL)
	if err != nil {
		return nil, err
	}
	return create(ctx, loc, key)
}

func create(ctx context.Context, loc storage.Location, key *Key) (*Repo, error) {
	b, err := openBackend(ctx, loc)
	if err != nil {
		return nil, err
	}
	r, err := repository.Init(ctx, b, key)
	if err != nil {
		closeBackend(b)
		return nil, err
	}
	tuneTransfers(r, b)
	return &Repo{repo: r, backend: b, loc: loc}, nil
}

// tuneTransfers keeps as many pieces in flight as the store advises
// (Capabilities.Transfers: 16 for S3 and rclone remotes), when that is more
// than the repository's default (4, or twice the cores), so that small
// uploads over a link with latency do not wait on each other's round
// trips (BENCHMARKS.md, "Latency": 400 small files to S3 at 20 ms, 2.57 s
// at 4, 0.79 s at 16). Each piece in flight may hold a piece-sized buffer.
func tuneTransfers(r *repository.Repository, b storage.Backend) {
	if n := b.Capabilities().Transfers; n > max(4, 2*runtime.GOMAXPROCS(0)) {
		r.SetConcurrency(n)
	}
}

// openBackend is the one place the client reaches storage: the provider's
// backend, wrapped in retries with retry.DefaultPolicy.
func openBackend(ctx context.Context, loc storage.Location) (storage.Backend, error) {
	return retry.Open(ctx, loc, retry.DefaultPolicy)
}

// ID is the repository's id (hex).
func (r *Repo) ID() string { return r.repo.ID() }

// URL is the repository's location in canonical form (storage.Location's
// String): a plain local path is absolute.
func (r *Repo) URL() string { return r.loc.String() }

// Location describes where the repository is, without secrets.
func (r *Repo) Location() string { return r.backend.Location() }

// Tracked reports whether the repository is the device's own, so that
// rollback detection applies.
func (r *Repo) Tracked() bool { return r.dev != nil }

// Close forgets the key material held for the repository and releases the
// storage connection.
func (r *Repo) Close() error {
	r.repo.Close()
	return closeBackend(r.backend)
}

func closeBackend(b storage.Backend) error {
	if c, ok := b.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Backup backs paths up as a new generation. On a device's own repository
// it first checks for a rollback, and afterwards records the new generation
// as the newest the device has seen.
func (r *Repo) Backup(ctx context.Context, paths []string, opts BackupOptions) (*BackupSummary, error) {
	if _, err := r.checkRollback(ctx); err != nil {
		return nil, err
	}
	abs := make([]string, len(paths))
	for i, p := range paths {
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		abs[i] = a
	}
	opts.Exclude = append(r.exclusions(), opts.Exclude...)
	s, err := r.repo.Backup(ctx, abs, opts)
	if err != nil {
		return nil, err
	}
	if _, err := r.saw(s.Generation.Number); err != nil {
		return s, fmt.Errorf("backup %d was made, but this device could not record it: %w", s.Generation.Number, err)
	}
	return s, nil
}

// exclusions are the directories a backup never stores, even inside a
// backed-up path: the repository (a local directory) and the device's
// state directory (which holds the backup key).
func (r *Repo) exclusions() []repository.Exclusion {
	var x []repository.Exclusion
	if c, ok := r.loc.Config().(local.Config); ok {
		x = append(x, repository.Exclusion{Path: c.Dir, What: "the repository"})
	}
	if r.stateDir != "" {
		x = append(x, repository.Exclusion{Path: r.stateDir, What: "the device's state directory (it holds the backup key)"})
	}
	return x
}

// Generations lists the backups, oldest first. On a device's own
// repository it fails with ErrRollback if the repository was rolled back.
func (r *Repo) Generations(ctx context.Context) ([]Generation, error) {
	gens, err := r.checkRollback(ctx)
	if err != nil || r.Tracked() {
		return gens, err
	}
	return r.repo.Generations(ctx)
}

// checkRollback is the rollback check, the one every operation on a Repo
// makes before anything else. On the device's own repository it lists
// the backups and fails with ErrRollback (and ErrIntegrity) if
// the newest is older than the newest the device has written or seen;
// otherwise it records the newest as seen and returns the list. On any
// other repository there is nothing to hold it against: it lists nothing
// and returns nil.
func (r *Repo) checkRollback(ctx context.Context) ([]Generation, error) {
	if r.dev == nil {
		return nil, nil
	}
	gens, err := r.repo.Generations(ctx)
	if err != nil {
		return nil, err
	}
	var newest uint64
	if len(gens) > 0 {
		newest = gens[len(gens)-1].Number
	}
	seen, err := r.saw(newest)
	if err != nil {
		return nil, err
	}
	if newest < seen {
		what := "has no backups at all"
		if newest > 0 {
			what = fmt.Sprintf("has backup %d as its newest", newest)
		}
		return nil, fmt.Errorf("%w: %w: this device has seen backup %d, but the repository at %s %s; the storage may have been rolled back to an older state, or backups were deleted",
			ErrIntegrity, ErrRollback, seen, r.Location(), what)
	}
	return gens, nil
}

// saw records gen as the newest generation the device has seen, if the
// repository is the device's own and gen is newer than the one recorded.
// It returns the one recorded before (0 on another repository).
func (r *Repo) saw(gen uint64) (before uint64, err error) {
	if r.dev == nil {
		return 0, nil
	}
	cfg, err := r.dev.dir.Load()
	if err != nil {
		return 0, err
	}
	before = cfg.LastGeneration
	if gen > before {
		cfg.LastGeneration = gen
		if err := r.dev.dir.Save(cfg); err != nil {
			return before, err
		}
	}
	return before, nil
}

// Restore restores backup gen (0: the newest) into target, which must not
// exist or be an empty directory (which is kept: same inode and mode). It
// is all or nothing: on any failure nothing is left at target, unless
// opts.Salvage asks for every intact file of a damaged backup
// (RestoreSummary.Damaged lists what was left out, and the error wraps
// ErrIntegrity).
func (r *Repo) Restore(ctx context.Context, gen uint64, target string, opts RestoreOptions) (*RestoreSummary, error) {
	if _, err := r.checkRollback(ctx); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(target)
	if err != nil {
		return nil, err
	}
	return r.repo.Restore(ctx, gen, abs, opts)
}

// Verify reads and authenticates every backup and every piece they use,
// writing nothing. It reports every missing or damaged piece with the
// backups and files it affects (VerifySummary.Damaged); the error returned
// with the summary then wraps ErrIntegrity.
func (r *Repo) Verify(ctx context.Context, p Progress) (*VerifySummary, error) {
	if _, err := r.checkRollback(ctx); err != nil {
		return nil, err
	}
	return r.repo.Verify(ctx, p)
}

// Check checks the repository, writing nothing: fast by default (every
// manifest decrypts, every piece a backup references is stored), and
// reading data too with opts.ReadData or opts.ReadDataSubset ("n/t" or
// "x%"). Like Verify it reports every damaged piece and the files it
// affects, and its error (with the summary) wraps ErrIntegrity.
func (r *Repo) Check(ctx context.Context, opts CheckOptions) (*CheckSummary, error) {
	if _, err := r.checkRollback(ctx); err != nil {
		return nil, err
	}
	return r.repo.Check(ctx, opts)
}

// Repair makes every backup restorable again as far as the lost data
// allows (repository.Repair): it uploads again lost pieces found in the
// files under opts.Paths, writes each backup that still uses lost data as
// a new backup without those files (RepairSummary.Repaired) and removes
// orphan objects. It refuses (ErrLocked) while a backup or prune runs.
// The device records the new backups as seen.
func (r *Repo) Repair(ctx context.Context, opts RepairOptions) (*RepairSummary, error) {
	if _, err := r.checkRollback(ctx); err != nil {
		return nil, err
	}
	abs := make([]string, len(opts.Paths))
	for i, p := range opts.Paths {
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		abs[i] = a
	}
	opts.Paths = abs
	s, err := r.repo.Repair(ctx, opts)
	if s != nil {
		for _, rb := range s.Repaired {
			if _, serr := r.saw(rb.To); serr != nil && err == nil {
				err = serr
			}
		}
	}
	return s, err
}

// Prune keeps the newest keep backups and removes the others and the pieces
// only they used.
func (r *Repo) Prune(ctx context.Context, keep int) (*PruneSummary, error) {
	if keep < 1 {
		return nil, fmt.Errorf("prune must keep at least 1 backup, not %d", keep)
	}
	if _, err := r.checkRollback(ctx); err != nil {
		return nil, err
	}
	return r.repo.Prune(ctx, keep)
}

// Unlock removes the repository's stale locks: those of a Coffer process
// on this machine that has exited (killed during a backup or prune), and
// those not refreshed for 30 minutes. With force it removes every lock,
// which is safe only when no other Coffer process uses the repository.
func (r *Repo) Unlock(ctx context.Context, force bool) (*UnlockSummary, error) {
	return r.repo.Unlock(ctx, force)
}

// ReadKeyFile reads a key file: the one 'coffer init --key-file' writes
// (comment lines starting with '#', then the 64 digits), a device's state
// key file, or just the 64 digits.
func ReadKeyFile(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	var digits strings.Builder
	for line := range strings.SplitSeq(string(b), "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "#") || t == "coffer backup key v1" {
			continue
		}
		digits.WriteString(t)
		digits.WriteByte('\n')
	}
	k, err := backupkey.Parse(digits.String())
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// WriteKeyFile writes key to a new file at path (0600). It refuses to
// replace an existing file. comment lines (without '#') go before the key.
func WriteKeyFile(path string, key *Key, comment ...string) error {
	var sb strings.Builder
	for _, c := range comment {
		sb.WriteString("# " + c + "\n")
	}
	sb.WriteString(key.Digits() + "\n")
	err := atomicfile.CreateExclusive(path, []byte(sb.String()), 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("key file %s already exists; refusing to overwrite it (choose another file)", path)
	}
	return err
}
