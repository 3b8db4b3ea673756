package repository

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/container"
	"github.com/cofferhq/coffer/storage/memory"
)

// Pack and index test vectors (FORMAT.md 5.1): testdata/packs/, written by
//
//	go test ./internal/device/repository -run TestPackVectors -write-pack-vectors
//
// and checked by TestPackVectors: each file names a piece (as a manifest
// would: id and size), one index object and one pack object; a reader
// given only those two objects and the key must return the piece's data
// (expect: ok, with its SHA-256) or fail with the stated class of error.
var writePackVectors = flag.Bool("write-pack-vectors", false, "write testdata/packs")

const packVectorDir = "testdata/packs"

type packVector struct {
	name, comment, expect string
	piece                 pieceID
	size                  int
	data                  []byte // the piece's data (ok)
	indexName, packName   string
	index, pack           []byte
}

var vectorRepoID = [16]byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00}

func vectorRepo(key *backupkey.Key) *Repository {
	return newRepository(memory.New(), key, vectorRepoID, DefaultPieceSize)
}

// makePackVectors builds every vector with the package's own writer, then
// breaks one rule in each fail_ one.
func makePackVectors(t *testing.T) []packVector {
	r := vectorRepo(fixtureKey(t))
	text := []byte(strings.Repeat("2026-12-07 alice: see you at lunch, the usual place\n", 100))
	random := make([]byte, 1000)
	for i := range random {
		random[i] = byte(i*131 + i*i*7 + 3)
	}
	second := []byte("the second piece of three\n")
	third := bytes.Repeat([]byte{0xab, 0xcd}, 700)
	pid := func(n byte) objID { var id objID; id[0], id[31] = 0xa0, n; return id }
	iid := func(n byte) objID { var id objID; id[0], id[31] = 0x1d, n; return id }

	type blob struct {
		data     []byte
		compress bool
	}
	// build returns a pack plaintext (unpadded) and its index record.
	build := func(pack objID, blobs []blob) ([]byte, packRec) {
		plain := []byte{packFormat, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(plain[1:], uint32(len(blobs)))
		rec := packRec{id: pack}
		for _, b := range blobs {
			start := len(plain)
			plain = appendBlob(plain, b.data, b.compress)
			rec.blobs = append(rec.blobs, blobRec{id: r.pieceID(b.data), n: uint32(len(plain) - start - blobHeader)})
		}
		return plain, rec
	}
	sealPack := func(name string, plain []byte) []byte {
		s, err := r.sealPack(nil, name, plain, false, DefaultPackTarget)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	sealIndex := func(name string, plain []byte) []byte {
		s, err := container.Seal(r.key, container.Params{Kind: container.KindManifest, Ref: r.ref(name)}, plain)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	vec := func(name, comment, expect string, piece []byte, pack objID, packPlain []byte, recs []packRec) packVector {
		v := packVector{name: name, comment: comment, expect: expect, piece: r.pieceID(piece), size: len(piece), data: piece,
			packName: packName(pack), indexName: indexName(iid(byte(len(name))))}
		v.pack = sealPack(v.packName, packPlain)
		v.index = sealIndex(v.indexName, encodeIndex(recs))
		return v
	}
	var vs []packVector
	p1, r1 := build(pid(1), []blob{{random, true}})
	vs = append(vs, vec("good_one_raw_blob", "one incompressible blob, stored raw (encoding 0); the pack padded to 4096", "ok", random, pid(1), p1, []packRec{r1}))
	p2, r2 := build(pid(2), []blob{{text, true}})
	vs = append(vs, vec("good_zstd_blob", "one blob stored as a zstd frame (encoding 1)", "ok", text, pid(2), p2, []packRec{r2}))
	p3, r3 := build(pid(3), []blob{{text, true}, {second, false}, {third, true}})
	vs = append(vs, vec("good_three_blobs_middle", "three blobs; the piece is the second: its offset is 5 + 9 + n_0", "ok", second, pid(3), p3, []packRec{r3}))
	p4, r4 := build(pid(4), []blob{{third, true}})
	vs = append(vs, vec("good_index_of_two_packs", "the index lists another pack first; the piece is in the second", "ok", third, pid(4), p4, []packRec{r1, r4}))

	v := vec("fail_pack_tampered", "one bit of the pack's last chunk flipped", "integrity", random, pid(1), p1, []packRec{r1})
	v.pack[len(v.pack)-30] ^= 1
	vs = append(vs, v)
	v = vec("fail_pack_truncated", "the pack cut 100 bytes short", "integrity", random, pid(1), p1, []packRec{r1})
	v.pack = v.pack[:len(v.pack)-100]
	vs = append(vs, v)
	v = vec("fail_pack_wrong_name", "a valid pack, sealed for another name (a pack swapped in)", "integrity", random, pid(1), p1, []packRec{r1})
	v.pack = sealPack(packName(pid(9)), p1)
	vs = append(vs, v)
	v = vec("fail_index_tampered", "one bit of the index flipped", "integrity", random, pid(1), p1, []packRec{r1})
	v.index[len(v.index)-30] ^= 1
	vs = append(vs, v)
	v = vec("fail_index_wrong_name", "a valid index, sealed for another name (an index swapped in)", "integrity", random, pid(1), p1, []packRec{r1})
	v.index = sealIndex(indexName(iid(0xee)), encodeIndex([]packRec{r1}))
	vs = append(vs, v)
	v = vec("fail_index_truncated", "the index cut short", "integrity", random, pid(1), p1, []packRec{r1})
	v.index = v.index[:len(v.index)-1]
	vs = append(vs, v)
	v = vec("fail_index_version_2", "a valid index of format 2: a newer Coffer's", "unsupported_version", random, pid(1), p1, []packRec{r1})
	ip := encodeIndex([]packRec{r1})
	ip[0] = 2
	v.index = sealIndex(v.indexName, ip)
	vs = append(vs, v)
	v = vec("fail_pack_version_2", "a valid pack of format 2: a newer Coffer's", "unsupported_version", random, pid(1), p1, []packRec{r1})
	pp := bytes.Clone(p1)
	pp[0] = 2
	v.pack = sealPack(v.packName, pp)
	vs = append(vs, v)
	v = vec("fail_index_length_mismatch", "the index gives the first blob a length 1 too long, so the piece's offset falls inside it", "integrity", second, pid(3), p3, []packRec{r3})
	bad := packRec{id: r3.id, blobs: bytes2recs(r3.blobs)}
	bad.blobs[0].n++
	v.index = sealIndex(v.indexName, encodeIndex([]packRec{bad}))
	vs = append(vs, v)
	v = vec("fail_blob_wrong_content", "the index names the blob by another piece's id: the data does not have the keyed hash its name commits to", "integrity", random, pid(1), p1, []packRec{r1})
	bad = packRec{id: r1.id, blobs: bytes2recs(r1.blobs)}
	bad.blobs[0].id = r.pieceID(text)
	v.piece = bad.blobs[0].id
	v.index = sealIndex(v.indexName, encodeIndex([]packRec{bad}))
	vs = append(vs, v)
	v = vec("fail_blob_size_mismatch", "the manifest's size for the piece is 1 more than the blob holds", "integrity", text, pid(2), p2, []packRec{r2})
	v.size++
	vs = append(vs, v)
	v = vec("fail_pack_nonzero_padding", "a byte of the pack's padding is not zero", "integrity", random, pid(1), p1, []packRec{r1})
	pp = append(bytes.Clone(p1), make([]byte, 4096-len(p1))...)
	pp[len(pp)-1] = 1
	v.pack = sealPack(v.packName, pp)
	vs = append(vs, v)
	v = vec("fail_index_nonzero_padding", "a byte of the index's padding is not zero", "integrity", random, pid(1), p1, []packRec{r1})
	ip = encodeIndex([]packRec{r1})
	ip[len(ip)-1] = 1
	v.index = sealIndex(v.indexName, ip)
	vs = append(vs, v)
	v = vec("fail_blob_unknown_encoding", "the blob's encoding byte is 2", "integrity", random, pid(1), p1, []packRec{r1})
	pp = bytes.Clone(p1)
	pp[packHeader] = 2
	v.pack = sealPack(v.packName, pp)
	vs = append(vs, v)
	v = vec("fail_pack_count_beyond", "the pack's blob count is one more than it holds", "integrity", random, pid(1), p1, []packRec{r1})
	pp = bytes.Clone(p1)
	pp[4]++
	v.pack = sealPack(v.packName, pp)
	vs = append(vs, v)
	v = vec("fail_zstd_blob_bomb", "a zstd blob whose frame decodes to more than the piece's size", "integrity", text[:100], pid(5), nil, nil)
	pp = []byte{packFormat, 0, 0, 0, 1}
	pp = appendBlob(pp, text, true)
	binary.BigEndian.PutUint32(pp[packHeader+5:], 100) // the blob claims 100 bytes
	v.pack = sealPack(v.packName, pp)
	v.index = sealIndex(v.indexName, encodeIndex([]packRec{{id: pid(5), blobs: []blobRec{{id: r.pieceID(text[:100]), n: binary.BigEndian.Uint32(pp[packHeader+1:])}}}}))
	vs = append(vs, v)
	return vs
}

func bytes2recs(b []blobRec) []blobRec { return append([]blobRec(nil), b...) }

func (v packVector) encode(key *backupkey.Key) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "expect: %s\n", v.expect)
	fmt.Fprintf(&b, "key: %x\n", key.Bytes()[:])
	fmt.Fprintf(&b, "repo: %x\n", vectorRepoID[:])
	fmt.Fprintf(&b, "piece: %s\n", v.piece)
	fmt.Fprintf(&b, "piece-size: %d\n", v.size)
	if v.expect == "ok" {
		fmt.Fprintf(&b, "piece-sha256: %x\n", sha256.Sum256(v.data))
	}
	fmt.Fprintf(&b, "index-name: %s\n", v.indexName)
	fmt.Fprintf(&b, "pack-name: %s\n", v.packName)
	fmt.Fprintf(&b, "comment: %s\n", v.comment)
	fmt.Fprintf(&b, "index: %x\n", v.index)
	fmt.Fprintf(&b, "pack: %x\n", v.pack)
	return b.Bytes()
}

// readPackVector is what a decryptor does with one vector: store the two
// objects, read the index, read the piece.
func readPackVector(t *testing.T, text []byte) (fields map[string]string, data []byte, err error) {
	fields = map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(text)), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("bad line %q", line)
		}
		fields[k] = v
	}
	kb, _ := hex.DecodeString(fields["key"])
	key, kerr := backupkey.FromBytes(kb)
	if kerr != nil {
		t.Fatal(kerr)
	}
	r := vectorRepo(key)
	ctx := context.Background()
	for _, o := range []string{"index", "pack"} {
		body, _ := hex.DecodeString(fields[o])
		if err := r.b.Put(ctx, fields[o+"-name"], bytes.NewReader(body), int64(len(body))); err != nil {
			t.Fatal(err)
		}
	}
	var p piece
	hex.Decode(p.ID[:], []byte(fields["piece"]))
	size, _ := strconv.Atoi(fields["piece-size"])
	p.Size = int64(size)
	x, lerr := r.loadIndex(ctx)
	if lerr != nil {
		t.Fatal(lerr)
	}
	if len(x.bad) > 0 {
		// What a restore reports: the index is unreadable, for the
		// reason it gives.
		return fields, nil, errors.New(x.bad[0].Problem)
	}
	data, err = r.fetchPiece(ctx, p)
	return fields, data, err
}

func TestPackVectors(t *testing.T) {
	if *writePackVectors {
		key := fixtureKey(t)
		os.RemoveAll(packVectorDir)
		os.MkdirAll(packVectorDir, 0o755)
		for _, v := range makePackVectors(t) {
			if err := os.WriteFile(filepath.Join(packVectorDir, v.name), v.encode(key), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	des, err := os.ReadDir(packVectorDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	sort.Strings(names)
	// Every vector the generator makes is committed, and no other.
	var want []string
	for _, v := range makePackVectors(t) {
		want = append(want, v.name)
	}
	sort.Strings(want)
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("testdata/packs holds %v; the generator makes %v: run with -write-pack-vectors", names, want)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			text, _ := os.ReadFile(filepath.Join(packVectorDir, name))
			fields, data, err := readPackVector(t, text)
			if strings.HasPrefix(name, "good_") != (fields["expect"] == "ok") {
				t.Fatalf("%s expects %s", name, fields["expect"])
			}
			switch fields["expect"] {
			case "ok":
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if fmt.Sprintf("%x", sha256.Sum256(data)) != fields["piece-sha256"] {
					t.Fatal("wrong data")
				}
			case "integrity":
				if !errors.Is(err, container.ErrIntegrity) && !strings.Contains(fmt.Sprint(err), container.ErrIntegrity.Error()) {
					t.Fatalf("want an integrity failure, got %v", err)
				}
			case "unsupported_version":
				if !errors.Is(err, container.ErrUnsupportedVersion) && !strings.Contains(fmt.Sprint(err), container.ErrUnsupportedVersion.Error()) {
					t.Fatalf("want an unsupported version, got %v", err)
				}
			default:
				t.Fatalf("unknown expect %q", fields["expect"])
			}
		})
	}
}
