package client

// The types, errors and constants of backing up, listing, restoring,
// verifying and pruning, and the backup key. They are defined in Coffer's
// internal packages, which a program outside this module cannot import,
// and named here (as aliases: the same types) so that it can use them.

import (
	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/container"
	"github.com/cofferhq/coffer/internal/device/repository"
)

// Key is a 256-bit backup key. Its 64-digit form (Digits) is what its
// owner keeps; Zero forgets it.
type Key = backupkey.Key

// NewKey makes a fresh random backup key.
func NewKey() *Key { return backupkey.New() }

// ParseKey reads a key in its 64-digit form (any case; spaces and dashes
// are ignored). A malformed key fails with an error wrapping
// ErrMalformedKey.
func ParseKey(digits string) (*Key, error) { return backupkey.Parse(digits) }

type (
	// BackupOptions tune Repo.Backup.
	BackupOptions = repository.BackupOptions
	// BackupSummary reports what a backup did.
	BackupSummary = repository.BackupSummary
	// SkippedEntry is an entry a backup did not store, and why
	// (BackupSummary.SkippedEntries).
	SkippedEntry = repository.SkippedEntry
	// Exclusion is a directory a backup skips (BackupOptions.Exclude).
	Exclusion = repository.Exclusion
	// Generation describes one backup (Repo.Generations).
	Generation = repository.Generation
	// RestoreOptions tune Repo.Restore.
	RestoreOptions = repository.RestoreOptions
	// RestoreSummary reports what a restore did.
	RestoreSummary = repository.RestoreSummary
	// DamagedFile is an entry a salvaging restore left out
	// (RestoreSummary.Damaged).
	DamagedFile = repository.DamagedFile
	// VerifySummary reports what Repo.Verify checked.
	VerifySummary = repository.VerifySummary
	// CheckOptions tune Repo.Check.
	CheckOptions = repository.CheckOptions
	// CheckSummary reports what Repo.Check found.
	CheckSummary = repository.CheckSummary
	// DamagedPiece is a missing or damaged piece and the files it breaks.
	DamagedPiece = repository.DamagedPiece
	// AffectedFile is a file of a backup that uses a damaged piece.
	AffectedFile = repository.AffectedFile
	// BadManifest is a backup whose manifest is damaged.
	BadManifest = repository.BadManifest
	// RepairOptions tune Repo.Repair.
	RepairOptions = repository.RepairOptions
	// RepairSummary reports what Repo.Repair did.
	RepairSummary = repository.RepairSummary
	// RepairedBackup is a backup Repo.Repair replaced.
	RepairedBackup = repository.RepairedBackup
	// PruneSummary reports what Repo.Prune did.
	PruneSummary = repository.PruneSummary
	// LockInfo describes a lock (PruneSummary.DeferredBy, UnlockSummary).
	LockInfo = repository.LockInfo
	// UnlockSummary reports what Repo.Unlock did.
	UnlockSummary = repository.UnlockSummary
	// Progress receives the progress of a backup, restore or verify.
	Progress = repository.Progress
	// Duration is a time.Duration that marshals to JSON as seconds.
	Duration = repository.Duration
)

// ValidateSubset checks a CheckOptions.ReadDataSubset ("n/t" or "x%").
func ValidateSubset(s string) error { return repository.ValidateSubset(s) }

// FormatVersion is the repository layout version this Coffer writes and
// reads.
const FormatVersion = repository.FormatVersion

// Errors of the operations on a repository, for errors.Is. (They are the
// internal packages' own values.)
var (
	// ErrNoRepository: there is no Coffer repository at the location.
	ErrNoRepository = repository.ErrNoRepository
	// ErrRepositoryExists: Create (or Init) found a repository there.
	ErrRepositoryExists = repository.ErrRepositoryExists
	// ErrNoGeneration: no backup yet, or not the one asked for.
	ErrNoGeneration = repository.ErrNoGeneration
	// ErrTargetNotEmpty: a restore target exists and is not empty.
	ErrTargetNotEmpty = repository.ErrTargetNotEmpty
	// ErrLocked: another process holds a conflicting lock.
	ErrLocked = repository.ErrLocked
	// ErrWrongKey: the key does not open the repository.
	ErrWrongKey = container.ErrWrongKey
	// ErrIntegrity: a stored object is damaged, tampered with or out of
	// place; ErrRollback and ErrReplaced come wrapped with it.
	ErrIntegrity = container.ErrIntegrity
	// ErrUnsupportedVersion: the repository was written by a newer Coffer.
	ErrUnsupportedVersion = container.ErrUnsupportedVersion
	// ErrMalformedKey: ParseKey (or ReadKeyFile) was given something that
	// is not a 64-digit key.
	ErrMalformedKey = backupkey.ErrMalformed
)
