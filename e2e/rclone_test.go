package e2e

import (
	"path/filepath"
	"testing"

	"github.com/cofferhq/coffer/storage/rclone/rclonetest"
)

// TestRcloneFlow runs `coffer init --repo rclone:…`, a backup, an
// incremental backup, a restore on a new device and verify against real
// servers behind rclone remotes: Apache mod_dav (WebDAV) and OpenSSH
// (SFTP) on 127.0.0.1 (skipped if they or rclone are not installed,
// except in CI).
func TestRcloneFlow(t *testing.T) {
	for _, kind := range []string{"webdav", "sftp"} {
		t.Run(kind, func(t *testing.T) {
			var s *rclonetest.Server
			if kind == "webdav" {
				s = rclonetest.StartWebDAV(t)
			} else {
				s = rclonetest.StartSFTP(t) // RCLONE_CONFIG is set for the children too
			}
			loc := "rclone:" + s.Remote(t, 1)
			dir, keyFile, _, _, want := twoBackups(t, loc, 600<<10)
			laptop := newEnv(t)
			laptop.vars = []string{"COFFER_REPO=" + loc}
			out := filepath.Join(dir, "restored")
			laptop.ok("restore", "--key-file", keyFile, "--to", out)
			sameTree(t, want, filepath.Join(out, "data"))
			laptop.ok("verify", "--key-file", keyFile)
		})
	}
}
