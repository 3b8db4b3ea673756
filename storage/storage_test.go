package storage

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	for _, ok := range []string{
		"config", "data/ab/ab12", "manifests/00000000000000000007", "a.b/c..d", "x y", "ü/名前",
		strings.Repeat("x", MaxNameLen),
	} {
		if err := CheckName(ok); err != nil {
			t.Errorf("CheckName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{
		"", "/a", "a/", "a//b", ".", "..", "a/..", "../a", "./a", "a/./b", ".tmp", "a/.x",
		`a\b`, "a\x00b", "a\tb", "a\x7fb", "\xff", strings.Repeat("x", MaxNameLen+1),
	} {
		if err := CheckName(bad); !errors.Is(err, ErrInvalidName) {
			t.Errorf("CheckName(%q) = %v, want ErrInvalidName", bad, err)
		}
	}
	for _, ok := range []string{"", "a", "a/", "data/ab", "data/"} {
		if err := CheckPrefix(ok); err != nil {
			t.Errorf("CheckPrefix(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"/", "a//", "../", ".", "a/.", `\`} {
		if err := CheckPrefix(bad); !errors.Is(err, ErrInvalidName) {
			t.Errorf("CheckPrefix(%q) = %v, want ErrInvalidName", bad, err)
		}
	}
}
