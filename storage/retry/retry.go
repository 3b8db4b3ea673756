// Package retry wraps a storage.Backend so that operations failing with
// storage.ErrUnavailable are tried again, with exponential backoff and full
// jitter, until they succeed, fail otherwise, run out of attempts or the
// context ends.
//
// Only ErrUnavailable is retried: ErrNotExist, ErrExist, ErrInvalidName,
// access errors and the like come back at once, since trying again cannot
// change them.
//
// Per operation:
//
//   - Put, Stat, Delete: the whole call is retried. Put reads its body
//     again through ReadAt, which is why the interface takes an io.ReaderAt.
//   - Get: only the opening is retried. A failure while reading the
//     returned stream is returned to the caller, who may Get again.
//   - List: retried only if the failed attempt had not yet passed any
//     object to fn, so fn never sees a name twice. A listing that fails
//     part-way is returned as an error. (The S3 backend retries its page
//     requests itself, so long listings survive short outages.) An error
//     returned by fn is never retried.
//   - PutIfAbsent: see Backend.PutIfAbsent.
//   - Sync (when the wrapped backend is a storage.Syncer): never retried.
//     After a failed fsync the kernel may have dropped the dirty pages, so
//     a second Sync that succeeds proves nothing.
package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/cofferhq/coffer/storage"
)

// Policy says how often and how patiently to retry.
type Policy struct {
	// Attempts is the total number of tries, the first one included.
	// Zero means DefaultPolicy's; 1 disables retrying.
	Attempts int
	// Base is the upper bound of the first wait; each further wait's bound
	// doubles, up to Max. The actual wait is uniformly random between zero
	// and the bound ("full jitter"), which spreads out clients that failed
	// together. Zero means DefaultPolicy's.
	Base time.Duration
	// Max caps the bound of a wait. Zero means DefaultPolicy's.
	Max time.Duration
	// OnRetry, if set, is called before each wait, e.g. to log "storage
	// unreachable, retrying in 2s". attempt counts from 1 (the attempt that
	// just failed).
	OnRetry func(op, name string, attempt int, err error, wait time.Duration)
}

// DefaultPolicy is what package client opens repositories with: 6 attempts waiting at most
// 0.5 + 1 + 2 + 4 + 8 s, about 15 s in the worst case and half that on
// average, which rides out a restarting server or a short network outage
// without making a real outage slow to report.
var DefaultPolicy = Policy{Attempts: 6, Base: 500 * time.Millisecond, Max: 8 * time.Second}

// ErrOutcomeUnknown is wrapped, together with storage.ErrUnavailable, by
// the error of a PutIfAbsent that failed with ErrUnavailable, was retried,
// found the name taken, and could not read the object to learn whether
// the earlier attempt had stored it. The caller must not assume either
// outcome: it should read the object later and compare.
var ErrOutcomeUnknown = errors.New("outcome of an earlier attempt unknown")

// Backend is a storage.Backend that retries. New returns it as a
// storage.Backend, one that implements storage.Syncer exactly when the
// wrapped backend does.
type Backend struct {
	inner  storage.Backend
	policy Policy
	// sleep waits for d or until ctx ends; tests replace it.
	sleep func(ctx context.Context, d time.Duration) error
}

type syncBackend struct{ *Backend }

// Sync implements storage.Syncer by calling the wrapped backend's Sync
// once, without retrying.
func (b syncBackend) Sync(ctx context.Context) error {
	return b.inner.(storage.Syncer).Sync(ctx)
}

// New wraps b. Zero fields of p take DefaultPolicy's values.
func New(b storage.Backend, p Policy) storage.Backend {
	if p.Attempts <= 0 {
		p.Attempts = DefaultPolicy.Attempts
	}
	if p.Base <= 0 {
		p.Base = DefaultPolicy.Base
	}
	if p.Max <= 0 {
		p.Max = max(DefaultPolicy.Max, p.Base)
	}
	rb := &Backend{inner: b, policy: p, sleep: sleep}
	if _, ok := b.(storage.Syncer); ok {
		return syncBackend{rb}
	}
	return rb
}

// Open opens the storage at loc and wraps its backend in New with p. It is
// how package client opens a repository, with DefaultPolicy; another
// policy (Attempts 1: no retrying) is for tools and tests.
func Open(ctx context.Context, loc storage.Location, p Policy) (storage.Backend, error) {
	b, err := loc.Open(ctx)
	if err != nil {
		return nil, err
	}
	return New(b, p), nil
}

// Unwrap returns the wrapped backend of a backend made by New, or nil if b
// is not one.
func Unwrap(b storage.Backend) storage.Backend {
	switch rb := b.(type) {
	case *Backend:
		return rb.inner
	case syncBackend:
		return rb.inner
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backoff returns the wait after the given failed attempt (1-based).
func (b *Backend) backoff(attempt int) time.Duration {
	bound := b.policy.Max
	if shift := attempt - 1; shift < 32 {
		if d := b.policy.Base << shift; d > 0 && d < bound {
			bound = d
		}
	}
	return rand.N(bound + 1)
}

// do runs f until it succeeds, fails with an error other than
// ErrUnavailable, or runs out of attempts or time. again, if not nil, is
// asked before each retry whether one is allowed.
func (b *Backend) do(ctx context.Context, op, name string, f func(attempt int) error, again func() bool) error {
	start := time.Now()
	for attempt := 1; ; attempt++ {
		err := f(attempt)
		if err == nil || !errors.Is(err, storage.ErrUnavailable) {
			return err
		}
		if again != nil && !again() {
			return err
		}
		if attempt >= b.policy.Attempts {
			if attempt == 1 {
				return err
			}
			return fmt.Errorf("%w (gave up after %d attempts in %v)", err, attempt, time.Since(start).Round(time.Millisecond))
		}
		wait := b.backoff(attempt)
		if b.policy.OnRetry != nil {
			b.policy.OnRetry(op, name, attempt, err, wait)
		}
		if serr := b.sleep(ctx, wait); serr != nil {
			return fmt.Errorf("%w (stopped retrying after %d attempts: %w)", err, attempt, serr)
		}
	}
}

// Put implements storage.Backend.
func (b *Backend) Put(ctx context.Context, name string, body io.ReaderAt, size int64) error {
	return b.do(ctx, "put", name, func(int) error {
		return b.inner.Put(ctx, name, body, size)
	}, nil)
}

// PutIfAbsent implements storage.Backend.
//
// An attempt that fails with ErrUnavailable may nevertheless have stored
// the object: the request reached the server and only the answer was lost
// (a timeout, a reset connection). The retry then finds the name taken
// by our own write and would report ErrExist, and the repository would
// wrongly conclude that another writer committed the generation.
//
// So when a retry — not a first attempt — reports ErrExist, PutIfAbsent
// reads the stored object and compares it with body, byte for byte:
//
//   - identical: the object is ours (or equal to ours, which for the
//     caller is the same thing: the name holds exactly what it wanted to
//     store; the repository's objects are encrypted with random nonces,
//     so another writer's are never identical). PutIfAbsent returns nil.
//   - different: another writer won; ErrExist, as usual.
//   - unreadable: the error wraps ErrUnavailable and ErrOutcomeUnknown.
//
// Comparing sizes only (Stat) would be cheaper but could mistake another
// writer's object of the same size for ours, which would let two writers
// both believe they committed; the comparison costs a read of the object
// only in this rare case.
func (b *Backend) PutIfAbsent(ctx context.Context, name string, body io.ReaderAt, size int64) error {
	var retried bool
	err := b.do(ctx, "put-if-absent", name, func(attempt int) error {
		retried = attempt > 1
		return b.inner.PutIfAbsent(ctx, name, body, size)
	}, nil)
	if !retried || !errors.Is(err, storage.ErrExist) {
		return err
	}
	same, cerr := b.sameContent(ctx, name, body, size)
	switch {
	case cerr != nil:
		return fmt.Errorf("put-if-absent %q: an attempt failed, a retry found the name taken, and reading the object to see whether it is ours failed: %w: %w: %w",
			name, ErrOutcomeUnknown, storage.ErrUnavailable, cerr)
	case same:
		return nil
	default:
		return err
	}
}

// sameContent reports whether object name holds exactly size bytes equal
// to body's. Opening it is retried like Get.
func (b *Backend) sameContent(ctx context.Context, name string, body io.ReaderAt, size int64) (bool, error) {
	info, err := b.Stat(ctx, name)
	if errors.Is(err, storage.ErrNotExist) {
		return false, nil // taken, then deleted: not ours now
	}
	if err != nil {
		return false, err
	}
	if info.Size != size {
		return false, nil
	}
	rc, err := b.Get(ctx, name)
	if errors.Is(err, storage.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer rc.Close()
	const chunk = 256 << 10
	got := make([]byte, min(chunk, size))
	want := make([]byte, len(got))
	for off := int64(0); off < size; {
		n := min(int64(len(got)), size-off)
		if _, err := io.ReadFull(rc, got[:n]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return false, nil // shorter than it said: not ours
			}
			return false, err
		}
		if _, err := body.ReadAt(want[:n], off); err != nil && !(errors.Is(err, io.EOF) && off+n == size) {
			return false, fmt.Errorf("reading the body again: %w", err)
		}
		if string(got[:n]) != string(want[:n]) {
			return false, nil
		}
		off += n
	}
	var one [1]byte
	if n, _ := rc.Read(one[:]); n > 0 {
		return false, nil // longer than it said
	}
	return true, nil
}

// Get implements storage.Backend. Only opening the object is retried; see
// the package documentation.
func (b *Backend) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := b.do(ctx, "get", name, func(int) error {
		var err error
		rc, err = b.inner.Get(ctx, name)
		return err
	}, nil)
	if err != nil {
		return nil, err
	}
	return rc, nil
}

// Stat implements storage.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (storage.ObjectInfo, error) {
	var info storage.ObjectInfo
	err := b.do(ctx, "stat", name, func(int) error {
		var err error
		info, err = b.inner.Stat(ctx, name)
		return err
	}, nil)
	return info, err
}

// List implements storage.Backend; see the package documentation for when
// it retries.
func (b *Backend) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	delivered := false // also true when fn failed: its error is never retried
	return b.do(ctx, "list", prefix, func(int) error {
		return b.inner.List(ctx, prefix, func(info storage.ObjectInfo) error {
			delivered = true
			return fn(info)
		})
	}, func() bool { return !delivered })
}

// Delete implements storage.Backend.
func (b *Backend) Delete(ctx context.Context, name string) error {
	return b.do(ctx, "delete", name, func(int) error {
		return b.inner.Delete(ctx, name)
	}, nil)
}

// Location implements storage.Backend: the wrapped backend's.
func (b *Backend) Location() string { return b.inner.Location() }

// Capabilities implements storage.Backend: the wrapped backend's. Retrying
// keeps PutIfAbsent atomic: a retry that finds the name taken reports
// success only if the stored object is byte for byte the one it was
// writing (see PutIfAbsent).
func (b *Backend) Capabilities() storage.Capabilities { return b.inner.Capabilities() }
