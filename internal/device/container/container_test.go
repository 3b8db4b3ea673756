package container

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/cryptotest"
)

func TestRef(t *testing.T) {
	a := Ref([16]byte{}, "config")
	if a != Ref([16]byte{}, "config") {
		t.Fatal("Ref is not deterministic")
	}
	if a == Ref([16]byte{1}, "config") || a == Ref([16]byte{}, "config2") {
		t.Fatal("Ref ignores its input")
	}
	// SHA-256("coffer v1 ref" || 16 zero bytes || "config"), computed
	// independently with: printf 'coffer v1 ref' > x; head -c16 /dev/zero >> x;
	// printf config >> x; sha256sum x
	if got := fmt.Sprintf("%x", a); got != refConfigZero {
		t.Fatalf("Ref(0, config) = %s, want %s", got, refConfigZero)
	}
}

const refConfigZero = "0d42de7ed492bb16d8bdb9fc22be9adba2a6dfe1296a97beed8fc395209938b2"

func TestParamsErrors(t *testing.T) {
	key := testKey(1)
	for _, tc := range []struct {
		name string
		key  *[32]byte
		p    Params
		want string
	}{
		{"nil key", nil, Params{Kind: KindData}, "nil key"},
		{"kind 0", key, Params{}, "invalid kind 0"},
		{"kind 5", key, Params{Kind: 5}, "invalid kind 5"},
		{"L 15", key, Params{Kind: KindData, ChunkLog2: 15}, "out of range"},
		{"L 25", key, Params{Kind: KindData, ChunkLog2: 25}, "out of range"},
		{"negative concurrency", key, Params{Kind: KindData, Concurrency: -1}, "negative concurrency"},
	} {
		if _, err := Seal(tc.key, tc.p, nil); err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("%s: Seal error %v, want %q", tc.name, err, tc.want)
		}
		if _, err := NewWriter(io.Discard, tc.key, tc.p); err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("%s: NewWriter error %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := Open(nil, KindData, testRef, make([]byte, 200), 0); err == nil {
		t.Error("Open with a nil key succeeded")
	}
}

// sizes returns the plaintext sizes every round trip is tried with.
func sizes(c int) []int { return []int{0, 1, c - 1, c, c + 1, 3 * c, 3*c + 5} }

func TestRoundTrip(t *testing.T) {
	key := testKey(1)
	c := smallC
	for _, compress := range []bool{false, true} {
		for _, size := range sizes(c) {
			for _, data := range []string{"random", "chat"} {
				plain := randomBytes(size, uint64(size))
				if data == "chat" {
					plain = chatText(size, uint64(size))
				}
				name := fmt.Sprintf("compress=%v/size=%d/%s", compress, size, data)
				t.Run(name, func(t *testing.T) {
					p := Params{Kind: testKind, Ref: testRef, ChunkLog2: smallLog2, Compress: compress}
					sealed := mustSeal(t, key, p, plain)
					checkLayout(t, sealed, p, plain)
					got, _, err := openBoth(t, key, testKind, testRef, sealed)
					if err != nil || !bytes.Equal(got, plain) {
						t.Fatalf("Seal output: %v, equal %v", err, bytes.Equal(got, plain))
					}
					for _, step := range []int{1 << 20, 1000, c} {
						if step == 1000 && size > 2*c {
							continue
						}
						for _, conc := range []int{1, 3} {
							p.Concurrency = conc
							written := writeAll(t, key, p, plain, step)
							checkLayout(t, written, p, plain)
							got, _, err := openBoth(t, key, testKind, testRef, written)
							if err != nil || !bytes.Equal(got, plain) {
								t.Fatalf("Writer output (step %d, concurrency %d): %v", step, conc, err)
							}
							for _, oc := range []int{0, 1, 4} {
								got, err := Open(key, testKind, testRef, written, oc)
								if err != nil || !bytes.Equal(got, plain) {
									t.Fatalf("Open with concurrency %d: %v", oc, err)
								}
							}
						}
					}
				})
			}
		}
	}
}

// checkLayout parses a container by FORMAT 2.1 and 2.3 and checks the
// header fields and the chunking.
func checkLayout(t *testing.T, b []byte, p Params, plain []byte) {
	t.Helper()
	hdr, chunks := splitContainer(t, b)
	if string(hdr[:6]) != "COFFER" || hdr[6] != 1 || hdr[7] != 1 || hdr[8] != p.ChunkLog2 || hdr[10] != byte(p.Kind) || hdr[11] != 0 {
		t.Fatalf("bad header % x", hdr[:12])
	}
	if want := map[bool]byte{false: 0, true: 1}[p.Compress]; hdr[9] != want {
		t.Fatalf("compression field %d, want %d", hdr[9], want)
	}
	if !bytes.Equal(hdr[offRef:offCommitment], p.Ref[:]) {
		t.Fatal("ref field differs")
	}
	c := 1 << p.ChunkLog2
	if n := numChunks(len(plain), p.ChunkLog2); len(chunks) != n {
		t.Fatalf("%d chunks, want %d", len(chunks), n)
	}
	for i, ch := range chunks {
		want := c
		if i == len(chunks)-1 {
			want = len(plain) - i*c
		}
		if !p.Compress && len(ch) != want+chunkOverhead {
			t.Fatalf("chunk %d is %d bytes, want %d", i, len(ch), want+chunkOverhead)
		}
		if p.Compress && len(ch) > want+chunkOverhead {
			t.Fatalf("compressed chunk %d is %d bytes, more than raw %d", i, len(ch), want+chunkOverhead)
		}
	}
}

// Seal and NewWriter produce the same bytes for the same salt.
func TestSealWriterIdentical(t *testing.T) {
	key := testKey(2)
	for _, compress := range []bool{false, true} {
		for _, size := range sizes(smallC) {
			plain := chatText(size, 7)
			p := Params{Kind: KindManifest, Ref: testRef, ChunkLog2: smallLog2, Compress: compress, Concurrency: 2}
			cryptotest.SetGlobalRandom(t, 42)
			sealed := mustSeal(t, key, p, plain)
			cryptotest.SetGlobalRandom(t, 42)
			written := writeAll(t, key, p, plain, 777)
			if !bytes.Equal(sealed, written) {
				t.Fatalf("compress=%v size=%d: Seal and NewWriter output differ", compress, size)
			}
		}
	}
}

func TestFreshSalt(t *testing.T) {
	key := testKey(3)
	p := Params{Kind: KindData, Ref: testRef}
	a, b := mustSeal(t, key, p, []byte("x")), mustSeal(t, key, p, []byte("x"))
	if bytes.Equal(a[offSalt:offSalt+saltSize], b[offSalt:offSalt+saltSize]) {
		t.Fatal("two containers share a salt")
	}
}

func TestDefaultChunkSize(t *testing.T) {
	sealed := mustSeal(t, testKey(1), Params{Kind: KindData, Ref: testRef}, []byte("hello"))
	if sealed[offChunkLog2] != DefaultChunkLog2 {
		t.Fatalf("chunk size exponent %d, want %d", sealed[offChunkLog2], DefaultChunkLog2)
	}
	plain := randomBytes(2<<DefaultChunkLog2+3, 1)
	sealed = mustSeal(t, testKey(1), Params{Kind: KindData, Ref: testRef, Compress: true}, plain)
	if got, _, err := openBoth(t, testKey(1), KindData, testRef, sealed); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("default chunk size round trip: %v", err)
	}
}

func TestCompressionShrinks(t *testing.T) {
	key := testKey(1)
	plain := chatText(4*smallC, 1)
	sealed := mustSeal(t, key, Params{Kind: KindData, Ref: testRef, ChunkLog2: smallLog2, Compress: true}, plain)
	if len(sealed) > len(plain)/2 {
		t.Fatalf("chat text of %d bytes sealed to %d bytes", len(plain), len(sealed))
	}
	// Random data is stored raw: no bigger than without compression.
	plain = randomBytes(4*smallC, 1)
	sealed = mustSeal(t, key, Params{Kind: KindData, Ref: testRef, ChunkLog2: smallLog2, Compress: true}, plain)
	if want := HeaderSize + len(plain) + 4*chunkOverhead; len(sealed) != want {
		t.Fatalf("random data sealed to %d bytes, want %d", len(sealed), want)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestWrongKey(t *testing.T) {
	plain := randomBytes(3*smallC, 1)
	sealed := mustSeal(t, testKey(1), Params{Kind: KindData, Ref: testRef, ChunkLog2: smallLog2}, plain)
	_, _, err := openBoth(t, testKey(2), KindData, testRef, sealed)
	wantErr(t, err, ErrWrongKey, "does not open this object")
	if errors.Is(err, ErrIntegrity) {
		t.Fatal("a wrong key is reported as an integrity failure")
	}
	// NewReader reports it at once, having read only the header.
	cr := &countingReader{r: bytes.NewReader(sealed)}
	_, err = NewReader(cr, testKey(2), KindData, testRef, 0)
	wantErr(t, err, ErrWrongKey, "")
	if cr.n != HeaderSize {
		t.Fatalf("NewReader read %d bytes before reporting a wrong key, want %d", cr.n, HeaderSize)
	}
	// A wrong key wins over a wrong kind or ref: the caller learns that
	// first.
	_, err = Open(testKey(2), KindManifest, otherRef, sealed, 0)
	wantErr(t, err, ErrWrongKey, "")
}

func TestWrongKindAndRef(t *testing.T) {
	key := testKey(1)
	sealed := mustSeal(t, key, Params{Kind: KindManifest, Ref: testRef}, []byte("manifest"))
	_, _, err := openBoth(t, key, KindData, testRef, sealed)
	wantErr(t, err, ErrIntegrity, "object is a manifest, expected data")
	_, _, err = openBoth(t, key, KindManifest, otherRef, sealed)
	wantErr(t, err, ErrIntegrity, "object belongs to another name or repository")
	if got, _, err := openBoth(t, key, KindManifest, testRef, sealed); err != nil || string(got) != "manifest" {
		t.Fatalf("right kind and ref: %q, %v", got, err)
	}
}

// tamper builds a valid container and returns it with its plaintext.
func tamperBase(t *testing.T, compress bool) (key *[32]byte, plain, sealed []byte) {
	key = testKey(9)
	plain = chatText(3*smallC+smallC/2, 3)
	if !compress {
		plain = randomBytes(3*smallC+smallC/2, 3)
	}
	sealed = mustSeal(t, key, Params{Kind: KindData, Ref: testRef, ChunkLog2: smallLog2, Compress: compress}, plain)
	return key, plain, sealed
}

// checkFails opens a tampered container both ways and checks that it
// fails with ErrIntegrity, and that the streaming reader released no more
// than a prefix of the plaintext made of whole chunks.
func checkFails(t *testing.T, key *[32]byte, plain, bad []byte, substr string) {
	t.Helper()
	_, prefix, err := openBoth(t, key, KindData, testRef, bad)
	wantErr(t, err, ErrIntegrity, substr)
	if len(prefix)%smallC != 0 || !bytes.Equal(prefix, plain[:len(prefix)]) {
		t.Fatalf("reader released %d bytes that are not a verified prefix", len(prefix))
	}
}

func TestEveryByteFlip(t *testing.T) {
	for _, compress := range []bool{true, false} {
		t.Run(fmt.Sprintf("compress=%v", compress), func(t *testing.T) {
			key, plain, sealed := tamperBase(t, compress)
			if compress {
				// Very compressible text keeps the container small
				// (3.5 chunks in a few KB), so every byte can be tried.
				plain = bytes.Repeat(chatText(3000, 5), len(plain)/3000+1)[:len(plain)]
				sealed = mustSeal(t, key, Params{Kind: KindData, Ref: testRef, ChunkLog2: smallLog2, Compress: true}, plain)
			}
			hdr, chunks := splitContainer(t, sealed)
			// Every byte of the compressed container; of the raw one the
			// header, the length fields, both ends of every chunk and
			// every 29th byte in between (the AEAD treats all alike).
			interesting := make([]bool, len(sealed))
			for i := range HeaderSize {
				interesting[i] = true
			}
			off := len(hdr)
			for _, ch := range chunks {
				for j := range ch {
					if compress || j < 40 || j >= len(ch)-40 || j%29 == 0 {
						interesting[off+j] = true
					}
				}
				off += len(ch)
			}
			bad := bytes.Clone(sealed)
			for i, ok := range interesting {
				if !ok {
					continue
				}
				for _, mask := range []byte{0x01, 0x80} {
					bad[i] ^= mask
					plainOut, err := Open(key, KindData, testRef, bad, 2)
					if err == nil || plainOut != nil || !errors.Is(err, ErrIntegrity) {
						t.Fatalf("flip of byte %d by %#x: Open returned %d bytes, error %v", i, mask, len(plainOut), err)
					}
					if i < HeaderSize+64 || i%7 == 0 {
						checkFails(t, key, plain, bad, "")
					}
					bad[i] ^= mask
				}
			}
		})
	}
}

func TestTruncation(t *testing.T) {
	key, plain, sealed := tamperBase(t, false)
	_, chunks := splitContainer(t, sealed)
	var cuts []int
	for i := range HeaderSize + 8 {
		cuts = append(cuts, i)
	}
	off := HeaderSize
	for _, ch := range chunks {
		for _, d := range []int{1, 2, 3, 4, 5, 17, len(ch) / 2, len(ch) - 1} {
			cuts = append(cuts, off+d)
		}
		off += len(ch)
		cuts = append(cuts, off)
	}
	for _, cut := range cuts {
		if cut == len(sealed) {
			continue
		}
		var substr string
		switch {
		case cut < HeaderSize:
			substr = "truncated header"
		case cut == HeaderSize:
			substr = "truncated: no chunks after the header"
		default:
			substr = "truncated"
		}
		checkFails(t, key, plain, sealed[:cut], substr)
	}
	// At a chunk boundary the error names the last chunk read.
	_, _, err := openBoth(t, key, KindData, testRef, sealed[:HeaderSize+2*len(chunks[0])])
	wantErr(t, err, ErrIntegrity, "truncated: no final chunk (input ends after chunk 1)")
	_, _, err = openBoth(t, key, KindData, testRef, sealed[:HeaderSize+len(chunks[0])+10])
	wantErr(t, err, ErrIntegrity, "truncated: chunk 1 is cut short (6 of 65553 bytes)")
	_, _, err = openBoth(t, key, KindData, testRef, sealed[:HeaderSize+len(chunks[0])+2])
	wantErr(t, err, ErrIntegrity, "truncated: length field of chunk 1 is cut short")
}

func TestChunkSurgery(t *testing.T) {
	key, plain, sealed := tamperBase(t, false)
	hdr, ch := splitContainer(t, sealed) // 4 chunks, the last one half full
	otherSealed := mustSeal(t, key, Params{Kind: KindData, Ref: testRef, ChunkLog2: smallLog2}, plain)
	_, other := splitContainer(t, otherSealed)
	for _, tc := range []struct {
		name   string
		chunks [][]byte
		want   string
	}{
		{"dropped last", ch[:3], "truncated: no final chunk (input ends after chunk 2)"},
		{"dropped first", ch[1:], "chunk 0: authentication failed"},
		{"dropped middle", [][]byte{ch[0], ch[2], ch[3]}, "chunk 1: authentication failed"},
		{"duplicated", [][]byte{ch[0], ch[1], ch[1], ch[2], ch[3]}, "chunk 2: authentication failed"},
		{"duplicated last", [][]byte{ch[0], ch[1], ch[2], ch[3], ch[3]}, "trailing data after the final chunk (chunk 3)"},
		{"reordered", [][]byte{ch[1], ch[0], ch[2], ch[3]}, "chunk 0: authentication failed"},
		{"swapped in from another container", [][]byte{ch[0], other[1], ch[2], ch[3]}, "chunk 1: authentication failed"},
		{"final swapped in from another container", [][]byte{ch[0], ch[1], ch[2], other[3]}, "chunk 3: authentication failed"},
		{"trailing byte", [][]byte{ch[0], ch[1], ch[2], ch[3], {0}}, "trailing data after the final chunk (chunk 3)"},
		{"trailing length", [][]byte{ch[0], ch[1], ch[2], ch[3], {0, 0, 0, 17}}, "trailing data after the final chunk (chunk 3)"},
		{"trailing chunk", [][]byte{ch[0], ch[1], ch[2], ch[3], ch[1]}, "trailing data after the final chunk (chunk 3)"},
		{"trailing garbage", [][]byte{ch[0], ch[1], ch[2], ch[3], bytes.Repeat([]byte{0xff}, 100)}, "trailing data after the final chunk (chunk 3)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkFails(t, key, plain, join(hdr, tc.chunks...), tc.want)
		})
	}
	// Another container's header with these chunks: the header hash in
	// the AAD refuses them.
	otherHdr, _ := splitContainer(t, otherSealed)
	checkFails(t, key, plain, join(otherHdr, ch...), "chunk 0: authentication failed")
}

func TestLengthOutOfRange(t *testing.T) {
	key, plain, sealed := tamperBase(t, false)
	for _, n := range []uint32{0, 16, uint32(smallC) + 18, 1 << 31, 0xffffffff} {
		for _, chunk := range []int{0, 2} {
			bad := bytes.Clone(sealed)
			binary.BigEndian.PutUint32(bad[HeaderSize+chunk*(smallC+chunkOverhead):], n)
			checkFails(t, key, plain, bad, fmt.Sprintf("chunk %d: length %d out of range 17..65553", chunk, n))
		}
	}
}

func TestHeaderEdits(t *testing.T) {
	key, _, sealed := tamperBase(t, true)
	for _, tc := range []struct {
		name   string
		edit   func(b []byte)
		target error
		want   string
	}{
		{"magic", func(b []byte) { b[0] = 'c' }, ErrIntegrity, "not a Coffer object"},
		{"version 0", func(b []byte) { b[offVersion] = 0 }, ErrIntegrity, "bad format version 0"},
		{"version 2", func(b []byte) { b[offVersion] = 2 }, ErrUnsupportedVersion, "upgrade Coffer"},
		{"version 255 and garbage", func(b []byte) { b[offVersion] = 255; b[offSuite] = 9; b[offReserved] = 3 }, ErrUnsupportedVersion, "version 255"},
		{"suite", func(b []byte) { b[offSuite] = 2 }, ErrIntegrity, "unknown cipher suite 2"},
		{"L 15", func(b []byte) { b[offChunkLog2] = 15 }, ErrIntegrity, "chunk size exponent 15 out of range"},
		{"L 25", func(b []byte) { b[offChunkLog2] = 25 }, ErrIntegrity, "chunk size exponent 25 out of range"},
		{"L 17", func(b []byte) { b[offChunkLog2] = 17 }, ErrIntegrity, "header authentication failed"},
		{"compression 2", func(b []byte) { b[offCompress] = 2 }, ErrIntegrity, "unknown compression 2"},
		{"compression off", func(b []byte) { b[offCompress] = 0 }, ErrIntegrity, "header authentication failed"},
		{"kind 0", func(b []byte) { b[offKind] = 0 }, ErrIntegrity, "unknown object kind 0"},
		{"kind 5", func(b []byte) { b[offKind] = 5 }, ErrIntegrity, "unknown object kind 5"},
		{"kind manifest", func(b []byte) { b[offKind] = byte(KindManifest) }, ErrIntegrity, "header authentication failed"},
		{"reserved", func(b []byte) { b[offReserved] = 1 }, ErrIntegrity, "reserved header byte is 1"},
		{"ref", func(b []byte) { b[offRef] ^= 1 }, ErrIntegrity, "header authentication failed"},
		{"mac", func(b []byte) { b[offMAC+31] ^= 1 }, ErrIntegrity, "header authentication failed"},
		// A changed salt or commitment with a recomputed check can only
		// be told from a wrong key by the MAC, which needs the right
		// keys: the commitment check comes first and reports a wrong key.
		{"salt", func(b []byte) { b[offSalt] ^= 1 }, ErrWrongKey, ""},
		{"commitment", func(b []byte) { b[offCommitment] ^= 1 }, ErrWrongKey, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := bytes.Clone(sealed)
			tc.edit(bad)
			// Without fixing the check, every edit is corruption.
			_, _, err := openBoth(t, key, KindData, testRef, bad)
			if tc.name == "magic" {
				wantErr(t, err, ErrIntegrity, "not a Coffer object")
			} else {
				wantErr(t, err, ErrIntegrity, "header checksum mismatch")
			}
			_, prefix, err := openBoth(t, key, KindData, testRef, fixCheck(bad))
			wantErr(t, err, tc.target, tc.want)
			if len(prefix) != 0 {
				t.Fatal("reader released plaintext despite a bad header")
			}
		})
	}
	bad := bytes.Clone(sealed)
	bad[offCheck] ^= 1
	_, _, err := openBoth(t, key, KindData, testRef, bad)
	wantErr(t, err, ErrIntegrity, "header checksum mismatch")
}

// sealedChunk seals body (encoding byte and data) as chunk i of the
// container with header hdr, length field included, bypassing the writer's
// rules.
func sealedChunk(t *testing.T, key *[32]byte, hdr []byte, i uint64, final bool, body []byte) []byte {
	t.Helper()
	s, err := openHeader(key, Kind(hdr[offKind]), [32]byte(hdr[offRef:offCommitment]), hdr)
	if err != nil {
		t.Fatal(err)
	}
	n := nonce(i, final)
	sealed := s.aead.Seal(nil, n[:], body, s.aad[:])
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(sealed))), sealed...)
}
