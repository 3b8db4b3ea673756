package container

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
	"time"
)

func TestReaderReleasesOnlyVerified(t *testing.T) {
	key := testKey(5)
	c := smallC
	plain := randomBytes(4*c-100, 1)
	sealed := mustSeal(t, key, Params{Kind: KindData, Ref: testRef, ChunkLog2: smallLog2}, plain)
	for _, tc := range []struct {
		corrupt int // chunk to corrupt
		want    string
	}{
		{3, "chunk 3: authentication failed"},
		{1, "chunk 1: authentication failed"},
		{0, "chunk 0: authentication failed"},
	} {
		bad := bytes.Clone(sealed)
		bad[HeaderSize+tc.corrupt*(c+chunkOverhead)+100] ^= 1
		for _, conc := range []int{1, 2, 8} {
			r, err := NewReader(bytes.NewReader(bad), key, KindData, testRef, conc)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			wantErr(t, err, ErrIntegrity, tc.want)
			if !bytes.Equal(got, plain[:tc.corrupt*c]) {
				t.Fatalf("chunk %d corrupt, concurrency %d: reader released %d bytes, want the %d verified ones", tc.corrupt, conc, len(got), tc.corrupt*c)
			}
			// The error sticks.
			if n, err2 := r.Read(make([]byte, 10)); n != 0 || err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("Read after an error: %d, %v", n, err2)
			}
			if _, err := Open(key, KindData, testRef, bad, conc); err == nil {
				t.Fatal("Open accepted a corrupt container")
			}
		}
	}
}

func TestReaderBehaviour(t *testing.T) {
	key := testKey(6)
	for _, size := range []int{0, 1, smallC, 3*smallC + 5} {
		plain := chatText(size, 9)
		sealed := mustSeal(t, key, Params{Kind: KindData, Ref: testRef, ChunkLog2: smallLog2, Compress: true}, plain)
		for name, wrap := range map[string]func(io.Reader) io.Reader{
			"plain":    func(r io.Reader) io.Reader { return r },
			"one byte": iotest.OneByteReader,
			"half":     iotest.HalfReader,
			"data+EOF": iotest.DataErrReader,
		} {
			r, err := NewReader(wrap(bytes.NewReader(sealed)), key, KindData, testRef, 2)
			if err != nil {
				t.Fatalf("%s, size %d: %v", name, size, err)
			}
			if err := iotest.TestReader(r, plain); err != nil {
				t.Fatalf("%s, size %d: %v", name, size, err)
			}
		}
	}
}

var errSink = errors.New("sink failure")

func TestReaderPassesIOErrors(t *testing.T) {
	key := testKey(6)
	plain := randomBytes(3*smallC, 2)
	sealed := mustSeal(t, key, Params{Kind: KindData, Ref: testRef, ChunkLog2: smallLog2}, plain)
	for _, at := range []int{10, HeaderSize + 2, HeaderSize + 100, HeaderSize + smallC + chunkOverhead + 2} {
		r := io.MultiReader(bytes.NewReader(sealed[:at]), iotest.ErrReader(errSink))
		got, err := readAllFrom(r, key)
		if !errors.Is(err, errSink) || errors.Is(err, ErrIntegrity) {
			t.Fatalf("I/O error at %d reported as %v", at, err)
		}
		if len(got)%smallC != 0 || !bytes.Equal(got, plain[:len(got)]) {
			t.Fatalf("I/O error at %d: released %d bytes", at, len(got))
		}
	}
}

func readAllFrom(r io.Reader, key *[32]byte) ([]byte, error) {
	cr, err := NewReader(r, key, KindData, testRef, 2)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(cr)
}

// failingWriter fails after n bytes.
type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		k := w.n
		w.n = 0
		return k, errSink
	}
	w.n -= len(p)
	return len(p), nil
}

func TestWriterErrors(t *testing.T) {
	key := testKey(7)
	p := Params{Kind: KindData, Ref: testRef, ChunkLog2: smallLog2, Concurrency: 1}
	if _, err := NewWriter(&failingWriter{n: 10}, key, p); !errors.Is(err, errSink) {
		t.Fatalf("header write failure: %v", err)
	}
	w, err := NewWriter(&failingWriter{n: HeaderSize + 10}, key, p)
	if err != nil {
		t.Fatal(err)
	}
	plain := randomBytes(10*smallC, 1)
	_, err = w.Write(plain)
	if !errors.Is(err, errSink) {
		t.Fatalf("Write to a failing sink: %v", err)
	}
	if _, err2 := w.Write([]byte("x")); !errors.Is(err2, errSink) {
		t.Fatalf("Write after a failure: %v", err2)
	}
	if err := w.Close(); !errors.Is(err, errSink) {
		t.Fatalf("Close after a failure: %v", err)
	}

	var buf bytes.Buffer
	w, _ = NewWriter(&buf, key, p)
	w.Write([]byte("hello"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("Write after Close succeeded")
	}
	if got, err := Open(key, KindData, testRef, buf.Bytes(), 0); err != nil || string(got) != "hello" {
		t.Fatalf("%q, %v", got, err)
	}
}

// The writer keeps a bounded number of chunks in flight, and the reader
// reads a bounded number of chunks ahead.
func TestStreamingIsBounded(t *testing.T) {
	key := testKey(8)
	c := smallC
	const chunks = 40
	const conc = 2
	plain := randomBytes(chunks*c+1, 3)
	var buf bytes.Buffer
	w, err := NewWriter(&buf, key, Params{Kind: KindData, Ref: testRef, ChunkLog2: smallLog2, Concurrency: conc})
	if err != nil {
		t.Fatal(err)
	}
	for i := range chunks {
		w.Write(plain[i*c : (i+1)*c])
		// In flight: 2*conc queued, one being filled, one submitted.
		if behind := (i+1)*(c+chunkOverhead) - (buf.Len() - HeaderSize); behind > (2*conc+2)*(c+chunkOverhead) {
			t.Fatalf("after %d chunks the writer holds %d bytes back", i+1, behind)
		}
	}
	w.Write(plain[chunks*c:])
	w.Close()

	cr := &countingReader{r: bytes.NewReader(buf.Bytes())}
	r, err := NewReader(cr, key, KindData, testRef, conc)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 0, len(plain))
	p := make([]byte, 1000)
	for {
		n, err := r.Read(p)
		got = append(got, p[:n]...)
		if ahead := cr.n - HeaderSize - len(got)/c*(c+chunkOverhead); ahead > (2*conc+2)*(c+chunkOverhead) {
			t.Fatalf("reader is %d bytes ahead", ahead)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, plain) {
		t.Fatal("plaintext differs")
	}
}

// Abandoned readers and writers leave no goroutine behind.
func TestAbandonedStreamsDoNotLeak(t *testing.T) {
	key := testKey(8)
	plain := randomBytes(20*smallC, 4)
	sealed := mustSeal(t, key, Params{Kind: KindData, Ref: testRef, ChunkLog2: smallLog2}, plain)
	before := runtime.NumGoroutine()
	for range 10 {
		r, err := NewReader(bytes.NewReader(sealed), key, KindData, testRef, 4)
		if err != nil {
			t.Fatal(err)
		}
		r.Read(make([]byte, 10))
		w, _ := NewWriter(io.Discard, key, Params{Kind: KindData, Ref: testRef, ChunkLog2: smallLog2, Concurrency: 4})
		w.Write(plain)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines before, %d after", before, n)
	}
}
