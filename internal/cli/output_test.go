package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client"
)

func TestCount(t *testing.T) {
	for _, c := range []struct {
		n    int64
		what string
		want string
	}{{1, "file", "1 file"}, {0, "file", "0 files"}, {3, "directory", "3 directories"}, {2, "new piece", "2 new pieces"}} {
		if got := count(c.n, c.what); got != c.want {
			t.Errorf("count(%d, %q) = %q", c.n, c.what, got)
		}
	}
	if got := size(1536); got != "1.5 KiB" {
		t.Errorf("size(1536) = %q", got)
	}
}

// TestSessionLines (issue 12, item 11): "N wrong guesses since the last
// successful recovery" is never followed by "This is the first successful
// recovery": with no earlier success they count from the password.
func TestSessionLines(t *testing.T) {
	prev := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		s    client.Session
		want []string
	}{
		{client.Session{FailedGuesses: 2}, []string{"2 wrong guesses since the password was set", "This is the first successful recovery"}},
		{client.Session{}, []string{"No wrong guesses since the password was set.", "This is the first successful recovery"}},
		{client.Session{FailedGuesses: 1, PreviousSuccess: prev}, []string{"1 wrong guess since the last successful recovery", "The previous successful recovery was at"}},
	} {
		got := strings.Join(sessionLines(&c.s), "\n")
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%+v: %q lacks %q", c.s, got, w)
			}
		}
		if strings.Contains(got, "since the last successful recovery") && strings.Contains(got, "first successful recovery") {
			t.Errorf("%+v: contradictory lines %q", c.s, got)
		}
	}
}
