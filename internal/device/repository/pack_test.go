package repository

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/container"
	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/local"
)

// faultBackend fails the operations fail picks (op is "put", "putifabsent",
// "delete"), as a crash at that point would leave the storage.
type faultBackend struct {
	storage.Backend
	fail func(op, name string) bool
}

var errCrash = errors.New("simulated crash")

func (b *faultBackend) Put(ctx context.Context, name string, body io.ReaderAt, size int64) error {
	if b.fail("put", name) {
		return errCrash
	}
	return b.Backend.Put(ctx, name, body, size)
}

func (b *faultBackend) PutIfAbsent(ctx context.Context, name string, body io.ReaderAt, size int64) error {
	if b.fail("putifabsent", name) {
		return errCrash
	}
	return b.Backend.PutIfAbsent(ctx, name, body, size)
}

func (b *faultBackend) Delete(ctx context.Context, name string) error {
	if b.fail("delete", name) {
		return errCrash
	}
	return b.Backend.Delete(ctx, name)
}

func (b *faultBackend) Sync(ctx context.Context) error {
	if s, ok := b.Backend.(storage.Syncer); ok {
		return s.Sync(ctx)
	}
	return nil
}

// withBackend returns a copy of f.repo that talks to b.
func (f *fixture) withBackend(b storage.Backend) *Repository {
	r := newRepository(b, f.key, f.repo.id, f.repo.pieceSize)
	r.pieceSize, r.packTarget, r.packBelow = f.repo.pieceSize, f.repo.packTarget, f.repo.packBelow
	return r
}

// smallTree writes n small files (tens to hundreds of bytes, text-like,
// distinct) and one file of two full pieces, which is not packed.
func smallTree(t *testing.T, root string, n int, salt string) {
	t.Helper()
	for i := range n {
		body := fmt.Sprintf("%s message %d: %x", salt, i, randBytes(40+i*37%400))
		writeFile(t, filepath.Join(root, fmt.Sprintf("d%02d", i%17), fmt.Sprintf("f%05d.txt", i)), []byte(body), 0o644)
	}
	writeFile(t, filepath.Join(root, "big.bin"), randBytes(128<<10), 0o644)
}

func (f *fixture) restoreMatches(gen uint64, src string) {
	f.t.Helper()
	out := filepath.Join(f.dir, fmt.Sprint("out-", gen, "-", randBytes(4)[0]))
	if _, err := f.repo.Restore(context.Background(), gen, out, RestoreOptions{}); err != nil {
		f.t.Fatalf("restore %d: %v", gen, err)
	}
	if got, want := treeDigest(f.t, filepath.Join(out, filepath.Base(src))), treeDigest(f.t, src); got != want {
		f.t.Fatalf("restore %d: tree differs", gen)
	}
	os.RemoveAll(out)
}

// TestPackObjectCount: 3,000 small files become a few objects, not
// 3,000: the object count follows bytes, not files.
func TestPackObjectCount(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	smallTree(t, src, 3000, "a")
	ctx := context.Background()
	sum, err := f.repo.Backup(ctx, []string{src}, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	packs, idx, data := len(f.objects(packsPrefix)), len(f.objects(indexPrefix)), len(f.objects(dataPrefix))
	if packs != 1 || idx != 1 || data != 2 {
		t.Fatalf("3,000 small files and one big: %d packs, %d indexes, %d pieces (summary %+v)", packs, idx, data, sum)
	}
	f.restoreMatches(0, src)
	vs, err := f.repo.Verify(ctx, nil)
	if err != nil || vs.Pieces != sum.NewPieces || vs.Unreferenced != 0 {
		t.Fatalf("verify: %+v %v", vs, err)
	}
	// Nothing changed: the next backup reuses everything and writes no
	// pack or index.
	sum2, err := f.repo.Backup(ctx, []string{src}, BackupOptions{})
	if err != nil || sum2.NewPieces != 0 || len(f.objects(packsPrefix)) != 1 || len(f.objects(indexPrefix)) != 1 {
		t.Fatalf("second backup: %+v %v", sum2, err)
	}
}

// TestPackSizesHide: storage learns pack sizes, not blob sizes. Full
// packs all have one size; a backup's last pack is padded to its class,
// so two backups of small files of different sizes within a class store
// packs of the same size.
func TestPackSizesHide(t *testing.T) {
	f := newFixture(t)
	f.repo.packTarget = 64 << 10
	src := filepath.Join(f.dir, "src")
	for i := range 400 {
		writeFile(t, filepath.Join(src, fmt.Sprint(i)), randBytes(100+i*7%900), 0o644)
	}
	ctx := context.Background()
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	sizes := map[int64]int{}
	for _, name := range f.objects(packsPrefix) {
		fi, _ := os.Stat(f.path(name))
		sizes[fi.Size()]++
	}
	full := int64(0)
	for s, n := range sizes {
		if n > 1 {
			full = s
		}
	}
	if len(f.objects(packsPrefix)) < 4 || len(sizes) > 2 || full == 0 {
		t.Fatalf("pack sizes %v", sizes)
	}
	// Two repositories, one file each of 5,000 and 5,100 random bytes:
	// one pack each, of the same size.
	var got []int64
	for _, n := range []int{5000, 5100} {
		g := newFixture(t)
		s := filepath.Join(g.dir, "src")
		writeFile(t, filepath.Join(s, "x"), randBytes(n), 0o644)
		if _, err := g.repo.Backup(ctx, []string{s}, BackupOptions{}); err != nil {
			t.Fatal(err)
		}
		names := g.objects(packsPrefix)
		if len(names) != 1 {
			t.Fatalf("%d packs", len(names))
		}
		fi, _ := os.Stat(g.path(names[0]))
		got = append(got, fi.Size())
	}
	if got[0] != got[1] {
		t.Fatalf("packs of one small file of 5,000 and 5,100 bytes: %v", got)
	}
}

// packedRepo makes a repository whose small files are in several packs
// (two backups: two indexes), and a big file in pieces of their own.
func packedRepo(t *testing.T) (*fixture, string) {
	f := newFixture(t)
	f.repo.packTarget = 64 << 10
	src := filepath.Join(f.dir, "src")
	smallTree(t, src, 600, "a")
	ctx := context.Background()
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	smallTree(t, filepath.Join(src, "more"), 300, "b")
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(f.objects(packsPrefix)) < 3 || len(f.objects(indexPrefix)) != 2 {
		t.Fatalf("%d packs, %d indexes", len(f.objects(packsPrefix)), len(f.objects(indexPrefix)))
	}
	return f, src
}

// TestPackTamper: a tampered, truncated, swapped or missing pack or index
// is refused by restore (nothing restored), found by Check (a missing or
// damaged index by the fast check; a damaged pack with ReadData), listed
// by Verify with the files of each backup it breaks, and a salvaging
// restore restores every file it does not break.
func TestPackTamper(t *testing.T) {
	type damage struct {
		name      string
		fastCheck bool // the check without ReadData finds it
		do        func(f *fixture)
	}
	flip := func(prefix string, at func(n int) int) func(f *fixture) {
		return func(f *fixture) {
			p := f.path(f.objects(prefix)[0])
			b, _ := os.ReadFile(p)
			b[at(len(b))] ^= 0x10
			os.WriteFile(p, b, 0o600)
		}
	}
	truncate := func(prefix string) func(f *fixture) {
		return func(f *fixture) {
			p := f.path(f.objects(prefix)[0])
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-100], 0o600)
		}
	}
	swap := func(prefix string) func(f *fixture) {
		return func(f *fixture) {
			names := f.objects(prefix)
			a, _ := os.ReadFile(f.path(names[0]))
			b, _ := os.ReadFile(f.path(names[1]))
			os.WriteFile(f.path(names[0]), b, 0o600)
			os.WriteFile(f.path(names[1]), a, 0o600)
		}
	}
	remove := func(prefix string) func(f *fixture) {
		return func(f *fixture) { os.Remove(f.path(f.objects(prefix)[0])) }
	}
	cases := []damage{
		{"pack flipped in a chunk", false, flip(packsPrefix, func(n int) int { return n - 40 })},
		{"pack flipped in the header", false, flip(packsPrefix, func(int) int { return 50 })},
		{"pack truncated", false, truncate(packsPrefix)},
		{"packs swapped", false, swap(packsPrefix)},
		{"pack missing", true, remove(packsPrefix)},
		{"index flipped", true, flip(indexPrefix, func(n int) int { return n / 2 })},
		{"index truncated", true, truncate(indexPrefix)},
		{"indexes swapped", true, swap(indexPrefix)},
		{"index missing", true, remove(indexPrefix)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, src := packedRepo(t)
			ctx := context.Background()
			c.do(f)
			out := filepath.Join(f.dir, "out")
			if _, err := f.repo.Restore(ctx, 0, out, RestoreOptions{}); !errors.Is(err, container.ErrIntegrity) {
				t.Fatalf("restore: %v", err)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatal("a refused restore left its target")
			}
			assertNoStaging(t, f.dir)
			cs, err := f.repo.Check(ctx, CheckOptions{})
			if c.fastCheck != (err != nil) {
				t.Fatalf("fast check: %+v %v", cs, err)
			}
			vs, err := f.repo.Verify(ctx, nil)
			if !errors.Is(err, container.ErrIntegrity) {
				t.Fatalf("verify: %+v %v", vs, err)
			}
			files := 0
			for _, d := range vs.Damaged {
				files += len(d.Files)
			}
			if len(vs.Damaged) == 0 || files == 0 {
				t.Fatalf("verify lists no damaged file: %+v", vs)
			}
			rs, err := f.repo.Restore(ctx, 0, out, RestoreOptions{Salvage: true})
			if !errors.Is(err, container.ErrIntegrity) || rs == nil || len(rs.Damaged) == 0 {
				t.Fatalf("salvage: %+v %v", rs, err)
			}
			// The big file is in pieces of its own: salvaged intact.
			got, _ := os.ReadFile(filepath.Join(out, "src", "big.bin"))
			want, _ := os.ReadFile(filepath.Join(src, "big.bin"))
			if string(got) != string(want) || rs.Files == 0 {
				t.Fatalf("salvage restored %d files, big.bin %d bytes", rs.Files, len(got))
			}
			// Repair makes every backup restorable again: from the files
			// on disk, or by indexing the packs again (a lost or damaged
			// index: its packs are intact).
			if _, err := f.repo.Repair(ctx, RepairOptions{Paths: []string{src}, ReadData: true}); err != nil {
				t.Fatalf("repair: %v", err)
			}
			if cs, err := f.repo.Check(ctx, CheckOptions{ReadData: true}); err != nil {
				t.Fatalf("check after repair: %+v %v", cs, err)
			}
			f.restoreMatches(0, src)
		})
	}
}

// TestPackIndexLostRepairNeedsNoFiles: an index deleted by the storage is
// rebuilt from its packs by Repair alone (no files on disk): every backup
// is whole again, none rewritten.
func TestPackIndexLostRepairNeedsNoFiles(t *testing.T) {
	f, src := packedRepo(t)
	ctx := context.Background()
	for _, name := range f.objects(indexPrefix) {
		os.Remove(f.path(name))
	}
	if _, err := f.repo.Check(ctx, CheckOptions{}); !errors.Is(err, container.ErrIntegrity) {
		t.Fatalf("check without indexes: %v", err)
	}
	rs, err := f.repo.Repair(ctx, RepairOptions{})
	if err != nil || rs.IndexedPacks < 3 || len(rs.Repaired) != 0 {
		t.Fatalf("repair: %+v %v", rs, err)
	}
	if cs, err := f.repo.Check(ctx, CheckOptions{ReadData: true}); err != nil || cs.UnindexedPacks != 0 {
		t.Fatalf("check: %+v %v", cs, err)
	}
	f.restoreMatches(0, src)
}

// TestPackCrashResume: a backup that stops after uploading packs and
// before writing their index (or its manifest) leaves a repository that
// verifies; the next backup indexes those packs and uploads none of
// their pieces again.
func TestPackCrashResume(t *testing.T) {
	for _, at := range []string{indexPrefix, manifestsPrefix} {
		t.Run(at, func(t *testing.T) {
			f := newFixture(t)
			f.repo.packTarget = 64 << 10
			src := filepath.Join(f.dir, "src")
			smallTree(t, src, 800, "a")
			ctx := context.Background()
			crashing := f.withBackend(&faultBackend{Backend: f.store, fail: func(op, name string) bool {
				return op == "putifabsent" && strings.HasPrefix(name, at)
			}})
			if _, err := crashing.Backup(ctx, []string{src}, BackupOptions{}); !errors.Is(err, errCrash) {
				t.Fatalf("backup: %v", err)
			}
			packs := len(f.objects(packsPrefix))
			if packs < 3 || len(f.objects(manifestsPrefix)) != 0 {
				t.Fatalf("%d packs after the crash", packs)
			}
			cs, err := f.repo.Check(ctx, CheckOptions{ReadData: true})
			if err != nil {
				t.Fatalf("check after the crash: %+v %v", cs, err)
			}
			if at == indexPrefix && cs.UnindexedPacks != packs {
				t.Fatalf("unindexed %d of %d", cs.UnindexedPacks, packs)
			}
			sum, err := f.repo.Backup(ctx, []string{src}, BackupOptions{})
			if err != nil || sum.NewPieces != 0 || len(f.objects(packsPrefix)) != packs {
				t.Fatalf("resumed backup uploaded again: %+v %v (%d packs)", sum, err, len(f.objects(packsPrefix)))
			}
			f.restoreMatches(0, src)
			if vs, err := f.repo.Verify(ctx, nil); err != nil || vs.Unreferenced != 0 {
				t.Fatalf("verify: %+v %v", vs, err)
			}
		})
	}
}

// TestPackReuseNeedsPack: a blob is reused only if its pack is stored: a
// backup after its pack was lost uploads the pieces again, and that
// backup restores.
func TestPackReuseNeedsPack(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	smallTree(t, src, 200, "a")
	ctx := context.Background()
	first, err := f.repo.Backup(ctx, []string{src}, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(f.path(f.objects(packsPrefix)[0]))
	sum, err := f.repo.Backup(ctx, []string{src}, BackupOptions{})
	if err != nil || sum.NewPieces != first.NewPieces-2 || sum.UnchangedFiles != 1 {
		t.Fatalf("backup after the pack was lost: %+v %v", sum, err)
	}
	f.restoreMatches(0, src)
}

// TestPrunePacks: prune deletes packs no kept backup uses and repacks
// those mostly garbage; a crash after the new index and before the old
// packs are deleted leaves a repository that verifies and restores, and
// the next prune finishes the job.
func TestPrunePacks(t *testing.T) {
	f := newFixture(t)
	f.repo.packTarget = 64 << 10
	src := filepath.Join(f.dir, "src")
	smallTree(t, src, 900, "a")
	ctx := context.Background()
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	// Two thirds of the small files go.
	for i := range 900 {
		if i%3 != 0 {
			os.Remove(filepath.Join(src, fmt.Sprintf("d%02d", i%17), fmt.Sprintf("f%05d.txt", i)))
		}
	}
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	before := f.objects(packsPrefix)
	crashing := f.withBackend(&faultBackend{Backend: f.store, fail: func(op, name string) bool {
		return op == "delete" && strings.HasPrefix(name, packsPrefix)
	}})
	if _, err := crashing.Prune(ctx, 1); !errors.Is(err, errCrash) {
		t.Fatalf("prune: %v", err)
	}
	if len(f.objects(indexPrefix)) != 1 {
		t.Fatalf("%d indexes after the crashed prune", len(f.objects(indexPrefix)))
	}
	if _, err := f.repo.Check(ctx, CheckOptions{ReadData: true}); err != nil {
		t.Fatalf("check after the crashed prune: %v", err)
	}
	f.restoreMatches(0, src)
	sum, err := f.repo.Prune(ctx, 1)
	if err != nil || sum.DeletedPacks == 0 {
		t.Fatalf("prune: %+v %v", sum, err)
	}
	after := f.objects(packsPrefix)
	if len(after) >= len(before) {
		t.Fatalf("packs: %d before, %d after", len(before), len(after))
	}
	vs, err := f.repo.Verify(ctx, nil)
	if err != nil || vs.Unreferenced != 0 {
		t.Fatalf("verify after prune: %+v %v", vs, err)
	}
	f.restoreMatches(0, src)
	// What is left is mostly used: another prune changes nothing.
	sum, err = f.repo.Prune(ctx, 1)
	if err != nil || sum.DeletedPacks != 0 || sum.RepackedPacks != 0 {
		t.Fatalf("second prune: %+v %v", sum, err)
	}
}

// TestPruneRepacks: a pack more than half garbage is repacked, its used
// pieces copied into a new pack; the old one goes.
func TestPruneRepacks(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	smallTree(t, src, 300, "a")
	ctx := context.Background()
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	old := f.objects(packsPrefix)
	for i := range 300 {
		if i%4 != 0 {
			os.Remove(filepath.Join(src, fmt.Sprintf("d%02d", i%17), fmt.Sprintf("f%05d.txt", i)))
		}
	}
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	sum, err := f.repo.Prune(ctx, 1)
	if err != nil || sum.RepackedPacks != 1 || sum.DeletedPacks != 1 || sum.RepackedBytes == 0 {
		t.Fatalf("prune: %+v %v", sum, err)
	}
	now := f.objects(packsPrefix)
	if len(now) != 1 || now[0] == old[0] || len(f.objects(indexPrefix)) != 1 {
		t.Fatalf("packs %v (were %v)", now, old)
	}
	vs, err := f.repo.Verify(ctx, nil)
	if err != nil || vs.Unreferenced != 0 {
		t.Fatalf("verify: %+v %v", vs, err)
	}
	f.restoreMatches(0, src)
}

// TestReadUnpackedRepository: a repository written by the unpacked layout
// (testdata/v2repo, made at commit 3e24deb by the code of that time:
// version 2 pieces, one object each, manifest format 2) verifies and
// restores, and backing up into it packs new small pieces while reusing
// the old ones.
func TestReadUnpackedRepository(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	if err := os.CopyFS(repoDir, os.DirFS("testdata/v2repo/repo")); err != nil {
		t.Fatal(err)
	}
	st, err := localBackend(repoDir)
	if err != nil {
		t.Fatal(err)
	}
	key := fixtureKey(t)
	repo, err := Open(ctx, st, key)
	if err != nil {
		t.Fatal(err)
	}
	if vs, err := repo.Verify(ctx, nil); err != nil || vs.Generations != 1 || vs.Pieces != 24 {
		t.Fatalf("verify: %+v %v", vs, err)
	}
	out := filepath.Join(dir, "out")
	if _, err := repo.Restore(ctx, 0, out, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(out, "src", "small.txt"))
	if string(got) != "hello from the version 2 layout\n" {
		t.Fatalf("small.txt: %q", got)
	}
	big, _ := os.ReadFile(filepath.Join(out, "src", "sub", "big.bin"))
	if len(big) != 150<<10 {
		t.Fatalf("big.bin: %d bytes", len(big))
	}
	for i := range big {
		if big[i] != byte(i*7%251) {
			t.Fatalf("big.bin differs at %d", i)
		}
	}
	for i := range 20 {
		c := string(rune('a' + i))
		if b, _ := os.ReadFile(filepath.Join(out, "src", "many", c+".txt")); string(b) != c+" small file\n" {
			t.Fatalf("many/%s.txt: %q", c, b)
		}
	}
	// A new backup of the restored tree plus a new file: the old pieces
	// are reused (the restored files have other inodes, so they are read
	// again and found in the listing), only the new file is stored, in a
	// pack.
	writeFile(t, filepath.Join(out, "src", "new.txt"), []byte("written after the upgrade\n"), 0o644)
	repo.pieceSize = 64 << 10
	sum, err := repo.Backup(ctx, []string{filepath.Join(out, "src")}, BackupOptions{})
	if err != nil || sum.NewPieces != 1 || sum.ReusedPieces != 24 {
		t.Fatalf("backup into the old repository: %+v %v", sum, err)
	}
	if vs, err := repo.Verify(ctx, nil); err != nil || vs.Generations != 2 {
		t.Fatalf("verify: %+v %v", vs, err)
	}
	if n := len(objectsIn(t, st, packsPrefix)); n != 1 {
		t.Fatalf("%d packs", n)
	}
	out2 := filepath.Join(dir, "out2")
	if _, err := repo.Restore(ctx, 1, out2, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
}

func localBackend(dir string) (storage.Backend, error) { return local.New(dir) }

// fixtureKey is the key of testdata/v2repo and of the pack vectors.
func fixtureKey(t *testing.T) *backupkey.Key {
	t.Helper()
	k, err := backupkey.Parse("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func objectsIn(t *testing.T, b storage.Backend, prefix string) []string {
	t.Helper()
	var names []string
	if err := b.List(context.Background(), prefix, func(oi storage.ObjectInfo) error {
		names = append(names, oi.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return names
}

// TestPackIndexAsYouGo: a long backup writes an index every indexEvery
// packs, so that a crash before its end leaves only the last few packs
// unindexed; the next backup reads those back and uploads nothing again.
func TestPackIndexAsYouGo(t *testing.T) {
	defer func(n int) { indexEvery = n }(indexEvery)
	indexEvery = 2
	f := newFixture(t)
	f.repo.packTarget = 64 << 10
	src := filepath.Join(f.dir, "src")
	smallTree(t, src, 1500, "a")
	ctx := context.Background()
	crashing := f.withBackend(&faultBackend{Backend: f.store, fail: func(op, name string) bool {
		return op == "putifabsent" && strings.HasPrefix(name, manifestsPrefix)
	}})
	if _, err := crashing.Backup(ctx, []string{src}, BackupOptions{}); !errors.Is(err, errCrash) {
		t.Fatalf("backup: %v", err)
	}
	packs, indexes := len(f.objects(packsPrefix)), len(f.objects(indexPrefix))
	if packs < 6 || indexes < packs/2 {
		t.Fatalf("%d packs, %d indexes", packs, indexes)
	}
	cs, err := f.repo.Check(ctx, CheckOptions{})
	if err != nil || cs.UnindexedPacks != 0 {
		t.Fatalf("check: %+v %v", cs, err)
	}
	sum, err := f.repo.Backup(ctx, []string{src}, BackupOptions{})
	if err != nil || sum.NewPieces != 0 {
		t.Fatalf("resumed: %+v %v", sum, err)
	}
	f.restoreMatches(0, src)
	// Prune merges the indexes into one.
	ps, err := f.repo.Prune(ctx, 1)
	if err != nil || len(f.objects(indexPrefix)) != 1 || ps.DeletedIndexes != int64(indexes) {
		t.Fatalf("prune: %+v %v; %d indexes", ps, err, len(f.objects(indexPrefix)))
	}
	f.restoreMatches(0, src)
}

// TestPackConcurrentBackups: two backups of different trees into one
// repository at once both commit, each with its own packs and index, and
// both restore.
func TestPackConcurrentBackups(t *testing.T) {
	f := newFixture(t)
	f.repo.packTarget = 64 << 10
	ctx := context.Background()
	var srcs [2]string
	for i := range srcs {
		srcs[i] = filepath.Join(f.dir, fmt.Sprint("src", i), "tree")
		smallTree(t, srcs[i], 400, fmt.Sprint(i))
	}
	errs := make(chan error, 2)
	for i := range srcs {
		r := f.withBackend(f.store)
		go func() {
			_, err := r.Backup(ctx, []string{srcs[i]}, BackupOptions{})
			errs <- err
		}()
	}
	for range srcs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if vs, err := f.repo.Verify(ctx, nil); err != nil || vs.Generations != 2 {
		t.Fatalf("verify: %+v %v", vs, err)
	}
	gens, _ := f.repo.Generations(ctx)
	for _, g := range gens {
		src := srcs[0]
		if g.Files != 401 {
			t.Fatalf("backup %d: %+v", g.Number, g)
		}
		out := filepath.Join(f.dir, fmt.Sprint("out", g.Number))
		if _, err := f.repo.Restore(ctx, g.Number, out, RestoreOptions{}); err != nil {
			t.Fatal(err)
		}
		if treeDigest(t, filepath.Join(out, "tree")) != treeDigest(t, src) {
			src = srcs[1]
			if treeDigest(t, filepath.Join(out, "tree")) != treeDigest(t, src) {
				t.Fatalf("backup %d restores neither tree", g.Number)
			}
		}
	}
}

// TestPruneMergesSmallPacks: the small last packs of several backups are
// repacked into one.
func TestPruneMergesSmallPacks(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	ctx := context.Background()
	for i := range 3 {
		writeFile(t, filepath.Join(src, fmt.Sprint("note", i)), randBytes(3000), 0o644)
		if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(f.objects(packsPrefix)); n != 3 {
		t.Fatalf("%d packs", n)
	}
	sum, err := f.repo.Prune(ctx, 3)
	if err != nil || sum.RepackedPacks != 3 || len(f.objects(packsPrefix)) != 1 || len(f.objects(indexPrefix)) != 1 {
		t.Fatalf("prune: %+v %v; %d packs", sum, err, len(f.objects(packsPrefix)))
	}
	if vs, err := f.repo.Verify(ctx, nil); err != nil || vs.Generations != 3 || vs.Unreferenced != 0 {
		t.Fatalf("verify: %+v %v", vs, err)
	}
	f.restoreMatches(0, src)
	// One small pack is left alone.
	if sum, err := f.repo.Prune(ctx, 3); err != nil || sum.RepackedPacks != 0 {
		t.Fatalf("second prune: %+v %v", sum, err)
	}
}

// TestPackLostRepairRewrites: a lost pack whose files are gone from disk
// too: Repair rewrites the backups without those files, and the rest
// restores.
func TestPackLostRepairRewrites(t *testing.T) {
	f, src := packedRepo(t)
	ctx := context.Background()
	os.Remove(f.path(f.objects(packsPrefix)[0]))
	rs, err := f.repo.Repair(ctx, RepairOptions{})
	if err != nil || len(rs.Repaired) == 0 || len(rs.Repaired[0].Dropped) == 0 {
		t.Fatalf("repair: %+v %v", rs, err)
	}
	if cs, err := f.repo.Check(ctx, CheckOptions{ReadData: true}); err != nil || cs.Unreferenced != 0 {
		t.Fatalf("check after repair: %+v %v", cs, err)
	}
	out := filepath.Join(f.dir, "out")
	sum, err := f.repo.Restore(ctx, 0, out, RestoreOptions{})
	if err != nil || sum.Files == 0 {
		t.Fatalf("restore: %+v %v", sum, err)
	}
	if got, _ := os.ReadFile(filepath.Join(out, "src", "big.bin")); len(got) != 128<<10 {
		t.Fatal("big.bin lost")
	}
	_ = src
}
