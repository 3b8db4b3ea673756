package local_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/local"
)

func TestParse(t *testing.T) {
	wd, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for loc, want := range map[string]string{
		"/var/backups/coffer":        "/var/backups/coffer",
		"/var/backups/coffer/":       "/var/backups/coffer",
		"relative/dir":               filepath.Join(wd, "relative/dir"),
		"./x":                        filepath.Join(wd, "x"),
		"./backup:2024":              filepath.Join(wd, "backup:2024"),
		"file:///var/backups/coffer": "/var/backups/coffer",
		"file://localhost/var/b":     "/var/b",
		"file:///with%20space":       "/with space",
	} {
		loc, err := storage.Parse(loc)
		if err != nil {
			t.Errorf("Parse(%q): %v", loc, err)
			continue
		}
		if got := loc.Config(); got != (local.Config{Dir: want}) {
			t.Errorf("Parse(%q) = %#v, want Dir %q", loc, got, want)
		}
		if loc.String() != want {
			t.Errorf("Parse(%q).String() = %q, want %q", loc, loc.String(), want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for loc, want := range map[string]string{
		"file://host/x":  "local path",
		"file:relative":  "absolute path",
		"file:///x?y=1":  "no parameters",
		"file:///x#frag": "no parameters",
		"file://u:p@/x":  "local path",
	} {
		_, err := storage.Parse(loc)
		if err == nil {
			t.Errorf("Parse(%q) succeeded", loc)
			continue
		}
		if !errors.Is(err, storage.ErrInvalidLocation) || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) error %q does not mention %q", loc, err, want)
		}
	}
}

func TestLocationOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	for _, s := range []string{dir, "file://" + dir} {
		loc, err := storage.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		b, err := loc.Open(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		lb, ok := b.(*local.Backend)
		if !ok || lb.Dir() != dir || b.Location() != dir {
			t.Errorf("Open(%q) = %T %q", s, b, b.Location())
		}
		if !b.Capabilities().AtomicCreate {
			t.Error("a local backend does not claim AtomicCreate")
		}
	}
}
