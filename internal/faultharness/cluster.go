//go:build unix

package faultharness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cofferhq/coffer/internal/device/recovery"
	"github.com/cofferhq/coffer/internal/process"
	"github.com/cofferhq/coffer/internal/protocol/bundle"
	"github.com/cofferhq/coffer/internal/server/fleetca"
	"github.com/cofferhq/coffer/internal/server/serve"
	"github.com/cofferhq/coffer/token"
)

// Token settings of the fleet under test.
const (
	tokenIssuer   = "faultharness-app"
	tokenAudience = "faultharness-relay"
	vaultAudience = "faultharness-vault"
)

// BuildCoffer builds ./cmd/coffer of the module at root into dir and returns
// the binary's path. COFFER_HARNESS_BIN names a prebuilt binary instead.
func BuildCoffer(ctx context.Context, root, dir string) (string, error) {
	if b := os.Getenv("COFFER_HARNESS_BIN"); b != "" {
		return b, nil
	}
	bin := filepath.Join(dir, "coffer")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/coffer")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building coffer: %v\n%s", err, out)
	}
	return bin, nil
}

// terminate stops p with SIGTERM and waits up to d for the exit (a clean
// stop). A process still running then gets SIGQUIT, so the Go runtime
// writes every goroutine's stack to its log (what it was stuck on), and
// SIGKILL if that does not end it within 5 s.
func terminate(p *process.Process, d time.Duration) error {
	switch end, err := p.Stop(d, 5*time.Second); end {
	case process.Quit:
		return fmt.Errorf("pid %d still running %v after SIGTERM; SIGQUIT (its goroutines' stacks are in its log)", p.Pid(), d)
	case process.Killed:
		return errors.Join(fmt.Errorf("pid %d still running %v after SIGTERM and 5 s after SIGQUIT; SIGKILLed", p.Pid(), d), err)
	}
	return nil
}

// startProc starts bin with args in its own process group, appending its
// output to logPath.
func startProc(bin, logPath string, args ...string) (*process.Process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "=== %s %s: %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = childEnv()
	p, err := process.Start(cmd, func(err error) {
		fmt.Fprintf(f, "=== %s exited: %v\n", time.Now().Format(time.RFC3339Nano), err)
		f.Close()
	})
	if err != nil {
		f.Close()
		return nil, err
	}
	return p, nil
}

// childEnv is the test's environment without COFFER_* variables.
func childEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "COFFER_") {
			out = append(out, kv)
		}
	}
	return out
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	// A port the kernel hands out for 127.0.0.1:0 comes from the ephemeral
	// range, and once released here any other process's listen(":0") or
	// outgoing connection may take it before the replica binds it (CI saw
	// "address already in use" for a replica's Raft port with other test
	// binaries running). Ports below the ephemeral range (Linux: 32768 and
	// up) are never handed out that way, so pick from those instead, at
	// random, never the same one twice in this process.
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 200 {
		p := 20000 + mrand.IntN(12000)
		if portsGiven[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		portsGiven[p] = true
		return p, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// ReplicaState is what the harness did to a replica.
type ReplicaState int

const (
	Running ReplicaState = iota
	Killed
	Paused
	// Removed: taken out of the fleet ('coffer vault remove') and stopped;
	// a new replica takes its place (Cluster.Replace).
	Removed
)

func (s ReplicaState) String() string {
	return [...]string{"running", "killed", "paused", "removed"}[s]
}

// Replica is one place in the fleet: its addresses, its proxy, and the
// 'coffer vault serve' process that holds it. Replace puts a new replica
// (a new ID, an empty data directory) in the same place.
type Replica struct {
	Index    int
	ID       string // changed by Replace only, under the cluster's lock
	HTTPAddr string
	URL      string // https://HTTPAddr
	RaftAddr string // real Raft listener; peers reach it through the proxy
	Metrics  string // metrics_listen: /metrics on 127.0.0.1, apart from the VaultService
	Source   string // local IP its outgoing Raft connections leave from (--raft-source-addr)
	Data     string
	Log      string
	TLSDir   string // replica.crt, replica.key, fleet-ca.crt from 'coffer vault cert'
	// bootstrap: one of the fleet's first members (--bootstrap); a
	// replacement starts empty and is added with 'coffer vault join'.
	bootstrap bool
	// shares are the OPRF share files it starts with (SetShares); nil:
	// an original member's first-generation file.
	shares []string
	proc   *process.Process
	state  ReplicaState
	starts int
}

// sourceIP is the loopback address replica place i dials Raft from.
func sourceIP(i int) string { return fmt.Sprintf("127.0.0.%d", 101+i) }

// Config configures a Cluster.
type Config struct {
	// Replicas (default 5).
	Replicas int
	// GuessLimit of the fleet (default 5).
	GuessLimit int
	// Dir holds the fleet's files, data directories and logs.
	Dir string
	// Bin is the coffer binary.
	Bin string
	// Sealed seals every replica's disk: each replica gets its own key
	// file ('coffer vault seal-key', --sealing-key-file) and the fleet
	// secrets sealed under it, and seals its data directory under its own
	// data key. It needs a binary with those.
	Sealed bool
	// Snapshots are every replica's Raft snapshot settings, given in a
	// --config file; nil: the replicas' defaults (no file).
	Snapshots *SnapshotSettings
	// Pacing of wrong guesses (nil: none).
	Pacing *serve.Pacing
	// Threshold makes a threshold fleet ('vault init --replicas N',
	// PROTOCOL.md §7): the first Replicas replicas get OPRF shares 1..N
	// and no replica holds the OPRF seed. A replacement gets the share
	// files SetShares gave its place (none by default); DealShares and
	// Reshare run a membership change's ceremony and reshare.
	Threshold bool
	// Logf receives progress lines (default: none).
	Logf func(format string, args ...any)
}

// Cluster is a vault fleet of real processes behind controllable proxies,
// and a relay that knows every replica.
type Cluster struct {
	cfg       Config
	mu        sync.Mutex
	Replicas  []*Replica
	Net       *Network
	RelayURL  string
	relay     *process.Process
	relayArgs []string
	relayLog  string
	Bundle    *bundle.Bundle
	tokenKey  ed25519.PrivateKey
	fleetDir  string
	caPath    string // the fleet CA certificate (fleet-ca.crt)
	adminDir  string // an operator's certificate from the fleet CA ('coffer vault ... --tls-dir')
	// RelayTLSDir holds the relay's certificate of the fleet CA (role
	// relay), its key and the CA: what the replicas' VaultService demands.
	RelayTLSDir  string
	tokenKeyPath string             // the app backend's public key, for vault tokens
	joins        map[string]JoinLog // the leader's log when each new member joined (noteJoin)
	lastID       int                // replica ids are r1, r2, …: the highest given
	httpClient   *http.Client
}

// GuessLimit is the fleet's guess limit.
func (c *Cluster) GuessLimit() int { return c.cfg.GuessLimit }

func (c *Cluster) logf(format string, args ...any) {
	if c.cfg.Logf != nil {
		c.cfg.Logf(format, args...)
	}
}

// StartCluster runs the key ceremony, starts the replicas bootstrapped
// together and the relay, and waits until a leader serves. Close stops
// everything.
func StartCluster(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = 5
	}
	if cfg.GuessLimit == 0 {
		cfg.GuessLimit = 5
	}
	c := &Cluster{cfg: cfg, fleetDir: filepath.Join(cfg.Dir, "fleet"), adminDir: filepath.Join(cfg.Dir, "admin-tls"), RelayTLSDir: filepath.Join(cfg.Dir, "relay-tls")}
	c.caPath = filepath.Join(c.fleetDir, fleetca.CACertFile)
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	initArgs := []string{"--json", "vault", "init", "--dir", c.fleetDir}
	if cfg.Threshold {
		initArgs = append(initArgs, "--replicas", strconv.Itoa(cfg.Replicas))
	}
	initCmd := exec.CommandContext(ctx, cfg.Bin, initArgs...)
	initCmd.Env = childEnv()
	out, err := initCmd.Output()
	if err != nil {
		return nil, fmt.Errorf("vault init: %w: %s", err, stderrOf(err))
	}
	var ini struct {
		RootPublic string `json:"root_public"`
		Bundle     string `json:"bundle"`
	}
	if err := json.Unmarshal(out, &ini); err != nil {
		return nil, fmt.Errorf("vault init printed %q: %w", out, err)
	}
	if c.Bundle, err = recovery.LoadBundle(ini.Bundle, ini.RootPublic); err != nil {
		return nil, err
	}
	priv, pub := filepath.Join(cfg.Dir, "app-token.key"), filepath.Join(cfg.Dir, "app-token.pub")
	keygen := exec.CommandContext(ctx, cfg.Bin, "relay", "keygen", "--private", priv, "--public", pub)
	keygen.Env = childEnv()
	if out, err := keygen.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("relay keygen: %w: %s", err, out)
	}
	pem, err := os.ReadFile(priv)
	if err != nil {
		return nil, err
	}
	if c.tokenKey, err = token.ParsePrivateKeyPEM(pem); err != nil {
		return nil, err
	}
	c.tokenKeyPath = pub

	// Raft and the VaultService over TLS with the fleet CA, as in
	// production: a certificate per replica, one for the operator's
	// membership commands, and the CA for the harness's own HTTPS.
	pool, err := fleetca.LoadCAPool(c.caPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("vault init made no fleet CA: %w", err)
	}
	if err != nil {
		return nil, err
	}
	c.httpClient = &http.Client{Timeout: time.Second, Transport: &http.Transport{
		TLSClientConfig: fleetca.AnonymousClientConfig(pool), MaxIdleConnsPerHost: 4,
	}}
	if err := c.issueCert(ctx, fleetca.RoleOperator, "harness-admin", c.adminDir); err != nil {
		return nil, err
	}
	if err := c.issueCert(ctx, fleetca.RoleRelay, "harness-relay", c.RelayTLSDir); err != nil {
		return nil, err
	}
	var sources []string
	for i := range cfg.Replicas {
		sources = append(sources, sourceIP(i))
	}
	if err := CheckSources(sources...); err != nil {
		return nil, err
	}

	if c.Net, err = NewNetwork(cfg.Replicas); err != nil {
		return nil, err
	}
	for i := range cfg.Replicas {
		hp, err := freePort()
		if err != nil {
			return nil, err
		}
		rp, err := freePort()
		if err != nil {
			return nil, err
		}
		mp, err := freePort()
		if err != nil {
			return nil, err
		}
		c.lastID++
		r := &Replica{
			Index: i, HTTPAddr: fmt.Sprintf("127.0.0.1:%d", hp), RaftAddr: fmt.Sprintf("127.0.0.1:%d", rp),
			Metrics: fmt.Sprintf("127.0.0.1:%d", mp), Source: sourceIP(i), bootstrap: true,
		}
		r.URL = "https://" + r.HTTPAddr
		c.name(r, fmt.Sprintf("r%d", c.lastID))
		if err := c.issueCert(ctx, fleetca.RoleReplica, r.ID, r.TLSDir); err != nil {
			return nil, err
		}
		c.Net.SetUpstream(i, r.RaftAddr)
		c.Net.SetSource(i, r.Source)
		c.Replicas = append(c.Replicas, r)
	}
	var urls []string
	for _, r := range c.Replicas {
		urls = append(urls, r.URL)
	}
	for _, r := range c.Replicas {
		if err := c.start(r); err != nil {
			return nil, err
		}
	}
	rport, err := freePort()
	if err != nil {
		return nil, err
	}
	c.RelayURL = fmt.Sprintf("http://127.0.0.1:%d", rport)
	c.relayLog = filepath.Join(cfg.Dir, "relay.log")
	c.relayArgs = []string{"relay", "serve", "--listen", fmt.Sprintf("127.0.0.1:%d", rport),
		"--vault", strings.Join(urls, ","), "--vault-ca", c.caPath, "--token-key", pub,
		"--vault-cert", filepath.Join(c.RelayTLSDir, fleetca.CertFile), "--vault-key", filepath.Join(c.RelayTLSDir, fleetca.KeyFile),
		"--issuer", tokenIssuer, "--audience", tokenAudience, "--no-rate-limits"}
	if c.relay, err = startProc(cfg.Bin, c.relayLog, c.relayArgs...); err != nil {
		return nil, err
	}
	if err := c.waitHTTP(ctx, c.relay, c.RelayURL+"/healthz", 30*time.Second); err != nil {
		return nil, err
	}
	if _, err := c.WaitLeader(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}

// name gives replica place r the id id, and the files that go with it.
func (c *Cluster) name(r *Replica, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r.ID = id
	r.Data = filepath.Join(c.cfg.Dir, "data-"+id)
	r.Log = filepath.Join(c.cfg.Dir, "vault-"+id+".log")
	r.TLSDir = filepath.Join(c.cfg.Dir, "tls-"+id)
}

// ID is the id of the replica in place i now.
func (c *Cluster) ID(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Replicas[i].ID
}

// issueCert issues id a certificate from the fleet CA for 127.0.0.1, with
// 'coffer vault cert', into dir.
func (c *Cluster) issueCert(ctx context.Context, role fleetca.Role, id, dir string) error {
	cmd := exec.CommandContext(ctx, c.cfg.Bin, "vault", "cert", "--dir", c.fleetDir, "--role", string(role), "--id", id, "--host", "127.0.0.1", "--out", dir)
	cmd.Env = childEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("vault cert %s: %w: %s", id, err, out)
	}
	return nil
}

// args are r's 'vault serve' flags: mutual TLS, Raft from r's source
// address, as --peer every replica the fleet has now (a restart after
// a replacement knows the new member's URL, as OPERATIONS.md asks of
// operators), and --config with the snapshot settings.
func (c *Cluster) args(r *Replica) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	args := []string{"vault", "serve", "--dir", c.fleetDir, "--id", r.ID,
		"--listen", r.HTTPAddr, "--raft", r.RaftAddr, "--advertise-raft", c.Net.Addr(r.Index),
		"--raft-source-addr", r.Source, "--url", r.URL, "--data", r.Data,
		"--tls-cert", filepath.Join(r.TLSDir, fleetca.CertFile), "--tls-key", filepath.Join(r.TLSDir, fleetca.KeyFile),
		"--tls-ca", filepath.Join(r.TLSDir, fleetca.CACertFile),
		"--guess-limit", strconv.Itoa(c.cfg.GuessLimit), "--insecure-dev-ksf"}
	if r.bootstrap {
		args = append(args, "--bootstrap")
	}
	switch {
	case len(r.shares) > 0:
		args = append(args, "--oprf-share", strings.Join(r.shares, ","))
	case c.cfg.Threshold && r.ID == fmt.Sprintf("r%d", r.Index+1): // an original member: its share
		args = append(args, "--oprf-share", filepath.Join(c.fleetDir, "oprf-shares", fmt.Sprintf("share-%d.json", r.Index+1)))
	}
	if c.cfg.Sealed {
		args = append(args, "--sealing-key-file", c.keyFile(r))
	}
	args = append(args, "--config", c.configPath(r))
	for _, p := range c.Replicas {
		args = append(args, "--peer", fmt.Sprintf("%s=%s=%s", p.ID, c.Net.Addr(p.Index), p.URL))
	}
	return args
}

// configPath is r's --config file (metrics address, token key, pacing,
// snapshot settings, sealed secrets).
func (c *Cluster) configPath(r *Replica) string {
	return filepath.Join(c.cfg.Dir, "config-"+r.ID+".json")
}

// keyFile is r's own sealing key file; secretsFile the fleet secrets sealed
// under it (a sealed replica refuses plaintext ones).
func (c *Cluster) keyFile(r *Replica) string { return filepath.Join(c.cfg.Dir, "sealing-"+r.ID+".key") }
func (c *Cluster) secretsFile(r *Replica) string {
	return filepath.Join(c.cfg.Dir, "secrets-"+r.ID+".sealed")
}

// sealingFiles makes r's key file and sealed secrets if it has none yet.
func (c *Cluster) sealingFiles(r *Replica) error {
	kf, sf := c.keyFile(r), c.secretsFile(r)
	if _, err := os.Stat(sf); err == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := os.Stat(kf); err != nil {
		sk := exec.CommandContext(ctx, c.cfg.Bin, "vault", "seal-key", "--out", kf)
		sk.Env = childEnv()
		if out, err := sk.CombinedOutput(); err != nil {
			return fmt.Errorf("vault seal-key: %w: %s", err, out)
		}
	}
	ss := exec.CommandContext(ctx, c.cfg.Bin, "vault", "seal-secrets", "--in", filepath.Join(c.fleetDir, "secrets.json"), "--out", sf, "--key-file", kf)
	ss.Env = childEnv()
	if out, err := ss.CombinedOutput(); err != nil {
		return fmt.Errorf("vault seal-secrets: %w: %s", err, out)
	}
	return nil
}

// start starts r's process with its flags (the same at every restart).
func (c *Cluster) start(r *Replica) error {
	c.mu.Lock()
	path, metrics := c.configPath(r), r.Metrics
	c.mu.Unlock()
	secrets := ""
	if c.cfg.Sealed {
		if err := c.sealingFiles(r); err != nil {
			return err
		}
		secrets = c.secretsFile(r)
	}
	if err := writeReplicaConfig(path, replicaFile{Metrics: metrics, TokenKey: c.tokenKeyPath, Secrets: secrets, Snapshots: c.cfg.Snapshots, Pacing: c.cfg.Pacing}); err != nil {
		return err
	}
	p, err := startProc(c.cfg.Bin, r.Log, c.args(r)...)
	if err != nil {
		return fmt.Errorf("starting %s: %w", r.ID, err)
	}
	c.mu.Lock()
	r.proc, r.state = p, Running
	r.starts++
	c.mu.Unlock()
	return nil
}

func (c *Cluster) waitHTTP(ctx context.Context, p *process.Process, url string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		resp, err := c.httpClient.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p.Exited() {
			return fmt.Errorf("%s exited while waiting for %s: %v", c.cfg.Bin, url, p.Err())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v (last: %v)", url, within, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Token mints an account token for the relay, valid for ttl.
func (c *Cluster) Token(account string, ttl time.Duration) (string, error) {
	now := time.Now()
	return token.Mint(c.tokenKey, token.Claims{Issuer: tokenIssuer, Subject: account, Audience: tokenAudience, IssuedAt: now, Expiry: now.Add(ttl)})
}

// VaultToken mints an account token for the vault, valid for ttl: the one
// that travels sealed inside requests.
func (c *Cluster) VaultToken(account string, ttl time.Duration) (string, error) {
	now := time.Now()
	return token.Mint(c.tokenKey, token.Claims{Issuer: tokenIssuer, Subject: account, Audience: vaultAudience, IssuedAt: now, Expiry: now.Add(ttl)})
}

// Tokens mints both of an account's tokens, for NewDriver.
func (c *Cluster) Tokens(account string) (relay, vault string, err error) {
	if relay, err = c.Token(account, time.Hour); err != nil {
		return "", "", err
	}
	vault, err = c.VaultToken(account, time.Hour)
	return relay, vault, err
}

// bootstrapped reports whether the replica in place i is one of the
// fleet's first members (else a replacement, started empty).
func (c *Cluster) bootstrapped(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Replicas[i].bootstrap
}

// State returns what the harness did to replica i.
func (c *Cluster) State(i int) ReplicaState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Replicas[i].state
}

// Kill SIGKILLs replica i.
func (c *Cluster) Kill(i int) error {
	r := c.Replicas[i]
	c.mu.Lock()
	p := r.proc
	c.mu.Unlock()
	err := p.Kill()
	c.mu.Lock()
	r.state = Killed
	c.mu.Unlock()
	return err
}

// Restart starts a killed replica again with the same flags and data.
func (c *Cluster) Restart(i int) error {
	r := c.Replicas[i]
	if c.State(i) != Killed {
		return fmt.Errorf("%s is %s, not killed", r.ID, c.State(i))
	}
	return c.start(r)
}

// Pause SIGSTOPs replica i; Resume SIGCONTs it.
func (c *Cluster) Pause(i int) error {
	r := c.Replicas[i]
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.state != Running {
		return fmt.Errorf("%s is %s", r.ID, r.state)
	}
	r.state = Paused
	return r.proc.Signal(syscall.SIGSTOP)
}

func (c *Cluster) Resume(i int) error {
	r := c.Replicas[i]
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.state != Paused {
		return fmt.Errorf("%s is %s", r.ID, r.state)
	}
	r.state = Running
	return r.proc.Signal(syscall.SIGCONT)
}

// Exited lists replicas the harness did not kill whose process ended (a
// crash).
func (c *Cluster) Exited() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, r := range c.Replicas {
		if r.state != Killed && r.state != Removed && r.proc.Exited() {
			out = append(out, fmt.Sprintf("%s (%v)", r.ID, r.proc.Err()))
		}
	}
	if c.relay != nil && c.relay.Exited() {
		out = append(out, fmt.Sprintf("relay (%v)", c.relay.Err()))
	}
	return out
}

// Metrics are the values a replica's /metrics reported (unlabelled series
// only).
type Metrics map[string]float64

// Scrape reads replica i's /metrics (1 s timeout), on its metrics address.
func (c *Cluster) Scrape(i int) (Metrics, error) {
	if st := c.State(i); st != Running {
		return nil, fmt.Errorf("%s is %s", c.ID(i), st)
	}
	resp, err := c.httpClient.Get("http://" + c.Replicas[i].Metrics + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

func parseMetrics(r io.Reader) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] == '#' || bytes.IndexByte(line, '{') >= 0 {
			continue
		}
		f := strings.Fields(string(line))
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		m[f[0]] = v
	}
	return m, sc.Err()
}

// Leader returns the index of the running replica that reports itself the
// Raft leader with the highest term, or -1.
func (c *Cluster) Leader() int {
	best, term := -1, -1.0
	for i := range c.Replicas {
		m, err := c.Scrape(i)
		if err != nil {
			continue
		}
		if m["coffer_vault_raft_leader"] == 1 && m["coffer_vault_raft_term"] > term {
			best, term = i, m["coffer_vault_raft_term"]
		}
	}
	return best
}

// Followers returns the running replicas other than the leader.
func (c *Cluster) Followers(leader int) []int {
	var out []int
	for i := range c.Replicas {
		if i != leader && c.State(i) == Running {
			out = append(out, i)
		}
	}
	return out
}

// WaitLeader waits until some replica reports itself leader.
func (c *Cluster) WaitLeader(ctx context.Context, within time.Duration) (int, error) {
	deadline := time.Now().Add(within)
	for {
		if l := c.Leader(); l >= 0 {
			return l, nil
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("no leader after %v (%s)", within, c.Describe())
		}
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// WaitConverged waits until every replica runs, one leader is known, and
// every replica has applied everything the leader had committed when the
// wait began: the returning replicas caught up.
func (c *Cluster) WaitConverged(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	var target float64 = -1
	var last string
	for {
		if l := c.Leader(); l >= 0 {
			if target < 0 {
				if m, err := c.Scrape(l); err == nil {
					target = m["coffer_vault_raft_commit_index"]
				}
			}
			if target >= 0 {
				ok := true
				var parts []string
				for i := range c.Replicas {
					m, err := c.Scrape(i)
					if err != nil {
						ok = false
						parts = append(parts, fmt.Sprintf("%s: %v", c.ID(i), err))
						continue
					}
					a := m["coffer_vault_raft_applied_index"]
					parts = append(parts, fmt.Sprintf("%s applied %.0f", c.ID(i), a))
					if a < target {
						ok = false
					}
				}
				last = fmt.Sprintf("target %.0f: %s", target, strings.Join(parts, ", "))
				if ok {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replicas did not converge within %v: %s", within, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Describe summarises the replicas' states for logs.
func (c *Cluster) Describe() string {
	var parts []string
	for i := range c.Replicas {
		s := c.State(i).String()
		if s == "running" {
			if m, err := c.Scrape(i); err == nil {
				if m["coffer_vault_raft_leader"] == 1 {
					s = fmt.Sprintf("leader t%.0f", m["coffer_vault_raft_term"])
				} else {
					s = fmt.Sprintf("follower t%.0f", m["coffer_vault_raft_term"])
				}
				s += fmt.Sprintf(" applied %.0f", m["coffer_vault_raft_applied_index"])
			} else {
				s = "unreachable"
			}
		}
		parts = append(parts, c.ID(i)+": "+s)
	}
	return strings.Join(parts, "; ") + "; net " + c.Net.String()
}

// Close kills every child process and stops the proxies.
func (c *Cluster) Close() error {
	var errs []error
	for _, r := range c.Replicas {
		if r.proc != nil {
			errs = append(errs, r.proc.Kill())
		}
	}
	if c.relay != nil {
		errs = append(errs, c.relay.Kill())
	}
	if c.Net != nil {
		c.Net.Close()
	}
	if c.httpClient != nil {
		c.httpClient.CloseIdleConnections()
	}
	return errors.Join(errs...)
}

// CounterSampler follows a counter on every replica across restarts (a
// counter that went down means the replica restarted from zero). Counts
// made between the last scrape and a kill are lost, so the total is a
// lower bound.
type CounterSampler struct {
	c     *Cluster
	name  string
	mu    sync.Mutex
	last  []float64
	total float64
}

// SampleCounter scrapes name on every replica every interval until ctx ends.
func (c *Cluster) SampleCounter(ctx context.Context, name string, interval time.Duration) *CounterSampler {
	s := &CounterSampler{c: c, name: name, last: make([]float64, len(c.Replicas))}
	go every(ctx, interval, s.sample)
	return s
}

// every runs f at once and then every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, f func()) {
	for {
		f()
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

func (s *CounterSampler) sample() {
	for i := range s.c.Replicas {
		m, err := s.c.Scrape(i)
		if err != nil {
			continue
		}
		v := m[s.name]
		s.mu.Lock()
		if v < s.last[i] {
			s.total += v
		} else {
			s.total += v - s.last[i]
		}
		s.last[i] = v
		s.mu.Unlock()
	}
}

// Total is the sum of the increases seen.
func (s *CounterSampler) Total() float64 {
	s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}
