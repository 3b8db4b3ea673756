package cli

// The replica configuration file ('coffer vault serve --config FILE',
// OPERATIONS.md documents every field) and what it opens: the sealing key
// (key file or PKCS#11 token), the fleet secrets, the mutual-TLS material.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/cofferhq/coffer/internal/atomicfile"
	"github.com/cofferhq/coffer/internal/server/fleetca"
	"github.com/cofferhq/coffer/internal/server/sealing"
	"github.com/cofferhq/coffer/internal/server/sealing/keyfile"
	"github.com/cofferhq/coffer/internal/server/sealing/pkcs11"
)

// replicaConfig is the JSON replica configuration.
type replicaConfig struct {
	ID             string            `json:"id"`
	DataCentre     string            `json:"data_centre,omitempty"`
	FleetDir       string            `json:"fleet_dir,omitempty"`
	Secrets        string            `json:"secrets,omitempty"`
	DataDir        string            `json:"data_dir,omitempty"`
	Listen         string            `json:"listen"`
	URL            string            `json:"url,omitempty"`
	RaftBind       string            `json:"raft_bind"`
	RaftAdvertise  string            `json:"raft_advertise,omitempty"`
	RaftSourceAddr string            `json:"raft_source_addr,omitempty"`
	Peers          []peerConfig      `json:"peers,omitempty"`
	TLS            *tlsConfig        `json:"tls,omitempty"`
	Sealing        *sealingConfig    `json:"sealing,omitempty"`
	GuessLimit     uint32            `json:"guess_limit,omitempty"`
	Bootstrap      bool              `json:"bootstrap,omitempty"`
	InsecureDevKSF bool              `json:"insecure_dev_ksf,omitempty"`
	Debug          bool              `json:"debug,omitempty"`
	MarkInterval   duration          `json:"mark_interval,omitzero"`
	RaftTiming     *raftTimingConfig `json:"raft_timing,omitempty"`
	Snapshots      *snapshotConfig   `json:"snapshots,omitempty"`
}

// snapshotConfig tunes Raft snapshots (replica.Config); zero values take
// the defaults.
type snapshotConfig struct {
	Threshold    uint64   `json:"threshold,omitempty"`
	Interval     duration `json:"interval,omitzero"`
	TrailingLogs uint64   `json:"trailing_logs,omitempty"`
}

type peerConfig struct {
	ID         string `json:"id"`
	Raft       string `json:"raft"`
	URL        string `json:"url"`
	DataCentre string `json:"data_centre,omitempty"`
}

type tlsConfig struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
	CA   string `json:"ca"`
}

type sealingConfig struct {
	KeyFile string        `json:"key_file,omitempty"`
	PKCS11  *pkcs11Config `json:"pkcs11,omitempty"`
}

type pkcs11Config struct {
	Module     string `json:"module"`
	TokenLabel string `json:"token_label"`
	KeyLabel   string `json:"key_label"`
	PINFile    string `json:"pin_file,omitempty"`
	PINEnv     string `json:"pin_env,omitempty"`
}

type raftTimingConfig struct {
	Heartbeat   duration `json:"heartbeat_timeout,omitzero"`
	Election    duration `json:"election_timeout,omitzero"`
	LeaderLease duration `json:"leader_lease_timeout,omitzero"`
	Commit      duration `json:"commit_timeout,omitzero"`
}

// duration is a time.Duration written as "5s" in JSON.
type duration struct{ time.Duration }

func (d duration) IsZero() bool { return d.Duration == 0 }

func (d duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

func (d *duration) UnmarshalJSON(b []byte) error {
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

func loadReplicaConfig(path string) (*replicaConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c replicaConfig
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config %s: %w (OPERATIONS.md lists the fields)", path, err)
	}
	return &c, nil
}

func writeReplicaConfig(path string, c *replicaConfig) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Replace(path, append(b, '\n'), 0o600)
}

// openedSealing is a replica's key-encryption key and, with a token, its
// mark store.
type openedSealing struct {
	kek   sealing.Key
	marks sealing.MarkStore
	close func() error
}

func (a *app) pkcs11PIN(c *pkcs11Config) (string, error) {
	switch {
	case c.PINFile != "":
		b, err := os.ReadFile(c.PINFile)
		if err != nil {
			return "", fmt.Errorf("PKCS#11 PIN file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case c.PINEnv != "":
		if v := a.Getenv(c.PINEnv); v != "" {
			return v, nil
		}
		return "", fmt.Errorf("PKCS#11 PIN: the environment variable %s is empty", c.PINEnv)
	}
	if v := a.Getenv("COFFER_PKCS11_PIN"); v != "" {
		return v, nil
	}
	return "", errors.New("PKCS#11 PIN: set pin_file or pin_env in the sealing configuration, or COFFER_PKCS11_PIN")
}

func (a *app) openSealing(c *sealingConfig) (*openedSealing, error) {
	if c == nil || (c.KeyFile == "" && c.PKCS11 == nil) {
		return nil, nil
	}
	if c.KeyFile != "" && c.PKCS11 != nil {
		return nil, errors.New("sealing: give key_file or pkcs11, not both")
	}
	if c.KeyFile != "" {
		k, err := keyfile.Load(c.KeyFile)
		if err != nil {
			return nil, err
		}
		return &openedSealing{kek: k, close: func() error { return nil }}, nil
	}
	pin, err := a.pkcs11PIN(c.PKCS11)
	if err != nil {
		return nil, err
	}
	tok, err := pkcs11.Open(pkcs11.Config{Module: c.PKCS11.Module, TokenLabel: c.PKCS11.TokenLabel, KeyLabel: c.PKCS11.KeyLabel, PIN: pin})
	if err != nil {
		return nil, err
	}
	return &openedSealing{kek: tok.Key(), marks: tok, close: tok.Close}, nil
}

func loadTLS(c *tlsConfig) (*fleetca.TLS, error) {
	if c == nil || (c.Cert == "" && c.Key == "" && c.CA == "") {
		return nil, nil
	}
	if c.Cert == "" || c.Key == "" || c.CA == "" {
		return nil, errors.New("tls: give cert, key and ca (from 'coffer vault cert')")
	}
	return fleetca.LoadTLS(c.Cert, c.Key, c.CA)
}
