package vault_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/recovery"
	"github.com/cofferhq/coffer/internal/server/ceremony"
	"github.com/cofferhq/coffer/internal/server/devfleet"
	"github.com/cofferhq/coffer/internal/server/vault"
)

// TestMigrateV1ToThreshold is the upgrade path of PROTOCOL.md §7 (on a
// one-replica development fleet, which restarts in place; 1 of 1 is a
// threshold too, and the path is the same for n replicas): a
// version-1 fleet (every replica holds the OPRF seed) is given OPRF shares;
// its version-1 records still log in, and the vault asks each client at its
// next recovery to register again under the same password, which moves the
// record to the threshold OPRF without the user doing anything. Once every
// record moved, the operator drops the seed from the secrets: the moved
// record still logs in, through the replicas' shares alone.
func TestMigrateV1ToThreshold(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	start := func(threshold bool) *devfleet.Fleet {
		f, err := devfleet.Start(ctx, devfleet.Options{Dir: dir, Threshold: threshold})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	key := backupkey.New()
	f := start(false)
	if _, err := client(t, f, "mia").Enroll(ctx, good, key, recovery.Authorization{}); err != nil {
		t.Fatal(err)
	}
	f.Close()

	f = start(true) // shares dealt; the seed is still there
	got, s, err := client(t, f, "mia").Recover(ctx, good)
	if err != nil || !got.Equal(key) {
		t.Fatalf("a version-1 record on the upgraded fleet: %v", err)
	}
	if !s.Reenrolled {
		t.Fatal("the vault did not ask the client to move its version-1 record")
	}
	if _, s, err = client(t, f, "mia").Recover(ctx, good); err != nil || s.Reenrolled {
		t.Fatalf("the moved record: %v, reenrolled again %v", err, s != nil && s.Reenrolled)
	}
	f.Close()

	// The operator drops the OPRF seed.
	path := filepath.Join(dir, "fleet", ceremony.SecretsFile)
	sec, err := vault.LoadSecrets(path)
	if err != nil {
		t.Fatal(err)
	}
	sec.OPAQUE.OPRFSeed = nil
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := sec.Save(path); err != nil {
		t.Fatal(err)
	}
	f = start(true)
	defer f.Close()
	if got, _, err = client(t, f, "mia").Recover(ctx, good); err != nil || !got.Equal(key) {
		t.Fatalf("the moved record without the seed: %v", err)
	}
	if _, _, err := client(t, f, "mia").Recover(ctx, bad); err == nil {
		t.Fatal("a wrong password recovered the key without the seed")
	}
}
