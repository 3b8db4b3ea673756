package repository

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestRepairFromDisk (bug 5): lost pieces whose files are still on disk
// are uploaded again; no backup needs rewriting.
func TestRepairFromDisk(t *testing.T) {
	f, src, _ := damagedRepo(t)
	ctx := context.Background()
	rs, err := f.repo.Repair(ctx, RepairOptions{Paths: []string{src}, ReadData: true})
	if err != nil || rs.Reuploaded != 2 || len(rs.Repaired) != 0 || len(rs.Check.Damaged) != 2 {
		t.Fatalf("repair: %+v %v", rs, err)
	}
	if cs, err := f.repo.Check(ctx, CheckOptions{ReadData: true}); err != nil {
		t.Fatalf("check after repair: %+v %v", cs, err)
	}
	for _, g := range []uint64{1, 2} {
		out := filepath.Join(f.dir, fmt.Sprint("out", g))
		if _, err := f.repo.Restore(ctx, g, out, RestoreOptions{}); err != nil {
			t.Fatal(err)
		}
		if got, want := treeDigest(t, filepath.Join(out, "src")), treeDigest(t, src); got != want {
			t.Fatal("restored tree differs")
		}
	}
}

// TestRepairRewrites (bug 5): a backup whose lost data is nowhere on disk
// is rewritten as a new generation without the file; orphans go.
func TestRepairRewrites(t *testing.T) {
	f, src, ids := damagedRepo(t)
	ctx := context.Background()
	os.Remove(filepath.Join(src, "b"))
	orphan := randBytes(1000)
	if _, err := f.repo.putPiece(ctx, f.repo.pieceID(orphan), orphan, true); err != nil {
		t.Fatal(err)
	}
	// A live lock of another process: repair refuses.
	lk, _ := f.repo.lock(ctx, lockShared)
	if _, err := f.repo.Repair(ctx, RepairOptions{Paths: []string{src}, ReadData: true}); !errors.Is(err, ErrLocked) {
		t.Fatalf("repair during a backup: %v", err)
	}
	lk.release()
	rs, err := f.repo.Repair(ctx, RepairOptions{Paths: []string{src}, ReadData: true})
	if err != nil || rs.Reuploaded != 1 || len(rs.Repaired) != 2 {
		t.Fatalf("repair: %+v %v", rs, err)
	}
	for i, rb := range rs.Repaired {
		if rb.From != uint64(i+1) || rb.To != uint64(i+3) || len(rb.Dropped) != 1 || rb.Dropped[0] != "src/b" {
			t.Fatalf("repaired %+v", rb)
		}
	}
	if rs.DeletedObjects != 1 {
		t.Fatalf("deleted %d orphans", rs.DeletedObjects)
	}
	if _, err := f.store.Stat(ctx, pieceName(ids["b"])); err == nil {
		t.Fatal("lost piece reappeared")
	}
	if cs, err := f.repo.Check(ctx, CheckOptions{ReadData: true}); err != nil || cs.Generations != 2 || cs.Unreferenced != 0 {
		t.Fatalf("check after repair: %+v %v", cs, err)
	}
	gens, _ := f.repo.Generations(ctx)
	if len(gens) != 2 || gens[1].Number != 4 || gens[1].RepairedFrom != 2 || gens[1].Files != 2 {
		t.Fatalf("generations %+v", gens)
	}
	out := filepath.Join(f.dir, "out")
	if _, err := f.repo.Restore(ctx, 0, out, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, want := treeDigest(t, filepath.Join(out, "src")), treeDigest(t, src); got != want {
		t.Fatalf("restored tree differs:\n%s\n%s", got, want)
	}
	// And backing up goes on from the repaired generation.
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
}
