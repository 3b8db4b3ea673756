package devfleet

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestStartReplicasRange(t *testing.T) {
	for _, n := range []int{-1, 10} {
		if f, err := Start(context.Background(), Options{Dir: t.TempDir(), Replicas: n}); err == nil {
			f.Close()
			t.Errorf("Replicas %d: started", n)
		}
	}
}

// TestStartFresh: a restart keeps the replicas' state unless Fresh, and
// keeps the keys either way.
func TestStartFresh(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "replica-r1", "marker")
	start := func(fresh bool) *Fleet {
		t.Helper()
		f, err := Start(context.Background(), Options{Dir: dir, Fresh: fresh})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		return f
	}
	first := start(false)
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	start(false)
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("a restart without Fresh lost the replica's state: %v", err)
	}
	again := start(true)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("Fresh kept the replica's state")
	}
	if again.RootPublic != first.RootPublic || again.TokenKeyPath != filepath.Join(dir, TokenKeyFile) {
		t.Fatalf("Fresh changed the keys: root %q → %q, token key %q", first.RootPublic, again.RootPublic, again.TokenKeyPath)
	}
	if _, err := os.Stat(again.TokenKeyPath); err != nil {
		t.Fatal(err)
	}
}
