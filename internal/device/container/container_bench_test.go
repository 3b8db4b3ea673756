package container

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// Benchmarks behind the defaults; see README.md for the numbers and the
// commands. Inputs are 32 MiB of random bytes or of chat-like text.

const benchSize = 32 << 20

var benchData = sync.OnceValue(func() map[string][]byte {
	return map[string][]byte{
		"random": randomBytes(benchSize, 1),
		"chat":   chatText(benchSize, 1),
	}
})

func benchCases(b *testing.B, fn func(b *testing.B, plain []byte, p Params)) {
	for _, data := range []string{"chat", "random"} {
		for _, l := range []uint8{16, 18, 20, 22} {
			for _, compress := range []bool{false, true} {
				name := fmt.Sprintf("%s/L=%d/zstd=%v", data, l, compress)
				b.Run(name, func(b *testing.B) {
					plain := benchData()[data]
					p := Params{Kind: KindData, Ref: testRef, ChunkLog2: l, Compress: compress}
					b.SetBytes(int64(len(plain)))
					fn(b, plain, p)
				})
			}
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	key := testKey(1)
	benchCases(b, func(b *testing.B, plain []byte, p Params) {
		var sealed []byte
		for b.Loop() {
			sealed = mustSeal(b, key, p, plain)
		}
		b.ReportMetric(float64(len(plain))/float64(len(sealed)), "ratio")
	})
}

func BenchmarkOpen(b *testing.B) {
	key := testKey(1)
	benchCases(b, func(b *testing.B, plain []byte, p Params) {
		sealed := mustSeal(b, key, p, plain)
		for b.Loop() {
			if _, err := Open(key, p.Kind, p.Ref, sealed, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkWriter(b *testing.B) {
	key := testKey(1)
	benchCases(b, func(b *testing.B, plain []byte, p Params) {
		b.ReportAllocs()
		for b.Loop() {
			w, err := NewWriter(io.Discard, key, p)
			if err != nil {
				b.Fatal(err)
			}
			// Writes of 256 KiB, as from a file.
			for off := 0; off < len(plain); off += 256 << 10 {
				w.Write(plain[off:min(off+256<<10, len(plain))])
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkReader(b *testing.B) {
	key := testKey(1)
	benchCases(b, func(b *testing.B, plain []byte, p Params) {
		sealed := mustSeal(b, key, p, plain)
		buf := make([]byte, 256<<10)
		b.ReportAllocs()
		for b.Loop() {
			r, err := NewReader(bytes.NewReader(sealed), key, p.Kind, p.Ref, 0)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{r}, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkZstdLevel compresses chat-like text in independent frames of
// 1 MiB on two goroutines, as Seal does, at the two candidate levels.
func BenchmarkZstdLevel(b *testing.B) {
	for _, level := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault} {
		for _, data := range []string{"chat", "random"} {
			b.Run(fmt.Sprintf("%s/%s", level, data), func(b *testing.B) {
				enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(false), zstd.WithEncoderConcurrency(2))
				if err != nil {
					b.Fatal(err)
				}
				plain := benchData()[data]
				const frame = 1 << 20
				n := len(plain) / frame
				out := make([][]byte, n)
				b.SetBytes(int64(len(plain)))
				for b.Loop() {
					forEach(n, 2, func(_, i int) {
						out[i] = enc.EncodeAll(plain[i*frame:(i+1)*frame], out[i][:0])
					})
				}
				total := 0
				for _, o := range out {
					total += len(o)
				}
				b.ReportMetric(float64(len(plain))/float64(total), "ratio")
			})
		}
	}
}
