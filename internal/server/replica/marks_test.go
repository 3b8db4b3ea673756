package replica

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/server/sealing"
	"github.com/cofferhq/coffer/internal/server/vaultstate"
)

// memMarks is a MarkStore in memory (the token's stand-in; the SoftHSM2
// test is marks_pkcs11_test.go).
type memMarks struct {
	mu sync.Mutex
	m  sealing.Mark
}

func (s *memMarks) ReadMark() (sealing.Mark, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m, nil
}

func (s *memMarks) WriteMark(m sealing.Mark) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.m.CheckAdvance(m); err != nil {
		return err
	}
	s.m = m
	return nil
}

func cpDir(t testing.TB, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
}

// rollbackScenario: a replica runs, its directory is copied, it runs on
// (spending guesses), then the old copy is restored: refused. The current
// directory restarts fine; a wiped one starts empty without bootstrapping.
func rollbackScenario(t *testing.T, marks sealing.MarkStore, key sealing.Key) {
	logger, _ := testLogger(t)
	base := t.TempDir()
	dir := filepath.Join(base, "data")
	open := func(d string) (*Replica, error) {
		cfg := fastConfig(t, "solo", d, logger)
		cfg.Bootstrap = true
		cfg.Marks = marks
		cfg.MarkInterval = 50 * time.Millisecond
		cfg.SealingKey = key
		return Open(cfg)
	}
	r, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, r)
	epoch := register(t, r, recID(1), 1)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(base, "old")
	cpDir(t, dir, old)

	r, err = open(dir)
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, r)
	for i := range 3 {
		loginStart(t, r, recID(1), epoch, byte(i+1))
	}
	// The periodic write catches up without Close too.
	deadline := time.Now().Add(5 * time.Second)
	for r.Mark().Index < r.Stats().FSMIndex {
		if time.Now().After(deadline) {
			t.Fatalf("mark %v behind applied %d", r.Mark(), r.Stats().FSMIndex)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	m, _ := marks.ReadMark()
	if m.Index == 0 {
		t.Fatal("no mark written")
	}

	// The old copy, restored, is refused.
	os.Rename(dir, filepath.Join(base, "current"))
	cpDir(t, old, dir)
	_, err = open(dir)
	if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "restored from an old copy") {
		t.Fatalf("restored copy: %v", err)
	}
	// The current directory is fine.
	os.RemoveAll(dir)
	os.Rename(filepath.Join(base, "current"), dir)
	r, err = open(dir)
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, r)
	if got := loginStart(t, r, recID(1), epoch, 9); got.GuessesUsed != 4 {
		t.Fatalf("guesses used %d, want 4", got.GuessesUsed)
	}
	r.Close()

	// Wiped: starts, but does not bootstrap a new fleet of its own.
	os.RemoveAll(dir)
	r, err = open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	time.Sleep(1500 * time.Millisecond)
	if r.IsLeader() || len(mustServers(t, r)) != 0 {
		t.Fatalf("a wiped replica bootstrapped a fleet: leader %v servers %v", r.IsLeader(), mustServers(t, r))
	}
}

func mustServers(t testing.TB, r *Replica) []Peer {
	ps, err := r.Servers()
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func TestRollbackMark(t *testing.T) {
	rollbackScenario(t, &memMarks{}, nil)
}

// TestMissingMarkRefused: a directory with state whose token holds no mark
// (re-initialized, replaced, the object deleted) is refused with ErrNoMark,
// not started unchecked; a first start (empty directory) writes a mark at
// once, so a crash right after it is not mistaken for a lost mark, and it
// still bootstraps.
func TestMissingMarkRefused(t *testing.T) {
	logger, _ := testLogger(t)
	dir := filepath.Join(t.TempDir(), "data")
	marks := &memMarks{}
	open := func() (*Replica, error) {
		cfg := fastConfig(t, "solo", dir, logger)
		cfg.Bootstrap = true
		cfg.Marks = marks
		cfg.MarkInterval = time.Hour // only the first mark and Close's
		return Open(cfg)
	}
	r, err := open()
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := marks.ReadMark(); m != GenesisMark {
		t.Fatalf("first start wrote mark %v, want the genesis mark", m)
	}
	waitLeader(t, r)
	register(t, r, recID(1), 1)
	r.crash() // no mark written since the genesis one
	r, err = open()
	if err != nil {
		t.Fatalf("restart after a crash with only the genesis mark: %v", err)
	}
	waitLeader(t, r)
	// The state machine has replayed the log (else Close would have no
	// applied index to mark yet).
	if err := r.Barrier(ctxWait(t)); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if m, _ := marks.ReadMark(); m.Index == 0 {
		t.Fatal("Close wrote no mark")
	}
	// The token loses its mark.
	marks.m = sealing.Mark{}
	_, err = open()
	if !errors.Is(err, ErrNoMark) {
		t.Fatalf("state without a mark: %v, want ErrNoMark", err)
	}
}

// TestMarkDigestChecked: a state.db at the mark's index whose state digest
// is not the mark's is refused (the mark records the digest); one at the
// mark's index with the same digest starts.
func TestMarkDigestChecked(t *testing.T) {
	logger, _ := testLogger(t)
	dir := filepath.Join(t.TempDir(), "data")
	marks := &memMarks{}
	key := newKeyFile(t)
	open := func() (*Replica, error) {
		cfg := fastConfig(t, "solo", dir, logger)
		cfg.Bootstrap = true
		cfg.Marks = marks
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
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	m, _ := marks.ReadMark()
	if isZero(m.Digest) || m == GenesisMark {
		t.Fatalf("mark %v has no state digest", m)
	}
	r, err = open()
	if err != nil {
		t.Fatalf("same index, same digest: %v", err)
	}
	r.Close()
	m, _ = marks.ReadMark()
	m.Digest[0] ^= 1
	marks.m = m
	_, err = open()
	if !errors.Is(err, vaultstate.ErrStateTampered) {
		t.Fatalf("same index, other digest: %v, want ErrStateTampered", err)
	}
}
