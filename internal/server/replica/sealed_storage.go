package replica

// Sealed storage: with Config.SealingKey set, everything the
// replica writes to Dir is encrypted and authenticated under that key.
//
//	state.db     each account value sealed by the state machine's Sealer
//	             (stateSealer), bound to its record id, and each member
//	             directory value (URL, data centre) bound to "member:" and
//	             its member id; bbolt keys (record ids, already keyed
//	             hashes; member ids), the replay set (request ids and times)
//	             and the meta bucket (applied index and term) are not.
//	raft/        every log entry's Data (and Extensions) sealed, bound to
//	             its index, term and type (sealedLogStore); the stable
//	             store's values (current term, vote) sealed, bound to their
//	             key (sealedStableStore). Segment framing, indexes and terms
//	             are not.
//	snapshots/   each snapshot's state.bin is a sealing stream under a fresh
//	             key sealed by SealingKey and bound to the snapshot's index
//	             and term (sealedSnapshotStore); meta.json (index, term,
//	             size, peers' ids and addresses) is not.
//	sealing.json says the directory is sealed and lets Open tell a wrong
//	             key from damage before touching anything.
//
// Raft sees plaintext: entries and snapshots go to peers opened (over the
// transport, which mutual TLS protects), and each replica seals what it
// stores with its own key. Snapshots (vaultstate version 2) carry the state
// machine's values opened, and Restore seals them under the installing
// replica's own key, so **each replica has its own data key** (DataKey: 32
// random bytes in DataKeyFile, wrapped by the replica's key file or token
// key, derived from no fleet secret): a copy of one replica's directory plus
// another replica's key, token or fleet secrets opens nothing
// (serve.TestAttackStolenDiskWithAnotherReplicasKey). A directory sealed
// before this under the fleet-wide storage key (vault.Secrets.StorageKey)
// keeps working with a warning until it is moved: wiped and rejoined
// (OPERATIONS.md, sealing/README.md).

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"

	"github.com/cofferhq/coffer/internal/atomicfile"
	"github.com/cofferhq/coffer/internal/server/sealing"
	"github.com/cofferhq/coffer/internal/server/vaultstate"
)

// Associated-data purposes of the values a replica seals.
const (
	purposeRecord   = "coffer vault v1 record"      // || record id (32), or "member:" || member id
	purposeLog      = "coffer vault v1 raft log"    // || index u64 || term u64 || type u8 || part u8
	purposeStable   = "coffer vault v1 raft stable" // || key
	purposeSnapshot = "coffer vault v1 snapshot"    // || index u64 || term u64
	purposeCheck    = "coffer vault v1 sealing check"
)

// StateSealer seals the state machine's values with k, bound to their key
// (an account's record id; "member:" and the id for a member directory
// entry) under purposeRecord.
func StateSealer(k sealing.Key) vaultstate.Sealer { return stateSealer{k} }

type stateSealer struct{ k sealing.Key }

func (s stateSealer) Seal(key, plaintext []byte) ([]byte, error) {
	return s.k.Seal(sealing.AAD(purposeRecord, key), plaintext)
}

func (s stateSealer) Open(key, sealed []byte) ([]byte, error) {
	return s.k.Open(sealing.AAD(purposeRecord, key), sealed)
}

// stateDigestKey derives the key of the state machine's whole-state digest
// (vaultstate.Options.DigestKey) from the data key; nil without sealing or
// with a key that derives nothing (a token key used directly).
func stateDigestKey(k sealing.Key) []byte {
	d, ok := k.(sealing.Deriver)
	if !ok || k == nil {
		return nil
	}
	return d.DeriveKey("coffer vault v1 state digest")
}

// sealingCheckFile marks a sealed replica directory.
const sealingCheckFile = "sealing.json"

// DataKeyFile is the replica's own data key in its directory, wrapped by
// its key-encryption key (key file or token key).
const DataKeyFile = "data.key"

type sealingCheck struct {
	Version  int    `json:"coffer_sealed_replica"`
	SealedBy string `json:"sealed_by"`
	// KeyID is the sealing key's public id (sealing.KeyID), where it has
	// one; absent in files written before per-replica keys.
	KeyID string `json:"key_id,omitempty"`
	Check string `json:"check"`
}

// keyID is k's public id, or "" for a key without one (a token key).
func keyID(k sealing.Key) string {
	if i, ok := k.(interface{ ID() string }); ok {
		return i.ID()
	}
	return ""
}

// DataKeyStatus says where DataKey found the replica's key.
type DataKeyStatus int

const (
	// DataKeyCreated: dir was empty; a new random data key was made and
	// written to DataKeyFile, wrapped by the key-encryption key.
	DataKeyCreated DataKeyStatus = iota + 1
	// DataKeyOwn: DataKeyFile holds the replica's own data key.
	DataKeyOwn
	// DataKeyLegacy: dir is sealed (sealing.json) but has no DataKeyFile:
	// it was sealed under the fleet-wide storage key of Coffer before
	// per-replica keys, which any replica's fleet secrets yield. It keeps
	// working; move it to its own key (OPERATIONS.md: wipe the directory
	// and let the replica rejoin from a snapshot).
	DataKeyLegacy
)

// DataKey returns the key that seals the replica directory dir, given the
// replica's own key-encryption key kek (its key file, or its PKCS#11 token
// key) and the fleet's legacy storage key (vault.Secrets.StorageKey, for
// directories sealed before per-replica keys; may be nil):
//
//   - dir has DataKeyFile: the data key in it, unwrapped with kek (a wrong
//     kek is refused, naming both keys);
//   - dir is sealed (sealing.json) without DataKeyFile: legacy, the
//     legacy key (refused if sealing.json names another key);
//   - dir holds no replica data: a new random 32-byte data key, written to
//     DataKeyFile wrapped by kek (0600); Open then marks dir sealed by it;
//   - dir holds unsealed data: refused (sealing cannot be turned on for
//     existing data).
//
// The data key is never derived from fleet secrets: a copy of dir plus
// another replica's key file, token or fleet secrets opens nothing.
func DataKey(dir string, kek, legacy sealing.Key) (sealing.Key, DataKeyStatus, error) {
	path := filepath.Join(dir, DataKeyFile)
	if _, err := os.Stat(path); err == nil {
		k, err := sealing.LoadWrappedKey(kek, path)
		if err != nil {
			return nil, 0, fmt.Errorf("replica: %s does not open with %s (another replica's key file or token?): %w", path, kek.Name(), err)
		}
		return k, DataKeyOwn, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, 0, fmt.Errorf("replica: %w", err)
	}
	data, err := os.ReadFile(filepath.Join(dir, sealingCheckFile))
	switch {
	case err == nil:
		var c sealingCheck
		if json.Unmarshal(data, &c) != nil {
			return nil, 0, fmt.Errorf("replica: %s is damaged", filepath.Join(dir, sealingCheckFile))
		}
		if legacy == nil {
			return nil, 0, fmt.Errorf("replica: %s is sealed by %s and has no %s: it was sealed under the fleet's storage key before per-replica keys, which is not available here",
				dir, c.SealedBy, DataKeyFile)
		}
		if c.KeyID != "" && c.KeyID != keyID(legacy) {
			return nil, 0, fmt.Errorf("replica: %s is sealed by %s (key id %s), but its %s is missing: restore that file (or start this replica in an empty directory: it catches up from the fleet)",
				dir, c.SealedBy, c.KeyID, DataKeyFile)
		}
		return legacy, DataKeyLegacy, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, 0, fmt.Errorf("replica: %w", err)
	}
	if has, err := hasReplicaData(dir); err != nil {
		return nil, 0, fmt.Errorf("replica: %w", err)
	} else if has {
		return nil, 0, fmt.Errorf("replica: %s holds data but no %s: it was written without sealing, "+
			"and sealing cannot be turned on for existing data: start this replica in an empty directory (it catches up from the fleet)", dir, sealingCheckFile)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, 0, fmt.Errorf("replica: %w", err)
	}
	k, err := sealing.CreateWrappedKey(kek, path, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("replica: %w", err)
	}
	return k, DataKeyCreated, nil
}

// checkSealing compares cfg.SealingKey with cfg.Dir before anything is
// opened, and returns the Sealer for the state machine (cfg.Sealer if set,
// else one made from SealingKey, else nil).
//
//   - sealed Dir, right key: fine; wrong key: refused, naming both keys.
//   - sealed Dir, no key: refused.
//   - unsealed Dir with data, key given: refused (sealing cannot be turned
//     on for existing data; start a fresh directory and let it catch up).
//   - empty Dir, key given: marked sealed.
func checkSealing(cfg Config) (vaultstate.Sealer, error) {
	path := filepath.Join(cfg.Dir, sealingCheckFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if cfg.SealingKey == nil {
			return nil, fmt.Errorf("replica: %s is sealed (%s): configure its sealing key", cfg.Dir, sealingCheckFile)
		}
		var c sealingCheck
		if err := json.Unmarshal(data, &c); err != nil || c.Version != 1 {
			return nil, fmt.Errorf("replica: %s is damaged", path)
		}
		sealed, err := base64.StdEncoding.DecodeString(c.Check)
		if err != nil {
			return nil, fmt.Errorf("replica: %s is damaged", path)
		}
		if id := keyID(cfg.SealingKey); c.KeyID != "" && id != "" && id != c.KeyID {
			return nil, fmt.Errorf("replica: %s was sealed by the key with id %s (%s) and does not open with %s: the wrong key (another replica's, or a lost %s?): %w",
				cfg.Dir, c.KeyID, c.SealedBy, cfg.SealingKey.Name(), DataKeyFile, sealing.ErrAuthentication)
		}
		if _, err := cfg.SealingKey.Open(sealing.AAD(purposeCheck), sealed); err != nil {
			if c.KeyID != "" && c.KeyID == keyID(cfg.SealingKey) {
				return nil, fmt.Errorf("replica: %s is damaged: it names the configured key (key id %s) but its check does not open: %w", path, c.KeyID, err)
			}
			if errors.Is(err, sealing.ErrAuthentication) {
				err = sealing.ErrAuthentication // the message names the keys already
			}
			return nil, fmt.Errorf("replica: %s was sealed by %s and does not open with %s (wrong key file or token?): %w",
				cfg.Dir, c.SealedBy, cfg.SealingKey.Name(), err)
		}
	case errors.Is(err, os.ErrNotExist):
		if cfg.SealingKey == nil {
			return cfg.Sealer, nil
		}
		if has, err := hasReplicaData(cfg.Dir); err != nil {
			return nil, fmt.Errorf("replica: %w", err)
		} else if has {
			return nil, fmt.Errorf("replica: %s holds data but no %s: it was written without sealing (or the file was removed), "+
				"and sealing cannot be turned on for existing data: start this replica in an empty directory (it catches up from the fleet)",
				cfg.Dir, sealingCheckFile)
		}
		sealed, err := cfg.SealingKey.Seal(sealing.AAD(purposeCheck), []byte(purposeCheck))
		if err != nil {
			return nil, fmt.Errorf("replica: %w", err)
		}
		out, _ := json.MarshalIndent(sealingCheck{Version: 1, SealedBy: cfg.SealingKey.Name(), KeyID: keyID(cfg.SealingKey),
			Check: base64.StdEncoding.EncodeToString(sealed)}, "", "  ")
		if err := atomicfile.Replace(path, append(out, '\n'), 0o600); err != nil {
			return nil, fmt.Errorf("replica: write %s: %w", path, err)
		}
	default:
		return nil, fmt.Errorf("replica: %w", err)
	}
	if cfg.Sealer != nil {
		return cfg.Sealer, nil
	}
	return StateSealer(cfg.SealingKey), nil
}

// hasReplicaData reports whether dir holds a state file, log or snapshots.
func hasReplicaData(dir string) (bool, error) {
	if _, err := os.Stat(filepath.Join(dir, "state.db")); err == nil {
		return true, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	for _, sub := range []string{"raft", "snapshots"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, err
		}
		if len(ents) > 0 {
			return true, nil
		}
	}
	return false, nil
}

// sealedStores returns the log, stable and snapshot stores Raft uses: the
// given ones sealed with k, or as they are when k is nil.
func sealedStores(k sealing.Key, wal interface {
	raft.LogStore
	raft.StableStore
}, snaps raft.SnapshotStore) (raft.LogStore, raft.StableStore, raft.SnapshotStore) {
	if k == nil {
		return wal, wal, snaps
	}
	return &sealedLogStore{inner: wal, k: k}, &sealedStableStore{inner: wal, k: k}, &sealedSnapshotStore{inner: snaps, k: k}
}

// sealedLogStore seals each entry's Data and Extensions, bound to the
// entry's index, term and type.
type sealedLogStore struct {
	inner raft.LogStore
	k     sealing.Key
}

var (
	_ raft.LogStore          = (*sealedLogStore)(nil)
	_ raft.MonotonicLogStore = (*sealedLogStore)(nil)
)

func logAAD(index, term uint64, typ raft.LogType, part byte) []byte {
	var b [18]byte
	binary.BigEndian.PutUint64(b[0:], index)
	binary.BigEndian.PutUint64(b[8:], term)
	b[16] = byte(typ)
	b[17] = part
	return sealing.AAD(purposeLog, b[:])
}

const (
	partData       = 0
	partExtensions = 1
)

func (s *sealedLogStore) FirstIndex() (uint64, error) { return s.inner.FirstIndex() }
func (s *sealedLogStore) LastIndex() (uint64, error)  { return s.inner.LastIndex() }
func (s *sealedLogStore) DeleteRange(min, max uint64) error {
	return s.inner.DeleteRange(min, max)
}

// IsMonotonic passes the inner store's answer on (raft-wal: true), which
// changes how Raft clears the log after installing a snapshot.
func (s *sealedLogStore) IsMonotonic() bool {
	m, ok := s.inner.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

func (s *sealedLogStore) GetLog(index uint64, l *raft.Log) error {
	if err := s.inner.GetLog(index, l); err != nil {
		return err
	}
	if l.Index != index {
		return fmt.Errorf("replica: raft log: entry %d stored at index %d", l.Index, index)
	}
	data, err := s.k.Open(logAAD(index, l.Term, l.Type, partData), l.Data)
	if err != nil {
		return fmt.Errorf("replica: raft log entry %d: %w", index, err)
	}
	l.Data = data
	if len(l.Extensions) > 0 {
		if l.Extensions, err = s.k.Open(logAAD(index, l.Term, l.Type, partExtensions), l.Extensions); err != nil {
			return fmt.Errorf("replica: raft log entry %d: %w", index, err)
		}
	}
	return nil
}

func (s *sealedLogStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs seals copies: Raft keeps the entries it passes in (its
// in-flight list) and must see them unchanged.
func (s *sealedLogStore) StoreLogs(logs []*raft.Log) error {
	sealed := make([]*raft.Log, len(logs))
	for i, l := range logs {
		c := *l
		var err error
		if c.Data, err = s.k.Seal(logAAD(l.Index, l.Term, l.Type, partData), l.Data); err != nil {
			return fmt.Errorf("replica: seal raft log entry %d: %w", l.Index, err)
		}
		if len(l.Extensions) > 0 {
			if c.Extensions, err = s.k.Seal(logAAD(l.Index, l.Term, l.Type, partExtensions), l.Extensions); err != nil {
				return fmt.Errorf("replica: seal raft log entry %d: %w", l.Index, err)
			}
		}
		sealed[i] = &c
	}
	return s.inner.StoreLogs(sealed)
}

// sealedStableStore seals the stable store's values (current term, last
// vote), bound to their key, so they cannot be edited unnoticed. A missing
// key reads as empty, as raft-wal does.
type sealedStableStore struct {
	inner raft.StableStore
	k     sealing.Key
}

var _ raft.StableStore = (*sealedStableStore)(nil)

func (s *sealedStableStore) Set(key, val []byte) error {
	sealed, err := s.k.Seal(sealing.AAD(purposeStable, key), val)
	if err != nil {
		return fmt.Errorf("replica: seal raft stable value %q: %w", key, err)
	}
	return s.inner.Set(key, sealed)
}

func (s *sealedStableStore) Get(key []byte) ([]byte, error) {
	v, err := s.inner.Get(key)
	if err != nil || len(v) == 0 {
		return v, err
	}
	plain, err := s.k.Open(sealing.AAD(purposeStable, key), v)
	if err != nil {
		return nil, fmt.Errorf("replica: raft stable value %q: %w", key, err)
	}
	return plain, nil
}

func (s *sealedStableStore) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

func (s *sealedStableStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil && err.Error() == "not found" {
		// raft's InmemStore (and raft-boltdb) say so for a missing key;
		// GetUint64 answers 0 then.
		return 0, nil
	}
	if err != nil || len(v) == 0 {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("replica: raft stable value %q is not a uint64", key)
	}
	return binary.BigEndian.Uint64(v), nil
}

// sealedSnapshotStore seals each snapshot as a sealing stream bound to the
// snapshot's index and term. Open reports the plaintext size in the
// metadata: Raft sends it to followers as the InstallSnapshot size.
type sealedSnapshotStore struct {
	inner raft.SnapshotStore
	k     sealing.Key
}

var _ raft.SnapshotStore = (*sealedSnapshotStore)(nil)

func snapshotAAD(index, term uint64) []byte {
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:], index)
	binary.BigEndian.PutUint64(b[8:], term)
	return sealing.AAD(purposeSnapshot, b[:])
}

func (s *sealedSnapshotStore) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.inner.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	w, err := sealing.NewStreamWriter(sink, s.k, snapshotAAD(index, term))
	if err != nil {
		sink.Cancel()
		return nil, fmt.Errorf("replica: seal snapshot: %w", err)
	}
	return &sealedSink{SnapshotSink: sink, w: w}, nil
}

func (s *sealedSnapshotStore) List() ([]*raft.SnapshotMeta, error) { return s.inner.List() }

func (s *sealedSnapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.inner.Open(id)
	if err != nil {
		return nil, nil, err
	}
	r, err := sealing.NewStreamReader(rc, s.k, snapshotAAD(meta.Index, meta.Term))
	if err != nil {
		rc.Close()
		return nil, nil, fmt.Errorf("replica: snapshot %s: %w", id, err)
	}
	size, err := sealing.StreamPlaintextSize(meta.Size, int64(r.HeaderSize()))
	if err != nil {
		rc.Close()
		return nil, nil, fmt.Errorf("replica: snapshot %s: %w", id, err)
	}
	m := *meta
	m.Size = size
	return &m, struct {
		io.Reader
		io.Closer
	}{r, rc}, nil
}

type sealedSink struct {
	raft.SnapshotSink
	w        *sealing.StreamWriter
	closed   bool
	closeErr error
}

func (s *sealedSink) Write(p []byte) (int, error) { return s.w.Write(p) }

// Close writes the final chunk and closes the inner sink. Raft closes a
// sink twice (the FSM's Persist, then takeSnapshot): later calls return
// the first one's result.
func (s *sealedSink) Close() error {
	if s.closed {
		return s.closeErr
	}
	s.closed = true
	if err := s.w.Close(); err != nil {
		s.SnapshotSink.Cancel()
		s.closeErr = fmt.Errorf("replica: seal snapshot: %w", err)
		return s.closeErr
	}
	s.closeErr = s.SnapshotSink.Close()
	return s.closeErr
}
