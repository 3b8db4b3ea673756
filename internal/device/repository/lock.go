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
	"os"
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
	Type string    `json:"type"`
	Host string    `json:"host"`
	PID  int       `json:"pid"`
	Time time.Time `json:"time"`
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
	host, _ := os.Hostname()
	l := &heldLock{r: r, name: locksPrefix + hex.EncodeToString(id[:]), body: lockBody{Type: typ, Host: host, PID: os.Getpid(), Time: time.Now().UTC()}, stop: make(chan struct{})}
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
			var excl *lockBody
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
func (l *heldLock) others(ctx context.Context) ([]lockBody, error) {
	var names []storage.ObjectInfo
	err := l.r.b.List(ctx, locksPrefix, func(oi storage.ObjectInfo) error {
		if oi.Name != l.name {
			names = append(names, oi)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing locks in %s: %w", l.r.b.Location(), err)
	}
	var live []lockBody
	now := time.Now()
	for _, oi := range names {
		body, err := l.r.readLock(ctx, oi.Name)
		if errors.Is(err, storage.ErrNotExist) {
			continue // released meanwhile
		}
		if err != nil {
			// An unreadable lock counts by its storage time, so a
			// damaged lock cannot block pruning forever.
			if now.Sub(oi.ModTime) < lockStale {
				live = append(live, lockBody{Type: lockShared, Host: "unknown (unreadable lock " + oi.Name + ")", Time: oi.ModTime})
			}
			continue
		}
		if now.Sub(body.Time) < lockStale {
			live = append(live, body)
		}
	}
	return live, nil
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
