package rclone_test

import (
	"testing"

	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/rclone"
	"github.com/cofferhq/coffer/storage/rclone/rclonetest"
	"github.com/cofferhq/coffer/storage/storagetest"
)

func TestParse(t *testing.T) {
	for _, ok := range []string{"rclone:gdrive:coffer", "RCLONE:gdrive:", "rclone:/abs/dir", "rclone::sftp,host=h,user=u:dir"} {
		loc, err := storage.Parse(ok)
		if err != nil {
			t.Errorf("Parse(%q): %v", ok, err)
			continue
		}
		if again, err := storage.Parse(loc.String()); err != nil || again.String() != loc.String() {
			t.Errorf("Parse(%q).String() = %q does not parse back: %v", ok, loc.String(), err)
		}
	}
	for _, bad := range []string{"rclone:", "rclone:gdrive", "rclone::sftp,host=h,pass=x:dir", "rclone:a[b]:c"} {
		if _, err := storage.Parse(bad); err == nil {
			t.Errorf("Parse(%q) succeeded, want an error", bad)
		}
	}
}

func conformance(t *testing.T, newRemote func(t *testing.T) string) {
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		b, err := rclone.Open(t.Context(), newRemote(t))
		if err != nil {
			t.Fatal(err)
		}
		if b.Capabilities().AtomicCreate {
			t.Fatal("an rclone remote claims AtomicCreate")
		}
		return b
	})
}

// TestConformanceLocal runs the suite on rclone's local backend.
func TestConformanceLocal(t *testing.T) {
	rclonetest.Require(t)
	conformance(t, func(t *testing.T) string { return t.TempDir() })
}

// TestConformanceSFTP runs the suite on an SFTP remote served by
// OpenSSH's sshd on 127.0.0.1.
func TestConformanceSFTP(t *testing.T) {
	s := rclonetest.StartSFTP(t)
	n := 0
	conformance(t, func(t *testing.T) string { n++; return s.Remote(t, n) })
}

// TestConformanceWebDAV runs the suite on a WebDAV remote served by
// Apache httpd's mod_dav on 127.0.0.1.
func TestConformanceWebDAV(t *testing.T) {
	s := rclonetest.StartWebDAV(t)
	n := 0
	conformance(t, func(t *testing.T) string { n++; return s.Remote(t, n) })
}
