// Package progress draws progress bars for long operations (bytes done,
// rate and time left) on a terminal, and nothing anywhere else. A Bar
// implements client.Progress.
package progress

import (
	"io"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/cofferhq/coffer/client"
)

var _ client.Progress = (*Bar)(nil)

// IsTerminal reports whether w is a terminal (so bars make sense there).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Bar is one progress bar. The zero of *Bar (nil) and a Bar made with
// show = false draw nothing. Its methods are safe for concurrent use.
type Bar struct {
	label string
	out   io.Writer
	show  bool

	mu      sync.Mutex
	p       *mpb.Progress
	bar     *mpb.Bar
	total   int64
	done    bool
	pending int64 // bytes reported before the bar exists
}

// New returns a bar labelled label that draws on out if show is true.
// Use Auto to decide show from whether out is a terminal.
func New(out io.Writer, label string, show bool) *Bar {
	return &Bar{label: label, out: out, show: show}
}

// Auto returns a bar on out, drawn only if out is a terminal and quiet is
// false.
func Auto(out io.Writer, label string, quiet bool) *Bar {
	return New(out, label, !quiet && IsTerminal(out))
}

// SetTotal announces the number of bytes the operation will process.
func (b *Bar) SetTotal(total int64) {
	if b == nil || !b.show {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.total = total
	if b.bar == nil {
		b.start(total)
		return
	}
	b.bar.SetTotal(total, false)
}

// Add reports n more bytes processed.
func (b *Bar) Add(n int64) {
	if b == nil || !b.show || n == 0 {
		return
	}
	b.mu.Lock()
	bar := b.bar
	if bar == nil {
		b.pending += n
	}
	b.mu.Unlock()
	if bar != nil {
		bar.IncrInt64(n)
	}
}

// start creates the bar; b.mu is held.
func (b *Bar) start(total int64) {
	b.p = mpb.New(
		mpb.WithOutput(b.out),
		mpb.WithWidth(40),
		mpb.WithRefreshRate(150*time.Millisecond),
		mpb.WithAutoRefresh(),
	)
	b.bar = b.p.New(total,
		mpb.BarStyle().Lbound("[").Filler("=").Tip(">").Padding(" ").Rbound("]"),
		mpb.PrependDecorators(
			decor.Name(b.label, decor.WC{C: decor.DindentRight | decor.DextraSpace}),
			decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace),
		),
		mpb.AppendDecorators(
			decor.AverageSpeed(decor.SizeB1024(0), "% .1f", decor.WCSyncSpace),
			decor.OnComplete(decor.Name(" ETA "), " "),
			decor.OnComplete(decor.AverageETA(decor.ET_STYLE_GO), "done"),
		),
	)
	if b.pending > 0 {
		b.bar.IncrInt64(b.pending)
		b.pending = 0
	}
}

// Finish ends the bar: completed if ok, left as it is (aborted) if not.
// It waits until the last frame is drawn, so that later output does not mix
// with the bar. Finish may be called more than once.
func (b *Bar) Finish(ok bool) {
	if b == nil || !b.show {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	if b.bar == nil {
		return
	}
	if ok {
		b.bar.SetTotal(-1, true)
	} else {
		b.bar.Abort(false)
	}
	b.p.Wait()
}
