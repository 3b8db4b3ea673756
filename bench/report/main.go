// Command report turns the raw measurements of bench/run.sh into tables:
// one per dataset (tool, operation, seconds, MB/s of input, max RSS, CPU,
// ratio to cp, stored size), a comparison of Coffer with restic and age,
// the memory check and the targets of the performance issue, met or missed.
//
//	report -in results.tsv [-format text|md] [-small]
//
// Input: tab-separated lines
//
//	dataset tool op rep wall_s sync_s user_s sys_s maxrss_kib input_bytes stored_bytes [load1 [minor_faults]]
//
// "seconds" is the median over repetitions of wall_s + sync_s: the tool's
// own wall time plus a sync(1) right after it, so that every tool is timed
// until its output is on disk (cp, age and restic do not sync; Coffer does,
// so its sync share is near zero); "best" is the fastest run, a fair
// estimate of the tool's own cost when other work on the machine slows some
// runs down. Max RSS is the largest of the runs. Targets are judged on the
// medians; a verdict that differs on the best runs says so. user s and
// sys s are the medians of the CPU time (of all of the command's processes)
// in user space and in the kernel: on a shared machine they vary much less
// than wall time. "faults k": thousands of minor page faults (median), a
// sign of memory being freed to the kernel and touched again.
// 1 MB = 10^6 bytes.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

type run struct {
	wall, sync, user, sys float64
	rssKiB                int64
	input, stored         int64
	load                  float64 // 1-minute load average at the start
	faults                float64 // minor page faults
}

type key struct{ ds, tool, op string }

type stat struct {
	runs             []run
	secs, tool, sync float64 // medians
	best             float64 // fastest run
	load             float64 // median load average
	faults           float64 // median minor page faults
	user, sys        float64 // medians of CPU times
	rssMiB           float64 // max over runs
	input, stored    int64
}

func (s *stat) mbps() float64     { return float64(s.input) / 1e6 / s.secs }
func (s *stat) bestMBps() float64 { return float64(s.input) / 1e6 / s.best }

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

var (
	order    []string // datasets in order of appearance
	ops      = map[string][]key{}
	stats    = map[key]*stat{}
	format   = flag.String("format", "text", "text or md")
	small    = flag.Bool("small", false, "a smoke run: say that the targets cannot be judged")
	inPath   = flag.String("in", "", "results TSV")
	dsTitles = map[string]string{
		"random": "incompressible: one file of random bytes",
		"chat":   "chat-like text: one file, compressible ~3.2x (zstd -1)",
		"media":  "media folder: many files of random bytes, nested directories",
		"mem":    "memory check: one large file of random bytes",
	}
)

func main() {
	flag.Parse()
	f, err := os.Open(*inPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	if err := load(f); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for _, ds := range order {
		datasetTable(w, ds)
		if ds != "mem" {
			compareTable(w, ds)
		}
	}
	targets(w)
}

func load(r io.Reader) error {
	sc := bufio.NewScanner(r)
	for ln := 1; sc.Scan(); ln++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Split(line, "\t")
		if len(fs) < 11 || len(fs) > 13 {
			return fmt.Errorf("line %d: want 11 to 13 fields, have %d", ln, len(fs))
		}
		num := func(i int) float64 {
			v, err := strconv.ParseFloat(fs[i], 64)
			if err != nil {
				fmt.Fprintf(os.Stderr, "report: line %d field %d: %v\n", ln, i+1, err)
				os.Exit(1)
			}
			return v
		}
		k := key{fs[0], fs[1], fs[2]}
		st := stats[k]
		if st == nil {
			st = &stat{}
			stats[k] = st
			if !slices.Contains(order, k.ds) {
				order = append(order, k.ds)
			}
			ops[k.ds] = append(ops[k.ds], k)
		}
		st.runs = append(st.runs, run{wall: num(4), sync: num(5), user: num(6), sys: num(7),
			rssKiB: int64(num(8)), input: int64(num(9)), stored: int64(num(10))})
		if len(fs) >= 12 {
			st.runs[len(st.runs)-1].load = num(11)
		}
		if len(fs) >= 13 {
			st.runs[len(st.runs)-1].faults = num(12)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	for _, st := range stats {
		var secs, tool, sync, user, sys, load, faults []float64
		for _, r := range st.runs {
			load = append(load, r.load)
			faults = append(faults, r.faults)
			secs = append(secs, r.wall+r.sync)
			tool = append(tool, r.wall)
			sync = append(sync, r.sync)
			user = append(user, r.user)
			sys = append(sys, r.sys)
			st.rssMiB = max(st.rssMiB, float64(r.rssKiB)/1024)
			st.input = r.input
			st.stored = max(st.stored, r.stored)
		}
		st.secs, st.tool, st.sync, st.user, st.sys = median(secs), median(tool), median(sync), median(user), median(sys)
		st.best, st.load, st.faults = slices.Min(secs), median(load), median(faults)
	}
	return nil
}

func get(ds, tool, op string) *stat { return stats[key{ds, tool, op}] }

// numeric reports whether every cell of column i starts like a number.
func numeric(rows [][]string, i int) bool {
	for _, r := range rows {
		if c := r[i]; c == "" || !(c[0] >= '0' && c[0] <= '9' || strings.HasPrefix(c, "–")) {
			return false
		}
	}
	return len(rows) > 0
}

// table prints rows as aligned text or as Markdown; numeric columns are
// aligned right.
func table(w io.Writer, head []string, rows [][]string) {
	right := make([]bool, len(head))
	for i := range head {
		right[i] = numeric(rows, i)
	}
	if *format == "md" {
		fmt.Fprintf(w, "| %s |\n", strings.Join(head, " | "))
		seps := make([]string, len(head))
		for i := range seps {
			seps[i] = "---"
			if right[i] {
				seps[i] = "---:"
			}
		}
		fmt.Fprintf(w, "|%s|\n", strings.Join(seps, "|"))
		for _, r := range rows {
			fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
		}
		fmt.Fprintln(w)
		return
	}
	width := make([]int, len(head))
	for i, h := range head {
		width[i] = len([]rune(h))
	}
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		for i, c := range cells {
			pad := strings.Repeat(" ", width[i]-len([]rune(c)))
			if right[i] {
				b.WriteString(pad + c)
			} else {
				b.WriteString(c + pad)
			}
			if i < len(cells)-1 {
				b.WriteString("  ")
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	line(head)
	var dash []string
	for _, n := range width {
		dash = append(dash, strings.Repeat("-", n))
	}
	line(dash)
	for _, r := range rows {
		line(r)
	}
	fmt.Fprintln(w)
}

func heading(w io.Writer, level int, s string) {
	if *format == "md" {
		fmt.Fprintf(w, "%s %s\n\n", strings.Repeat("#", level), s)
	} else {
		fmt.Fprintf(w, "%s\n%s\n\n", s, strings.Repeat("=-"[level-2:level-1], len([]rune(s))))
	}
}

func f2(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// faultsK shows page faults in thousands ("–" for results without them).
func faultsK(v float64) string {
	if v == 0 {
		return "–"
	}
	return strconv.FormatFloat(v/1000, 'f', 0, 64)
}

func f0(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }

func size(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%.1f MB", float64(n)/1e6)
}

func datasetTable(w io.Writer, ds string) {
	keys := ops[ds]
	if len(keys) == 0 {
		return
	}
	in := stats[keys[0]].input
	heading(w, 2, fmt.Sprintf("%s (%s, %s = %.0f MB)", ds, dsTitles[ds], size(in), float64(in)/1e6))
	cp := get(ds, "cp", "copy")
	head := []string{"tool", "operation", "seconds", "MB/s", "best s", "best MB/s", "max RSS MiB", "user s", "sys s", "faults k", "vs cp", "sync s", "stored MB", "load", "runs (s)"}
	var rows [][]string
	for _, k := range keys {
		st := stats[k]
		vs := "–"
		if cp != nil {
			vs = f2(st.secs/cp.secs) + "x"
		}
		stored := "–"
		if st.stored > 0 {
			stored = f0(float64(st.stored) / 1e6)
		}
		var runs []string
		for _, r := range st.runs {
			runs = append(runs, f2(r.wall+r.sync))
		}
		rows = append(rows, []string{k.tool, k.op, f2(st.secs), f0(st.mbps()), f2(st.best), f0(st.bestMBps()),
			f0(st.rssMiB), f2(st.user), f2(st.sys), faultsK(st.faults), vs, f2(st.sync), stored, strconv.FormatFloat(st.load, 'f', 1, 64), strings.Join(runs, " ")})
	}
	table(w, head, rows)
}

// compareTable: Coffer's speed-up (time of the other tool / Coffer's time,
// the same as the ratio of throughputs) over restic and age.
func compareTable(w io.Writer, ds string) {
	pairs := []struct{ coffer, restic, age string }{
		{"backup", "backup", "encrypt"},
		{"restore", "restore", "decrypt"},
	}
	var rows [][]string
	for _, p := range pairs {
		c := get(ds, "coffer", p.coffer)
		if c == nil {
			continue
		}
		row := []string{"coffer " + p.coffer, f2(c.secs), f0(c.mbps())}
		if r := get(ds, "restic", p.restic); r != nil {
			row = append(row, f2(r.secs), f0(r.mbps()), f2(r.secs/c.secs)+"x")
		} else {
			row = append(row, "–", "–", "–")
		}
		if a := get(ds, "age", p.age); a != nil {
			row = append(row, f2(a.secs), f0(a.mbps()), f2(a.secs/c.secs)+"x")
		} else {
			row = append(row, "–", "–", "–")
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return
	}
	if *format == "md" {
		fmt.Fprintf(w, "Coffer against restic (backup/restore) and age (encrypt/decrypt) on %s; speed-up = other's time / Coffer's time (> 1: Coffer faster):\n\n", ds)
	} else {
		fmt.Fprintf(w, "Coffer vs restic / age on %s (speed-up = other's seconds / Coffer's; > 1: Coffer faster)\n", ds)
	}
	table(w, []string{"operation", "coffer s", "coffer MB/s", "restic s", "restic MB/s", "coffer vs restic", "age s", "age MB/s", "coffer vs age"}, rows)
}

func targets(w io.Writer) {
	heading(w, 2, "Targets")
	if *small {
		fmt.Fprintln(w, "(Smoke run with small datasets: fixed costs dominate, so these verdicts say little; judge the targets on the full run.)")
		fmt.Fprintln(w)
	}
	var rows [][]string
	// add judges a target on the medians (ok, figure) and on the best runs
	// (okBest, figBest); have is false if it was not measured.
	add := func(name string, have, ok, okBest bool, figure, figBest string) {
		verdict := "missed"
		switch {
		case !have:
			verdict, figure, figBest = "not measured", "–", "–"
		case ok && okBest:
			verdict = "met"
		case ok:
			verdict = "met (missed on best runs)"
		case okBest:
			verdict = "missed (met on best runs)"
		}
		if strings.Contains(name, "(chat)") || strings.Contains(name, "(media)") {
			verdict += "; info only" // the issue sets these two for incompressible data
		}
		rows = append(rows, []string{name, verdict, figure, figBest})
	}
	secs := func(st *stat, best bool) float64 {
		if best {
			return st.best
		}
		return st.secs
	}
	vsCopy := func(name string, c *stat, cp *stat) {
		if c == nil || cp == nil {
			add(name, false, false, false, "", "")
			return
		}
		fig := func(best bool) string {
			return fmt.Sprintf("%.2fx (%s s vs %s s)", secs(c, best)/secs(cp, best), f2(secs(c, best)), f2(secs(cp, best)))
		}
		add(name, true, c.secs <= 1.5*cp.secs, c.best <= 1.5*cp.best, fig(false), fig(true))
	}
	cp := get("random", "cp", "copy")
	vsCopy("incompressible backup ≤ 1.5x the time of cp + sync", get("random", "coffer", "backup"), cp)
	vsCopy("incompressible restore ≤ 1.5x the time of cp + sync", get("random", "coffer", "restore"), cp)
	// speedup: Coffer's throughput over other's, at least factor.
	speedup := func(name string, c, o *stat, factor float64, required bool) {
		if c == nil || o == nil {
			if required {
				add(name, false, false, false, "", "")
			}
			return
		}
		fig := func(best bool) string {
			cm, om := float64(c.input)/1e6/secs(c, best), float64(o.input)/1e6/secs(o, best)
			return fmt.Sprintf("%.2fx (%s vs %s MB/s)", cm/om, f0(cm), f0(om))
		}
		add(name, true, o.secs >= factor*c.secs, o.best >= factor*c.best, fig(false), fig(true))
	}
	for _, ds := range []string{"random", "chat", "media"} {
		speedup(fmt.Sprintf("backup ≥ 5x restic's throughput (%s)", ds),
			get(ds, "coffer", "backup"), get(ds, "restic", "backup"), 5, ds == "random")
	}
	for _, ds := range []string{"random", "chat", "media"} {
		speedup(fmt.Sprintf("backup ≥ age encrypt-to-file throughput (%s)", ds),
			get(ds, "coffer", "backup"), get(ds, "age", "encrypt"), 1, ds == "random")
	}
	if c := get("chat", "coffer", "backup"); c != nil {
		ratio := "–"
		if c.stored > 0 {
			ratio = fmt.Sprintf("%.2f", float64(c.input)/float64(c.stored))
		}
		add("chat-like text backup ≥ 300 MB/s of input, compression on", true, c.mbps() >= 300, c.bestMBps() >= 300,
			fmt.Sprintf("%s MB/s (compression ratio %s)", f0(c.mbps()), ratio), f0(c.bestMBps())+" MB/s")
	} else {
		add("chat-like text backup ≥ 300 MB/s of input, compression on", false, false, false, "", "")
	}
	if c := get("mem", "coffer", "backup"); c != nil {
		ok := c.rssMiB < 200 && c.input >= 4<<30
		add(fmt.Sprintf("max RSS < 200 MiB backing up %s", size(c.input)), true, ok, ok,
			fmt.Sprintf("%s MiB (at %s MB/s)", f0(c.rssMiB), f0(c.mbps())), "(largest of all runs)")
	} else {
		add("max RSS < 200 MiB backing up 4 GiB", false, false, false, "", "")
	}
	table(w, []string{"target", "verdict", "figure (medians)", "figure (best runs)"}, rows)
}
