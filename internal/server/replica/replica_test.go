package replica

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/server/vaultstate"
)

const wait = 10 * time.Second

// logBuffer collects logs and prints them only if the test fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func testLogger(t testing.TB) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replica logs:\n%s", lb.String())
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelInfo})), lb
}

// fastConfig is a replica config with timeouts short enough for tests on
// loopback (and long enough for a loaded 2-core machine).
func fastConfig(t testing.TB, id, dir string, logger *slog.Logger) Config {
	return Config{
		ID:                 id,
		Dir:                dir,
		BindAddr:           "127.0.0.1:0",
		HeartbeatTimeout:   300 * time.Millisecond,
		ElectionTimeout:    300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		Logger:             logger,
	}
}

func ctxWait(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// advanceAndSnapshot applies 60 entries on the leader and snapshots, so a
// replica that was away must catch up through InstallSnapshot.
func advanceAndSnapshot(t testing.TB, leader *Replica) {
	t.Helper()
	for i := range 60 {
		mustApply[*vaultstate.StatusResult](t, leader, command(recID(byte(100+i%5)), &vaultstate.Status{}))
	}
	if err := leader.Snapshot(); err != nil {
		t.Fatal(err)
	}
}

// waitSnapshotCatchUp waits until back has applied what leader committed,
// having restored at least one snapshot.
func waitSnapshotCatchUp(t testing.TB, back, leader *Replica) {
	t.Helper()
	ctx := ctxWait(t)
	for {
		s, ls := back.Stats(), leader.Stats()
		if s.FSMIndex >= ls.CommitIndex && s.Restores > 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("returning replica did not catch up through a snapshot: %+v, leader %+v", s, ls)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

var reqCounter atomic.Uint64

func command(rec vaultstate.RecordID, op vaultstate.Op) vaultstate.Command {
	var id vaultstate.RequestID
	binary.BigEndian.PutUint64(id[8:], reqCounter.Add(1))
	return vaultstate.Command{RequestID: id, Time: time.Now().UnixMilli(), RecordID: rec, Op: op}
}

func record(tag byte) vaultstate.Record {
	return vaultstate.Record{
		Opaque:     bytes.Repeat([]byte{tag}, 192),
		KSF:        vaultstate.KSFParams{Time: 1, MemoryKiB: 19456, Threads: 1},
		WrappedKey: bytes.Repeat([]byte{tag}, 60),
		ProofHash:  vaultstate.HashKeyProof([]byte{tag}),
	}
}

func recID(tag byte) vaultstate.RecordID {
	var id vaultstate.RecordID
	id[0] = tag
	return id
}

func mustApply[T vaultstate.Result](t testing.TB, r *Replica, cmd vaultstate.Command) T {
	t.Helper()
	res, err := r.Apply(ctxWait(t), cmd)
	if err != nil {
		t.Fatalf("apply %v on %s: %v", cmd, r.ID(), err)
	}
	v, ok := res.(T)
	if !ok {
		t.Fatalf("apply %v: got %T %+v", cmd, res, res)
	}
	return v
}

func register(t testing.TB, r *Replica, rec vaultstate.RecordID, tag byte) uint64 {
	t.Helper()
	chk := mustApply[*vaultstate.RegisterCheckResult](t, r, command(rec, &vaultstate.RegisterCheck{}))
	reg := mustApply[*vaultstate.RegisterResult](t, r, command(rec, &vaultstate.Register{GuessLimit: testGuessLimit, Epoch: chk.Epoch, Record: record(tag)}))
	return reg.Epoch
}

func loginStart(t testing.TB, r *Replica, rec vaultstate.RecordID, epoch uint64, n byte) *vaultstate.LoginStartResult {
	t.Helper()
	return mustApply[*vaultstate.LoginStartResult](t, r, command(rec, &vaultstate.LoginStart{
		Epoch: epoch, LoginID: vaultstate.LoginID{n}, MACHash: vaultstate.HashMAC(bytes.Repeat([]byte{n}, 64)),
	}))
}

func waitLeader(t testing.TB, r *Replica) {
	t.Helper()
	ctx := ctxWait(t)
	for !r.IsLeader() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s did not become leader", r.ID())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestSingleNodeRestart(t *testing.T) {
	logger, logs := testLogger(t)
	dir := t.TempDir()
	cfg := fastConfig(t, "solo", dir, logger)
	cfg.Bootstrap = true
	r, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, r)
	rec := recID(1)
	epoch := register(t, r, rec, 1)
	for i := byte(1); i <= 3; i++ {
		if got := loginStart(t, r, rec, epoch, i); got.GuessesUsed != uint32(i) || got.GuessLimit != testGuessLimit {
			t.Fatalf("LoginStart %d: %+v", i, got)
		}
	}
	if err := r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := byte(4); i <= 5; i++ {
		loginStart(t, r, rec, epoch, i)
	}
	addr := r.Addr()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Apply(ctxWait(t), command(rec, &vaultstate.Status{})); !errors.Is(err, ErrClosed) {
		t.Fatalf("apply after close: %v", err)
	}

	reopen := func() *Replica {
		t.Helper()
		cfg := fastConfig(t, "solo", dir, logger)
		cfg.BindAddr = addr
		cfg.Bootstrap = true // ignored: the replica has state
		r, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		waitLeader(t, r)
		if err := r.Barrier(ctxWait(t)); err != nil {
			t.Fatal(err)
		}
		return r
	}
	// Restart: the log after the snapshot is replayed but the state machine
	// already had it, so nothing is counted twice.
	r = reopen()
	acc, err := r.Lookup(rec)
	if err != nil {
		t.Fatal(err)
	}
	if acc.GuessesUsed != 5 || acc.Epoch != epoch {
		t.Fatalf("after restart: %v", acc)
	}
	if got := loginStart(t, r, rec, epoch, 6); got.GuessesUsed != 6 {
		t.Fatalf("after restart LoginStart counted %d, want 6", got.GuessesUsed)
	}
	// Apply returned, so the state machine stored the last entry.
	if s := r.Stats(); s.Restores != 0 || s.FSMIndex != s.LastLogIndex || s.State != "Leader" {
		t.Fatalf("stats after restart: %+v", s)
	}
	r.Close()

	// Lose state.db: the snapshot is restored and the log replayed.
	if err := os.Remove(filepath.Join(dir, "state.db")); err != nil {
		t.Fatal(err)
	}
	r = reopen()
	defer r.Close()
	acc, err = r.Lookup(rec)
	if err != nil {
		t.Fatal(err)
	}
	if acc.GuessesUsed != 6 || r.Stats().Restores != 1 {
		t.Fatalf("after rebuilding state.db: %v", acc)
	}
	if !strings.Contains(logs.String(), "restoring it") {
		t.Fatal("no snapshot restore logged")
	}
}

// cluster starts n replicas on loopback that bootstrap together.
func cluster(t testing.TB, n int, tune func(*Config)) ([]*Replica, []Config) {
	t.Helper()
	logger, _ := testLogger(t)
	var peers []Peer
	var lns []net.Listener
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		peers = append(peers, Peer{ID: string(rune('a' + i)), Addr: ln.Addr().String()})
	}
	var rs []*Replica
	var cfgs []Config
	for i := range n {
		cfg := fastConfig(t, peers[i].ID, t.TempDir(), logger)
		cfg.Listener = lns[i]
		cfg.Bootstrap = true
		cfg.Peers = peers
		if tune != nil {
			tune(&cfg)
		}
		r, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
		cfg.Listener = nil
		cfg.BindAddr = peers[i].Addr
		cfgs = append(cfgs, cfg)
	}
	t.Cleanup(func() {
		for _, r := range rs {
			if r != nil {
				r.Close()
			}
		}
	})
	return rs, cfgs
}

// leaderOf waits until exactly one of rs is leader and all live ones agree,
// for a few heartbeats in a row (an election right after bootstrap can
// still be superseded).
func leaderOf(t testing.TB, rs []*Replica) *Replica {
	t.Helper()
	ctx := ctxWait(t)
	var last *Replica
	stable := 0
	for {
		var leader *Replica
		count := 0
		for _, r := range rs {
			if r != nil && r.IsLeader() {
				leader, count = r, count+1
			}
		}
		agree := count == 1
		for _, r := range rs {
			if r != nil && agree {
				if id, _ := r.Leader(); id != leader.ID() {
					agree = false
				}
			}
		}
		if agree && leader == last {
			stable++
		} else {
			stable = 0
		}
		last = leader
		if agree && stable >= 5 {
			return leader
		}
		select {
		case <-ctx.Done():
			t.Fatal("no leader elected")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestThreeNodeCluster(t *testing.T) {
	rs, cfgs := cluster(t, 3, func(c *Config) {
		c.SnapshotThreshold = 16
		c.SnapshotInterval = 50 * time.Millisecond
		c.TrailingLogs = 4
		// raft-wal serves compacted entries still in its open segment, so
		// only small segments make the returning replica need a snapshot.
		c.WALSegmentSize = 2048
	})
	leader := leaderOf(t, rs)
	rec := recID(7)
	epoch := register(t, leader, rec, 7)
	if got := loginStart(t, leader, rec, epoch, 1); got.GuessesUsed != 1 {
		t.Fatalf("first guess: %+v", got)
	}

	// A follower refuses and says where the leader is.
	for _, r := range rs {
		if r == leader {
			continue
		}
		_, err := r.Apply(ctxWait(t), command(rec, &vaultstate.Status{}))
		var nl *NotLeaderError
		if !errors.As(err, &nl) || !errors.Is(err, ErrNotLeader) {
			t.Fatalf("follower %s: %v", r.ID(), err)
		}
		if nl.LeaderAddr != leader.Addr() || nl.LeaderID != leader.ID() {
			t.Fatalf("follower %s points to %s at %s, leader is %s at %s", r.ID(), nl.LeaderID, nl.LeaderAddr, leader.ID(), leader.Addr())
		}
	}

	// Kill the leader (no leadership transfer).
	oldIdx := -1
	for i, r := range rs {
		if r == leader {
			oldIdx = i
		}
	}
	if err := leader.shutdown(); err != nil {
		t.Fatal(err)
	}
	rs[oldIdx] = nil
	start := time.Now()
	leader = leaderOf(t, rs)
	t.Logf("new leader %s elected %v after the old one was killed", leader.ID(), time.Since(start).Round(time.Millisecond))
	if err := leader.Barrier(ctxWait(t)); err != nil {
		t.Fatal(err)
	}
	// The acknowledged guess is still counted.
	acc, err := leader.Lookup(rec)
	if err != nil {
		t.Fatal(err)
	}
	if acc.GuessesUsed != 1 {
		t.Fatalf("new leader counts %d guesses, want 1", acc.GuessesUsed)
	}
	if got := loginStart(t, leader, rec, epoch, 2); got.GuessesUsed != 2 {
		t.Fatalf("guess on new leader: %+v", got)
	}
	// Move the log well past what the old leader has, and compact it.
	advanceAndSnapshot(t, leader)

	// The old leader comes back and catches up through a snapshot.
	back, err := Open(cfgs[oldIdx])
	if err != nil {
		t.Fatal(err)
	}
	rs[oldIdx] = back
	waitSnapshotCatchUp(t, back, leader)
	acc, err = back.Lookup(rec)
	if err != nil {
		t.Fatal(err)
	}
	if acc.GuessesUsed != 2 || acc.Epoch != epoch {
		t.Fatalf("returning replica: %v", acc)
	}
	if l, _ := back.Leader(); l != leader.ID() {
		t.Fatalf("returning replica follows %q, leader is %s", l, leader.ID())
	}

	// A graceful Close of the leader hands leadership over.
	start = time.Now()
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if r == leader {
			rs[i] = nil
		}
	}
	next := leaderOf(t, rs)
	t.Logf("leadership moved to %s %v after Close", next.ID(), time.Since(start).Round(time.Millisecond))
	if got := loginStart(t, next, rec, epoch, 3); got.GuessesUsed != 3 {
		t.Fatalf("guess after handover: %+v", got)
	}
}

func TestApplyErrors(t *testing.T) {
	logger, _ := testLogger(t)
	cfg := fastConfig(t, "x", t.TempDir(), logger)
	cfg.Bootstrap = true
	r, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	waitLeader(t, r)
	// The replica adds nothing to a command: a Register or fake login
	// without a guess limit is refused before the log, and the limit a
	// command names is the one the record gets.
	rec := recID(3)
	chk := mustApply[*vaultstate.RegisterCheckResult](t, r, command(rec, &vaultstate.RegisterCheck{}))
	if _, err := r.Apply(ctxWait(t), command(rec, &vaultstate.Register{Epoch: chk.Epoch, Record: record(1)})); err == nil {
		t.Fatal("a Register without a guess limit was applied")
	}
	if _, err := r.Apply(ctxWait(t), command(recID(4), &vaultstate.LoginStartFake{})); err == nil {
		t.Fatal("a fake login without a guess limit was applied")
	}
	reg := mustApply[*vaultstate.RegisterResult](t, r, command(rec, &vaultstate.Register{GuessLimit: 4, Epoch: chk.Epoch, Record: record(1)}))
	if reg.GuessLimit != 4 {
		t.Fatalf("guess limit %d, want the command's 4", reg.GuessLimit)
	}
	fake := mustApply[*vaultstate.LoginStartResult](t, r, command(recID(4), &vaultstate.LoginStartFake{GuessLimit: 4}))
	if !fake.Fake || fake.GuessLimit != 4 {
		t.Fatalf("fake: %+v", fake)
	}
	// Refusals are results, not errors.
	cmd := command(rec, &vaultstate.Status{})
	mustApply[*vaultstate.StatusResult](t, r, cmd)
	if e := mustApply[*vaultstate.Error](t, r, cmd); e.Code != vaultstate.CodeReplay {
		t.Fatalf("replay: %+v", e)
	}
	// Commands that would not decode are refused before the log.
	if _, err := r.Apply(ctxWait(t), vaultstate.Command{}); err == nil {
		t.Fatal("empty command applied")
	}
	// A context that ended.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Apply(ctx, command(rec, &vaultstate.Status{})); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if _, err := Open(Config{ID: "", Dir: t.TempDir()}); err == nil {
		t.Fatal("config without ID accepted")
	}
}

// A state.db without a raft log belongs to another fleet: refuse to start.
func TestRefusesOrphanState(t *testing.T) {
	logger, _ := testLogger(t)
	dir := t.TempDir()
	cfg := fastConfig(t, "o", dir, logger)
	cfg.Bootstrap = true
	r, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, r)
	register(t, r, recID(1), 1)
	r.Close()
	if err := os.RemoveAll(filepath.Join(dir, "raft")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "snapshots")); err != nil {
		t.Fatal(err)
	}
	if r, err := Open(cfg); err == nil {
		r.Close()
		t.Fatal("opened a state machine without its log")
	} else if !strings.Contains(err.Error(), "no raft log") {
		t.Fatalf("error: %v", err)
	}
}

// crash stops a replica as a crash would leave it: no leadership transfer,
// the state machine's open transaction not committed (group commit), and
// (with NoSync) the dirty marker stays.
func (r *Replica) crash() {
	r.raft.Shutdown().Error()
	r.trans.Close()
	r.wal.Close()
	r.machine.Abandon()
}

// With NoSync, state.db after an unclean stop is not trusted: it is rebuilt
// from the snapshot and the log.
func TestUncleanStopRebuildsUnsyncedState(t *testing.T) {
	logger, logs := testLogger(t)
	dir := t.TempDir()
	cfg := fastConfig(t, "ns", dir, logger)
	cfg.Bootstrap = true
	r, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, r)
	rec := recID(5)
	epoch := register(t, r, rec, 5)
	for i := byte(1); i <= 3; i++ {
		loginStart(t, r, rec, epoch, i)
	}
	if err := r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := byte(4); i <= 5; i++ {
		loginStart(t, r, rec, epoch, i)
	}
	cfg.BindAddr = r.Addr()
	r.crash()

	// The process stopped, the machine did not: state.db is trusted.
	r, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, r)
	if err := r.Barrier(ctxWait(t)); err != nil {
		t.Fatal(err)
	}
	if acc, err := r.Lookup(rec); err != nil || acc.GuessesUsed != 5 || r.Stats().Restores != 0 {
		t.Fatalf("after a process crash: %v, %v, stats %+v", acc, err, r.Stats())
	}
	r.crash()

	// The machine rebooted: what a power loss can leave of a file written
	// without fsync is garbage, or worse, plausible stale pages.
	if err := os.WriteFile(filepath.Join(dir, "state.db.dirty"), []byte("another boot"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state.db"), bytes.Repeat([]byte{0xA5}, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, r)
	if err := r.Barrier(ctxWait(t)); err != nil {
		t.Fatal(err)
	}
	acc, err := r.Lookup(rec)
	if err != nil {
		t.Fatal(err)
	}
	if acc.GuessesUsed != 5 || r.Stats().Restores != 1 {
		t.Fatalf("after rebuild: %v, stats %+v", acc, r.Stats())
	}
	if !strings.Contains(logs.String(), "rebuilding it from the snapshot") {
		t.Fatal("rebuild not logged")
	}
	// A clean Close leaves no marker: the next start trusts state.db.
	r.Close()
	if _, err := os.Stat(filepath.Join(dir, "state.db.dirty")); !os.IsNotExist(err) {
		t.Fatalf("marker after clean close: %v", err)
	}
}

// Many concurrent LoginStarts through a three-replica fleet release at most
// guess_limit real results.
func TestConcurrentLoginStartsNeverExceedLimit(t *testing.T) {
	rs, _ := cluster(t, 3, nil)
	leader := leaderOf(t, rs)
	rec := recID(9)
	epoch := register(t, leader, rec, 9)
	var released, destroyed, conflicts atomic.Int32
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := leader.Apply(ctxWait(t), command(rec, &vaultstate.LoginStart{
				Epoch: epoch, LoginID: vaultstate.LoginID{byte(i)}, MACHash: vaultstate.HashMAC(bytes.Repeat([]byte{1}, 64)),
			}))
			if err != nil {
				t.Error(err)
				return
			}
			switch v := res.(type) {
			case *vaultstate.LoginStartResult:
				released.Add(1)
			case *vaultstate.Error:
				switch v.Code {
				case vaultstate.CodeDestroyed:
					destroyed.Add(1)
				case vaultstate.CodeConflict:
					conflicts.Add(1) // the record was already erased
				default:
					t.Errorf("unexpected %v", v)
				}
			}
		}()
	}
	wg.Wait()
	if released.Load() != testGuessLimit || destroyed.Load() != 1 || conflicts.Load() != 40-testGuessLimit-1 {
		t.Fatalf("released %d, destroyed %d, conflicts %d", released.Load(), destroyed.Load(), conflicts.Load())
	}
	// Every replica ends with the record erased.
	ctx := ctxWait(t)
	for _, r := range rs {
		for {
			acc, err := r.Lookup(rec)
			if err != nil {
				t.Fatal(err)
			}
			if acc.Destroyed && !acc.Live() {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: %v", r.ID(), acc)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}

// TestKilledReplicaKeepsGuesses: with group commit, guesses whose
// LoginStart was answered may not be in state.db yet; a replica killed
// (SIGKILL, no Close) before committing them counts them again after its
// restart, from the Raft log: nothing a client saw is undone. The child
// process runs a replica that never commits by time; the parent kills it,
// checks that state.db is behind what was answered, and restarts it.
func TestKilledReplicaKeepsGuesses(t *testing.T) {
	const guesses = 7
	if dir := os.Getenv("COFFER_REPLICA_CRASH_CHILD"); dir != "" {
		logger, _ := testLogger(t)
		cfg := fastConfig(t, "k", dir, logger)
		cfg.Bootstrap = true
		cfg.StateCommitInterval = time.Hour
		cfg.StateCommitEntries = 1 << 20
		r, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		waitLeader(t, r)
		epoch := register(t, r, recID(1), 1)
		// A snapshot commits; the guesses after it stay uncommitted.
		if err := r.Snapshot(); err != nil {
			t.Fatal(err)
		}
		for i := range byte(guesses) {
			loginStart(t, r, recID(1), epoch, i+1)
		}
		s := r.Stats()
		fmt.Printf("addr %s applied %d committed %d\n", r.Addr(), s.FSMIndex, s.FSMCommittedIndex)
		select {} // until killed
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledReplicaKeepsGuesses$", "-test.count=1")
	cmd.Env = append(os.Environ(), "COFFER_REPLICA_CRASH_CHILD="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var addr string
	var applied, committed uint64
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		if _, err := fmt.Sscanf(lines.Text(), "addr %s applied %d committed %d", &addr, &applied, &committed); err == nil {
			break
		}
	}
	if applied == 0 {
		t.Fatalf("the child reported nothing (%v)", lines.Err())
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	cmd.Wait()
	if committed == 0 || applied-committed < guesses {
		t.Fatalf("child: applied %d committed %d: the guesses should be uncommitted", applied, committed)
	}
	// What the kill left in state.db: the snapshot's commit, no guess.
	m, err := vaultstate.Open(filepath.Join(dir, "state.db"), vaultstate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := m.LastApplied()
	acc, err := m.Account(recID(1))
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if idx != committed || acc.GuessesUsed != 0 || !acc.Live() {
		t.Fatalf("state.db after the kill: index %d (child committed %d), %v", idx, committed, acc)
	}

	logger, logs := testLogger(t)
	cfg := fastConfig(t, "k", dir, logger)
	cfg.BindAddr = addr
	r, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	waitLeader(t, r)
	if err := r.Barrier(ctxWait(t)); err != nil {
		t.Fatal(err)
	}
	acc, err = r.Lookup(recID(1))
	if err != nil {
		t.Fatal(err)
	}
	if acc.GuessesUsed != guesses || r.Stats().Restores != 0 {
		t.Fatalf("after the restart: %v (want %d guesses, from the log), stats %+v", acc, guesses, r.Stats())
	}
	if !strings.Contains(logs.String(), "stopped without closing") {
		t.Fatal("the unclean stop was not noticed")
	}
	if got := loginStart(t, r, recID(1), acc.Epoch, 99); got.GuessesUsed != guesses+1 {
		t.Fatalf("next guess counted %d, want %d", got.GuessesUsed, guesses+1)
	}
}

// testGuessLimit is the guess limit the tests' Register commands name, as
// the vault server names the fleet's.
const testGuessLimit = 10
