//go:build unix

package faultharness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// Nemesis injects faults into a Cluster and records each in the History.
type Nemesis struct {
	last int // the replica the last fault hit (+1; 0: none)
	C    *Cluster
	H    *History
	Logf func(format string, args ...any)
	// Injected counts faults by kind.
	Injected map[string]int
	errs     []error
}

func (n *Nemesis) logf(format string, args ...any) {
	if n.Logf != nil {
		n.Logf(format, args...)
	}
}

// Errs returns the harness errors met while injecting (a replica that
// would not restart, say).
func (n *Nemesis) Errs() []error { return n.errs }

func (n *Nemesis) fail(err error) {
	if err != nil {
		n.errs = append(n.errs, err)
		n.logf("nemesis: %v", err)
	}
}

func (n *Nemesis) count(kind string) {
	if n.Injected == nil {
		n.Injected = map[string]int{}
	}
	n.Injected[kind]++
}

// hold waits d, logging the fleet's state halfway.
func (n *Nemesis) hold(ctx context.Context, d time.Duration) {
	sleep(ctx, d/2)
	n.logf("  during: %s", n.C.Describe())
	sleep(ctx, d-d/2)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// target picks the leader (if leader) or a running follower; -1 if none.
func (n *Nemesis) target(leader bool, rng *rand.Rand) int {
	l := n.C.Leader()
	if leader {
		n.last = l + 1
		return l
	}
	f := n.C.Followers(l)
	if len(f) > 1 { // prefer a replica the last fault did not hit
		for k, i := range f {
			if i == n.last-1 {
				f = append(f[:k:k], f[k+1:]...)
				break
			}
		}
	}
	if len(f) == 0 {
		return -1
	}
	i := f[rng.IntN(len(f))]
	n.last = i + 1
	return i
}

func (n *Nemesis) role(i, leader int) string {
	if i == leader {
		return "leader"
	}
	return "follower"
}

// KillRestart SIGKILLs replicas and restarts them after down.
func (n *Nemesis) KillRestart(ctx context.Context, ids []int, down time.Duration) {
	for _, i := range ids {
		if i < 0 {
			return
		}
	}
	l := n.C.Leader()
	var names []string
	for _, i := range ids {
		names = append(names, fmt.Sprintf("%s (%s)", n.C.Replicas[i].ID, n.role(i, l)))
	}
	done := n.H.Event("SIGKILL %v, restart after %v", names, down)
	n.logf("fault: SIGKILL %v", names)
	for _, i := range ids {
		n.fail(n.C.Kill(i))
		n.count("kill " + n.role(i, l))
	}
	n.hold(ctx, down)
	for _, i := range ids {
		n.fail(n.C.Restart(i))
	}
	done()
}

// Isolate cuts replica i from every other replica for d.
func (n *Nemesis) Isolate(ctx context.Context, i int, mode PartitionMode, d time.Duration) {
	if i < 0 {
		return
	}
	l := n.C.Leader()
	done := n.H.Event("isolate %s (%s), %s, for %v", n.C.Replicas[i].ID, n.role(i, l), mode, d)
	n.logf("fault: isolate %s (%s, %s)", n.C.Replicas[i].ID, n.role(i, l), mode)
	n.count("isolate " + n.role(i, l))
	n.C.Net.SetMode(mode)
	n.C.Net.Isolate(i)
	n.hold(ctx, d)
	n.C.Net.Heal()
	done()
}

// Partition splits the fleet into groups for d.
func (n *Nemesis) Partition(ctx context.Context, groups [][]int, mode PartitionMode, d time.Duration) {
	var names [][]string
	for _, g := range groups {
		var ids []string
		for _, i := range g {
			ids = append(ids, n.C.Replicas[i].ID)
		}
		names = append(names, ids)
	}
	done := n.H.Event("partition %v, %s, for %v", names, mode, d)
	n.logf("fault: partition %v (%s)", names, mode)
	n.count("partition")
	n.C.Net.SetMode(mode)
	n.C.Net.Partition(groups...)
	n.hold(ctx, d)
	n.C.Net.Heal()
	done()
}

// Pause SIGSTOPs replica i for d.
func (n *Nemesis) Pause(ctx context.Context, i int, d time.Duration) {
	if i < 0 {
		return
	}
	l := n.C.Leader()
	done := n.H.Event("SIGSTOP %s (%s) for %v", n.C.Replicas[i].ID, n.role(i, l), d)
	n.logf("fault: SIGSTOP %s (%s)", n.C.Replicas[i].ID, n.role(i, l))
	n.count("pause " + n.role(i, l))
	n.fail(n.C.Pause(i))
	n.hold(ctx, d)
	n.fail(n.C.Resume(i))
	done()
}

// Slow adds latency to every Raft link of replica i for d.
func (n *Nemesis) Slow(ctx context.Context, i int, latency, d time.Duration) {
	if i < 0 {
		return
	}
	l := n.C.Leader()
	done := n.H.Event("slow links of %s (%s): +%v each way, for %v", n.C.Replicas[i].ID, n.role(i, l), latency, d)
	n.logf("fault: slow %s (%s) +%v", n.C.Replicas[i].ID, n.role(i, l), latency)
	n.count("slow " + n.role(i, l))
	n.C.Net.SlowReplica(i, latency)
	n.hold(ctx, d)
	n.C.Net.SlowReplica(i, 0)
	done()
}

// Replace replaces replica i as an operator replaces a failed machine
// (Cluster.RemoveMember, Cluster.Replace): 'coffer vault remove', stop it,
// wipe its data, start a new replica with a new id in its place and
// 'coffer vault join' it, all while the clients run. When i is the leader,
// leadership must move to another replica once it is removed.
func (n *Nemesis) Replace(ctx context.Context, i int) {
	if i < 0 {
		return
	}
	l := n.C.Leader()
	role, old := n.role(i, l), n.C.ID(i)
	done := n.H.Event("replace %s (%s): vault remove, stop, wipe, vault join of a new replica", old, role)
	defer done()
	n.logf("fault: replace %s (%s)", old, role)
	n.count("replace " + role)
	start := time.Now()
	if err := n.C.RemoveMember(ctx, i); err != nil {
		n.fail(fmt.Errorf("removing %s (%s): %w", old, role, err))
		return
	}
	removed := time.Since(start)
	if i == l {
		deadline := time.Now().Add(20 * time.Second)
		for {
			if nl := n.C.Leader(); nl >= 0 && nl != i {
				n.logf("  leadership moved from the removed %s to %s in %v", old, n.C.ID(nl), time.Since(start).Round(time.Millisecond))
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				n.fail(fmt.Errorf("leadership did not move within 20 s of removing the leader %s: %s", old, n.C.Describe()))
				break
			}
			sleep(ctx, 100*time.Millisecond)
		}
	}
	id, err := n.C.Replace(ctx, i, 30*time.Second)
	if err != nil {
		n.fail(fmt.Errorf("replacing %s (%s) by %s: %w", old, role, id, err))
		return
	}
	n.logf("  %s removed in %v, replaced by %s (joined and caught up) in %v", old, removed.Round(time.Millisecond), id, time.Since(start).Round(time.Millisecond))
}

// HealAll undoes every fault: links healed and fast, paused replicas
// resumed, killed ones restarted.
func (n *Nemesis) HealAll() {
	n.C.Net.Heal()
	for i := range n.C.Replicas {
		n.C.Net.SlowReplica(i, 0)
		switch n.C.State(i) {
		case Paused:
			n.fail(n.C.Resume(i))
		case Killed:
			n.fail(n.C.Restart(i))
		}
	}
}

// Short is the CI schedule (about 70 s): the leader killed and restarted,
// a follower killed and restarted, the leader isolated, a follower and
// then the leader paused, the leader's links slowed, then a follower and
// then the leader replaced by new replicas (remove, wipe, join).
func (n *Nemesis) Short(ctx context.Context, rng *rand.Rand) {
	sleep(ctx, 5*time.Second)
	steps := []func(){
		func() { n.KillRestart(ctx, []int{n.target(true, rng)}, 3*time.Second) },
		func() { n.KillRestart(ctx, []int{n.target(false, rng)}, 3*time.Second) },
		func() { n.Isolate(ctx, n.target(true, rng), Blackhole, 5*time.Second) },
		func() { n.Pause(ctx, n.target(false, rng), 3*time.Second) },
		func() { n.Pause(ctx, n.target(true, rng), 3*time.Second) },
		func() { n.Slow(ctx, n.target(true, rng), 50*time.Millisecond, 4*time.Second) },
		func() { n.Replace(ctx, n.target(false, rng)) },
		func() { n.Replace(ctx, n.target(true, rng)) },
	}
	for _, s := range steps {
		if ctx.Err() != nil {
			return
		}
		if _, err := n.C.WaitLeader(ctx, 20*time.Second); err != nil {
			n.fail(err)
		}
		if n.C.Leader() < 0 {
			continue
		}
		s()
		sleep(ctx, 4*time.Second)
		n.logf("  after: %s", n.C.Describe())
	}
}

// Long injects random faults until ctx ends: kills (leader, followers,
// two at once), isolations (both modes), minority/majority partitions,
// pauses, slow links, with quiet gaps between them.
func (n *Nemesis) Long(ctx context.Context, rng *rand.Rand) {
	sleep(ctx, 5*time.Second)
	for ctx.Err() == nil {
		if _, err := n.C.WaitLeader(ctx, 30*time.Second); err != nil {
			n.fail(err)
		}
		dur := time.Duration(2+rng.IntN(7)) * time.Second
		mode := PartitionMode(rng.IntN(2))
		switch k := rng.IntN(12); k {
		case 0:
			if i := n.target(true, rng); i >= 0 {
				n.KillRestart(ctx, []int{i}, dur)
			}
		case 1:
			if i := n.target(false, rng); i >= 0 {
				n.KillRestart(ctx, []int{i}, dur)
			}
		case 2: // two at once: the fleet keeps its quorum
			l := n.target(true, rng)
			f := n.target(false, rng)
			if l >= 0 && f >= 0 && l != f {
				n.KillRestart(ctx, []int{l, f}, dur)
			}
		case 3:
			if i := n.target(true, rng); i >= 0 {
				n.Isolate(ctx, i, mode, dur)
			}
		case 4:
			if i := n.target(false, rng); i >= 0 {
				n.Isolate(ctx, i, mode, dur)
			}
		case 5: // the leader in the minority
			l := n.target(true, rng)
			if l < 0 {
				continue
			}
			perm := rng.Perm(len(n.C.Replicas))
			minority := []int{l}
			var majority []int
			for _, j := range perm {
				if j == l {
					continue
				}
				if len(minority) < 2 {
					minority = append(minority, j)
				} else {
					majority = append(majority, j)
				}
			}
			n.Partition(ctx, [][]int{minority, majority}, mode, dur)
		case 6:
			if i := n.target(false, rng); i >= 0 {
				n.Pause(ctx, i, dur)
			}
		case 7:
			if i := n.target(true, rng); i >= 0 {
				n.Pause(ctx, i, dur)
			}
		case 8:
			if i := n.target(rng.IntN(2) == 0, rng); i >= 0 {
				n.Slow(ctx, i, time.Duration(20+rng.IntN(180))*time.Millisecond, dur)
			}
		case 9: // three down for a moment: no quorum, then everyone back
			perm := rng.Perm(len(n.C.Replicas))[:3]
			n.KillRestart(ctx, perm, time.Duration(1+rng.IntN(3))*time.Second)
		case 10: // membership: a follower replaced by a new replica
			n.Replace(ctx, n.target(false, rng))
		case 11: // membership: the leader removed and replaced
			n.Replace(ctx, n.target(true, rng))
		}
		sleep(ctx, time.Duration(2+rng.IntN(6))*time.Second)
	}
}
