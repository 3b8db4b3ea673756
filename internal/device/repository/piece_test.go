package repository

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestRegressPaddedSizes (bug 9): the stored size of a small file's piece
// is its size class, not its exact size.
func TestRegressPaddedSizes(t *testing.T) {
	f := newFixture(t)
	f.repo.packBelow = -1 // pieces as objects of their own (packed: TestPackSizesHide)
	src := filepath.Join(f.dir, "src")
	for _, n := range []int{4200, 4500, 5000, 5100} {
		writeFile(t, filepath.Join(src, fmt.Sprint(n)), randBytes(n), 0o644)
	}
	ctx := context.Background()
	if _, err := f.repo.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	sizes := map[int64]int{}
	for _, name := range f.objects(dataPrefix) {
		fi, _ := os.Stat(f.path(name))
		sizes[fi.Size()]++
	}
	if len(sizes) != 1 {
		t.Fatalf("files of 4200 to 5100 bytes stored as objects of sizes %v", sizes)
	}
	out := filepath.Join(f.dir, "out")
	if _, err := f.repo.Restore(ctx, 0, out, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, want := treeDigest(t, filepath.Join(out, "src")), treeDigest(t, src); got != want {
		t.Fatal("restored tree differs")
	}
}

func TestPadClass(t *testing.T) {
	const ps = 4 << 20
	prev := 0
	for n := 1; n <= ps+pieceHeader; n += 997 {
		c := padClass(n, ps)
		if c < n || c < prev || c > ps+pieceHeader {
			t.Fatalf("padClass(%d) = %d (previous %d)", n, c, prev)
		}
		if n > minClass && float64(c) > 1.25*float64(n) {
			t.Fatalf("padClass(%d) = %d: more than 25%% padding", n, c)
		}
		prev = c
	}
	if padClass(ps+pieceHeader, ps) != ps+pieceHeader || padClass(1, ps) != minClass || padClass(4097, ps) != 5120 {
		t.Fatal("class bounds")
	}
	for _, data := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("ab"), 40000), randBytes(100000)} {
		for _, compress := range []bool{false, true} {
			p := padPiece(nil, data, compress, ps)
			if len(p) != padClass(len(p), ps) && len(p) != minClass {
				t.Fatalf("padded length %d is not a class", len(p))
			}
			got, err := unpadPiece(nil, p, int64(len(data)))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("round trip of %d bytes (compress %v): %v", len(data), compress, err)
			}
		}
	}
	// A zstd frame that would decompress beyond the stated size is refused.
	p := padPiece(nil, bytes.Repeat([]byte("a"), 100000), true, ps)
	if _, err := unpadPiece(nil, p, 1000); err == nil {
		t.Fatal("output limit not enforced")
	}
	p[len(p)-1] = 1
	if _, err := unpadPiece(nil, p, 100000); err == nil {
		t.Fatal("non-zero padding accepted")
	}
}

// TestReadV1Pieces: a version 1 backup's (unpadded) pieces restore,
// verify, and are reused as version 1 pieces by a later backup.
func TestReadV1Pieces(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	data := randBytes(3000)
	id := f.repo.pieceIDv1(data)
	if _, err := f.repo.putPieceV1(ctx, id, data, true); err != nil {
		t.Fatal(err)
	}
	gen := f.commitRawFormat(1, []string{
		`{"path":"x","type":"dir","mode":493,"mtime":0}`,
		fmt.Sprintf(`{"path":"x/f","type":"file","mode":420,"mtime":0,"size":3000,"pieces":[["%s",3000]]}`, id),
	}, genStats{Entries: 2, Dirs: 1, Files: 1, Bytes: 3000, Pieces: 1})
	out := filepath.Join(f.dir, "out")
	if _, err := f.repo.Restore(ctx, gen, out, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(out, "x", "f")); !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
	if _, err := f.repo.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// Back the restored tree up: its file is unchanged only by content,
	// so it is read and stored as a version 2 piece; both restore.
	s, err := f.repo.Backup(ctx, []string{filepath.Join(out, "x")}, BackupOptions{})
	if err != nil || s.NewPieces != 1 {
		t.Fatalf("backup: %+v %v", s, err)
	}
	if cs, err := f.repo.Check(ctx, CheckOptions{ReadData: true}); err != nil || cs.ReadPieces != 2 {
		t.Fatalf("check: %+v %v", cs, err)
	}
}
