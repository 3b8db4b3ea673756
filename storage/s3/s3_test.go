package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/retry"
	"github.com/cofferhq/coffer/storage/s3/s3test"
	"github.com/cofferhq/coffer/storage/storagetest"
)

var prefixes atomic.Int64

// newBackend returns a backend of the server under a prefix of its own.
func newBackend(t *testing.T, srv *s3test.Server) *Backend {
	t.Helper()
	b, err := New(t.Context(), Config{
		Bucket:    srv.Bucket,
		Prefix:    fmt.Sprintf("test-%d", prefixes.Add(1)),
		Endpoint:  srv.Endpoint,
		PathStyle: true,
		PartSize:  MinPartSize,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	srv := s3test.StartServer(t)
	storagetest.Run(t, func(t *testing.T) storage.Backend { return newBackend(t, srv) })
}

// TestConformanceRetry runs the suite through the retry wrapper, as
// retry.Open sets it up.
func TestConformanceRetry(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	srv := s3test.StartServer(t)
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		return retry.New(newBackend(t, srv), retry.Policy{Attempts: 3, Base: 10 * time.Millisecond})
	})
}

func TestLayout(t *testing.T) {
	srv := s3test.StartServer(t)
	b := newBackend(t, srv)
	if err := b.Put(t.Context(), "data/ab/x", strings.NewReader("hi"), 2); err != nil {
		t.Fatal(err)
	}
	key := b.prefix + "data/ab/x"
	if !strings.HasPrefix(key, "test-") || !strings.HasSuffix(b.prefix, "/") {
		t.Fatalf("key = %q", key)
	}
	out, err := srv.Client().HeadObject(t.Context(), &awss3.HeadObjectInput{Bucket: &srv.Bucket, Key: &key})
	if err != nil || aws.ToInt64(out.ContentLength) != 2 {
		t.Fatalf("HeadObject(%q) = %v, %v", key, out, err)
	}
	// A folder marker made by another tool is not an object.
	marker := b.prefix + "data/"
	if _, err := srv.Client().PutObject(t.Context(), &awss3.PutObjectInput{Bucket: &srv.Bucket, Key: &marker, Body: strings.NewReader("")}); err != nil {
		t.Fatal(err)
	}
	var names []string
	b.List(t.Context(), "", func(i storage.ObjectInfo) error { names = append(names, i.Name); return nil })
	if len(names) != 1 || names[0] != "data/ab/x" {
		t.Fatalf("List = %q, want [data/ab/x]", names)
	}
	want := fmt.Sprintf("s3://%s/%s (endpoint %s)", srv.Bucket, strings.TrimSuffix(b.prefix, "/"), srv.Endpoint)
	if b.Location() != want {
		t.Errorf("Location() = %q, want %q", b.Location(), want)
	}
}

// TestConditionalComplete checks that the server honours If-None-Match on
// CompleteMultipartUpload, which makes a large PutIfAbsent atomic.
func TestConditionalComplete(t *testing.T) {
	srv := s3test.StartServer(t)
	b := newBackend(t, srv)
	b.noPrecheck = true
	ctx := t.Context()
	size := MinPartSize + 1<<20 // two parts
	first := storagetest.Data(1, size)
	if err := b.Put(ctx, "m", bytes.NewReader(first), int64(size)); err != nil {
		t.Fatal(err)
	}
	err := b.PutIfAbsent(ctx, "m", bytes.NewReader(storagetest.Data(2, size)), int64(size))
	if !errors.Is(err, storage.ErrExist) {
		t.Fatalf("conditional CompleteMultipartUpload over an existing object: error = %v, want ErrExist", err)
	}
	rc, err := b.Get(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, first) {
		t.Fatalf("object changed by a refused PutIfAbsent (err %v)", err)
	}
	wantNoUploads(t, srv)

	// Racing writers, all past the (skipped) HeadObject: one wins.
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = b.PutIfAbsent(ctx, "race", bytes.NewReader(storagetest.Data(uint64(i), size)), int64(size))
		})
	}
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, storage.ErrExist):
			t.Errorf("writer %d: %v", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d writers won, want 1 (errors %v)", wins, errs)
	}
	wantNoUploads(t, srv)
}

// wantNoUploads checks that failed multipart uploads were aborted.
func wantNoUploads(t *testing.T, srv *s3test.Server) {
	t.Helper()
	out, err := srv.Client().ListMultipartUploads(t.Context(), &awss3.ListMultipartUploadsInput{Bucket: &srv.Bucket})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Uploads) != 0 {
		t.Fatalf("%d multipart uploads left behind", len(out.Uploads))
	}
}

func TestFailedUploadsAborted(t *testing.T) {
	srv := s3test.StartServer(t)
	b := newBackend(t, srv)
	size := int64(3 * MinPartSize)
	body := failAt{bytes.NewReader(storagetest.Data(3, int(size))), 2 * MinPartSize}
	err := b.Put(t.Context(), "x", body, size)
	if err == nil || errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Put of a failing body: error = %v, want a non-retryable error", err)
	}
	wantNoUploads(t, srv)

	ctx, cancel := context.WithCancel(t.Context())
	slow := slowReader{r: bytes.NewReader(storagetest.Data(3, int(size))), cancel: cancel}
	if err := b.Put(ctx, "y", &slow, size); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put canceled midway: error = %v, want context.Canceled", err)
	}
	wantNoUploads(t, srv)
}

type failAt struct {
	r  io.ReaderAt
	at int64
}

func (f failAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.at {
		return 0, errors.New("disk on fire")
	}
	return f.r.ReadAt(p, off)
}

// slowReader cancels the upload once some data has been read.
type slowReader struct {
	r      io.ReaderAt
	n      atomic.Int64
	cancel func()
}

func (s *slowReader) ReadAt(p []byte, off int64) (int, error) {
	if s.n.Add(int64(len(p))) > MinPartSize {
		s.cancel()
	}
	return s.r.ReadAt(p, off)
}

func TestServerStopped(t *testing.T) {
	srv := s3test.StartServer(t)
	b := newBackend(t, srv)
	ctx := t.Context()
	if err := b.Put(ctx, "x", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	srv.Stop()

	start := time.Now()
	big := storagetest.Data(1, MinPartSize+1)
	checks := map[string]error{
		"Stat":        func() error { _, err := b.Stat(ctx, "x"); return err }(),
		"Get":         func() error { _, err := b.Get(ctx, "x"); return err }(),
		"Put":         b.Put(ctx, "y", strings.NewReader("y"), 1),
		"Put large":   b.Put(ctx, "y", bytes.NewReader(big), int64(len(big))),
		"PutIfAbsent": b.PutIfAbsent(ctx, "y", strings.NewReader("y"), 1),
		"Delete":      b.Delete(ctx, "x"),
		"Check":       b.Check(ctx),
	}
	for op, err := range checks {
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("%s with the server stopped: error = %v, want ErrUnavailable", op, err)
		} else if !strings.Contains(err.Error(), srv.Endpoint) {
			t.Errorf("%s error %q does not say which server", op, err)
		}
	}
	t.Logf("example: %v", checks["Stat"])
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("failing took %v", d)
	}

	attempts := 0
	rb := retry.New(b, retry.Policy{Attempts: 4, Base: 20 * time.Millisecond, Max: 100 * time.Millisecond,
		OnRetry: func(string, string, int, error, time.Duration) { attempts++ }})
	start = time.Now()
	_, err := rb.Stat(ctx, "x")
	if !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), "gave up after 4 attempts") {
		t.Fatalf("retried Stat: error = %v, want ErrUnavailable after 4 attempts", err)
	}
	if attempts != 3 {
		t.Errorf("retried %d times, want 3", attempts)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("giving up took %v", d)
	}
}

func TestWrongCredentials(t *testing.T) {
	srv := s3test.StartServer(t)
	const wrong = "wrong-secret-do-not-print"
	t.Setenv("AWS_SECRET_ACCESS_KEY", wrong)
	b := newBackend(t, srv)
	rb := retry.New(b, retry.Policy{Attempts: 3, Base: time.Millisecond,
		OnRetry: func(op, _ string, _ int, err error, _ time.Duration) { t.Errorf("%s retried after %v", op, err) }})
	ctx := t.Context()
	checks := map[string]error{
		"Put":  rb.Put(ctx, "x", strings.NewReader("x"), 1),
		"Stat": func() error { _, err := rb.Stat(ctx, "x"); return err }(),
		"List": rb.List(ctx, "", func(storage.ObjectInfo) error { return nil }),
	}
	for op, err := range checks {
		if !errors.Is(err, ErrAccessDenied) || errors.Is(err, storage.ErrUnavailable) || errors.Is(err, storage.ErrNotExist) {
			t.Errorf("%s with a wrong secret: error = %v, want ErrAccessDenied only", op, err)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, wrong) {
			t.Errorf("%s error shows the secret: %s", op, msg)
		}
		if !strings.Contains(msg, "AWS_ACCESS_KEY_ID") || !strings.Contains(msg, srv.Endpoint) {
			t.Errorf("%s error does not say what to check: %s", op, msg)
		}
	}
	t.Logf("example: %v", checks["Put"])
}

func TestNoCredentials(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "")
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "")
	b, err := New(t.Context(), Config{Bucket: "b", Endpoint: "http://127.0.0.1:1", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Put(t.Context(), "x", strings.NewReader("x"), 1)
	if !errors.Is(err, ErrCredentials) || errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Put without credentials: error = %v, want ErrCredentials", err)
	}
	t.Logf("example: %v", err)
}

func TestMissingBucket(t *testing.T) {
	srv := s3test.StartServer(t)
	b, err := New(t.Context(), Config{Bucket: "no-such-bucket", Endpoint: srv.Endpoint, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	checks := map[string]error{
		"Put":   b.Put(ctx, "x", strings.NewReader("x"), 1),
		"Get":   func() error { _, err := b.Get(ctx, "x"); return err }(),
		"List":  b.List(ctx, "", func(storage.ObjectInfo) error { return nil }),
		"Check": b.Check(ctx),
	}
	for op, err := range checks {
		if !errors.Is(err, ErrNoSuchBucket) || errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), "create it") {
			t.Errorf("%s on a missing bucket: error = %v, want ErrNoSuchBucket saying to create it", op, err)
		}
	}
	t.Logf("example: %v", checks["Put"])
	if err := newBackend(t, srv).Check(ctx); err != nil {
		t.Errorf("Check of an existing bucket: %v", err)
	}
}

func TestConfig(t *testing.T) {
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_ENDPOINT_URL", "")
	t.Setenv("AWS_ENDPOINT_URL_S3", "")
	ctx := t.Context()
	b, err := New(ctx, Config{Bucket: "bkt", Prefix: "/backups/host1/"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.Location(), "s3://bkt/backups/host1 (region us-east-1)"; got != want {
		t.Errorf("Location() = %q, want %q", got, want)
	}
	if b.prefix != "backups/host1/" || b.partSize != DefaultPartSize || b.concurrency != DefaultConcurrency {
		t.Errorf("prefix %q, part size %d, concurrency %d", b.prefix, b.partSize, b.concurrency)
	}
	b, err = New(ctx, Config{Bucket: "bkt", Region: "eu-west-3", Endpoint: "https://s3.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.Location(), "s3://bkt (endpoint https://s3.example.com)"; got != want {
		t.Errorf("Location() = %q, want %q", got, want)
	}
	if r := b.client.Options().Region; r != "eu-west-3" {
		t.Errorf("region = %q", r)
	}
	for _, c := range []Config{
		{},
		{Bucket: "a/b"},
		{Bucket: "b", Prefix: "a/../b"},
		{Bucket: "b", PartSize: 1 << 20},
		{Bucket: "b", Concurrency: -1},
		{Bucket: "b", Endpoint: "ftp://x"},
		{Bucket: "b", Endpoint: "127.0.0.1:7070"},
		{Bucket: "b", Endpoint: "http://user:topsecret@host"},
	} {
		_, err := New(ctx, c)
		if err == nil {
			t.Errorf("New(%+v) succeeded", c)
		} else if strings.Contains(err.Error(), "topsecret") {
			t.Errorf("New error shows the password: %v", err)
		}
	}
}
