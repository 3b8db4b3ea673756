package repository

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/cofferhq/coffer/internal/device/container"
	"github.com/cofferhq/coffer/storage"
)

// Locks (DESIGN.md, "Concurrency"): a backup holds a shared lock, a prune
// that deletes data an exclusive one. Each process writes its own lock
// object, then lists the others, so two processes that start together see
// each other. Locks are refreshed while held and count as stale when their
// authenticated time is older than lockStale.
const (
	lockShared    = "shared"
	lockExclusive = "exclusive"
)

var (
	lockRefresh = 5 * time.Minute
	lockStale   = 30 * time.Minute
	// lockWait is how long a backup waits for a prune's sweep to finish.
	lockWait = 2 * time.Minute
)

type lockBody struct {
	Type string `json:"type"`
	owner
	Time time.Time `json:"time"`
}

// LockInfo describes a lock in the repository (PruneSummary.DeferredBy,
// UnlockSummary).
type LockInfo struct {
	Name  string    `json:"name"`
	Type  string    `json:"type"` // "shared" (a backup), "exclusive" (a prune or repair) or "commit" (a backup committing on a store without AtomicCreate)
	Host  string    `json:"host"`
	PID   int       `json:"pid"`
	Time  time.Time `json:"time"` // last refreshed
	Stale bool      `json:"stale"`
	// Reason says why a stale lock is stale.
	Reason string `json:"reason,omitempty"`
}

// UnlockSummary reports what Unlock did.
type UnlockSummary struct {
	Removed []LockInfo `json:"removed"`
	Kept    []LockInfo `json:"kept"` // live locks (without force)
}

type heldLock struct {
	r    *Repository
	name string
	body lockBody
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

func (r *Repository) writeLock(ctx context.Context, name string, body lockBody) error {
	plain, _ := json.Marshal(body)
	sealed, err := container.Seal(r.key, container.Params{Kind: container.KindLock, Ref: r.ref(name)}, plain)
	if err != nil {
		return err
	}
	return r.b.Put(ctx, name, bytes.NewReader(sealed), int64(len(sealed)))
}

// lock takes a lock of the given type. A shared lock waits (up to lockWait)
// for live exclusive locks to go; an exclusive lock does not wait: the
// caller learns from others() whether shared locks are live.
func (r *Repository) lock(ctx context.Context, typ string) (*heldLock, error) {
	var id [8]byte
	rand.Read(id[:])
	l := &heldLock{r: r, name: locksPrefix + hex.EncodeToString(id[:]), body: lockBody{Type: typ, owner: thisProcess(), Time: time.Now().UTC()}, stop: make(chan struct{})}
	if err := r.writeLock(ctx, l.name, l.body); err != nil {
		return nil, fmt.Errorf("writing a lock to %s: %w", r.b.Location(), err)
	}
	l.wg.Go(l.refresh)
	if typ == lockShared {
		deadline := time.Now().Add(lockWait)
		for {
			others, err := l.others(ctx)
			if err != nil {
				l.release()
				return nil, err
			}
			var excl *LockInfo
			for i := range others {
				if others[i].Type == lockExclusive {
					excl = &others[i]
				}
			}
			if excl == nil {
				break
			}
			if time.Now().After(deadline) {
				l.release()
				return nil, fmt.Errorf("%w: a prune by %s (pid %d) has been removing data since %s; try again when it ends", ErrLocked, excl.Host, excl.PID, excl.Time.Format(time.RFC3339))
			}
			select {
			case <-time.After(2 * time.Second):
			case <-ctx.Done():
				l.release()
				return nil, ctx.Err()
			}
		}
	}
	return l, nil
}

func (l *heldLock) refresh() {
	t := time.NewTicker(lockRefresh)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.body.Time = time.Now().UTC()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			l.r.writeLock(ctx, l.name, l.body) // a failed refresh is retried at the next tick
			cancel()
		}
	}
}

// release removes the lock. Safe to call more than once.
func (l *heldLock) release() {
	l.once.Do(func() {
		close(l.stop)
		l.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		l.r.b.Delete(ctx, l.name)
	})
}

// others returns the live locks other than l.
func (l *heldLock) others(ctx context.Context) ([]LockInfo, error) {
	all, err := l.r.locks(ctx)
	if err != nil {
		return nil, err
	}
	var live []LockInfo
	for _, li := range all {
		if li.Name != l.name && !li.Stale {
			live = append(live, li)
		}
	}
	return live, nil
}

// locks lists the repository's locks, each marked stale or live. A lock is
// stale when its owner is known to have exited (same machine, DESIGN.md
// "Locks"), or when it has not been refreshed for lockStale. An
// unreadable lock counts by its storage time, so a damaged lock cannot
// block pruning forever.
func (r *Repository) locks(ctx context.Context) ([]LockInfo, error) {
	var names []storage.ObjectInfo
	err := r.b.List(ctx, locksPrefix, func(oi storage.ObjectInfo) error {
		names = append(names, oi)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing locks in %s: %w", r.b.Location(), err)
	}
	var out []LockInfo
	now := time.Now()
	for _, oi := range names {
		body, err := r.readLock(ctx, oi.Name)
		if errors.Is(err, storage.ErrNotExist) {
			continue // released meanwhile
		}
		if err != nil {
			li := LockInfo{Name: oi.Name, Type: lockShared, Host: "unknown (unreadable lock " + oi.Name + ")", Time: oi.ModTime}
			if now.Sub(oi.ModTime) >= lockStale {
				li.Stale, li.Reason = true, "unreadable, and older than "+lockStale.String()
			}
			out = append(out, li)
			continue
		}
		li := LockInfo{Name: oi.Name, Type: body.Type, Host: body.Host, PID: body.PID, Time: body.Time}
		if why := body.owner.deadReason(); why != "" {
			li.Stale, li.Reason = true, why
		} else if now.Sub(body.Time) >= lockStale {
			li.Stale, li.Reason = true, "not refreshed for "+now.Sub(body.Time).Round(time.Second).String()
		}
		out = append(out, li)
	}
	return out, nil
}

// Unlock removes stale locks: those whose owner is known to have exited
// (a process on this machine that was killed) and those not refreshed for
// 30 minutes. With force it removes every lock, live or not: only for when
// no other Coffer process is using the repository.
func (r *Repository) Unlock(ctx context.Context, force bool) (*UnlockSummary, error) {
	all, err := r.locks(ctx)
	if err != nil {
		return nil, err
	}
	sum := &UnlockSummary{Removed: []LockInfo{}, Kept: []LockInfo{}}
	for _, li := range all {
		if !li.Stale && !force {
			sum.Kept = append(sum.Kept, li)
			continue
		}
		if err := r.b.Delete(ctx, li.Name); err != nil {
			return sum, fmt.Errorf("removing lock %s: %w", li.Name, err)
		}
		sum.Removed = append(sum.Removed, li)
	}
	return sum, nil
}

func (r *Repository) readLock(ctx context.Context, name string) (lockBody, error) {
	var body lockBody
	rc, err := r.b.Get(ctx, name)
	if err != nil {
		return body, err
	}
	defer rc.Close()
	sealed, err := io.ReadAll(io.LimitReader(rc, 1<<16))
	if err != nil {
		return body, err
	}
	plain, err := container.Open(r.key, container.KindLock, r.ref(name), sealed, 1)
	if err != nil {
		return body, err
	}
	err = json.Unmarshal(plain, &body)
	return body, err
}
