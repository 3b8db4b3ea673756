package serve

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/logcapture"

	"github.com/cofferhq/coffer/internal/server/ceremony"
	"github.com/cofferhq/coffer/internal/server/replica"
	"github.com/cofferhq/coffer/internal/server/sealing"
	"github.com/cofferhq/coffer/internal/server/sealing/keyfile"
	"github.com/cofferhq/coffer/internal/server/vault"
	"github.com/cofferhq/coffer/internal/server/vaultstate"
)

// sealedNode is one replica of a test fleet as an operator sets it up: its
// own sealing key file, the fleet secrets sealed under it, its own data
// directory.
type sealedNode struct {
	cfg     *Config
	keyPath string
	r       *Replica
	log     logcapture.Buffer // what Open and the replica logged
}

// sealedFleet configures n replicas of one fleet (the ceremony in a
// temporary directory), each with its own key file; none is started.
func sealedFleet(t *testing.T, n int) (string, []*sealedNode) {
	t.Helper()
	dir := fleetDir(t)
	plain, err := vault.LoadSecrets(filepath.Join(dir, ceremony.SecretsFile))
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*sealedNode
	var peers []Peer
	for i := range n {
		id := "r" + string(rune('1'+i))
		base := t.TempDir()
		keyPath := filepath.Join(base, "sealing.key")
		kek, err := keyfile.Create(keyPath)
		if err != nil {
			t.Fatal(err)
		}
		sealed := filepath.Join(base, "secrets.sealed")
		if err := plain.SaveSealed(sealed, kek); err != nil {
			t.Fatal(err)
		}
		c := withTokens(t, &Config{
			ID: id, Secrets: sealed, DataDir: filepath.Join(base, "data"),
			Listen: freeAddr(t), RaftBind: freeAddr(t), RaftTiming: &RaftTiming{
				Heartbeat: Duration{Duration: 200 * time.Millisecond}, Election: Duration{Duration: 200 * time.Millisecond},
				LeaderLease: Duration{Duration: 100 * time.Millisecond}, Commit: Duration{Duration: 5 * time.Millisecond},
			},
			Sealing: &Sealing{KeyFile: keyPath},
		})
		peers = append(peers, Peer{ID: id, Raft: c.RaftBind, URL: "http://" + c.Listen})
		nodes = append(nodes, &sealedNode{cfg: c, keyPath: keyPath})
	}
	for _, nd := range nodes {
		nd.cfg.Peers = peers
	}
	return dir, nodes
}

func (nd *sealedNode) start(t *testing.T) {
	t.Helper()
	spec, err := Open(nd.cfg, Env{Logger: slog.New(slog.NewTextHandler(&nd.log, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatalf("Open %s: %v", nd.cfg.ID, err)
	}
	if nd.r, err = Start(spec); err != nil {
		t.Fatalf("Start %s: %v", nd.cfg.ID, err)
	}
}

func (nd *sealedNode) stop(t *testing.T) {
	t.Helper()
	if nd.r == nil {
		return
	}
	if err := nd.r.Stop(context.Background()); err != nil {
		t.Errorf("Stop %s: %v", nd.cfg.ID, err)
	}
	nd.r = nil
}

// leaderOf waits for one of the running nodes to lead and returns it.
func leaderOf(t *testing.T, nodes ...*sealedNode) *replica.Replica {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, nd := range nodes {
			if nd.r != nil && nd.r.Replica().IsLeader() {
				return nd.r.Replica()
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no leader")
	return nil
}

var sealReq atomic.Uint64

func sealCmd(rec vaultstate.RecordID, op vaultstate.Op) vaultstate.Command {
	var id vaultstate.RequestID
	rand.Read(id[:8])
	binary.BigEndian.PutUint64(id[8:], sealReq.Add(1))
	return vaultstate.Command{RequestID: id, Time: time.Now().UnixMilli(), RecordID: rec, Op: op}
}

func applyOK[T vaultstate.Result](t *testing.T, r *replica.Replica, c vaultstate.Command) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := r.Apply(ctx, c)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	v, ok := res.(T)
	if !ok {
		t.Fatalf("apply: %T %+v", res, res)
	}
	return v
}

// registerSome registers n records with random contents and starts a
// login on each (a counted guess) through Raft on leader.
func registerSome(t *testing.T, leader *replica.Replica, n int) {
	t.Helper()
	for range n {
		var rec vaultstate.RecordID
		rand.Read(rec[:])
		opaque := make([]byte, 192)
		rand.Read(opaque)
		chk := applyOK[*vaultstate.RegisterCheckResult](t, leader, sealCmd(rec, &vaultstate.RegisterCheck{}))
		reg := applyOK[*vaultstate.RegisterResult](t, leader, sealCmd(rec, &vaultstate.Register{Epoch: chk.Epoch, GuessLimit: 10, Record: vaultstate.Record{
			Opaque: opaque, KSF: vaultstate.KSFParams{Time: 1, MemoryKiB: 19456, Threads: 1}, WrappedKey: bytes.Repeat([]byte{7}, 60),
			ProofHash: vaultstate.HashKeyProof(opaque[:32]),
		}}))
		applyOK[*vaultstate.LoginStartResult](t, leader, sealCmd(rec, &vaultstate.LoginStart{Epoch: reg.Epoch, LoginID: vaultstate.LoginID{1},
			MACHash: vaultstate.HashMAC(opaque[:64])}))
	}
}

// waitApplied waits until every running node's state machine has applied
// index.
func waitApplied(t *testing.T, index uint64, nodes ...*sealedNode) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for _, nd := range nodes {
		for nd.r.Replica().Stats().FSMIndex < index {
			if time.Now().After(deadline) {
				t.Fatalf("%s applied %d, want %d", nd.cfg.ID, nd.r.Replica().Stats().FSMIndex, index)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// copyDir copies a stopped replica's directory, as a thief copies a disk.
func copyDir(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "stolen")
	if err := os.CopyFS(out, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	return out
}

// attackerKeys are every storage key someone holding replica a's key file
// and its (sealed) fleet secrets can make, and its data directory: the
// fleet-derived storage key, the key file itself, and a's own data key if
// its directory has one (unwrapped with a's key file); and an attempt to
// unwrap victim's data key with a's key file.
func attackerKeys(t *testing.T, a *sealedNode, victimCopy string) map[string]sealing.Key {
	t.Helper()
	kek, err := keyfile.Load(a.keyPath)
	if err != nil {
		t.Fatal(err)
	}
	sec, err := vault.LoadSecretsSealed(a.cfg.Secrets, kek)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]sealing.Key{
		"fleet storage key (from A's secrets)": sec.StorageKey(),
		"A's key file":                         kek,
	}
	if k, err := sealing.LoadWrappedKey(kek, filepath.Join(a.cfg.DataDir, replica.DataKeyFile)); err == nil {
		keys["A's data key"] = k
	} else if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("A's own data key does not open with A's key file: %v", err)
	}
	if k, err := sealing.LoadWrappedKey(kek, filepath.Join(victimCopy, replica.DataKeyFile)); err == nil {
		keys["B's data key unwrapped with A's key file"] = k
	} else if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, sealing.ErrAuthentication) {
		t.Fatalf("unwrapping B's data key with A's key file: %v (want an authentication error)", err)
	}
	return keys
}

// TestAttackStolenDiskWithAnotherReplicasKey: two replicas of one fleet,
// each with its own sealing key file, hold records, Raft log entries and
// snapshots. An attacker takes replica A's key file and fleet secrets (and
// A's directory) and a copy of replica B's directory, and tries every key
// that material gives on B's sealing check, state.db values, log entries,
// stable store and snapshots: nothing may open, every failure an
// authentication error. B's own key (from B's key file, as serve.Open
// finds it) opens everything: the control.
func TestAttackStolenDiskWithAnotherReplicasKey(t *testing.T) {
	_, nodes := sealedFleet(t, 2)
	a, b := nodes[0], nodes[1]
	for _, nd := range nodes {
		nd.cfg.Bootstrap = true
		nd.start(t)
		defer nd.stop(t)
	}
	leader := leaderOf(t, a, b)
	registerSome(t, leader, 4)
	waitApplied(t, leader.Stats().LastLogIndex, a, b)
	for _, nd := range nodes {
		if err := nd.r.Replica().Snapshot(); err != nil {
			t.Fatalf("snapshot on %s: %v", nd.cfg.ID, err)
		}
	}
	registerSome(t, leader, 2) // after the snapshot: only in the log and state.db
	waitApplied(t, leader.Stats().LastLogIndex, a, b)
	a.stop(t)
	b.stop(t)

	stolen := copyDir(t, b.cfg.DataDir)
	// The control: B's own key, as B's configuration yields it.
	spec, err := Open(b.cfg, Env{})
	if err != nil {
		t.Fatal(err)
	}
	own := replica.Inspect(stolen, spec.SealingKey)
	spec.Close()
	if own.CheckErr != nil || own.ValuesOpened != own.Values || own.Values < 6 || own.LogOpened != own.LogEntries || own.LogEntries < 5 ||
		own.SnapshotsOpened != own.Snapshots || own.Snapshots < 1 {
		t.Fatalf("B's own key does not open B's directory: %v", own)
	}
	t.Logf("control, B's own key: %v", own)

	if _, err := sealing.LoadWrappedKey(mustKeyFile(t, a.keyPath), filepath.Join(stolen, replica.DataKeyFile)); !errors.Is(err, sealing.ErrAuthentication) {
		t.Errorf("B's data key unwrapped with A's key file: %v, want an authentication error", err)
	}
	for name, k := range attackerKeys(t, a, stolen) {
		rep := replica.Inspect(stolen, k)
		t.Logf("%s: %v", name, rep)
		if rep.Opened() {
			t.Errorf("ATTACK SUCCEEDED: %s opens replica B's stolen disk: %v", name, rep)
			continue
		}
		for part, err := range map[string]error{"sealing check": rep.CheckErr, "state.db values": rep.ValuesErr, "log": rep.LogErr, "snapshots": rep.SnapshotsErr} {
			if !errors.Is(err, sealing.ErrAuthentication) {
				t.Errorf("%s on B's %s: %v, want an authentication error", name, part, err)
			}
		}
	}
}

func mustKeyFile(t *testing.T, path string) *sealing.SoftKey {
	t.Helper()
	k, err := keyfile.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sealLegacy seals nd's empty data directory under the fleet storage key,
// as Coffer did before per-replica keys (serve.Open gave the replica
// vault.Secrets.StorageKey()).
func sealLegacy(t *testing.T, nd *sealedNode) sealing.Key {
	t.Helper()
	sec, err := vault.LoadSecretsSealed(nd.cfg.Secrets, mustKeyFile(t, nd.keyPath))
	if err != nil {
		t.Fatal(err)
	}
	legacy := sec.StorageKey()
	r, err := replica.Open(replica.Config{ID: nd.cfg.ID, Dir: nd.cfg.DataDir, BindAddr: "127.0.0.1:0", SealingKey: legacy,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return legacy
}

// sameStateHash waits until every node's state machine has the leader's
// plaintext state hash at the leader's index.
func sameStateHash(t *testing.T, leader *replica.Replica, nodes ...*sealedNode) {
	t.Helper()
	waitApplied(t, leader.Stats().CommitIndex, nodes...)
	li, lh, err := leader.StateHash()
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range nodes {
		i, h, err := nd.r.Replica().StateHash()
		if err != nil {
			t.Fatal(err)
		}
		if i != li || h != lh {
			t.Fatalf("%s: state hash %x at %d, the leader's %x at %d", nd.cfg.ID, h[:8], i, lh[:8], li)
		}
	}
}

// TestLegacyFleetMovesToPerReplicaKeys is the upgrade path (OPERATIONS.md,
// "Per-replica storage keys"): a fleet whose directories are sealed under
// the fleet-wide storage key keeps starting (each replica warns, naming
// the fix); one replica at a time is stopped, its data directory moved
// away, and started again: it makes its own data key, rejoins from the
// others, and holds the same state. Afterwards the fleet key (which any
// replica's secrets yield) still opens a legacy disk — the defect, until it
// is moved — but not the moved replica's; the moved replica restarts on
// its own key.
func TestLegacyFleetMovesToPerReplicaKeys(t *testing.T) {
	_, nodes := sealedFleet(t, 3)
	var legacy sealing.Key
	for _, nd := range nodes {
		legacy = sealLegacy(t, nd)
		nd.cfg.Bootstrap = true
		nd.cfg.Snapshots = &Snapshots{Threshold: 8, Interval: Duration{Duration: 100 * time.Millisecond}, TrailingLogs: 2}
	}
	for _, nd := range nodes {
		nd.start(t)
		defer nd.stop(t)
	}
	for _, nd := range nodes {
		if !strings.Contains(nd.log.String(), "sealed under the fleet-wide storage key") || !strings.Contains(nd.log.String(), "OPERATIONS.md") {
			t.Fatalf("%s: no legacy warning:\n%s", nd.cfg.ID, nd.log.String())
		}
	}
	leader := leaderOf(t, nodes...)
	registerSome(t, leader, 5)
	sameStateHash(t, leader, nodes...)

	// Move each replica in turn (the leader last, as an operator would).
	order := []*sealedNode{}
	for _, nd := range nodes {
		if nd.r.Replica() != leader {
			order = append(order, nd)
		}
	}
	for _, nd := range nodes {
		if nd.r.Replica() == leader {
			order = append(order, nd)
		}
	}
	for i, nd := range order {
		nd.stop(t)
		if err := os.Rename(nd.cfg.DataDir, nd.cfg.DataDir+".legacy"); err != nil {
			t.Fatal(err)
		}
		nd.cfg.Bootstrap = false // it joins the fleet it was in
		var running []*sealedNode
		for _, o := range nodes {
			if o.r != nil {
				running = append(running, o)
			}
		}
		l := leaderOf(t, running...)
		registerSome(t, l, 3) // the fleet moves on while it is away
		for _, o := range running {
			if err := o.r.Replica().Snapshot(); err != nil {
				t.Fatal(err)
			}
		}
		nd.start(t)
		if _, err := os.Stat(filepath.Join(nd.cfg.DataDir, replica.DataKeyFile)); err != nil {
			t.Fatalf("%s made no data key: %v", nd.cfg.ID, err)
		}
		sameStateHash(t, l, nodes...)
		t.Logf("moved %s (%d of %d): restores %d", nd.cfg.ID, i+1, len(order), nd.r.Replica().Stats().Restores)
	}
	leader = leaderOf(t, nodes...)
	registerSome(t, leader, 2)
	sameStateHash(t, leader, nodes...)

	// Restart every replica: each on its own key, no legacy warning.
	for _, nd := range nodes {
		nd.stop(t)
		nd.log = logcapture.Buffer{}
	}
	for _, nd := range nodes {
		nd.start(t)
	}
	leader = leaderOf(t, nodes...)
	registerSome(t, leader, 1)
	sameStateHash(t, leader, nodes...)
	for _, nd := range nodes {
		if strings.Contains(nd.log.String(), "fleet-wide storage key") {
			t.Fatalf("%s still warns of the legacy key", nd.cfg.ID)
		}
	}
	for _, nd := range nodes {
		nd.stop(t)
	}

	// The legacy directory kept aside opens with the fleet key (that was
	// the defect: destroy it); the moved one does not.
	if rep := replica.Inspect(copyDir(t, nodes[0].cfg.DataDir+".legacy"), legacy); rep.CheckErr != nil || rep.ValuesOpened == 0 {
		t.Fatalf("the legacy directory does not open with the fleet key (the test's premise): %v", rep)
	}
	for _, nd := range nodes {
		stolen := copyDir(t, nd.cfg.DataDir)
		for name, k := range attackerKeys(t, nodes[(slicesIndex(nodes, nd)+1)%len(nodes)], stolen) {
			if rep := replica.Inspect(stolen, k); rep.Opened() {
				t.Errorf("%s opens moved replica %s's disk: %v", name, nd.cfg.ID, rep)
			}
		}
	}
}

func slicesIndex(nodes []*sealedNode, nd *sealedNode) int {
	for i, n := range nodes {
		if n == nd {
			return i
		}
	}
	return -1
}
