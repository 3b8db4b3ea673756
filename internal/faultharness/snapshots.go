//go:build unix

package faultharness

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer/internal/server/serve"
)

// SnapshotSettings are the replicas' Raft snapshot settings ('snapshots'
// in a 'vault serve --config' file; OPERATIONS.md).
type SnapshotSettings struct {
	Threshold    uint64        // entries since the last snapshot before a new one
	Interval     time.Duration // how often a replica checks (hashicorp/raft waits 1–2 intervals)
	TrailingLogs uint64        // entries kept after a snapshot
}

// DefaultSnapshots are the harness's settings: aggressive, so that in the
// short profile (~330 entries/s) every replica snapshots every second or
// two, and a replica that was down or cut off for a few seconds, or a new
// member, finds the entries it lacks compacted away and must be sent a
// snapshot (InstallSnapshot) instead of the log.
var DefaultSnapshots = SnapshotSettings{Threshold: 256, Interval: time.Second, TrailingLogs: 64}

func (s SnapshotSettings) String() string {
	return fmt.Sprintf("threshold %d, interval %v, trailing_logs %d", s.Threshold, s.Interval, s.TrailingLogs)
}

// snapshotSettings reads COFFER_HARNESS_SNAPSHOTS: THRESHOLD/INTERVAL/TRAILING
// (e.g. "1024/5s/256"), or "default" for the replicas' own defaults (nil:
// no config file). Unset: DefaultSnapshots.
func snapshotSettings() (*SnapshotSettings, error) {
	v := os.Getenv("COFFER_HARNESS_SNAPSHOTS")
	switch v {
	case "":
		s := DefaultSnapshots
		return &s, nil
	case "default":
		return nil, nil
	}
	f := strings.Split(v, "/")
	if len(f) != 3 {
		return nil, fmt.Errorf("COFFER_HARNESS_SNAPSHOTS=%q: want THRESHOLD/INTERVAL/TRAILING_LOGS (e.g. 256/1s/64) or default", v)
	}
	var s SnapshotSettings
	var err1, err2, err3 error
	s.Threshold, err1 = strconv.ParseUint(f[0], 10, 64)
	s.Interval, err2 = time.ParseDuration(f[1])
	s.TrailingLogs, err3 = strconv.ParseUint(f[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || s.Threshold == 0 || s.Interval <= 0 || s.TrailingLogs == 0 {
		return nil, fmt.Errorf("COFFER_HARNESS_SNAPSHOTS=%q: want THRESHOLD/INTERVAL/TRAILING_LOGS, all positive (e.g. 256/1s/64)", v)
	}
	return &s, nil
}

// replicaFile is what a replica's 'vault serve --config' file holds: the
// metrics address (the VaultService port serves no metrics), the app
// backend's token key for vault tokens, the pacing (nil: none — the
// workload spends budgets at line speed on purpose), the snapshot settings
// (nil: the replicas' defaults) and, when sealed, the sealed secrets file.
// The flags give everything else (they override the file; the file alone
// need not be complete).
type replicaFile struct {
	Metrics, TokenKey, Secrets string
	Snapshots                  *SnapshotSettings
	Pacing                     *serve.Pacing
}

// writeReplicaConfig writes f to path as a serve.Config.
func writeReplicaConfig(path string, f replicaFile) error {
	c := &serve.Config{MetricsListen: f.Metrics, Secrets: f.Secrets, Pacing: f.Pacing,
		AppTokenKey: f.TokenKey, AppTokenIssuer: tokenIssuer, VaultAudience: vaultAudience}
	if c.Pacing == nil {
		c.Pacing = &serve.Pacing{}
	}
	if s := f.Snapshots; s != nil {
		c.Snapshots = &serve.Snapshots{Threshold: s.Threshold, Interval: serve.Duration{Duration: s.Interval}, TrailingLogs: s.TrailingLogs}
	}
	return serve.WriteConfig(path, c)
}

// JoinLog is the leader's Raft log, as its raft-wal segment files show it,
// when a new member joined (Cluster.Replace).
type JoinLog struct {
	Leader    string
	Segments  int    // segment files in the leader's raft directory
	FirstBase uint64 // the lowest base index among them
}

// StartCompacted reports whether the leader's log could no longer give a
// new member its entries from index 1, so that it had to send a snapshot:
// its first segment is sealed or deleted, and the harness's settings
// compact the log within seconds of the start. raft-wal (v0.4.1) keeps
// serving compacted entries that are still in its current segment, so a
// leader with one segment from index 1 may send the log instead.
func (j JoinLog) StartCompacted() bool { return j.Segments > 1 || j.FirstBase > 1 }

func (j JoinLog) String() string {
	return fmt.Sprintf("leader %s had %d WAL segment(s) from index %d", j.Leader, j.Segments, j.FirstBase)
}

// walSegments reads raft-wal's segment files (BASE-ID.wal) in a replica's
// data directory.
func walSegments(dataDir string) (n int, first uint64, err error) {
	files, err := filepath.Glob(filepath.Join(dataDir, "raft", "*.wal"))
	if err != nil {
		return 0, 0, err
	}
	for _, f := range files {
		var base, id uint64
		if _, err := fmt.Sscanf(filepath.Base(f), "%020d-%016x.wal", &base, &id); err != nil {
			continue
		}
		if n == 0 || base < first {
			first = base
		}
		n++
	}
	return n, first, nil
}

// noteJoin records the leader's log as the new member id joins.
func (c *Cluster) noteJoin(id string) {
	l := c.Leader()
	if l < 0 {
		return
	}
	c.mu.Lock()
	leader, data := c.Replicas[l].ID, c.Replicas[l].Data
	c.mu.Unlock()
	n, first, err := walSegments(data)
	if err != nil || n == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.joins == nil {
		c.joins = map[string]JoinLog{}
	}
	c.joins[id] = JoinLog{Leader: leader, Segments: n, FirstBase: first}
}

// JoinLogs are the leaders' logs when the new members joined, by new id.
func (c *Cluster) JoinLogs() map[string]JoinLog {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]JoinLog{}
	for k, v := range c.joins {
		out[k] = v
	}
	return out
}

// Metrics a replica reports about snapshots (vault/metrics.go).
const (
	metricSnapshotIndex = "coffer_vault_raft_last_snapshot_index"
	metricRestores      = "coffer_vault_raft_snapshot_restores_total"
)

// SnapshotCounts are what the sampler saw of one replica (an id: a new
// member in a place is another replica).
type SnapshotCounts struct {
	ID string
	// Taken: rises of the last snapshot index with no restore (a lower
	// bound: two snapshots between samples count as one).
	Taken int
	// Restores: rises of coffer_vault_raft_snapshot_restores_total, summed
	// over the replica's processes (a restart starts it from zero).
	Restores int
	// NewMember: the replica started with an empty data directory (a
	// replacement), so every snapshot it restored came from a peer.
	NewMember bool
	LastIndex float64
}

type snapPlace struct {
	id       string
	index    float64
	restores float64
}

// SnapshotSampler follows, on every replica, the last snapshot index and
// the snapshot restores (/metrics), to tell whether the run exercised
// taking snapshots and installing them on a replica that fell behind.
// Counts made between the last scrape and a kill are lost: lower bounds.
type SnapshotSampler struct {
	c        *Cluster
	h        *History
	logf     func(format string, args ...any)
	mu       sync.Mutex
	places   []snapPlace
	byID     map[string]*SnapshotCounts
	order    []string
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
}

// SampleSnapshots scrapes every replica every interval until Stop. Each
// restore seen is logged with the fault in progress or last ended.
func (c *Cluster) SampleSnapshots(h *History, interval time.Duration, logf func(format string, args ...any)) *SnapshotSampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &SnapshotSampler{c: c, h: h, logf: logf, places: make([]snapPlace, len(c.Replicas)),
		byID: map[string]*SnapshotCounts{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		every(ctx, interval, s.sample)
	}()
	return s
}

func (s *SnapshotSampler) sample() {
	for i := range s.c.Replicas {
		id := s.c.ID(i)
		m, err := s.c.Scrape(i)
		if err != nil || s.c.ID(i) != id {
			continue
		}
		idx, res := m[metricSnapshotIndex], m[metricRestores]
		s.mu.Lock()
		p := &s.places[i]
		if p.id != id {
			*p = snapPlace{id: id}
		}
		cnt := s.byID[id]
		if cnt == nil {
			cnt = &SnapshotCounts{ID: id, NewMember: !s.c.bootstrapped(i)}
			s.byID[id] = cnt
			s.order = append(s.order, id)
		}
		dr := res - p.restores
		if res < p.restores { // a restart: the counter began again at zero
			dr = res
		}
		if dr > 0 {
			cnt.Restores += int(dr)
			s.logf("snapshots: %s restored %.0f snapshot(s) (%s; last snapshot index %.0f, applied %.0f) %s",
				id, dr, map[bool]string{true: "new member: from a peer", false: "from a peer, or its own at start"}[cnt.NewMember],
				idx, m["coffer_vault_raft_applied_index"], s.context())
		} else if idx > p.index {
			cnt.Taken++
		}
		cnt.LastIndex = max(cnt.LastIndex, idx)
		p.index, p.restores = idx, res
		s.mu.Unlock()
	}
}

// context names the fault in progress, or the last one that ended.
func (s *SnapshotSampler) context() string {
	if s.h == nil {
		return ""
	}
	now := s.h.Now()
	var last *Event
	for _, e := range s.h.Events() {
		if e.Start <= now && (e.End == 0 || e.End > now) {
			return fmt.Sprintf("at %.1f s, during %q", time.Duration(now).Seconds(), e.What)
		}
		if e.End != 0 && (last == nil || e.End > last.End) {
			last = e
		}
	}
	if last != nil {
		return fmt.Sprintf("at %.1f s, %.1f s after %q ended", time.Duration(now).Seconds(), time.Duration(now-last.End).Seconds(), last.What)
	}
	return fmt.Sprintf("at %.1f s", time.Duration(now).Seconds())
}

// Stop samples once more, stops sampling and returns the counts by
// replica, in the order the replicas were first seen.
// A second Stop only returns the counts.
func (s *SnapshotSampler) Stop() []SnapshotCounts {
	s.cancel()
	<-s.done
	s.stopOnce.Do(s.sample)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []SnapshotCounts
	for _, id := range s.order {
		out = append(out, *s.byID[id])
	}
	return out
}

// LogSnapshotCounts are what the replica logs (hashicorp/raft's messages)
// say about snapshots: exact where the metrics give lower bounds, but
// tied to the library's wording, so reported and not asserted.
type LogSnapshotCounts struct {
	Taken     int // "snapshot complete up to"
	Installed int // "Installed remote snapshot" (InstallSnapshot from the leader)
	AtStart   int // the replica's own snapshot restored at start (state.db behind it)
	Failed    int // "failed to take snapshot", "failed to install snapshot", "failed to restore snapshot"
	// FirstFailures are the first few of those lines (a leader's "failed
	// to install snapshot" on a follower it lost mid-transfer is expected
	// under faults; a failed restore or take is worth a look).
	FirstFailures []string
}

// SnapshotLogs counts snapshot messages in every vault-*.log of dir, by
// replica id.
func SnapshotLogs(dir string) (map[string]LogSnapshotCounts, error) {
	files, err := filepath.Glob(filepath.Join(dir, "vault-*.log"))
	if err != nil {
		return nil, err
	}
	out := map[string]LogSnapshotCounts{}
	for _, f := range files {
		id := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "vault-"), ".log")
		var n LogSnapshotCounts
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.Contains(line, `"snapshot complete up to"`):
				n.Taken++
			case strings.Contains(line, `"Installed remote snapshot"`):
				n.Installed++
			case strings.Contains(line, "state machine is behind the newest snapshot"):
				n.AtStart++
			case strings.Contains(line, `"failed to take snapshot"`), strings.Contains(line, `"failed to install snapshot"`),
				strings.Contains(line, `"failed to restore snapshot"`):
				n.Failed++
				if len(n.FirstFailures) < 3 {
					n.FirstFailures = append(n.FirstFailures, line)
				}
			}
		}
		err = sc.Err()
		fh.Close()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", f, err)
		}
		out[id] = n
	}
	return out, nil
}

// snapshotSummary formats the sampler's and the logs' counts.
func snapshotSummary(counts []SnapshotCounts, logs map[string]LogSnapshotCounts) string {
	var b strings.Builder
	var ids []string
	byID := map[string]SnapshotCounts{}
	for _, c := range counts {
		ids = append(ids, c.ID)
		byID[c.ID] = c
	}
	slices.SortFunc(ids, func(a, b string) int { return idNumber(a) - idNumber(b) })
	for _, id := range ids {
		c, l := byID[id], logs[id]
		kind := "original"
		if c.NewMember {
			kind = "new member"
		}
		fmt.Fprintf(&b, "  %-4s %-10s metrics: taken ≥ %d, restored %d, last index %.0f; logs: taken %d, installed from the leader %d, restored own at start %d, failures %d\n",
			id, kind, c.Taken, c.Restores, c.LastIndex, l.Taken, l.Installed, l.AtStart, l.Failed)
		for _, f := range l.FirstFailures {
			fmt.Fprintf(&b, "       %s\n", f)
		}
	}
	return b.String()
}

// idNumber is N of replica id rN (for sorting r10 after r9).
func idNumber(id string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(id, "r"))
	return n
}
