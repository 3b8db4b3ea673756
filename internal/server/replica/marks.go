package replica

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cofferhq/coffer/internal/server/sealing"
	"github.com/cofferhq/coffer/internal/server/vaultstate"
)

// The rollback defence (SECURITY.md): Config.Marks keeps the replica's
// high-water mark — the last index and term its state machine applied —
// outside its disk, in the PKCS#11 token. Someone who restores an old copy
// of a replica's directory (to hand back guesses spent since) gets a replica
// whose log ends before the mark: Open refuses it with ErrRolledBack. An
// empty directory (wiped on purpose) starts empty, never bootstraps a new
// fleet, and catches up from the leader.
//
// The mark is written every MarkInterval, at Close, and after Snapshot; a
// restore of a copy made within the last interval goes unnoticed (it holds
// at most an interval's entries less, and Raft's majority still holds them).

// DefaultMarkInterval is how often a running replica writes its mark.
const DefaultMarkInterval = 5 * time.Second

// ErrRolledBack: the replica's directory is older than its high-water mark.
var ErrRolledBack = errors.New("this replica's disk is older than its token's high-water mark")

// ErrNoMark: the replica's directory has state but its token holds no
// high-water mark (the token was re-initialized or replaced, or the mark
// object was deleted): the rollback check has nothing to compare with.
var ErrNoMark = errors.New("this replica's directory has state but its token holds no high-water mark")

// GenesisMark is the mark a replica writes at its first start (an empty
// directory and no mark), before Raft writes anything: from then on the
// token always holds a mark, so a missing one means the token lost it. It
// is at index 0 and does not stop a bootstrap.
var GenesisMark = sealing.Mark{Digest: sha256.Sum256([]byte("coffer vault replica: first start, nothing applied yet"))}

// checkMark compares the stored mark with the directory: its Raft log and
// snapshots (the index and term), and its state machine (the state digest
// at the mark's index). A directory with state and no mark is refused
// (ErrNoMark); an empty one with no mark gets GenesisMark.
func (r *Replica) checkMark(logs raft.LogStore, hasState bool, applied uint64) (sealing.Mark, error) {
	if r.cfg.Marks == nil {
		return sealing.Mark{}, nil
	}
	m, err := r.cfg.Marks.ReadMark()
	if err != nil {
		return m, fmt.Errorf("replica: read the high-water mark: %w", err)
	}
	if !hasState && applied == 0 {
		if m.IsZero() {
			// First start: a mark before Raft writes anything, so that a
			// crash from here on never looks like a lost mark.
			if err := r.cfg.Marks.WriteMark(GenesisMark); err != nil {
				return m, fmt.Errorf("replica: write the first high-water mark: %w", err)
			}
			return GenesisMark, nil
		}
		return m, nil
	}
	if m.IsZero() {
		return m, fmt.Errorf("replica %s: %w: the mark would tell a disk restored from an old copy from a current one. "+
			"If the token was replaced or re-initialized on purpose, move %s away and start this replica again with an empty directory: "+
			"it will catch up from its peers and write a new mark (SECURITY.md, 'Rollback')", r.cfg.ID, ErrNoMark, r.cfg.Dir)
	}
	if !hasState {
		return m, nil // state.db without a log: Open refuses it next
	}
	last, err := logs.LastIndex()
	if err != nil {
		return m, fmt.Errorf("replica: %w", err)
	}
	first, _ := logs.FirstIndex()
	var snapIndex, snapTerm uint64
	if snaps, err := r.snaps.List(); err == nil && len(snaps) > 0 {
		snapIndex, snapTerm = snaps[0].Index, snaps[0].Term
	}
	top := max(last, snapIndex, applied)
	refuse := func(why string) error {
		return fmt.Errorf("replica %s: %w (%s): it was restored from an old copy, which would hand back guesses spent since. "+
			"Move %s away (keep it for forensics) and start this replica again with an empty directory: it will catch up from its peers. "+
			"If most replicas report this, stop: the fleet's disks were rolled back together; see SECURITY.md",
			r.cfg.ID, ErrRolledBack, why, r.cfg.Dir)
	}
	if m.Index > top {
		return m, refuse(fmt.Sprintf("the mark is at index %d term %d, the disk ends at index %d", m.Index, m.Term, top))
	}
	// Same index, another history: the term must match (Raft's log matching).
	switch {
	case m.Index == snapIndex && snapTerm != 0:
		if snapTerm != m.Term {
			return m, refuse(fmt.Sprintf("the mark is at index %d term %d, the snapshot there has term %d", m.Index, m.Term, snapTerm))
		}
	case m.Index >= first && m.Index <= last && first > 0:
		var l raft.Log
		if err := logs.GetLog(m.Index, &l); err == nil && l.Term != m.Term {
			return m, refuse(fmt.Sprintf("the mark is at index %d term %d, the log there has term %d", m.Index, m.Term, l.Term))
		}
	}
	// The state machine at the mark's index: the same state digest.
	if idx, _, d := r.machine.CommittedDigest(); m.Index > 0 && idx == m.Index && !isZero(m.Digest) && [32]byte(d) != m.Digest {
		return m, fmt.Errorf("replica %s: %w: state.db is at the mark's index %d but its state digest differs from the mark's "+
			"(values written into it outside the replica). Move %s away (keep it for forensics) and start this replica again with an empty directory: "+
			"it will catch up from its peers", r.cfg.ID, vaultstate.ErrStateTampered, m.Index, r.cfg.Dir)
	}
	return m, nil
}

func isZero(d [32]byte) bool { return d == [32]byte{} }

// markWriter writes the mark in the background.
type markWriter struct {
	r    *Replica
	mu   sync.Mutex
	last sealing.Mark
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

func startMarkWriter(r *Replica, start sealing.Mark) *markWriter {
	w := &markWriter{r: r, last: start, done: make(chan struct{})}
	every := r.cfg.MarkInterval
	if every <= 0 {
		every = DefaultMarkInterval
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-t.C:
				if err := w.write(); err != nil {
					r.log.Error("writing the high-water mark failed", "error", err)
				}
			}
		}
	}()
	return w
}

// write stores the state machine's applied index and term if they moved
// past the last mark (a wiped replica catching up writes nothing until it
// passes its old mark). The mark describes committed state: the entries
// applied so far are committed first (group commit), and the mark is the
// index state.db holds. (Were the commit to fail, the machine has stopped
// and the file's index is still a true one.)
func (w *markWriter) write() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.r.machine.Commit()
	idx, term, digest := w.r.machine.CommittedDigest()
	if idx == 0 || idx <= w.last.Index || term < w.last.Term {
		return nil
	}
	m := sealing.Mark{Index: idx, Term: term, Digest: digest}
	if err := w.r.cfg.Marks.WriteMark(m); err != nil {
		return fmt.Errorf("replica: high-water mark: %w", err)
	}
	w.last = m
	return nil
}

// stop ends the background writes and writes a last mark.
func (w *markWriter) stop() error {
	var err error
	w.once.Do(func() {
		close(w.done)
		w.wg.Wait()
		err = w.write()
	})
	return err
}

// Mark returns the last high-water mark written (zero without Config.Marks).
func (r *Replica) Mark() sealing.Mark {
	if r.marks == nil {
		return sealing.Mark{}
	}
	r.marks.mu.Lock()
	defer r.marks.mu.Unlock()
	return r.marks.last
}

// WriteMark writes the high-water mark now (no-op without Config.Marks).
func (r *Replica) WriteMark() error {
	if r.marks == nil {
		return nil
	}
	return r.marks.write()
}
