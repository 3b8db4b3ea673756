// Package attack is Coffer's attack suite: each test drives one attack a
// party inside the system could make on the guess limit — the relay, anyone
// who reaches a replica's port, the network between client and vault, a
// client's own software — against a fleet of real `coffer vault serve`
// processes with mutual TLS and a real relay (the fault harness's cluster),
// and asserts that the attack is refused. SECURITY.md's threat table names
// the test for each threat. Attacks whose honest level is the state machine
// (a forged Raft entry's clock, the replicated MAC) are tested in
// internal/server/vaultstate (insider_test.go).
//
// The tests share one fleet of three replicas (started in TestMain, about
// five seconds) and use an account of their own each.
package attack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/faultharness"
	"github.com/cofferhq/coffer/internal/server/serve"
)

var (
	fleet    *faultharness.Cluster
	fleetDir string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "coffer-attack-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, err := faultharness.BuildCoffer(ctx, "../..", dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fleetDir = filepath.Join(dir, "cluster")
	if err := os.MkdirAll(fleetDir, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Pacing as in production, in seconds: three guesses, then 1 s, 2 s.
	pacing := &serve.Pacing{Free: 3, Base: serve.Duration{Duration: time.Second}, Max: serve.Duration{Duration: 2 * time.Second}}
	fleet, err = faultharness.StartCluster(ctx, faultharness.Config{Replicas: 3, GuessLimit: 5, Dir: fleetDir, Bin: bin, Pacing: pacing})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the fleet:", err)
		return 1
	}
	defer fleet.Close()
	if _, err := fleet.WaitLeader(ctx, 30*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// deadline is a context for one attack.
func deadline(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
