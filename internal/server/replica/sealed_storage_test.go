package replica

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cofferhq/coffer/internal/server/sealing"
	"github.com/cofferhq/coffer/internal/server/sealing/keyfile"
	"github.com/cofferhq/coffer/internal/server/vaultstate"
)

func newKeyFile(t testing.TB) sealing.Key {
	t.Helper()
	k, err := keyfile.Create(filepath.Join(t.TempDir(), "sealing.key"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// secretSet is what must never be readable on a sealed replica's disk.
type secretSet struct {
	ids     []vaultstate.RecordID
	records []vaultstate.Record
	macs    [][]byte
}

// all returns every secret byte string with a name; record ids are listed
// separately (they may appear as bbolt keys in state.db).
func (s *secretSet) all() map[string][]byte {
	out := map[string][]byte{}
	for i, r := range s.records {
		out["opaque record "+string(rune('0'+i))] = r.Opaque
		out["wrapped key "+string(rune('0'+i))] = r.WrappedKey
		out["proof hash "+string(rune('0'+i))] = r.ProofHash[:]
	}
	for i, m := range s.macs {
		out["MAC hash "+string(rune('0'+i))] = m
	}
	return out
}

// fillReplica registers three records with random contents, counts
// guesses, snapshots, and registers one more after the snapshot (so it is
// only in the log and state.db).
func fillReplica(t *testing.T, r *Replica) *secretSet {
	t.Helper()
	s := &secretSet{}
	reg := func() {
		var id vaultstate.RecordID
		rand.Read(id[:])
		rec := vaultstate.Record{
			Opaque:     randBytes(192),
			KSF:        vaultstate.KSFParams{Time: 1, MemoryKiB: 19456, Threads: 1},
			WrappedKey: randBytes(60),
			ProofHash:  vaultstate.HashKeyProof(randBytes(32)),
		}
		chk := mustApply[*vaultstate.RegisterCheckResult](t, r, command(id, &vaultstate.RegisterCheck{}))
		reg := mustApply[*vaultstate.RegisterResult](t, r, command(id, &vaultstate.Register{Epoch: chk.Epoch, GuessLimit: testGuessLimit, Record: rec}))
		mac := randBytes(64)
		mustApply[*vaultstate.LoginStartResult](t, r, command(id, &vaultstate.LoginStart{Epoch: reg.Epoch, LoginID: vaultstate.LoginID{1}, MACHash: vaultstate.HashMAC(mac)}))
		// The state keeps only the MAC's hash (the MAC never leaves the
		// leader); sealing must hide that too.
		h := vaultstate.HashMAC(mac)
		s.ids, s.records, s.macs = append(s.ids, id), append(s.records, rec), append(s.macs, h[:])
	}
	for range 3 {
		reg()
	}
	if err := r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	reg()
	return s
}

// findLeaks reads every file under dir and reports which secrets (any 16
// consecutive bytes of one) appear in which file. Record ids may appear in
// state.db only (they are its bbolt keys).
func findLeaks(t *testing.T, dir string, s *secretSet) []string {
	t.Helper()
	var leaks []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		check := func(name string, secret []byte) {
			for i := 0; i+16 <= len(secret); i += 4 {
				if bytes.Contains(data, secret[i:i+16]) {
					leaks = append(leaks, name+" in "+rel)
					return
				}
			}
		}
		for name, secret := range s.all() {
			check(name, secret)
		}
		if rel != "state.db" {
			for i, id := range s.ids {
				check("record id "+string(rune('0'+i)), id[:])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return leaks
}

// A replica's directory holds no record, wrapped key, MAC or proof hash
// when sealed, and no record id outside state.db's keys; the same run
// without sealing shows the scan finds them.
func TestSealedDirectoryHoldsNoSecrets(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		logger, _ := testLogger(t)
		dir := t.TempDir()
		cfg := fastConfig(t, "solo", dir, logger)
		cfg.Bootstrap = true
		if sealed {
			cfg.SealingKey = newKeyFile(t)
		}
		r, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		waitLeader(t, r)
		s := fillReplica(t, r)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		leaks := findLeaks(t, dir, s)
		if !sealed {
			// The control: everything is in the clear somewhere.
			joined := strings.Join(leaks, "\n")
			for _, want := range []string{"opaque record 0 in raft/", "wrapped key 3 in state.db", "MAC hash 1 in snapshots/", "record id 2 in raft/"} {
				if !strings.Contains(joined, want) {
					t.Fatalf("unsealed control run: scan did not find %q; found:\n%s", want, joined)
				}
			}
			continue
		}
		if len(leaks) > 0 {
			t.Fatalf("sealed replica leaks:\n%s", strings.Join(leaks, "\n"))
		}
		for _, f := range []string{"state.db", sealingCheckFile} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A copied data directory does not open with another key or without one;
// with the right key it does, and the guess counts carry on.
func TestSealedDirectoryNeedsItsKey(t *testing.T) {
	logger, _ := testLogger(t)
	dir := t.TempDir()
	key := newKeyFile(t)
	cfg := fastConfig(t, "solo", dir, logger)
	cfg.Bootstrap = true
	cfg.SealingKey = key
	r, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, r)
	s := fillReplica(t, r)
	r.Close()

	copied := filepath.Join(t.TempDir(), "copy")
	copyDir(t, dir, copied)
	c := cfg
	c.Dir = copied
	c.SealingKey = newKeyFile(t)
	if r, err := Open(c); err == nil {
		r.Close()
		t.Fatal("a copied directory opened with another key file")
	} else if !strings.Contains(err.Error(), "does not open with key file") || !errors.Is(err, sealing.ErrAuthentication) {
		t.Fatalf("wrong key: %v", err)
	} else {
		t.Logf("wrong key: %v", err)
	}
	c.SealingKey = nil
	if r, err := Open(c); err == nil {
		r.Close()
		t.Fatal("a sealed directory opened without a key")
	} else if !strings.Contains(err.Error(), "is sealed") {
		t.Fatalf("no key: %v", err)
	}
	// Without sealing.json, the stores themselves refuse the wrong key.
	if err := os.Remove(filepath.Join(copied, sealingCheckFile)); err != nil {
		t.Fatal(err)
	}
	c.SealingKey = newKeyFile(t)
	if r, err := Open(c); err == nil {
		r.Close()
		t.Fatal("opened without the check file")
	}

	// The original directory with its key: everything is there.
	r, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	waitLeader(t, r)
	for i, id := range s.ids {
		acc, err := r.Lookup(id)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(acc.Record.Opaque, s.records[i].Opaque) || !bytes.Equal(acc.Record.WrappedKey, s.records[i].WrappedKey) || acc.GuessesUsed != 1 {
			t.Fatalf("record %d after restart: %+v", i, acc)
		}
	}
	got := mustApply[*vaultstate.LoginStartResult](t, r, command(s.ids[0], &vaultstate.LoginStart{Epoch: 1, LoginID: vaultstate.LoginID{2}, MACHash: vaultstate.HashMAC(randBytes(64))}))
	if got.GuessesUsed != 2 {
		t.Fatalf("guess after restart: %+v", got)
	}
}

// Sealing cannot be switched on for a directory written without it.
func TestSealingRefusesUnsealedData(t *testing.T) {
	logger, _ := testLogger(t)
	dir := t.TempDir()
	cfg := fastConfig(t, "solo", dir, logger)
	cfg.Bootstrap = true
	r, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, r)
	register(t, r, recID(1), 1)
	r.Close()
	cfg.SealingKey = newKeyFile(t)
	if r, err := Open(cfg); err == nil {
		r.Close()
		t.Fatal("sealed an unsealed directory in place")
	} else if !strings.Contains(err.Error(), "without sealing") {
		t.Fatalf("error: %v", err)
	}
}

// state.db lost: Raft restores the sealed snapshot (its plaintext size in
// the metadata) and replays the sealed log.
func TestSealedRestoreFromSnapshot(t *testing.T) {
	logger, _ := testLogger(t)
	dir := t.TempDir()
	cfg := fastConfig(t, "solo", dir, logger)
	cfg.Bootstrap = true
	cfg.SealingKey = newKeyFile(t)
	r, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, r)
	s := fillReplica(t, r)
	r.Close()
	if err := os.Remove(filepath.Join(dir, "state.db")); err != nil {
		t.Fatal(err)
	}
	r, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	waitLeader(t, r)
	if err := r.Barrier(ctxWait(t)); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Restores != 1 {
		t.Fatalf("stats %+v: want one snapshot restore", st)
	}
	for i, id := range s.ids {
		acc, err := r.Lookup(id)
		if err != nil || !bytes.Equal(acc.Record.WrappedKey, s.records[i].WrappedKey) {
			t.Fatalf("record %d: %v %v", i, acc, err)
		}
	}
}

// A sealed fleet sharing one data key: a returning replica catches up by
// snapshot install (plaintext over the transport, sealed again by the
// receiver).
func TestSealedClusterSnapshotInstall(t *testing.T) {
	key := newKeyFile(t)
	rs, cfgs := cluster(t, 3, func(c *Config) {
		c.SealingKey = key
		c.SnapshotThreshold = 16
		c.SnapshotInterval = 50 * time.Millisecond
		c.TrailingLogs = 4
		c.WALSegmentSize = 2048
	})
	leader := leaderOf(t, rs)
	rec := recID(7)
	epoch := register(t, leader, rec, 7)
	loginStart(t, leader, rec, epoch, 1)
	back, _ := rejoinFromSnapshot(t, rs, cfgs, leader, (*Replica).shutdown)
	acc, err := back.Lookup(rec)
	if err != nil || acc.GuessesUsed != 1 || !bytes.Equal(acc.Record.Opaque, record(7).Opaque) {
		t.Fatalf("returning replica: %v %v", acc, err)
	}
}

func TestSealedLogStore(t *testing.T) {
	inner := raft.NewInmemStore()
	k := newKeyFile(t)
	ls, stable, _ := sealedStores(k, inner, nil)
	logs := []*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("register record 1")},
		{Index: 2, Term: 1, Type: raft.LogCommand, Data: []byte("login start"), Extensions: []byte("ext")},
		{Index: 3, Term: 2, Type: raft.LogNoop},
	}
	if err := ls.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if string(logs[0].Data) != "register record 1" {
		t.Fatal("StoreLogs changed the caller's entry")
	}
	for _, want := range logs {
		var raw, got raft.Log
		inner.GetLog(want.Index, &raw)
		if bytes.Contains(raw.Data, want.Data) && len(want.Data) > 0 {
			t.Fatalf("entry %d stored in the clear", want.Index)
		}
		if err := ls.GetLog(want.Index, &got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.Extensions, want.Extensions) || got.Term != want.Term {
			t.Fatalf("entry %d: %+v", want.Index, got)
		}
	}
	// An entry's sealed data moved to another index, or its term edited,
	// does not open.
	var e1, e2 raft.Log
	inner.GetLog(1, &e1)
	inner.GetLog(2, &e2)
	e2.Data = e1.Data
	inner.StoreLog(&e2)
	if err := ls.GetLog(2, &raft.Log{}); !errors.Is(err, sealing.ErrAuthentication) {
		t.Fatalf("moved entry: %v", err)
	}
	e1.Term = 5
	inner.StoreLog(&e1)
	if err := ls.GetLog(1, &raft.Log{}); !errors.Is(err, sealing.ErrAuthentication) {
		t.Fatalf("edited term: %v", err)
	}
	if m, ok := ls.(raft.MonotonicLogStore); !ok || m.IsMonotonic() {
		t.Fatal("IsMonotonic must pass the inner store's answer on (InmemStore: false)")
	}

	// Stable store.
	if err := stable.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if v, err := stable.GetUint64([]byte("CurrentTerm")); err != nil || v != 7 {
		t.Fatal(v, err)
	}
	raw, _ := inner.Get([]byte("CurrentTerm"))
	if len(raw) <= 8 {
		t.Fatal("stable value not sealed")
	}
	stable.Set([]byte("LastVoteCand"), []byte("replica-b"))
	if v, err := stable.Get([]byte("LastVoteCand")); err != nil || string(v) != "replica-b" {
		t.Fatal(string(v), err)
	}
	// A value moved to another key does not open.
	inner.Set([]byte("LastVoteTerm"), raw)
	if _, err := stable.GetUint64([]byte("LastVoteTerm")); !errors.Is(err, sealing.ErrAuthentication) {
		t.Fatalf("moved stable value: %v", err)
	}
	if v, err := stable.GetUint64([]byte("missing")); err != nil || v != 0 {
		t.Fatalf("missing key: %v %v", v, err)
	}
}

// lyingSnapshotStore reports another index for every snapshot: a sealed
// snapshot file moved under another snapshot's metadata.
type lyingSnapshotStore struct{ raft.SnapshotStore }

func (l lyingSnapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	m, rc, err := l.SnapshotStore.Open(id)
	if m != nil {
		m.Index++
	}
	return m, rc, err
}

func TestSealedSnapshotStore(t *testing.T) {
	logger, _ := testLogger(t)
	snapDir := t.TempDir()
	fss, err := raft.NewFileSnapshotStoreWithLogger(snapDir, 2, newHclog(logger, "snap"))
	if err != nil {
		t.Fatal(err)
	}
	k := newKeyFile(t)
	_, _, ss := sealedStores(k, raft.NewInmemStore(), fss)
	plain := bytes.Repeat([]byte("snapshot bytes "), 10000)
	sink, err := ss.Create(raft.SnapshotVersionMax, 10, 3, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	sink.Write(plain)
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	metas, _ := fss.List()
	raw, err := os.ReadFile(filepath.Join(snapDir, "snapshots", metas[0].ID, "state.bin"))
	if err != nil || bytes.Contains(raw, []byte("snapshot bytes")) || int64(len(raw)) != metas[0].Size {
		t.Fatalf("stored snapshot: %d bytes, %v", len(raw), err)
	}
	meta, rc, err := ss.Open(sink.ID())
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("read back: %v", err)
	}
	if meta.Size != int64(len(plain)) || metas[0].Size <= meta.Size {
		t.Fatalf("sizes: opened %d, stored %d, plaintext %d", meta.Size, metas[0].Size, len(plain))
	}
	_, _, lying := sealedStores(k, raft.NewInmemStore(), lyingSnapshotStore{fss})
	if _, _, err := lying.Open(sink.ID()); !errors.Is(err, sealing.ErrAuthentication) {
		t.Fatalf("snapshot under another index: %v", err)
	}
	_, _, other := sealedStores(newKeyFile(t), raft.NewInmemStore(), fss)
	if _, _, err := other.Open(sink.ID()); !errors.Is(err, sealing.ErrAuthentication) {
		t.Fatalf("other key: %v", err)
	}
}

// The state machine's bbolt file with StateSealer: no record bytes, no
// wrapped key, no MAC; values bound to their record id.
func TestStateSealerBoltFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	k := newKeyFile(t)
	m, err := vaultstate.Open(path, vaultstate.Options{Sealer: StateSealer(k)})
	if err != nil {
		t.Fatal(err)
	}
	var id vaultstate.RecordID
	rand.Read(id[:])
	rec := vaultstate.Record{Opaque: randBytes(192), KSF: vaultstate.KSFParams{Time: 1, MemoryKiB: 1024, Threads: 1}, WrappedKey: randBytes(60), ProofHash: vaultstate.HashKeyProof(randBytes(32))}
	apply := func(i uint64, op vaultstate.Op) vaultstate.Result {
		data, err := command(id, op).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return m.Apply(vaultstate.Entry{Index: i, Term: 1, Data: data})
	}
	apply(1, &vaultstate.RegisterCheck{})
	if res, ok := apply(2, &vaultstate.Register{Epoch: 1, GuessLimit: 10, Record: rec}).(*vaultstate.RegisterResult); !ok {
		t.Fatalf("register: %v", res)
	}
	acc, err := m.Account(id)
	if err != nil || !bytes.Equal(acc.Record.WrappedKey, rec.WrappedKey) {
		t.Fatal(acc, err)
	}
	m.Close()
	data, _ := os.ReadFile(path)
	for name, s := range map[string][]byte{"record": rec.Opaque, "wrapped key": rec.WrappedKey, "proof hash": rec.ProofHash[:]} {
		for i := 0; i+16 <= len(s); i += 4 {
			if bytes.Contains(data, s[i:i+16]) {
				t.Fatalf("%s in state.db", name)
			}
		}
	}
	// Another key cannot read it; the machine reports it.
	m, err = vaultstate.Open(path, vaultstate.Options{Sealer: StateSealer(newKeyFile(t))})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Account(id); !errors.Is(err, sealing.ErrAuthentication) {
		t.Fatalf("other key: %v", err)
	}
}

// rejoinFromSnapshot stops a follower with stop, lets the leader move on
// and compact its log, reopens the follower and waits until it has caught
// up by installing the leader's snapshot; it returns the reopened replica
// (also in rs) and its place.
func rejoinFromSnapshot(t *testing.T, rs []*Replica, cfgs []Config, leader *Replica, stop func(*Replica) error) (*Replica, int) {
	t.Helper()
	gone := -1
	for i, r := range rs {
		if r != leader {
			gone = i
			break
		}
	}
	if err := stop(rs[gone]); err != nil {
		t.Fatal(err)
	}
	rs[gone] = nil
	advanceAndSnapshot(t, leader)
	back, err := Open(cfgs[gone])
	if err != nil {
		t.Fatal(err)
	}
	rs[gone] = back
	waitSnapshotCatchUp(t, back, leader)
	return back, gone
}
