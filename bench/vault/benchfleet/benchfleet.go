// Package benchfleet holds the settings file that `go run ./bench/vault/fleet`
// (a benchmark fleet in its own process, so a load generator does not share
// its address space) writes for the load generator. The fleet's options are
// devfleet.BenchmarkOptions.
package benchfleet

// Settings is the JSON file `go run ./bench/vault/fleet` writes and the load
// generator reads (-settings).
type Settings struct {
	Relay     string `json:"relay"`
	Fleet     string `json:"fleet"`
	FleetRoot string `json:"fleet_root"`
	TokenKey  string `json:"token_key"`
	Issuer    string `json:"issuer"`
	Audience  string `json:"audience"`
	// VaultAudience is the audience of vault tokens ("" in files from
	// before vault tokens: devfleet.VaultAudience).
	VaultAudience string   `json:"vault_audience,omitempty"`
	Vaults        []string `json:"vaults"`
	Replicas      int      `json:"replicas"`
	PID           int      `json:"pid"`
	Pprof         string   `json:"pprof"`
	GOMAXPROCS    int      `json:"gomaxprocs"`
	StartedUnix   int64    `json:"started_unix"`
}
