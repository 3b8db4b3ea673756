// The tests of this file's fleet — attacks on the guess limit by a party
// inside the system (the relay, anyone who reaches a replica's port, the
// network between client and vault, a client's own software) — share one
// fleet of three real `coffer vault serve` processes with mutual TLS and a
// real relay (the fault harness's cluster, started in TestMain, about five
// seconds), and use an account of their own each. Attacks whose honest
// level is the state machine (a forged entry's clock, the replicated MAC)
// are tested in internal/server/vaultstate (insider_test.go).
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
	cluster  *faultharness.Cluster
	fleetDir string
	coffer   string // the binary the clusters run
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
	coffer = bin
	fleetDir = filepath.Join(dir, "cluster")
	if err := os.MkdirAll(fleetDir, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Pacing as in production, in seconds: three guesses, then 1 s, 2 s.
	pacing := &serve.Pacing{Free: 3, Base: serve.Duration{Duration: time.Second}, Max: serve.Duration{Duration: 2 * time.Second}}
	cluster, err = faultharness.StartCluster(ctx, faultharness.Config{Replicas: 3, GuessLimit: 5, Dir: fleetDir, Bin: bin, Pacing: pacing})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the fleet:", err)
		return 1
	}
	defer cluster.Close()
	if _, err := cluster.WaitLeader(ctx, 30*time.Second); err != nil {
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
