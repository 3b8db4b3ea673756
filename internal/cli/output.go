package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/cofferhq/coffer/client"
)

// Printing for people and as JSON.

// printJSON prints v as one JSON object on stdout.
func (a *app) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fail("json", err)
	}
	_, err = fmt.Fprintf(a.Stdout, "%s\n", b)
	return fail("output", err)
}

// printPartialJSON prints a command's summary v as one JSON object, with
// "code" and "warning" added when the outcome is partial (a
// *partialError: a backup with entries skipped, a salvaging restore, a
// check that found damage).
func (a *app) printPartialJSON(v any, partial error) error {
	if partial == nil {
		return a.printJSON(v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fail("json", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return fail("json", err)
	}
	m["code"] = ExitCode(partial)
	m["warning"] = message(partial)
	if err := a.printJSON(m); err != nil {
		return err
	}
	return partial
}

// say prints an informational line unless --quiet.
func (a *app) say(format string, args ...any) {
	if !a.quiet {
		fmt.Fprintf(a.Stdout, format+"\n", args...)
	}
}

// printDamage lists, on stdout (even with --quiet: it is the answer), every
// damaged manifest and every missing or damaged piece with the files of
// each backup it breaks.
func (a *app) printDamage(pieces []client.DamagedPiece, manifests []client.BadManifest) {
	w := a.Stdout
	for _, m := range manifests {
		fmt.Fprintf(w, "DAMAGED backup %d: its manifest: %s\n", m.Generation, m.Problem)
	}
	for _, p := range pieces {
		gens := map[uint64]bool{}
		for _, f := range p.Files {
			gens[f.Generation] = true
		}
		ns := make([]uint64, 0, len(gens))
		for g := range gens {
			ns = append(ns, g)
		}
		slices.Sort(ns)
		fmt.Fprintf(w, "DAMAGED piece %s: %s; used by %s in %s %s:\n", p.ID, p.Problem, count(int64(len(p.Files)), "file"), map[bool]string{true: "backup", false: "backups"}[len(ns) == 1], numbers(ns))
		for _, f := range p.Files {
			fmt.Fprintf(w, "  backup %d: %s\n", f.Generation, f.Path)
		}
	}
}

// damageError adds what to do to the integrity error of a check that
// found damage (nil stays nil).
func damageError(op string, err error) error {
	if err == nil {
		return nil
	}
	return &partialError{code: ExitIntegrity, err: &opError{op: op, err: err, hint: "Each damaged piece is listed with the files it breaks. 'coffer restore --salvage' restores the intact files of a damaged backup; 'coffer repair [--path DIR]...' uploads lost pieces again from files still on disk and rewrites the backups without what is lost; then back up again (exit 5)"}}
}

// out is stdout, or nowhere with --quiet: for commands that print many
// informational lines.
func (a *app) out() io.Writer {
	if a.quiet {
		return io.Discard
	}
	return a.Stdout
}

// sayErr prints an informational line on stderr unless --quiet (for what
// must not mix with the JSON on stdout).
func (a *app) sayErr(format string, args ...any) {
	if !a.quiet {
		fmt.Fprintf(a.Stderr, format+"\n", args...)
	}
}

// count formats n things: "1 file", "2 files", "3 directories".
func count(n int64, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	switch {
	case strings.HasSuffix(thing, "y"):
		thing = strings.TrimSuffix(thing, "y") + "ies"
	case strings.HasSuffix(thing, "s"):
		thing += "es"
	default:
		thing += "s"
	}
	return fmt.Sprintf("%d %s", n, thing)
}

func numbers(ns []uint64) string {
	if len(ns) == 0 {
		return "none"
	}
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ", ")
}

// size formats a byte count for people (binary units).
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func seconds(d client.Duration) string {
	return fmt.Sprintf("%.2f s", time.Duration(d).Seconds())
}

// when formats a time for people.
func when(t time.Time) string {
	return t.Local().Format("2006-01-02 15:04:05 MST")
}

func whens(ts []time.Time) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = when(t)
	}
	return strings.Join(s, ", ")
}

// sessionLines describes a successful recovery: the wrong guesses since
// the previous success, and when that was.
func sessionLines(s *client.Session) []string {
	var out []string
	// With no earlier success, the guesses are counted from when the
	// password was set: never "since the last successful recovery"
	// followed by "this is the first".
	since := "since the last successful recovery"
	if s.PreviousSuccess.IsZero() {
		since = "since the password was set"
	}
	switch s.FailedGuesses {
	case 0:
		out = append(out, "No wrong guesses "+since+".")
	default:
		line := count(int64(s.FailedGuesses), "wrong guess") + " " + since
		if len(s.FailedTimes) > 0 {
			line += " (" + whens(s.FailedTimes) + ")"
		}
		out = append(out, line+". If that was not you, someone is trying to guess your password: change it ('coffer password change').")
	}
	if s.PreviousSuccess.IsZero() {
		out = append(out, "This is the first successful recovery since the password was set.")
	} else {
		out = append(out, "The previous successful recovery was at "+when(s.PreviousSuccess)+".")
	}
	return out
}
