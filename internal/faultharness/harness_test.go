//go:build unix

package faultharness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// profile is what a run of TestFaults does.
type profile struct {
	name     string
	load     time.Duration // for the long profile; the short one follows its schedule
	workers  int
	hot      int
	cold     int
	checkFor time.Duration // porcupine's budget per account
}

func currentProfile() profile {
	if os.Getenv("COFFER_HARNESS") == "long" {
		d := 15 * time.Minute
		if s := os.Getenv("COFFER_HARNESS_DURATION"); s != "" {
			if v, err := time.ParseDuration(s); err == nil {
				d = v
			}
		}
		return profile{name: "long", load: d, workers: 10, hot: 4, cold: 300, checkFor: 5 * time.Minute}
	}
	return profile{name: "short", workers: 8, hot: 3, cold: 100, checkFor: time.Minute}
}

// The coffer binary, built once for all tests (TestMain removes it).
var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	binErr    error
)

func binary(ctx context.Context) (string, error) {
	buildOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "coffer-harness-bin-"); binErr == nil {
			binPath, binErr = BuildCoffer(ctx, "../..", binDir)
		}
	})
	return binPath, binErr
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// run is one harness run: its directory (kept on failure), binary and fleet.
type run struct {
	t     *testing.T
	dir   string
	bin   string
	c     *Cluster
	h     *History
	snaps *SnapshotSettings // nil: the replicas' defaults
}

func newRun(t *testing.T, name string) *run { return newRunWith(t, name, false) }

// newRunWith is newRun; threshold makes a threshold fleet (Config.Threshold).
func newRunWith(t *testing.T, name string, threshold bool) *run {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a 5-replica fleet of real processes; skipped with -short")
	}
	dir, err := os.MkdirTemp("", fmt.Sprintf("coffer-harness-%s-%s-", name, time.Now().Format("20060102-150405")))
	if err != nil {
		t.Fatal(err)
	}
	r := &run{t: t, dir: dir, h: NewHistory()}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("COFFER_HARNESS_KEEP") != "" {
			t.Logf("harness files (history, reports, replica logs) kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	if r.bin, err = binary(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("coffer binary ready in %v", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	sealed := os.Getenv("COFFER_HARNESS_SEALED") != ""
	if r.snaps, err = snapshotSettings(); err != nil {
		t.Fatal(err)
	}
	r.c, err = StartCluster(ctx, Config{Dir: dir, Bin: r.bin, Sealed: sealed, Snapshots: r.snaps, Threshold: threshold, Logf: t.Logf})
	if err != nil {
		t.Fatalf("starting the fleet: %v (logs in %s)", err, dir)
	}
	t.Cleanup(func() {
		if err := r.c.Close(); err != nil {
			t.Errorf("stopping the fleet: %v", err)
		}
	})
	snaps := "the replicas' defaults"
	if r.snaps != nil {
		snaps = r.snaps.String()
	}
	t.Logf("fleet of %d replicas (sealed disks: %t; threshold OPRF: %t; snapshots: %s) and a relay up in %v: %s", len(r.c.Replicas), sealed, threshold, snaps, time.Since(start).Round(time.Millisecond), r.c.Describe())
	return r
}

// checkSnapshots logs what the sampler and the replica logs saw of
// snapshots and, when require is set (the short profile with the
// harness's snapshot settings), fails the test unless the run took
// snapshots and every new member was sent one: the snapshot path must not
// silently stop being exercised.
func (r *run) checkSnapshots(counts []SnapshotCounts, require bool) {
	t := r.t
	logs, err := SnapshotLogs(r.dir)
	if err != nil {
		t.Errorf("reading the replica logs: %v", err)
	}
	var taken, restores, newMembers, newRestored, logTaken, logInstalled, logFailed int
	for _, c := range counts {
		taken += c.Taken
		restores += c.Restores
		if c.NewMember {
			newMembers++
			if c.Restores > 0 {
				newRestored++
			}
		}
	}
	for _, l := range logs {
		logTaken += l.Taken
		logInstalled += l.Installed
		logFailed += l.Failed
	}
	t.Logf("snapshots: metrics: taken ≥ %d, restored %d (%d of %d new members restored one from a peer); logs: taken %d, installed from the leader %d, failures %d\n%s",
		taken, restores, newRestored, newMembers, logTaken, logInstalled, logFailed, snapshotSummary(counts, logs))
	if !require {
		return
	}
	if taken == 0 {
		t.Errorf("snapshots: no replica took a snapshot (coffer_vault_raft_last_snapshot_index never rose without a restore) with %s", r.snaps)
	}
	if newMembers == 0 {
		t.Errorf("snapshots: no new member joined, so nothing shows a snapshot installed from a peer")
	}
	joins := r.c.JoinLogs()
	for _, c := range counts {
		if j, ok := joins[c.ID]; ok {
			t.Logf("snapshots: when %s joined, the %s (entries from index 1 compacted away: %t)", c.ID, j, j.StartCompacted())
		}
	}
	required := 0
	for _, c := range counts {
		if !c.NewMember || c.Restores > 0 {
			continue
		}
		j, ok := joins[c.ID]
		switch {
		case ok && j.StartCompacted():
			required++
			t.Errorf("snapshots: the new member %s caught up without restoring a snapshot (coffer_vault_raft_snapshot_restores_total stayed 0) although, when it joined, the %s: the entries from index 1 were compacted away (%s)", c.ID, j, r.snaps)
		case ok:
			t.Logf("WARNING: snapshots: the new member %s caught up from the log: when it joined, the %s, whose compacted entries raft-wal still serves (a slow run: fewer entries than a segment holds)", c.ID, j)
		default:
			required++
			t.Errorf("snapshots: the new member %s caught up without restoring a snapshot (coffer_vault_raft_snapshot_restores_total stayed 0), and the leader's log when it joined is unknown (no raft/*.wal segment files read)", c.ID)
		}
	}
	if newRestored == 0 && required == 0 && newMembers > 0 {
		t.Logf("WARNING: snapshots: no snapshot was installed from a peer in this run, and none had to be")
	}
}

func (r *run) driver() *Driver {
	return NewDriver(r.h, r.c.RelayURL, r.c.Bundle, r.c.Tokens, 20*time.Second)
}

// check runs every check on the history and reports failures with the
// files that show them.
func (r *run) check(timeout time.Duration, extra map[string]any) *Report {
	t := r.t
	rep := Check(r.h.Ops(), r.c.GuessLimit(), timeout)
	t.Logf("checks:\n%s", rep.Summary())
	if len(rep.Inconclusive) > 0 {
		t.Logf("WARNING: porcupine timed out on %d accounts (inconclusive, not a failure): %v", len(rep.Inconclusive), rep.Inconclusive)
	}
	if exited := r.c.Exited(); len(exited) > 0 {
		rep.Violations = append(rep.Violations, fmt.Sprintf("processes the harness did not kill exited: %v", exited))
	}
	if !rep.Failed() && os.Getenv("COFFER_HARNESS_KEEP") != "" {
		if err := r.h.WriteJSON(filepath.Join(r.dir, "history.json"), extra); err != nil {
			t.Errorf("writing the history: %v", err)
		}
	}
	if rep.Failed() {
		files, err := WriteFailure(filepath.Join(r.dir, "failure"), r.h, rep, r.c.GuessLimit(), extra)
		if err != nil {
			t.Errorf("writing the failure files: %v", err)
		}
		t.Errorf("the fleet broke its promises (%d accounts not linearizable, %d violations); see %s (open linearizability.html in a browser; replica logs vault-r*.log in %s)",
			len(rep.Illegal), len(rep.Violations), strings.Join(files, ", "), r.dir)
	}
	return rep
}

// TestFaults runs clients against a 5-replica fleet while replicas are
// killed, isolated, paused and slowed, then checks the history. The
// default (short) profile takes about two minutes; COFFER_HARNESS=long
// runs random faults for 15 minutes (COFFER_HARNESS_DURATION to change).
func TestFaults(t *testing.T) {
	p := currentProfile()
	r := newRun(t, p.name)
	c, h := r.c, r.h
	seed := uint64(time.Now().UnixNano())
	t.Logf("profile %s, seed %d", p.name, seed)

	w := &Workload{D: r.driver(), Hot: Accounts("hot", p.hot), Cold: Accounts("cold", p.cold), Workers: p.workers, HotShare: 0.4, Seed: seed}
	n := &Nemesis{C: c, H: h, Logf: t.Logf}

	sctx, stopSampling := context.WithCancel(context.Background())
	defer stopSampling()
	guesses := c.SampleCounter(sctx, "coffer_vault_guesses_total", time.Second)
	snapshots := c.SampleSnapshots(h, time.Second, t.Logf)
	defer snapshots.Stop() // no logging after the test ends, whatever ends it

	loadCtx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	loadStart := time.Now()
	go func() { defer wg.Done(); w.Run(loadCtx) }()

	faultCtx, stopFaults := context.WithCancel(context.Background())
	if p.load > 0 {
		faultCtx, stopFaults = context.WithTimeout(context.Background(), p.load)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	if p.name == "long" {
		n.Long(faultCtx, rng)
	} else {
		n.Short(faultCtx, rng)
	}
	stopFaults()
	n.HealAll()
	sleep(context.Background(), 2*time.Second)
	stopLoad()
	wg.Wait()
	loadTime := time.Since(loadStart)
	t.Logf("load: %d ops in %v (%.1f ops/s); faults injected: %v", w.Ops(), loadTime.Round(time.Millisecond), float64(w.Ops())/loadTime.Seconds(), n.Injected)
	for _, err := range n.Errs() {
		t.Errorf("nemesis: %v", err)
	}

	// Everyone back: the returning replicas must catch up.
	if err := c.WaitConverged(context.Background(), 60*time.Second); err != nil {
		t.Errorf("after healing: %v", err)
	}
	// Every replica, the new ones too, agrees on the members and the leader.
	if err := c.CheckMembership(context.Background(), 20*time.Second); err != nil {
		t.Errorf("after healing: %v", err)
	}
	t.Logf("healed: %s; proxies %+v", c.Describe(), c.Net.Stats())
	done := h.Event("final reads")
	w.Final(1000)
	done()
	vaultGuesses := guesses.Total()
	stopSampling()
	snapCounts := snapshots.Stop()
	r.checkSnapshots(snapCounts, p.name == "short" && r.snaps != nil)
	rep := r.check(p.checkFor, map[string]any{"profile": p.name, "seed": seed, "faults_injected": n.Injected, "snapshots": snapCounts})
	t.Logf("KE2 responses received by clients: %d; guesses counted by the vault (coffer_vault_guesses_total, sampled, a lower bound): %.0f",
		rep.KE2Released, vaultGuesses)
}

// TestAvailability is PROTOCOL.md's promise for a 5-replica fleet: with two
// replicas down recovery keeps working; with three down clients get a clean
// "unavailable" and no KE2 is released (no guess granted); once they return,
// the history is consistent.
func TestAvailability(t *testing.T) { availability(t, false) }

// TestAvailabilityThreshold is TestAvailability on a threshold fleet
// (PROTOCOL.md §7, 3 of 5): two replicas down leave the three partial
// evaluations a login needs; three down release no KE2 and count nothing.
func TestAvailabilityThreshold(t *testing.T) { availability(t, true) }

func availability(t *testing.T, threshold bool) {
	name := "availability"
	if threshold {
		name = "availability-threshold"
	}
	r := newRunWith(t, name, threshold)
	c, h := r.c, r.h
	d := r.driver()
	ctx := context.Background()
	accounts := Accounts("avail", 6)
	creds := map[string]cred{}
	for i, a := range accounts {
		n := cred{d.NewPassword(), d.NewKey()}
		if o := d.Enroll(ctx, i, a, n.pw, n.key, AuthNone, 0); o.Result != ResOK {
			t.Fatalf("enroll %s: %s", a, o.Describe())
		}
		creds[a] = n
	}

	// Two down (the leader and a follower): everything still works.
	l := c.Leader()
	f := c.Followers(l)[0]
	done := h.Event("SIGKILL %s (leader) and %s", c.Replicas[l].ID, c.Replicas[f].ID)
	for _, i := range []int{l, f} {
		if err := c.Kill(i); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.WaitLeader(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var twoDown []*Op
	for i, a := range accounts {
		wg.Add(1)
		old := creds[a]
		go func() {
			defer wg.Done()
			var ops []*Op
			ops = append(ops, d.Recover(ctx, i, a, old.pw))
			if i%2 == 0 {
				ops = append(ops, d.Recover(ctx, i, a, d.WrongPassword()))
			}
			ops = append(ops, d.Status(ctx, i, a))
			n := cred{d.NewPassword(), old.key}
			e := d.Enroll(ctx, i, a, n.pw, n.key, AuthKey, old.key)
			ops = append(ops, e)
			mu.Lock()
			if e.Result == ResOK {
				creds[a] = n
			}
			twoDown = append(twoDown, ops...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, o := range twoDown {
		if o.Result != ResOK && o.Result != ResWrong {
			t.Errorf("with 2 of 5 replicas down: %s (%s)", o.Describe(), o.Err)
		}
	}
	t.Logf("2 of 5 down: %d ops, all served", len(twoDown))

	// A third down: no quorum.
	third := c.Followers(c.Leader())[0]
	done2 := h.Event("SIGKILL %s: 3 of 5 down", c.Replicas[third].ID)
	if err := c.Kill(third); err != nil {
		t.Fatal(err)
	}
	outageStart := time.Now()
	var threeDown []*Op
	for i, a := range accounts {
		wg.Add(1)
		cr := creds[a]
		go func() {
			defer wg.Done()
			var o *Op
			switch i % 3 {
			case 0:
				o = d.Recover(ctx, 10+i, a, cr.pw)
			case 1:
				o = d.Recover(ctx, 10+i, a, d.WrongPassword())
			case 2:
				o = d.Status(ctx, 10+i, a)
			}
			o.Phase = "three down"
			mu.Lock()
			threeDown = append(threeDown, o)
			mu.Unlock()
		}()
	}
	// A registration on a new account too.
	fresh := cred{d.NewPassword(), d.NewKey()}
	o := d.Enroll(ctx, 20, "avail-fresh", fresh.pw, fresh.key, AuthNone, 0)
	o.Phase = "three down"
	wg.Wait()
	threeDown = append(threeDown, o)
	t.Logf("3 of 5 down: %d ops answered in %v", len(threeDown), time.Since(outageStart).Round(time.Millisecond))
	for _, o := range threeDown {
		if o.KE2 || o.Result == ResOK || o.Result == ResWrong || o.Result == ResWrongDestroyed {
			t.Errorf("with 3 of 5 replicas down a request was served (a KE2 released?): %s", o.Describe())
		}
		if took := time.Duration(o.Return - o.Call); took > 15*time.Second {
			t.Errorf("with 3 of 5 replicas down, %s took %v (the relay gives up after 10 s)", o.Describe(), took)
		}
		if !o.Unknown() || o.Anomaly || !o.Unavailable {
			t.Errorf("with 3 of 5 replicas down, not a clean 'unavailable': %s: %s", o.Describe(), o.Err)
		}
	}

	// Everyone back.
	for _, i := range []int{l, f, third} {
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	done2()
	done()
	if err := c.WaitConverged(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	var after []*Op
	for i, a := range append(accounts, "avail-fresh") {
		wg.Add(1)
		cr, ok := creds[a]
		go func() {
			defer wg.Done()
			st := d.Status(ctx, 30+i, a)
			var rec *Op
			if ok {
				rec = d.Recover(ctx, 30+i, a, cr.pw)
			}
			mu.Lock()
			after = append(after, st)
			if rec != nil {
				after = append(after, rec)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, o := range after {
		if o.Result != ResOK {
			t.Errorf("after the replicas returned: %s (%s)", o.Describe(), o.Err)
		}
	}
	r.check(time.Minute, map[string]any{"test": "availability"})
}
