package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cofferhq/coffer/internal/atomicfile"
	"github.com/cofferhq/coffer/internal/server/ceremony"
)

// ErrConfig marks a configuration that cannot run: a required field is
// missing or a value is malformed. Errors wrapping it say which field and
// what to give.
var ErrConfig = errors.New("replica configuration")

// Config is a replica's JSON configuration ('coffer vault serve --config
// FILE'; OPERATIONS.md documents every field). Command-line flags fill or
// override it field by field.
type Config struct {
	ID         string `json:"id"`
	DataCentre string `json:"data_centre,omitempty"`
	FleetDir   string `json:"fleet_dir,omitempty"`
	Secrets    string `json:"secrets,omitempty"`
	// OPRFShare is this replica's OPRF share file on a threshold fleet
	// ('coffer vault init --replicas N' deals them; PROTOCOL.md §7), or
	// around a reshare its files of two generations, comma-separated
	// ('coffer vault deal-shares --generation G').
	OPRFShare string `json:"oprf_share,omitempty"`
	DataDir   string `json:"data_dir,omitempty"`
	Listen    string `json:"listen"`
	// MetricsListen serves Prometheus metrics (/metrics) on an address of
	// its own (--metrics-listen); a bare port or ":PORT" means loopback
	// (127.0.0.1:PORT). Empty: no metrics. The VaultService port never
	// serves them.
	MetricsListen  string `json:"metrics_listen,omitempty"`
	URL            string `json:"url,omitempty"`
	RaftBind       string `json:"raft_bind"`
	RaftAdvertise  string `json:"raft_advertise,omitempty"`
	RaftSourceAddr string `json:"raft_source_addr,omitempty"`
	// InsecurePlainRaft lets Raft run without TLS on an address other than
	// loopback (--insecure-plain-raft). Without it such a replica does not
	// start: anyone who reaches a plain Raft port can claim a higher term
	// and commit commands.
	InsecurePlainRaft bool     `json:"insecure_plain_raft,omitempty"`
	Peers             []Peer   `json:"peers,omitempty"`
	TLS               *TLS     `json:"tls,omitempty"`
	Sealing           *Sealing `json:"sealing,omitempty"`
	GuessLimit        uint32   `json:"guess_limit,omitempty"`
	// Pacing spaces out wrong guesses (absent: vault.DefaultPacing; base
	// 0: none, for tests and load generators only).
	Pacing *Pacing `json:"pacing,omitempty"`
	// AppTokenKey is the app backend's Ed25519 public key (PEM file) that
	// signs vault tokens; AppTokenIssuer and VaultAudience are the "iss"
	// and "aud" the vault accepts. Required: the vault checks every
	// request's vault token itself (PROTOCOL.md §3).
	AppTokenKey    string      `json:"app_token_key"`
	AppTokenIssuer string      `json:"app_token_issuer"`
	VaultAudience  string      `json:"vault_audience"`
	Bootstrap      bool        `json:"bootstrap,omitempty"`
	InsecureDevKSF bool        `json:"insecure_dev_ksf,omitempty"`
	Debug          bool        `json:"debug,omitempty"`
	MarkInterval   Duration    `json:"mark_interval,omitzero"`
	RaftTiming     *RaftTiming `json:"raft_timing,omitempty"`
	Snapshots      *Snapshots  `json:"snapshots,omitempty"`
}

// Peer is a voter of a new fleet (with Bootstrap), or a member whose URL
// and data centre this replica should know from the start.
type Peer struct {
	ID         string `json:"id"`
	Raft       string `json:"raft"`
	URL        string `json:"url"`
	DataCentre string `json:"data_centre,omitempty"`
}

// TLS names the replica's mutual-TLS material from 'coffer vault cert'.
type TLS struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
	CA   string `json:"ca"`
}

// Sealing names the key that seals the replica's disk: a key file, or a
// key in a PKCS#11 token (which also keeps the rollback high-water mark).
type Sealing struct {
	KeyFile string  `json:"key_file,omitempty"`
	PKCS11  *PKCS11 `json:"pkcs11,omitempty"`
}

// PKCS11 names a token key and where its PIN comes from (never the
// configuration itself).
type PKCS11 struct {
	Module     string `json:"module"`
	TokenLabel string `json:"token_label"`
	KeyLabel   string `json:"key_label"`
	PINFile    string `json:"pin_file,omitempty"`
	PINEnv     string `json:"pin_env,omitempty"`
}

// RaftTiming tunes Raft's timeouts (zero: replica's defaults).
type RaftTiming struct {
	Heartbeat   Duration `json:"heartbeat_timeout,omitzero"`
	Election    Duration `json:"election_timeout,omitzero"`
	LeaderLease Duration `json:"leader_lease_timeout,omitzero"`
	Commit      Duration `json:"commit_timeout,omitzero"`
}

// Snapshots tunes Raft snapshots (zero values take replica's defaults).
type Snapshots struct {
	Threshold    uint64   `json:"threshold,omitempty"`
	Interval     Duration `json:"interval,omitzero"`
	TrailingLogs uint64   `json:"trailing_logs,omitempty"`
}

// Pacing is the fleet's schedule of waits between wrong guesses: after
// Free guesses since the last success, wait Base after the previous guess,
// doubling each time up to Max (PROTOCOL.md §5, "Pacing").
type Pacing struct {
	Free uint8    `json:"free"`
	Base Duration `json:"base,omitzero"`
	Max  Duration `json:"max,omitzero"`
}

// Duration is a time.Duration written as "5s" in JSON.
type Duration struct{ time.Duration }

// IsZero reports a zero duration (for omitzero).
func (d Duration) IsZero() bool { return d.Duration == 0 }

// MarshalJSON writes the duration as a string such as "1m30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a string such as "5s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration such as \"5s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// LoadConfig reads a configuration file, refusing unknown fields (a typo
// must not silently leave a setting at its default).
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w %s: %v (OPERATIONS.md lists the fields)", ErrConfig, path, err)
	}
	return &c, nil
}

// WriteConfig writes c to path as indented JSON, replacing the file
// atomically.
func WriteConfig(path string, c *Config) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Replace(path, append(b, '\n'), 0o600)
}

// Check reports the first thing that keeps c from running, naming the flag,
// environment variable and configuration field that set it.
func (c *Config) Check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, a...))
	}
	switch {
	case c.FleetDir == "" && c.Secrets == "":
		return bad("name the fleet directory with --dir DIR (or COFFER_VAULT_DIR, or fleet_dir / secrets in --config)")
	case c.ID == "":
		return bad("name this replica with --id ID (or COFFER_VAULT_ID, or id in --config)")
	case c.Listen == "":
		return bad("give the VaultService address with --listen HOST:PORT (or COFFER_VAULT_LISTEN, or listen in --config)")
	case c.RaftBind == "":
		return bad("give the Raft peer address with --raft HOST:PORT (or COFFER_VAULT_RAFT, or raft_bind in --config)")
	case c.DataDir == "" && c.FleetDir == "":
		return bad("give the replica's state directory with --data DIR (or data_dir in --config)")
	case c.AppTokenKey == "" || c.AppTokenIssuer == "" || c.VaultAudience == "":
		return bad("give the app backend's token public key, issuer and the vault's audience with --token-key PUB.pem --issuer ISS --vault-audience AUD (or app_token_key, app_token_issuer, vault_audience in --config): the vault checks every request's vault token itself")
	}
	for _, p := range c.Peers {
		if p.ID == "" || p.Raft == "" {
			return bad("every peer needs an id and a raft address")
		}
	}
	if c.Sealing != nil && c.Sealing.KeyFile != "" && c.Sealing.PKCS11 != nil {
		return bad("sealing: give key_file or pkcs11, not both")
	}
	if t := c.TLS; t != nil && (t.Cert != "" || t.Key != "" || t.CA != "") && (t.Cert == "" || t.Key == "" || t.CA == "") {
		return bad("tls: give cert, key and ca (from 'coffer vault cert')")
	}
	return nil
}

// secretsPath is where the fleet secrets are read from.
func (c *Config) secretsPath() string {
	if c.Secrets != "" {
		return c.Secrets
	}
	return filepath.Join(c.FleetDir, ceremony.SecretsFile)
}

// dataDir is the replica's state directory.
func (c *Config) dataDir() string {
	if c.DataDir != "" {
		return c.DataDir
	}
	return filepath.Join(c.FleetDir, "replica-"+c.ID)
}
