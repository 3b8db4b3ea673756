package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCrashDuringBackup kills real 'coffer backup' processes (SIGKILL) at
// random points of a backup of about 200 MB to a local repository. After
// every kill the newest committed backup must restore byte for byte and
// 'coffer verify' must pass; a final backup then completes.
func TestCrashDuringBackup(t *testing.T) {
	files, fileSize, kills := 40, 5<<20, 8 // 200 MiB
	if testing.Short() {
		files, kills = 8, 3
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	repo := filepath.Join(dir, "repo")
	e := newEnv(t)
	e.ok("init", "--repo", repo)

	// Backup 1: a small tree.
	for i := range 10 {
		writeRandom(t, filepath.Join(data, "base", fmt.Sprintf("f%02d", i)), rng, 100<<10)
	}
	e.ok("backup", data)
	expected := map[uint64]snapshot{1: snap(t, data)}
	newest := uint64(1)

	// Then the big one, killed again and again.
	buf := make([]byte, fileSize)
	for i := range files {
		fillRandom(rng, buf)
		if err := os.MkdirAll(filepath.Join(data, "big"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(data, "big", fmt.Sprintf("b%02d", i)), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	current := snap(t, data)

	// The first run of the big backup goes to the end, timed, to place
	// the kills.
	start := time.Now()
	full := e.ok("backup", "--json", data)
	took := time.Since(start)
	var s struct {
		Generation struct {
			Number uint64 `json:"generation"`
		} `json:"generation"`
	}
	if err := json.Unmarshal([]byte(full.stdout), &s); err != nil {
		t.Fatal(err)
	}
	newest = s.Generation.Number
	expected[newest] = current
	t.Logf("a full backup of %d MiB took %v", files*fileSize>>20, took)

	for k := range kills {
		// New content in half of the big files, so the attempt has real
		// work to do.
		for range max(files/2, 1) {
			fillRandom(rng, buf)
			name := filepath.Join(data, "big", fmt.Sprintf("b%02d", rng.IntN(files)))
			if err := os.WriteFile(name, buf, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		current = snap(t, data)
		// Kill somewhere in the first 70% of a full run's time: most
		// attempts redo about half of the work.
		delay := time.Duration(rng.Int64N(int64(took)*7/10)) + 10*time.Millisecond
		finished := killAfter(t, e, delay, "backup", data)
		gens := listGenerations(t, e)
		last := gens[len(gens)-1]
		switch {
		case last == newest:
		case last == newest+1:
			// The kill came after the commit (or the run finished).
			newest = last
			expected[newest] = current
		default:
			t.Fatalf("after kill %d: backups %v, newest known %d", k, gens, newest)
		}
		t.Logf("kill %d after %v: finished=%v, newest backup %d", k, delay, finished, newest)

		// The newest backup restores byte for byte, and verify passes.
		out := filepath.Join(dir, fmt.Sprintf("restore-%d", k))
		e.ok("restore", "--backup", fmt.Sprint(newest), "--to", out)
		sameTree(t, expected[newest], filepath.Join(out, "data"))
		if err := os.RemoveAll(out); err != nil {
			t.Fatal(err)
		}
		e.ok("verify")
	}

	// A backup that is left alone completes, and restores.
	var fin struct {
		Generation struct {
			Number uint64 `json:"generation"`
		} `json:"generation"`
	}
	e.okJSON(&fin, "backup", data)
	if fin.Generation.Number != newest+1 {
		t.Fatalf("final backup is %d, want %d", fin.Generation.Number, newest+1)
	}
	out := filepath.Join(dir, "restore-final")
	e.ok("restore", "--to", out)
	sameTree(t, snap(t, data), filepath.Join(out, "data"))
	e.ok("verify")
}

// killAfter starts coffer with args and kills it with SIGKILL after delay,
// unless it ends first. It reports whether the process ended by itself.
func killAfter(t *testing.T, e *env, delay time.Duration, args ...string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.command(ctx, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("coffer %v failed before it was killed: %v\n%s", args, err, out.String())
		}
		return true
	case <-time.After(delay):
		cmd.Process.Kill() // SIGKILL
		<-done
		return false
	}
}

func listGenerations(t *testing.T, e *env) []uint64 {
	t.Helper()
	var list listOutput
	e.okJSON(&list, "list")
	var gens []uint64
	for _, g := range list.Generations {
		gens = append(gens, g.Number)
	}
	if len(gens) == 0 {
		t.Fatal("no backups")
	}
	return gens
}
