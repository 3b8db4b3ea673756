package faultharness

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Report is the result of checking a history.
type Report struct {
	Ops      int
	Accounts int
	// Counts of ops by "kind result".
	Counts map[string]int
	// Linearizability per account: Illegal ones fail; Unknown ones timed
	// out (inconclusive).
	Illegal, Inconclusive []string
	// Violations found by the other checks (guess budget, acknowledged
	// writes, destroyed records, anomalies).
	Violations []string
	// KE2Released counts the KE2 responses clients received; MaxWindowKE2
	// is the most any account received in one quiet window (no success,
	// registration or erasure in flight), which must not exceed the limit.
	KE2Released  int
	MaxWindowKE2 int
	// LongestGap is the longest time in which no op completed with a
	// definite outcome (how long a fault made the fleet unavailable), and
	// GapAt when it began (since the history began).
	LongestGap, GapAt time.Duration
	CheckTime         time.Duration
}

// Failed reports whether any check failed.
func (r *Report) Failed() bool { return len(r.Illegal) > 0 || len(r.Violations) > 0 }

// Summary is a few lines for the test log.
func (r *Report) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d ops on %d accounts; KE2 released %d, at most %d in one window; longest time without a definite answer %v (at %v); checked in %v\n",
		r.Ops, r.Accounts, r.KE2Released, r.MaxWindowKE2, r.LongestGap.Round(time.Millisecond), r.GapAt.Round(time.Millisecond), r.CheckTime.Round(time.Millisecond))
	keys := make([]string, 0, len(r.Counts))
	for k := range r.Counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %-28s %d\n", k, r.Counts[k])
	}
	fmt.Fprintf(&b, "linearizable: %d accounts illegal %v, %d inconclusive %v\n", len(r.Illegal), r.Illegal, len(r.Inconclusive), r.Inconclusive)
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "VIOLATION: %s\n", v)
	}
	return b.String()
}

// byAccount groups ops by account, each group by invocation time.
func byAccount(ops []*Op) (map[string][]*Op, []string) {
	by := map[string][]*Op{}
	for _, o := range ops {
		by[o.Account] = append(by[o.Account], o)
	}
	names := make([]string, 0, len(by))
	for a, l := range by {
		sort.Slice(l, func(i, j int) bool { return l[i].Call < l[j].Call })
		names = append(names, a)
	}
	sort.Strings(names)
	return by, names
}

// Check runs every check on ops for a fleet with guess limit limit. Each
// account's linearizability check gets at most timeout.
func Check(ops []*Op, limit int, timeout time.Duration) *Report {
	start := time.Now()
	r := &Report{Ops: len(ops), Counts: map[string]int{}}
	by, names := byAccount(ops)
	r.Accounts = len(names)
	for _, o := range ops {
		k := string(o.Kind) + " " + string(o.Result)
		if o.KE2 && o.Result != ResOK {
			k += " +KE2"
		}
		r.Counts[k]++
		if o.KE2 {
			r.KE2Released++
		}
		if o.Anomaly {
			r.Violations = append(r.Violations, fmt.Sprintf("anomaly in %s on %s: %s", o.Describe(), o.Account, o.Err))
		}
	}

	var done []int64
	for _, o := range ops {
		if !o.Unknown() {
			done = append(done, o.Return)
		}
	}
	sort.Slice(done, func(i, j int) bool { return done[i] < done[j] })
	for i := 1; i < len(done); i++ {
		if g := time.Duration(done[i] - done[i-1]); g > r.LongestGap {
			r.LongestGap, r.GapAt = g, time.Duration(done[i-1])
		}
	}

	// (a) Linearizability, per account, two at a time.
	model := Model(limit)
	var mu sync.Mutex
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for _, a := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res, _ := porcupine.CheckOperationsVerbose(model, porcupineOps(by[a]), timeout)
			mu.Lock()
			defer mu.Unlock()
			switch res {
			case porcupine.Illegal:
				r.Illegal = append(r.Illegal, a)
			case porcupine.Unknown:
				r.Inconclusive = append(r.Inconclusive, a)
			}
		}()
	}
	wg.Wait()
	sort.Strings(r.Illegal)
	sort.Strings(r.Inconclusive)

	for _, a := range names {
		l := by[a]
		n, v := checkBudget(a, l, limit)
		r.MaxWindowKE2 = max(r.MaxWindowKE2, n)
		r.Violations = append(r.Violations, v...)
		r.Violations = append(r.Violations, checkAcknowledged(a, l, limit)...)
		r.Violations = append(r.Violations, checkDestroyed(a, l)...)
	}
	r.CheckTime = time.Since(start)
	return r
}

// end is an op's return time, infinite if its outcome is unknown (it may
// take effect at any time after its invocation).
func end(o *Op) int64 {
	if o.Unknown() {
		return math.MaxInt64
	}
	return o.Return
}

// mayReset: ops that may reset the guess count or replace or erase the
// record (for the guess budget, they end a window).
func mayReset(o *Op) bool {
	switch o.Kind {
	case OpEnroll, OpDisable:
		return o.Result == ResOK || o.Unknown()
	case OpRecover:
		return o.Result == ResOK || o.Result == ResKE2Unknown
	}
	return false
}

// checkBudget is (b): between two successful logins no more KE2 responses
// than the guess limit reach clients. It counts, for each window in which
// no op that may reset the count or replace or erase the record is in
// flight, the Recovers wholly inside the window that received a KE2. Only
// windows after the account's first acknowledged registration and before
// any Disable are counted (an account without a live record releases no KE2
// at all, which the linearizability model checks). It returns the largest
// count.
func checkBudget(account string, ops []*Op, limit int) (int, []string) {
	var firstEnroll int64 = math.MaxInt64
	var firstDisable int64 = math.MaxInt64
	var resets [][2]int64
	for _, o := range ops {
		if o.Kind == OpEnroll && o.Result == ResOK {
			firstEnroll = min(firstEnroll, o.Return)
		}
		if o.Kind == OpDisable && (o.Result == ResOK || o.Unknown()) {
			firstDisable = min(firstDisable, o.Call)
		}
		if mayReset(o) {
			resets = append(resets, [2]int64{o.Call, end(o)})
		}
	}
	// Quiet windows: the gaps between the union of the reset intervals.
	sort.Slice(resets, func(i, j int) bool { return resets[i][0] < resets[j][0] })
	type win struct {
		from, to int64
		in       []*Op
	}
	var wins []*win
	cur := int64(math.MinInt64)
	for _, iv := range resets {
		if iv[0] > cur {
			wins = append(wins, &win{from: cur, to: iv[0]})
		}
		cur = max(cur, iv[1])
	}
	if cur < math.MaxInt64 {
		wins = append(wins, &win{from: cur, to: math.MaxInt64})
	}
	for _, o := range ops {
		if o.Kind != OpRecover || !o.KE2 || o.Unknown() {
			continue
		}
		// The last window starting before o.
		k := sort.Search(len(wins), func(i int) bool { return wins[i].from >= o.Call }) - 1
		if k >= 0 && o.Return < wins[k].to {
			wins[k].in = append(wins[k].in, o)
		}
	}
	best := 0
	var out []string
	for _, w := range wins {
		if w.from < firstEnroll || w.to > firstDisable {
			continue
		}
		best = max(best, len(w.in))
		if len(w.in) > limit {
			var ids []string
			for _, o := range w.in {
				ids = append(ids, fmt.Sprintf("#%d", o.ID))
			}
			out = append(out, fmt.Sprintf("guess budget on %s: %d KE2 responses released with no success, registration or erasure in between (limit %d): %s",
				account, len(w.in), limit, strings.Join(ids, " ")))
		}
	}
	return best, out
}

// changes reports whether o may have registered or erased a record.
func changes(o *Op) bool {
	return (o.Kind == OpEnroll || o.Kind == OpDisable) && (o.Result == ResOK || o.Unknown())
}

// checkAcknowledged is (c): an acknowledged registration is not lost. For
// each Enroll that returned ok, a later right-password Recover (or Status)
// that no other registration or erasure could precede, and that fewer than
// limit Recovers overlap (so the budget cannot have run out), must find the
// record: the key it stored, its epoch.
func checkAcknowledged(account string, ops []*Op, limit int) []string {
	var out []string
	for ei, e := range ops {
		if e.Kind != OpEnroll || e.Result != ResOK {
			continue
		}
		// Ops returning at or after t may follow another change.
		t := int64(math.MaxInt64)
		var recovers []int64 // invocation times of Recovers that may act after e began
		for _, y := range ops {
			if y != e && changes(y) && end(y) >= e.Call {
				t = min(t, y.Call)
			}
			if y.Kind == OpRecover && end(y) >= e.Call {
				recovers = append(recovers, y.Call)
			}
		}
		for _, x := range ops[ei+1:] {
			if x.Call >= t {
				break
			}
			// Recovers that may act between e and x (x included).
			n := sort.Search(len(recovers), func(i int) bool { return recovers[i] > x.Return })
			if n >= limit {
				break
			}
			if x.Call <= e.Return || x.Return >= t || x.Unknown() {
				continue
			}
			bad := ""
			switch {
			case x.Kind == OpStatus && (!x.Status.Registered || x.Status.Epoch != e.Epoch):
				bad = "status does not show it"
			case x.Kind == OpRecover && x.Pw == e.Pw && x.Result == ResOK && (x.GotKey != e.Key || x.Epoch != e.Epoch):
				bad = "recover returned another key or epoch"
			case x.Kind == OpRecover && x.Pw == e.Pw && (x.Result == ResWrong || x.Result == ResWrongDestroyed || x.Result == ResDestroyed):
				bad = "recover with its password failed"
			}
			if bad != "" {
				out = append(out, fmt.Sprintf("acknowledged registration lost on %s: %s; then %s: %s", account, e.Describe(), x.Describe(), bad))
			}
		}
	}
	return out
}

// checkDestroyed is (d): once an op saw the record destroyed, nothing sees
// it live again unless a registration may have come in between.
func checkDestroyed(account string, ops []*Op) []string {
	var out []string
	for di, d := range ops {
		saw := d.Kind == OpRecover && (d.Result == ResDestroyed || d.Result == ResWrongDestroyed) ||
			d.Kind == OpStatus && d.Status != nil && d.Status.Destroyed ||
			d.Kind == OpDisable && d.Result == ResDestroyed
		if !saw {
			continue
		}
		t := int64(math.MaxInt64) // ops returning at or after t may follow a registration
		for _, e := range ops {
			if e.Kind == OpEnroll && (e.Result == ResOK || e.Unknown()) && end(e) >= d.Call {
				t = min(t, e.Call)
			}
		}
		for _, x := range ops[di+1:] {
			if x.Call >= t {
				break
			}
			if x.Call <= d.Return || x.Return >= t || x.Unknown() {
				continue
			}
			bad := false
			switch x.Kind {
			case OpRecover, OpDisable:
				bad = x.Result != ResDestroyed
			case OpStatus:
				bad = !x.Status.Destroyed || x.Status.Registered
			}
			if bad {
				out = append(out, fmt.Sprintf("destroyed record came back on %s: %s; then %s", account, d.Describe(), x.Describe()))
			}
		}
	}
	return out
}

// WriteFailure writes the history, the report and porcupine's
// visualisation of the accounts that are not linearizable into dir.
func WriteFailure(dir string, h *History, r *Report, limit int, extra map[string]any) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	hp := filepath.Join(dir, "history.json")
	if extra == nil {
		extra = map[string]any{}
	}
	extra["guess_limit"] = limit
	extra["report"] = r
	if err := h.WriteJSON(hp, extra); err != nil {
		return nil, err
	}
	files = append(files, hp)
	rp := filepath.Join(dir, "report.txt")
	if err := os.WriteFile(rp, []byte(r.Summary()), 0o644); err != nil {
		return nil, err
	}
	files = append(files, rp)
	bad := map[string]bool{}
	for _, a := range r.Illegal {
		bad[a] = true
	}
	for _, v := range r.Violations {
		for _, o := range h.Ops() {
			if strings.Contains(v, " on "+o.Account+":") {
				bad[o.Account] = true
			}
		}
	}
	if len(bad) == 0 {
		return files, nil
	}
	var sub []*Op
	for _, o := range h.Ops() {
		if bad[o.Account] {
			sub = append(sub, o)
		}
	}
	model := Model(limit)
	_, info := porcupine.CheckOperationsVerbose(model, porcupineOps(sub), 30*time.Second)
	var ann []porcupine.Annotation
	for _, e := range h.Events() {
		endT := e.End
		if endT == 0 {
			endT = e.Start
		}
		ann = append(ann, porcupine.Annotation{Tag: "faults", Start: e.Start, End: endT, Description: e.What, BackgroundColor: "#fcd5b5"})
	}
	info.AddAnnotations(ann)
	vp := filepath.Join(dir, "linearizability.html")
	if err := porcupine.VisualizePath(model, info, vp); err != nil {
		return files, err
	}
	return append(files, vp), nil
}

// Explain describes why an account's history is not linearizable: the
// longest prefix porcupine could linearize, the states the model allows
// after it, and the operations it could not place next.
func Explain(ops []*Op, limit int, timeout time.Duration) string {
	res, info := porcupine.CheckOperationsVerbose(Model(limit), porcupineOps(ops), timeout)
	var b strings.Builder
	fmt.Fprintf(&b, "porcupine: %s\n", res)
	if res == porcupine.Ok {
		return b.String()
	}
	parts := info.PartialLinearizationsOperations()
	if len(parts) == 0 {
		return b.String()
	}
	var longest []porcupine.Operation
	for _, p := range parts[0] {
		if len(p) > len(longest) {
			longest = p
		}
	}
	states := []any{acct{}}
	in := map[stepInput]bool{}
	fmt.Fprintf(&b, "longest linearizable prefix (%d of %d steps):\n", len(longest), len(porcupineOps(ops)))
	model := Model(limit)
	for i, o := range longest {
		si := o.Input.(stepInput)
		in[si] = true
		var next []any
		for _, s := range states {
			next = append(next, stepPart(limit, s.(acct), si.Op, si.Part)...)
		}
		states = dedupe(next)
		if i >= len(longest)-15 {
			fmt.Fprintf(&b, "  [%8.3fs %8.3fs] %s\n      => %v\n", secs(si.Op.Call), secs(si.Op.Return), model.DescribeOperation(si, nil), states)
		}
	}
	fmt.Fprintf(&b, "not linearizable after that; the next steps by invocation:\n")
	n := 0
	for _, o := range porcupineOps(ops) {
		si := o.Input.(stepInput)
		if in[si] {
			continue
		}
		fmt.Fprintf(&b, "  [%8.3fs %8.3fs] %s\n", secs(o.Call), secs(o.Return), model.DescribeOperation(si, nil))
		if n++; n == 12 {
			break
		}
	}
	return b.String()
}

func dedupe(states []any) []any {
	var out []any
	seen := map[acct]bool{}
	for _, s := range states {
		if a := s.(acct); !seen[a] {
			seen[a] = true
			out = append(out, s)
		}
	}
	return out
}

func secs(ns int64) float64 {
	if ns == math.MaxInt64 {
		return math.Inf(1)
	}
	return float64(ns) / 1e9
}

// LoadHistory reads the operations of a history written by WriteFailure,
// and its guess limit.
func LoadHistory(path string) ([]*Op, int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	var doc struct {
		Ops        []*Op `json:"ops"`
		GuessLimit int   `json:"guess_limit"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, 0, err
	}
	return doc.Ops, doc.GuessLimit, nil
}
