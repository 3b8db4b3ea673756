// Package replica runs the vault's state machine (vault/state) as a Raft
// node with hashicorp/raft: raft-wal is the log and stable store, raft's
// FileSnapshotStore keeps snapshots, and peers talk over a TCP stream layer
// that can be built from any net.Listener (mutual TLS is a wrapper).
//
// A single-replica fleet is the same code with one voter. Every command,
// reads included, is a log entry; Apply returns only after the entry is
// committed by a majority and applied to the leader's state machine.
//
// On-disk layout under Config.Dir:
//
//	state.db     the state machine (bbolt), with the last applied index
//	raft/        raft-wal segments and metadata (log and stable store)
//	snapshots/   raft snapshots (streams of state.db)
package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"

	"github.com/cofferhq/coffer/internal/atomicfile"
	"github.com/cofferhq/coffer/internal/server/sealing"
	"github.com/cofferhq/coffer/internal/server/vaultstate"
)

// Defaults (PROTOCOL.md, section 5).
const (
	// DefaultSnapshotThreshold is how many entries since the last snapshot
	// trigger a new one.
	DefaultSnapshotThreshold = 8192
	// DefaultSnapshotInterval is how often the replica checks whether to
	// snapshot.
	DefaultSnapshotInterval = 2 * time.Minute
	// DefaultTrailingLogs is how many entries are kept in the log after a
	// snapshot, so a briefly absent follower catches up without one.
	DefaultTrailingLogs = 1024
	// DefaultWALSegmentSize is the size of a raft-wal log segment. The log
	// is compacted in whole segments, so an entry (an erased record's
	// Register, say) stays on disk until its segment is sealed and wholly
	// compacted: smaller than raft-wal's 64 MiB default for that reason.
	DefaultWALSegmentSize = 1 << 20
	// DefaultStateCommitInterval is how long the state machine keeps
	// applied entries in its open bbolt transaction before committing them
	// (group commit, Config.StateCommitInterval).
	DefaultStateCommitInterval = 10 * time.Millisecond
	// retainSnapshots is how many snapshots are kept on disk.
	retainSnapshots = 2
	// transferTimeout bounds the leadership transfer in Close.
	transferTimeout = 5 * time.Second
)

// Peer is a voter of the fleet.
type Peer struct {
	ID   string
	Addr string
}

// Config configures a replica.
type Config struct {
	// ID names the replica in the fleet; it must be unique and stable.
	ID string
	// Dir holds the replica's state, log and snapshots.
	Dir string
	// BindAddr is the address to listen on for peers ("127.0.0.1:0" picks
	// a port). Ignored when Listener or StreamLayer is set.
	BindAddr string
	// AdvertiseAddr is the address peers dial (default: the listener's).
	AdvertiseAddr string
	// Listener, if set, is used instead of listening on BindAddr. The
	// replica owns it from Open on and closes it.
	Listener net.Listener
	// StreamLayer, if set, replaces the TCP transport's listener and dialer
	// (see NewStreamLayer; package serve builds one over mutual TLS).
	StreamLayer raft.StreamLayer
	// Bootstrap makes a replica with no state start a new fleet whose voters
	// are Peers (this replica alone if Peers is empty). It is ignored when
	// the replica has state. Bootstrap one replica, or all of them with the
	// same Peers; add the others with AddVoter.
	Bootstrap bool
	Peers     []Peer
	// Snapshot tuning; zero values take the defaults above.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// WALSegmentSize is the raft-wal segment size (default
	// DefaultWALSegmentSize).
	WALSegmentSize int
	// Raft timing; zero values take hashicorp/raft's defaults (1 s
	// heartbeat and election timeouts, 500 ms lease, 50 ms commit).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// Sealer seals the state machine's stored values (default: none, or
	// StateSealer(SealingKey) when SealingKey is set).
	Sealer vaultstate.Sealer
	// SealingKey, if set, seals everything the replica stores: the state
	// machine's values, the Raft log and stable store, and snapshots
	// (sealed_storage.go). A directory sealed once must always be
	// opened with the same key. Each replica has its own (DataKey):
	// snapshots carry the state's values in plaintext and each replica
	// seals what it restores.
	SealingKey sealing.Key
	// LegacySealingKey, if set (and not SealingKey), is the fleet-wide
	// storage key replicas sealed under before per-replica keys: a
	// version 1 snapshot (values sealed under it) from such a replica is
	// re-sealed under SealingKey when installed.
	LegacySealingKey sealing.Key
	// SyncState makes every state machine transaction fsync its bbolt file.
	// By default it does not: the Raft log and snapshots are fsynced and are
	// the durable truth, and a state.db left by an unclean stop is rebuilt
	// from them when the machine rebooted since (README.md has the
	// measurements: about ten times the throughput).
	SyncState bool
	// DisableBatching applies committed entries one bbolt transaction each
	// instead of one per batch (for comparison in benchmarks; with group
	// commit it only hands the state machine one entry at a time).
	DisableBatching bool
	// StateCommitInterval is the state machine's group commit (README.md):
	// applied entries are visible to Lookup at once, and are committed to
	// state.db at most this long after the first of them (default
	// DefaultStateCommitInterval), every StateCommitEntries entries, before
	// each snapshot and high-water mark, and at Close. The Raft log is the
	// durable truth: after a crash the entries after state.db's applied
	// index are applied again from it. Negative: one bbolt transaction per
	// batch of entries Raft hands over.
	StateCommitInterval time.Duration
	// StateCommitEntries bounds the entries of one group commit (default
	// state.DefaultCommitEntries).
	StateCommitEntries int
	// Logger receives Raft's logs (default slog.Default()). No log line
	// holds entry contents.
	Logger *slog.Logger
	// Marks, if set, keeps this replica's high-water mark where a restored
	// disk image does not roll it back (a PKCS#11 token: the rollback
	// defence, marks.go). Open refuses a directory older than the mark
	// (ErrRolledBack); while running the mark follows the applied index
	// every MarkInterval and at Close.
	Marks sealing.MarkStore
	// MarkInterval is how often the mark is written (default
	// DefaultMarkInterval; a token write takes tens of milliseconds).
	MarkInterval time.Duration
}

// Errors of Apply and the membership calls.
var (
	// ErrNotLeader is matched (errors.Is) by *NotLeaderError.
	ErrNotLeader = errors.New("replica is not the leader")
	// ErrOutcomeUnknown: the command was proposed but the replica cannot
	// tell whether it was committed (leadership lost, shutdown, or the
	// context ended while waiting). A LoginStart may have been counted:
	// release nothing, and let the client retry with a new request.
	ErrOutcomeUnknown = errors.New("the command may or may not have been applied")
	// ErrClosed: the replica is closed or stopped after a storage failure.
	ErrClosed = errors.New("replica is closed")
)

// NotLeaderError says where the leader is. The command was not applied.
type NotLeaderError struct {
	LeaderID   string
	LeaderAddr string // empty while no leader is known
}

func (e *NotLeaderError) Error() string {
	if e.LeaderAddr == "" {
		return "replica is not the leader and knows no leader (election in progress, or no quorum); retry shortly"
	}
	return fmt.Sprintf("replica is not the leader; send to the leader %s at %s", e.LeaderID, e.LeaderAddr)
}

// Is makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// Replica is one Raft node of the vault fleet.
type Replica struct {
	cfg     Config
	log     *slog.Logger
	raft    *raft.Raft
	fsm     *fsm
	machine *vaultstate.Machine
	wal     *raftwal.WAL
	snaps   *raft.FileSnapshotStore
	trans   *raft.NetworkTransport

	marks *markWriter

	closeOnce sync.Once
	closeErr  error
	done      chan struct{} // closed by shutdown
	doneOnce  sync.Once
	mu        sync.Mutex
	failure   error // storage failure that stopped the replica
	closed    bool
}

// Open starts a replica: it opens (or creates) its state, log and
// snapshots under cfg.Dir, listens for peers, and joins or bootstraps the
// fleet. It returns once Raft runs; use WaitForLeader to wait for an
// election.
func Open(cfg Config) (_ *Replica, err error) {
	if cfg.ID == "" || cfg.Dir == "" {
		return nil, errors.New("replica: Config.ID and Config.Dir are required")
	}
	if cfg.Bootstrap && len(cfg.Peers) > 0 && !slices.ContainsFunc(cfg.Peers, func(p Peer) bool { return p.ID == cfg.ID }) {
		return nil, fmt.Errorf("replica: Config.Peers must include this replica (%s) to bootstrap with them", cfg.ID)
	}
	if cfg.SnapshotThreshold == 0 {
		cfg.SnapshotThreshold = DefaultSnapshotThreshold
	}
	if cfg.SnapshotInterval == 0 {
		cfg.SnapshotInterval = DefaultSnapshotInterval
	}
	if cfg.TrailingLogs == 0 {
		cfg.TrailingLogs = DefaultTrailingLogs
	}
	if cfg.WALSegmentSize == 0 {
		cfg.WALSegmentSize = DefaultWALSegmentSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	logger := cfg.Logger.With("replica", cfg.ID)
	hlog := newHclog(logger, "raft")

	r := &Replica{cfg: cfg, log: logger, done: make(chan struct{})}
	var closers []func() error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	walDir := filepath.Join(cfg.Dir, "raft")
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return nil, fmt.Errorf("replica: create %s: %w", walDir, err)
	}
	// Sealed storage (sealed_storage.go): check SealingKey against
	// Dir before anything is opened; the state machine's Sealer.
	sealer, err := checkSealing(cfg)
	if err != nil {
		return nil, err
	}
	statePath := filepath.Join(cfg.Dir, "state.db")
	unclean, err := r.checkUncleanStop(statePath)
	if err != nil {
		return nil, err
	}
	r.fsm = &fsm{onFailure: r.storageFailed}
	commitEvery := cfg.StateCommitInterval
	if commitEvery == 0 {
		commitEvery = DefaultStateCommitInterval
	}
	digestKey := stateDigestKey(cfg.SealingKey)
	if cfg.SealingKey != nil && digestKey == nil {
		logger.Warn("this sealing key cannot derive a state digest key: state.db is sealed value by value but has no whole-state digest", "key", cfg.SealingKey.Name())
	}
	var legacySealer vaultstate.Sealer
	var legacyDigest []byte
	if l := cfg.LegacySealingKey; l != nil && cfg.SealingKey != nil && (keyID(l) == "" || keyID(l) != keyID(cfg.SealingKey)) {
		legacySealer, legacyDigest = StateSealer(l), stateDigestKey(l)
	}
	r.machine, err = vaultstate.Open(statePath, vaultstate.Options{
		Sealer:          sealer,
		DigestKey:       digestKey,
		LegacySealer:    legacySealer,
		LegacyDigestKey: legacyDigest,
		NoSync:          !cfg.SyncState,
		CommitInterval:  max(commitEvery, 0),
		CommitEntries:   cfg.StateCommitEntries,
		// A commit that fails in the background stops the replica too.
		OnFailure: r.fsm.failed,
	})
	if errors.Is(err, vaultstate.ErrStateTampered) {
		return nil, fmt.Errorf("replica %s: %w. Someone wrote to %s outside the replica (an old value copied back, the applied index moved), "+
			"which could hand back guesses spent since. Move %s away (keep it for forensics) and start this replica again with an empty directory: "+
			"it will catch up from its peers. If most replicas report this, stop and see SECURITY.md", cfg.ID, err, statePath, cfg.Dir)
	}
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	r.fsm.m = r.machine
	closers = append(closers, r.machine.Close)
	if unclean {
		// Make what the page cache held durable before relying on it.
		if err := r.machine.Sync(); err != nil {
			return nil, fmt.Errorf("replica: %w", err)
		}
	}
	if err := r.writeMarker(); err != nil {
		return nil, err
	}
	r.wal, err = raftwal.Open(walDir, raftwal.WithLogger(hlog.Named("wal")), raftwal.WithSegmentSize(cfg.WALSegmentSize))
	if err != nil {
		return nil, fmt.Errorf("replica: open raft log in %s: %w", walDir, err)
	}
	closers = append(closers, r.wal.Close)
	r.snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.Dir, retainSnapshots, hlog.Named("snapshots"))
	if err != nil {
		return nil, fmt.Errorf("replica: open snapshot store in %s: %w", cfg.Dir, err)
	}

	// Sealed storage (sealed_storage.go): the stores as Raft sees
	// them, sealed with SealingKey when set (else r.wal, r.wal, r.snaps).
	logs, stable, snaps := sealedStores(cfg.SealingKey, r.wal, r.snaps)
	hasState, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return nil, fmt.Errorf("replica: read raft state: %w", err)
	}
	applied, _ := r.machine.LastApplied()
	// Rollback defence (marks.go): a directory older than the mark is
	// refused; an empty one starts empty and never bootstraps.
	mark, err := r.checkMark(logs, hasState, applied)
	if err != nil {
		return nil, err
	}
	if mark.Index > 0 && !hasState && cfg.Bootstrap {
		logger.Warn("this replica's token has a high-water mark but its directory is empty: it was wiped; not bootstrapping, waiting for the leader to send it the fleet's state", "mark_index", mark.Index)
		cfg.Bootstrap = false
		r.cfg.Bootstrap = false
	}
	if !hasState && applied > 0 {
		return nil, fmt.Errorf("replica: %s holds a state machine at index %d but no raft log or snapshot; "+
			"it belongs to another fleet or its log was lost: move the directory away to join as a new replica", cfg.Dir, applied)
	}
	// The state machine persists its own applied index, so it need not be
	// rebuilt from the newest snapshot on start unless it is behind it
	// (a lost or replaced state.db): Raft then restores the snapshot and
	// replays the log from there.
	restoreOnStart := false
	if snaps, err := r.snaps.List(); err != nil {
		return nil, fmt.Errorf("replica: list snapshots: %w", err)
	} else if len(snaps) > 0 && snaps[0].Index > applied {
		restoreOnStart = true
		logger.Warn("state machine is behind the newest snapshot; restoring it", "applied", applied, "snapshot_index", snaps[0].Index)
	}

	stream := cfg.StreamLayer
	if stream == nil {
		ln := cfg.Listener
		if ln == nil {
			ln, err = net.Listen("tcp", cfg.BindAddr)
			if err != nil {
				return nil, fmt.Errorf("replica: listen for peers on %q: %w", cfg.BindAddr, err)
			}
		}
		stream, err = NewStreamLayer(ln, cfg.AdvertiseAddr, nil)
		if err != nil {
			ln.Close()
			return nil, err
		}
	}
	r.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  hlog.Named("transport"),
		// No pipelined replication: one AppendEntries in flight per
		// follower. hashicorp/raft v1.8.0's pipeline can leave its sender
		// blocked for good when a deposed leader's response reader exits
		// on a stale term (with the default of 2 in flight nothing is
		// buffered), and Raft's Shutdown then waits for that goroutine
		// forever: the fault harness caught `vault serve` hanging on
		// SIGTERM after a partition (hashicorp/raft#612 is the same
		// pipeline stalling a follower). raft's own documentation finds
		// pipelining of little use with batching; measured here in
		// bench/vault/README.md.
		MaxRPCsInFlight: 1,
	})
	closers = append(closers, r.trans.Close)

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hlog
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.BatchApplyCh = true
	rc.NoSnapshotRestoreOnStart = !restoreOnStart
	rc.NoLegacyTelemetry = true
	for _, t := range []struct {
		dst *time.Duration
		v   time.Duration
	}{
		{&rc.HeartbeatTimeout, cfg.HeartbeatTimeout},
		{&rc.ElectionTimeout, cfg.ElectionTimeout},
		{&rc.LeaderLeaseTimeout, cfg.LeaderLeaseTimeout},
		{&rc.CommitTimeout, cfg.CommitTimeout},
	} {
		if t.v != 0 {
			*t.dst = t.v
		}
	}
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}

	var f raft.FSM = r.fsm
	if cfg.DisableBatching {
		f = unbatched{r.fsm}
	}
	// A cache of the newest entries spares the leader reading (and
	// unsealing) from the WAL what it just wrote when it replicates to
	// followers: 9 % of a 5-replica fleet's CPU per recovery
	// (bench/vault/README.md).
	cached, err := raft.NewLogCache(1024, logs)
	if err != nil {
		return nil, fmt.Errorf("replica: log cache: %w", err)
	}
	r.raft, err = raft.NewRaft(rc, f, cached, stable, snaps, r.trans)
	if err != nil {
		return nil, fmt.Errorf("replica: start raft: %w", err)
	}
	closers = append(closers, func() error { return r.raft.Shutdown().Error() })

	if cfg.Bootstrap && !hasState {
		conf := raft.Configuration{}
		peers := cfg.Peers
		if len(peers) == 0 {
			peers = []Peer{{ID: cfg.ID, Addr: string(r.trans.LocalAddr())}}
		}
		for _, p := range peers {
			conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
		}
		if err := r.raft.BootstrapCluster(conf).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return nil, fmt.Errorf("replica: bootstrap: %w", err)
		}
	}
	if cfg.Marks != nil {
		r.marks = startMarkWriter(r, mark)
	}
	logger.Info("vault replica started", "addr", string(r.trans.LocalAddr()), "applied", applied, "bootstrap", cfg.Bootstrap && !hasState)
	return r, nil
}

func (r *Replica) dirtyPath() string { return filepath.Join(r.cfg.Dir, "state.db.dirty") }

// bootID identifies the running kernel boot ("" where unknown).
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// checkUncleanStop looks for the marker a run without fsync leaves until its
// clean Close. Found with this boot's id, only the process stopped: the
// kernel's page cache still holds every write, state.db is intact and is
// synced at once (unclean is true). Found with another boot id (or none),
// the machine crashed or lost power and state.db may be corrupt or silently
// stale: it is discarded, and Raft rebuilds it from the newest snapshot and
// the log, which are fsynced.
func (r *Replica) checkUncleanStop(statePath string) (unclean bool, err error) {
	b, err := os.ReadFile(r.dirtyPath())
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("replica: %w", err)
	}
	if boot := bootID(); boot != "" && string(b) == boot {
		r.log.Warn("the last run stopped without closing; the machine did not restart, so state.db is intact")
		return true, nil
	}
	r.log.Warn("the machine restarted since state.db was written without fsync; rebuilding it from the snapshot and the log")
	if err := os.Remove(statePath); err != nil && !os.IsNotExist(err) {
		return false, fmt.Errorf("replica: discard unsynced %s: %w", statePath, err)
	}
	return false, nil
}

// writeMarker records, when the state machine runs without fsync, that
// state.db may be unsynced until a clean Close; with SyncState it removes a
// marker left by an earlier run.
func (r *Replica) writeMarker() error {
	if r.cfg.SyncState {
		if err := os.Remove(r.dirtyPath()); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("replica: %w", err)
		}
		return nil
	}
	if err := atomicfile.Replace(r.dirtyPath(), []byte(bootID()), 0o600); err != nil {
		return fmt.Errorf("replica: write %s: %w", r.dirtyPath(), err)
	}
	return nil
}

// storageFailed stops Raft after the state machine's storage failed: the
// replica must not apply later entries on top of a missing one. It restarts
// from its files once repaired (the log is replayed from the last index the
// state machine stored).
func (r *Replica) storageFailed(err error) {
	r.mu.Lock()
	r.failure = err
	r.mu.Unlock()
	r.log.Error("vault state storage failed; stopping this replica (the others continue); restart it once the disk is fixed", "error", err)
	r.raft.Shutdown().Error()
}

func (r *Replica) stopped() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failure != nil {
		return fmt.Errorf("%w: %w", ErrClosed, r.failure)
	}
	if r.closed {
		return ErrClosed
	}
	return nil
}

// Addr returns the address peers use for this replica.
func (r *Replica) Addr() string { return string(r.trans.LocalAddr()) }

// ID returns the replica's id.
func (r *Replica) ID() string { return r.cfg.ID }

// Apply proposes cmd, waits until it is committed by a majority and applied
// here, and returns the state machine's result (refusals such as
// CodeWrongPassword are results, not errors). The replica orders commands;
// it adds nothing to them (the vault server names a Register's guess
// limit).
//
// Errors: *NotLeaderError (errors.Is ErrNotLeader) when this replica is not
// the leader — nothing was applied; ErrOutcomeUnknown when the entry may or
// may not have been committed; ErrClosed; ctx's error (wrapped with
// ErrOutcomeUnknown once the command was proposed).
func (r *Replica) Apply(ctx context.Context, cmd vaultstate.Command) (vaultstate.Result, error) {
	if err := r.stopped(); err != nil {
		return nil, err
	}
	data, err := cmd.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	if r.raft.State() != raft.Leader {
		return nil, r.notLeader()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var timeout time.Duration
	if d, ok := ctx.Deadline(); ok {
		if timeout = time.Until(d); timeout <= 0 {
			return nil, context.DeadlineExceeded
		}
	}
	f := r.raft.Apply(data, timeout)
	if err := r.wait(ctx, f); err != nil {
		return nil, err
	}
	res, ok := f.Response().(vaultstate.Result)
	if !ok || res == nil {
		// Only an entry the state machine had applied before a restart
		// answers nil, and no proposal of this process can be one.
		return nil, fmt.Errorf("replica: entry %d answered nothing: %w", f.Index(), ErrOutcomeUnknown)
	}
	return res, nil
}

// wait waits for a raft future and maps its error.
func (r *Replica) wait(ctx context.Context, f raft.Future) error {
	var err error
	if ctx.Done() == nil {
		err = f.Error()
	} else {
		done := make(chan error, 1)
		go func() { done <- f.Error() }()
		select {
		case err = <-done:
		case <-ctx.Done():
			return fmt.Errorf("replica: %w: %w", ErrOutcomeUnknown, ctx.Err())
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return r.notLeader()
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("replica: not proposed in time: %w", context.DeadlineExceeded)
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrAbortedByRestore):
		return fmt.Errorf("replica: %w: %w (%v)", ErrOutcomeUnknown, r.notLeader(), err)
	case errors.Is(err, raft.ErrRaftShutdown):
		if serr := r.stopped(); serr != nil {
			return fmt.Errorf("%w: %w", ErrOutcomeUnknown, serr)
		}
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, ErrClosed)
	}
	return fmt.Errorf("replica: %w: %w", ErrOutcomeUnknown, err)
}

func (r *Replica) notLeader() error {
	addr, id := r.raft.LeaderWithID()
	if string(id) == r.cfg.ID {
		id, addr = "", ""
	}
	return &NotLeaderError{LeaderID: string(id), LeaderAddr: string(addr)}
}

// Lookup reads an account from this replica's state machine. The read is
// local and may lag the log (use Barrier on a new leader): the leader uses
// it to compute KE2 and proposes a LoginStart carrying the epoch it read,
// which the state machine refuses with CodeConflict if the record changed.
func (r *Replica) Lookup(id vaultstate.RecordID) (*vaultstate.Account, error) {
	return r.machine.Account(id)
}

// RecordIDs lists up to limit record ids after after, in order, from this
// replica's state machine (a local read, like Lookup).
func (r *Replica) RecordIDs(after vaultstate.RecordID, limit int) ([]vaultstate.RecordID, error) {
	return r.machine.RecordIDs(after, limit)
}

// Members returns the fleet's member directory (each member's VaultService
// URL and data centre, replicated by the state machine) from this replica's
// state machine: a local read, which may lag the log like Lookup.
func (r *Replica) Members() ([]vaultstate.Member, error) {
	return r.machine.Members()
}

// MembersVersion changes whenever Members may have changed (see
// state.Machine.MembersVersion): callers cache Members by it.
func (r *Replica) MembersVersion() uint64 { return r.machine.MembersVersion() }

// Done is closed once the replica is closed.
func (r *Replica) Done() <-chan struct{} { return r.done }

// Barrier waits until every entry committed before it is applied to this
// replica's state machine. Only the leader can issue one.
func (r *Replica) Barrier(ctx context.Context) error {
	var timeout time.Duration
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	return r.wait(ctx, r.raft.Barrier(timeout))
}

// Leader returns the leader's id and address, empty if none is known.
func (r *Replica) Leader() (id, addr string) {
	a, i := r.raft.LeaderWithID()
	return string(i), string(a)
}

// IsLeader reports whether this replica is the leader.
func (r *Replica) IsLeader() bool { return r.raft.State() == raft.Leader }

// WaitForLeader waits until a leader is known and returns it.
func (r *Replica) WaitForLeader(ctx context.Context) (id, addr string, err error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if id, addr = r.Leader(); id != "" {
			return id, addr, nil
		}
		select {
		case <-ctx.Done():
			return "", "", fmt.Errorf("replica %s: no leader elected: %w", r.cfg.ID, ctx.Err())
		case <-tick.C:
		}
	}
}

// AddVoter adds (or updates the address of) a voter. Only the leader can.
func (r *Replica) AddVoter(ctx context.Context, id, addr string) error {
	if r.raft.State() != raft.Leader {
		return r.notLeader()
	}
	return r.wait(ctx, r.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeoutOf(ctx)))
}

// TransferLeadership hands leadership to the voter id and waits for the
// transfer (bounded by ctx). Only the leader can.
func (r *Replica) TransferLeadership(ctx context.Context, id string) error {
	if r.raft.State() != raft.Leader {
		return r.notLeader()
	}
	servers, err := r.Servers()
	if err != nil {
		return err
	}
	i := slices.IndexFunc(servers, func(p Peer) bool { return p.ID == id })
	if i < 0 || id == r.cfg.ID {
		return fmt.Errorf("replica: transfer leadership: %q is not another server of the fleet", id)
	}
	return r.wait(ctx, r.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(servers[i].Addr)))
}

// RemoveServer removes a server from the fleet. Only the leader can.
func (r *Replica) RemoveServer(ctx context.Context, id string) error {
	if r.raft.State() != raft.Leader {
		return r.notLeader()
	}
	return r.wait(ctx, r.raft.RemoveServer(raft.ServerID(id), 0, timeoutOf(ctx)))
}

func timeoutOf(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return 0
}

// Servers returns the fleet's current configuration.
func (r *Replica) Servers() ([]Peer, error) {
	f := r.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("replica: read configuration: %w", err)
	}
	var out []Peer
	for _, s := range f.Configuration().Servers {
		out = append(out, Peer{ID: string(s.ID), Addr: string(s.Address)})
	}
	return out, nil
}

// Stats is a replica's view of Raft, for status output and metrics.
type Stats struct {
	State             string // Leader, Follower, Candidate, Shutdown
	Term              uint64
	LastLogIndex      uint64
	CommitIndex       uint64
	AppliedIndex      uint64 // by Raft's count
	FSMIndex          uint64 // last index applied by the state machine (what Lookup sees)
	FSMCommittedIndex uint64 // last index committed to state.db (a restart applies the log after it)
	LastSnapshotIndex uint64
	LastContact       time.Time // with the leader (zero on the leader)
	LeaderID          string
	LeaderAddr        string
	Restores          int64 // snapshots installed since Open
}

// Stats returns the replica's Raft state.
func (r *Replica) Stats() Stats {
	lid, laddr := r.Leader()
	fsmIndex, _ := r.machine.LastApplied()
	fsmCommitted, _ := r.machine.LastCommitted()
	snapIndex, _ := strconv.ParseUint(r.raft.Stats()["last_snapshot_index"], 10, 64)
	return Stats{
		State:             r.raft.State().String(),
		Term:              r.raft.CurrentTerm(),
		LastLogIndex:      r.raft.LastIndex(),
		CommitIndex:       r.raft.CommitIndex(),
		AppliedIndex:      r.raft.AppliedIndex(),
		FSMIndex:          fsmIndex,
		FSMCommittedIndex: fsmCommitted,
		LastSnapshotIndex: snapIndex,
		LastContact:       r.raft.LastContact(),
		LeaderID:          lid,
		LeaderAddr:        laddr,
		Restores:          r.fsm.restores.Load(),
	}
}

// StateHash is the state machine's unkeyed hash of its plaintext state
// at the returned applied index (vaultstate.Machine.StateHash): equal on
// replicas that applied the same entries, whatever their keys.
func (r *Replica) StateHash() (uint64, [32]byte, error) { return r.machine.StateHash() }

// Snapshot takes a snapshot now and compacts the log (normally automatic).
func (r *Replica) Snapshot() error {
	if err := r.raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return fmt.Errorf("replica: snapshot: %w", err)
	}
	return r.WriteMark()
}

// Close stops the replica gracefully: a leader first hands leadership to
// another voter (bounded by 5 s) so the fleet does not wait for an election
// timeout, then Raft stops and the files are closed.
func (r *Replica) Close() error {
	r.closeOnce.Do(func() {
		if r.raft.State() == raft.Leader && r.otherVoters() {
			done := make(chan error, 1)
			go func() { done <- r.raft.LeadershipTransfer().Error() }()
			select {
			case err := <-done:
				if err != nil {
					r.log.Warn("leadership transfer before shutdown failed; the others will elect a leader after the election timeout", "error", err)
				}
			case <-time.After(transferTimeout):
				r.log.Warn("leadership transfer before shutdown timed out")
			}
		}
		r.closeErr = r.shutdown()
	})
	return r.closeErr
}

// shutdown stops Raft at once (no leadership transfer) and closes the files.
func (r *Replica) shutdown() error {
	failed := r.stopped() != nil
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.doneOnce.Do(func() { close(r.done) })
	err := r.raft.Shutdown().Error()
	if r.marks != nil {
		// The last applied index, once nothing applies any more.
		err = errors.Join(err, r.marks.stop())
	}
	err = errors.Join(err, r.trans.Close(), r.wal.Close(), r.machine.Close())
	if err != nil {
		return fmt.Errorf("replica: close: %w", err)
	}
	if !r.cfg.SyncState && !failed {
		// state.db is synced and consistent: no rebuild at the next start.
		if err := os.Remove(r.dirtyPath()); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("replica: close: %w", err)
		}
	}
	r.log.Info("vault replica stopped")
	return nil
}

func (r *Replica) otherVoters() bool {
	f := r.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && string(s.ID) != r.cfg.ID {
			return true
		}
	}
	return false
}
