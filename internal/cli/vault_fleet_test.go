package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/logcapture"

	"github.com/cofferhq/coffer/internal/server/ceremony"

	"github.com/cofferhq/coffer/internal/server/serve"

	"github.com/cofferhq/coffer/internal/server/fleetca"
	"github.com/cofferhq/coffer/internal/server/vault"
)

func runFleet(t *testing.T, ctx context.Context, args ...string) (string, int) {
	t.Helper()
	var out, errb logcapture.Buffer
	code := Main(ctx, args, Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }})
	return out.String() + errb.String(), code
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, code := runFleet(t, context.Background(), args...)
	if code != 0 {
		t.Fatalf("coffer %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestFleetTLSConfigMembership: the key ceremony makes the fleet CA; three
// replicas configured by --config files, with certificates from it and
// sealed secrets under their own key files, run Raft over mutual TLS; the
// second and third join online; status shows them; one is removed; the
// admin endpoint refuses a caller without a fleet certificate.
func TestFleetTLSConfigMembership(t *testing.T) {
	base := t.TempDir()
	fleetDir := filepath.Join(base, "fleet")
	mustRun(t, "vault", "init", "--dir", fleetDir)
	for _, f := range []string{fleetca.CACertFile, fleetca.CAKeyFile} {
		if _, err := os.Stat(filepath.Join(fleetDir, f)); err != nil {
			t.Fatalf("vault init made no %s: %v", f, err)
		}
	}
	admin := filepath.Join(base, "admin")
	mustRun(t, "vault", "cert", "--dir", fleetDir, "--id", "admin", "--host", "127.0.0.1", "--out", admin)

	type rep struct {
		id, raft, listen, url string
		cancel                context.CancelFunc
		done                  chan int
		logs                  *logcapture.Buffer
	}
	var reps []*rep
	// r2 and r3 dial their Raft peers from addresses of their own (Linux
	// routes all of 127.0.0.0/8 to the loopback interface; elsewhere they
	// use the default): the peers' certificate checks do not depend on it.
	sources := []string{"", "127.0.0.2", "127.0.0.3"}
	if ln, err := net.Listen("tcp", "127.0.0.2:0"); err != nil {
		sources = []string{"", "", ""}
	} else {
		ln.Close()
	}
	ctx, cancelAll := context.WithCancel(context.Background())
	defer cancelAll()
	ids := []string{"r1", "r2", "r3"}
	for _, id := range ids {
		r := &rep{id: id, raft: freeAddr(t), listen: freeAddr(t)}
		r.url = "https://" + r.listen
		reps = append(reps, r)
	}
	// r1 bootstraps alone; r2 and r3 start empty and are joined online.
	// Their configs list every replica (URLs and data centres are not
	// replicated by Raft: a replica knows those of its config's peers and
	// of the joins it accepted).
	tokenPub := appTokenKey(t, base)
	var all []serve.Peer
	for i, r := range reps {
		all = append(all, serve.Peer{ID: r.id, Raft: r.raft, URL: r.url, DataCentre: []string{"dc-a", "dc-b", "dc-c"}[i]})
	}
	for i, id := range ids {
		r := reps[i]
		dir := filepath.Join(base, id)
		mustRun(t, "vault", "cert", "--dir", fleetDir, "--id", id, "--host", "127.0.0.1", "--out", filepath.Join(dir, "tls"))
		mustRun(t, "vault", "seal-key", "--out", filepath.Join(base, id+".key"))
		mustRun(t, "vault", "seal-secrets", "--in", filepath.Join(fleetDir, ceremony.SecretsFile), "--out", filepath.Join(dir, "secrets.sealed"), "--key-file", filepath.Join(base, id+".key"))
		fast := serve.Duration{Duration: 300 * time.Millisecond}
		cfg := &serve.Config{
			ID: id, DataCentre: []string{"dc-a", "dc-b", "dc-c"}[i], Secrets: filepath.Join(dir, "secrets.sealed"),
			DataDir: filepath.Join(dir, "data"), Listen: r.listen, RaftBind: r.raft, RaftSourceAddr: sources[i], Bootstrap: i == 0,
			TLS:            &serve.TLS{Cert: filepath.Join(dir, "tls", fleetca.CertFile), Key: filepath.Join(dir, "tls", fleetca.KeyFile), CA: filepath.Join(dir, "tls", fleetca.CACertFile)},
			Sealing:        &serve.Sealing{KeyFile: filepath.Join(base, id+".key")},
			RaftTiming:     &serve.RaftTiming{Heartbeat: fast, Election: fast, LeaderLease: serve.Duration{Duration: 150 * time.Millisecond}, Commit: serve.Duration{Duration: 5 * time.Millisecond}},
			InsecureDevKSF: true,
			AppTokenKey:    tokenPub, AppTokenIssuer: "test-app", VaultAudience: "test-vault",
		}
		if i > 0 {
			cfg.Peers = all
		}
		cfgPath := filepath.Join(dir, "replica.json")
		if err := serve.WriteConfig(cfgPath, cfg); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		r.cancel, r.done, r.logs = cancel, make(chan int, 1), &logcapture.Buffer{}
		go func() {
			r.done <- Main(rctx, []string{"vault", "serve", "--config", cfgPath}, Env{Stdout: r.logs, Stderr: r.logs, Getenv: func(string) string { return "" }})
		}()
	}
	t.Cleanup(func() {
		for _, r := range reps {
			r.cancel()
			select {
			case <-r.done:
			case <-time.After(20 * time.Second):
			}
			if t.Failed() {
				t.Logf("%s logs:\n%s", r.id, r.logs.String())
			}
		}
	})

	status := func(url string) (vault.Status, string, int) {
		out, code := runFleet(t, context.Background(), "vault", "status", "--url", url, "--tls-dir", admin, "--json")
		var st vault.Status
		json.Unmarshal([]byte(out), &st)
		return st, out, code
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, out, code := status(reps[0].url)
		if code == 0 && st.LeaderID == "r1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("r1 not leader: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Join r2 via r1, r3 via r2 (a follower: join follows the leader).
	mustRun(t, "vault", "join", "--leader", reps[0].url, "--id", "r2", "--raft", reps[1].raft, "--url", reps[1].url, "--dc", "dc-b", "--tls-dir", admin)
	mustRun(t, "vault", "join", "--leader", reps[1].url, "--id", "r3", "--raft", reps[2].raft, "--url", reps[2].url, "--dc", "dc-c", "--tls-dir", admin)
	deadline = time.Now().Add(20 * time.Second)
	for {
		st, out, _ := status(reps[2].url)
		if st.LeaderID == "r1" && len(st.Members) == 3 && st.AppliedIndex >= st.CommitIndex && st.CommitIndex > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("r3 did not catch up: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	st, out, _ := status(reps[0].url)
	if len(st.Members) != 3 || st.Members[1].DataCentre != "dc-b" || st.DataCentre != "dc-a" {
		t.Fatalf("status: %s", out)
	}
	human := mustRun(t, "vault", "status", "--url", reps[0].url, "--tls-dir", admin)
	if !strings.Contains(human, "members (3, quorum 2)") || !strings.Contains(human, "* r1") {
		t.Fatalf("human status:\n%s", human)
	}

	// No client certificate: the admin endpoint refuses; VaultService's
	// /readyz still answers over TLS (relays need no certificate).
	caPEM, _ := os.ReadFile(filepath.Join(fleetDir, fleetca.CACertFile))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	resp, err := hc.Get(reps[0].url + "/admin/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("admin without a client certificate: HTTP %d", resp.StatusCode)
	}
	resp, err = hc.Get(reps[0].url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz: HTTP %d", resp.StatusCode)
	}

	// SIGTERM (context end) on the leader hands leadership over to one of
	// the two others, which keep a quorum.
	reps[0].cancel()
	if code := <-reps[0].done; code != 0 {
		t.Fatalf("r1 exited %d", code)
	}
	reps[0].done <- 0
	deadline = time.Now().Add(20 * time.Second)
	var leader string
	for {
		st, _, _ := status(reps[1].url)
		if st.LeaderID == "r2" || st.LeaderID == "r3" {
			leader = st.LeaderID
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no replica took over from r1: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Remove the stopped replica (asking a replica that may be a follower).
	mustRun(t, "vault", "remove", "--leader", reps[1].url, "--id", "r1", "--tls-dir", admin)
	if st, out, _ := status(reps[1].url); len(st.Members) != 2 {
		t.Fatalf("after remove (leader %s): %s", leader, out)
	}
}

func TestReplicaConfigFields(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replica.json")
	os.WriteFile(path, []byte(`{"id":"r1","listen":"127.0.0.1:1","raft_bind":"127.0.0.1:2",
		"raft_timing":{"heartbeat_timeout":"300ms","commit_timeout":"10ms"},
		"snapshots":{"threshold":100,"interval":"30s","trailing_logs":50}, "raft_source_addr":"127.0.0.2"}`), 0o600)
	c, err := serve.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.RaftSourceAddr != "127.0.0.2" {
		t.Fatalf("raft_source_addr: %q", c.RaftSourceAddr)
	}
	if c.Snapshots == nil || c.Snapshots.Threshold != 100 || c.Snapshots.Interval.Duration != 30*time.Second || c.Snapshots.TrailingLogs != 50 {
		t.Fatalf("snapshots: %+v", c.Snapshots)
	}
	if c.RaftTiming == nil || c.RaftTiming.Heartbeat.Duration != 300*time.Millisecond || c.RaftTiming.Commit.Duration != 10*time.Millisecond {
		t.Fatalf("raft_timing: %+v", c.RaftTiming)
	}
	os.WriteFile(path, []byte(`{"id":"r1","snapshots":{"treshold":100}}`), 0o600)
	if _, err := serve.LoadConfig(path); err == nil || !strings.Contains(err.Error(), "treshold") {
		t.Fatalf("a misspelt field: %v", err)
	}
}

// appTokenKey makes an app backend token key pair in dir ('coffer relay
// keygen') and returns the public key's path, for --token-key.
func appTokenKey(t *testing.T, dir string) string {
	t.Helper()
	pub := filepath.Join(dir, "app-token.pub")
	mustRun(t, "relay", "keygen", "--private", filepath.Join(dir, "app-token.key"), "--public", pub)
	return pub
}

func TestRaftSourceAddrRefused(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, "vault", "init", "--dir", dir)
	out, code := runFleet(t, context.Background(), "vault", "serve", "--dir", dir, "--id", "r1", "--listen", freeAddr(t),
		"--raft", freeAddr(t), "--data", filepath.Join(dir, "data"), "--raft-source-addr", "127.0.0.1:7000",
		"--token-key", appTokenKey(t, dir), "--issuer", "test-app", "--vault-audience", "test-vault")
	if code != ExitUsage || !strings.Contains(out, "not an IP address") {
		t.Fatalf("a source address with a port: exit %d\n%s", code, out)
	}
}
