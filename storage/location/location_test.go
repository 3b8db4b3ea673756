package location

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/retry"
	"github.com/cofferhq/coffer/storage/s3"
	"github.com/cofferhq/coffer/storage/s3/s3test"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		loc  string
		want Spec
	}{
		{"/var/backups/coffer", Spec{Kind: Local, Dir: "/var/backups/coffer"}},
		{"relative/dir", Spec{Kind: Local, Dir: "relative/dir"}},
		{"./x", Spec{Kind: Local, Dir: "./x"}},
		{"backup:2024", Spec{Kind: Local, Dir: "backup:2024"}},
		{"file:///var/backups/coffer", Spec{Kind: Local, Dir: "/var/backups/coffer"}},
		{"file://localhost/var/b", Spec{Kind: Local, Dir: "/var/b"}},
		{"file:///with%20space", Spec{Kind: Local, Dir: "/with space"}},
		{"s3://bucket", Spec{Kind: S3, S3: s3.Config{Bucket: "bucket"}}},
		{"S3://bucket/a/b/", Spec{Kind: S3, S3: s3.Config{Bucket: "bucket", Prefix: "a/b"}}},
		{"s3://bucket/prefix?endpoint=http://127.0.0.1:7070&region=us-east-1&path_style=true",
			Spec{Kind: S3, S3: s3.Config{Bucket: "bucket", Prefix: "prefix", Endpoint: "http://127.0.0.1:7070", Region: "us-east-1", PathStyle: true}}},
		{"s3://bucket/p?endpoint=https%3A%2F%2Fs3.example.com",
			Spec{Kind: S3, S3: s3.Config{Bucket: "bucket", Prefix: "p", Endpoint: "https://s3.example.com", PathStyle: true}}},
		{"s3://bucket/p?endpoint=https://s3.example.com&path_style=false&part_size=32MiB&concurrency=8",
			Spec{Kind: S3, S3: s3.Config{Bucket: "bucket", Prefix: "p", Endpoint: "https://s3.example.com", PartSize: 32 << 20, Concurrency: 8}}},
		{"s3://bucket?region=eu-west-3&part_size=5242880", Spec{Kind: S3, S3: s3.Config{Bucket: "bucket", Region: "eu-west-3", PartSize: 5 << 20}}},
	} {
		got, err := Parse(c.loc)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.loc, err)
		} else if got != c.want {
			t.Errorf("Parse(%q) = %+v, want %+v", c.loc, got, c.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for loc, want := range map[string]string{
		"":                                    "no repository location",
		"gs://bucket/x":                       `scheme "gs" is not one of file or s3`,
		"https://s3.amazonaws.com/bucket":     "s3://bucket/prefix",
		"file://host/x":                       "local path",
		"file:relative":                       "absolute path",
		"file:///x?y=1":                       "no parameters",
		"s3://":                               "no bucket",
		"s3:bucket":                           "no bucket",
		"s3://bucket:9000/x":                  "endpoint parameter",
		"s3://bucket?color=red":               `unknown parameter "color"`,
		"s3://bucket?path_style=maybe":        "path_style",
		"s3://bucket?part_size=lots":          "part_size",
		"s3://bucket?concurrency=0":           "concurrency",
		"s3://bucket?region=a&region=b":       "2 times",
		"s3://AKIAEXAMPLE:topsecret@bucket/x": "AWS_ACCESS_KEY_ID",
	} {
		_, err := Parse(loc)
		if err == nil {
			t.Errorf("Parse(%q) succeeded", loc)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) error %q does not mention %q", loc, err, want)
		}
		if strings.Contains(err.Error(), "topsecret") {
			t.Errorf("Parse(%q) error shows the secret: %v", loc, err)
		}
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
		got := Redact(in)
		if got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(got, "topsecret") {
			t.Errorf("Redact(%q) = %q shows the secret", in, got)
		}
	}
}

func TestOpenLocal(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	for _, loc := range []string{dir, "file://" + dir} {
		b, err := Open(t.Context(), loc)
		if err != nil {
			t.Fatal(err)
		}
		if b.Location() != dir {
			t.Errorf("Location() = %q, want %q", b.Location(), dir)
		}
		if _, ok := b.(storage.Syncer); !ok {
			t.Error("local backend from Open is not a Syncer")
		}
		if retry.Unwrap(b) == nil {
			t.Error("backend from Open is not wrapped in retry")
		}
	}
}

func TestOpenS3(t *testing.T) {
	srv := s3test.StartServer(t)
	loc := "s3://" + srv.Bucket + "/repo1?endpoint=" + srv.Endpoint
	b, err := Open(t.Context(), loc)
	if err != nil {
		t.Fatal(err)
	}
	if want := "s3://" + srv.Bucket + "/repo1 (endpoint " + srv.Endpoint + ")"; b.Location() != want {
		t.Errorf("Location() = %q, want %q", b.Location(), want)
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
	if _, err := Open(t.Context(), "s3://b?endpoint=http://u:topsecret@host"); err == nil || strings.Contains(err.Error(), "topsecret") {
		t.Fatalf("Open with credentials in the endpoint: %v", err)
	}
}
