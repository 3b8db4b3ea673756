package repository

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cofferhq/coffer/internal/device/container"
	"github.com/cofferhq/coffer/storage"
)

// Packs and indexes (FORMAT.md 3.5, 3.6; DESIGN.md "Packs").
//
// A piece whose data is smaller than packThreshold (a quarter of the
// piece size: 1 MiB) is not stored as an object of its own but as a blob
// in a pack: one data container named packs/XX/ID (ID random) whose
// plaintext is
//
//	version (1 byte: 1) || count (4) || blob × count || zeros to the class
//	blob = encoding (1: 0 raw, 1 zstd) || n (4) || size (4) || payload (n)
//
// The container is written without per-chunk compression, so the padding
// stays. A full pack (one the next blob did not fit in) is padded to
// exactly packTarget bytes, the last pack of a backup to its size class
// (padClass): storage learns the size of packs, never of a blob. Blob ids
// are not stored in the pack: they are the keyed hash of the blob's data
// (the piece id), recomputed when a pack is read without its index.
//
// An index object index/ID (ID random) is a container of kind manifest,
// without compression, whose plaintext is
//
//	version (1 byte: 1) || packs (4) ||
//	  (pack id (32) || count (4) || (blob id (32) || n (4)) × count) × packs ||
//	zeros to the class
//
// The offset of blob i of a pack is 5 + Σ_{j<i} (9 + n_j). Every backup
// writes one index for the packs it wrote (and those it adopted), before
// its manifest; prune writes one index for every pack it keeps and then
// deletes the indexes it replaced.

const (
	packsPrefix = "packs/"
	indexPrefix = "index/"

	packFormat  = 1
	indexFormat = 1

	packHeader = 5 // version, count
	blobHeader = 9 // encoding, n, size

	// DefaultPackTarget is the size of a full pack's plaintext.
	DefaultPackTarget = 16 << 20

	// maxPackSize bounds what a reader downloads as one pack.
	maxPackSize = 64 << 20
	// maxIndexSize bounds one index object (about 1.8 million blobs).
	maxIndexSize = 64 << 20

	// repackGarbage: prune repacks a pack more than half of whose blob
	// bytes no kept backup references.
	repackGarbageNum, repackGarbageDen = 1, 2
)

// packThreshold is the piece size below which a piece goes into a pack:
// a quarter of the piece size (1 MiB), unless a test set packBelow (-1:
// never pack, the layout of earlier versions).
func (r *Repository) packThreshold() int {
	if r.packBelow != 0 {
		return r.packBelow
	}
	return r.pieceSize / 4
}

type objID [32]byte

func (id objID) String() string { return hex.EncodeToString(id[:]) }

func packName(id objID) string {
	h := id.String()
	return packsPrefix + h[:2] + "/" + h
}

func parsePackName(name string) (objID, bool) {
	var id objID
	rest, ok := strings.CutPrefix(name, packsPrefix)
	if !ok || len(rest) != 3+64 || rest[2] != '/' || rest[:2] != rest[3:5] {
		return id, false
	}
	if _, err := hex.Decode(id[:], []byte(rest[3:])); err != nil {
		return id, false
	}
	return id, true
}

func indexName(id objID) string { return indexPrefix + id.String() }

func parseIndexName(name string) (objID, bool) {
	var id objID
	rest, ok := strings.CutPrefix(name, indexPrefix)
	if !ok || len(rest) != 64 {
		return id, false
	}
	if _, err := hex.Decode(id[:], []byte(rest)); err != nil {
		return id, false
	}
	return id, true
}

func newObjID() objID {
	var id objID
	rand.Read(id[:])
	return id
}

// blobRec is one blob of a pack as an index lists it.
type blobRec struct {
	id pieceID
	n  uint32 // payload length in the pack
}

// packRec is one pack as an index lists it.
type packRec struct {
	id    objID
	blobs []blobRec
}

// appendBlob appends data's blob encoding to dst.
func appendBlob(dst, data []byte, compress bool) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	if compress && len(data) > 0 {
		dst = pieceEncoder().EncodeAll(data, dst)
		if len(dst)-start-blobHeader < len(data) {
			dst[start] = 1
		} else {
			dst = append(dst[:start+blobHeader], data...)
		}
	} else {
		dst = append(dst, data...)
	}
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-blobHeader))
	binary.BigEndian.PutUint32(dst[start+5:], uint32(len(data)))
	return dst
}

// decodeBlob returns the data of the blob at the start of b (appended to
// dst), and the blob's encoded length. limit bounds the data size.
func decodeBlob(dst, b []byte, limit int64) ([]byte, int, error) {
	if len(b) < blobHeader {
		return nil, 0, errors.New("blob header beyond the end of the pack")
	}
	enc := b[0]
	n := int64(binary.BigEndian.Uint32(b[1:]))
	size := int64(binary.BigEndian.Uint32(b[5:]))
	if n > int64(len(b)-blobHeader) {
		return nil, 0, errors.New("blob beyond the end of the pack")
	}
	if size > limit {
		return nil, 0, fmt.Errorf("blob of %d bytes, more than %d", size, limit)
	}
	if n == 0 || size == 0 {
		return nil, 0, errors.New("empty blob")
	}
	payload := b[blobHeader : blobHeader+n]
	var out []byte
	switch enc {
	case 0:
		if n != size {
			return nil, 0, errors.New("raw blob whose size is not its length")
		}
		out = append(dst, payload...)
	case 1:
		buf := append(make([]byte, 0, int64(len(dst))+size), dst...)
		var err error
		out, err = pieceDecoder().DecodeAll(payload, buf[:len(dst):len(dst)+int(size)])
		if err != nil {
			return nil, 0, fmt.Errorf("zstd: %v", err)
		}
		if int64(len(out)-len(dst)) != size {
			return nil, 0, errors.New("zstd blob of the wrong size")
		}
	default:
		return nil, 0, fmt.Errorf("unknown blob encoding %d", enc)
	}
	return out, blobHeader + int(n), nil
}

// sealPack pads a pack plaintext (header, blobs) and seals it for name:
// to exactly target if full, else to its size class.
func (r *Repository) sealPack(dst []byte, name string, plain []byte, full bool, target int) ([]byte, error) {
	cls := padClass(len(plain), target-pieceHeader)
	if full {
		cls = max(target, len(plain))
	}
	for len(plain) < cls {
		plain = append(plain, make([]byte, min(cls-len(plain), 64<<10))...)
	}
	return container.AppendSeal(dst, r.key, container.Params{Kind: container.KindData, Ref: r.ref(name), Concurrency: 1}, plain)
}

// parsePack checks a pack plaintext and returns its blobs: each blob's id
// is recomputed from its data (so a pack read without an index names its
// blobs correctly or not at all), and its offset.
func (r *Repository) parsePack(plain []byte) ([]blobRec, []int, error) {
	if len(plain) < packHeader {
		return nil, nil, errors.New("shorter than its header")
	}
	if plain[0] != packFormat {
		return nil, nil, fmt.Errorf("%w: pack format %d; upgrade Coffer", container.ErrUnsupportedVersion, plain[0])
	}
	count := int(binary.BigEndian.Uint32(plain[1:]))
	if count > len(plain)/blobHeader {
		return nil, nil, errors.New("blob count beyond its end")
	}
	off := packHeader
	recs := make([]blobRec, 0, count)
	offs := make([]int, 0, count)
	var scratch []byte
	for range count {
		data, n, err := decodeBlob(scratch[:0], plain[off:], int64(r.pieceSize))
		if err != nil {
			return nil, nil, err
		}
		scratch = data
		recs = append(recs, blobRec{id: r.pieceID(data), n: uint32(n - blobHeader)})
		offs = append(offs, off)
		off += n
	}
	if len(bytes.TrimRight(plain[off:], "\x00")) != 0 {
		return nil, nil, errors.New("non-zero padding")
	}
	return recs, offs, nil
}

// packLayout walks a pack plaintext's blob headers (without decoding any
// blob) and returns the offset of each blob; the count must fit and every
// byte after the last blob must be zero.
func packLayout(plain []byte) ([]uint32, error) {
	if len(plain) < packHeader {
		return nil, errors.New("shorter than its header")
	}
	count := int(binary.BigEndian.Uint32(plain[1:]))
	if count > len(plain)/blobHeader {
		return nil, errors.New("blob count beyond its end")
	}
	offs := make([]uint32, 0, count)
	off := packHeader
	for range count {
		if len(plain)-off < blobHeader {
			return nil, errors.New("blob header beyond its end")
		}
		n := int(binary.BigEndian.Uint32(plain[off+1:]))
		if n > len(plain)-off-blobHeader {
			return nil, errors.New("blob beyond its end")
		}
		if n == 0 {
			// No piece is empty (an empty file has none), so a blob
			// never is: padding cannot pass for blobs.
			return nil, errors.New("empty blob")
		}
		offs = append(offs, uint32(off))
		off += blobHeader + n
	}
	if len(bytes.TrimRight(plain[off:], "\x00")) != 0 {
		return nil, errors.New("non-zero padding")
	}
	return offs, nil
}

// encodeIndex returns an index plaintext, padded to its size class.
func encodeIndex(packs []packRec) []byte {
	n := 5
	for _, p := range packs {
		n += 36 + 36*len(p.blobs)
	}
	b := make([]byte, 0, padClass(n, maxIndexSize))
	b = append(b, indexFormat)
	b = binary.BigEndian.AppendUint32(b, uint32(len(packs)))
	for _, p := range packs {
		b = append(b, p.id[:]...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(p.blobs)))
		for _, bl := range p.blobs {
			b = append(b, bl.id[:]...)
			b = binary.BigEndian.AppendUint32(b, bl.n)
		}
	}
	return append(b, make([]byte, padClass(n, maxIndexSize)-n)...)
}

func decodeIndex(b []byte) ([]packRec, error) {
	if len(b) < 5 {
		return nil, integrityf("index shorter than its header")
	}
	if b[0] != indexFormat {
		return nil, fmt.Errorf("%w: index format %d; upgrade Coffer", container.ErrUnsupportedVersion, b[0])
	}
	np := int(binary.BigEndian.Uint32(b[1:]))
	if np > len(b)/36 {
		return nil, integrityf("index pack count beyond its end")
	}
	off := 5
	packs := make([]packRec, 0, np)
	for range np {
		if len(b)-off < 36 {
			return nil, integrityf("index truncated")
		}
		var p packRec
		copy(p.id[:], b[off:])
		nb := int(binary.BigEndian.Uint32(b[off+32:]))
		off += 36
		if nb > (len(b)-off)/36 {
			return nil, integrityf("index blob count beyond its end")
		}
		p.blobs = make([]blobRec, nb)
		for i := range nb {
			copy(p.blobs[i].id[:], b[off:])
			p.blobs[i].n = binary.BigEndian.Uint32(b[off+32:])
			off += 36
		}
		packs = append(packs, p)
	}
	if len(bytes.TrimRight(b[off:], "\x00")) != 0 {
		return nil, integrityf("index has data after its packs")
	}
	return packs, nil
}

// indexEvery is the number of packs (1 GiB) after which a backup writes
// an index of the packs it has uploaded so far.
var indexEvery = 64 // a variable for tests

// maxIndexWrite bounds the plaintext of one index a writer makes (a
// quarter of what readers accept); more packs go into more indexes.
const maxIndexWrite = maxIndexSize / 4

// putIndex writes indexes of packs, create-only under fresh names, as
// many as needed to keep each under maxIndexWrite. It returns the bytes
// stored.
func (r *Repository) putIndex(ctx context.Context, packs []packRec) ([]string, int64, error) {
	var names []string
	var stored int64
	for len(packs) > 0 {
		n, size := 0, 5
		for n < len(packs) && (n == 0 || size+36+36*len(packs[n].blobs) <= maxIndexWrite) {
			size += 36 + 36*len(packs[n].blobs)
			n++
		}
		name, k, err := r.putOneIndex(ctx, packs[:n])
		if err != nil {
			return names, stored, err
		}
		names, stored = append(names, name), stored+k
		packs = packs[n:]
	}
	return names, stored, nil
}

func (r *Repository) putOneIndex(ctx context.Context, packs []packRec) (string, int64, error) {
	plain := encodeIndex(packs)
	for {
		name := indexName(newObjID())
		sealed, err := container.Seal(r.key, container.Params{Kind: container.KindManifest, Ref: r.ref(name)}, plain)
		if err != nil {
			return "", 0, err
		}
		err = r.b.PutIfAbsent(ctx, name, bytes.NewReader(sealed), int64(len(sealed)))
		if errors.Is(err, storage.ErrExist) {
			continue // 2^-256; but never overwrite
		}
		if err != nil {
			return "", 0, fmt.Errorf("writing index %s: %w", name, err)
		}
		return name, int64(len(sealed)), nil
	}
}

// getIndex downloads and opens one index object.
func (r *Repository) getIndex(ctx context.Context, name string) ([]packRec, error) {
	sealed, err := r.getObject(ctx, name, maxIndexSize+maxIndexSize/512+4096)
	if err != nil {
		return nil, err
	}
	plain, err := container.Open(r.key, container.KindManifest, r.ref(name), sealed, 0)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", name, err)
	}
	packs, err := decodeIndex(plain)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", name, err)
	}
	return packs, nil
}

// getObject downloads an object of at most limit bytes; a missing object
// is an integrity failure (it was referenced), a broken connection a
// storage failure.
func (r *Repository) getObject(ctx context.Context, name string, limit int64) ([]byte, error) {
	rc, err := r.b.Get(ctx, name)
	if errors.Is(err, storage.ErrNotExist) {
		return nil, integrityf("%s is missing from storage", name)
	}
	if err != nil {
		return nil, fmt.Errorf("downloading %s: %w", name, err)
	}
	defer rc.Close()
	b, err := readInto(nil, rc, limit+1)
	if err != nil {
		return nil, fmt.Errorf("downloading %s: %w", name, wrapRead(err))
	}
	if int64(len(b)) > limit {
		return nil, integrityf("%s is larger than any such object", name)
	}
	return b, nil
}

// openPack downloads and opens a pack, returning its padded plaintext.
func (r *Repository) openPack(ctx context.Context, id objID) ([]byte, error) {
	name := packName(id)
	sealed, err := r.getObject(ctx, name, maxPackSize+maxPackSize/512+4096)
	if err != nil {
		return nil, err
	}
	plain, err := container.Open(r.key, container.KindData, r.ref(name), sealed, 0)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", id.String()[:16], err)
	}
	if len(plain) < packHeader || plain[0] != packFormat {
		if len(plain) >= 1 && plain[0] > packFormat {
			return nil, fmt.Errorf("%w: pack %s has format %d; upgrade Coffer", container.ErrUnsupportedVersion, id.String()[:16], plain[0])
		}
		return nil, integrityf("pack %s: bad header", id.String()[:16])
	}
	if _, err := packLayout(plain); err != nil {
		return nil, integrityf("pack %s: %v", id.String()[:16], err)
	}
	return plain, nil
}

// blobLoc is where a packed piece is.
type blobLoc struct {
	pack *packInfo
	off  uint32 // offset of the blob's header in the pack plaintext
	n    uint32
}

type packInfo struct {
	id      objID
	present bool  // listed by storage, and large enough to be a pack
	size    int64 // stored size
	blobs   []blobRec
	indexed bool
}

// BadIndex is an index object that does not decrypt or parse.
type BadIndex struct {
	Name    string `json:"name"`
	Problem string `json:"problem"`
}

// packIndex is what the repository's indexes and pack listing say: where
// each packed piece is.
type packIndex struct {
	packs   map[objID]*packInfo
	blobs   map[pieceID]blobLoc
	indexes []string // index objects read
	bad     []BadIndex
	cache   *packCache
}

// unindexed returns the present packs no readable index lists.
func (x *packIndex) unindexed() []*packInfo {
	var out []*packInfo
	for _, p := range x.packs {
		if p.present && !p.indexed {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].id[:], out[j].id[:]) < 0 })
	return out
}

// lookup returns where a piece is packed, if in a present pack.
func (x *packIndex) lookup(id pieceID) (blobLoc, bool) {
	if x == nil {
		return blobLoc{}, false
	}
	l, ok := x.blobs[id]
	return l, ok && l.pack.present
}

// add records the blobs of pack p (from an index or from the pack).
func (x *packIndex) add(p *packInfo, blobs []blobRec) {
	p.blobs = blobs
	off := uint32(packHeader)
	for _, b := range blobs {
		if old, ok := x.blobs[b.id]; !ok || !old.pack.present {
			x.blobs[b.id] = blobLoc{pack: p, off: off, n: b.n}
		}
		off += blobHeader + b.n
	}
}

// loadIndex lists packs/ and index/ and reads every index. Damaged
// indexes are recorded, not fatal; storage failures are.
func (r *Repository) loadIndex(ctx context.Context) (*packIndex, error) {
	x := &packIndex{packs: map[objID]*packInfo{}, blobs: map[pieceID]blobLoc{}, cache: newPackCache(r)}
	err := r.b.List(ctx, packsPrefix, func(oi storage.ObjectInfo) error {
		if id, ok := parsePackName(oi.Name); ok {
			x.packs[id] = &packInfo{id: id, present: oi.Size > minSealedSize, size: oi.Size}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing packs in %s: %w", r.b.Location(), err)
	}
	var names []string
	err = r.b.List(ctx, indexPrefix, func(oi storage.ObjectInfo) error {
		if _, ok := parseIndexName(oi.Name); ok {
			names = append(names, oi.Name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing indexes in %s: %w", r.b.Location(), err)
	}
	sort.Strings(names)
	for _, name := range names {
		recs, err := r.getIndex(ctx, name)
		if err != nil {
			if !isDamage(err) {
				return nil, err
			}
			x.bad = append(x.bad, BadIndex{Name: name, Problem: err.Error()})
			continue
		}
		x.indexes = append(x.indexes, name)
		for _, rec := range recs {
			p := x.packs[rec.id]
			if p == nil {
				p = &packInfo{id: rec.id} // listed by an index, not stored
				x.packs[rec.id] = p
			}
			if p.indexed {
				continue // listed by another index too (adopted, or a prune crashed)
			}
			p.indexed = true
			x.add(p, rec.blobs)
		}
	}
	r.setIndex(x)
	return x, nil
}

func (r *Repository) setIndex(x *packIndex) {
	r.idxMu.Lock()
	r.idx = x
	r.idxMu.Unlock()
}

func (r *Repository) curIndex() *packIndex {
	r.idxMu.Lock()
	defer r.idxMu.Unlock()
	return r.idx
}

// adopt reads the present packs no index lists (left by a backup that was
// interrupted before writing its index, or whose index was lost) and adds
// their blobs, whose ids are recomputed from their data. It returns the
// packs adopted, for the caller to index; damaged ones are skipped.
func (r *Repository) adopt(ctx context.Context, x *packIndex) ([]packRec, error) {
	var out []packRec
	for _, p := range x.unindexed() {
		plain, err := r.openPack(ctx, p.id)
		var recs []blobRec
		if err == nil {
			recs, _, err = r.parsePack(plain)
			if err != nil {
				err = integrityf("pack %s: %v", p.id.String()[:16], err)
			}
		}
		if err != nil {
			if isDamage(err) {
				continue
			}
			return nil, err
		}
		p.indexed = true
		x.add(p, recs)
		out = append(out, packRec{id: p.id, blobs: recs})
	}
	return out, nil
}

// packCache holds the few packs a restore or check reads last: pieces are
// read in the order they were packed, so a pack is downloaded once.
type packCache struct {
	r  *Repository
	mu sync.Mutex
	m  map[objID]*cachedPack
	lr []objID // least recent first
}

type cachedPack struct {
	ready chan struct{}
	plain []byte
	offs  []uint32 // blob offsets (packLayout)
	err   error
}

const packCacheSize = 3

func newPackCache(r *Repository) *packCache {
	return &packCache{r: r, m: map[objID]*cachedPack{}}
}

func (c *packCache) get(ctx context.Context, id objID) (*cachedPack, error) {
	c.mu.Lock()
	e, ok := c.m[id]
	if ok {
		for i, v := range c.lr {
			if v == id {
				c.lr = append(c.lr[:i], c.lr[i+1:]...)
				break
			}
		}
		c.lr = append(c.lr, id)
		c.mu.Unlock()
		<-e.ready
		return e, e.err
	}
	e = &cachedPack{ready: make(chan struct{})}
	c.m[id] = e
	c.lr = append(c.lr, id)
	for len(c.lr) > packCacheSize {
		delete(c.m, c.lr[0])
		c.lr = c.lr[1:]
	}
	c.mu.Unlock()
	e.plain, e.err = c.r.openPack(ctx, id)
	if e.err == nil {
		e.offs, _ = packLayout(e.plain) // checked by openPack
	}
	if e.err != nil && !isDamage(e.err) {
		c.mu.Lock()
		if c.m[id] == e {
			delete(c.m, id) // a storage failure is not remembered
		}
		c.mu.Unlock()
	}
	close(e.ready)
	return e, e.err
}

// fetchPacked reads a packed piece, checking its size and that its data
// has the keyed hash the piece is named by.
func (r *Repository) fetchPacked(ctx context.Context, x *packIndex, p piece, l blobLoc) ([]byte, error) {
	short := p.ID.String()[:16]
	cp, err := x.cache.get(ctx, l.pack.id)
	if err != nil {
		return nil, fmt.Errorf("piece %s: %w", short, err)
	}
	plain := cp.plain
	if _, at := slices.BinarySearch(cp.offs, l.off); !at {
		return nil, integrityf("piece %s: pack %s has no blob where its index says", short, l.pack.id.String()[:16])
	}
	b := plain[l.off:]
	if binary.BigEndian.Uint32(b[1:]) != l.n {
		return nil, integrityf("piece %s: pack %s and its index disagree", short, l.pack.id.String()[:16])
	}
	pb := plainBufs.Get().(*[]byte)
	dst := (*pb)[:0]
	data, _, err := decodeBlob(dst, b, p.Size)
	if err != nil {
		plainBufs.Put(pb)
		return nil, integrityf("piece %s in pack %s: %v", short, l.pack.id.String()[:16], err)
	}
	if int64(len(data)) != p.Size {
		putPlain(data)
		return nil, integrityf("piece %s holds %d bytes, the manifest says %d", short, len(data), p.Size)
	}
	if id := r.pieceID(data); !hmac.Equal(id[:], p.ID[:]) {
		putPlain(data)
		return nil, integrityf("piece %s in pack %s does not hold the content its name commits to", short, l.pack.id.String()[:16])
	}
	return data, nil
}

// packer collects small pieces into packs and uploads each full one.
type packer struct {
	r      *Repository
	ctx    context.Context // of the whole operation: uploads outlive a worker's
	target int
	mu     sync.Mutex
	buf    []byte
	blobs  []blobRec
	done   []packRec // uploaded, not yet in an index
	err    error
	sem    chan struct{}
	wg     sync.WaitGroup
	stored atomic.Int64 // bytes written to storage
	packs  atomic.Int64
}

func (r *Repository) newPacker(ctx context.Context) *packer {
	return &packer{r: r, ctx: ctx, target: r.packTarget, sem: make(chan struct{}, 2)}
}

// add puts data (named id) into the current pack; a full pack is uploaded
// in the background. blob is scratch space the caller may reuse.
func (pk *packer) add(ctx context.Context, id pieceID, data []byte, compress bool, scratch *[]byte) error {
	enc := appendBlob((*scratch)[:0], data, compress)
	*scratch = enc
	return pk.addEncoded(ctx, id, enc)
}

// addEncoded adds a blob already encoded (a repack copies blobs as they are).
func (pk *packer) addEncoded(ctx context.Context, id pieceID, enc []byte) error {
	pk.mu.Lock()
	if pk.err != nil {
		err := pk.err
		pk.mu.Unlock()
		return err
	}
	var upload func()
	if len(pk.buf) > packHeader && len(pk.buf)+len(enc) > pk.target {
		upload = pk.takeLocked(true)
	}
	if pk.buf == nil {
		pk.buf = make([]byte, packHeader, pk.target+pk.target/256)
		pk.buf[0] = packFormat
	}
	pk.buf = append(pk.buf, enc...)
	pk.blobs = append(pk.blobs, blobRec{id: id, n: uint32(len(enc) - blobHeader)})
	pk.mu.Unlock()
	if upload != nil {
		upload()
	}
	return nil
}

// takeLocked takes the current pack out of the packer and returns what
// uploads it (in the background, at most two at once), to be called
// without the lock held.
func (pk *packer) takeLocked(full bool) func() {
	buf, blobs := pk.buf, pk.blobs
	pk.buf, pk.blobs = nil, nil
	binary.BigEndian.PutUint32(buf[1:], uint32(len(blobs)))
	pk.wg.Add(1)
	return func() {
		pk.sem <- struct{}{}
		go func() {
			defer pk.wg.Done()
			defer func() { <-pk.sem }()
			id := newObjID()
			name := packName(id)
			sealed, err := pk.r.sealPack(nil, name, buf, full, pk.target)
			if err == nil {
				err = pk.r.b.Put(pk.ctx, name, bytes.NewReader(sealed), int64(len(sealed)))
			}
			pk.mu.Lock()
			defer pk.mu.Unlock()
			if err != nil {
				if pk.err == nil {
					pk.err = fmt.Errorf("uploading a pack: %w", err)
				}
				return
			}
			pk.stored.Add(int64(len(sealed)))
			pk.packs.Add(1)
			pk.done = append(pk.done, packRec{id: id, blobs: blobs})
			if len(pk.done) >= indexEvery {
				// A long backup indexes its packs as it goes, so that
				// one killed midway leaves few packs for the next to
				// read back (adopt).
				batch := pk.done
				pk.done = nil
				pk.mu.Unlock()
				_, n, err := pk.r.putIndex(pk.ctx, batch)
				pk.mu.Lock()
				pk.stored.Add(n)
				if err != nil && pk.err == nil {
					pk.err = err
				}
			}
		}()
	}
}

// finish uploads the last pack and waits for every upload; it returns the
// packs uploaded.
func (pk *packer) finish(ctx context.Context) ([]packRec, error) {
	pk.mu.Lock()
	var upload func()
	if pk.err == nil && len(pk.blobs) > 0 {
		upload = pk.takeLocked(false)
	}
	pk.mu.Unlock()
	if upload != nil {
		upload()
	}
	pk.wg.Wait()
	pk.mu.Lock()
	defer pk.mu.Unlock()
	done := pk.done
	pk.done = nil
	return done, pk.err
}

// wait waits for uploads in flight (on a failed backup).
func (pk *packer) wait() { pk.wg.Wait() }
