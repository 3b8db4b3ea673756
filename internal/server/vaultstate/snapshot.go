package vaultstate

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/cofferhq/coffer/internal/atomicfile"
)

// Snapshot streams. Version 2 (written since per-replica storage keys):
//
//	magic "coffer-vault-s2\n" [16]
//	pair*:  0x01 | u8 len(bucket) | bucket | u32 len(key) | key | u32 len(value) | value
//	end:    0x00 | u64 number of pairs
//	SHA-256 of all before [32]
//
// Every (bucket, key, value) of the state in bbolt's order (buckets by
// name, keys sorted), with account and member values **opened**
// (plaintext) and the meta bucket's keyed digest left out: the stream
// depends on the state only, not on the key that seals it on any one
// replica. Restore seals each value under the restoring machine's own
// Sealer and computes the digest under its own DigestKey. (The stream is
// sealed where it is stored — replica's sealed snapshot store — and
// travels between replicas over mutual TLS.) Its SHA-256 is StateHash.
//
// Version 1 (read, never written):
//
//	magic "coffer-vault-s1\n" [16] | size u64 | bbolt file [size] | SHA-256 of all before [32]
//
// a copy of the bbolt file with values sealed as stored: under the
// writer's key (the fleet-wide storage key of Coffer before per-replica
// keys). Restore takes it as it is when its values open under the
// machine's own Sealer (a replica still on the fleet key), re-seals it
// when Options.LegacySealer opens them, and refuses it otherwise
// (ErrBadSnapshot, naming the legacy key).
var (
	snapshotMagic   = []byte("coffer-vault-s1\n")
	snapshotMagicV2 = []byte("coffer-vault-s2\n")
)

// Limits of a version 2 stream's pairs.
const (
	maxSnapshotKey   = bbolt.MaxKeySize
	maxSnapshotValue = 16 << 20
)

// MaxSnapshotSize bounds a snapshot stream Restore accepts (64 GiB).
const MaxSnapshotSize = 64 << 30

// Snapshot is a point-in-time view of the machine, taken without stopping
// Apply: it holds a bbolt read transaction until Release.
type Snapshot struct {
	tx          *bbolt.Tx
	sealer      Sealer
	index, term uint64
	release     sync.Once
}

// Snapshot captures the current state. Call it between applies (Raft's FSM
// goroutine does), then stream it with WriteTo from any goroutine while
// applies continue, and Release it. Under group commit it first commits
// what is applied, so the snapshot holds every entry applied before it.
func (m *Machine) Snapshot() (*Snapshot, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	m.txMu.Lock()
	defer m.txMu.Unlock()
	if _, err := m.status(); err != nil {
		return nil, err
	}
	if err := m.commitLocked(); err != nil {
		return nil, err
	}
	tx, err := m.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("snapshot vault state: %w", err)
	}
	meta, err := readMeta(tx)
	if err != nil {
		tx.Rollback()
		return nil, fmt.Errorf("snapshot vault state: %w: %w", ErrStorage, err)
	}
	return &Snapshot{tx: tx, sealer: m.opts.Sealer, index: meta.index, term: meta.term}, nil
}

// Index returns the index and term of the last entry the snapshot includes.
func (s *Snapshot) Index() (index, term uint64) { return s.index, s.term }

// WriteTo streams the snapshot to w (version 2: values in plaintext).
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, h)}
	bw := bufio.NewWriterSize(cw, 256<<10)
	fail := func(err error) (int64, error) { return cw.n, fmt.Errorf("write snapshot: %w", err) }
	if _, err := bw.Write(snapshotMagicV2); err != nil {
		return fail(err)
	}
	var pairs uint64
	var hdr []byte
	err := s.tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
		if len(name) > 255 {
			return fmt.Errorf("bucket name of %d bytes", len(name))
		}
		return b.ForEach(func(k, v []byte) error {
			if v == nil && b.Bucket(k) != nil {
				return fmt.Errorf("bucket %q holds a nested bucket %q", name, k)
			}
			switch {
			case bytes.Equal(name, bucketMeta) && bytes.Equal(k, metaDigest):
				return nil // keyed by the writer's key: the restorer makes its own
			case bytes.Equal(name, bucketRecords):
				plain, err := s.sealer.Open(k, v)
				if err != nil {
					return fmt.Errorf("%w: record %x does not open: %w", ErrStorage, k, err)
				}
				v = plain
			case bytes.Equal(name, bucketMembers):
				plain, err := s.sealer.Open(memberSealKey(string(k)), v)
				if err != nil {
					return fmt.Errorf("%w: member %q does not open: %w", ErrStorage, k, err)
				}
				v = plain
			}
			if len(v) > maxSnapshotValue {
				return fmt.Errorf("value of %d bytes in bucket %q", len(v), name)
			}
			hdr = append(hdr[:0], 1, byte(len(name)))
			hdr = append(hdr, name...)
			hdr = binary.BigEndian.AppendUint32(hdr, uint32(len(k)))
			hdr = append(hdr, k...)
			hdr = binary.BigEndian.AppendUint32(hdr, uint32(len(v)))
			if _, err := bw.Write(hdr); err != nil {
				return err
			}
			if _, err := bw.Write(v); err != nil {
				return err
			}
			pairs++
			return nil
		})
	})
	if err != nil {
		return fail(err)
	}
	if _, err := bw.Write(binary.BigEndian.AppendUint64([]byte{0}, pairs)); err != nil {
		return fail(err)
	}
	if err := bw.Flush(); err != nil {
		return fail(err)
	}
	k, err := w.Write(h.Sum(nil))
	if err != nil {
		return cw.n + int64(k), fmt.Errorf("write snapshot: %w", err)
	}
	return cw.n + int64(k), nil
}

// writeV1 streams the snapshot to w in version 1 (values as stored):
// what Coffer wrote before per-replica keys; tests make legacy snapshots
// with it.
func (s *Snapshot) writeV1(w io.Writer) (int64, error) {
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, h)}
	bw := bufio.NewWriterSize(cw, 256<<10)
	size := s.tx.Size()
	hdr := append(append([]byte(nil), snapshotMagic...), binary.BigEndian.AppendUint64(nil, uint64(size))...)
	if _, err := bw.Write(hdr); err != nil {
		return cw.n, fmt.Errorf("write snapshot: %w", err)
	}
	n, err := s.tx.WriteTo(bw)
	if err != nil {
		return cw.n, fmt.Errorf("write snapshot: %w", err)
	}
	if n != size {
		return cw.n, fmt.Errorf("write snapshot: wrote %d of %d bytes", n, size)
	}
	if err := bw.Flush(); err != nil {
		return cw.n, fmt.Errorf("write snapshot: %w", err)
	}
	sum := h.Sum(nil)
	k, err := w.Write(sum)
	if err != nil {
		return cw.n + int64(k), fmt.Errorf("write snapshot: %w", err)
	}
	return cw.n + int64(k), nil
}

// Release ends the snapshot's read transaction. It is safe to call more
// than once.
func (s *Snapshot) Release() {
	s.release.Do(func() { s.tx.Rollback() })
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ErrBadSnapshot is wrapped by Restore's errors about the stream itself
// (truncated, corrupt, not a vault snapshot).
var ErrBadSnapshot = errors.New("bad vault state snapshot")

// Restore replaces the whole state with the snapshot read from r. The
// stream is written to a temporary file next to the state file and checked
// (checksum, bbolt structure, schema) before the state file is replaced by a
// rename, so a failed or interrupted Restore leaves the old state in place.
// Under group commit what is applied is committed first, so that state is
// whole too. It must not run concurrently with Apply.
func (m *Machine) Restore(r io.Reader) error {
	if err := m.commitBeforeRestore(); err != nil {
		return err
	}
	tmp := m.path + ".restore"
	if err := m.receive(r, tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.db == nil {
		os.Remove(tmp)
		return errors.New("restore vault state: the machine is closed")
	}
	// Nothing applies during a Restore, so nothing was applied since the
	// commit above; drop an open transaction all the same, as the file is
	// about to be replaced.
	m.txMu.Lock()
	m.rollbackLocked()
	m.txMu.Unlock()
	if err := m.db.Close(); err != nil {
		os.Remove(tmp)
		return m.fail(fmt.Errorf("restore: close the old state: %w", err))
	}
	m.db = nil
	if err := os.Rename(tmp, m.path); err != nil {
		os.Remove(tmp)
		// The old file is still in place: reopen it.
		if db, meta, oerr := m.openDB(m.path); oerr == nil {
			m.db = db
			m.stateMu.Lock()
			m.meta, m.committed = meta, meta
			m.stateMu.Unlock()
			return fmt.Errorf("restore vault state: replace %s: %w", m.path, err)
		}
		return m.fail(fmt.Errorf("restore: replace %s: %w", m.path, err))
	}
	if err := atomicfile.SyncDir(filepath.Dir(m.path)); err != nil {
		return m.fail(fmt.Errorf("restore: sync directory: %w", err))
	}
	db, meta, err := m.openDB(m.path)
	if err != nil {
		return m.fail(fmt.Errorf("restore: reopen: %w", err))
	}
	m.db = db
	m.members.bump()
	m.stateMu.Lock()
	m.meta, m.committed = meta, meta
	// A storage failure before the restore left the file behind the log;
	// the restored file is consistent with the snapshot's index, from which
	// Raft continues.
	m.failed = nil
	m.stateMu.Unlock()
	return nil
}

// commitBeforeRestore commits the open transaction (group commit) before a
// Restore. A machine stopped by a storage failure has nothing open (the
// failure dropped it) and may still be restored.
func (m *Machine) commitBeforeRestore() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.db == nil {
		return errors.New("restore vault state: the machine is closed")
	}
	m.txMu.Lock()
	defer m.txMu.Unlock()
	if m.wtx == nil {
		return nil
	}
	if err := m.commitLocked(); err != nil {
		return fmt.Errorf("restore vault state: %w", err)
	}
	return nil
}

// badSnapshot is an error about the stream itself.
func badSnapshot(format string, args ...any) error {
	return fmt.Errorf("restore vault state: %w: %s", ErrBadSnapshot, fmt.Sprintf(format, args...))
}

// receive copies and checks a snapshot stream (either version) into the
// file tmp, a state file sealed under this machine's own Sealer.
func (m *Machine) receive(r io.Reader, tmp string) error {
	br := bufio.NewReaderSize(r, 256<<10)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil {
		return badSnapshot("header: %v", err)
	}
	switch {
	case bytes.Equal(magic, snapshotMagicV2):
		return m.receiveV2(br, tmp)
	case bytes.Equal(magic, snapshotMagic):
		return m.receiveV1(br, tmp)
	}
	return badSnapshot("not a vault state snapshot (or a newer version)")
}

// receiveV2 rebuilds the state from a version 2 stream (magic read),
// sealing each value under the machine's Sealer as it goes. The file is
// only used once the checksum at the end matched (Restore renames it).
func (m *Machine) receiveV2(br *bufio.Reader, tmp string) (err error) {
	h := sha256.New()
	h.Write(snapshotMagicV2)
	r := io.TeeReader(br, h)
	b, err := m.newBuilder(tmp)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			b.abort()
		}
	}()
	var total int64
	read := func(what string, n int) ([]byte, error) {
		if total += int64(n); total > MaxSnapshotSize {
			return nil, badSnapshot("larger than %d bytes", int64(MaxSnapshotSize))
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(r, p); err != nil {
			return nil, badSnapshot("%s: %v", what, err)
		}
		return p, nil
	}
	for {
		kind, err := read("pair", 1)
		if err != nil {
			return err
		}
		if kind[0] == 0 {
			n, err := read("end", 8)
			if err != nil {
				return err
			}
			if got := binary.BigEndian.Uint64(n); got != b.pairs {
				return badSnapshot("%d pairs, the end says %d", b.pairs, got)
			}
			break
		}
		if kind[0] != 1 {
			return badSnapshot("pair kind %d", kind[0])
		}
		nl, err := read("bucket", 1)
		if err != nil {
			return err
		}
		name, err := read("bucket", int(nl[0]))
		if err != nil {
			return err
		}
		kl, err := read("key length", 4)
		if err != nil {
			return err
		}
		if n := binary.BigEndian.Uint32(kl); n == 0 || n > maxSnapshotKey {
			return badSnapshot("key of %d bytes", n)
		}
		key, err := read("key", int(binary.BigEndian.Uint32(kl)))
		if err != nil {
			return err
		}
		vl, err := read("value length", 4)
		if err != nil {
			return err
		}
		if n := binary.BigEndian.Uint32(vl); n > maxSnapshotValue {
			return badSnapshot("value of %d bytes", n)
		}
		value, err := read("value", int(binary.BigEndian.Uint32(vl)))
		if err != nil {
			return err
		}
		if err := b.put(name, key, value); err != nil {
			return err
		}
	}
	sum := make([]byte, sha256.Size)
	if _, err := io.ReadFull(br, sum); err != nil {
		return badSnapshot("checksum: %v", err)
	}
	if !bytes.Equal(sum, h.Sum(nil)) {
		return badSnapshot("checksum mismatch")
	}
	if k, _ := br.Read(make([]byte, 1)); k != 0 {
		return badSnapshot("trailing data")
	}
	return b.finish()
}

// builder writes a state file from plaintext pairs in bbolt's order,
// sealing account and member values under the machine's Sealer and
// accumulating the machine's digest.
type builder struct {
	m         *Machine
	db        *bbolt.DB
	tx        *bbolt.Tx
	pending   int
	pairs     uint64 // all pairs put, meta included
	data      uint64 // pairs outside meta
	acc       [DigestSize]byte
	meta      map[string][]byte
	lastB     []byte
	lastK     []byte
	committed bool
}

func (m *Machine) newBuilder(path string) (*builder, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: m.boltOptions().Timeout, NoSync: true, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("restore vault state: %w", err)
	}
	tx, err := db.Begin(true)
	if err == nil {
		for _, name := range [][]byte{bucketRecords, bucketReplay, bucketMeta, bucketMembers} {
			if _, err = tx.CreateBucket(name); err != nil {
				tx.Rollback()
				break
			}
		}
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("restore vault state: %w", err)
	}
	return &builder{m: m, db: db, tx: tx, meta: map[string][]byte{}}, nil
}

// put adds bucket/key → plain. Pairs must come in bbolt's order (buckets
// by name, then keys), each once.
func (b *builder) put(bucket, key, plain []byte) error {
	if c := bytes.Compare(bucket, b.lastB); c < 0 || (c == 0 && bytes.Compare(key, b.lastK) <= 0) {
		return badSnapshot("pairs out of order at bucket %q", bucket)
	}
	b.lastB, b.lastK = bytes.Clone(bucket), bytes.Clone(key)
	b.pairs++
	var stored []byte
	var err error
	switch {
	case bytes.Equal(bucket, bucketMeta):
		if !bytes.Equal(key, metaDigest) {
			b.meta[string(key)] = bytes.Clone(plain)
		}
		return nil
	case bytes.Equal(bucket, bucketRecords):
		if len(key) != RecordIDSize {
			return badSnapshot("record id of %d bytes", len(key))
		}
		if err := new(Account).UnmarshalBinary(plain); err != nil {
			return badSnapshot("record %x: %v", key, err)
		}
		stored, err = b.m.opts.Sealer.Seal(key, plain)
	case bytes.Equal(bucket, bucketMembers):
		if _, err := unmarshalMember(string(key), plain); err != nil {
			return badSnapshot("member %q: %v", key, err)
		}
		stored, err = b.m.opts.Sealer.Seal(memberSealKey(string(key)), plain)
	case bytes.Equal(bucket, bucketReplay):
		stored = plain
	default:
		return badSnapshot("unknown bucket %q", bucket)
	}
	if err != nil {
		return fmt.Errorf("restore vault state: seal: %w", err)
	}
	// bbolt keeps the slices until the transaction ends.
	stored, key = bytes.Clone(stored), bytes.Clone(key)
	if b.m.dig != nil {
		xorInto(&b.acc, b.m.dig.item(bucket, key, stored))
	}
	if err := b.tx.Bucket(bucket).Put(key, stored); err != nil {
		return fmt.Errorf("restore vault state: %w", err)
	}
	b.data++
	if b.pending++; b.pending >= 10000 {
		if err := b.tx.Commit(); err != nil {
			b.tx = nil
			return fmt.Errorf("restore vault state: %w", err)
		}
		if b.tx, err = b.db.Begin(true); err != nil {
			return fmt.Errorf("restore vault state: %w", err)
		}
		b.pending = 0
	}
	return nil
}

// finish writes the metadata and the machine's own digest, and syncs and
// closes the file.
func (b *builder) finish() error {
	mb := b.tx.Bucket(bucketMeta)
	for k, v := range b.meta {
		if err := mb.Put([]byte(k), v); err != nil {
			b.abort()
			return fmt.Errorf("restore vault state: %w", err)
		}
	}
	meta, err := readMeta(b.tx)
	if err != nil {
		b.abort()
		return badSnapshot("%v", err)
	}
	if meta.index == 0 && meta.newest == 0 && b.data > 0 {
		b.abort()
		return badSnapshot("it has applied no entry but holds records or request ids")
	}
	if b.m.dig != nil {
		meta.acc = b.acc
		d := b.m.dig.tag(&meta)
		if err := mb.Put(metaDigest, d[:]); err != nil {
			b.abort()
			return fmt.Errorf("restore vault state: %w", err)
		}
	}
	err = b.tx.Commit()
	b.tx = nil
	if err == nil {
		err = b.db.Sync()
	}
	err = errors.Join(err, b.db.Close())
	b.db = nil
	if err != nil {
		return fmt.Errorf("restore vault state: %w", err)
	}
	return nil
}

func (b *builder) abort() {
	if b.tx != nil {
		b.tx.Rollback()
		b.tx = nil
	}
	if b.db != nil {
		b.db.Close()
		b.db = nil
	}
}

// receiveV1 copies and checks a version 1 stream (magic read) into tmp.
// Its values are sealed under the writer's key: taken as they are if they
// open under this machine's Sealer, re-sealed if they open under
// Options.LegacySealer, refused otherwise.
func (m *Machine) receiveV1(br *bufio.Reader, tmp string) error {
	bad := badSnapshot
	h := sha256.New()
	h.Write(snapshotMagic)
	sizeb := make([]byte, 8)
	if _, err := io.ReadFull(br, sizeb); err != nil {
		return bad("header: %v", err)
	}
	size := binary.BigEndian.Uint64(sizeb)
	if size > MaxSnapshotSize {
		return bad("size %d exceeds %d", size, MaxSnapshotSize)
	}
	h.Write(sizeb)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("restore vault state: %w", err)
	}
	n, err := io.CopyN(io.MultiWriter(f, h), br, int64(size))
	if err != nil {
		f.Close()
		if errors.Is(err, io.EOF) {
			return bad("truncated after %d of %d bytes", n, size)
		}
		return fmt.Errorf("restore vault state: receive: %w", err)
	}
	sum := make([]byte, sha256.Size)
	if _, err := io.ReadFull(br, sum); err != nil {
		f.Close()
		return bad("checksum: %v", err)
	}
	if !bytes.Equal(sum, h.Sum(nil)) {
		f.Close()
		return bad("checksum mismatch")
	}
	if k, _ := br.Read(make([]byte, 1)); k != 0 {
		f.Close()
		return bad("trailing data")
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("restore vault state: sync: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("restore vault state: %w", err)
	}
	// Whose key sealed the values?
	ownErr := openAllIn(tmp, m.opts.Sealer)
	if errors.Is(ownErr, ErrBadSnapshot) {
		return ownErr
	}
	if ownErr != nil {
		if m.opts.LegacySealer == nil {
			return bad("a version 1 snapshot (values sealed as the writer stored them) whose values do not open under this replica's key: "+
				"written by a replica under another storage key (the fleet's legacy storage key?), and this replica has no legacy key configured: %v", ownErr)
		}
		if err := openAllIn(tmp, m.opts.LegacySealer); err != nil {
			return bad("a version 1 snapshot whose values open neither under this replica's key (%v) nor under the legacy storage key (%v)", ownErr, err)
		}
		raw := tmp + ".v1"
		if err := os.Rename(tmp, raw); err != nil {
			return fmt.Errorf("restore vault state: %w", err)
		}
		defer os.Remove(raw)
		return m.convertV1(raw, tmp)
	}
	return m.checkV1(tmp, m.dig)
}

// openAllIn opens every account and member value of the bbolt file path
// with s; the first failure is returned (ErrBadSnapshot for a file that is
// not a vault state).
func openAllIn(path string, s Sealer) error {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return badSnapshot("not a bbolt file: %v", err)
	}
	defer db.Close()
	return db.View(func(tx *bbolt.Tx) error {
		if _, err := readMeta(tx); err != nil {
			return badSnapshot("%v", err)
		}
		return forEachOpened(tx, s, func(_, _, _ []byte) error { return nil })
	})
}

// forEachOpened calls fn with every pair of tx, account and member values
// opened with s, in bbolt's order.
func forEachOpened(tx *bbolt.Tx, s Sealer, fn func(bucket, key, plain []byte) error) error {
	return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			if v == nil && b.Bucket(k) != nil {
				return badSnapshot("bucket %q holds a nested bucket %q", name, k)
			}
			var err error
			switch {
			case bytes.Equal(name, bucketRecords):
				if v, err = s.Open(k, v); err != nil {
					return fmt.Errorf("record %x: %w", k, err)
				}
			case bytes.Equal(name, bucketMembers):
				if v, err = s.Open(memberSealKey(string(k)), v); err != nil {
					return fmt.Errorf("member %q: %w", k, err)
				}
			}
			return fn(name, k, v)
		})
	})
}

// convertV1 re-seals the version 1 state file src (values under the legacy
// key, its digest under the legacy digest key if any) into dst under this
// machine's Sealer and digest.
func (m *Machine) convertV1(src, dst string) (err error) {
	if m.opts.LegacyDigestKey != nil {
		d, err := newDigester(m.opts.LegacyDigestKey)
		if err != nil {
			return err
		}
		if err := m.checkV1(src, d); err != nil {
			return err
		}
	}
	db, err := bbolt.Open(src, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return badSnapshot("not a bbolt file: %v", err)
	}
	defer db.Close()
	b, err := m.newBuilder(dst)
	if err != nil {
		return err
	}
	err = db.View(func(tx *bbolt.Tx) error { return forEachOpened(tx, m.opts.LegacySealer, b.put) })
	if err != nil {
		b.abort()
		return err
	}
	return b.finish()
}

// checkV1 checks the structure of a version 1 state file and its digest
// under d (nil: none); a file without a digest adopts one (stored, when d
// is the machine's own).
func (m *Machine) checkV1(tmp string, d *digester) error {
	bad := badSnapshot
	db, err := bbolt.Open(tmp, 0o600, &bbolt.Options{ReadOnly: d == nil || d != m.dig, Timeout: m.boltOptions().Timeout})
	if err != nil {
		return bad("not a bbolt file: %v", err)
	}
	defer db.Close()
	var meta txMeta
	var missing bool
	err = db.View(func(tx *bbolt.Tx) error {
		var err error
		if meta, err = readMeta(tx); err != nil {
			return bad("%v", err)
		}
		if d != nil {
			// A snapshot is authenticated on its way here (the sealed
			// snapshot store, or the leader over mutual TLS), so one
			// written before digests existed may adopt one; one that has
			// a digest must match it.
			if meta, missing, err = d.verify(tx, meta, true); err != nil {
				return fmt.Errorf("restore vault state: %w: %w", ErrBadSnapshot, err)
			}
		}
		return nil
	})
	if err != nil || !missing || d != m.dig {
		return err
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(metaDigest, meta.digest[:])
	}); err != nil {
		return fmt.Errorf("restore vault state: store the digest: %w", err)
	}
	return db.Sync()
}

// StateHash is the SHA-256 of the state's version 2 snapshot stream: a
// hash of the plaintext state (every account, member, remembered request
// id, and the applied index, term and newest command time). Replicas that
// applied the same entries have the same StateHash whatever key seals each
// one's disk; the keyed digest (CommittedDigest) is each replica's own.
// Under group commit it commits what is applied first.
func (m *Machine) StateHash() (index uint64, sum [32]byte, err error) {
	s, err := m.Snapshot()
	if err != nil {
		return 0, sum, err
	}
	defer s.Release()
	h := sha256.New()
	if _, err := s.WriteTo(h); err != nil {
		return 0, sum, err
	}
	index, _ = s.Index()
	return index, [32]byte(h.Sum(nil)), nil
}
