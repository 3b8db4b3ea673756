package e2e

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/storage/s3/s3test"
)

// s3URL is the location of a bucket on an S3-compatible server on
// loopback.
func s3URL(port int, bucket string) string {
	return fmt.Sprintf("s3://%s/repo?endpoint=%s&region=us-east-1", bucket, url.QueryEscape(fmt.Sprintf("http://127.0.0.1:%d", port)))
}

// TestS3Flow runs the command-line flow against a real S3 server
// (versitygw; skipped if it is not installed, except in CI): init, backup,
// list, restore on a new device, verify, prune, a tampered object, and the
// server gone.
func TestS3Flow(t *testing.T) {
	srv := s3test.StartServer(t) // sets the AWS_* credentials for the children too
	loc := fmt.Sprintf("s3://%s/backups/phone?endpoint=%s", srv.Bucket, url.QueryEscape(srv.Endpoint))
	dir, keyFile, phone, data, want := twoBackups(t, loc, 2500<<10)
	var list listOutput
	phone.okJSON(&list, "list")
	if strings.Contains(list.Repository, "testsecret") {
		t.Fatalf("a secret in the location shown: %s", list.Repository)
	}
	phone.ok("verify")

	laptop := newEnv(t)
	laptop.vars = []string{"COFFER_REPO=" + loc}
	out := filepath.Join(dir, "restored")
	laptop.ok("restore", "--key-file", keyFile, "--to", out)
	sameTree(t, want, filepath.Join(out, "data"))
	laptop.ok("verify", "--key-file", keyFile)

	// A wrong key.
	laptop.vars = append(laptop.vars, "COFFER_KEY=0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0001")
	laptop.want(3, "list")
	laptop.vars = laptop.vars[:1]

	phone.ok("prune", "--keep", "1")
	phone.okJSON(&list, "list")
	if len(list.Generations) != 1 {
		t.Fatalf("list after prune: %+v", list)
	}

	// The server gone: storage unreachable.
	srv.Stop()
	target := filepath.Join(dir, "after-stop")
	r := laptop.run("restore", "--key-file", keyFile, "--to", target)
	if r.code != 6 {
		t.Fatalf("restore with the server stopped: want exit 6, got %s", r)
	}
	nothingAt(t, target)
	if r := phone.run("backup", data); r.code != 6 {
		t.Fatalf("backup with the server stopped: want exit 6, got %s", r)
	}
}
