package s3

import (
	"errors"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/retry"
	"github.com/cofferhq/coffer/storage/s3/s3test"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		loc       string
		want      Config
		canonical string
	}{
		{"s3://bucket", Config{Bucket: "bucket"}, "s3://bucket"},
		{"S3://bucket/a/b/", Config{Bucket: "bucket", Prefix: "a/b"}, "s3://bucket/a/b"},
		{"s3://bucket/prefix?endpoint=http://127.0.0.1:7070&region=us-east-1&path_style=true",
			Config{Bucket: "bucket", Prefix: "prefix", Endpoint: "http://127.0.0.1:7070", Region: "us-east-1", PathStyle: true},
			"s3://bucket/prefix?endpoint=http://127.0.0.1:7070&region=us-east-1"},
		{"s3://bucket/p?endpoint=https%3A%2F%2Fs3.example.com",
			Config{Bucket: "bucket", Prefix: "p", Endpoint: "https://s3.example.com", PathStyle: true},
			"s3://bucket/p?endpoint=https://s3.example.com"},
		{"s3://bucket/p?endpoint=https://s3.example.com&path_style=false&part_size=32MiB&concurrency=8",
			Config{Bucket: "bucket", Prefix: "p", Endpoint: "https://s3.example.com", PartSize: 32 << 20, Concurrency: 8},
			"s3://bucket/p?endpoint=https://s3.example.com&path_style=false&part_size=32MiB&concurrency=8"},
		{"s3://bucket?region=eu-west-3&part_size=5242880", Config{Bucket: "bucket", Region: "eu-west-3", PartSize: 5 << 20},
			"s3://bucket?region=eu-west-3&part_size=5MiB"},
		{"s3://bucket?part_size=5242881&path_style=true", Config{Bucket: "bucket", PartSize: 5<<20 + 1, PathStyle: true},
			"s3://bucket?path_style=true&part_size=5242881"},
		{"s3://bucket/with%20space/x%3Fy", Config{Bucket: "bucket", Prefix: "with space/x?y"},
			"s3://bucket/with%20space/x%3Fy"},
	} {
		loc, err := storage.Parse(c.loc)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.loc, err)
			continue
		}
		if got := loc.Config(); got != c.want {
			t.Errorf("Parse(%q) = %#v, want %#v", c.loc, got, c.want)
		}
		if loc.String() != c.canonical {
			t.Errorf("Parse(%q).String() = %q, want %q", c.loc, loc.String(), c.canonical)
		}
		if again, err := storage.Parse(loc.String()); err != nil || again.Config() != c.want {
			t.Errorf("Parse of the canonical %q = %v, %v; want %#v", loc.String(), again.Config(), err, c.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for loc, want := range map[string]string{
		"s3://":                                   "no bucket",
		"s3:bucket":                               "no bucket",
		"s3://bucket:9000/x":                      "endpoint parameter",
		"s3://bucket?color=red":                   `unknown parameter "color"`,
		"s3://bucket?path_style=maybe":            "path_style",
		"s3://bucket?part_size=lots":              "part_size",
		"s3://bucket?concurrency=0":               "concurrency",
		"s3://bucket?region=a&region=b":           "2 times",
		"s3://bucket?endpoint=ftp://host":         "invalid endpoint",
		"s3://AKIAEXAMPLE:topsecret@bucket/x":     "AWS_ACCESS_KEY_ID",
		"s3://b?endpoint=http://u:topsecret@host": "contains credentials",
	} {
		_, err := storage.Parse(loc)
		if err == nil {
			t.Errorf("Parse(%q) succeeded", loc)
			continue
		}
		if !errors.Is(err, storage.ErrInvalidLocation) || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) error %q does not mention %q", loc, err, want)
		}
		if strings.Contains(err.Error(), "topsecret") {
			t.Errorf("Parse(%q) error shows the secret: %v", loc, err)
		}
	}
}

func TestLocationOpen(t *testing.T) {
	srv := s3test.StartServer(t)
	loc, err := storage.Parse("s3://" + srv.Bucket + "/repo1?endpoint=" + srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	b, err := retry.Open(t.Context(), loc, retry.DefaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if want := "s3://" + srv.Bucket + "/repo1 (endpoint " + srv.Endpoint + ")"; b.Location() != want {
		t.Errorf("Location() = %q, want %q", b.Location(), want)
	}
	if _, ok := retry.Unwrap(b).(*Backend); !ok {
		t.Errorf("retry.Open gave %T, not a retrying *Backend", b)
	}
	if !b.Capabilities().AtomicCreate {
		t.Error("an S3 backend does not claim AtomicCreate")
	}
	if err := b.Put(t.Context(), "config", strings.NewReader("cfg"), 3); err != nil {
		t.Fatal(err)
	}
	if info, err := b.Stat(t.Context(), "config"); err != nil || info.Size != 3 {
		t.Fatalf("Stat = %+v, %v", info, err)
	}
	if _, err := b.Stat(t.Context(), "nope"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("Stat of a missing object: %v", err)
	}
}
