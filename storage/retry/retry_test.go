package retry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/local"
	"github.com/cofferhq/coffer/storage/memory"
	"github.com/cofferhq/coffer/storage/storagetest"
)

var fast = Policy{Attempts: 4, Base: time.Millisecond, Max: 5 * time.Millisecond}

// nonAtomic is a memory backend that claims no capabilities.
type nonAtomic struct{ *memory.Backend }

func (nonAtomic) Capabilities() storage.Capabilities { return storage.Capabilities{} }

func TestCapabilitiesForwarded(t *testing.T) {
	if c := New(memory.New(), fast).Capabilities(); !c.AtomicCreate {
		t.Errorf("retry over memory: Capabilities() = %+v, want AtomicCreate", c)
	}
	if c := New(nonAtomic{memory.New()}, fast).Capabilities(); c != (storage.Capabilities{}) {
		t.Errorf("retry over a backend claiming nothing: Capabilities() = %+v, want none", c)
	}
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		return New(newFlaky(), fast)
	})
}

// flaky is a memory backend whose operations can be told to fail.
type flaky struct {
	*memory.Backend
	mu    sync.Mutex
	fail  map[string]int   // op → how many of the next calls fail
	err   map[string]error // op → error to fail with (default: unavailable)
	calls map[string]int
	// storeFirst makes a failing Put/PutIfAbsent store the object before
	// it fails, like a write whose answer was lost.
	storeFirst bool
	// listFailAfter makes a failing List deliver this many objects first.
	listFailAfter int
}

var errDown = fmt.Errorf("fake: %w: connection reset", storage.ErrUnavailable)

func newFlaky() *flaky {
	return &flaky{Backend: memory.New(), fail: map[string]int{}, err: map[string]error{}, calls: map[string]int{}}
}

func (f *flaky) failNext(op string, n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[op] = n
	f.err[op] = err
}

func (f *flaky) calls1(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// check counts a call of op and says whether it fails, and with what.
func (f *flaky) check(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	if f.fail[op] == 0 {
		return nil
	}
	f.fail[op]--
	if err := f.err[op]; err != nil {
		return err
	}
	return errDown
}

func (f *flaky) Put(ctx context.Context, name string, body io.ReaderAt, size int64) error {
	err := f.check("put")
	if err != nil && f.storeFirst {
		f.Backend.Put(ctx, name, body, size)
	}
	if err != nil {
		return err
	}
	return f.Backend.Put(ctx, name, body, size)
}

func (f *flaky) PutIfAbsent(ctx context.Context, name string, body io.ReaderAt, size int64) error {
	err := f.check("put-if-absent")
	if err != nil && f.storeFirst {
		f.Backend.PutIfAbsent(ctx, name, body, size)
	}
	if err != nil {
		return err
	}
	return f.Backend.PutIfAbsent(ctx, name, body, size)
}

func (f *flaky) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := f.check("get"); err != nil {
		return nil, err
	}
	return f.Backend.Get(ctx, name)
}

func (f *flaky) Stat(ctx context.Context, name string) (storage.ObjectInfo, error) {
	if err := f.check("stat"); err != nil {
		return storage.ObjectInfo{}, err
	}
	return f.Backend.Stat(ctx, name)
}

func (f *flaky) Delete(ctx context.Context, name string) error {
	if err := f.check("delete"); err != nil {
		return err
	}
	return f.Backend.Delete(ctx, name)
}

func (f *flaky) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	err := f.check("list")
	if err == nil {
		return f.Backend.List(ctx, prefix, fn)
	}
	n := 0
	stop := errors.New("stop")
	lerr := f.Backend.List(ctx, prefix, func(info storage.ObjectInfo) error {
		if n >= f.listFailAfter {
			return stop
		}
		n++
		return fn(info)
	})
	if lerr != nil && lerr != stop {
		return lerr
	}
	return err
}

func putString(b storage.Backend, ctx context.Context, name, s string) error {
	return b.Put(ctx, name, strings.NewReader(s), int64(len(s)))
}

func TestRetriesUnavailable(t *testing.T) {
	f := newFlaky()
	b := New(f, fast)
	ctx := t.Context()
	f.failNext("put", 3, nil)
	if err := putString(b, ctx, "a", "hello"); err != nil {
		t.Fatalf("Put after 3 transient failures: %v", err)
	}
	if got := f.calls1("put"); got != 4 {
		t.Errorf("Put tried %d times, want 4", got)
	}
	f.failNext("stat", 2, nil)
	if info, err := b.Stat(ctx, "a"); err != nil || info.Size != 5 {
		t.Fatalf("Stat = %+v, %v", info, err)
	}
	f.failNext("get", 1, nil)
	rc, err := b.Get(ctx, "a")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	rc.Close()
	f.failNext("delete", 3, nil)
	if err := b.Delete(ctx, "a"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
}

func TestGivesUp(t *testing.T) {
	f := newFlaky()
	var retries []int
	p := fast
	p.OnRetry = func(op, name string, attempt int, err error, wait time.Duration) {
		if op != "put" || name != "a" || !errors.Is(err, storage.ErrUnavailable) || wait > p.Max {
			t.Errorf("OnRetry(%q, %q, %d, %v, %v)", op, name, attempt, err, wait)
		}
		retries = append(retries, attempt)
	}
	b := New(f, p)
	f.failNext("put", 100, nil)
	err := putString(b, t.Context(), "a", "x")
	if !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), "gave up after 4 attempts") {
		t.Fatalf("error = %v, want ErrUnavailable after 4 attempts", err)
	}
	if got := f.calls1("put"); got != 4 {
		t.Errorf("Put tried %d times, want 4", got)
	}
	if fmt.Sprint(retries) != "[1 2 3]" {
		t.Errorf("OnRetry attempts = %v, want [1 2 3]", retries)
	}
}

func TestDoesNotRetryOtherErrors(t *testing.T) {
	ctx := t.Context()
	for _, e := range []error{
		fmt.Errorf("x: %w", storage.ErrNotExist),
		fmt.Errorf("x: %w", storage.ErrExist),
		fmt.Errorf("x: %w", storage.ErrInvalidName),
		errors.New("access denied"),
		context.Canceled,
	} {
		f := newFlaky()
		b := New(f, fast)
		f.failNext("put", 1, e)
		if err := putString(b, ctx, "a", "x"); err != e {
			t.Errorf("error = %v, want %v unchanged", err, e)
		}
		if got := f.calls1("put"); got != 1 {
			t.Errorf("%v: Put tried %d times, want 1", e, got)
		}
	}
}

func TestContextEndsRetrying(t *testing.T) {
	f := newFlaky()
	b := New(f, Policy{Attempts: 10, Base: time.Hour, Max: time.Hour})
	f.failNext("stat", 100, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := b.Stat(ctx, "a")
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("error = %v, want DeadlineExceeded and ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v after the context ended", d)
	}
}

func TestBackoffBounds(t *testing.T) {
	b := New(newFlaky(), Policy{Attempts: 10, Base: 100 * time.Millisecond, Max: time.Second}).(*Backend)
	var waits []time.Duration
	b.sleep = func(_ context.Context, d time.Duration) error {
		waits = append(waits, d)
		return nil
	}
	b.inner.(*flaky).failNext("delete", 100, nil)
	if err := b.Delete(t.Context(), "a"); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatal(err)
	}
	if len(waits) != 9 {
		t.Fatalf("waited %d times, want 9", len(waits))
	}
	for i, w := range waits {
		bound := min(time.Second, 100*time.Millisecond<<i)
		if w < 0 || w > bound {
			t.Errorf("wait %d = %v, want within [0, %v]", i+1, w, bound)
		}
	}
	// Full jitter: not every wait is the bound.
	var sum time.Duration
	for range 1000 {
		sum += b.backoff(1)
	}
	if avg := sum / 1000; avg < 30*time.Millisecond || avg > 70*time.Millisecond {
		t.Errorf("average first wait = %v, want about 50ms", avg)
	}
	// Huge attempt numbers do not overflow.
	if w := b.backoff(200); w < 0 || w > time.Second {
		t.Errorf("backoff(200) = %v", w)
	}
}

func TestListRetry(t *testing.T) {
	ctx := t.Context()
	f := newFlaky()
	b := New(f, fast)
	for _, n := range []string{"a", "b", "c"} {
		putString(f.Backend, ctx, n, n)
	}
	count := func() (int, error) {
		n := 0
		err := b.List(ctx, "", func(storage.ObjectInfo) error { n++; return nil })
		return n, err
	}
	// Failing before any object: retried.
	f.failNext("list", 2, nil)
	if n, err := count(); err != nil || n != 3 {
		t.Fatalf("List = %d objects, %v; want 3, nil", n, err)
	}
	// Failing part-way: not retried, no duplicates.
	f.listFailAfter = 2
	f.failNext("list", 1, nil)
	n, err := count()
	if !errors.Is(err, storage.ErrUnavailable) || n != 2 {
		t.Fatalf("List = %d objects, %v; want 2, ErrUnavailable", n, err)
	}
	if got := f.calls1("list"); got != 4 {
		t.Errorf("List tried %d times, want 4", got)
	}
	// The callback's own error, even a transient one, is returned as is.
	fnErr := fmt.Errorf("callback: %w", storage.ErrUnavailable)
	err = b.List(ctx, "", func(storage.ObjectInfo) error { return fnErr })
	if err != fnErr {
		t.Fatalf("List error = %v, want the callback's", err)
	}
	if got := f.calls1("list"); got != 5 {
		t.Errorf("List tried %d times, want 5", got)
	}
}

func TestPutIfAbsentOwnWrite(t *testing.T) {
	ctx := t.Context()
	data := storagetest.Data(1, 600<<10)
	body := func() io.ReaderAt { return bytes.NewReader(data) }

	// The first attempt stored the object but its answer was lost.
	f := newFlaky()
	f.storeFirst = true
	b := New(f, fast)
	f.failNext("put-if-absent", 1, nil)
	if err := b.PutIfAbsent(ctx, "m/1", body(), int64(len(data))); err != nil {
		t.Fatalf("PutIfAbsent whose first attempt stored the object: %v, want nil", err)
	}
	if got := f.calls1("put-if-absent"); got != 2 {
		t.Errorf("tried %d times, want 2", got)
	}

	// Without a failed attempt, ErrExist is returned without looking.
	getsBefore := f.calls1("get")
	if err := b.PutIfAbsent(ctx, "m/1", body(), int64(len(data))); !errors.Is(err, storage.ErrExist) {
		t.Fatalf("PutIfAbsent of an existing name = %v, want ErrExist", err)
	}
	if f.calls1("get") != getsBefore {
		t.Error("PutIfAbsent read the object although no attempt had failed")
	}

	// Another writer took the name meanwhile, with other content of the
	// same size.
	f = newFlaky()
	b = New(f, fast)
	other := storagetest.Data(2, len(data))
	f.Backend.Put(ctx, "m/1", bytes.NewReader(other), int64(len(other)))
	f.failNext("put-if-absent", 1, nil)
	if err := b.PutIfAbsent(ctx, "m/1", body(), int64(len(data))); !errors.Is(err, storage.ErrExist) {
		t.Fatalf("PutIfAbsent that lost to another writer = %v, want ErrExist", err)
	}
	// ... or with content that is a prefix of ours.
	f.Backend.Put(ctx, "m/2", bytes.NewReader(data[:100]), 100)
	f.failNext("put-if-absent", 1, nil)
	if err := b.PutIfAbsent(ctx, "m/2", body(), int64(len(data))); !errors.Is(err, storage.ErrExist) {
		t.Fatalf("PutIfAbsent that lost to another writer = %v, want ErrExist", err)
	}

	// The object cannot be read back: the outcome is unknown.
	f = newFlaky()
	f.storeFirst = true
	b = New(f, fast)
	f.failNext("put-if-absent", 1, nil)
	f.failNext("get", 100, nil)
	err := b.PutIfAbsent(ctx, "m/1", body(), int64(len(data)))
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, storage.ErrUnavailable) || errors.Is(err, storage.ErrExist) {
		t.Fatalf("PutIfAbsent with an unreadable result = %v, want ErrOutcomeUnknown and ErrUnavailable", err)
	}
}

func TestSyncer(t *testing.T) {
	if _, ok := New(memory.New(), fast).(storage.Syncer); ok {
		t.Error("a wrapped memory backend implements Syncer")
	}
	l, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := New(l, fast)
	s, ok := b.(storage.Syncer)
	if !ok {
		t.Fatal("a wrapped local backend does not implement Syncer")
	}
	if err := s.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if Unwrap(b) != storage.Backend(l) || b.Location() != l.Location() {
		t.Error("Unwrap or Location do not reach the wrapped backend")
	}
	if Unwrap(l) != nil {
		t.Error("Unwrap of a backend not made by New is not nil")
	}
}

func TestDefaults(t *testing.T) {
	b := New(memory.New(), Policy{}).(*Backend)
	if b.policy.Attempts != DefaultPolicy.Attempts || b.policy.Base != DefaultPolicy.Base || b.policy.Max != DefaultPolicy.Max {
		t.Errorf("policy = %+v, want DefaultPolicy's values", b.policy)
	}
}

func TestOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	loc, err := storage.Parse(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(t.Context(), loc, DefaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := Unwrap(b).(*local.Backend); !ok {
		t.Fatalf("Open gave %T over %T, want retry over *local.Backend", b, Unwrap(b))
	}
	if _, ok := b.(storage.Syncer); !ok {
		t.Error("the retrying local backend from Open is not a Syncer")
	}
	if b.Location() != dir {
		t.Errorf("Location() = %q, want %q", b.Location(), dir)
	}
	if _, err := Open(t.Context(), storage.Location{}, DefaultPolicy); !errors.Is(err, storage.ErrInvalidLocation) {
		t.Errorf("Open of the zero Location: %v", err)
	}
}
