package container

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// A sealJob is one chunk being sealed by its own goroutine.
type sealJob struct {
	plain  *[]byte
	sealed *[]byte
	done   chan struct{}
}

// writer is what NewWriter returns. Chunks are sealed by short-lived
// goroutines, at most concurrency at once, and written out in order; at
// most 2*concurrency chunks are in flight. No goroutine outlives the chunk
// it seals, so an abandoned writer leaks nothing.
type writer struct {
	w      io.Writer
	s      *stream
	cur    *[]byte // the chunk being filled
	next   uint64  // index of cur
	queue  []*sealJob
	depth  int
	sem    chan struct{}
	err    error
	closed bool
}

// NewWriter writes a container header to w and returns a writer that
// encrypts what is written to it into chunks, sealed on p.Concurrency cores
// at once and written to w in order. Close must be called to write the
// final chunk; it does not close w. Memory use is about
// 3*p.Concurrency+2 chunks.
func NewWriter(w io.Writer, key *[32]byte, p Params) (io.WriteCloser, error) {
	hdr, s, err := newHeader(key, p)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(hdr[:]); err != nil {
		return nil, fmt.Errorf("container: writing header: %w", err)
	}
	n := workers(p.Concurrency)
	return &writer{
		w:     w,
		s:     s,
		cur:   getBuf(s.chunkLog2),
		depth: 2 * n,
		sem:   make(chan struct{}, n),
	}, nil
}

var errClosed = errors.New("container: write to a closed writer")

func (w *writer) Write(p []byte) (int, error) {
	if w.closed {
		return 0, errClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	c := w.s.chunkSize
	written := 0
	for len(p) > 0 {
		if len(*w.cur) == c {
			// More data follows, so the full chunk is not the final one.
			if err := w.submit(false); err != nil {
				return written, err
			}
		}
		k := min(c-len(*w.cur), len(p))
		*w.cur = append(*w.cur, p[:k]...)
		p = p[k:]
		written += k
	}
	return written, nil
}

// submit starts sealing the current chunk and, if too many chunks are in
// flight, writes out the oldest.
func (w *writer) submit(final bool) error {
	j := &sealJob{plain: w.cur, sealed: getBuf(w.s.chunkLog2), done: make(chan struct{})}
	i := w.next
	w.next++
	w.cur = getBuf(w.s.chunkLog2)
	w.queue = append(w.queue, j)
	go func() {
		w.sem <- struct{}{}
		var scratch *[]byte
		if w.s.compress {
			scratch = getBuf(w.s.chunkLog2)
			*j.sealed = w.s.sealChunk((*j.sealed)[:0], *scratch, i, final, *j.plain)
			putBuf(w.s.chunkLog2, scratch)
		} else {
			*j.sealed = w.s.sealChunk((*j.sealed)[:0], nil, i, final, *j.plain)
		}
		<-w.sem
		close(j.done)
	}()
	for len(w.queue) > w.depth {
		if err := w.flushOne(); err != nil {
			return err
		}
	}
	return nil
}

// flushOne waits for the oldest chunk in flight and writes it out.
func (w *writer) flushOne() error {
	j := w.queue[0]
	w.queue[0] = nil
	w.queue = w.queue[1:]
	<-j.done
	putBuf(w.s.chunkLog2, j.plain)
	_, err := w.w.Write(*j.sealed)
	putBuf(w.s.chunkLog2, j.sealed)
	if err != nil {
		w.err = fmt.Errorf("container: writing chunk: %w", err)
		return w.err
	}
	return nil
}

// Close seals the final chunk and writes out everything still in flight.
// It does not close the underlying writer.
func (w *writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err != nil {
		return w.err
	}
	if err := w.submit(true); err != nil {
		return err
	}
	for len(w.queue) > 0 {
		if err := w.flushOne(); err != nil {
			return err
		}
	}
	putBuf(w.s.chunkLog2, w.cur)
	w.cur = nil
	return nil
}

// An openJob is one chunk being opened by its own goroutine, or, with
// sealed nil, an error met reading the input after the chunks before it.
type openJob struct {
	sealed *[]byte
	plain  *[]byte
	err    error
	final  bool
	done   chan struct{}
}

// reader is what NewReader returns. It reads chunks ahead of the caller,
// at most 2*concurrency of them, and opens them on short-lived goroutines,
// at most concurrency at once; no goroutine outlives its chunk, so an
// abandoned reader leaks nothing.
type reader struct {
	r       io.Reader
	s       *stream
	next    uint64  // index of the next chunk to read from r
	pending *[]byte // chunk next-1, read but not known to be final or not
	queue   []*openJob
	depth   int
	sem     chan struct{}
	inDone  bool     // nothing more to read from r
	cur     *openJob // the chunk being served
	out     []byte   // what is left of cur's plaintext
	err     error    // sticky
	eof     bool     // the final chunk has been served
}

// NewReader reads and checks the container header from r and returns a
// reader of the plaintext. A wrong key, a corrupt header or an object of
// another kind or name is reported here, before any chunk is read.
//
// The reader opens chunks on concurrency cores at once (0 means
// runtime.GOMAXPROCS(0)), reading a bounded number of chunks ahead. It
// releases a chunk's plaintext only after its tag has verified, and in
// order; it returns io.EOF only after a valid final chunk that is followed
// by the end of r. Truncation, trailing data and every other defect of the
// container are reported as errors wrapping ErrIntegrity; errors reading r
// are returned wrapped as they are. Since verified chunks are released as
// they come, a caller that needs all or nothing must stage the output until
// io.EOF.
func NewReader(r io.Reader, key *[32]byte, kind Kind, ref [32]byte, concurrency int) (io.Reader, error) {
	var hdr [HeaderSize]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, integrityError("truncated header: %d bytes, want %d", n, HeaderSize)
		}
		return nil, fmt.Errorf("container: reading header: %w", err)
	}
	s, err := openHeader(key, kind, ref, hdr[:])
	if err != nil {
		return nil, err
	}
	n := workers(concurrency)
	return &reader{r: r, s: s, depth: 2 * n, sem: make(chan struct{}, n)}, nil
}

func (r *reader) Read(p []byte) (int, error) {
	for len(r.out) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.cur != nil {
			putBuf(r.s.chunkLog2, r.cur.plain)
			final := r.cur.final
			r.cur = nil
			if final {
				r.eof = true
			}
		}
		if r.eof {
			return 0, io.EOF
		}
		if len(p) == 0 {
			return 0, nil
		}
		r.fill()
		j := r.queue[0]
		r.queue[0] = nil
		r.queue = r.queue[1:]
		<-j.done
		if j.err != nil {
			r.err = j.err
			return 0, r.err
		}
		r.cur, r.out = j, *j.plain
	}
	n := copy(p, r.out)
	r.out = r.out[n:]
	return n, nil
}

// fill reads chunks from r and starts opening them until depth chunks are
// in flight or the input is exhausted. It always leaves at least one job
// queued.
func (r *reader) fill() {
	for len(r.queue) < r.depth && !r.inDone {
		if r.pending == nil {
			// Chunk 0.
			b, err := r.readChunk(0)
			if err != nil {
				r.fail(err)
				return
			}
			r.pending, r.next = b, 1
			continue
		}
		var lb [lengthSize]byte
		_, err := io.ReadFull(r.r, lb[:])
		if err == io.EOF {
			// The pending chunk is followed by the end of input.
			r.dispatch(true)
			r.inDone = true
			return
		}
		// More input follows: the pending chunk is not the final one.
		r.dispatch(false)
		if err != nil {
			if err == io.ErrUnexpectedEOF {
				err = errLengthCut(int(r.next))
			} else {
				err = fmt.Errorf("container: reading chunk %d: %w", r.next, err)
			}
			r.fail(err)
			return
		}
		b, err := r.readBody(r.next, int(binary.BigEndian.Uint32(lb[:])))
		if err != nil {
			r.fail(err)
			return
		}
		r.pending = b
		r.next++
	}
}

// readChunk reads chunk i, length field and all.
func (r *reader) readChunk(i uint64) (*[]byte, error) {
	var lb [lengthSize]byte
	if _, err := io.ReadFull(r.r, lb[:]); err != nil {
		switch {
		case err == io.EOF && i == 0:
			return nil, errNoChunks
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return nil, errLengthCut(int(i))
		}
		return nil, fmt.Errorf("container: reading chunk %d: %w", i, err)
	}
	return r.readBody(i, int(binary.BigEndian.Uint32(lb[:])))
}

// readBody reads the n sealed bytes of chunk i.
func (r *reader) readBody(i uint64, n int) (*[]byte, error) {
	if err := checkLength(int(i), n, r.s.chunkSize); err != nil {
		return nil, err
	}
	b := getBuf(r.s.chunkLog2)
	*b = (*b)[:n]
	if got, err := io.ReadFull(r.r, *b); err != nil {
		putBuf(r.s.chunkLog2, b)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, errChunkCut(int(i), got, n)
		}
		return nil, fmt.Errorf("container: reading chunk %d: %w", i, err)
	}
	return b, nil
}

// dispatch starts opening the pending chunk.
func (r *reader) dispatch(final bool) {
	j := &openJob{sealed: r.pending, final: final, done: make(chan struct{})}
	i := r.next - 1
	r.pending = nil
	r.queue = append(r.queue, j)
	go func() {
		r.sem <- struct{}{}
		l := r.s.chunkLog2
		scratch := getBuf(l)
		plain := getBuf(l)
		*plain, j.err = r.s.openChunk((*plain)[:0], *scratch, i, final, *j.sealed)
		<-r.sem
		putBuf(l, scratch)
		putBuf(l, j.sealed)
		j.sealed = nil
		if j.err != nil {
			putBuf(l, plain)
		} else {
			j.plain = plain
		}
		close(j.done)
	}()
}

// fail queues err behind the chunks already in flight and stops reading.
func (r *reader) fail(err error) {
	j := &openJob{err: err, done: make(chan struct{})}
	close(j.done)
	r.queue = append(r.queue, j)
	r.inDone = true
}
