// Command vectors writes the container test vectors of FORMAT.md section 5:
//
//	go run ./internal/cmd/vectors -out internal/device/container/testdata
//
// It has its own small, single-threaded implementation of the format,
// written from FORMAT.md rather than shared with package container, with
// salts derived from the vector names so that its output is the same on
// every run. Package container's tests check that every vector has the
// outcome it states, and this command's test that the committed vectors are
// what it writes.
package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
)

func main() {
	out := flag.String("out", "internal/device/container/testdata", "directory to write the vectors to")
	flag.Parse()
	if err := Generate(*out); err != nil {
		log.Fatal(err)
	}
}

const (
	headerSize = 156
	kindConfig = 1
	kindData   = 2
	kindMan    = 3
	kindLock   = 4
	raw        = 0
	zstdEnc    = 1
)

var kindNames = map[byte]string{kindConfig: "config", kindData: "data", kindMan: "manifest", kindLock: "lock"}

// params describe one container.
type params struct {
	kind     byte
	repoID   [16]byte
	name     string
	log2     byte
	compress bool
	salt     [32]byte
	version  byte
}

// container is a sealed container under construction.
type container struct {
	hdr    []byte
	aead   cipher.AEAD
	aad    [32]byte
	c      int
	chunks [][]byte // each with its length field
}

func ref(repoID [16]byte, name string) []byte {
	h := sha256.New()
	h.Write([]byte("coffer v1 ref"))
	h.Write(repoID[:])
	h.Write([]byte(name))
	return h.Sum(nil)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// newContainer builds a header by FORMAT 2.1 and 2.2.
func newContainer(key []byte, p params) *container {
	if p.version == 0 {
		p.version = 1
	}
	h := make([]byte, 0, headerSize)
	h = append(h, "COFFER"...)
	comp := byte(0)
	if p.compress {
		comp = 1
	}
	h = append(h, p.version, 1, p.log2, comp, p.kind, 0)
	h = append(h, p.salt[:]...)
	h = append(h, ref(p.repoID, p.name)...)
	prk := must(hkdf.Extract(sha256.New, key, p.salt[:]))
	h = append(h, must(hkdf.Expand(sha256.New, prk, "coffer v1 commitment", 32))...)
	m := hmac.New(sha256.New, must(hkdf.Expand(sha256.New, prk, "coffer v1 header mac", 32)))
	m.Write(h)
	h = m.Sum(h)
	check := sha256.Sum256(h)
	h = append(h, check[:16]...)
	block := must(aes.NewCipher(must(hkdf.Expand(sha256.New, prk, "coffer v1 payload", 32))))
	return &container{
		hdr:  h,
		aead: must(cipher.NewGCM(block)),
		aad:  sha256.Sum256(h),
		c:    1 << p.log2,
	}
}

// seal adds chunk i with the given body (encoding byte and data).
func (c *container) seal(i uint64, final bool, body []byte) []byte {
	nonce := make([]byte, 12)
	binary.BigEndian.PutUint64(nonce[3:], i)
	if final {
		nonce[11] = 1
	}
	sealed := c.aead.Seal(nil, nonce, body, c.aad[:])
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(sealed))), sealed...)
}

var encoder = must(zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false), zstd.WithEncoderConcurrency(1)))

// body encodes one chunk's plaintext as a writer does: zstd if allowed and
// smaller, raw otherwise.
func body(data []byte, compress bool) []byte {
	if compress && len(data) > 0 {
		if z := encoder.EncodeAll(data, nil); len(z) < len(data) {
			return append([]byte{zstdEnc}, z...)
		}
	}
	return append([]byte{raw}, data...)
}

// sealAll cuts plaintext into chunks by FORMAT 2.3 and seals them.
func (c *container) sealAll(plaintext []byte, compress bool) *container {
	n := 1
	if len(plaintext) > 0 {
		n = (len(plaintext) + c.c - 1) / c.c
	}
	for i := range n {
		chunk := plaintext[i*c.c : min((i+1)*c.c, len(plaintext))]
		c.chunks = append(c.chunks, c.seal(uint64(i), i == n-1, body(chunk, compress)))
	}
	return c
}

func (c *container) bytes() []byte {
	return bytes.Join(append([][]byte{c.hdr}, c.chunks...), nil)
}

// fixCheck recomputes the unkeyed check after a header edit.
func fixCheck(b []byte) []byte {
	sum := sha256.Sum256(b[:140])
	copy(b[140:156], sum[:16])
	return b
}

// stream returns deterministic pseudo-random bytes for a label.
func stream(label string, n int) []byte {
	out := make([]byte, 0, n+32)
	for i := 0; len(out) < n; i++ {
		h := sha256.Sum256(fmt.Appendf(nil, "%s %d", label, i))
		out = append(out, h[:]...)
	}
	return out[:n]
}

// text returns n bytes of chat-like lines; distinct > 0 limits the number
// of different lines, making the text very compressible.
func text(label string, n, distinct int) []byte {
	words := strings.Fields("the i you to a and it is that of in for me my on have be we so just not this with but what are at do was can all no if up get like out know about yes ok now go how good one there will time see tomorrow lunch dinner home work later thanks sorry haha love weekend train late soon")
	names := []string{"Alice", "Bob", "Chloé", "Dave", "Emma", "Mum"}
	r := stream(label, n+1024)
	var b strings.Builder
	for line := 0; b.Len() < n; line++ {
		seed := line
		if distinct > 0 {
			seed = line % distinct
		}
		x := r[(seed*7)%len(r):]
		fmt.Fprintf(&b, "2024-%02d-%02d %02d:%02d %s:", 1+seed/400%12, 1+seed/15%28, seed/60%24, seed%60, names[int(x[0])%len(names)])
		for j := range 1 + int(x[1])%10 {
			b.WriteString(" " + words[int(x[2+j])%len(words)])
		}
		b.WriteByte('\n')
	}
	return []byte(b.String()[:n])
}

// vector is one test vector file.
type vector struct {
	name      string
	expect    string // ok, wrong_key, integrity, unsupported_version
	key       []byte
	kind      byte
	repoID    [16]byte
	objName   string
	plaintext []byte // for ok
	comment   string
	data      []byte
}

func (v *vector) encode() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "expect: %s\n", v.expect)
	fmt.Fprintf(&b, "key: %x\n", v.key)
	fmt.Fprintf(&b, "kind: %s\n", kindNames[v.kind])
	fmt.Fprintf(&b, "repo: %x\n", v.repoID)
	fmt.Fprintf(&b, "name: %s\n", v.objName)
	if v.expect == "ok" {
		fmt.Fprintf(&b, "plaintext-size: %d\n", len(v.plaintext))
		fmt.Fprintf(&b, "plaintext-sha256: %x\n", sha256.Sum256(v.plaintext))
	}
	fmt.Fprintf(&b, "comment: %s\n\n", v.comment)
	b.Write(v.data)
	return b.Bytes()
}

// Generate writes every vector into dir.
func Generate(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, v := range vectors() {
		if err := os.WriteFile(filepath.Join(dir, v.name), v.encode(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func vectors() []*vector {
	key := must(hex.DecodeString("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"))
	otherKey := must(hex.DecodeString("3f2a9c4e0b71d5e86a20c1f38e4d7b9602ace5f14d389b607ce21a8f53d0b4c9"))
	repo := [16]byte([]byte("coffer-test-repo"))
	const name = "data/00/0001"
	const l = 16
	const c = 1 << l

	salt := func(label string) [32]byte { return sha256.Sum256([]byte("salt " + label)) }
	pp := func(label string, kind byte, compress bool) params {
		return params{kind: kind, repoID: repo, name: name, log2: l, compress: compress, salt: salt(label)}
	}
	var vs []*vector
	add := func(v *vector) {
		if v.key == nil {
			v.key = key
		}
		if v.kind == 0 {
			v.kind = kindData
		}
		if v.objName == "" {
			v.repoID, v.objName = repo, name
		}
		vs = append(vs, v)
	}
	good := func(vname, comment string, p params, plain []byte) *container {
		ct := newContainer(key, p).sealAll(plain, p.compress)
		add(&vector{name: vname, expect: "ok", kind: p.kind, repoID: p.repoID, objName: p.name, plaintext: plain, comment: comment, data: ct.bytes()})
		return ct
	}
	fail := func(vname, expect, comment string, data []byte) {
		add(&vector{name: vname, expect: expect, comment: comment, data: data})
	}

	// Good vectors.
	good("good_empty", "empty plaintext: one empty final chunk", pp("empty", kindData, false), nil)
	good("good_one_chunk", "one short raw chunk", pp("one", kindData, false), text("one", 1000, 0))
	good("good_multi_chunk", "raw chunks: 2 full and a 5-byte final one", pp("multi", kindData, false), stream("multi", 2*c+5))
	mixed := append(append(text("mixed1", c, 0), stream("mixed2", c)...), text("mixed3", c/2, 0)...)
	good("good_multi_chunk_zstd", "compression allowed: a zstd chunk, a raw (incompressible) chunk, a zstd final chunk", pp("mixed", kindData, true), mixed)
	good("good_last_full", "the final chunk is full: 2 chunks of exactly C bytes, zstd", pp("lastfull", kindData, true), text("lastfull", 2*c, 50))
	cfg := pp("config", kindConfig, false)
	cfg.repoID, cfg.name = [16]byte{}, "config"
	good("good_config", "the config object: repo id all zeros, name \"config\"", cfg, []byte(`{"version":1}`))
	lock := pp("lock", kindLock, true)
	lock.log2, lock.name = 24, "locks/0001"
	good("good_lock_l24", "a lock with the largest chunk size, L = 24", lock, text("lock", 300, 0))
	man := pp("manifest", kindMan, true)
	man.log2, man.name = 17, "manifests/00000000000000000003"
	good("good_manifest_l17", "a manifest with L = 17, 2 chunks", man, text("manifest", 1<<17+999, 0))

	// Failures. base: 4 zstd chunks of very compressible text, the last
	// one half full.
	basePlain := text("base", 3*c+c/2, 100)
	base := newContainer(key, pp("base", kindData, true)).sealAll(basePlain, true)
	ch := base.chunks
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	edit := func(f func(b []byte)) []byte {
		b := base.bytes()
		f(b)
		return b
	}
	hdrEdit := func(f func(b []byte)) []byte { return edit(func(b []byte) { f(b); fixCheck(b) }) }

	fail("fail_bad_commitment_wrong_key", "wrong_key", "sealed under another key", newContainer(otherKey, pp("base", kindData, true)).sealAll(basePlain, true).bytes())
	fail("fail_bad_magic", "integrity", "magic COFFEE", edit(func(b []byte) { b[5] = 'E' }))
	fail("fail_bad_check", "integrity", "one bit of the check field flipped", edit(func(b []byte) { b[150] ^= 1 }))
	fail("fail_header_bit_flip", "integrity", "one bit of the salt flipped, check not recomputed", edit(func(b []byte) { b[20] ^= 0x10 }))
	fail("fail_bad_header_mac", "integrity", "one bit of the MAC flipped, check recomputed", hdrEdit(func(b []byte) { b[120] ^= 1 }))
	fail("fail_header_edit_l", "integrity", "L changed to 17, check recomputed: the MAC fails", hdrEdit(func(b []byte) { b[8] = 17 }))
	fail("fail_unsupported_version", "unsupported_version", "version 2 with a valid check", hdrEdit(func(b []byte) { b[6] = 2 }))
	fail("fail_version_zero", "integrity", "version 0 with a valid check", hdrEdit(func(b []byte) { b[6] = 0 }))
	fail("fail_unknown_suite", "integrity", "suite 2 with a valid check", hdrEdit(func(b []byte) { b[7] = 2 }))
	fail("fail_chunk_size_out_of_range", "integrity", "L = 25 with a valid check", hdrEdit(func(b []byte) { b[8] = 25 }))
	fail("fail_unknown_compression", "integrity", "compression 2 with a valid check", hdrEdit(func(b []byte) { b[9] = 2 }))
	fail("fail_unknown_kind", "integrity", "kind 5 with a valid check", hdrEdit(func(b []byte) { b[10] = 5 }))
	fail("fail_reserved", "integrity", "reserved byte 1 with a valid check", hdrEdit(func(b []byte) { b[11] = 1 }))
	fail("fail_truncated_header", "integrity", "the first 100 bytes of a container", base.bytes()[:100])
	fail("fail_no_chunks", "integrity", "a header and nothing else", base.hdr)
	fail("fail_bad_mac", "integrity", "one bit of chunk 1's tag flipped", join(base.hdr, ch[0], flip(ch[1], len(ch[1])-1), ch[2], ch[3]))
	fail("fail_bad_ciphertext", "integrity", "one bit of chunk 2's ciphertext flipped", join(base.hdr, ch[0], ch[1], flip(ch[2], 10), ch[3]))
	fail("fail_truncated_boundary", "integrity", "the final chunk dropped", join(base.hdr, ch[0], ch[1], ch[2]))
	fail("fail_truncated_mid_chunk", "integrity", "cut in the middle of the final chunk", join(base.hdr, ch[0], ch[1], ch[2], ch[3][:len(ch[3])/2]))
	fail("fail_truncated_length", "integrity", "cut in the middle of a length field", join(base.hdr, ch[0], ch[1][:2]))
	fail("fail_reordered", "integrity", "chunks 1 and 2 swapped", join(base.hdr, ch[0], ch[2], ch[1], ch[3]))
	fail("fail_dropped_chunk", "integrity", "chunk 1 dropped", join(base.hdr, ch[0], ch[2], ch[3]))
	fail("fail_duplicated_chunk", "integrity", "chunk 1 twice", join(base.hdr, ch[0], ch[1], ch[1], ch[2], ch[3]))
	fail("fail_trailing_data", "integrity", "one zero byte after the final chunk", join(base.bytes(), []byte{0}))
	fail("fail_trailing_chunk", "integrity", "chunk 1 again after the final chunk", join(base.bytes(), ch[1]))
	other := newContainer(key, pp("other", kindData, true)).sealAll(basePlain, true)
	fail("fail_swapped_chunk", "integrity", "chunk 1 from another container with the same key, kind, name and plaintext", join(base.hdr, ch[0], other.chunks[1], ch[2], ch[3]))
	fail("fail_swapped_header", "integrity", "another container's header with these chunks", join(other.hdr, ch[0], ch[1], ch[2], ch[3]))
	wr := pp("base", kindData, true)
	wr.name = "data/00/0002"
	fail("fail_wrong_ref", "integrity", "sealed for name data/00/0002, read as data/00/0001", newContainer(key, wr).sealAll(basePlain, true).bytes())
	wr = pp("base", kindData, true)
	wr.repoID = [16]byte([]byte("another-repo-id!"))
	fail("fail_wrong_repo", "integrity", "sealed for another repository id", newContainer(key, wr).sealAll(basePlain, true).bytes())
	fail("fail_wrong_kind", "integrity", "a manifest read as data", newContainer(key, pp("base", kindMan, true)).sealAll(basePlain, true).bytes())
	fail("fail_length_too_large", "integrity", "chunk 0's length is C+18", edit(func(b []byte) { binary.BigEndian.PutUint32(b[headerSize:], c+18) }))
	fail("fail_length_too_small", "integrity", "chunk 0's length is 16", edit(func(b []byte) { binary.BigEndian.PutUint32(b[headerSize:], 16) }))

	// Chunks with valid tags that break the format's rules.
	zc := newContainer(key, pp("forged", kindData, true))
	rc := newContainer(key, pp("forged-raw", kindData, false))
	zeros := make([]byte, 2*c)
	bomb := append([]byte{zstdEnc}, encoder.EncodeAll(zeros, nil)...)
	fail("fail_zstd_bomb", "integrity", "the only chunk is a zstd frame of 2C zero bytes, with its size in the frame header", join(zc.hdr, zc.seal(0, true, bomb)))
	var sb bytes.Buffer
	sw := must(zstd.NewWriter(&sb, zstd.WithEncoderCRC(false)))
	sw.Write(zeros)
	sw.Close()
	fail("fail_zstd_bomb_no_size", "integrity", "the only chunk is a zstd frame of 2C zero bytes, without a size in the frame header", join(zc.hdr, zc.seal(0, true, append([]byte{zstdEnc}, sb.Bytes()...))))
	fail("fail_zstd_not_allowed", "integrity", "a zstd chunk in a container whose compression field is 0", join(rc.hdr, rc.seal(0, true, body(text("x", 5000, 0), true))))
	fail("fail_unknown_encoding", "integrity", "a chunk with encoding 2", join(rc.hdr, rc.seal(0, true, []byte{2, 'x'})))
	fail("fail_short_middle_chunk", "integrity", "chunk 0 is not final and holds C-1 bytes (zstd)", join(zc.hdr, zc.seal(0, false, body(zeros[:c-1], true)), zc.seal(1, true, body(zeros[:1], false))))
	fail("fail_empty_final_chunk", "integrity", "an empty final chunk after a full one (zstd)", join(zc.hdr, zc.seal(0, false, body(zeros[:c], true)), zc.seal(1, true, body(nil, false))))
	fail("fail_two_final_chunks", "integrity", "chunks 0 and 1 both sealed as final", join(rc.hdr, rc.seal(0, true, body(zeros[:10], false)), rc.seal(1, true, body(zeros[:10], false))))
	return vs
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 1
	return b
}
