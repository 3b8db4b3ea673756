package cli

import (
	"encoding/json"
	"fmt"
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

// say prints an informational line unless --quiet.
func (a *app) say(format string, args ...any) {
	if !a.quiet {
		fmt.Fprintf(a.Stdout, format+"\n", args...)
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
	switch s.FailedGuesses {
	case 0:
		out = append(out, "No wrong guesses since the last successful recovery.")
	default:
		line := count(int64(s.FailedGuesses), "wrong guess") + " since the last successful recovery"
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
