// Package benchfleet holds what the benchmarks' fleets share: the
// devfleet options of a benchmark fleet (1 to 9 Raft voters and one relay
// on 127.0.0.1, started with devfleet.Start) and the settings file that
// `go run ./bench/vault/fleet` writes for the load generator.
//
// It is used by `go run ./bench/vault/fleet` (a fleet in its own process,
// so a load generator does not share its address space), by the load
// generator's -dev mode and by the vault package's benchmarks.
package benchfleet

import (
	"log/slog"
	"time"

	"github.com/cofferhq/coffer/internal/server/devfleet"
)

// Raft timing of benchmark fleets. A loaded 2-core machine needs 1 s
// timeouts with 5 replicas, or leaders flap (devfleet's defaults are for
// quick elections in tests).
const (
	HeartbeatTimeout   = time.Second
	ElectionTimeout    = time.Second
	LeaderLeaseTimeout = 500 * time.Millisecond
	CommitTimeout      = 50 * time.Millisecond
)

// Options returns the devfleet options of a benchmark fleet of replicas
// Raft voters in dir: the Raft timing above, a fresh fleet each time
// (replica state left in dir by an earlier run is removed), the relay's
// request log discarded (set RelayLogger to keep it), no logs (set Logger),
// and, as in every devfleet, no relay rate limits and the state machine
// not fsynced (SyncState).
func Options(dir string, replicas int) devfleet.Options {
	return devfleet.Options{
		Dir: dir, Replicas: replicas, Fresh: true,
		HeartbeatTimeout: HeartbeatTimeout, ElectionTimeout: ElectionTimeout,
		LeaderLeaseTimeout: LeaderLeaseTimeout, CommitTimeout: CommitTimeout,
		RelayLogger: slog.New(slog.DiscardHandler),
	}
}

// Settings is the JSON file `go run ./bench/vault/fleet` writes and the load
// generator reads (-settings).
type Settings struct {
	Relay       string   `json:"relay"`
	Fleet       string   `json:"fleet"`
	FleetRoot   string   `json:"fleet_root"`
	TokenKey    string   `json:"token_key"`
	Issuer      string   `json:"issuer"`
	Audience    string   `json:"audience"`
	Vaults      []string `json:"vaults"`
	Replicas    int      `json:"replicas"`
	PID         int      `json:"pid"`
	Pprof       string   `json:"pprof"`
	GOMAXPROCS  int      `json:"gomaxprocs"`
	StartedUnix int64    `json:"started_unix"`
}
