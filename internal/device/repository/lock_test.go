package repository

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

// deadOwner returns the identity of a process of this machine that has
// exited.
func deadOwner(t *testing.T) owner {
	t.Helper()
	cmd := exec.Command("sleep", "0.2")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	o := thisProcess()
	o.PID = cmd.Process.Pid
	start, err := processStart(o.PID)
	if err != nil {
		t.Fatal(err)
	}
	o.Start = start
	cmd.Wait()
	return o
}

// TestRegressDeadLockOwner (bug 6): a lock left by a killed backup on this
// machine does not defer a prune's sweep, and Unlock removes it.
func TestRegressDeadLockOwner(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	now := time.Now().UTC()
	me := thisProcess()
	if me.Start == 0 || me.Boot == "" || me.PIDNS == "" {
		t.Fatalf("own identity incomplete: %+v", me)
	}
	reused := me
	reused.Start++ // same pid, another process
	other := me
	other.Host = "another-host"
	for name, o := range map[string]owner{"locks/00000000000000d1": deadOwner(t), "locks/00000000000000d2": reused, "locks/00000000000000a1": other} {
		if err := f.repo.writeLock(ctx, name, lockBody{Type: lockShared, owner: o, Time: now}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := f.repo.locks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, li := range all {
		if want := li.Name != "locks/00000000000000a1"; li.Stale != want {
			t.Errorf("%s: stale %v (%s), want %v", li.Name, li.Stale, li.Reason, want)
		}
	}
	sum, err := f.repo.Prune(ctx, 1)
	if err != nil || !sum.SweepDeferred || len(sum.DeferredBy) != 1 || sum.DeferredBy[0].Host != "another-host" {
		t.Fatalf("prune with a live remote lock and dead local ones: %+v %v", sum, err)
	}
	us, err := f.repo.Unlock(ctx, false)
	if err != nil || len(us.Removed) != 2 || len(us.Kept) != 1 {
		t.Fatalf("unlock: %+v %v", us, err)
	}
	if sum, err := f.repo.Prune(ctx, 1); err != nil || !sum.SweepDeferred {
		t.Fatalf("prune with a live remote lock: %+v %v", sum, err)
	}
	if us, err := f.repo.Unlock(ctx, true); err != nil || len(us.Removed) != 1 {
		t.Fatalf("forced unlock: %+v %v", us, err)
	}
	if sum, err := f.repo.Prune(ctx, 1); err != nil || sum.SweepDeferred {
		t.Fatalf("prune with no locks: %+v %v", sum, err)
	}
	if got := f.objects(locksPrefix); len(got) != 0 {
		t.Fatalf("locks left: %v", got)
	}
}

func TestOwnLockIsLive(t *testing.T) {
	if why := thisProcess().deadReason(); why != "" {
		t.Fatalf("this process is %q", why)
	}
}
