package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.etcd.io/bbolt"
)

// Bucket names and metadata keys of the bbolt file (schema version 1).
var (
	bucketRecords = []byte("records") // record id → sealed account (MarshalBinary)
	bucketReplay  = []byte("replay")  // 'i' request id → time; 't' time request id → ""
	bucketMeta    = []byte("meta")

	metaSchema  = []byte("schema")  // u8 schema version
	metaApplied = []byte("applied") // u64 index | u64 term of the last applied entry
	metaNewest  = []byte("newest")  // i64 newest command time applied
)

const schemaVersion = 1

// Replay bucket key prefixes.
const (
	replayByID   = 'i'
	replayByTime = 't'
)

// Options tune a Machine.
type Options struct {
	// Sealer seals stored account values; nil means IdentitySealer.
	Sealer Sealer
	// NoSync skips the fsync of each bbolt commit (Close still syncs).
	// The Raft log is the durable source of truth, but after a power loss
	// a bbolt file written without fsync can be corrupt or silently hold
	// older pages than its metadata claims, so the file must then be
	// discarded and rebuilt from a snapshot and the log: vault/replica
	// does this after any unclean stop. See README.md for measurements.
	NoSync bool
	// InitialMmapSize is bbolt's initial memory map (default 1 GiB of
	// address space, not memory). While a snapshot is being streamed, a
	// commit that needs a larger map waits for the snapshot to finish.
	InitialMmapSize int
}

// Entry is one committed log entry handed to the machine.
type Entry struct {
	Index uint64
	Term  uint64
	// Data is an encoded Command.
	Data []byte
	// NoOp marks an entry that is not a command (a Raft configuration
	// change, for instance): it only advances the applied index.
	NoOp bool
}

// Machine is the vault's deterministic state machine over a bbolt file.
// Apply and ApplyBatch must be called from one goroutine (Raft's FSM
// goroutine); Account, LastApplied and Snapshot may be called concurrently
// with them. Restore must not run concurrently with Apply.
type Machine struct {
	path string
	opts Options

	mu sync.RWMutex // held shared while db is used, exclusive to swap or close it
	db *bbolt.DB

	stateMu sync.Mutex
	meta    txMeta // metadata of the last committed transaction
	failed  error  // first storage failure
}

// txMeta is the metadata carried through a transaction.
type txMeta struct {
	index, term uint64
	newest      int64
}

// ErrStorage is wrapped by errors that mean the machine's file cannot be
// used: the replica must stop and be repaired (restored from a snapshot or
// rebuilt from its peers).
var ErrStorage = errors.New("vault state storage failed")

// Open opens or creates the state file at path.
func Open(path string, opts Options) (*Machine, error) {
	if opts.Sealer == nil {
		opts.Sealer = IdentitySealer{}
	}
	if opts.InitialMmapSize == 0 {
		opts.InitialMmapSize = 1 << 30
	}
	m := &Machine{path: path, opts: opts}
	db, meta, err := m.openDB(path)
	if err != nil {
		return nil, err
	}
	m.db, m.meta = db, meta
	return m, nil
}

func (m *Machine) boltOptions() *bbolt.Options {
	return &bbolt.Options{
		Timeout:         2 * time.Second,
		NoSync:          m.opts.NoSync,
		NoFreelistSync:  true,
		FreelistType:    bbolt.FreelistMapType,
		InitialMmapSize: m.opts.InitialMmapSize,
	}
}

// openDB opens the bbolt file, creating the buckets and schema of a new
// file, and reads its metadata.
func (m *Machine) openDB(path string) (*bbolt.DB, txMeta, error) {
	db, err := bbolt.Open(path, 0o600, m.boltOptions())
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, txMeta{}, fmt.Errorf("open vault state %s: the file is locked by another process (is another replica running on this directory?)", path)
		}
		return nil, txMeta{}, fmt.Errorf("open vault state %s: %w", path, err)
	}
	var meta txMeta
	err = db.Update(func(tx *bbolt.Tx) error {
		mb := tx.Bucket(bucketMeta)
		if mb == nil {
			if tx.Bucket(bucketRecords) != nil {
				return errors.New("records without metadata")
			}
			for _, name := range [][]byte{bucketRecords, bucketReplay, bucketMeta} {
				if _, err := tx.CreateBucket(name); err != nil {
					return err
				}
			}
			return tx.Bucket(bucketMeta).Put(metaSchema, []byte{schemaVersion})
		}
		var err error
		meta, err = readMeta(tx)
		return err
	})
	if err != nil {
		db.Close()
		return nil, txMeta{}, fmt.Errorf("open vault state %s: %w: %w", path, ErrStorage, err)
	}
	return db, meta, nil
}

// readMeta checks the schema and reads the metadata of tx.
func readMeta(tx *bbolt.Tx) (txMeta, error) {
	var meta txMeta
	mb := tx.Bucket(bucketMeta)
	if mb == nil || tx.Bucket(bucketRecords) == nil || tx.Bucket(bucketReplay) == nil {
		return meta, errors.New("missing buckets: not a vault state file")
	}
	if v := mb.Get(metaSchema); len(v) != 1 || v[0] != schemaVersion {
		return meta, fmt.Errorf("schema version %v, want %d (written by another vault version?)", v, schemaVersion)
	}
	if v := mb.Get(metaApplied); v != nil {
		if len(v) != 16 {
			return meta, errors.New("bad applied index")
		}
		meta.index = binary.BigEndian.Uint64(v)
		meta.term = binary.BigEndian.Uint64(v[8:])
	}
	if v := mb.Get(metaNewest); v != nil {
		if len(v) != 8 {
			return meta, errors.New("bad newest time")
		}
		meta.newest = int64(binary.BigEndian.Uint64(v))
	}
	return meta, nil
}

// Close closes the file. It waits for snapshots being streamed.
func (m *Machine) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.db == nil {
		return nil
	}
	var err error
	if m.opts.NoSync {
		err = m.db.Sync()
	}
	err = errors.Join(err, m.db.Close())
	m.db = nil
	m.fail(errors.New("closed"))
	return err
}

// fail records the first storage failure.
func (m *Machine) fail(err error) error {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	if m.failed == nil {
		m.failed = fmt.Errorf("%w: %w", ErrStorage, err)
	}
	return m.failed
}

func (m *Machine) status() (txMeta, error) {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	return m.meta, m.failed
}

// Sync flushes the file to disk (useful with NoSync).
func (m *Machine) Sync() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.db == nil {
		return fmt.Errorf("%w: closed", ErrStorage)
	}
	if err := m.db.Sync(); err != nil {
		return fmt.Errorf("sync vault state: %w", err)
	}
	return nil
}

// Err returns the storage failure that stopped the machine, or nil. Once set,
// Apply answers CodeUnavailable without applying anything; the replica must
// be stopped and repaired.
func (m *Machine) Err() error {
	_, err := m.status()
	return err
}

// LastApplied returns the index and term of the last entry applied (0, 0
// for a new file). Entries at or below it are skipped, so re-applying the
// log after a restart changes nothing.
func (m *Machine) LastApplied() (index, term uint64) {
	meta, _ := m.status()
	return meta.index, meta.term
}

// Account returns the stored state of id (the zero Account if none). It is
// a local read, not linearizable: a leader uses it to compute KE2 and then
// proposes a LoginStart carrying the epoch it read, which the machine
// refuses (CodeConflict) if the record changed meanwhile.
func (m *Machine) Account(id RecordID) (*Account, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if _, err := m.status(); err != nil {
		return nil, err
	}
	var acc *Account
	err := m.db.View(func(tx *bbolt.Tx) error {
		var err error
		acc, err = m.loadAccount(tx, id)
		return err
	})
	return acc, err
}

func (m *Machine) loadAccount(tx *bbolt.Tx, id RecordID) (*Account, error) {
	v := tx.Bucket(bucketRecords).Get(id[:])
	if v == nil {
		return &Account{}, nil
	}
	plain, err := m.opts.Sealer.Open(id[:], v)
	if err != nil {
		return nil, fmt.Errorf("%w: record %s does not open: %w", ErrStorage, id, err)
	}
	acc := &Account{}
	if err := acc.UnmarshalBinary(plain); err != nil {
		return nil, fmt.Errorf("%w: record %s: %w", ErrStorage, id, err)
	}
	return acc, nil
}

func (m *Machine) storeAccount(tx *bbolt.Tx, id RecordID, acc *Account) error {
	plain, err := acc.MarshalBinary()
	if err != nil {
		return err
	}
	sealed, err := m.opts.Sealer.Seal(id[:], plain)
	if err != nil {
		return fmt.Errorf("seal record: %w", err)
	}
	return tx.Bucket(bucketRecords).Put(id[:], sealed)
}

// Apply applies one entry in one transaction (one fsync). It returns nil
// for an entry at or below LastApplied (already applied before a restart)
// and for a NoOp entry.
func (m *Machine) Apply(e Entry) Result {
	return m.ApplyBatch([]Entry{e})[0]
}

// ApplyBatch applies entries, in order, in one transaction: one fsync for
// the batch. The results correspond to the entries. The outcome is the same
// as applying them one by one, so replicas may batch differently.
//
// If the transaction fails, nothing of the batch is applied, every result is
// CodeUnavailable, and the machine refuses all further entries (see Err):
// the replica must stop, and on restart re-applies the log from LastApplied.
func (m *Machine) ApplyBatch(entries []Entry) []Result {
	results := make([]Result, len(entries))
	m.mu.RLock()
	defer m.mu.RUnlock()
	meta, err := m.status()
	if err != nil {
		return unavailable(results)
	}
	err = m.db.Update(func(tx *bbolt.Tx) error {
		for i, e := range entries {
			if e.Index <= meta.index {
				continue // applied before (replayed after a restart)
			}
			meta.index, meta.term = e.Index, e.Term
			if e.NoOp {
				continue
			}
			r, err := m.applyCommand(tx, &meta, e.Data)
			if err != nil {
				return err
			}
			results[i] = r
		}
		return m.finish(tx, &meta)
	})
	if err != nil {
		// Storage failed: the file still holds the state before the batch.
		// Continuing would apply later entries on top of a missing one.
		m.fail(fmt.Errorf("apply entries %d..%d: %w", entries[0].Index, entries[len(entries)-1].Index, err))
		return unavailable(results)
	}
	m.stateMu.Lock()
	m.meta = meta
	m.stateMu.Unlock()
	return results
}

// unavailable fills results with CodeUnavailable. The cause is for the
// operator (Err), not for clients.
func unavailable(results []Result) []Result {
	for i := range results {
		results[i] = refuse(CodeUnavailable, "the vault replica cannot apply commands (storage failure); nothing was applied; try again later")
	}
	return results
}

// applyCommand decodes and applies one command inside tx. A returned error
// is a storage failure; refusals are results.
func (m *Machine) applyCommand(tx *bbolt.Tx, meta *txMeta, data []byte) (Result, error) {
	var c Command
	if err := c.UnmarshalBinary(data); err != nil {
		return refuse(CodeBadRequest, "the command does not decode: "+err.Error()), nil
	}
	if c.Time > meta.newest {
		meta.newest = c.Time
	}
	// Replay check. An id is remembered while its time is within
	// ReplayWindow of the newest command time; older ids may still be in
	// the bucket until the end of the transaction prunes them, so the time
	// decides, not the presence.
	rb := tx.Bucket(bucketReplay)
	idKey := append([]byte{replayByID}, c.RequestID[:]...)
	if v := rb.Get(idKey); v != nil {
		if len(v) != 8 {
			return nil, fmt.Errorf("replay entry of %d bytes", len(v))
		}
		seen := int64(binary.BigEndian.Uint64(v))
		if seen >= meta.newest-ReplayWindow.Milliseconds() {
			return refuse(CodeReplay, "the request id was seen before; a client makes a new request id for each request"), nil
		}
		if err := rb.Delete(timeKey(seen, c.RequestID)); err != nil {
			return nil, err
		}
	}
	if err := rb.Put(idKey, binary.BigEndian.AppendUint64(nil, uint64(c.Time))); err != nil {
		return nil, err
	}
	if err := rb.Put(timeKey(c.Time, c.RequestID), nil); err != nil {
		return nil, err
	}

	acc, err := m.loadAccount(tx, c.RecordID)
	if err != nil {
		return nil, err
	}
	r, changed := transition(acc, &c)
	if changed {
		if err := m.storeAccount(tx, c.RecordID, acc); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func timeKey(t int64, id RequestID) []byte {
	k := make([]byte, 0, 1+8+RequestIDSize)
	k = append(k, replayByTime)
	k = binary.BigEndian.AppendUint64(k, uint64(t))
	return append(k, id[:]...)
}

// finish prunes request ids older than the replay window and stores the
// metadata. After every transaction the replay bucket holds exactly the ids
// within the window of the newest time, whatever the batching.
func (m *Machine) finish(tx *bbolt.Tx, meta *txMeta) error {
	rb := tx.Bucket(bucketReplay)
	cutoff := meta.newest - ReplayWindow.Milliseconds()
	var stale [][]byte
	c := rb.Cursor()
	for k, _ := c.Seek([]byte{replayByTime}); k != nil && k[0] == replayByTime; k, _ = c.Next() {
		if len(k) != 1+8+RequestIDSize {
			return fmt.Errorf("replay time key of %d bytes", len(k))
		}
		if int64(binary.BigEndian.Uint64(k[1:9])) >= cutoff {
			break
		}
		stale = append(stale, append([]byte(nil), k...))
	}
	for _, k := range stale {
		if err := rb.Delete(k); err != nil {
			return err
		}
		if err := rb.Delete(append([]byte{replayByID}, k[9:]...)); err != nil {
			return err
		}
	}
	mb := tx.Bucket(bucketMeta)
	applied := binary.BigEndian.AppendUint64(nil, meta.index)
	applied = binary.BigEndian.AppendUint64(applied, meta.term)
	if err := mb.Put(metaApplied, applied); err != nil {
		return err
	}
	return mb.Put(metaNewest, binary.BigEndian.AppendUint64(nil, uint64(meta.newest)))
}

// syncDir fsyncs a directory so a rename in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func dirOf(path string) string { return filepath.Dir(path) }
