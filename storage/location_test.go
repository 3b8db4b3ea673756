package storage_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/local"
	"github.com/cofferhq/coffer/storage/memory"
	"github.com/cofferhq/coffer/storage/s3"
)

// fakeConfig is the configuration of the "fake-mem" provider below.
type fakeConfig struct{ name string }

func (c fakeConfig) String() string { return "fake-mem:" + c.name }

func (c fakeConfig) Open(context.Context) (storage.Backend, error) {
	if c.name == "broken" {
		return nil, errors.New("cannot reach it")
	}
	return memory.New(), nil
}

func init() {
	storage.Register(storage.Provider{
		Scheme: "fake-mem",
		Forms:  []string{"fake-mem:NAME"},
		Parse: func(loc string) (storage.Config, error) {
			name := loc[len("fake-mem:"):]
			if name == "" {
				return nil, errors.New("fake-mem: no name")
			}
			return fakeConfig{name}, nil
		},
	})
}

func TestSchemesAndForms(t *testing.T) {
	if got := storage.Schemes(); !slices.Equal(got, []string{"fake-mem", "file", "s3"}) {
		t.Errorf("Schemes() = %q", got)
	}
	forms := storage.Forms()
	if len(forms) < 4 || forms[0] != local.Forms[0] || forms[1] != local.Forms[1] || !slices.Contains(forms, s3.Form) || !slices.Contains(forms, "fake-mem:NAME") {
		t.Errorf("Forms() = %q, want the plain-path provider's first", forms)
	}
	if p, ok := storage.Lookup("S3"); !ok || p.Scheme != "s3" || p.Help == "" {
		t.Errorf("Lookup(S3) = %+v, %v", p, ok)
	}
	if _, ok := storage.Lookup("rclone"); ok {
		t.Error("Lookup(rclone) found a provider")
	}
}

func TestParseDispatch(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		loc, scheme, canonical string
	}{
		{"/var/backups/coffer", "file", "/var/backups/coffer"},
		{"relative/dir", "file", filepath.Join(wd, "relative/dir")},
		{"./backup:2024", "file", filepath.Join(wd, "backup:2024")},
		{"dir/backup:2024", "file", filepath.Join(wd, "dir/backup:2024")},
		{"my_backup:2024", "file", filepath.Join(wd, "my_backup:2024")}, // '_' is no scheme character
		{`C:\backups`, "file", filepath.Join(wd, `C:\backups`)},         // a drive letter: a path
		{"  /padded  ", "file", "/padded"},
		{"file:///var/backups/coffer", "file", "/var/backups/coffer"},
		{"FILE:///x/../y", "file", "/y"},
		{"s3://bucket/p", "s3", "s3://bucket/p"},
		{"S3://bucket/a/b/", "s3", "s3://bucket/a/b"},
		{"fake-mem:one", "fake-mem", "fake-mem:one"},
	} {
		loc, err := storage.Parse(c.loc)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.loc, err)
			continue
		}
		if loc.Scheme() != c.scheme || loc.String() != c.canonical || loc.IsZero() {
			t.Errorf("Parse(%q) = scheme %q, %q; want %q, %q", c.loc, loc.Scheme(), loc.String(), c.scheme, c.canonical)
		}
		again, err := storage.Parse(loc.String())
		if err != nil || again != loc {
			t.Errorf("Parse(%q) of the canonical form of %q = %v, %v; want the same location", loc.String(), c.loc, again, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for loc, want := range map[string]string{
		"":                                "no repository location",
		"   ":                             "no repository location",
		"rclone:gdrive:coffer":            `unknown storage scheme "rclone"; the known schemes are fake-mem, file, s3`,
		"backup:2024":                     "./backup:2024",
		"gs://bucket/x":                   `unknown storage scheme "gs"`,
		"https://s3.amazonaws.com/bucket": s3.Form,
		"ftp://u:topsecret@host/x":        "ftp://REDACTED@host/x",
		"fake-mem:":                       "fake-mem: no name",
	} {
		_, err := storage.Parse(loc)
		if err == nil {
			t.Errorf("Parse(%q) succeeded", loc)
			continue
		}
		if !errors.Is(err, storage.ErrInvalidLocation) {
			t.Errorf("Parse(%q) error %q does not wrap ErrInvalidLocation", loc, err)
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) error %q does not mention %q", loc, err, want)
		}
		if strings.Contains(err.Error(), "topsecret") {
			t.Errorf("Parse(%q) error shows the secret: %v", loc, err)
		}
	}
}

func TestLocationOpen(t *testing.T) {
	loc, err := storage.Parse("fake-mem:x")
	if err != nil {
		t.Fatal(err)
	}
	b, err := loc.Open(t.Context())
	if err != nil || b.Location() != "memory" {
		t.Fatalf("Open = %v, %v", b, err)
	}
	loc, _ = storage.Parse("fake-mem:broken")
	if _, err := loc.Open(t.Context()); err == nil || !strings.Contains(err.Error(), "opening repository location fake-mem:broken: cannot reach it") {
		t.Fatalf("Open of a broken location: %v", err)
	}
	var zero storage.Location
	if !zero.IsZero() || zero.String() != "" {
		t.Fatalf("zero Location: %q", zero.String())
	}
	if _, err := zero.Open(t.Context()); !errors.Is(err, storage.ErrInvalidLocation) {
		t.Fatalf("Open of the zero Location: %v", err)
	}
}

func TestRegisterRefuses(t *testing.T) {
	parse := func(string) (storage.Config, error) { return nil, nil }
	for name, p := range map[string]storage.Provider{
		"taken scheme":       {Scheme: "s3", Parse: parse},
		"one letter":         {Scheme: "c", Parse: parse},
		"upper case":         {Scheme: "Foo", Parse: parse},
		"bad character":      {Scheme: "a_b", Parse: parse},
		"no Parse":           {Scheme: "noparse"},
		"second path parser": {Scheme: "paths2", Paths: true, Parse: parse},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register (%s) did not panic", name)
				}
			}()
			storage.Register(p)
		}()
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"/plain/path":   "/plain/path",
		"s3://bucket/p": "s3://bucket/p",
		"s3://bucket/p?endpoint=http://127.0.0.1:7070&region=x": "s3://bucket/p?endpoint=http://127.0.0.1:7070&region=x",
		"s3://AKIA:topsecret@bucket/p":                          "s3://REDACTED@bucket/p",
		"s3://bucket/p?secret_key=topsecret&region=x":           "s3://bucket/p?secret_key=REDACTED&region=x",
		"s3://bucket/p?X-Amz-Signature=topsecret":               "s3://bucket/p?X-Amz-Signature=REDACTED",
		"s3://bucket/p?endpoint=http://u:topsecret@host:1":      "s3://bucket/p?endpoint=http%3A%2F%2FREDACTED%40host%3A1",
		"s3://u:topsecret@bucket/%zz":                           "s3://REDACTED@bucket/%zz",
		"s3://bucket/p?token=topsecret%zz&a%zz=topsecret":       "s3://bucket/p?token=REDACTED&REDACTED",
	} {
		got := storage.Redact(in)
		if got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(got, "topsecret") {
			t.Errorf("Redact(%q) = %q shows the secret", in, got)
		}
	}
}
