package cli

import "testing"

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
