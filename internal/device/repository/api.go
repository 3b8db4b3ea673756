// Package repository turns files and directories into a Coffer backup
// repository on any storage.Backend, and back: content-addressed, padded,
// encrypted pieces (those under a quarter of the piece size packed into
// padded 16 MiB packs listed by encrypted indexes), one manifest per
// generation committed last and
// create-only, retention with safe pruning, Check and Verify (which report
// every damaged piece and the files it affects), Repair, Unlock, and
// all-or-nothing restore (or, with RestoreOptions.Salvage, every intact
// file). DESIGN.md describes the layout; FORMAT.md the bytes.
package repository

import (
	"errors"
	"time"
)

// Errors, wrapped so that errors.Is works. Integrity and wrong-key failures
// wrap container.ErrIntegrity and container.ErrWrongKey; storage failures
// wrap storage.ErrUnavailable.
var (
	// ErrNoRepository: there is no Coffer repository at the location.
	ErrNoRepository = errors.New("no Coffer repository here")
	// ErrRepositoryExists: Init found a repository already there.
	ErrRepositoryExists = errors.New("a Coffer repository already exists here")
	// ErrNoGeneration: the repository has no backup yet, or not the one asked for.
	ErrNoGeneration = errors.New("no such backup")
	// ErrTargetNotEmpty: a restore target exists and is not an empty directory.
	ErrTargetNotEmpty = errors.New("restore target exists and is not empty")
	// ErrLocked: another process holds a conflicting lock.
	ErrLocked = errors.New("repository is locked")
)

// Progress receives progress of long operations. Methods are called from
// several goroutines; implementations must be safe for concurrent use.
// A nil Progress is allowed everywhere.
type Progress interface {
	// SetTotal announces the number of bytes the operation will process.
	SetTotal(bytes int64)
	// Add reports n more bytes processed.
	Add(n int64)
}

// Generation describes one committed backup.
type Generation struct {
	Number  uint64    `json:"generation"`
	Time    time.Time `json:"time"`
	Host    string    `json:"host"`
	Paths   []string  `json:"paths"`
	Parent  uint64    `json:"parent,omitempty"`
	Files   int64     `json:"files"`
	Dirs    int64     `json:"dirs"`
	Links   int64     `json:"symlinks"`
	Bytes   int64     `json:"bytes"`
	Pieces  int64     `json:"pieces"`
	Version string    `json:"coffer_version,omitempty"`
	// RepairedFrom is the backup this one replaced when Repair left out
	// its lost data (0: not a repaired backup).
	RepairedFrom uint64 `json:"repaired_from,omitempty"`
}

// BackupOptions tune Backup.
type BackupOptions struct {
	// NoCompress turns zstd off (on by default).
	NoCompress bool
	// Progress, if set, receives bytes read.
	Progress Progress
	// Host is recorded in the generation (default: os.Hostname).
	Host string
	// Warn receives non-fatal problems (unreadable or special files
	// skipped). Default: ignored.
	Warn func(path string, err error)
	// Version is the version of the program making the backup, recorded
	// in the generation (Generation.Version). Default: DefaultVersion.
	Version string
	// Exclude names directories never to back up, even when they lie
	// inside a backed-up path: the repository itself (a local directory)
	// and the device's state directory (client.Repo.Backup fills these
	// in). Each one met is skipped with a warning and listed in
	// BackupSummary.SkippedEntries.
	Exclude []Exclusion
}

// Exclusion is a directory a backup skips, and what it is (for the
// warning: "the repository", "the device's state directory").
type Exclusion struct {
	Path string
	What string
}

// DefaultVersion is the version recorded by a backup whose
// BackupOptions.Version is empty.
const DefaultVersion = "dev"

// BackupSummary reports what a backup did.
type BackupSummary struct {
	Generation     Generation `json:"generation"`
	NewPieces      int64      `json:"new_pieces"`
	NewBytes       int64      `json:"new_bytes"`       // plaintext bytes uploaded
	StoredBytes    int64      `json:"stored_bytes"`    // bytes written to storage (encrypted, compressed)
	ReusedPieces   int64      `json:"reused_pieces"`   // pieces already in the repository
	UnchangedFiles int64      `json:"unchanged_files"` // files skipped by change detection without reading
	Skipped        int64      `json:"skipped"`         // entries not backed up: len(SkippedEntries)
	// SkippedEntries lists every entry not backed up and why: files or
	// directories that could not be opened or read to the end (a read
	// error midway skips that file, not the backup), sockets and devices,
	// entries replaced while being backed up, and excluded directories. A
	// backup with entries here completed, but is not a full copy: the CLI
	// exits with its "completed with files skipped" code.
	SkippedEntries []SkippedEntry `json:"skipped_entries,omitempty"`
	Duration       Duration       `json:"duration"`
}

// RestoreOptions tune Restore.
type RestoreOptions struct {
	// Progress, if set, receives bytes written.
	Progress Progress
	// Salvage restores every intact file of a damaged backup instead of
	// nothing: files whose data is missing or fails authentication (and,
	// if the manifest itself is damaged, the entries after the damage)
	// are left out and listed in RestoreSummary.Damaged, and Restore
	// returns the summary with an error wrapping container.ErrIntegrity.
	// Without it a restore is all or nothing.
	Salvage bool
}

// DamagedFile is an entry a salvaging restore left out, and why.
type DamagedFile struct {
	Path   string `json:"path"` // entry path in the backup
	Reason string `json:"reason"`
}

// RestoreSummary reports what a restore did.
type RestoreSummary struct {
	Generation Generation `json:"generation"`
	Target     string     `json:"target"`
	Files      int64      `json:"files"`
	Bytes      int64      `json:"bytes"`
	// Damaged lists what a salvaging restore left out (RestoreOptions.Salvage).
	Damaged []DamagedFile `json:"damaged,omitempty"`
	// CleanedStaging lists the staging directories of earlier restores
	// that were killed (they held decrypted data), removed by this one.
	CleanedStaging []string `json:"cleaned_staging,omitempty"`
	Duration       Duration `json:"duration"`
}

// VerifySummary reports what Verify checked.
type VerifySummary struct {
	Generations  int   `json:"generations"`
	Pieces       int64 `json:"pieces"`
	Bytes        int64 `json:"bytes"`        // plaintext bytes authenticated
	Unreferenced int64 `json:"unreferenced"` // objects no generation uses (removed by prune)
	// Damaged lists every missing or damaged piece, with the backups and
	// files it affects; BadManifests every backup whose manifest is
	// damaged. Verify returns an error wrapping container.ErrIntegrity
	// (with this summary) when either is not empty.
	Damaged      []DamagedPiece `json:"damaged,omitempty"`
	BadManifests []BadManifest  `json:"bad_manifests,omitempty"`
	BadIndexes   []BadIndex     `json:"bad_indexes,omitempty"`
	Duration     Duration       `json:"duration"`
}

// PruneSummary reports what Prune did.
type PruneSummary struct {
	Kept          []uint64 `json:"kept"`
	Removed       []uint64 `json:"removed"`
	DeletedPieces int64    `json:"deleted_pieces"`
	DeletedBytes  int64    `json:"deleted_bytes"`
	// DeletedPacks counts the packs deleted (no kept backup used them,
	// or they were repacked); RepackedPacks the packs that were mostly
	// garbage (or small) whose live pieces were copied into new packs,
	// RepackedBytes the pieces' bytes copied; DeletedIndexes the indexes
	// replaced by the one prune wrote.
	DeletedPacks   int64 `json:"deleted_packs"`
	RepackedPacks  int64 `json:"repacked_packs"`
	RepackedBytes  int64 `json:"repacked_bytes"`
	DeletedIndexes int64 `json:"deleted_indexes"`
	// PackSweepSkipped says why packs were left as they were: an index
	// is damaged, or a kept backup uses a piece found nowhere (run Check
	// and Repair first; a lost index can be rebuilt from its packs).
	PackSweepSkipped string `json:"pack_sweep_skipped,omitempty"`
	// SweepDeferred is set when a backup was running, so unreferenced
	// pieces were left for a later prune.
	SweepDeferred bool `json:"sweep_deferred"`
	// DeferredBy lists the live locks that deferred the sweep: who is
	// backing up (host, pid) and since when. A lock whose owner has exited
	// on this machine is not live, so a killed backup does not defer.
	DeferredBy []LockInfo `json:"deferred_by,omitempty"`
	Duration   Duration   `json:"duration"`
}

// Duration marshals to JSON as seconds.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(formatSeconds(time.Duration(d))), nil
}
