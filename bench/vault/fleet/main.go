// Command fleet runs a benchmark vault fleet (N Raft replicas, each with its
// VaultService, and one relay, all on 127.0.0.1) in its own process, and
// writes what a load generator needs to a JSON settings file:
//
//	go run ./bench/vault/fleet -replicas 5 -settings /tmp/fleet.json -for 30m &
//	go run ./bench/vault -settings /tmp/fleet.json -accounts 2000 -concurrency 64 -duration 20s
//
// It serves net/http/pprof on the -pprof address (for CPU profiles of the
// fleet under load) and exits on SIGINT/SIGTERM or after -for.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/cofferhq/coffer/bench/vault/benchfleet"
	"github.com/cofferhq/coffer/internal/server/devfleet"
)

func main() {
	dir := flag.String("dir", "", "fleet directory (default: a new temporary directory, removed at exit)")
	replicas := flag.Int("replicas", 5, "Raft voters (1, 3, 5 or 7)")
	settings := flag.String("settings", "fleet.json", "write the load generator's settings to this JSON file")
	pprofAddr := flag.String("pprof", "127.0.0.1:0", "serve net/http/pprof here (empty: off)")
	relayLog := flag.String("relay-log", "", "write the relay's JSON request log to this file (default: discarded)")
	syncState := flag.Bool("sync-state", false, "fsync every state-machine transaction")
	unbatched := flag.Bool("unbatched", false, "one state-machine transaction per entry")
	heartbeat := flag.Duration("heartbeat", devfleet.BenchHeartbeatTimeout, "Raft heartbeat timeout")
	election := flag.Duration("election", devfleet.BenchElectionTimeout, "Raft election timeout")
	lease := flag.Duration("lease", devfleet.BenchLeaderLeaseTimeout, "Raft leader lease timeout")
	commit := flag.Duration("commit-timeout", devfleet.BenchCommitTimeout, "Raft commit timeout")
	lifetime := flag.Duration("for", 30*time.Minute, "exit after this long")
	threshold := flag.Bool("threshold", false, "give the replicas OPRF shares: registrations and logins go through the threshold OPRF (PROTOCOL.md §7)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *lifetime)
	defer cancel()

	if *dir == "" {
		d, err := os.MkdirTemp("", "coffer-bench-fleet-")
		if err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	o := devfleet.BenchmarkOptions(*dir, *replicas)
	o.SyncState, o.DisableBatching, o.Threshold = *syncState, *unbatched, *threshold
	o.HeartbeatTimeout, o.ElectionTimeout, o.LeaderLeaseTimeout, o.CommitTimeout = *heartbeat, *election, *lease, *commit
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if *relayLog != "" {
		rl, err := os.Create(*relayLog)
		if err != nil {
			log.Fatal(err)
		}
		defer rl.Close()
		o.RelayLogger = slog.New(slog.NewJSONHandler(rl, nil)) // as a deployed relay logs
	}
	f, err := devfleet.Start(ctx, o)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()

	s := benchfleet.Settings{
		Relay: f.RelayURL, Fleet: f.BundlePath, FleetRoot: f.RootPublic, TokenKey: f.TokenKeyPath,
		Issuer: devfleet.Issuer, Audience: devfleet.Audience, VaultAudience: devfleet.VaultAudience, Vaults: f.VaultURLs, Replicas: len(f.VaultURLs),
		PID: os.Getpid(), GOMAXPROCS: runtimeProcs(), StartedUnix: time.Now().Unix(),
	}
	if *pprofAddr != "" {
		ln, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			log.Fatal(err)
		}
		s.Pprof = "http://" + ln.Addr().String() + "/debug/pprof/"
		go http.Serve(ln, http.DefaultServeMux)
	}
	b, _ := json.MarshalIndent(s, "", "  ")
	tmp := *settings + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.Rename(tmp, *settings); err != nil {
		log.Fatal(err)
	}
	abs, _ := filepath.Abs(*settings)
	fmt.Fprintf(os.Stderr, "fleet: %d replicas, relay %s, settings %s, pprof %s (pid %d)\n", len(f.VaultURLs), f.RelayURL, abs, s.Pprof, s.PID)
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "fleet: stopping")
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
