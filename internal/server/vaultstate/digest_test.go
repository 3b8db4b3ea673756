package vaultstate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// checkAccumulator compares the machine's incrementally kept accumulator
// with one computed from scratch over what is applied.
func checkAccumulator(t testing.TB, m *Machine) {
	t.Helper()
	m.mu.RLock()
	defer m.mu.RUnlock()
	meta, _ := m.status()
	var full [DigestSize]byte
	if err := m.view(func(tx *bbolt.Tx) error {
		var err error
		full, _, err = m.dig.accumulate(tx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if full != meta.acc {
		t.Fatalf("at index %d the kept accumulator %x differs from the recomputed %x", meta.index, meta.acc[:8], full[:8])
	}
	if !meta.digest.IsZero() && meta.digest != m.dig.tag(&meta) {
		t.Fatalf("at index %d the digest does not match the accumulator", meta.index)
	}
}

// TestDigestFollowsEveryChange: random commands (replays, time jumps that
// prune the replay window, member commands, destroyed records) applied in
// random batches, with and without group commit: after every batch the
// accumulator kept per put/delete equals one recomputed over the state, and
// a reopen (which recomputes it over the file) succeeds.
func TestDigestFollowsEveryChange(t *testing.T) {
	for _, opts := range []Options{
		{NoSync: true, DigestKey: testDigestKey},
		{NoSync: true, DigestKey: testDigestKey, CommitInterval: time.Hour, CommitEntries: 5},
	} {
		h := newHarness(t)
		path := filepath.Join(h.dir, "d.db")
		m, err := Open(path, opts)
		if err != nil {
			t.Fatal(err)
		}
		h.m = m
		g := newGen(h, 77)
		rng := rand.New(rand.NewPCG(5, 6))
		for round := range 60 {
			var batch []Entry
			for range 1 + rng.IntN(12) {
				var c Command
				if rng.IntN(10) == 0 {
					c = h.cmd(&SetMember{ID: []string{"r1", "r2", "r3"}[rng.IntN(3)], URL: "https://x:" + string(rune('1'+rng.IntN(9)))})
					c.RecordID = RecordID{}
				} else if rng.IntN(15) == 0 {
					c = h.cmd(&ForgetMember{ID: []string{"r1", "r2", "r3"}[rng.IntN(3)]})
					c.RecordID = RecordID{}
				} else {
					c = g.next()
				}
				data, err := c.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				h.index++
				batch = append(batch, Entry{Index: h.index, Term: 1, Data: data})
			}
			for i, r := range m.ApplyBatch(batch) {
				if i < len(batch) {
					var c Command
					c.UnmarshalBinary(batch[i].Data)
					if !isMemberOp(c.Op) {
						g.observe(c, r)
					}
				}
			}
			checkAccumulator(t, m)
			if round%20 == 19 {
				if err := m.Close(); err != nil {
					t.Fatal(err)
				}
				if m, err = Open(path, opts); err != nil {
					t.Fatalf("reopen after %d entries: %v", h.index, err)
				}
				h.m = m
				g.h = h
			}
		}
		m.Close()
	}
}

// spliceFile writes bucket/key in a closed state file, as the holder of
// the disk can.
func spliceFile(t testing.TB, path string, fn func(tx *bbolt.Tx) error) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// TestDigestRefusesEditedFiles: every way of changing a closed state file
// without the key is refused at Open with ErrStateTampered; the same edits
// without a digest key open (an unsealed disk has no integrity against its
// holder).
func TestDigestRefusesEditedFiles(t *testing.T) {
	opts := Options{NoSync: true, DigestKey: testDigestKey, Sealer: keySealer{}}
	// build makes a file: a record registered, one guess (value old), then
	// more guesses; it returns the path and the old value.
	build := func(t *testing.T) (string, []byte) {
		h := newHarness(t)
		path := filepath.Join(h.dir, "s.db")
		m, err := Open(path, opts)
		if err != nil {
			t.Fatal(err)
		}
		h.m = m
		h.register(1, Auth{})
		h.loginStart(1)
		var old []byte
		m.view(func(tx *bbolt.Tx) error {
			old = bytes.Clone(tx.Bucket(bucketRecords).Get(h.rec[:]))
			return nil
		})
		h.loginStart(2)
		h.loginStart(3)
		want[*MemberResult](t, h.doMember(&SetMember{ID: "r1", URL: "https://a:1"}))
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		return path, old
	}
	rec := RecordID{0xAA}
	edits := map[string]func(t *testing.T, old []byte) func(tx *bbolt.Tx) error{
		"old record value": func(_ *testing.T, old []byte) func(tx *bbolt.Tx) error {
			return func(tx *bbolt.Tx) error { return tx.Bucket(bucketRecords).Put(rec[:], old) }
		},
		"record deleted": func(*testing.T, []byte) func(tx *bbolt.Tx) error {
			return func(tx *bbolt.Tx) error { return tx.Bucket(bucketRecords).Delete(rec[:]) }
		},
		"member deleted": func(*testing.T, []byte) func(tx *bbolt.Tx) error {
			return func(tx *bbolt.Tx) error { return tx.Bucket(bucketMembers).Delete([]byte("r1")) }
		},
		"replay set emptied": func(*testing.T, []byte) func(tx *bbolt.Tx) error {
			return func(tx *bbolt.Tx) error {
				tx.DeleteBucket(bucketReplay)
				_, err := tx.CreateBucket(bucketReplay)
				return err
			}
		},
		"applied index moved": func(*testing.T, []byte) func(tx *bbolt.Tx) error {
			return func(tx *bbolt.Tx) error {
				v := bytes.Clone(tx.Bucket(bucketMeta).Get(metaApplied))
				binary.BigEndian.PutUint64(v, binary.BigEndian.Uint64(v)+10)
				return tx.Bucket(bucketMeta).Put(metaApplied, v)
			}
		},
		"newest time moved": func(*testing.T, []byte) func(tx *bbolt.Tx) error {
			return func(tx *bbolt.Tx) error {
				return tx.Bucket(bucketMeta).Put(metaNewest, binary.BigEndian.AppendUint64(nil, 1))
			}
		},
		"digest removed": func(*testing.T, []byte) func(tx *bbolt.Tx) error {
			return func(tx *bbolt.Tx) error { return tx.Bucket(bucketMeta).Delete(metaDigest) }
		},
		"extra bucket": func(*testing.T, []byte) func(tx *bbolt.Tx) error {
			return func(tx *bbolt.Tx) error {
				b, err := tx.CreateBucket([]byte("extra"))
				if err != nil {
					return err
				}
				return b.Put([]byte("k"), []byte("v"))
			}
		},
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			path, old := build(t)
			spliceFile(t, path, edit(t, old))
			m, err := Open(path, opts)
			if err == nil {
				m.Close()
				t.Fatal("an edited state file opened")
			}
			if !errors.Is(err, ErrStateTampered) {
				t.Fatalf("got %v, want ErrStateTampered", err)
			}
			// Without a key: nothing to check against.
			o := opts
			o.DigestKey = nil
			if m, err := Open(path, o); err != nil {
				t.Fatalf("without a digest key: %v", err)
			} else {
				m.Close()
			}
		})
	}
	// Unedited: opens, with another key it does not.
	path, _ := build(t)
	m, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	o := opts
	o.DigestKey = bytes.Repeat([]byte{1}, 32)
	if _, err := Open(path, o); !errors.Is(err, ErrStateTampered) {
		t.Fatalf("another digest key: %v", err)
	}
	// A new file with records spliced in before it applied anything.
	fresh := filepath.Join(t.TempDir(), "fresh.db")
	m, err = Open(fresh, opts)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	spliceFile(t, fresh, func(tx *bbolt.Tx) error { return tx.Bucket(bucketRecords).Put(rec[:], []byte("x")) })
	if _, err := Open(fresh, opts); !errors.Is(err, ErrStateTampered) {
		t.Fatalf("records in a file that applied nothing: %v", err)
	}
}

// TestDigestSnapshots: a snapshot carries its digest and restores into a
// machine with the same key; one whose digest does not match is a bad
// snapshot and leaves the state alone; one written without a digest (an
// older Coffer, or no key) adopts one, as its stream is authenticated on
// its way in.
func TestDigestSnapshots(t *testing.T) {
	h := newHarness(t)
	g := newGen(h, 9)
	for range 200 {
		c := g.next()
		g.observe(c, h.applyCmd(c))
	}
	good := snapshotBytes(t, h.m)
	_, _, digest := h.m.CommittedDigest()
	if digest.IsZero() {
		t.Fatal("no digest")
	}

	target := newHarness(t)
	target.register(2, Auth{})
	if err := target.m.Restore(bytes.NewReader(good)); err != nil {
		t.Fatal(err)
	}
	if _, _, d := target.m.CommittedDigest(); d != digest {
		t.Fatal("restored digest differs")
	}
	checkAccumulator(t, target.m)

	// A (version 1) snapshot whose file was edited (and re-checksummed)
	// is refused.
	v1 := snapshotBytesV1(t, h.m)
	body := v1[len(snapshotMagic)+8 : len(v1)-32]
	tmp := filepath.Join(t.TempDir(), "edited.db")
	if err := os.WriteFile(tmp, body, 0o600); err != nil {
		t.Fatal(err)
	}
	spliceFile(t, tmp, func(tx *bbolt.Tx) error { return tx.Bucket(bucketRecords).Put(RecordID{0xEE}.bytes(), []byte("v")) })
	eb, err := os.ReadFile(tmp)
	if err != nil {
		t.Fatal(err)
	}
	edited := fakeSnapshot(eb)
	before := dump(t, target.m)
	if err := target.m.Restore(bytes.NewReader(edited)); !errors.Is(err, ErrBadSnapshot) || !errors.Is(err, ErrStateTampered) {
		t.Fatalf("edited snapshot: %v", err)
	}
	if d := diffDumps(before, dump(t, target.m)); d != "" {
		t.Fatalf("refused restore changed state:\n%s", d)
	}

	// Without a digest: adopted.
	plain, err := Open(filepath.Join(t.TempDir(), "plain.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	ph := &harness{t: t, m: plain, now: t0, rec: RecordID{0xAA}}
	ph.register(3, Auth{})
	if err := target.m.Restore(bytes.NewReader(snapshotBytes(t, plain))); err != nil {
		t.Fatal(err)
	}
	if _, _, d := target.m.CommittedDigest(); d.IsZero() {
		t.Fatal("no digest adopted")
	}
	checkAccumulator(t, target.m)
	path := filepath.Join(target.dir, "state.db")
	target.m.Close()
	m, err := Open(path, harnessOptions)
	if err != nil {
		t.Fatalf("reopen after adopting: %v", err)
	}
	m.Close()
}

func (id RecordID) bytes() []byte { return id[:] }
