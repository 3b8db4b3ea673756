package replica

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/server/sealing"
)

// TestDataKey: an empty directory gets a new random data key wrapped by
// the replica's key-encryption key; the next start finds the same key; a
// directory sealed before per-replica keys (sealing.json, no data.key) is
// legacy; another replica's KEK is refused; so is a directory of unsealed
// data.
func TestDataKey(t *testing.T) {
	kek, other, legacy := newKeyFile(t), newKeyFile(t), newKeyFile(t)
	dir := filepath.Join(t.TempDir(), "data")
	k1, st, err := DataKey(dir, kek, legacy)
	if err != nil || st != DataKeyCreated {
		t.Fatalf("empty directory: %v %v", st, err)
	}
	if keyID(k1) == keyID(kek) || keyID(k1) == keyID(legacy) {
		t.Fatal("the data key is the KEK or the legacy key")
	}
	if fi, err := os.Stat(filepath.Join(dir, DataKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v", DataKeyFile, fi, err)
	}
	k2, st, err := DataKey(dir, kek, legacy)
	if err != nil || st != DataKeyOwn || keyID(k2) != keyID(k1) {
		t.Fatalf("second start: %v %v", st, err)
	}
	if _, _, err := DataKey(dir, other, legacy); !errors.Is(err, sealing.ErrAuthentication) {
		t.Fatalf("another replica's KEK: %v", err)
	}
	// Two directories, one KEK: two keys.
	k3, _, err := DataKey(filepath.Join(t.TempDir(), "d2"), kek, legacy)
	if err != nil || keyID(k3) == keyID(k1) {
		t.Fatalf("a second directory: %v (same key: %v)", err, keyID(k3) == keyID(k1))
	}

	// Legacy: sealed by the fleet key, no data.key.
	ldir := t.TempDir()
	cfg := fastConfig(t, "l", ldir, nil)
	cfg.SealingKey, cfg.Bootstrap = legacy, true
	r, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, r)
	register(t, r, recID(1), 1)
	r.Close()
	k, st, err := DataKey(ldir, kek, legacy)
	if err != nil || st != DataKeyLegacy || keyID(k) != keyID(legacy) {
		t.Fatalf("legacy directory: %v %v", st, err)
	}
	if _, _, err := DataKey(ldir, kek, nil); err == nil || !strings.Contains(err.Error(), "fleet's storage key") {
		t.Fatalf("legacy directory without the legacy key: %v", err)
	}
	// A per-replica directory whose data.key was lost is not taken for legacy.
	os.Remove(filepath.Join(dir, DataKeyFile))
	os.WriteFile(filepath.Join(dir, "state.db"), []byte("x"), 0o600)
	if _, _, err := DataKey(dir, kek, legacy); err == nil {
		t.Fatal("a directory with data and no data.key or sealing.json was given a new key")
	}

	// Unsealed data.
	udir := t.TempDir()
	os.WriteFile(filepath.Join(udir, "state.db"), []byte("x"), 0o600)
	if _, _, err := DataKey(udir, kek, legacy); err == nil || !strings.Contains(err.Error(), "without sealing") {
		t.Fatalf("unsealed data: %v", err)
	}
}

// TestSealingCheckNamesKeyID: sealing.json records the key id; a
// directory opened with another key is told from a damaged check.
func TestSealingCheckNamesKeyID(t *testing.T) {
	kek := newKeyFile(t)
	dir := t.TempDir()
	key, _, err := DataKey(dir, kek, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fastConfig(t, "s", dir, nil)
	cfg.SealingKey, cfg.Bootstrap = key, true
	r, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	data, _ := os.ReadFile(filepath.Join(dir, sealingCheckFile))
	if !strings.Contains(string(data), `"key_id": "`+keyID(key)+`"`) {
		t.Fatalf("%s does not name the key id:\n%s", sealingCheckFile, data)
	}
	cfg.SealingKey = newKeyFile(t)
	if _, err := Open(cfg); err == nil || !strings.Contains(err.Error(), "wrong key") || !errors.Is(err, sealing.ErrAuthentication) {
		t.Fatalf("another key: %v", err)
	}
	// Damage: the right key id, a check that does not open.
	os.WriteFile(filepath.Join(dir, sealingCheckFile), []byte(strings.Replace(string(data), `"check": "`, `"check": "AAAA`, 1)), 0o600)
	cfg.SealingKey = key
	if _, err := Open(cfg); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damaged check: %v", err)
	}
}

// TestPerReplicaKeysSnapshotInstall: three replicas, each sealing under
// its own data key (DataKey with its own key file). One is away while the
// leader compacts its log, and catches up through InstallSnapshot: it
// ends with the leader's state (StateHash), its disk opens under its own
// key and under no other replica's (Inspect), and it restarts on it.
func TestPerReplicaKeysSnapshotInstall(t *testing.T) {
	keys := map[string]sealing.Key{}
	rs, cfgs := cluster(t, 3, func(c *Config) {
		k, _, err := DataKey(c.Dir, newKeyFile(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		keys[c.ID] = k
		c.SealingKey = k
		c.SnapshotThreshold = 16
		c.SnapshotInterval = 50 * time.Millisecond
		c.TrailingLogs = 4
		c.WALSegmentSize = 2048
	})
	leader := leaderOf(t, rs)
	for i := range 5 {
		epoch := register(t, leader, recID(byte(10+i)), byte(10+i))
		loginStart(t, leader, recID(byte(10+i)), epoch, 1)
	}
	back, gone := rejoinFromSnapshot(t, rs, cfgs, leader, (*Replica).Close)
	sameState := func(a, b *Replica) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			ia, ha, err := a.StateHash()
			if err != nil {
				t.Fatal(err)
			}
			ib, hb, err := b.StateHash()
			if err != nil {
				t.Fatal(err)
			}
			if ia == ib && ha == hb {
				return
			}
			if ia == ib || time.Now().After(deadline) {
				t.Fatalf("state hash at %d: %x, at %d: %x", ia, ha[:8], ib, hb[:8])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	sameState(back, leader)
	_, _, dl := leader.machine.CommittedDigest()
	_, _, db := back.machine.CommittedDigest()
	if dl == db {
		t.Fatal("the keyed digests agree across keys: they should be per replica")
	}

	// More entries after the install, then the disk: own key only.
	epoch := register(t, leader, recID(40), 40)
	loginStart(t, leader, recID(40), epoch, 2)
	waitApplied(t, back, leader)
	if err := back.Snapshot(); err != nil {
		t.Fatal(err)
	}
	id := cfgs[gone].ID
	if err := back.Close(); err != nil {
		t.Fatal(err)
	}
	rs[gone] = nil
	stolen := t.TempDir()
	if err := os.CopyFS(stolen, os.DirFS(cfgs[gone].Dir)); err != nil {
		t.Fatal(err)
	}
	if own := Inspect(stolen, keys[id]); own.CheckErr != nil || own.ValuesOpened != own.Values || own.Values < 6 ||
		own.LogOpened != own.LogEntries || own.SnapshotsOpened != own.Snapshots || own.Snapshots < 1 {
		t.Fatalf("own key: %v", own)
	}
	for other, k := range keys {
		if other == id {
			continue
		}
		if rep := Inspect(stolen, k); rep.Opened() || !errors.Is(rep.CheckErr, sealing.ErrAuthentication) ||
			!errors.Is(rep.ValuesErr, sealing.ErrAuthentication) || !errors.Is(rep.SnapshotsErr, sealing.ErrAuthentication) {
			t.Fatalf("replica %s's key on %s's disk: %v", other, id, rep)
		}
	}

	// Restart on it.
	again, err := Open(cfgs[gone])
	if err != nil {
		t.Fatalf("restart after the install: %v", err)
	}
	rs[gone] = again
	acc, err := again.Lookup(recID(40))
	if err != nil || acc.GuessesUsed != 1 {
		t.Fatalf("after restart: %+v %v", acc, err)
	}
	epoch = register(t, leaderOf(t, rs), recID(41), 41)
	loginStart(t, leaderOf(t, rs), recID(41), epoch, 3)
	waitApplied(t, again, leaderOf(t, rs))
	sameState(again, leaderOf(t, rs))
}

// waitApplied waits until r has applied what leader committed.
func waitApplied(t *testing.T, r, leader *Replica) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.Stats().FSMIndex < leader.Stats().CommitIndex {
		if time.Now().After(deadline) {
			t.Fatalf("%s applied %d of %d", r.ID(), r.Stats().FSMIndex, leader.Stats().CommitIndex)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
