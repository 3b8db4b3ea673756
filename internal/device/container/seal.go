package container

import (
	"encoding/binary"
	"math"
	"slices"
)

// Seal encrypts plaintext into a new container, sealing chunks on
// p.Concurrency cores at once.
func Seal(key *[32]byte, p Params, plaintext []byte) ([]byte, error) {
	out, err := AppendSeal(nil, key, p, plaintext)
	if err != nil || len(out) >= cap(out)/4*3 {
		return out, err
	}
	// Do not keep a mostly empty array alive.
	return slices.Clone(out), nil
}

// AppendSeal is Seal that appends the container to dst and returns the
// extended slice, so that callers sealing many objects can reuse buffers.
// dst must not overlap plaintext.
func AppendSeal(dst []byte, key *[32]byte, p Params, plaintext []byte) ([]byte, error) {
	hdr, s, err := newHeader(key, p)
	if err != nil {
		return nil, err
	}
	c := s.chunkSize
	n := numChunks(len(plaintext), s.chunkLog2)
	// Chunk i goes to its slot at HeaderSize + i*(C+chunkOverhead). Without
	// compression every chunk fills its slot exactly; with it, chunks are
	// moved down afterwards.
	slot := c + chunkOverhead
	need := HeaderSize + len(plaintext) + n*chunkOverhead
	dst = slices.Grow(dst, need)
	out := dst[len(dst) : len(dst)+need]
	copy(out, hdr[:])
	sizes := make([]int, n)
	w := min(workers(p.Concurrency), n)
	scratch := make([]*[]byte, w)
	if s.compress {
		for k := range scratch {
			scratch[k] = getBuf(s.chunkLog2)
		}
	}
	forEach(n, w, func(worker, i int) {
		lo, hi := i*c, min(i*c+c, len(plaintext))
		off := HeaderSize + i*slot
		dst := out[off:off:min(off+slot, len(out))]
		var z []byte
		if s.compress {
			z = *scratch[worker]
		}
		sizes[i] = len(s.sealChunk(dst, z, uint64(i), i == n-1, plaintext[lo:hi]))
	})
	for _, b := range scratch {
		putBuf(s.chunkLog2, b)
	}
	if !s.compress {
		return dst[:len(dst)+need], nil
	}
	pos := HeaderSize
	for i, size := range sizes {
		off := HeaderSize + i*slot
		if off != pos {
			copy(out[pos:], out[off:off+size])
		}
		pos += size
	}
	return dst[:len(dst)+pos], nil
}

// span is where a chunk's sealed bytes lie in a container.
type span struct{ off, len int }

// scanChunks walks the length fields of the chunks in body (a container
// without its header). It returns the chunks found and, if body does not
// end cleanly after the last of them, why.
func scanChunks(body []byte, chunkSize int) ([]span, error) {
	var spans []span
	off := 0
	for off < len(body) {
		i := len(spans)
		if len(body)-off < lengthSize {
			return spans, errLengthCut(i)
		}
		n := int(binary.BigEndian.Uint32(body[off:]))
		if err := checkLength(i, n, chunkSize); err != nil {
			return spans, err
		}
		off += lengthSize
		if len(body)-off < n {
			return spans, errChunkCut(i, len(body)-off, n)
		}
		spans = append(spans, span{off, n})
		off += n
	}
	if len(spans) == 0 {
		return nil, errNoChunks
	}
	return spans, nil
}

var errNoChunks = integrityError("truncated: no chunks after the header")

func errLengthCut(i int) error {
	return integrityError("truncated: length field of chunk %d is cut short", i)
}

func errChunkCut(i, got, want int) error {
	return integrityError("truncated: chunk %d is cut short (%d of %d bytes)", i, got, want)
}

func checkLength(i, n, chunkSize int) error {
	if n < minSealedChunk || n > chunkSize+minSealedChunk {
		return integrityError("chunk %d: length %d out of range %d..%d", i, n, minSealedChunk, chunkSize+minSealedChunk)
	}
	return nil
}

// Open authenticates and decrypts a whole container, opening chunks on
// concurrency cores at once (0 means runtime.GOMAXPROCS(0)). kind and ref
// are what the caller expects the object to be. It returns plaintext only
// if the whole container is valid.
func Open(key *[32]byte, kind Kind, ref [32]byte, sealed []byte, concurrency int) ([]byte, error) {
	return AppendOpen(nil, key, kind, ref, sealed, concurrency)
}

// AppendOpen is Open that appends the plaintext to dst and returns the
// extended slice, so that callers opening many objects can reuse buffers.
// On error dst's contents beyond len(dst) are unspecified. dst must not
// overlap sealed.
func AppendOpen(dst []byte, key *[32]byte, kind Kind, ref [32]byte, sealed []byte, concurrency int) ([]byte, error) {
	s, err := openHeader(key, kind, ref, sealed)
	if err != nil {
		return nil, err
	}
	body := sealed[HeaderSize:]
	spans, tailErr := scanChunks(body, s.chunkSize)
	n := len(spans)
	if n == 0 {
		return nil, tailErr
	}
	c := s.chunkSize
	// Every chunk but the last holds exactly C bytes, so chunk i's
	// plaintext goes to i*C. Memory is reserved only as far as the input
	// can justify it: a raw chunk is never smaller than its plaintext, and
	// compressed chunks make the output grow one window of chunks at a
	// time, after the windows before it verified, so forged chunks cannot
	// make Open allocate much more than the input and what verified.
	want := len(body) - n*chunkOverhead
	if n <= math.MaxInt/c {
		want = min(want, n*c)
	}
	// out is the plaintext being built; it lives in dst's spare capacity
	// when that is large enough, else in a new array.
	var out []byte
	inPlace := cap(dst)-len(dst) >= max(want, 0)
	if inPlace {
		out = dst[len(dst):len(dst):cap(dst)]
	} else {
		out = make([]byte, 0, max(want, 0))
	}
	w := workers(concurrency)
	window := 4 * w
	errs := make([]error, window)
	for a := 0; a < n; a += window {
		b := min(a+window, n)
		full := min(b, n-1) // chunks before this one are full
		if need := full * c; cap(out) < need {
			// Grow by doubling, but never beyond twice what verified
			// chunks justify plus one window.
			grown := make([]byte, len(out), min(max(need, 2*cap(out)), n*c))
			copy(grown, out)
			out = grown
			inPlace = false
		}
		base := out[:cap(out)]
		var last []byte
		clear(errs)
		forEach(b-a, w, func(_, j int) {
			i := a + j
			final := i == n-1 && tailErr == nil
			sp := spans[i]
			scratch := getBuf(s.chunkLog2)
			defer putBuf(s.chunkLog2, scratch)
			off := i * c
			var dst []byte
			if i < n-1 {
				dst = base[off : off : off+c]
			} else {
				dst = base[off:off] // up to the end of the array
			}
			res, err := s.openChunk(dst, *scratch, uint64(i), final, body[sp.off:sp.off+sp.len])
			if err != nil {
				errs[j] = err
				return
			}
			if i == n-1 {
				last = res
			}
		})
		for _, err := range errs[:b-a] {
			if err != nil {
				return nil, err
			}
		}
		out = out[:full*c]
		if b == n {
			before := cap(out)
			out = append(out, last...) // in place unless it did not fit
			if cap(out) != before {
				inPlace = false
			}
		}
	}
	if tailErr != nil {
		return nil, tailErr
	}
	if inPlace {
		return dst[:len(dst)+len(out)], nil
	}
	if len(dst) == 0 {
		return out, nil
	}
	return append(dst, out...), nil
}
