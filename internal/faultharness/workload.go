package faultharness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Workload runs concurrent clients on a few hot accounts and many cold
// ones: registrations, recoveries with the right and wrong passwords,
// password and key changes (authorized by the key or by a fresh login),
// turning recovery off, and status queries. Each worker keeps a belief of
// every account's password and key, updated from acknowledged results; a
// belief can be stale or uncertain (after unknown outcomes), which only
// makes some ops fail: the checks use the recorded history, not beliefs.
type Workload struct {
	D       *Driver
	Hot     []string
	Cold    []string
	Workers int
	// HotShare is the probability a worker picks a hot account.
	HotShare float64
	// Seed makes the choices reproducible (the fleet's timing is not).
	Seed uint64

	mu      sync.Mutex
	beliefs map[string]*belief
	ops     atomic.Int64
}

type cred struct{ pw, key int }

type belief struct {
	mu   sync.Mutex
	live bool
	cur  cred
	// maybe holds other records an unknown op may have stored; when set,
	// the account is resolved first.
	maybe []cred
	// zombie: a live record whose password and key are unknown; it is
	// worn down with wrong guesses until destroyed.
	zombie bool
}

func (w *Workload) belief(a string) *belief {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.beliefs == nil {
		w.beliefs = map[string]*belief{}
	}
	b := w.beliefs[a]
	if b == nil {
		b = &belief{}
		w.beliefs[a] = b
	}
	return b
}

// Ops is how many ops the workload ran.
func (w *Workload) Ops() int64 { return w.ops.Load() }

// Run runs the workers until ctx ends.
func (w *Workload) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range w.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(w.Seed, uint64(i)))
			for ctx.Err() == nil {
				w.step(ctx, i, rng)
			}
		}()
	}
	wg.Wait()
}

func (w *Workload) pick(rng *rand.Rand) (string, bool) {
	if len(w.Hot) > 0 && rng.Float64() < w.HotShare {
		return w.Hot[rng.IntN(len(w.Hot))], true
	}
	return w.Cold[rng.IntN(len(w.Cold))], false
}

// opCtx is the context of one client op: the workload's end does not cut
// an op short (a cut op would be recorded as unknown for no reason).
func opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Minute)
}

func (w *Workload) step(ctx context.Context, client int, rng *rand.Rand) {
	account, hot := w.pick(rng)
	b := w.belief(account)
	b.mu.Lock()
	live, cur, maybe, zombie := b.live, b.cur, append([]cred(nil), b.maybe...), b.zombie
	b.mu.Unlock()
	octx, cancel := opCtx()
	defer cancel()
	d := w.D
	count := func(o *Op) *Op { w.ops.Add(1); return o }

	switch {
	case len(maybe) > 0:
		w.resolve(octx, client, account, b, cur, maybe)
		return
	case zombie:
		if rng.IntN(3) == 0 {
			w.refresh(octx, client, account, b)
			return
		}
		o := count(d.Recover(octx, client, account, d.WrongPassword()))
		if o.Result == ResDestroyed || o.Result == ResWrongDestroyed {
			w.set(b, func(b *belief) { b.live, b.zombie = false, false })
		}
		return
	case !live:
		if rng.IntN(5) == 0 {
			w.refresh(octx, client, account, b)
			return
		}
		n := cred{d.NewPassword(), d.NewKey()}
		o := count(d.Enroll(octx, client, account, n.pw, n.key, AuthNone, 0))
		w.afterEnroll(b, o, cur, n)
		return
	}

	r := rng.Float64()
	wrongShare := 0.15
	if hot {
		wrongShare = 0.25
	}
	switch {
	case r < 0.30:
		o := count(d.Recover(octx, client, account, cur.pw))
		w.afterRecover(b, o, cur)
	case r < 0.30+wrongShare:
		o := count(d.Recover(octx, client, account, d.WrongPassword()))
		if o.Result == ResDestroyed || o.Result == ResWrongDestroyed {
			w.set(b, func(b *belief) { b.live = false })
		}
	case r < 0.58:
		w.refresh(octx, client, account, b)
	case r < 0.68: // change the password, proving the key
		n := cred{d.NewPassword(), cur.key}
		o := count(d.ChangePassword(octx, client, account, n.pw, n.key))
		w.afterEnroll(b, o, cur, n)
	case r < 0.74: // a new password and key, authorized by a fresh login
		o := count(d.Recover(octx, client, account, cur.pw))
		w.afterRecover(b, o, cur)
		if o.Result != ResOK {
			return
		}
		n := cred{d.NewPassword(), d.NewKey()}
		e := count(d.Enroll(octx, client, account, n.pw, n.key, AuthSession, o.ID))
		w.afterEnroll(b, e, cur, n)
	case r < 0.79: // a new key, proving the old one
		n := cred{d.NewPassword(), d.NewKey()}
		o := count(d.Enroll(octx, client, account, n.pw, n.key, AuthKey, cur.key))
		w.afterEnroll(b, o, cur, n)
	case r < 0.82: // re-register without authorization: must be refused
		n := cred{d.NewPassword(), d.NewKey()}
		o := count(d.Enroll(octx, client, account, n.pw, n.key, AuthNone, 0))
		w.afterEnroll(b, o, cur, n)
	case !hot && r < 0.86: // turn recovery off with the key
		o := count(d.Disable(octx, client, account, AuthKey, cur.key))
		w.afterDisable(b, o, cur)
	case !hot && r < 0.89: // turn it off after a fresh login
		o := count(d.Recover(octx, client, account, cur.pw))
		w.afterRecover(b, o, cur)
		if o.Result == ResOK {
			e := count(d.Disable(octx, client, account, AuthSession, o.ID))
			w.afterDisable(b, e, cur)
		}
	default:
		w.refresh(octx, client, account, b)
	}
}

func (w *Workload) set(b *belief, f func(*belief)) {
	b.mu.Lock()
	f(b)
	b.mu.Unlock()
}

// refresh asks Status and corrects the belief's liveness.
func (w *Workload) refresh(ctx context.Context, client int, account string, b *belief) {
	o := w.D.Status(ctx, client, account)
	w.ops.Add(1)
	if o.Result != ResOK {
		return
	}
	w.set(b, func(b *belief) {
		if !o.Status.Registered {
			b.live, b.zombie, b.maybe = false, false, nil
		} else if !b.live {
			b.zombie = true // registered, by an op whose outcome we do not know
		}
	})
}

func (w *Workload) afterEnroll(b *belief, o *Op, old, n cred) {
	w.set(b, func(b *belief) {
		switch {
		case o.Result == ResOK:
			b.live, b.cur, b.maybe, b.zombie = true, n, nil, false
		case o.Unknown():
			b.maybe = append(b.maybe, n)
		case o.Result == ResUnauthorized && !b.live:
			b.zombie = true
		}
	})
}

func (w *Workload) afterRecover(b *belief, o *Op, c cred) {
	w.set(b, func(b *belief) {
		switch o.Result {
		case ResDestroyed, ResWrongDestroyed:
			if b.cur == c {
				b.live = false
			}
		case ResWrong:
			if b.cur == c { // the password changed under us, or the record is gone
				b.maybe = append(b.maybe, c)
			}
		}
	})
}

func (w *Workload) afterDisable(b *belief, o *Op, c cred) {
	w.set(b, func(b *belief) {
		switch {
		case o.Result == ResOK || o.Result == ResNotRegistered || o.Result == ResDestroyed:
			b.live, b.maybe, b.zombie = false, nil, false
		case o.Unknown():
			b.maybe = append(b.maybe, cred{})
		}
	})
}

// resolve finds out which record an account holds after unknown outcomes:
// it replaces the record with a fresh password, proving each candidate key
// in turn (no guess is spent), or learns that none is stored.
func (w *Workload) resolve(ctx context.Context, client int, account string, b *belief, cur cred, maybe []cred) {
	d := w.D
	st := d.Status(ctx, client, account)
	w.ops.Add(1)
	if st.Result != ResOK {
		return
	}
	if !st.Status.Registered {
		w.set(b, func(b *belief) { b.live, b.maybe, b.zombie = false, nil, false })
		return
	}
	keys := []int{cur.key}
	for _, m := range maybe {
		if m.key != 0 {
			keys = append(keys, m.key)
		}
	}
	for _, k := range keys {
		if k == 0 {
			continue
		}
		n := cred{d.NewPassword(), k}
		o := d.Enroll(ctx, client, account, n.pw, k, AuthKey, k)
		w.ops.Add(1)
		switch {
		case o.Result == ResOK:
			w.set(b, func(b *belief) { b.live, b.cur, b.maybe, b.zombie = true, n, nil, false })
			return
		case o.Result != ResUnauthorized:
			return // try again later
		}
	}
	w.set(b, func(b *belief) { b.maybe, b.zombie = nil, true })
}

// Accounts returns n account names with prefix.
func Accounts(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

// Final reads every account once the fleet is healed: Status, and a
// Recover with the believed password where a record is believed live, so
// the history ends with definite observations.
func (w *Workload) Final(client int) {
	all := append(append([]string(nil), w.Hot...), w.Cold...)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 6)
	for i, a := range all {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := opCtx()
			defer cancel()
			c := client + i%6
			o := w.D.Status(ctx, c, a)
			o.Phase = "final"
			b := w.belief(a)
			b.mu.Lock()
			live, cur, sure := b.live, b.cur, len(b.maybe) == 0 && !b.zombie
			b.mu.Unlock()
			if live && sure && o.Result == ResOK && o.Status.Registered {
				r := w.D.Recover(ctx, c, a, cur.pw)
				r.Phase = "final"
			}
		}()
	}
	wg.Wait()
}
