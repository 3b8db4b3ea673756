package repository

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/cofferhq/coffer/internal/device/container"
	"github.com/cofferhq/coffer/storage"
)

// Pieces (FORMAT.md 3.2). A version 2 piece is padded before encryption,
// so that the size of a stored object says only which size class its
// (compressed) content falls in, not the exact size of a small file. Its
// plaintext — sealed in a data container without per-chunk compression,
// so that the padding is not compressed away — is
//
//	encoding (1 byte: 0 raw, 1 zstd) || n (4 bytes, big-endian) ||
//	payload (n bytes) || zero bytes up to the size class
//
// where the payload is the piece's data (raw) or one zstd frame that
// decompresses to it. A version 1 piece (written before padding, read
// still) is a data container whose plaintext is the piece's data, with
// per-chunk compression.

// pieceHeader is the size of a version 2 piece's encoding and length.
const pieceHeader = 5

// minClass is the smallest size class: every piece plaintext, however
// small, is at least this long.
const minClass = 4 << 10

// padClass returns the padded plaintext size of a version 2 piece whose
// unpadded plaintext (header and payload) is n bytes, for pieces of at most
// pieceSize bytes of data. Classes are 4 per octave above 4 KiB — 4, 5, 6,
// 7, 8, 10, 12, 14, 16 … KiB — so padding adds less than 25 % (12 % on
// average over sizes spread evenly on a log scale), and at most 4 KiB
// below 4 KiB. The top class is pieceSize + pieceHeader: every full piece
// of incompressible data is stored without any padding at all, and the
// classes just below it are capped there, so the padding of a large file is
// bounded by its last piece.
func padClass(n, pieceSize int) int {
	top := pieceSize + pieceHeader
	if n >= top {
		return n
	}
	if n <= minClass {
		return min(minClass, top)
	}
	for base := minClass; ; base *= 2 {
		for m := 4; m < 8; m++ {
			if c := base * m / 4; c >= n {
				return min(c, top)
			}
		}
	}
}

var (
	pieceEncoder = sync.OnceValue(func() *zstd.Encoder {
		e, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderCRC(false), // the AEAD tag covers the frame
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithZeroFrames(true),
		)
		if err != nil {
			panic("repository: creating zstd encoder: " + err.Error())
		}
		return e
	})
	pieceDecoder = sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(maxPieceSize),
			zstd.WithDecoderMaxWindow(maxPieceSize),
			// DecodeAll never writes past cap(dst): the output limit is
			// the size the manifest states.
			zstd.WithDecodeAllCapLimit(true),
		)
		if err != nil {
			panic("repository: creating zstd decoder: " + err.Error())
		}
		return d
	})
	// pieceBufs holds buffers for the padded plaintext of pieces.
	pieceBufs = sync.Pool{New: func() any { return new([]byte) }}
)

// padPiece appends data's padded version 2 plaintext to dst.
func padPiece(dst, data []byte, compress bool, pieceSize int) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0)
	if compress && len(data) > 0 {
		dst = pieceEncoder().EncodeAll(data, dst)
		if n := len(dst) - start - pieceHeader; n < len(data) {
			dst[start] = 1
		} else {
			dst = append(dst[:start+pieceHeader], data...)
		}
	} else {
		dst = append(dst, data...)
	}
	n := len(dst) - start - pieceHeader
	binary.BigEndian.PutUint32(dst[start+1:], uint32(n))
	cls := padClass(pieceHeader+n, pieceSize)
	for len(dst)-start < cls {
		dst = append(dst, make([]byte, min(cls-(len(dst)-start), 64<<10))...)
	}
	return dst
}

// unpadPiece returns the data of a version 2 piece plaintext, appended to
// dst, which must have a capacity of exactly size bytes beyond its length
// for the decompression limit to hold.
func unpadPiece(dst, plain []byte, size int64) ([]byte, error) {
	if len(plain) < pieceHeader {
		return nil, errors.New("shorter than its header")
	}
	enc, n := plain[0], int64(binary.BigEndian.Uint32(plain[1:]))
	if n > int64(len(plain)-pieceHeader) {
		return nil, errors.New("length beyond its end")
	}
	payload, pad := plain[pieceHeader:pieceHeader+n], plain[pieceHeader+n:]
	if len(bytes.TrimRight(pad, "\x00")) != 0 {
		return nil, errors.New("non-zero padding")
	}
	switch enc {
	case 0:
		return append(dst, payload...), nil
	case 1:
		if int64(cap(dst)-len(dst)) < size {
			dst = append(make([]byte, 0, int64(len(dst))+size), dst...)
		}
		out, err := pieceDecoder().DecodeAll(payload, dst[:len(dst):len(dst)+int(size)])
		if err != nil {
			return nil, fmt.Errorf("zstd: %v", err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown encoding %d", enc)
}

// putPiece stores data as a padded version 2 piece named id (the caller
// computed it with pieceID), returning the stored size.
func (r *Repository) putPiece(ctx context.Context, id pieceID, data []byte, compress bool) (int64, error) {
	pb := pieceBufs.Get().(*[]byte)
	defer pieceBufs.Put(pb)
	plain := padPiece((*pb)[:0], data, compress, r.pieceSize)
	*pb = plain
	return r.putSealed(ctx, pieceName(id), plain, false)
}

// putPieceV1 stores data as a version 1 piece (Repair of a version 1
// backup's lost piece, found again on disk).
func (r *Repository) putPieceV1(ctx context.Context, id pieceID, data []byte, compress bool) (int64, error) {
	return r.putSealed(ctx, pieceName(id), data, compress)
}

func (r *Repository) putSealed(ctx context.Context, name string, plain []byte, compress bool) (int64, error) {
	bp := sealedBufs.Get().(*[]byte)
	defer sealedBufs.Put(bp)
	sealed, err := container.AppendSeal((*bp)[:0], r.key, container.Params{
		Kind:        container.KindData,
		Ref:         r.ref(name),
		Compress:    compress,
		Concurrency: 1,
	}, plain)
	if err != nil {
		return 0, err
	}
	*bp = sealed
	if err := r.b.Put(ctx, name, bytes.NewReader(sealed), int64(len(sealed))); err != nil {
		return 0, err
	}
	return int64(len(sealed)), nil
}

// fetchPiece downloads and opens one piece, checking its size. The
// plaintext is in a buffer from plainBufs; the caller may hand it back
// with putPlain when done with it.
func (r *Repository) fetchPiece(ctx context.Context, p piece) ([]byte, error) {
	if !p.V1 {
		if x := r.curIndex(); x != nil {
			if l, ok := x.lookup(p.ID); ok {
				return r.fetchPacked(ctx, x, p, l)
			}
		}
	}
	name := pieceName(p.ID)
	short := p.ID.String()[:16]
	rc, err := r.b.Get(ctx, name)
	if errors.Is(err, storage.ErrNotExist) {
		return nil, integrityf("piece %s is missing from storage", short)
	}
	if err != nil {
		return nil, fmt.Errorf("downloading piece %s: %w", short, err)
	}
	defer rc.Close()
	// A sealed piece is at most its (padded) plaintext plus per-chunk
	// overhead.
	plainMax := p.Size
	if !p.V1 {
		plainMax = int64(padClass(pieceHeader+int(p.Size), max(r.pieceSize, int(p.Size))))
	}
	limit := plainMax + plainMax/1024 + 1024
	bp := sealedBufs.Get().(*[]byte)
	defer sealedBufs.Put(bp)
	sealed, err := readInto((*bp)[:0], rc, limit+1)
	*bp = sealed
	if err != nil {
		return nil, fmt.Errorf("downloading piece %s: %w", short, wrapRead(err))
	}
	if int64(len(sealed)) > limit {
		return nil, integrityf("piece %s is larger than its size allows", short)
	}
	if p.V1 {
		pb := plainBufs.Get().(*[]byte)
		plain, err := container.AppendOpen((*pb)[:0], r.key, container.KindData, r.ref(name), sealed, 1)
		if err != nil {
			plainBufs.Put(pb)
			return nil, fmt.Errorf("piece %s: %w", short, err)
		}
		if int64(len(plain)) != p.Size {
			putPlain(plain)
			return nil, integrityf("piece %s holds %d bytes, the manifest says %d", short, len(plain), p.Size)
		}
		return plain, nil
	}
	xb := pieceBufs.Get().(*[]byte)
	defer pieceBufs.Put(xb)
	padded, err := container.AppendOpen((*xb)[:0], r.key, container.KindData, r.ref(name), sealed, 1)
	if err != nil {
		return nil, fmt.Errorf("piece %s: %w", short, err)
	}
	*xb = padded
	pb := plainBufs.Get().(*[]byte)
	dst := (*pb)[:0]
	if int64(cap(dst)) < p.Size {
		dst = make([]byte, 0, p.Size)
	}
	plain, err := unpadPiece(dst, padded, p.Size)
	if err != nil {
		plainBufs.Put(pb)
		return nil, integrityf("piece %s: %v", short, err)
	}
	if int64(len(plain)) != p.Size {
		putPlain(plain)
		return nil, integrityf("piece %s holds %d bytes, the manifest says %d", short, len(plain), p.Size)
	}
	return plain, nil
}
