package sealing

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Sealed streams (Raft snapshots): a header carrying a fresh random stream
// key sealed by a Key, then the data in chunks sealed with AES-256-GCM under
// the stream key, STREAM-style (Hoang, Reyhanitabar, Rogaway, Vizár 2015;
// age's format):
//
//	"coffer sealed stream v1\n" (24) | u16 n | Key.Seal(AAD(aad), stream key) (n)
//	chunk* : AES-256-GCM(stream key, nonce = u88 counter || final flag, chunk)
//
// Every chunk holds StreamChunkSize bytes except the last, which holds fewer
// (possibly none) and is sealed with the final flag, so a sealed stream's
// length determines its plaintext length (StreamPlaintextSize), truncation
// at any point is detected (no final chunk), and chunks cannot be reordered
// (the counter), dropped or appended. The caller's aad (a snapshot's index
// and term) is bound to the stream key.

// StreamChunkSize is the plaintext size of every chunk but the last.
const StreamChunkSize = 64 << 10

const (
	streamMagic      = "coffer sealed stream v1\n"
	purposeStreamKey = "coffer sealed stream key"
	chunkOverhead    = 16
	maxWrappedKey    = 1024
)

// StreamWriter seals a stream. Close writes the final chunk; it does not
// close the underlying writer.
type StreamWriter struct {
	w       io.Writer
	aead    cipher.AEAD
	buf     []byte
	out     []byte
	counter uint64
	err     error
	header  int
}

// NewStreamWriter writes the header to w and returns a writer that seals
// what is written to it.
func NewStreamWriter(w io.Writer, key Key, aad []byte) (*StreamWriter, error) {
	var sk [32]byte
	rand.Read(sk[:])
	defer clear(sk[:])
	wrapped, err := key.Seal(AAD(purposeStreamKey, aad), sk[:])
	if err != nil {
		return nil, fmt.Errorf("sealing: seal stream key with %s: %w", key.Name(), err)
	}
	if len(wrapped) > maxWrappedKey {
		return nil, fmt.Errorf("sealing: %s sealed a %d-byte stream key", key.Name(), len(wrapped))
	}
	hdr := make([]byte, 0, len(streamMagic)+2+len(wrapped))
	hdr = append(hdr, streamMagic...)
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(wrapped)))
	hdr = append(hdr, wrapped...)
	if _, err := w.Write(hdr); err != nil {
		return nil, err
	}
	a, err := newChunkAEAD(sk[:])
	if err != nil {
		return nil, err
	}
	return &StreamWriter{
		w: w, aead: a, header: len(hdr),
		buf: make([]byte, 0, StreamChunkSize),
		out: make([]byte, 0, StreamChunkSize+chunkOverhead),
	}, nil
}

// HeaderSize is the length of the header the writer wrote.
func (s *StreamWriter) HeaderSize() int { return s.header }

func newChunkAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func chunkNonce(counter uint64, final bool) []byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[3:11], counter)
	if final {
		n[11] = 1
	}
	return n[:]
}

func (s *StreamWriter) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n := 0
	for len(p) > 0 {
		k := min(len(p), StreamChunkSize-len(s.buf))
		s.buf = append(s.buf, p[:k]...)
		p, n = p[k:], n+k
		if len(s.buf) == StreamChunkSize {
			if err := s.flush(false); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (s *StreamWriter) flush(final bool) error {
	s.out = s.aead.Seal(s.out[:0], chunkNonce(s.counter, final), s.buf, nil)
	s.counter++
	s.buf = s.buf[:0]
	if _, err := s.w.Write(s.out); err != nil {
		s.err = err
		return err
	}
	return nil
}

// Close seals and writes the final chunk.
func (s *StreamWriter) Close() error {
	if s.err != nil {
		return s.err
	}
	if err := s.flush(true); err != nil {
		return err
	}
	s.err = errors.New("sealing: stream writer is closed")
	return nil
}

// StreamReader opens a sealed stream. It returns only authenticated
// plaintext, in order, and io.EOF only after an authentic final chunk.
type StreamReader struct {
	r       io.Reader
	aead    cipher.AEAD
	in      []byte
	plain   []byte
	counter uint64
	done    bool
	err     error
	header  int
}

// NewStreamReader reads the header from r and opens the stream key with key
// and aad.
func NewStreamReader(r io.Reader, key Key, aad []byte) (*StreamReader, error) {
	hdr := make([]byte, len(streamMagic)+2)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("sealing: sealed stream header: %w (%v)", ErrFormat, err)
	}
	if string(hdr[:len(streamMagic)]) != streamMagic {
		return nil, fmt.Errorf("sealing: not a sealed stream: %w", ErrFormat)
	}
	n := int(binary.BigEndian.Uint16(hdr[len(streamMagic):]))
	if n > maxWrappedKey {
		return nil, fmt.Errorf("sealing: sealed stream header: %w", ErrFormat)
	}
	wrapped := make([]byte, n)
	if _, err := io.ReadFull(r, wrapped); err != nil {
		return nil, fmt.Errorf("sealing: sealed stream header: %w (%v)", ErrFormat, err)
	}
	sk, err := key.Open(AAD(purposeStreamKey, aad), wrapped)
	if err != nil {
		return nil, fmt.Errorf("sealing: stream key: %w", err)
	}
	defer clear(sk)
	if len(sk) != 32 {
		return nil, fmt.Errorf("sealing: stream key: %w", ErrFormat)
	}
	a, err := newChunkAEAD(sk)
	if err != nil {
		return nil, err
	}
	return &StreamReader{r: r, aead: a, header: len(hdr) + n, in: make([]byte, StreamChunkSize+chunkOverhead)}, nil
}

// HeaderSize is the length of the stream's header.
func (s *StreamReader) HeaderSize() int { return s.header }

func (s *StreamReader) Read(p []byte) (int, error) {
	for len(s.plain) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if s.done {
			return 0, io.EOF
		}
		s.next()
	}
	n := copy(p, s.plain)
	s.plain = s.plain[n:]
	return n, nil
}

// next reads and opens one chunk. A full-size chunk is never the final one;
// a shorter one must be.
func (s *StreamReader) next() {
	n, err := io.ReadFull(s.r, s.in)
	final := false
	switch {
	case err == nil:
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		final = true
		if n < chunkOverhead {
			s.err = fmt.Errorf("sealing: sealed stream truncated after chunk %d: %w", s.counter, ErrAuthentication)
			return
		}
	default:
		s.err = err
		return
	}
	plain, oerr := s.aead.Open(s.in[:0], chunkNonce(s.counter, final), s.in[:n], nil)
	if oerr != nil {
		if final {
			s.err = fmt.Errorf("sealing: sealed stream chunk %d (last): truncated or altered: %w", s.counter, ErrAuthentication)
		} else {
			s.err = fmt.Errorf("sealing: sealed stream chunk %d: %w", s.counter, ErrAuthentication)
		}
		return
	}
	s.counter++
	s.plain = plain
	s.done = final
}

// StreamSealedSize is the length of a sealed stream of plain bytes whose
// header is header bytes long.
func StreamSealedSize(plain, header int64) int64 {
	return header + plain + (plain/StreamChunkSize+1)*chunkOverhead
}

// StreamPlaintextSize inverts StreamSealedSize.
func StreamPlaintextSize(sealed, header int64) (int64, error) {
	body := sealed - header
	if body < chunkOverhead {
		return 0, fmt.Errorf("sealing: sealed stream of %d bytes: %w", sealed, ErrFormat)
	}
	chunks := body/(StreamChunkSize+chunkOverhead) + 1
	plain := body - chunks*chunkOverhead
	if plain < 0 || StreamSealedSize(plain, header) != sealed {
		return 0, fmt.Errorf("sealing: sealed stream of %d bytes: %w", sealed, ErrFormat)
	}
	return plain, nil
}
