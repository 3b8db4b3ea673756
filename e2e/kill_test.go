package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startKilled starts coffer with args and kills it with SIGKILL as soon as
// ready reports true (polled every 2 ms), or fails the test if it ends
// first. It returns the combined output.
func startKilled(t *testing.T, e *env, ready func() bool, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := e.command(ctx, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case err := <-done:
			t.Fatalf("coffer %v ended (%v) before it could be killed:\n%s", args, err, out.String())
		case <-time.After(2 * time.Millisecond):
		}
		if ready() {
			cmd.Process.Kill()
			<-done
			return
		}
	}
}

func bigTree(t *testing.T, dir string, files int) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	for i := range files {
		writeRandom(t, filepath.Join(dir, fmt.Sprintf("f%02d", i)), rng, 5<<20)
	}
}

func stagingDirs(t *testing.T, dir string) []string {
	des, _ := os.ReadDir(dir)
	var out []string
	for _, de := range des {
		if strings.HasPrefix(de.Name(), ".coffer-restore-") {
			out = append(out, filepath.Join(dir, de.Name()))
		}
	}
	return out
}

// TestKilledRestoreStagingCleaned (bug 6): a restore killed with SIGKILL
// leaves a staging directory of decrypted data; the next restore into the
// same parent removes it and says so.
func TestKilledRestoreStagingCleaned(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	bigTree(t, data, 12)
	e := newEnv(t)
	e.ok("init", "--repo", filepath.Join(dir, "repo"))
	e.ok("backup", data)
	parent := filepath.Join(dir, "restores")
	os.Mkdir(parent, 0o755)
	startKilled(t, e, func() bool {
		for _, s := range stagingDirs(t, parent) {
			if des, _ := os.ReadDir(filepath.Join(s, "data")); len(des) > 1 {
				return true
			}
		}
		return false
	}, "restore", "--to", filepath.Join(parent, "one"))
	left := stagingDirs(t, parent)
	if len(left) != 1 {
		t.Fatalf("staging after the kill: %v", left)
	}
	time.Sleep(2500 * time.Millisecond) // past the grace for a restore being set up
	var s struct {
		CleanedStaging []string `json:"cleaned_staging"`
	}
	e.okJSON(&s, "restore", "--to", filepath.Join(parent, "two"))
	if len(s.CleanedStaging) != 1 || s.CleanedStaging[0] != left[0] {
		t.Fatalf("cleaned %v, want %v", s.CleanedStaging, left)
	}
	if got := stagingDirs(t, parent); len(got) != 0 {
		t.Fatalf("staging left: %v", got)
	}
	sameTree(t, snap(t, data), filepath.Join(parent, "two", "data"))
}

// TestKilledBackupResumesAndDoesNotBlockPrune (bug 6): the pieces a
// killed backup stored are not uploaded again, and its lock does not
// defer a prune.
func TestKilledBackupResumesAndDoesNotBlockPrune(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	repo := filepath.Join(dir, "repo")
	bigTree(t, data, 12)
	e := newEnv(t)
	e.ok("init", "--repo", repo)
	pieces := func() int { return len(objectsWithPrefix(t, repo, "data/")) }
	startKilled(t, e, func() bool { return pieces() >= 6 }, "backup", data)
	stored := pieces()
	if len(objectsWithPrefix(t, repo, "locks/")) != 1 {
		t.Fatal("the killed backup left no lock")
	}
	var b struct {
		NewPieces    int64 `json:"new_pieces"`
		ReusedPieces int64 `json:"reused_pieces"`
	}
	e.okJSON(&b, "backup", data)
	if b.ReusedPieces < int64(stored)-1 || b.NewPieces+b.ReusedPieces != 24 {
		t.Fatalf("resumed backup: %+v; the killed one had stored %d pieces", b, stored)
	}
	// Another killed backup, then a prune: not deferred.
	bigTree(t, filepath.Join(data, "more"), 6)
	n := pieces()
	startKilled(t, e, func() bool { return pieces() >= n+3 }, "backup", data)
	var p struct {
		SweepDeferred bool  `json:"sweep_deferred"`
		DeletedPieces int64 `json:"deleted_pieces"`
	}
	e.okJSON(&p, "prune", "--keep", "1")
	if p.SweepDeferred || p.DeletedPieces == 0 {
		t.Fatalf("prune after a killed backup: %+v", p)
	}
	e.ok("verify")
}
