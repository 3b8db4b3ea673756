package repository

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/container"
	"github.com/cofferhq/coffer/storage"
)

// Layout constants (DESIGN.md, "Repository layout").
const (
	configName      = "config"
	dataPrefix      = "data/"
	manifestsPrefix = "manifests/"
	locksPrefix     = "locks/"

	// FormatVersion is the repository layout version written in config.
	FormatVersion = 1

	// DefaultPieceSize is the largest piece a file is cut into. Every
	// piece is one stored object, content-addressed by a keyed hash of its
	// plaintext. See DESIGN.md for why 4 MiB.
	DefaultPieceSize = 4 << 20

	// minSealedSize is the smallest stored object that can be a piece: a
	// container header and one chunk (length field and tag) of at least
	// one byte. A listed piece no larger (an empty file left by a crash)
	// is not reused.
	minSealedSize = 156 + 4 + 17

	// maxPieceSize bounds what a reader accepts from a config.
	maxPieceSize = 64 << 20
)

// Repository is an open repository: a storage backend and the key that
// opens it.
type Repository struct {
	b         storage.Backend
	key       *[32]byte
	id        [16]byte
	idKey     []byte // keys the names of padded (version 2) pieces (HMAC-SHA-256)
	idKeyV1   []byte // keys the names of version 1 pieces
	pieceSize int
	// Concurrency is the number of pieces processed at once
	// (default 2 × GOMAXPROCS, at least 4).
	concurrency int
	// packTarget is the plaintext size of a full pack (DefaultPackTarget).
	packTarget int
	packBelow  int // tests only: see packThreshold

	idxMu sync.Mutex
	idx   *packIndex // the index read last (loadIndex)
}

// repoConfig is the plaintext of the config object.
type repoConfig struct {
	Format    int       `json:"coffer_repository"`
	ID        string    `json:"id"`
	Created   time.Time `json:"created"`
	PieceSize int       `json:"piece_size"`
}

// Init creates a new repository on b under key. It fails with
// ErrRepositoryExists if b already holds one.
func Init(ctx context.Context, b storage.Backend, key *backupkey.Key) (*Repository, error) {
	if _, err := b.Stat(ctx, configName); err == nil {
		return nil, fmt.Errorf("%w at %s", ErrRepositoryExists, b.Location())
	} else if !errors.Is(err, storage.ErrNotExist) {
		return nil, fmt.Errorf("checking %s: %w", b.Location(), err)
	}
	var id [16]byte
	rand.Read(id[:])
	cfg := repoConfig{
		Format:    FormatVersion,
		ID:        hex.EncodeToString(id[:]),
		Created:   time.Now().UTC().Truncate(time.Second),
		PieceSize: DefaultPieceSize,
	}
	plain, _ := json.Marshal(cfg)
	k := key.Bytes()
	sealed, err := container.Seal(k, container.Params{
		Kind: container.KindConfig,
		Ref:  container.Ref([16]byte{}, configName),
	}, plain)
	if err != nil {
		return nil, err
	}
	if err := b.PutIfAbsent(ctx, configName, bytes.NewReader(sealed), int64(len(sealed))); err != nil {
		if errors.Is(err, storage.ErrExist) {
			return nil, fmt.Errorf("%w at %s", ErrRepositoryExists, b.Location())
		}
		return nil, fmt.Errorf("writing repository config to %s: %w", b.Location(), err)
	}
	return newRepository(b, key, id, cfg.PieceSize), nil
}

// Open opens the repository on b with key. A key that does not open it
// fails with an error wrapping container.ErrWrongKey, at once.
func Open(ctx context.Context, b storage.Backend, key *backupkey.Key) (*Repository, error) {
	rc, err := b.Get(ctx, configName)
	if errors.Is(err, storage.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s has no %q object; check the repository URL, or run 'coffer init' to create one", ErrNoRepository, b.Location(), configName)
	}
	if err != nil {
		return nil, fmt.Errorf("reading repository config from %s: %w", b.Location(), err)
	}
	sealed, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("reading repository config from %s: %w", b.Location(), wrapRead(err))
	}
	plain, err := container.Open(key.Bytes(), container.KindConfig, container.Ref([16]byte{}, configName), sealed, 1)
	if err != nil {
		if errors.Is(err, container.ErrWrongKey) {
			return nil, fmt.Errorf("the key does not open the repository at %s: %w", b.Location(), err)
		}
		return nil, fmt.Errorf("repository config at %s: %w", b.Location(), err)
	}
	var cfg repoConfig
	if err := json.Unmarshal(plain, &cfg); err != nil {
		return nil, integrityf("repository config is not valid JSON: %v", err)
	}
	if cfg.Format != FormatVersion {
		return nil, fmt.Errorf("%w: repository layout version %d; this Coffer reads version %d: upgrade Coffer", container.ErrUnsupportedVersion, cfg.Format, FormatVersion)
	}
	idb, err := hex.DecodeString(cfg.ID)
	if err != nil || len(idb) != 16 {
		return nil, integrityf("repository config has a malformed id")
	}
	if cfg.PieceSize <= 0 || cfg.PieceSize > maxPieceSize {
		return nil, integrityf("repository config has piece size %d out of range", cfg.PieceSize)
	}
	return newRepository(b, key, [16]byte(idb), cfg.PieceSize), nil
}

func newRepository(b storage.Backend, key *backupkey.Key, id [16]byte, pieceSize int) *Repository {
	k := new([32]byte)
	*k = *key.Bytes()
	idKeyV1, err := hkdf.Key(sha256.New, k[:], id[:], "coffer v1 piece id", 32)
	if err != nil {
		panic(err) // only on invalid lengths, which are fixed here
	}
	idKey, err := hkdf.Key(sha256.New, k[:], id[:], "coffer v2 piece id", 32)
	if err != nil {
		panic(err)
	}
	return &Repository{b: b, key: k, id: id, idKey: idKey, idKeyV1: idKeyV1, pieceSize: pieceSize, concurrency: defaultConcurrency(), packTarget: DefaultPackTarget}
}

// ID returns the repository id in hex.
func (r *Repository) ID() string { return hex.EncodeToString(r.id[:]) }

// Location describes where the repository is stored.
func (r *Repository) Location() string { return r.b.Location() }

// Close forgets the key material held by the repository.
func (r *Repository) Close() {
	clear(r.key[:])
	clear(r.idKey)
	clear(r.idKeyV1)
}

// SetConcurrency sets how many pieces are processed at once (n ≥ 1).
func (r *Repository) SetConcurrency(n int) {
	if n >= 1 {
		r.concurrency = n
	}
}

func (r *Repository) ref(name string) [32]byte { return container.Ref(r.id, name) }

// pieceID is the keyed hash of a piece's plaintext: it names the piece
// without revealing its content to anyone without the key.
type pieceID [32]byte

func (r *Repository) pieceID(data []byte) pieceID { return r.keyedID(r.idKey, data) }

// pieceIDv1 names a version 1 (unpadded) piece.
func (r *Repository) pieceIDv1(data []byte) pieceID { return r.keyedID(r.idKeyV1, data) }

// idOf is the name p's content must have.
func (r *Repository) idOf(p piece, data []byte) pieceID {
	if p.V1 {
		return r.pieceIDv1(data)
	}
	return r.pieceID(data)
}

func (r *Repository) keyedID(key, data []byte) pieceID {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	var id pieceID
	m.Sum(id[:0])
	return id
}

func (id pieceID) String() string { return hex.EncodeToString(id[:]) }

func pieceName(id pieceID) string {
	h := id.String()
	return dataPrefix + h[:2] + "/" + h
}

func parsePieceName(name string) (pieceID, bool) {
	var id pieceID
	rest, ok := strings.CutPrefix(name, dataPrefix)
	if !ok || len(rest) != 3+64 || rest[2] != '/' || rest[:2] != rest[3:5] {
		return id, false
	}
	if _, err := hex.Decode(id[:], []byte(rest[3:])); err != nil {
		return id, false
	}
	return id, true
}

func manifestName(gen uint64) string { return fmt.Sprintf("%s%020d", manifestsPrefix, gen) }

func parseManifestName(name string) (uint64, bool) {
	rest, ok := strings.CutPrefix(name, manifestsPrefix)
	if !ok || len(rest) != 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(rest, 10, 64)
	return n, err == nil && n > 0
}

// integrityf returns an error wrapping container.ErrIntegrity.
func integrityf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", container.ErrIntegrity, fmt.Sprintf(format, a...))
}

// wrapRead classifies an error met while streaming an object body: a
// connection that breaks mid-object is a storage failure.
func wrapRead(err error) error {
	if err == nil || errors.Is(err, storage.ErrUnavailable) || errors.Is(err, container.ErrIntegrity) || errors.Is(err, container.ErrWrongKey) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %v", storage.ErrUnavailable, err)
}

// manifestNumbers lists committed generation numbers, ascending.
func (r *Repository) manifestNumbers(ctx context.Context) ([]uint64, error) {
	var gens []uint64
	err := r.b.List(ctx, manifestsPrefix, func(oi storage.ObjectInfo) error {
		if n, ok := parseManifestName(oi.Name); ok {
			gens = append(gens, n)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing backups in %s: %w", r.b.Location(), err)
	}
	sortU64(gens)
	// A store with duplicate names (Capabilities.DuplicateNames) lists a
	// name once per copy.
	return slices.Compact(gens), nil
}

func formatSeconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 3, 64)
}
