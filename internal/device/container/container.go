// Package container implements Coffer's encrypted object format, version 1
// (FORMAT.md, section 2): a key-committing, header-authenticated, chunked
// AES-256-GCM stream with optional per-chunk zstd compression, sealed and
// opened on all cores.
//
// Every object Coffer stores is a container. The caller says what kind of
// object it is and which name it is stored under (through Ref); a reader that
// is handed a container of another kind or name refuses it.
//
// Seal and Open work on whole objects in memory. NewWriter and NewReader
// stream; their output and input are byte for byte the same format, so
// either side can be paired with the other.
//
// A streaming reader releases each chunk's plaintext only after the chunk's
// tag has verified, and in order, but it does release the verified prefix of
// an object before it has seen the rest: a reader over a container whose
// chunk 7 is corrupt yields chunks 0 to 6 and then an error. Callers that need
// all or nothing must stage the output and commit it only after the reader
// has returned io.EOF (as the restore does), or use Open.
package container

import (
	"crypto/sha256"
	"errors"
	"fmt"
)

// Kind says what a container holds. It is authenticated in the header.
type Kind uint8

const (
	KindConfig   Kind = 1
	KindData     Kind = 2
	KindManifest Kind = 3
	KindLock     Kind = 4
)

// String returns the kind's name as used in error messages.
func (k Kind) String() string {
	switch k {
	case KindConfig:
		return "config"
	case KindData:
		return "data"
	case KindManifest:
		return "manifest"
	case KindLock:
		return "lock"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

func (k Kind) valid() bool { return k >= KindConfig && k <= KindLock }

var (
	// ErrWrongKey: the key commitment in the header does not match the key.
	ErrWrongKey = errors.New("wrong key")
	// ErrIntegrity: the container is corrupt, truncated, reordered,
	// swapped or otherwise tampered with. Returned errors wrap it and say
	// what exactly failed.
	ErrIntegrity = errors.New("integrity check failed")
	// ErrUnsupportedVersion: a well-formed header of a newer format.
	ErrUnsupportedVersion = errors.New("unsupported format version")
)

const (
	// HeaderSize is the size of a container header in bytes (FORMAT 2.1).
	HeaderSize = 156

	// DefaultChunkLog2 is the log2 of the chunk size writers use when
	// Params.ChunkLog2 is 0: 1 MiB chunks. See README.md for the
	// measurements behind it.
	DefaultChunkLog2 = 20

	minChunkLog2 = 16
	maxChunkLog2 = 24
)

// Ref returns the value that binds a container to the name it is stored
// under and the repository it belongs to (FORMAT 2.4):
// SHA-256("coffer v1 ref" || repoID || name). For the config object repoID
// is all zeros.
func Ref(repoID [16]byte, name string) [32]byte {
	h := sha256.New()
	h.Write([]byte("coffer v1 ref"))
	h.Write(repoID[:])
	h.Write([]byte(name))
	var ref [32]byte
	h.Sum(ref[:0])
	return ref
}

// Params describe a container to write.
type Params struct {
	// Kind is what the container holds; readers must expect the same kind.
	Kind Kind
	// Ref binds the container to its name and repository; see Ref.
	Ref [32]byte
	// ChunkLog2 is log2 of the chunk size, 16 to 24; 0 means
	// DefaultChunkLog2.
	ChunkLog2 uint8
	// Compress allows zstd per chunk. A chunk that compression does not
	// make smaller is stored raw.
	Compress bool
	// Concurrency is the number of chunks sealed at once; 0 means
	// runtime.GOMAXPROCS(0).
	Concurrency int
}
