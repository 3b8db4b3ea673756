//go:build unix

package faultharness

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/server/serve"
)

func TestSnapshotSettings(t *testing.T) {
	t.Setenv("COFFER_HARNESS_SNAPSHOTS", "")
	s, err := snapshotSettings()
	if err != nil || s == nil || *s != DefaultSnapshots {
		t.Fatalf("unset: %+v, %v; want %+v", s, err, DefaultSnapshots)
	}
	t.Setenv("COFFER_HARNESS_SNAPSHOTS", "default")
	if s, err := snapshotSettings(); err != nil || s != nil {
		t.Fatalf("default: %+v, %v; want nil (no config file)", s, err)
	}
	t.Setenv("COFFER_HARNESS_SNAPSHOTS", "1024/5s/256")
	if s, err := snapshotSettings(); err != nil || *s != (SnapshotSettings{1024, 5 * time.Second, 256}) {
		t.Fatalf("1024/5s/256: %+v, %v", s, err)
	}
	for _, bad := range []string{"1024/5s", "0/5s/256", "1024/x/256", "1024/5s/0", "a/5s/1"} {
		t.Setenv("COFFER_HARNESS_SNAPSHOTS", bad)
		if _, err := snapshotSettings(); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The file holds 'metrics_listen', the token settings, 'pacing' and
// 'snapshots', with the field names and the duration form of
// OPERATIONS.md's config table, and serve reads it.
func TestWriteReplicaConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.json")
	if err := writeReplicaConfig(path, replicaFile{Metrics: "127.0.0.1:9", TokenKey: "/app.pub", Snapshots: &SnapshotSettings{256, 1500 * time.Millisecond, 64}}); err != nil {
		t.Fatal(err)
	}
	c, err := serve.LoadConfig(path)
	if err != nil || c.AppTokenKey != "/app.pub" || c.VaultAudience != vaultAudience || c.MetricsListen != "127.0.0.1:9" || c.Pacing == nil || c.Pacing.Base.Duration != 0 {
		t.Fatalf("LoadConfig: %+v, %v", c, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	sn, ok := doc["snapshots"].(map[string]any)
	if !ok || doc["metrics_listen"] != "127.0.0.1:9" || sn["threshold"] != 256.0 || sn["interval"] != "1.5s" || sn["trailing_logs"] != 64.0 || len(sn) != 3 {
		t.Fatalf("config file %s", b)
	}
	if err := writeReplicaConfig(path, replicaFile{Metrics: "127.0.0.1:9", Secrets: "/s.sealed"}); err != nil {
		t.Fatal(err)
	}
	c, err = serve.LoadConfig(path)
	if err != nil || c.MetricsListen != "127.0.0.1:9" || c.Secrets != "/s.sealed" || c.Snapshots != nil {
		t.Fatalf("serve reads %+v, %v", c, err)
	}
}

func TestSnapshotLogs(t *testing.T) {
	dir := t.TempDir()
	r1 := `=== 2026-01-01T00:00:00Z /bin/coffer: vault serve
{"time":"…","level":"INFO","msg":"snapshot complete up to","replica":"r1","component":"raft","index":417}
{"time":"…","level":"INFO","msg":"snapshot complete up to","replica":"r1","component":"raft","index":760}
{"time":"…","level":"ERROR","msg":"failed to install snapshot","replica":"r1","component":"raft","peer":"r2","error":"EOF"}
`
	r6 := `{"time":"…","level":"INFO","msg":"Installed remote snapshot","replica":"r6","component":"raft"}
{"time":"…","level":"WARN","msg":"state machine is behind the newest snapshot; restoring it","replica":"r6","applied":3,"snapshot_index":9}
{"time":"…","level":"INFO","msg":"snapshot complete up to","replica":"r6","component":"raft","index":900}
`
	for name, text := range map[string]string{"vault-r1.log": r1, "vault-r6.log": r6, "relay.log": `"snapshot complete up to"`} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := SnapshotLogs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("replicas %v", got)
	}
	if c := got["r1"]; c.Taken != 2 || c.Installed != 0 || c.AtStart != 0 || c.Failed != 1 || len(c.FirstFailures) != 1 {
		t.Errorf("r1: %+v", c)
	}
	if c := got["r6"]; c.Taken != 1 || c.Installed != 1 || c.AtStart != 1 || c.Failed != 0 {
		t.Errorf("r6: %+v", c)
	}
}

func TestWALSegments(t *testing.T) {
	dir := t.TempDir()
	if n, _, err := walSegments(dir); err != nil || n != 0 {
		t.Fatalf("no raft directory: %d, %v", n, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "raft"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"00000000000000000001-0000000000000000.wal", "wal-meta.db"} {
		if err := os.WriteFile(filepath.Join(dir, "raft", f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n, first, err := walSegments(dir)
	if err != nil || n != 1 || first != 1 {
		t.Fatalf("one segment: %d from %d, %v", n, first, err)
	}
	if (JoinLog{Segments: n, FirstBase: first}).StartCompacted() {
		t.Error("a single segment from index 1 counts as compacted")
	}
	if err := os.WriteFile(filepath.Join(dir, "raft", "00000000000000015282-0000000000000003.wal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if n, first, _ = walSegments(dir); n != 2 || first != 1 || !(JoinLog{Segments: n, FirstBase: first}).StartCompacted() {
		t.Errorf("two segments: %d from %d", n, first)
	}
	os.Remove(filepath.Join(dir, "raft", "00000000000000000001-0000000000000000.wal"))
	if n, first, _ = walSegments(dir); n != 1 || first != 15282 || !(JoinLog{Segments: n, FirstBase: first}).StartCompacted() {
		t.Errorf("the first segment deleted: %d from %d", n, first)
	}
}
