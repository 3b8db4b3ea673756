package vaultstate

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestUnderGroupCommit runs the machine's tests again with group commit:
// commits every few entries (and, in the second pass, every millisecond
// from the timer's goroutine), reads through the open transaction.
func TestUnderGroupCommit(t *testing.T) {
	tests := []struct {
		name string
		f    func(*testing.T)
	}{
		{"TenLoginStartsWithoutFinishThenDestroyed", TestTenLoginStartsWithoutFinishThenDestroyed},
		{"NineWrongThenRight", TestNineWrongThenRight},
		{"WrongMACAndBudgetSpentAtFinish", TestWrongMACAndBudgetSpentAtFinish},
		{"LoginFinishSupersededOrExpired", TestLoginFinishSupersededOrExpired},
		{"ReRegistrationNeedsAuthorization", TestReRegistrationNeedsAuthorization},
		{"UnauthorizedRegistrationResetsNothing", TestUnauthorizedRegistrationResetsNothing},
		{"RegisterEpochs", TestRegisterEpochs},
		{"LoginStartConflicts", TestLoginStartConflicts},
		{"DisableAndReenable", TestDisableAndReenable},
		{"RegistrationAfterDestroyHasFreshBudget", TestRegistrationAfterDestroyHasFreshBudget},
		{"GuessLimitPerRegistration", TestGuessLimitPerRegistration},
		{"Replay", TestReplay},
		{"GuessBudgetProperty", TestGuessBudgetProperty},
		{"BatchingIsInvisible", TestBatchingIsInvisible},
		{"IdempotentReapply", TestIdempotentReapply},
		{"SnapshotRestore", TestSnapshotRestore},
		{"RestoreRefusesBadStreams", TestRestoreRefusesBadStreams},
		{"UndecodableEntries", TestUndecodableEntries},
		{"MemberDirectory", TestMemberDirectory},
		{"MembersSnapshotReplay", TestMembersSnapshotReplay},
		{"StateFileWithoutMembers", TestStateFileWithoutMembers},
	}
	saved := harnessOptions
	defer func() { harnessOptions = saved }()
	for _, o := range []struct {
		name    string
		opts    Options
		onlyOne bool
	}{
		{"every7", Options{NoSync: true, CommitInterval: time.Hour, CommitEntries: 7, DigestKey: testDigestKey}, false},
		{"timer1ms", Options{NoSync: true, CommitInterval: time.Millisecond, DigestKey: testDigestKey}, true},
	} {
		harnessOptions = o.opts
		for _, tc := range tests {
			if o.onlyOne && tc.name != "GuessBudgetProperty" && tc.name != "BatchingIsInvisible" && tc.name != "SnapshotRestore" && tc.name != "MembersSnapshotReplay" {
				continue
			}
			t.Run(o.name+"/"+tc.name, tc.f)
		}
	}
}

// genLog makes a log of n entries with the command generator (seed), a
// NoOp every 37th, applied one by one to a machine without group commit:
// the entries, their results (described) and the final state.
func genLog(t *testing.T, seed uint64, n int) (entries []Entry, results []string, final map[string]string) {
	t.Helper()
	saved := harnessOptions
	harnessOptions = Options{NoSync: true}
	h := newHarness(t)
	harnessOptions = saved
	g := newGen(h, seed)
	for len(entries) < n {
		h.index++
		if h.index%37 == 0 {
			e := Entry{Index: h.index, Term: 3, NoOp: true}
			entries = append(entries, e)
			results = append(results, describe(h.m.Apply(e)))
			continue
		}
		c := g.next()
		data, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		e := Entry{Index: h.index, Term: 3, Data: data}
		res := h.m.Apply(e)
		g.observe(c, res)
		entries = append(entries, e)
		results = append(results, describe(res))
	}
	return entries, results, dump(t, h.m)
}

// applyInBatches applies entries in random batches of 1..max and returns
// the results, described.
func applyInBatches(m *Machine, entries []Entry, rng *rand.Rand, max int) []string {
	var out []string
	for i := 0; i < len(entries); {
		k := min(1+rng.IntN(max), len(entries)-i)
		for _, r := range m.ApplyBatch(entries[i : i+k]) {
			out = append(out, describe(r))
		}
		i += k
	}
	return out
}

// checkReplay re-applies the whole log to m, as Raft does after a restart
// (from its snapshot, here from the start): entries at or below the file's
// applied index answer nothing, the others what they answered the first
// time, and the state ends equal to final.
func checkReplay(t *testing.T, m *Machine, entries []Entry, results []string, final map[string]string, rng *rand.Rand) {
	t.Helper()
	from, _ := m.LastApplied()
	got := applyInBatches(m, entries, rng, 8)
	for i, e := range entries {
		want := results[i]
		if e.Index <= from {
			want = describe(nil)
		}
		if got[i] != want {
			t.Fatalf("entry %d (file applied up to %d): replayed %s, first %s", e.Index, from, got[i], want)
		}
	}
	if d := diffDumps(final, dump(t, m)); d != "" {
		t.Fatalf("state after replay differs:\n%s", d)
	}
}

// TestGroupCommitCrashReplays: under group commit, applied entries are
// visible at once but reach the file only at a commit. A machine abandoned
// without commit (a crash) reopens at the last commit's applied index, and
// re-applying the log from there gives the same results and the same
// state: nothing a client saw, guesses included, is undone.
func TestGroupCommitCrashReplays(t *testing.T) {
	entries, results, final := genLog(t, 5, 400)
	for seed := range uint64(12) {
		rng := rand.New(rand.NewPCG(seed, 99))
		path := filepath.Join(t.TempDir(), "state.db")
		opts := Options{NoSync: seed%2 == 0, CommitInterval: time.Hour, CommitEntries: 1 + rng.IntN(100)}
		m, err := Open(path, opts)
		if err != nil {
			t.Fatal(err)
		}
		cut := 1 + rng.IntN(len(entries))
		got := applyInBatches(m, entries[:cut], rng, 6)
		for i := range got {
			if got[i] != results[i] {
				t.Fatalf("seed %d entry %d: %s, one by one %s", seed, i+1, got[i], results[i])
			}
		}
		applied, _ := m.LastApplied()
		committed, _ := m.LastCommitted()
		if applied != entries[cut-1].Index || committed > applied {
			t.Fatalf("seed %d: applied %d committed %d after %d entries", seed, applied, committed, cut)
		}
		if seed%3 == 0 {
			// Reads see what is applied, not only what is committed.
			ref, err := Open(filepath.Join(t.TempDir(), "ref.db"), Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			ref.ApplyBatch(entries[:cut])
			if d := diffDumps(dump(t, ref), dump(t, m)); d != "" {
				t.Fatalf("seed %d: reads differ from a machine without group commit:\n%s", seed, d)
			}
			for _, rec := range []RecordID{{0xC0, 0}, {0xC0, 1}, {0xC0, 2}} {
				a, _ := m.Account(rec)
				b, _ := ref.Account(rec)
				if a.String() != b.String() || fmt.Sprint(a.GuessTimes) != fmt.Sprint(b.GuessTimes) {
					t.Fatalf("seed %d: Account %v, without group commit %v", seed, a, b)
				}
			}
			ref.Close()
		}
		if err := m.Abandon(); err != nil {
			t.Fatal(err)
		}
		m, err = Open(path, opts)
		if err != nil {
			t.Fatal(err)
		}
		if i, _ := m.LastApplied(); i != committed {
			t.Fatalf("seed %d: reopened at %d, last commit was %d", seed, i, committed)
		}
		checkReplay(t, m, entries, results, final, rng)
		m.Close()
	}
}

// TestGroupCommitKilledProcess is TestGroupCommitCrashReplays with a real
// crash: a child process applies a log under group commit, reports what it
// applied and committed, and is killed with SIGKILL (no Close, no commit).
// The file it leaves reopens at its last commit, and re-applying the log
// from there gives the results the child answered and the same state.
func TestGroupCommitKilledProcess(t *testing.T) {
	if dir := os.Getenv("COFFER_STATE_CRASH_CHILD"); dir != "" {
		crashChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("starts a process")
	}
	entries, results, final := genLog(t, 8, 300)
	dir := t.TempDir()
	var log bytes.Buffer
	for _, e := range entries {
		log.Write(binary.BigEndian.AppendUint64(nil, e.Index))
		log.Write(binary.BigEndian.AppendUint64(nil, e.Term))
		noop := byte(0)
		if e.NoOp {
			noop = 1
		}
		log.WriteByte(noop)
		log.Write(binary.BigEndian.AppendUint32(nil, uint32(len(e.Data))))
		log.Write(e.Data)
	}
	if err := os.WriteFile(filepath.Join(dir, "log"), log.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestGroupCommitKilledProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "COFFER_STATE_CRASH_CHILD="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var applied, committed uint64
	var sum string
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		if _, err := fmt.Sscanf(lines.Text(), "applied %d committed %d results %s", &applied, &committed, &sum); err == nil {
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
	if want := resultsSum(results); sum != want {
		t.Fatalf("the child's results differ from one-by-one application")
	}
	if applied != entries[len(entries)-1].Index || committed == 0 || committed >= applied {
		t.Fatalf("child: applied %d committed %d: want some entries left uncommitted", applied, committed)
	}
	m, err := Open(filepath.Join(dir, "state.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if i, _ := m.LastApplied(); i != committed {
		t.Fatalf("after the kill the file is at index %d, the child last committed %d", i, committed)
	}
	t.Logf("child applied %d entries, committed %d; replaying %d", applied, committed, applied-committed)
	checkReplay(t, m, entries, results, final, rand.New(rand.NewPCG(1, 1)))
}

func resultsSum(results []string) string {
	h := sha256.New()
	for _, r := range results {
		io.WriteString(h, r+"\n")
	}
	return hex.EncodeToString(h.Sum(nil))
}

// crashChild applies the log in dir under group commit (a commit every 64
// entries, none by time), reports, and waits to be killed.
func crashChild(dir string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	b, err := os.ReadFile(filepath.Join(dir, "log"))
	if err != nil {
		fail(err)
	}
	var entries []Entry
	for len(b) > 0 {
		e := Entry{Index: binary.BigEndian.Uint64(b), Term: binary.BigEndian.Uint64(b[8:]), NoOp: b[16] == 1}
		n := binary.BigEndian.Uint32(b[17:])
		e.Data, b = b[21:21+n], b[21+n:]
		entries = append(entries, e)
	}
	m, err := Open(filepath.Join(dir, "state.db"), Options{NoSync: true, CommitInterval: time.Hour, CommitEntries: 64})
	if err != nil {
		fail(err)
	}
	results := applyInBatches(m, entries, rand.New(rand.NewPCG(7, 7)), 5)
	applied, _ := m.LastApplied()
	committed, _ := m.LastCommitted()
	fmt.Printf("applied %d committed %d results %s\n", applied, committed, resultsSum(results))
	select {} // until killed
}

// TestGroupCommitStorageFailure: a failure drops what was not committed and
// stops the machine (OnFailure is told); the file holds its last commit,
// from which the log replays.
func TestGroupCommitStorageFailure(t *testing.T) {
	entries, results, final := genLog(t, 9, 120)
	sealer := &errSealer{}
	failures := make(chan error, 2)
	path := filepath.Join(t.TempDir(), "s.db")
	opts := Options{Sealer: sealer, NoSync: true, CommitInterval: time.Hour, OnFailure: func(err error) { failures <- err }}
	m, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	m.ApplyBatch(entries[:50])
	if err := m.Commit(); err != nil {
		t.Fatal(err)
	}
	atCommit := dump(t, m)
	m.ApplyBatch(entries[50:80])
	if i, _ := m.LastApplied(); i != entries[79].Index {
		t.Fatalf("applied %d", i)
	}
	sealer.failSeal = true
	var failedAt int
	for i := 80; i < len(entries) && failedAt == 0; i++ {
		if r, ok := m.Apply(entries[i]).(*Error); ok && r.Code == CodeUnavailable {
			failedAt = i
		}
	}
	if failedAt == 0 {
		t.Fatal("no entry needed sealing")
	}
	select {
	case err := <-failures:
		if !errors.Is(err, ErrStorage) {
			t.Fatalf("OnFailure(%v)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnFailure not called")
	}
	if i, _ := m.LastApplied(); i != entries[49].Index {
		t.Fatalf("after the failure applied %d, want the last commit's %d", i, entries[49].Index)
	}
	if d := diffDumps(atCommit, dump(t, m)); d != "" {
		t.Fatalf("after the failure the state is not the last commit's:\n%s", d)
	}
	sealer.failSeal = false
	wantCode(t, m.Apply(entries[failedAt+1]), CodeUnavailable)
	if err := m.Commit(); !errors.Is(err, ErrStorage) {
		t.Fatalf("Commit after a failure: %v", err)
	}
	m.Close()
	m, err = Open(path, Options{Sealer: sealer, NoSync: true, CommitInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	checkReplay(t, m, entries, results, final, rand.New(rand.NewPCG(2, 2)))
	if len(failures) != 0 {
		t.Fatal("OnFailure called twice")
	}
}

// TestGroupCommitConcurrentReads applies under a 1 ms group commit while
// readers read and snapshots stream: an applied entry is visible to every
// read that starts after its ApplyBatch returned, guess counts never go
// back, and every snapshot holds exactly the entries applied before it.
func TestGroupCommitConcurrentReads(t *testing.T) {
	h := newHarness(t)
	h.m.Close()
	m, err := Open(filepath.Join(h.dir, "g.db"), Options{NoSync: true, CommitInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	h.m = m
	const records = 8
	for i := range records {
		h.rec[1] = byte(i)
		h.register(1, Auth{})
	}
	// seen[i] is generation<<32 | guesses answered: the generation moves
	// (before the apply) when a successful login resets the count.
	var seen [records]atomic.Uint64
	base := h.rec
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var readErr atomic.Value
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := base
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				i := n % records
				want := seen[i].Load()
				rec[1] = byte(i)
				acc, err := m.Account(rec)
				if err != nil {
					readErr.Store(err)
					return
				}
				if seen[i].Load()>>32 == want>>32 && acc.GuessesUsed < uint32(want) {
					readErr.Store(fmt.Errorf("record %d: read %d guesses after %d were answered", i, acc.GuessesUsed, uint32(want)))
					return
				}
			}
		}()
	}
	var streams sync.WaitGroup
	for n := range 3000 {
		i := n % records
		h.rec[1] = byte(i)
		gen := seen[i].Load() >> 32
		r := want[*LoginStartResult](t, h.do(&LoginStart{Epoch: 1, LoginID: loginID(byte(n)), MACHash: HashMAC(mac(1))}))
		seen[i].Store(gen<<32 | uint64(r.GuessesUsed))
		if acc := h.account(); acc.GuessesUsed != r.GuessesUsed {
			t.Fatalf("entry %d: read %d guesses right after the result said %d", h.index, acc.GuessesUsed, r.GuessesUsed)
		}
		if r.GuessesUsed == 5 {
			seen[i].Store((gen + 1) << 32)
			want[*LoginFinishResult](t, h.do(&LoginFinish{LoginID: loginID(byte(n)), ClientMAC: mac(1)}))
			if acc := h.account(); acc.GuessesUsed != 0 {
				t.Fatalf("entry %d: read %d guesses right after a successful login", h.index, acc.GuessesUsed)
			}
		}
		if n%500 == 250 {
			snap, err := m.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			if idx, _ := snap.Index(); idx != h.index {
				t.Fatalf("snapshot at %d, applied %d", idx, h.index)
			}
			want := dump(t, m)
			streams.Add(1)
			go func() {
				defer streams.Done()
				defer snap.Release()
				var buf bytes.Buffer
				if _, err := snap.WriteTo(&buf); err != nil {
					readErr.Store(err)
					return
				}
				o, err := Open(filepath.Join(t.TempDir(), "o.db"), Options{NoSync: true})
				if err != nil {
					readErr.Store(err)
					return
				}
				defer o.Close()
				if err := o.Restore(&buf); err != nil {
					readErr.Store(err)
					return
				}
				if d := diffDumps(want, dump(t, o)); d != "" {
					readErr.Store(errors.New("snapshot differs from the state when it was taken:\n" + d))
				}
			}()
		}
	}
	close(stop)
	wg.Wait()
	streams.Wait()
	if err, _ := readErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	if c, _ := m.LastCommitted(); c == 0 {
		t.Fatal("the timer never committed")
	}
	if err := m.Commit(); err != nil {
		t.Fatal(err)
	}
	if c, _ := m.LastCommitted(); c != h.index {
		t.Fatalf("committed %d after Commit, applied %d", c, h.index)
	}
	if err := m.Err(); err != nil {
		t.Fatal(err)
	}
}
