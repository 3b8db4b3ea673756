// Package storage is the one interface through which Coffer reads and
// writes a backup repository, whatever holds it (Backend), and the
// registry that turns a repository location into that storage.
//
// # Locations
//
// A location names where a repository is kept:
//
//	/var/backups/coffer            a directory (storage/local); relative paths too
//	./backup:2024                  a relative directory whose name has a colon
//	file:///var/backups/coffer     a directory, as a URL
//	s3://bucket/prefix             Amazon S3 (storage/s3)
//	s3://bucket/prefix?endpoint=http://127.0.0.1:7070
//	                               an S3-compatible server
//
// Parse turns a location into a Location once, and that value is what is
// passed on: the provider registered for the scheme checks the location
// and returns its configuration, without reaching the storage. Its String
// is the canonical form (a plain path made absolute), which parses back to
// the same Location and is what a device saves; Redacted is for messages;
// Open connects:
//
//	loc, err := storage.Parse("s3://bucket/phone?region=eu-west-3")
//	if err != nil {
//		return err // wraps ErrInvalidLocation; shows no credentials
//	}
//	b, err := retry.Open(ctx, loc, retry.DefaultPolicy) // loc.Open(ctx): no retries
//
// Parse refuses a scheme it does not know, listing the ones it does (Schemes,
// Forms): "rclone:gdrive:coffer" is an error, never a relative directory.
// A location is a plain path when it has no scheme, or a single letter
// before the colon (a Windows drive, C:\backups); a relative directory whose
// first name contains a colon is written with "./" in front.
//
// # Providers
//
// A provider package registers its scheme in its init function (Register,
// Provider); a program knows the schemes of the providers it imports.
// Package client imports storage/local (scheme file, and plain paths) and
// storage/s3 (scheme s3); a program that uses this package without client
// imports the providers it wants, for their side effect if need be:
//
//	import _ "github.com/cofferhq/coffer/storage/s3"
//
// # Objects
//
// Object names are slash-separated, relative ("config", "data/ab/ab12…",
// "manifests/00000000000000000007"). They are chosen by the repository
// package and never contain user file names. CheckName states the rules
// every backend enforces.
//
// # Guarantees
//
// Every Backend is safe for concurrent use; makes an object visible only
// once it is complete, so that a reader never sees part of one and a
// failed Put leaves the previous object or nothing; refuses a PutIfAbsent
// of a name taken before the call began (ErrExist); and reports failures
// wrapping ErrNotExist, ErrExist, ErrUnavailable (worth retrying: package
// storage/retry does) or ErrInvalidName. Package storagetest checks all of
// it.
//
// Beyond that, a backend states its Capabilities, truthfully: a wrapper
// passes on its inner backend's, and storagetest holds a backend to what it
// claims. AtomicCreate says PutIfAbsent is atomic against concurrent
// writers; DuplicateNames that one name can hold two objects; ListLag how
// long a List may lag behind completed writes. The repository commits each
// backup with one PutIfAbsent of its manifest where AtomicCreate holds
// (the local directory, S3, the memory backend), and under a commit lock
// with a read-back check where it does not (rclone remotes: Google Drive,
// WebDAV, SFTP…), so that two backups committing at the same moment both
// survive on every kind of store (FORMAT.md, "Commit").
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Errors a Backend returns, wrapped so that errors.Is works.
var (
	// ErrNotExist: the named object does not exist.
	ErrNotExist = errors.New("object does not exist")
	// ErrExist: PutIfAbsent found the name already taken.
	ErrExist = errors.New("object already exists")
	// ErrUnavailable: the storage could not be reached or answered with a
	// transient failure (network error, timeout, HTTP 5xx, throttling).
	// Retrying later may succeed. The CLI maps it to exit code 6.
	ErrUnavailable = errors.New("storage unreachable")
	// ErrInvalidName: the object name or list prefix breaks the rules of
	// CheckName. It is a programming error, never worth retrying.
	ErrInvalidName = errors.New("invalid object name")
)

// MaxNameLen is the longest object name in bytes (S3's key limit, minus
// room for a backend prefix).
const MaxNameLen = 512

// CheckName returns an error wrapping ErrInvalidName unless name is a valid
// object name:
//
//   - 1 to MaxNameLen bytes of UTF-8, with no control characters and no
//     backslash;
//   - slash-separated components, none of them empty (so no leading,
//     trailing or doubled slash);
//   - no component starting with "." — this excludes "." and "..", and
//     leaves dot-names to backends for their own housekeeping (the local
//     backend keeps temporary files in ".tmp").
//
// Every backend checks names with it so that a name accepted by one
// backend is accepted by all.
func CheckName(name string) error {
	if err := checkChars(name); err != nil {
		return fmt.Errorf("%w %q: %v", ErrInvalidName, name, err)
	}
	if name == "" {
		return fmt.Errorf("%w: the name is empty", ErrInvalidName)
	}
	for c := range strings.SplitSeq(name, "/") {
		switch {
		case c == "":
			return fmt.Errorf("%w %q: empty path component (leading, trailing or doubled slash)", ErrInvalidName, name)
		case c[0] == '.':
			return fmt.Errorf("%w %q: a component starts with \".\" (\".\", \"..\" and dot-names are reserved)", ErrInvalidName, name)
		}
	}
	return nil
}

// CheckPrefix returns an error wrapping ErrInvalidName unless prefix can
// begin a valid name: "" (everything), a directory such as "data/", or any
// other start of a name such as "data/ab".
func CheckPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if err := CheckName(prefix + "x"); err != nil {
		return fmt.Errorf("%w: bad list prefix %q", ErrInvalidName, prefix)
	}
	return nil
}

func checkChars(name string) error {
	if len(name) > MaxNameLen {
		return fmt.Errorf("longer than %d bytes", MaxNameLen)
	}
	if !utf8.ValidString(name) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return errors.New("contains a control character")
		}
		if r == '\\' {
			return errors.New("contains a backslash")
		}
	}
	return nil
}

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// Backend is a flat store of immutable objects.
//
// Every method is safe for concurrent use. Implementations must make an
// object visible only once it is complete: a reader never sees a partial
// object, and a failed or interrupted Put leaves either the previous object
// of that name or nothing. A name (or List prefix) that CheckName
// (CheckPrefix) rejects fails with an error wrapping ErrInvalidName.
//
// Package storagetest is the conformance suite for implementations.
type Backend interface {
	// Put stores size bytes read from body under name, replacing any
	// object of that name. body is read with ReadAt so that an
	// implementation may upload parts in parallel and retry any of them.
	Put(ctx context.Context, name string, body io.ReaderAt, size int64) error

	// PutIfAbsent is Put that fails with ErrExist if an object of that
	// name already exists: atomically, against concurrent writers, when
	// the backend states Capabilities.AtomicCreate. It is how a generation
	// is committed exactly once.
	PutIfAbsent(ctx context.Context, name string, body io.ReaderAt, size int64) error

	// Get opens the object for streaming. The caller closes it.
	Get(ctx context.Context, name string) (io.ReadCloser, error)

	// Stat returns the object's size and modification time.
	Stat(ctx context.Context, name string) (ObjectInfo, error)

	// List calls fn for every object whose name starts with prefix, in no
	// particular order. An error from fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error

	// Delete removes the object. Deleting a missing object is not an error.
	Delete(ctx context.Context, name string) error

	// Location is a human-readable description of where objects go, with
	// no secrets in it (for messages and logs).
	Location() string

	// Capabilities states what the backend guarantees beyond the
	// interface's common contract. It is constant for a backend's life.
	Capabilities() Capabilities
}

// Capabilities are the guarantees a Backend makes beyond the common
// contract, and the facts about its store that the repository needs to
// stay correct on it. The zero value claims no guarantee and no quirk: it
// is the honest answer for a backend that can make none of the guarantees
// and whose store lists consistently and keeps one object per name. A
// wrapper (retry, fault injection) states its inner backend's
// capabilities, unless it weakens them.
//
// What the repository guarantees on each kind of store, given these, is
// in FORMAT.md ("Commit") and DESIGN.md ("Stores and their guarantees").
type Capabilities struct {
	// AtomicCreate: PutIfAbsent is atomic. Of any number of PutIfAbsent
	// calls for one name, by any number of processes or machines, at most
	// one succeeds while the name is taken and all the others fail with
	// ErrExist. A local file system (link(2)), S3 (If-None-Match: *) and
	// the memory backend can promise this; a store with no conditional
	// write (a Drive-like API, WebDAV, SFTP through rclone) can only check
	// and then write, which two writers can both pass. Without it
	// PutIfAbsent still fails with ErrExist when the name was taken (and
	// listed, see ListLag) before the call began, but two concurrent
	// writers may both succeed, one overwriting the other. The repository
	// then commits under a commit lock instead (FORMAT.md, "Commit").
	AtomicCreate bool

	// DuplicateNames: the store can hold two objects of one name (Google
	// Drive: two writers creating one name at once each create a file).
	// List then reports the name once per copy and Get and Stat read one
	// of them, not saying which. Objects whose content may differ must
	// then never share a name; the repository names them uniquely (locks)
	// or by content (pieces), and commits manifests under the commit lock.
	DuplicateNames bool

	// ListLag bounds how stale List and name lookups may be: an object
	// whose Put (or Delete) returned more than ListLag ago is seen by
	// every List and lookup (or no longer seen). Zero means List sees
	// every completed Put and Delete at once (a file system, S3, WebDAV,
	// SFTP). A store that gives no bound (Google Drive) gets an estimate,
	// said to be one, and the repository's commit on it is safe only
	// while the store keeps within it.
	ListLag time.Duration

	// Transfers is how many uploads of small objects the store serves
	// well at once (0: no advice). A caller that uploads many small
	// objects keeps about this many in flight, so that on a link with
	// latency they do not serialize (BENCHMARKS.md, "Latency").
	Transfers int
}

// Syncer is implemented by backends whose Put may return before the object
// is durable (the local directory, which avoids one fsync per object).
// Sync makes every object put so far durable. The repository calls it
// before committing a generation.
type Syncer interface {
	Sync(ctx context.Context) error
}
