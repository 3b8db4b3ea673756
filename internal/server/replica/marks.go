package replica

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cofferhq/coffer/internal/server/sealing"
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

// checkMark compares the stored mark with the directory.
func (r *Replica) checkMark(logs raft.LogStore, hasState bool, applied uint64) (sealing.Mark, error) {
	if r.cfg.Marks == nil {
		return sealing.Mark{}, nil
	}
	m, err := r.cfg.Marks.ReadMark()
	if err != nil {
		return m, fmt.Errorf("replica: read the high-water mark: %w", err)
	}
	if m.IsZero() || !hasState {
		return m, nil
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
	return m, nil
}

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
	idx, term := w.r.machine.LastCommitted()
	if idx == 0 || idx <= w.last.Index || term < w.last.Term {
		return nil
	}
	m := sealing.Mark{Index: idx, Term: term}
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
