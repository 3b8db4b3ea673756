package vaultstate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/bbolt"
)

// Bucket names and metadata keys of the bbolt file (schema version 1).
var (
	bucketRecords = []byte("records") // record id → sealed account (MarshalBinary)
	bucketReplay  = []byte("replay")  // 'i' request id → time; 't' time request id → ""
	bucketMeta    = []byte("meta")
	// bucketMembers (member id → sealed member value, member.go) came after
	// schema 1 without changing it: a file without it reads as an empty
	// directory, and Open creates it.
	bucketMembers = []byte("members")

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
	// LegacySealer, if set, opens the values of a version 1 snapshot
	// (snapshot.go) that do not open under Sealer: one written by a
	// replica sealing under the fleet's legacy storage key. Restore then
	// re-seals them under Sealer. LegacyDigestKey, if set, checks such a
	// snapshot's digest.
	LegacySealer    Sealer
	LegacyDigestKey []byte
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
	// CommitInterval, if positive, turns on group commit: ApplyBatch
	// leaves its changes in an open bbolt write transaction, which Account
	// and every other read go through (so a result and the reads after it
	// agree), and the machine commits that transaction at most
	// CommitInterval after its first change, once it holds CommitEntries
	// entries, and before Snapshot, Restore, Sync and Close (Commit does it
	// on demand). Zero commits every ApplyBatch, as one transaction.
	//
	// Changes not yet committed are lost if the process dies: the file then
	// holds the state at its last commit, with that commit's applied index,
	// and whoever owns the log must re-apply the entries after it (Raft
	// does: vault/replica). Only a caller whose log is durable may use it.
	CommitInterval time.Duration
	// CommitEntries bounds the entries applied in one transaction under
	// group commit (default DefaultCommitEntries).
	CommitEntries int
	// DigestKey, if set (32 bytes or more, secret), keeps a keyed digest
	// of the whole state with the applied index (digest.go): Open and
	// Restore recompute it over the file and refuse a file that does not
	// match (ErrStateTampered: values copied in from an older state, the
	// applied index moved). vault/replica derives it from the data key;
	// without sealing there is none, and an unsealed file has no integrity
	// against whoever holds the disk.
	DigestKey []byte
	// OnFailure, if set, is called once, on its own goroutine, with the
	// first storage failure (see Err), including one of a commit made in
	// the background under group commit, which no Apply call returns.
	OnFailure func(error)
}

// DefaultCommitEntries is Options.CommitEntries' default.
const DefaultCommitEntries = 4096

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
// goroutine); Account, LastApplied, Commit and Snapshot may be called
// concurrently with them. Restore must not run concurrently with Apply.
type Machine struct {
	path string
	opts Options

	mu sync.RWMutex // held shared while db is used, exclusive to swap or close it
	db *bbolt.DB

	// txMu serializes the open write transaction (group commit): applies,
	// commits and the reads that go through it. A bbolt transaction is not
	// safe for concurrent use, reads included. Lock order: mu, txMu, stateMu.
	txMu    sync.Mutex
	wtx     *bbolt.Tx   // open write transaction, nil when all is committed
	pending int         // entries applied in wtx
	timer   *time.Timer // commits wtx CommitInterval after it began

	stateMu   sync.Mutex
	meta      txMeta // metadata of the last applied entry (wtx's, or committed)
	committed txMeta // metadata of the last committed transaction (the file's)
	failed    error  // first storage failure
	notified  bool   // OnFailure was called

	members membersGen // MembersVersion

	dig *digester // nil without Options.DigestKey
}

// txMeta is the metadata carried through a transaction.
type txMeta struct {
	index, term uint64
	newest      int64
	// acc is the digest accumulator of the state (digest.go) and digest
	// the digest stored with index, term and newest (zero without a key;
	// digest is set at the end of each transaction).
	acc    [DigestSize]byte
	digest Digest
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
	if opts.CommitEntries <= 0 {
		opts.CommitEntries = DefaultCommitEntries
	}
	m := &Machine{path: path, opts: opts}
	if opts.DigestKey != nil {
		var err error
		if m.dig, err = newDigester(opts.DigestKey); err != nil {
			return nil, err
		}
	}
	db, meta, err := m.openDB(path)
	if err != nil {
		return nil, err
	}
	m.db, m.meta, m.committed = db, meta, meta
	m.members.bump()
	if opts.CommitInterval > 0 {
		m.timer = time.AfterFunc(time.Hour, m.commitDue)
		m.timer.Stop()
	}
	return m, nil
}

// groupCommit reports whether applies leave their transaction open.
func (m *Machine) groupCommit() bool { return m.opts.CommitInterval > 0 }

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
			for _, name := range [][]byte{bucketRecords, bucketReplay, bucketMeta, bucketMembers} {
				if _, err := tx.CreateBucket(name); err != nil {
					return err
				}
			}
			return tx.Bucket(bucketMeta).Put(metaSchema, []byte{schemaVersion})
		}
		var err error
		if meta, err = readMeta(tx); err != nil {
			return err
		}
		// A file from before the member directory.
		_, err = tx.CreateBucketIfNotExists(bucketMembers)
		return err
	})
	if err == nil && m.dig != nil {
		// The whole file against its digest, once, before anything reads
		// it; from here on the accumulator follows every change.
		err = db.View(func(tx *bbolt.Tx) error {
			var verr error
			meta, _, verr = m.dig.verify(tx, meta, false)
			return verr
		})
		if err != nil {
			db.Close()
			return nil, txMeta{}, fmt.Errorf("open vault state %s: %w", path, err)
		}
	}
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

// Close commits what is applied (group commit), syncs and closes the file.
// It waits for snapshots being streamed.
func (m *Machine) Close() error {
	return m.close(true)
}

// Abandon closes the file without committing the open transaction (group
// commit), as a crash would leave it: the entries applied since the last
// commit are not in the file, which holds the applied index of that
// commit. Tests use it to check that re-applying the log restores them.
func (m *Machine) Abandon() error {
	return m.close(false)
}

func (m *Machine) close(commit bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.db == nil {
		return nil
	}
	if m.timer != nil {
		m.timer.Stop()
	}
	var err error
	m.txMu.Lock()
	if _, failed := m.status(); commit && failed == nil {
		err = m.commitLocked()
	} else {
		m.rollbackLocked()
	}
	m.txMu.Unlock()
	if commit && m.opts.NoSync {
		err = errors.Join(err, m.db.Sync())
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

// failStorage records a storage failure of an apply or a commit and tells
// OnFailure (once).
func (m *Machine) failStorage(err error) error {
	err = m.fail(err)
	m.stateMu.Lock()
	notify := m.opts.OnFailure != nil && !m.notified
	m.notified = true
	m.stateMu.Unlock()
	if notify {
		go m.opts.OnFailure(err)
	}
	return err
}

func (m *Machine) status() (txMeta, error) {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	return m.meta, m.failed
}

// writeTx returns the open write transaction, beginning one (and arming
// the commit timer) if none is open. Call with txMu held.
func (m *Machine) writeTx() (*bbolt.Tx, error) {
	if m.wtx != nil {
		return m.wtx, nil
	}
	tx, err := m.db.Begin(true)
	if err != nil {
		return nil, err
	}
	m.wtx, m.pending = tx, 0
	if m.timer != nil {
		m.timer.Reset(m.opts.CommitInterval)
	}
	return tx, nil
}

// commitLocked commits the open write transaction, if any. A failed commit
// leaves the file at the previous commit and stops the machine. Call with
// txMu held (and mu, at least shared).
func (m *Machine) commitLocked() error {
	tx := m.wtx
	if tx == nil {
		return nil
	}
	m.wtx = nil
	m.stateMu.Lock()
	meta := m.meta
	m.stateMu.Unlock()
	if err := tx.Commit(); err != nil {
		m.stateMu.Lock()
		m.meta = m.committed
		m.stateMu.Unlock()
		return m.failStorage(fmt.Errorf("commit entries %d..%d: %w", m.committed.index+1, meta.index, err))
	}
	m.stateMu.Lock()
	m.committed = meta
	m.stateMu.Unlock()
	return nil
}

// rollbackLocked drops the open write transaction: the applied state goes
// back to the last commit. Call with txMu held.
func (m *Machine) rollbackLocked() {
	if m.wtx == nil {
		return
	}
	m.wtx.Rollback()
	m.wtx = nil
	m.stateMu.Lock()
	m.meta = m.committed
	m.stateMu.Unlock()
	m.members.bump()
}

// commitDue is the group commit timer.
func (m *Machine) commitDue() {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.db == nil {
		return
	}
	m.txMu.Lock()
	defer m.txMu.Unlock()
	m.commitLocked()
}

// Commit commits the entries applied so far (group commit; without it
// every ApplyBatch has committed already). It returns the failure that
// stopped the machine, if any.
func (m *Machine) Commit() error {
	return m.commitThen(nil)
}

// Sync commits what is applied (group commit) and flushes the file to
// disk (useful with NoSync).
func (m *Machine) Sync() error {
	return m.commitThen(func() error {
		if err := m.db.Sync(); err != nil {
			return fmt.Errorf("sync vault state: %w", err)
		}
		return nil
	})
}

// commitThen commits what is applied and then runs then (if set) with the
// file still open, unless the machine is closed or stopped.
func (m *Machine) commitThen(then func() error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.db == nil {
		return fmt.Errorf("%w: closed", ErrStorage)
	}
	m.txMu.Lock()
	defer m.txMu.Unlock()
	if _, err := m.status(); err != nil {
		return err
	}
	if err := m.commitLocked(); err != nil || then == nil {
		return err
	}
	return then()
}

// view runs fn in the open write transaction if there is one (group
// commit: it holds what is applied but not committed), else in a read
// transaction. fn must copy what it keeps of the values it reads. Call
// with mu held (at least shared).
func (m *Machine) view(fn func(*bbolt.Tx) error) error {
	m.txMu.Lock()
	defer m.txMu.Unlock()
	if m.wtx != nil {
		return fn(m.wtx)
	}
	return m.db.View(fn)
}

// Err returns the storage failure that stopped the machine, or nil. Once set,
// Apply answers CodeUnavailable without applying anything; the replica must
// be stopped and repaired.
func (m *Machine) Err() error {
	_, err := m.status()
	return err
}

// LastApplied returns the index and term of the last entry applied (0, 0
// for a new file), committed or not: what Account reads reflect. Entries at
// or below it are skipped, so re-applying the log after a restart changes
// nothing.
func (m *Machine) LastApplied() (index, term uint64) {
	meta, _ := m.status()
	return meta.index, meta.term
}

// LastCommitted returns the index and term stored in the file by its last
// commit: where a restart resumes applying. Without group commit it is
// LastApplied (after a storage failure both are the file's).
func (m *Machine) LastCommitted() (index, term uint64) {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	return m.committed.index, m.committed.term
}

// CommittedDigest returns LastCommitted and the state digest stored with
// it (digest.go; zero without Options.DigestKey, or for a file that has
// applied nothing): what a high-water mark records.
func (m *Machine) CommittedDigest() (index, term uint64, digest Digest) {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	return m.committed.index, m.committed.term, m.committed.digest
}

// Account returns the stored state of id (the zero Account if none). It is
// a local read, not linearizable: a leader uses it to compute KE2 and then
// proposes a LoginStart carrying the epoch it read, which the machine
// refuses (CodeConflict) if the record changed meanwhile.
//
// It reflects every entry applied, committed or not (group commit).
func (m *Machine) Account(id RecordID) (*Account, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if _, err := m.status(); err != nil {
		return nil, err
	}
	var sealed []byte
	err := m.view(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(bucketRecords).Get(id[:]); v != nil {
			sealed = append([]byte(nil), v...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: read record %s: %w", ErrStorage, id, err)
	}
	// Opened outside the transaction's lock: applies need not wait for it.
	return m.openAccount(id, sealed)
}

// RecordIDs lists up to limit record ids greater than after, in order:
// pages of the stored accounts, for a scan that reads each with Account
// (a reshare). Like Account it reflects every entry applied.
func (m *Machine) RecordIDs(after RecordID, limit int) ([]RecordID, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if _, err := m.status(); err != nil {
		return nil, err
	}
	var ids []RecordID
	err := m.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		k, _ := c.Seek(after[:])
		if k != nil && bytes.Equal(k, after[:]) {
			k, _ = c.Next()
		}
		for ; k != nil && len(ids) < limit; k, _ = c.Next() {
			var id RecordID
			if len(k) != len(id) {
				return fmt.Errorf("record key of %d bytes", len(k))
			}
			copy(id[:], k)
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: list records: %w", ErrStorage, err)
	}
	return ids, nil
}

func (m *Machine) loadAccount(tx *bbolt.Tx, id RecordID) (*Account, error) {
	return m.openAccount(id, tx.Bucket(bucketRecords).Get(id[:]))
}

// openAccount opens and decodes a stored account value (nil: none).
func (m *Machine) openAccount(id RecordID, v []byte) (*Account, error) {
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

func (m *Machine) storeAccount(tx *bbolt.Tx, meta *txMeta, id RecordID, acc *Account) error {
	plain, err := acc.MarshalBinary()
	if err != nil {
		return err
	}
	sealed, err := m.opts.Sealer.Seal(id[:], plain)
	if err != nil {
		return fmt.Errorf("seal record: %w", err)
	}
	return m.put(tx, meta, bucketRecords, id[:], sealed)
}

// Apply applies one entry as ApplyBatch does. It returns nil for an entry
// at or below LastApplied (already applied before a restart) and for a NoOp
// entry.
func (m *Machine) Apply(e Entry) Result {
	return m.ApplyBatch([]Entry{e})[0]
}

// ApplyBatch applies entries, in order, in one transaction (one fsync
// unless NoSync), or under group commit in the open transaction, which it
// commits once due. The results correspond to the entries. The outcome is
// the same as applying them one by one, so replicas may batch differently.
//
// If storage fails, every result of the batch is CodeUnavailable, the file
// holds the state of its last commit, and the machine refuses all further
// entries (see Err): the replica must stop, and on restart re-applies the
// log from the file's applied index.
func (m *Machine) ApplyBatch(entries []Entry) []Result {
	results := make([]Result, len(entries))
	if len(entries) == 0 {
		return results
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	m.txMu.Lock()
	defer m.txMu.Unlock()
	meta, err := m.status()
	if err != nil {
		return unavailable(results)
	}
	tx, err := m.writeTx()
	if err == nil {
		err = m.applyEntries(tx, &meta, entries, results)
	}
	if err != nil {
		// Storage failed. The open transaction is dropped: the file still
		// holds the state of its last commit, and continuing would apply
		// later entries on top of missing ones.
		m.rollbackLocked()
		m.failStorage(fmt.Errorf("apply entries %d..%d: %w", entries[0].Index, entries[len(entries)-1].Index, err))
		return unavailable(results)
	}
	m.pending += len(entries)
	m.stateMu.Lock()
	m.meta = meta
	m.stateMu.Unlock()
	if !m.groupCommit() || m.pending >= m.opts.CommitEntries {
		if err := m.commitLocked(); err != nil {
			return unavailable(results)
		}
	}
	return results
}

// applyEntries applies entries inside tx, filling results. A returned error
// is a storage failure.
func (m *Machine) applyEntries(tx *bbolt.Tx, meta *txMeta, entries []Entry, results []Result) error {
	for i, e := range entries {
		if e.Index <= meta.index {
			continue // applied before (replayed after a restart)
		}
		meta.index, meta.term = e.Index, e.Term
		if e.NoOp {
			continue
		}
		r, err := m.applyCommand(tx, meta, e.Data)
		if err != nil {
			return err
		}
		results[i] = r
	}
	return m.finish(tx, meta)
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
	if c.encodedVersion() >= 3 && meta.newest > 0 && c.Time > meta.newest+MaxClockStep.Milliseconds() {
		c.Time = meta.newest + MaxClockStep.Milliseconds()
	}
	if c.Time > meta.newest {
		meta.newest = c.Time
	}
	if _, ok := c.Op.(*Tick); ok {
		return &TickResult{Now: meta.newest}, nil
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
			if ls, ok := c.Op.(*LoginStart); ok && c.encodedVersion() >= 3 {
				return m.retryLoginStart(tx, meta, &c, ls)
			}
			return replayed(), nil
		}
		if err := m.del(tx, meta, bucketReplay, timeKey(seen, c.RequestID)); err != nil {
			return nil, err
		}
	}
	if err := m.put(tx, meta, bucketReplay, idKey, binary.BigEndian.AppendUint64(nil, uint64(c.Time))); err != nil {
		return nil, err
	}
	if err := m.put(tx, meta, bucketReplay, timeKey(c.Time, c.RequestID), nil); err != nil {
		return nil, err
	}
	if isMemberOp(c.Op) {
		return m.applyMember(tx, meta, c.Op)
	}

	acc, err := m.loadAccount(tx, c.RecordID)
	if err != nil {
		return nil, err
	}
	r, changed := transition(acc, &c)
	if changed {
		if err := m.storeAccount(tx, meta, c.RecordID, acc); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// retryLoginStart answers a LoginStart whose request id was seen before.
// If that very request opened the account's pending login — a relay
// retried it because the first answer was lost — the login is answered
// again under the same login id, the new KE2's MAC hash is accepted too,
// and nothing more is counted: a retry must never spend a guess without an
// answer (the retried request carries the same KE1, so the new KE2 tells
// nothing about any other password). Anything else is a replay.
func (m *Machine) retryLoginStart(tx *bbolt.Tx, meta *txMeta, c *Command, op *LoginStart) (Result, error) {
	now := meta.newest
	acc, err := m.loadAccount(tx, c.RecordID)
	if err != nil {
		return nil, err
	}
	p := acc.Pending
	if !acc.Live() || acc.Epoch != op.Epoch || p == nil || p.RequestID != c.RequestID || max(c.Time, now) >= p.Expiry || p.Blinded != op.Blinded {
		return replayed(), nil
	}
	// The first answer may yet reach the client (the relay retried a slow
	// one): its MAC stays valid, and the retry's is added.
	p.RetryMACHash = op.MACHash
	if err := m.storeAccount(tx, meta, c.RecordID, acc); err != nil {
		return nil, err
	}
	return &LoginStartResult{GuessesUsed: acc.GuessesUsed, GuessLimit: acc.GuessLimit, Expiry: p.Expiry, Retried: true, LoginID: p.ID}, nil
}

func replayed() *Error {
	return refuse(CodeReplay, "the request id was seen before; a client makes a new request id for each request")
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
		if err := m.del(tx, meta, bucketReplay, k); err != nil {
			return err
		}
		if err := m.del(tx, meta, bucketReplay, append([]byte{replayByID}, k[9:]...)); err != nil {
			return err
		}
	}
	mb := tx.Bucket(bucketMeta)
	applied := binary.BigEndian.AppendUint64(nil, meta.index)
	applied = binary.BigEndian.AppendUint64(applied, meta.term)
	if err := mb.Put(metaApplied, applied); err != nil {
		return err
	}
	if m.dig != nil {
		meta.digest = m.dig.tag(meta)
		if err := mb.Put(metaDigest, meta.digest[:]); err != nil {
			return err
		}
	}
	return mb.Put(metaNewest, binary.BigEndian.AppendUint64(nil, uint64(meta.newest)))
}
