package replica

import (
	"io"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/cofferhq/coffer/internal/server/vaultstate"
)

// fsm adapts state.Machine to raft.BatchingFSM. The machine applies a batch
// of committed entries in its open bbolt transaction and commits it every
// Config.StateCommitInterval (group commit), or commits each batch.
type fsm struct {
	m *vaultstate.Machine
	// onFailure is called (once, on its own goroutine) when the machine's
	// storage fails, so the replica can stop.
	onFailure func(error)
	stopped   atomic.Bool
	restores  atomic.Int64
	batches   atomic.Int64
	entries   atomic.Int64
}

var _ raft.BatchingFSM = (*fsm)(nil)

func entry(l *raft.Log) vaultstate.Entry {
	return vaultstate.Entry{Index: l.Index, Term: l.Term, Data: l.Data, NoOp: l.Type != raft.LogCommand}
}

func (f *fsm) Apply(l *raft.Log) any {
	res := f.m.Apply(entry(l))
	f.check()
	return res
}

func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	entries := make([]vaultstate.Entry, len(logs))
	for i, l := range logs {
		entries[i] = entry(l)
	}
	f.batches.Add(1)
	f.entries.Add(int64(len(entries)))
	results := f.m.ApplyBatch(entries)
	f.check()
	out := make([]any, len(results))
	for i, r := range results {
		out[i] = r
	}
	return out
}

func (f *fsm) check() {
	if err := f.m.Err(); err != nil {
		f.failed(err)
	}
}

// failed stops the replica (once) after a storage failure: one an apply
// returned, or a group commit's in the background (state.Options.OnFailure).
func (f *fsm) failed(err error) {
	if f.stopped.CompareAndSwap(false, true) {
		go f.onFailure(err)
	}
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	s, err := f.m.Snapshot()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{s: s}, nil
}

func (f *fsm) Restore(r io.ReadCloser) error {
	defer r.Close()
	if err := f.m.Restore(r); err != nil {
		return err
	}
	f.restores.Add(1)
	return nil
}

// unbatched hides ApplyBatch, so Raft applies one entry per transaction.
type unbatched struct{ f *fsm }

func (u unbatched) Apply(l *raft.Log) any               { return u.f.Apply(l) }
func (u unbatched) Snapshot() (raft.FSMSnapshot, error) { return u.f.Snapshot() }
func (u unbatched) Restore(r io.ReadCloser) error       { return u.f.Restore(r) }

type fsmSnapshot struct{ s *vaultstate.Snapshot }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.s.WriteTo(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() { s.s.Release() }
