package replica

import (
	"bytes"
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/cofferhq/coffer/internal/server/sealing"
	"github.com/cofferhq/coffer/internal/server/vaultstate"
)

// Attack A (SECURITY.md, "Splicing old values into a replica's disk"): the
// holder of a replica's disk — not its key — copies a record's earlier
// sealed value back into state.db. The value opens (it is bound only to its
// record id), the Raft log is untouched so the rollback check passes, and
// a replica that leads answers from its own state: a fresh guess budget,
// even for a record the fleet destroyed.

// boltValue reads bucket/key of a closed replica's state.db.
func boltValue(t testing.TB, dir, bucket string, key []byte) []byte {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(dir, "state.db"), 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v []byte
	db.View(func(tx *bbolt.Tx) error {
		v = bytes.Clone(tx.Bucket([]byte(bucket)).Get(key))
		return nil
	})
	if v == nil {
		t.Fatalf("state.db has no %s/%x", bucket, key)
	}
	return v
}

// boltPut writes bucket/key of a closed replica's state.db, as someone
// holding the disk can.
func boltPut(t testing.TB, dir, bucket string, key, value []byte) {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(dir, "state.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bbolt.Tx) error { return tx.Bucket([]byte(bucket)).Put(key, value) }); err != nil {
		t.Fatal(err)
	}
}

// spliceScenario runs a sealed single-replica fleet: a record is
// registered, one guess spent and its sealed value copied; then the budget
// is spent until the record is destroyed, and the replica is stopped.
// It returns the directory, the copied value and an opener.
func spliceScenario(t *testing.T, marks sealing.MarkStore) (dir string, old []byte, open func() (*Replica, error)) {
	logger, _ := testLogger(t)
	dir = filepath.Join(t.TempDir(), "data")
	key := newKeyFile(t)
	open = func() (*Replica, error) {
		cfg := fastConfig(t, "solo", dir, logger)
		cfg.Bootstrap = true
		cfg.SealingKey = key
		cfg.Marks = marks
		cfg.MarkInterval = 50 * time.Millisecond
		return Open(cfg)
	}
	r, err := open()
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, r)
	epoch := register(t, r, recID(1), 1)
	loginStart(t, r, recID(1), epoch, 1)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	rec := recID(1)
	old = boltValue(t, dir, "records", rec[:])

	r, err = open()
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, r)
	for i := 2; i <= testGuessLimit; i++ {
		loginStart(t, r, recID(1), epoch, byte(i))
	}
	res, err := r.Apply(ctxWait(t), command(recID(1), &vaultstate.LoginStart{Epoch: epoch, LoginID: vaultstate.LoginID{99}, MACHash: vaultstate.HashMAC(bytes.Repeat([]byte{9}, 64))}))
	if e, ok := res.(*vaultstate.Error); err != nil || !ok || e.Code != vaultstate.CodeDestroyed {
		t.Fatalf("guess past the limit: %v %v, want destroyed", res, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, old, open
}

// TestAttackSpliceOldRecord: the destroyed record's earlier sealed value,
// spliced back into state.db, must not come back: the replica refuses to
// start (ErrStateTampered) instead of answering with a fresh budget.
func TestAttackSpliceOldRecord(t *testing.T) {
	for _, tc := range []struct {
		name  string
		marks sealing.MarkStore
	}{{"key file", nil}, {"token marks", &memMarks{}}} {
		t.Run(tc.name, func(t *testing.T) {
			dir, old, open := spliceScenario(t, tc.marks)
			rec := recID(1)
			boltPut(t, dir, "records", rec[:], old)
			r, err := open()
			if err == nil {
				defer r.Close()
				acc, lerr := r.Lookup(recID(1))
				t.Fatalf("a replica with a spliced record started; it reads the destroyed record as %v (%v)", acc, lerr)
			}
			if !errors.Is(err, vaultstate.ErrStateTampered) {
				t.Fatalf("spliced record: %v, want ErrStateTampered", err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestAttackSpliceOldStateWithCurrentIndex: a whole old state.db (its
// values and its own digest consistent) with the meta bucket's applied
// index moved up to the current one, so Raft would replay nothing: refused.
func TestAttackSpliceOldStateWithCurrentIndex(t *testing.T) {
	logger, _ := testLogger(t)
	base := t.TempDir()
	dir := filepath.Join(base, "data")
	key := newKeyFile(t)
	open := func() (*Replica, error) {
		cfg := fastConfig(t, "solo", dir, logger)
		cfg.Bootstrap = true
		cfg.SealingKey = key
		return Open(cfg)
	}
	r, err := open()
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, r)
	epoch := register(t, r, recID(1), 1)
	loginStart(t, r, recID(1), epoch, 1)
	r.Close()
	cpDir(t, filepath.Join(dir, "state.db"), filepath.Join(base, "old-state.db"))

	r, err = open()
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, r)
	for i := 2; i <= 5; i++ {
		loginStart(t, r, recID(1), epoch, byte(i))
	}
	r.Close()
	applied := boltValue(t, dir, "meta", []byte("applied"))
	cpDir(t, filepath.Join(base, "old-state.db"), filepath.Join(dir, "state.db"))
	boltPut(t, dir, "meta", []byte("applied"), applied)

	r, err = open()
	if err == nil {
		defer r.Close()
		acc, _ := r.Lookup(recID(1))
		t.Fatalf("an old state.db claiming index %d started; guesses used %d, want 5", binary.BigEndian.Uint64(applied), acc.GuessesUsed)
	}
	if !errors.Is(err, vaultstate.ErrStateTampered) {
		t.Fatalf("old state with the current index: %v, want ErrStateTampered", err)
	}
}
