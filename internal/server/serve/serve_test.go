package serve

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/server/ceremony"
	"github.com/cofferhq/coffer/token"

	"github.com/cofferhq/coffer/internal/server/fleetca"
	"github.com/cofferhq/coffer/internal/server/sealing/keyfile"
	"github.com/cofferhq/coffer/internal/server/vault"
)

// fleetDir runs the key ceremony in a temporary directory.
func fleetDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "fleet")
	if _, err := ceremony.Init(dir, 0); err != nil {
		t.Fatal(err)
	}
	return dir
}

// withTokens names an app token key (made for the test) in c.
func withTokens(t *testing.T, c *Config) *Config {
	t.Helper()
	pub, _, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := token.MarshalPublicKeyPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "app-token.pub")
	if err := os.WriteFile(path, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	c.AppTokenKey, c.AppTokenIssuer, c.VaultAudience = path, "test-app", "test-vault"
	return c
}

// freeAddr is a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// fast is Raft timing for a one-replica fleet in tests.
var fast = &RaftTiming{
	Heartbeat: Duration{Duration: 100 * time.Millisecond}, Election: Duration{Duration: 100 * time.Millisecond},
	LeaderLease: Duration{Duration: 50 * time.Millisecond}, Commit: Duration{Duration: 5 * time.Millisecond},
}

// startConfig opens and starts c and waits until its replica leads.
func startConfig(t *testing.T, c *Config) *Replica {
	t.Helper()
	spec, err := Open(c, Env{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	r, err := Start(spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, _, err := r.Replica().WaitForLeader(ctx); err != nil {
		r.Stop(context.Background())
		t.Fatalf("no leader: %v", err)
	}
	return r
}

func get(t *testing.T, hc *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A replica assembled from a plain configuration serves, stops cleanly
// (its port closes), and starts again from the state it left.
func TestStartStopRestart(t *testing.T) {
	dir := fleetDir(t)
	c := withTokens(t, &Config{ID: "solo", FleetDir: dir, Listen: freeAddr(t), RaftBind: freeAddr(t), Bootstrap: true, RaftTiming: fast})
	for round := range 2 {
		r := startConfig(t, c)
		if want := "http://" + c.Listen; r.URL() != want {
			t.Fatalf("URL %q, want %q", r.URL(), want)
		}
		if code, body := get(t, http.DefaultClient, r.URL()+"/readyz"); code != http.StatusOK {
			t.Fatalf("round %d: /readyz %d %q", round, code, body)
		}
		if err := r.Stop(context.Background()); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		if conn, err := net.DialTimeout("tcp", c.Listen, time.Second); err == nil {
			conn.Close()
			t.Fatalf("round %d: the VaultService port still accepts after Stop", round)
		}
		select {
		case err := <-r.Failed():
			t.Fatalf("Stop was reported as a failure: %v", err)
		default:
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "replica-solo")); err != nil {
		t.Fatalf("default data directory: %v", err)
	}
}

// With TLS and a sealing key file, the VaultService serves HTTPS that a
// client of the fleet CA accepts, and the secrets are read sealed.
func TestStartWithTLSAndSealing(t *testing.T) {
	dir := fleetDir(t)
	ca, err := fleetca.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	tlsDir := filepath.Join(t.TempDir(), "tls")
	if err := ca.IssueFiles(tlsDir, "r1", []string{"127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(t.TempDir(), "seal.key")
	kek, err := keyfile.Create(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := vault.LoadSecrets(filepath.Join(dir, ceremony.SecretsFile))
	if err != nil {
		t.Fatal(err)
	}
	sealed := filepath.Join(t.TempDir(), "secrets.sealed")
	if err := plain.SaveSealed(sealed, kek); err != nil {
		t.Fatal(err)
	}
	tlsCfg := &TLS{Cert: filepath.Join(tlsDir, fleetca.CertFile), Key: filepath.Join(tlsDir, fleetca.KeyFile), CA: filepath.Join(tlsDir, fleetca.CACertFile)}
	c := withTokens(t, &Config{
		ID: "r1", Secrets: sealed, DataDir: filepath.Join(t.TempDir(), "data"),
		Listen: freeAddr(t), RaftBind: freeAddr(t), Bootstrap: true, RaftTiming: fast,
		TLS: tlsCfg, Sealing: &Sealing{KeyFile: keyPath},
	})
	r := startConfig(t, c)
	defer r.Stop(context.Background())
	if !strings.HasPrefix(r.URL(), "https://") {
		t.Fatalf("URL %q is not HTTPS", r.URL())
	}
	client, err := fleetca.LoadTLS(tlsCfg.Cert, tlsCfg.Key, tlsCfg.CA)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, client.HTTPClient(), r.URL()+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz over mutual TLS: %d", code)
	}
	// Plain HTTP to the TLS port is refused.
	if resp, err := http.Get("http://" + c.Listen + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP served on the TLS port")
		}
	}
	// Without the key the sealed secrets cannot be read.
	bad := *c
	bad.Sealing = nil
	if _, err := Open(&bad, Env{}); err == nil {
		t.Fatal("sealed secrets opened without the sealing key")
	} else if he := (*HintError)(nil); !errors.As(err, &he) || he.Hint == "" {
		t.Fatalf("no hint for sealed secrets without a key: %v", err)
	}
}

// Check names what is missing, and Open refuses the same.
func TestConfigCheck(t *testing.T) {
	ok := Config{ID: "r1", FleetDir: "/f", Listen: "127.0.0.1:1", RaftBind: "127.0.0.1:2",
		AppTokenKey: "/app.pub", AppTokenIssuer: "app", VaultAudience: "vault"}
	cases := []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.FleetDir = "" }, "--dir"},
		{func(c *Config) { c.ID = "" }, "--id"},
		{func(c *Config) { c.Listen = "" }, "--listen"},
		{func(c *Config) { c.RaftBind = "" }, "--raft"},
		{func(c *Config) { c.FleetDir, c.Secrets = "", "/s.json" }, "--data"},
		{func(c *Config) { c.Peers = []Peer{{ID: "r2"}} }, "raft address"},
		{func(c *Config) { c.Sealing = &Sealing{KeyFile: "k", PKCS11: &PKCS11{}} }, "not both"},
		{func(c *Config) { c.TLS = &TLS{Cert: "c"} }, "cert, key and ca"},
		{func(c *Config) { c.AppTokenKey = "" }, "--token-key"},
		{func(c *Config) { c.VaultAudience = "" }, "--vault-audience"},
	}
	if err := ok.Check(); err != nil {
		t.Fatalf("complete config refused: %v", err)
	}
	for _, tc := range cases {
		c := ok
		tc.edit(&c)
		err := c.Check()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an ErrConfig naming %q, got %v", tc.want, err)
		}
		if _, err := Open(&c, Env{}); !errors.Is(err, ErrConfig) {
			t.Errorf("Open accepted what Check refuses (%q): %v", tc.want, err)
		}
	}
}

// A configuration file round-trips, and an unknown field is refused (a
// typo must not leave a setting at its default).
func TestConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replica.json")
	c := &Config{ID: "r1", FleetDir: "/f", Listen: "127.0.0.1:1", RaftBind: "127.0.0.1:2", RaftTiming: fast,
		Peers:     []Peer{{ID: "r2", Raft: "127.0.0.1:3", URL: "http://127.0.0.1:4", DataCentre: "b"}},
		Snapshots: &Snapshots{Threshold: 5, Interval: Duration{Duration: time.Second}}}
	if err := WriteConfig(path, c); err != nil {
		t.Fatal(err)
	}
	back, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.RaftTiming.Heartbeat != fast.Heartbeat || back.Snapshots.Interval.Duration != time.Second || back.Peers[0].DataCentre != "b" {
		t.Fatalf("round trip changed the config: %+v", back)
	}
	if err := os.WriteFile(path, []byte(`{"id":"r1","guess_limt":3}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "guess_limt") {
		t.Fatalf("unknown field: %v", err)
	}
	if err := os.WriteFile(path, []byte(`{"mark_interval":"soon"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); !errors.Is(err, ErrConfig) {
		t.Fatalf("bad duration: %v", err)
	}
}

// A start that fails leaves nothing listening.
func TestFailedStartLeavesNothing(t *testing.T) {
	dir := fleetDir(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	listen := freeAddr(t)
	c := withTokens(t, &Config{ID: "x", FleetDir: dir, Listen: listen, RaftBind: busy.Addr().String(), Bootstrap: true})
	spec, err := Open(c, Env{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Start(spec); err == nil {
		t.Fatal("started with the Raft address taken")
	}
	if conn, err := net.DialTimeout("tcp", listen, time.Second); err == nil {
		conn.Close()
		t.Fatal("the VaultService port was left open by a failed start")
	}
}

// TestPlaintextSecretsRefusedWhenSealed: with sealing configured, a
// plaintext fleet secrets file is refused (the replica's disk would be
// sealed under a key whose source lies next to it in the clear), with the
// command that seals it as the hint.
func TestPlaintextSecretsRefusedWhenSealed(t *testing.T) {
	dir := fleetDir(t)
	keyPath := filepath.Join(t.TempDir(), "seal.key")
	if _, err := keyfile.Create(keyPath); err != nil {
		t.Fatal(err)
	}
	c := withTokens(t, &Config{ID: "r1", FleetDir: dir, Listen: freeAddr(t), RaftBind: freeAddr(t), Bootstrap: true, Sealing: &Sealing{KeyFile: keyPath}})
	spec, err := Open(c, Env{})
	if err == nil {
		spec.Close()
		t.Fatal("plaintext fleet secrets accepted with sealing configured")
	}
	var he *HintError
	if !errors.As(err, &he) || !strings.Contains(he.Hint, "seal-secrets") {
		t.Fatalf("no seal-secrets hint: %v", err)
	}
}

// TestMetricsPort: /metrics is served on metrics_listen (a bare port
// means loopback) and not on the VaultService port.
func TestMetricsPort(t *testing.T) {
	if got := MetricsAddress("9100"); got != "127.0.0.1:9100" {
		t.Fatalf("MetricsAddress(9100) = %q", got)
	}
	if got := MetricsAddress(":9100"); got != "127.0.0.1:9100" {
		t.Fatalf("MetricsAddress(:9100) = %q", got)
	}
	if got := MetricsAddress("10.0.0.1:9100"); got != "10.0.0.1:9100" {
		t.Fatalf("MetricsAddress(10.0.0.1:9100) = %q", got)
	}
	_, port, _ := net.SplitHostPort(freeAddr(t))
	c := withTokens(t, &Config{ID: "solo", FleetDir: fleetDir(t), Listen: freeAddr(t), RaftBind: freeAddr(t), Bootstrap: true, RaftTiming: fast, MetricsListen: ":" + port})
	r := startConfig(t, c)
	defer r.Stop(context.Background())
	if code, _ := get(t, http.DefaultClient, r.URL()+"/metrics"); code != http.StatusNotFound {
		t.Fatalf("/metrics on the VaultService port: HTTP %d, want 404", code)
	}
	if a := r.MetricsAddr().String(); a != "127.0.0.1:"+port {
		t.Fatalf("metrics on %s", a)
	}
	code, body := get(t, http.DefaultClient, "http://127.0.0.1:"+port+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, "coffer_vault_raft_leader 1") {
		t.Fatalf("/metrics on the metrics port: HTTP %d\n%.300s", code, body)
	}
}

// TestPlainRaftOnlyOnLoopback: Raft without TLS binds loopback, or
// anything with insecure_plain_raft (read from the configuration file).
func TestPlainRaftOnlyOnLoopback(t *testing.T) {
	dir := fleetDir(t)
	_, port, _ := net.SplitHostPort(freeAddr(t))
	c := withTokens(t, &Config{ID: "solo", FleetDir: dir, Listen: freeAddr(t), RaftBind: "0.0.0.0:" + port, RaftAdvertise: "127.0.0.1:" + port, Bootstrap: true, RaftTiming: fast})
	spec, err := Open(c, Env{})
	if err != nil {
		t.Fatal(err)
	}
	var he *HintError
	if _, err := Start(spec); !errors.Is(err, ErrConfig) || !errors.As(err, &he) || !strings.Contains(he.Hint, "--insecure-plain-raft") {
		t.Fatalf("plain Raft on all interfaces: %v", err)
	}
	path := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(path, []byte(`{"insecure_plain_raft": true}`), 0o600)
	fc, err := LoadConfig(path)
	if err != nil || !fc.InsecurePlainRaft {
		t.Fatalf("insecure_plain_raft: %+v %v", fc, err)
	}
	c.InsecurePlainRaft = true
	startConfig(t, c).Stop(context.Background())
}
