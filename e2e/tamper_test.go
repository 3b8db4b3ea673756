package e2e

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/container"
	"github.com/cofferhq/coffer/internal/device/repository"
)

// headerSize is the size of a container header (FORMAT.md, 2.1).
const headerSize = 156

// smallObject is the size up to which every byte of an object is flipped.
const smallObject = 4 << 10

// fixture is a repository with backups of a small tree, made through the
// client package.
type fixture struct {
	dir  string
	repo string
	key  *backupkey.Key
	data string
	keyF string // a key file for the binary
}

func newFixture(t *testing.T, gens int) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{dir: dir, repo: filepath.Join(dir, "repo"), key: backupkey.New()}
	f.data = smallTree(t, dir, 2500<<10)
	ctx := context.Background()
	r, err := client.Create(ctx, f.repo, f.key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := range gens {
		if i > 0 {
			writeFile(t, filepath.Join(f.data, fmt.Sprintf("gen%d.txt", i+1)), strings.Repeat("x", 100*i), 0o644)
		}
		if _, err := r.Backup(ctx, []string{f.data}, repository.BackupOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f.keyF = filepath.Join(dir, "key.txt")
	if err := client.WriteKeyFile(f.keyF, f.key); err != nil {
		t.Fatal(err)
	}
	if locks := objectsWithPrefix(t, f.repo, "locks/"); len(locks) > 0 {
		t.Fatalf("locks left after a backup: %v", locks)
	}
	return f
}

// restore restores the newest backup in-process through the client
// package, as a new device would, into a fresh target beside nothing else.
func (f *fixture) restore(t *testing.T, gen uint64) (string, error) {
	t.Helper()
	parent, err := os.MkdirTemp(f.dir, "target-")
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(parent, "out")
	done := make(chan error, 1)
	go func() {
		r, err := client.Open(context.Background(), f.repo, f.key)
		if err == nil {
			_, err = r.Restore(context.Background(), gen, target, repository.RestoreOptions{})
			r.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		return target, err
	case <-time.After(time.Minute):
		t.Fatalf("restore hung for a minute")
		return "", nil
	}
}

// refused checks that a restore fails as an integrity failure and leaves
// nothing at the target.
func (f *fixture) refused(t *testing.T, what string) {
	t.Helper()
	f.refusedGen(t, 0, what)
}

// refusedGen is refused for backup gen (0: the newest).
func (f *fixture) refusedGen(t *testing.T, gen uint64, what string) {
	t.Helper()
	target, err := f.restore(t, gen)
	if err == nil {
		t.Fatalf("%s: restore succeeded", what)
	}
	if !errors.Is(err, container.ErrIntegrity) || errors.Is(err, container.ErrWrongKey) {
		t.Fatalf("%s: restore failed, but not as an integrity failure: %v", what, err)
	}
	nothingAt(t, target)
	os.Remove(filepath.Dir(target))
}

// refusedByBinary checks that 'coffer restore' exits 5 and leaves nothing,
// and that 'coffer verify' exits 5 too.
func (f *fixture) refusedByBinary(t *testing.T, what string) {
	t.Helper()
	e := newEnv(t)
	e.vars = []string{"COFFER_REPO=" + f.repo}
	parent, err := os.MkdirTemp(f.dir, "target-")
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(parent, "out")
	r := e.run("restore", "--key-file", f.keyF, "--to", target)
	if r.code != 5 {
		t.Fatalf("%s: coffer restore: want exit 5, got %s", what, r)
	}
	if !strings.Contains(r.stderr, "coffer: restore: ") {
		t.Fatalf("%s: message: %s", what, r.stderr)
	}
	nothingAt(t, target)
	if r := e.run("verify", "--key-file", f.keyF); r.code != 5 {
		t.Fatalf("%s: coffer verify: want exit 5, got %s", what, r)
	}
}

// chunkBoundaries returns the offsets where the chunks of a container
// start, and its end.
func chunkBoundaries(t *testing.T, b []byte) []int {
	t.Helper()
	var out []int
	off := headerSize
	for off < len(b) {
		out = append(out, off)
		if off+4 > len(b) {
			t.Fatalf("container ends inside a chunk length at %d", off)
		}
		off += 4 + int(binary.BigEndian.Uint32(b[off:]))
	}
	if off != len(b) {
		t.Fatalf("chunks end at %d, container at %d", off, len(b))
	}
	return append(out, len(b))
}

// flipPositions returns the byte positions of an object to flip: all of
// them for small objects; for large ones every header byte, every chunk
// boundary ± 2, and at least 300 positions spread over the rest.
func flipPositions(t *testing.T, b []byte) []int {
	if len(b) <= smallObject {
		pos := make([]int, len(b))
		for i := range pos {
			pos[i] = i
		}
		return pos
	}
	set := map[int]bool{}
	for i := range headerSize {
		set[i] = true
	}
	for _, c := range chunkBoundaries(t, b) {
		for d := -2; d <= 2; d++ {
			if p := c + d; p >= 0 && p < len(b) {
				set[p] = true
			}
		}
	}
	const spread = 320
	step := (len(b) - headerSize) / spread
	for i := range spread {
		set[headerSize+i*step+(i*7919)%max(step, 1)] = true
	}
	set[len(b)-1] = true
	pos := make([]int, 0, len(set))
	for p := range set {
		if p < len(b) {
			pos = append(pos, p)
		}
	}
	slices.Sort(pos)
	return pos
}

// TestTamperMatrix flips, one at a time, every byte of every small object
// and of every header, and a spread of bytes including every chunk
// boundary of the large objects: every single flip must make the restore
// fail as an integrity failure and leave nothing at the target.
func TestTamperMatrix(t *testing.T) {
	f := newFixture(t, 1)
	if _, err := f.restore(t, 0); err != nil {
		t.Fatalf("untampered restore: %v", err)
	}
	big := largest(t, f.repo, "data/")
	total := 0
	for _, name := range objects(t, f.repo) {
		b, err := os.ReadFile(filepath.Join(f.repo, filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		pos := flipPositions(t, b)
		if name == big {
			if len(b) < 2<<20 || len(chunkBoundaries(t, b)) < 4 {
				t.Fatalf("the large object %s has %d bytes in %d chunks; want several chunks", name, len(b), len(chunkBoundaries(t, b))-1)
			}
			if len(pos) < 300+headerSize {
				t.Fatalf("only %d positions in %s", len(pos), name)
			}
		}
		for _, p := range pos {
			undo := flip(t, f.repo, name, int64(p))
			f.refused(t, fmt.Sprintf("%s byte %d of %d", name, p, len(b)))
			undo()
		}
		total += len(pos)
	}
	t.Logf("%d objects, %d flips, each refused", len(objects(t, f.repo)), total)
	if _, err := f.restore(t, 0); err != nil {
		t.Fatalf("restore after undoing every flip: %v", err)
	}

	// A few through the binary, for the exit code.
	for _, c := range []struct {
		name string
		off  int64
	}{
		{"config", 10},
		{"config", headerSize + 20},
		{objectsWithPrefix(t, f.repo, "manifests/")[0], 50},
		{objectsWithPrefix(t, f.repo, "manifests/")[0], headerSize + 5},
		{big, 100},
		{big, 1 << 20},
	} {
		undo := flip(t, f.repo, c.name, c.off)
		f.refusedByBinary(t, fmt.Sprintf("%s byte %d", c.name, c.off))
		undo()
	}
}

// TestTruncation cuts objects at and between chunk boundaries, and extends
// them.
func TestTruncation(t *testing.T) {
	f := newFixture(t, 1)
	for _, name := range objects(t, f.repo) {
		p := filepath.Join(f.repo, filepath.FromSlash(name))
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		cuts := map[int]bool{0: true, 1: true, headerSize - 1: true, headerSize: true, headerSize + 1: true, len(b) - 1: true, len(b) - 16: true, len(b) - 17: true}
		bounds := chunkBoundaries(t, b)
		for i, c := range bounds {
			cuts[c-1], cuts[c], cuts[c+1], cuts[c+4] = true, true, true, true
			if i+1 < len(bounds) {
				cuts[(c+bounds[i+1])/2] = true
			}
		}
		restore := saveObject(t, f.repo, name)
		for n := range cuts {
			if n < 0 || n >= len(b) {
				continue
			}
			if err := os.Truncate(p, int64(n)); err != nil {
				t.Fatal(err)
			}
			f.refused(t, fmt.Sprintf("%s cut to %d of %d bytes", name, n, len(b)))
			restore()
		}
		// Bytes appended after the final chunk.
		for _, extra := range [][]byte{{0}, b[headerSize:min(len(b), headerSize+40)], b[bounds[0]:]} {
			if err := os.WriteFile(p, append(slices.Clone(b), extra...), 0o600); err != nil {
				t.Fatal(err)
			}
			f.refused(t, fmt.Sprintf("%s with %d bytes appended", name, len(extra)))
			restore()
		}
	}
	// Through the binary.
	big := largest(t, f.repo, "data/")
	restore := saveObject(t, f.repo, big)
	b, _ := os.ReadFile(filepath.Join(f.repo, big))
	bounds := chunkBoundaries(t, b)
	if err := os.Truncate(filepath.Join(f.repo, big), int64(bounds[len(bounds)-2])); err != nil {
		t.Fatal(err)
	}
	f.refusedByBinary(t, "last chunk cut off")
	restore()
	if _, err := f.restore(t, 0); err != nil {
		t.Fatalf("restore after putting everything back: %v", err)
	}
}

// TestSwaps: objects renamed over one another, deleted, an older manifest
// over the newest, and objects from another repository under the same key.
func TestSwaps(t *testing.T) {
	f := newFixture(t, 2)
	// Objects holding data: pieces of their own, packs of small pieces,
	// and the indexes that say where packed pieces are.
	data := objectsWithPrefix(t, f.repo, "data/")
	data = append(data, objectsWithPrefix(t, f.repo, "packs/")...)
	data = append(data, objectsWithPrefix(t, f.repo, "index/")...)
	manifests := objectsWithPrefix(t, f.repo, "manifests/")
	if len(data) < 3 || len(manifests) != 2 {
		t.Fatalf("objects: %v", objects(t, f.repo))
	}
	path := func(name string) string { return filepath.Join(f.repo, filepath.FromSlash(name)) }
	copyOver := func(from, to string) func() {
		t.Helper()
		undo := saveObject(t, f.repo, to)
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path(to), b, 0o600); err != nil {
			t.Fatal(err)
		}
		return undo
	}

	t.Run("data object renamed over another", func(t *testing.T) {
		for i := range data {
			a, b := data[i], data[(i+1)%len(data)]
			undoA, undoB := saveObject(t, f.repo, a), saveObject(t, f.repo, b)
			if err := os.Rename(path(a), path(b)); err != nil {
				t.Fatal(err)
			}
			f.refused(t, a+" renamed over "+b)
			if i == 0 {
				f.refusedByBinary(t, a+" renamed over "+b)
			}
			undoA()
			undoB()
		}
	})
	t.Run("data object copied over another", func(t *testing.T) {
		for i := range data {
			a, b := data[i], data[(i+1)%len(data)]
			undo := copyOver(path(a), b)
			f.refused(t, a+" copied over "+b)
			undo()
		}
	})
	t.Run("data object deleted", func(t *testing.T) {
		for i, name := range data {
			undo := saveObject(t, f.repo, name)
			if err := os.Remove(path(name)); err != nil {
				t.Fatal(err)
			}
			f.refused(t, name+" deleted")
			if i == 0 {
				f.refusedByBinary(t, name+" deleted")
			}
			undo()
		}
	})
	t.Run("older manifest over the newest", func(t *testing.T) {
		undo := copyOver(path(manifests[0]), manifests[1])
		f.refused(t, "manifest 1 over manifest 2")
		f.refusedByBinary(t, "manifest 1 over manifest 2")
		undo()
	})
	t.Run("config over a manifest", func(t *testing.T) {
		undo := copyOver(path("config"), manifests[1])
		f.refused(t, "config over manifest 2")
		undo()
	})
	t.Run("manifest over a data object", func(t *testing.T) {
		undo := copyOver(path(manifests[1]), data[0])
		f.refused(t, "manifest over data")
		undo()
	})

	// Another repository under the same key, with the same files.
	other := filepath.Join(f.dir, "other-repo")
	ctx := context.Background()
	r, err := client.Create(ctx, other, f.key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Backup(ctx, []string{f.data}, repository.BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Backup(ctx, []string{f.data}, repository.BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	r.Close()
	otherPath := func(name string) string { return filepath.Join(other, filepath.FromSlash(name)) }
	t.Run("config from another repository", func(t *testing.T) {
		undo := copyOver(otherPath("config"), "config")
		f.refused(t, "config of another repository")
		f.refusedByBinary(t, "config of another repository")
		undo()
	})
	t.Run("manifest from another repository", func(t *testing.T) {
		for i, m := range manifests {
			undo := copyOver(otherPath(m), m)
			f.refusedGen(t, uint64(i+1), m+" of another repository")
			undo()
		}
		undo := copyOver(otherPath(manifests[1]), manifests[1])
		f.refusedByBinary(t, "manifest of another repository")
		undo()
	})
	t.Run("data object from another repository", func(t *testing.T) {
		// Pieces are named by a keyed hash that depends on the
		// repository, so the same file has another name there: put the
		// other repository's piece of the large file under this one's name.
		theirs, ours := largest(t, other, "data/"), largest(t, f.repo, "data/")
		undo := copyOver(otherPath(theirs), ours)
		f.refused(t, "data object of another repository")
		f.refusedByBinary(t, "data object of another repository")
		undo()
	})

	if _, err := f.restore(t, 0); err != nil {
		t.Fatalf("restore after putting everything back: %v", err)
	}
}

// TestReplacedRepository: a device whose repository is replaced by another
// one under the same key refuses it (exit 5).
func TestReplacedRepository(t *testing.T) {
	dir := t.TempDir()
	data := smallTree(t, dir, 0)
	repo := filepath.Join(dir, "repo")
	keyFile := filepath.Join(dir, "key.txt")
	phone := newEnv(t)
	phone.ok("init", "--repo", repo, "--key-file", keyFile)
	phone.ok("backup", data)
	key, err := client.ReadKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(repo); err != nil {
		t.Fatal(err)
	}
	r, err := client.Create(context.Background(), repo, key)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	res := phone.want(5, "list")
	if !strings.Contains(res.stderr, "set up with") {
		t.Fatalf("message: %s", res)
	}
	// In-process, the same error classes.
	_, err = client.NewDevice(phone.state).Open(context.Background(), client.OpenOptions{})
	if !errors.Is(err, client.ErrReplaced) || !errors.Is(err, container.ErrIntegrity) {
		t.Fatalf("Open of a replaced repository: %v", err)
	}
}
