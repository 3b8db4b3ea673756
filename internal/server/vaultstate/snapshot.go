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

	"go.etcd.io/bbolt"

	"github.com/cofferhq/coffer/internal/atomicfile"
)

// snapshotMagic starts every snapshot stream (version 1):
//
//	magic [16] | size u64 | bbolt file [size] | SHA-256 of all before [32]
//
// The bbolt file is a consistent copy made in one read transaction, so
// values in it are sealed as stored (see Sealer).
var snapshotMagic = []byte("coffer-vault-s1\n")

// MaxSnapshotSize bounds a snapshot stream Restore accepts (64 GiB).
const MaxSnapshotSize = 64 << 30

// Snapshot is a point-in-time view of the machine, taken without stopping
// Apply: it holds a bbolt read transaction until Release.
type Snapshot struct {
	tx          *bbolt.Tx
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
	return &Snapshot{tx: tx, index: meta.index, term: meta.term}, nil
}

// Index returns the index and term of the last entry the snapshot includes.
func (s *Snapshot) Index() (index, term uint64) { return s.index, s.term }

// WriteTo streams the snapshot to w.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
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

// receive copies and checks a snapshot stream into the file tmp.
func (m *Machine) receive(r io.Reader, tmp string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("restore vault state: %w: %s", ErrBadSnapshot, fmt.Sprintf(format, args...))
	}
	h := sha256.New()
	br := bufio.NewReaderSize(r, 256<<10)
	hdr := make([]byte, len(snapshotMagic)+8)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return bad("header: %v", err)
	}
	if !bytes.Equal(hdr[:len(snapshotMagic)], snapshotMagic) {
		return bad("not a vault state snapshot (or a newer version)")
	}
	size := binary.BigEndian.Uint64(hdr[len(snapshotMagic):])
	if size > MaxSnapshotSize {
		return bad("size %d exceeds %d", size, MaxSnapshotSize)
	}
	h.Write(hdr)
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
	// Check the structure (and the digest) before it replaces anything.
	db, err := bbolt.Open(tmp, 0o600, &bbolt.Options{ReadOnly: m.dig == nil, Timeout: m.boltOptions().Timeout})
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
		if m.dig != nil {
			// A snapshot is authenticated on its way here (the sealed
			// snapshot store, or the leader over mutual TLS), so one
			// written before digests existed may adopt one; one that has
			// a digest must match it.
			if meta, missing, err = m.dig.verify(tx, meta, true); err != nil {
				return fmt.Errorf("restore vault state: %w: %w", ErrBadSnapshot, err)
			}
		}
		return nil
	})
	if err != nil || !missing {
		return err
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(metaDigest, meta.digest[:])
	}); err != nil {
		return fmt.Errorf("restore vault state: store the digest: %w", err)
	}
	return db.Sync()
}
