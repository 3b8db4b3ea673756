package progress

import (
	"bytes"
	"strings"
	"sync"
	"testing"
)

func TestSilentWhenNotATerminal(t *testing.T) {
	var buf bytes.Buffer
	b := Auto(&buf, "backup", false)
	b.SetTotal(100)
	b.Add(50)
	b.Finish(true)
	if buf.Len() != 0 {
		t.Fatalf("drew on a non-terminal: %q", buf.String())
	}
	var nilBar *Bar
	nilBar.SetTotal(1)
	nilBar.Add(1)
	nilBar.Finish(false)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func TestDraws(t *testing.T) {
	var buf syncBuffer
	b := New(&buf, "restore", true)
	b.Add(10) // before the total is known
	b.SetTotal(4 << 20)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 256 {
				b.Add(4 << 10)
			}
		})
	}
	wg.Wait()
	b.Finish(true)
	b.Finish(true)
	out := buf.b.String()
	if !strings.Contains(out, "restore") || !strings.Contains(out, "MiB") {
		t.Fatalf("bar output: %q", out)
	}
}

func TestAbort(t *testing.T) {
	var buf syncBuffer
	b := New(&buf, "verify", true)
	b.SetTotal(100)
	b.Add(10)
	b.Finish(false)
	b.Add(10) // after Finish: ignored, must not block
}
