package repository

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cofferhq/coffer/internal/device/container"
)

// damagedRepo backs up three one-piece files twice, then flips a byte in
// a's piece and deletes b's.
func damagedRepo(t *testing.T) (f *fixture, src string, ids map[string]pieceID) {
	f = newFixture(t)
	src = filepath.Join(f.dir, "src")
	ids = map[string]pieceID{}
	for _, n := range []string{"a", "b", "c"} {
		data := randBytes(20 << 10)
		writeFile(t, filepath.Join(src, n), data, 0o644)
		ids[n] = f.repo.pieceID(data)
	}
	ctx := context.Background()
	for range 2 {
		if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	p := f.path(pieceName(ids["a"]))
	b, _ := os.ReadFile(p)
	b[len(b)-20] ^= 1
	os.WriteFile(p, b, 0o600)
	os.Remove(f.path(pieceName(ids["b"])))
	return f, src, ids
}

// TestRegressVerifyReportsAll (bug 4): Verify reports every damaged piece
// with the backups and files it affects.
func TestRegressVerifyReportsAll(t *testing.T) {
	f, _, ids := damagedRepo(t)
	vs, err := f.repo.Verify(context.Background(), nil)
	if !errors.Is(err, container.ErrIntegrity) || vs == nil {
		t.Fatalf("verify: %+v %v", vs, err)
	}
	if len(vs.Damaged) != 2 {
		t.Fatalf("damaged %+v", vs.Damaged)
	}
	for _, d := range vs.Damaged {
		if d.ID != ids["a"].String() && d.ID != ids["b"].String() {
			t.Fatalf("reported %s", d.ID)
		}
		if len(d.Files) != 2 || d.Files[0].Generation != 1 || d.Files[1].Generation != 2 {
			t.Fatalf("files of %s: %+v", d.ID[:8], d.Files)
		}
	}
	t.Logf("verify: %v", err)
}

// TestCheck: the fast check finds the missing piece, not the damaged one;
// reading data (all, or a subset that covers everything) finds both.
func TestCheck(t *testing.T) {
	f, _, ids := damagedRepo(t)
	ctx := context.Background()
	cs, err := f.repo.Check(ctx, CheckOptions{})
	if !errors.Is(err, container.ErrIntegrity) || len(cs.Damaged) != 1 || cs.Damaged[0].ID != ids["b"].String() || cs.ReadPieces != 0 {
		t.Fatalf("fast check: %+v %v", cs, err)
	}
	for _, o := range []CheckOptions{{ReadData: true}, {ReadDataSubset: "1/1"}, {ReadDataSubset: "100%"}} {
		cs, err := f.repo.Check(ctx, o)
		if !errors.Is(err, container.ErrIntegrity) || len(cs.Damaged) != 2 || cs.ReadPieces != 1 {
			t.Fatalf("check %+v: %+v %v", o, cs, err)
		}
	}
	// Groups 1/3, 2/3, 3/3 read each piece exactly once.
	var read int64
	for _, g := range []string{"1/3", "2/3", "3/3"} {
		cs, _ := f.repo.Check(ctx, CheckOptions{ReadDataSubset: g})
		read += cs.ReadPieces
		for _, d := range cs.Damaged {
			if d.ID == ids["a"].String() {
				read++
			}
		}
	}
	if read != 2 {
		t.Fatalf("three groups read %d of the 2 present pieces", read)
	}
	for _, bad := range []string{"0/3", "4/3", "0%", "101%", "x"} {
		if _, err := f.repo.Check(ctx, CheckOptions{ReadDataSubset: bad}); err == nil || errors.Is(err, container.ErrIntegrity) {
			t.Fatalf("subset %q: %v", bad, err)
		}
	}
	// A sound repository checks clean.
	g := newFixture(t)
	writeFile(t, filepath.Join(g.dir, "s", "x"), randBytes(100<<10), 0o644)
	g.repo.Backup(ctx, []string{filepath.Join(g.dir, "s")}, BackupOptions{})
	if cs, err := g.repo.Check(ctx, CheckOptions{ReadData: true}); err != nil || !cs.OK() || cs.ReadPieces != 2 {
		t.Fatalf("sound repository: %+v %v", cs, err)
	}
}

// TestRegressSalvage (bug 4): a salvaging restore restores the intact
// files, lists the damaged ones and fails with an integrity error; the
// default restore is still all or nothing.
func TestRegressSalvage(t *testing.T) {
	f, src, _ := damagedRepo(t)
	ctx := context.Background()
	out := filepath.Join(f.dir, "out")
	if _, err := f.repo.Restore(ctx, 0, out, RestoreOptions{}); !errors.Is(err, container.ErrIntegrity) {
		t.Fatalf("restore: %v", err)
	}
	if _, err := os.Lstat(out); err == nil {
		t.Fatal("an all-or-nothing restore left files")
	}
	sum, err := f.repo.Restore(ctx, 0, out, RestoreOptions{Salvage: true})
	if !errors.Is(err, container.ErrIntegrity) || sum == nil {
		t.Fatalf("salvage: %+v %v", sum, err)
	}
	if len(sum.Damaged) != 2 || sum.Damaged[0].Path != "src/a" && sum.Damaged[1].Path != "src/a" || sum.Files != 1 {
		t.Fatalf("salvage summary %+v", sum)
	}
	want, _ := os.ReadFile(filepath.Join(src, "c"))
	if got, err := os.ReadFile(filepath.Join(out, "src", "c")); err != nil || string(got) != string(want) {
		t.Fatal("intact file not restored")
	}
	for _, n := range []string{"a", "b"} {
		if _, err := os.Lstat(filepath.Join(out, "src", n)); err == nil {
			t.Fatalf("damaged %s restored", n)
		}
	}
	assertNoStaging(t, f.dir)
}
