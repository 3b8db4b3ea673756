// Package storagetest is the conformance suite every storage.Backend must
// pass. A backend's tests call Run with a constructor of empty backends:
//
//	func TestConformance(t *testing.T) {
//		storagetest.Run(t, func(t *testing.T) storage.Backend {
//			b, err := local.New(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			return b
//		})
//	}
//
// Every backend must refuse a PutIfAbsent of a name that was taken before
// the call began. A backend that states storage.Capabilities.AtomicCreate
// must also let exactly one of many concurrent PutIfAbsent calls for a
// name win, and refuse every later one (AtomicCreate); for a backend that
// does not claim it, that test is skipped.
//
// The large-object tests write a 40 MiB object (LargeSize) and an 11 MiB
// one with PutIfAbsent, so a backend that uploads in parts should be
// configured with small parts (5 MiB, S3's minimum) to exercise them.
package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/storage"
)

// Sizes of the large objects written by the suite.
const (
	LargeSize         = 40 << 20
	LargeIfAbsentSize = 11 << 20
)

// Run runs the conformance suite. newBackend must return a backend that
// holds no objects, distinct from the ones it returned before (a fresh
// directory, a fresh key prefix); it may register cleanup with t.Cleanup.
func Run(t *testing.T, newBackend func(t *testing.T) storage.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b storage.Backend)
	}{
		{"PutGetStat", testPutGetStat},
		{"Overwrite", testOverwrite},
		{"Missing", testMissing},
		{"Delete", testDelete},
		{"PutIfAbsent", testPutIfAbsent},
		{"AtomicCreate", testAtomicCreate},
		{"Large", testLarge},
		{"LargePutIfAbsent", testLargePutIfAbsent},
		{"List", testList},
		{"ListStop", testListStop},
		{"Names", testNames},
		{"InvalidNames", testInvalidNames},
		{"ConcurrentPuts", testConcurrentPuts},
		{"FailedPut", testFailedPut},
		{"Canceled", testCanceled},
		{"Sync", testSync},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t)
			if b.Location() == "" {
				t.Error("Location() is empty")
			}
			if c1, c2 := b.Capabilities(), b.Capabilities(); c1 != c2 {
				t.Errorf("Capabilities() changed from %+v to %+v", c1, c2)
			}
			tc.fn(t, b)
		})
	}
}

// Data returns n pseudo-random bytes determined by seed.
func Data(seed uint64, n int) []byte {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	s[2], s[3] = byte(seed>>16), byte(seed>>24)
	p := make([]byte, n)
	rand.NewChaCha8(s).Read(p)
	return p
}

func put(t *testing.T, b storage.Backend, name string, data []byte) {
	t.Helper()
	if err := b.Put(t.Context(), name, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", name, len(data), err)
	}
}

func get(t *testing.T, b storage.Backend, name string) []byte {
	t.Helper()
	rc, err := b.Get(t.Context(), name)
	if err != nil {
		t.Fatalf("Get(%q): %v", name, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%q): reading: %v", name, err)
	}
	return data
}

func wantContent(t *testing.T, b storage.Backend, name string, want []byte) {
	t.Helper()
	got := get(t, b, name)
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%q) = %d bytes (sha256 %x), want %d bytes (sha256 %x)",
			name, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
	info, err := b.Stat(t.Context(), name)
	if err != nil {
		t.Fatalf("Stat(%q): %v", name, err)
	}
	if info.Name != name || info.Size != int64(len(want)) {
		t.Fatalf("Stat(%q) = {Name %q, Size %d}, want {%q, %d}", name, info.Name, info.Size, name, len(want))
	}
}

func wantNotExist(t *testing.T, b storage.Backend, name string) {
	t.Helper()
	if _, err := b.Stat(t.Context(), name); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("Stat(%q) error = %v, want ErrNotExist", name, err)
	}
	rc, err := b.Get(t.Context(), name)
	if err == nil {
		rc.Close()
	}
	if !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("Get(%q) error = %v, want ErrNotExist", name, err)
	}
}

func list(t *testing.T, b storage.Backend, prefix string) map[string]int64 {
	t.Helper()
	got := make(map[string]int64)
	err := b.List(t.Context(), prefix, func(info storage.ObjectInfo) error {
		if _, dup := got[info.Name]; dup {
			t.Errorf("List(%q) returned %q twice", prefix, info.Name)
		}
		got[info.Name] = info.Size
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return got
}

func testPutGetStat(t *testing.T, b storage.Backend) {
	for i, size := range []int{0, 1, 1000, 1<<20 + 3} {
		name := fmt.Sprintf("obj/%d", size)
		data := Data(uint64(i), size)
		start := time.Now()
		put(t, b, name, data)
		wantContent(t, b, name, data)
		info, err := b.Stat(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		// Servers keep whole seconds; allow for a little clock skew.
		if d := info.ModTime.Sub(start); d < -time.Minute || d > time.Minute {
			t.Errorf("Stat(%q).ModTime = %v, want about %v", name, info.ModTime, start)
		}
	}
}

func testOverwrite(t *testing.T, b storage.Backend) {
	put(t, b, "x", Data(1, 1000))
	second := Data(2, 10)
	put(t, b, "x", second)
	wantContent(t, b, "x", second)
	if got := list(t, b, ""); len(got) != 1 || got["x"] != 10 {
		t.Fatalf("List after overwrite = %v, want map[x:10]", got)
	}
}

func testMissing(t *testing.T, b storage.Backend) {
	wantNotExist(t, b, "nothing")
	wantNotExist(t, b, "no/such/dir/object")
	put(t, b, "dir/x", []byte("x"))
	wantNotExist(t, b, "dir")     // a prefix of a name, not an object
	wantNotExist(t, b, "dir/x/y") // below an object
	if err := b.Delete(t.Context(), "nothing"); err != nil {
		t.Errorf("Delete of a missing object: %v, want nil", err)
	}
	if err := b.Delete(t.Context(), "dir"); err != nil {
		t.Errorf("Delete(\"dir\") (a prefix, no object): %v, want nil", err)
	}
	wantContent(t, b, "dir/x", []byte("x"))
}

func testDelete(t *testing.T, b storage.Backend) {
	put(t, b, "a/b", []byte("hello"))
	put(t, b, "a/c", []byte("world"))
	if err := b.Delete(t.Context(), "a/b"); err != nil {
		t.Fatal(err)
	}
	wantNotExist(t, b, "a/b")
	if got := list(t, b, ""); len(got) != 1 || got["a/c"] != 5 {
		t.Fatalf("List after Delete = %v, want map[a/c:5]", got)
	}
	if err := b.Delete(t.Context(), "a/b"); err != nil {
		t.Fatalf("second Delete: %v, want nil", err)
	}
	put(t, b, "a/b", []byte("again"))
	wantContent(t, b, "a/b", []byte("again"))
}

func putIfAbsent(b storage.Backend, ctx context.Context, name string, data []byte) error {
	return b.PutIfAbsent(ctx, name, bytes.NewReader(data), int64(len(data)))
}

func testPutIfAbsent(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	first, second := Data(1, 300), Data(2, 300)
	if err := putIfAbsent(b, ctx, "gen/1", first); err != nil {
		t.Fatalf("first PutIfAbsent: %v", err)
	}
	wantContent(t, b, "gen/1", first)
	if err := putIfAbsent(b, ctx, "gen/1", second); !errors.Is(err, storage.ErrExist) {
		t.Fatalf("second PutIfAbsent error = %v, want ErrExist", err)
	}
	wantContent(t, b, "gen/1", first)

	put(t, b, "gen/2", first)
	if err := putIfAbsent(b, ctx, "gen/2", second); !errors.Is(err, storage.ErrExist) {
		t.Fatalf("PutIfAbsent over a Put object: error = %v, want ErrExist", err)
	}
	wantContent(t, b, "gen/2", first)

	if err := b.Delete(ctx, "gen/1"); err != nil {
		t.Fatal(err)
	}
	if err := putIfAbsent(b, ctx, "gen/1", second); err != nil {
		t.Fatalf("PutIfAbsent after Delete: %v", err)
	}
	wantContent(t, b, "gen/1", second)

	if err := putIfAbsent(b, ctx, "empty", nil); err != nil {
		t.Fatalf("PutIfAbsent of an empty object: %v", err)
	}
	wantContent(t, b, "empty", nil)
}

// testAtomicCreate holds a backend that claims AtomicCreate to it: of
// writers racing to create one name exactly one wins, and a create after
// the race is refused too.
func testAtomicCreate(t *testing.T, b storage.Backend) {
	if !b.Capabilities().AtomicCreate {
		t.Skip("the backend does not claim Capabilities.AtomicCreate")
	}
	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = putIfAbsent(b, t.Context(), "manifests/7", Data(uint64(i), 1000+i))
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("PutIfAbsent succeeded for writers %d and %d", winner, i)
			}
			winner = i
		case !errors.Is(err, storage.ErrExist):
			t.Errorf("writer %d: error = %v, want nil or ErrExist", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer succeeded")
	}
	wantContent(t, b, "manifests/7", Data(uint64(winner), 1000+winner))
	if err := putIfAbsent(b, t.Context(), "manifests/7", Data(99, 1000)); !errors.Is(err, storage.ErrExist) {
		t.Fatalf("PutIfAbsent after the race: error = %v, want ErrExist", err)
	}
	wantContent(t, b, "manifests/7", Data(uint64(winner), 1000+winner))
}

func testLarge(t *testing.T, b storage.Backend) {
	data := Data(40, LargeSize)
	put(t, b, "big/object", data)
	wantContent(t, b, "big/object", data)
	if got := list(t, b, "big/"); got["big/object"] != LargeSize {
		t.Fatalf("List(big/) = %v, want big/object of %d bytes", got, LargeSize)
	}
}

func testLargePutIfAbsent(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	data := Data(11, LargeIfAbsentSize)
	if err := putIfAbsent(b, ctx, "big/once", data); err != nil {
		t.Fatalf("PutIfAbsent of %d bytes: %v", len(data), err)
	}
	wantContent(t, b, "big/once", data)
	if err := putIfAbsent(b, ctx, "big/once", Data(12, LargeIfAbsentSize)); !errors.Is(err, storage.ErrExist) {
		t.Fatalf("second large PutIfAbsent error = %v, want ErrExist", err)
	}
	wantContent(t, b, "big/once", data)
}

func testList(t *testing.T, b storage.Backend) {
	names := []string{"a", "b/c", "b/d/e", "b/d/f", "bb", "bc/x", "c/x/y/z"}
	all := make(map[string]int64)
	for i, n := range names {
		put(t, b, n, Data(uint64(i), i))
		all[n] = int64(i)
	}
	cases := []struct {
		prefix string
		want   []string
	}{
		{"", names},
		{"a", []string{"a"}},
		{"b", []string{"b/c", "b/d/e", "b/d/f", "bb", "bc/x"}},
		{"b/", []string{"b/c", "b/d/e", "b/d/f"}},
		{"b/d", []string{"b/d/e", "b/d/f"}},
		{"b/d/", []string{"b/d/e", "b/d/f"}},
		{"b/d/e", []string{"b/d/e"}},
		{"bc", []string{"bc/x"}},
		{"c/x/", []string{"c/x/y/z"}},
		{"d", nil},
		{"nope/", nil},
		{"b/c/", nil},
	}
	for _, c := range cases {
		got := list(t, b, c.prefix)
		var gotNames []string
		for n, size := range got {
			gotNames = append(gotNames, n)
			if size != all[n] {
				t.Errorf("List(%q): %q has size %d, want %d", c.prefix, n, size, all[n])
			}
		}
		sort.Strings(gotNames)
		if !slices.Equal(gotNames, c.want) {
			t.Errorf("List(%q) = %q, want %q", c.prefix, gotNames, c.want)
		}
	}
}

func testListStop(t *testing.T, b storage.Backend) {
	for i := range 5 {
		put(t, b, fmt.Sprintf("s/%d", i), []byte("x"))
	}
	stop := errors.New("stop here")
	calls := 0
	err := b.List(t.Context(), "s/", func(storage.ObjectInfo) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) {
		t.Fatalf("List error = %v, want the callback's error", err)
	}
	if calls != 1 {
		t.Fatalf("List called the callback %d times after it failed, want 1", calls)
	}
}

func testNames(t *testing.T, b storage.Backend) {
	names := []string{
		"config",
		"data/ab/ab12cd34ef",
		"manifests/00000000000000000007",
		"with space/and-dash_under.dot~tilde",
		"ünïcødé/名前",
		"x.y/z..w",
	}
	for i, n := range names {
		put(t, b, n, Data(uint64(i), 10+i))
	}
	for i, n := range names {
		wantContent(t, b, n, Data(uint64(i), 10+i))
	}
	if got := list(t, b, ""); len(got) != len(names) {
		t.Fatalf("List = %v, want the %d names %q", got, len(names), names)
	}
}

func testInvalidNames(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	bad := []string{
		"", "/abs", "a/", "a//b", ".", "..", "../x", "a/../b", "a/./b", "./a",
		".hidden", "a/.tmp", `a\b`, "nul\x00", "ctl\n", string([]byte{0xff, 0xfe}),
		string(bytes.Repeat([]byte("x"), storage.MaxNameLen+1)),
	}
	check := func(op, name string, err error) {
		t.Helper()
		if !errors.Is(err, storage.ErrInvalidName) {
			t.Errorf("%s(%q) error = %v, want ErrInvalidName", op, name, err)
		}
	}
	data := []byte("data")
	for _, n := range bad {
		check("Put", n, b.Put(ctx, n, bytes.NewReader(data), 4))
		check("PutIfAbsent", n, putIfAbsent(b, ctx, n, data))
		rc, err := b.Get(ctx, n)
		if err == nil {
			rc.Close()
		}
		check("Get", n, err)
		_, err = b.Stat(ctx, n)
		check("Stat", n, err)
		check("Delete", n, b.Delete(ctx, n))
	}
	for _, p := range []string{"/", "../", "a//", "..", "./", "a/../"} {
		err := b.List(ctx, p, func(storage.ObjectInfo) error { return nil })
		check("List", p, err)
	}
	if got := list(t, b, ""); len(got) != 0 {
		t.Fatalf("invalid names created objects: %v", got)
	}
}

func testConcurrentPuts(t *testing.T, b storage.Backend) {
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			data := Data(uint64(i), 64<<10+i)
			errs[i] = b.Put(t.Context(), fmt.Sprintf("data/%02x/obj%d", i%4, i), bytes.NewReader(data), int64(len(data)))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Put %d: %v", i, err)
		}
	}
	if got := list(t, b, "data/"); len(got) != n {
		t.Fatalf("List(data/) found %d objects, want %d: %v", len(got), n, got)
	}
	for i := range n {
		wantContent(t, b, fmt.Sprintf("data/%02x/obj%d", i%4, i), Data(uint64(i), 64<<10+i))
	}
}

var errBody = errors.New("storagetest: body read failure")

// failingReaderAt fails every read at or beyond failAt.
type failingReaderAt struct {
	r      io.ReaderAt
	failAt int64
	err    error
}

func (f failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= f.failAt {
		return 0, f.err
	}
	if off+int64(len(p)) > f.failAt {
		n, _ := f.r.ReadAt(p[:f.failAt-off], off)
		return n, f.err
	}
	return f.r.ReadAt(p, off)
}

func testFailedPut(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	for _, size := range []int{100 << 10, LargeIfAbsentSize} {
		data := Data(uint64(size), size)
		broken := failingReaderAt{bytes.NewReader(data), int64(size) * 2 / 3, errBody}
		short := failingReaderAt{bytes.NewReader(data), int64(size) / 2, io.EOF}
		for _, body := range []failingReaderAt{broken, short} {
			name := fmt.Sprintf("failed/%d", size)
			err := b.Put(ctx, name, body, int64(size))
			if err == nil || errors.Is(err, storage.ErrUnavailable) {
				t.Fatalf("Put(%q) of a body failing with %v: error = %v, want a non-retryable error", name, body.err, err)
			}
			if body.err == errBody && !errors.Is(err, errBody) {
				t.Errorf("Put(%q) error = %v, want it to wrap the body's error", name, err)
			}
			wantNotExist(t, b, name)
			err = b.PutIfAbsent(ctx, name, body, int64(size))
			if err == nil || errors.Is(err, storage.ErrUnavailable) || errors.Is(err, storage.ErrExist) {
				t.Fatalf("PutIfAbsent(%q) of a failing body: error = %v, want a non-retryable error", name, err)
			}
			wantNotExist(t, b, name)

			// A failed overwrite keeps the previous object.
			name = fmt.Sprintf("failed/%d-kept", size)
			put(t, b, name, []byte("previous"))
			if err := b.Put(ctx, name, body, int64(size)); err == nil {
				t.Fatalf("Put(%q) of a failing body succeeded", name)
			}
			wantContent(t, b, name, []byte("previous"))
			if err := b.Delete(ctx, name); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := list(t, b, ""); len(got) != 0 {
		t.Fatalf("failed puts left objects: %v", got)
	}
}

func testCanceled(t *testing.T, b storage.Backend) {
	put(t, b, "there", []byte("x"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	data := Data(3, 1000)
	if err := b.Put(ctx, "c", bytes.NewReader(data), 1000); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a canceled context: error = %v, want context.Canceled", err)
	}
	if err := b.PutIfAbsent(ctx, "c", bytes.NewReader(data), 1000); !errors.Is(err, context.Canceled) {
		t.Errorf("PutIfAbsent with a canceled context: error = %v, want context.Canceled", err)
	}
	wantNotExist(t, b, "c")
	if rc, err := b.Get(ctx, "there"); !errors.Is(err, context.Canceled) {
		if err == nil {
			rc.Close()
		}
		t.Errorf("Get with a canceled context: error = %v, want context.Canceled", err)
	}
	if _, err := b.Stat(ctx, "there"); !errors.Is(err, context.Canceled) {
		t.Errorf("Stat with a canceled context: error = %v, want context.Canceled", err)
	}
	err := b.List(ctx, "", func(storage.ObjectInfo) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("List with a canceled context: error = %v, want context.Canceled", err)
	}
}

func testSync(t *testing.T, b storage.Backend) {
	s, ok := b.(storage.Syncer)
	if !ok {
		t.Skip("backend does not implement storage.Syncer")
	}
	put(t, b, "synced/x", []byte("x"))
	if err := s.Sync(t.Context()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	wantContent(t, b, "synced/x", []byte("x"))
}
