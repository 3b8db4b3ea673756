// Package s3test runs a real S3 server, versitygw, for tests.
//
// Start looks for the versitygw binary in PATH, $GOBIN and $GOPATH/bin. If
// it is missing the test is skipped, or fails when the environment variable
// CI is "true": install it with .ci/install-versitygw.sh.
package s3test

import (
	"bytes"
	"context"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
)

// Credentials of the server's root account, also put in the environment
// by Start.
const (
	AccessKey = "testkey"
	SecretKey = "testsecret123"
	Bucket    = "coffer-test"
	// Version is the versitygw release the tests are written against.
	Version = "v1.8.0"
)

const startTimeout = 15 * time.Second

// Server is a running versitygw.
type Server struct {
	// Endpoint is the server's base URL, http://127.0.0.1:<port>.
	Endpoint string
	// Bucket exists and is empty at start.
	Bucket string

	cmd      *exec.Cmd
	exited   chan struct{}
	output   *syncBuffer
	stopOnce sync.Once
}

// Start starts a server for the test and returns its endpoint and bucket.
// See StartServer.
func Start(t testing.TB) (endpoint, bucket string) {
	s := StartServer(t)
	return s.Endpoint, s.Bucket
}

// StartServer starts versitygw on 127.0.0.1 with a fresh directory,
// creates Bucket in it, and points the AWS environment variables at the
// server's account (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION;
// AWS_PROFILE, AWS_SESSION_TOKEN and AWS_ENDPOINT_URL cleared, shared
// config files and the EC2 metadata service disabled) with t.Setenv, so
// the test must not be parallel. The server is stopped when the test ends.
func StartServer(t testing.TB) *Server {
	t.Helper()
	bin := findBinary(t)
	root := t.TempDir()

	setenv := func(k, v string) { t.Setenv(k, v) }
	setenv("AWS_ACCESS_KEY_ID", AccessKey)
	setenv("AWS_SECRET_ACCESS_KEY", SecretKey)
	setenv("AWS_REGION", "us-east-1")
	setenv("AWS_SESSION_TOKEN", "")
	setenv("AWS_PROFILE", "")
	setenv("AWS_ENDPOINT_URL", "")
	setenv("AWS_ENDPOINT_URL_S3", "")
	setenv("AWS_CONFIG_FILE", filepath.Join(root, "no-aws-config"))
	setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(root, "no-aws-credentials"))
	setenv("AWS_EC2_METADATA_DISABLED", "true")

	var lastErr error
	for range 3 { // the free port may be taken before versitygw binds it
		s, err := start(t, bin, root)
		if err == nil {
			t.Cleanup(func() {
				s.Stop()
				if t.Failed() {
					t.Logf("versitygw output:\n%s", s.output.String())
				}
			})
			if err := s.createBucket(t.Context()); err != nil {
				t.Fatalf("s3test: creating bucket %q: %v", Bucket, err)
			}
			return s
		}
		lastErr = err
	}
	t.Fatalf("s3test: starting versitygw: %v", lastErr)
	return nil
}

func findBinary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	for _, p := range filepath.SplitList(build.Default.GOPATH) {
		dirs = append(dirs, filepath.Join(p, "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "versitygw")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("versitygw (the S3 server for tests) not found in PATH or %v: run .ci/install-versitygw.sh (go install github.com/versity/versitygw/cmd/versitygw@%s)", dirs, Version)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func start(t testing.TB, bin, root string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(root, "gw-")
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "--access", AccessKey, "--secret", SecretKey, "--port", addr, "--quiet", "posix", dir)
	// Keep the server's own environment free of ours (ROOT_ACCESS_KEY etc.).
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + root}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{Endpoint: "http://" + addr, Bucket: Bucket, cmd: cmd, exited: make(chan struct{}), output: out}
	go func() { cmd.Wait(); close(s.exited) }()

	deadline := time.Now().Add(startTimeout)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-s.exited:
			return nil, fmt.Errorf("versitygw exited at start: %s\n%s", cmd.ProcessState, out.String())
		default:
		}
		resp, err := client.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return s, nil // any HTTP answer (403 without credentials) will do
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("versitygw did not answer on %s within %v: %v\n%s", addr, startTimeout, err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills the server and waits for it to exit. Requests to it fail
// with "connection refused" from then on. It is safe to call more than
// once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.cmd.Process.Kill()
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
		}
	})
}

// Client returns an SDK client of the server with the root account's
// credentials, for tests that look behind a backend's back.
func (s *Server) Client() *awss3.Client {
	return awss3.New(awss3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
	})
}

func (s *Server) createBucket(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	_, err := s.Client().CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String(s.Bucket)})
	return err
}

// syncBuffer collects the server's output.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 1<<20 {
		return len(p), nil // enough to diagnose
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
