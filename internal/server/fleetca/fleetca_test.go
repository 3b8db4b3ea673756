package fleetca

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/server/replica"
	"github.com/cofferhq/coffer/internal/server/vaultstate"
)

func newCA(t *testing.T) *CA {
	t.Helper()
	ca, err := Create(t.TempDir(), "test")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *CA, id string) *TLS {
	t.Helper()
	c, k, err := ca.Issue(id, []string{"127.0.0.1", "localhost"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := NewTLS(c, k, ca.PEM)
	if err != nil {
		t.Fatal(err)
	}
	if tl.ID != id {
		t.Fatalf("id %q, want %q", tl.ID, id)
	}
	return tl
}

func TestCreateLoadIssueFiles(t *testing.T) {
	dir := t.TempDir()
	ca, err := Create(dir, "f")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Create(dir, "f"); err == nil {
		t.Fatal("Create overwrote the CA")
	}
	ca2, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !ca2.Cert.Equal(ca.Cert) {
		t.Fatal("loaded another CA")
	}
	out := filepath.Join(t.TempDir(), "r1")
	if err := ca2.IssueFiles(out, "r1", []string{"127.0.0.1", "vault-1.example"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := ca2.IssueFiles(out, "r1", []string{"127.0.0.1"}, time.Hour); err == nil {
		t.Fatal("IssueFiles overwrote a certificate")
	}
	tl, err := LoadTLS(filepath.Join(out, CertFile), filepath.Join(out, KeyFile), filepath.Join(out, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(tl.Cert.Certificate[0])
	if tl.ID != "r1" || leaf.Subject.CommonName != "r1" || len(leaf.IPAddresses) != 1 || leaf.DNSNames[0] != "vault-1.example" {
		t.Fatalf("certificate: id %q cn %q ips %v dns %v", tl.ID, leaf.Subject.CommonName, leaf.IPAddresses, leaf.DNSNames)
	}
	if len(leaf.ExtKeyUsage) != 2 {
		t.Fatalf("EKUs %v", leaf.ExtKeyUsage)
	}
	// A certificate from another CA is refused against this CA.
	other := newCA(t)
	c, k, _ := other.Issue("r1", []string{"127.0.0.1"}, 0)
	if _, err := NewTLS(c, k, ca.PEM); err == nil {
		t.Fatal("NewTLS accepted a certificate from another CA")
	}
}

func fastConfig(id string, logger *slog.Logger) replica.Config {
	return replica.Config{
		ID: id, HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond, CommitTimeout: 5 * time.Millisecond, Logger: logger,
	}
}

type node struct {
	r  *replica.Replica
	ln net.Listener
}

func startNodes(t *testing.T, tlss []*TLS, ids []string) []*replica.Replica {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	lns := make([]net.Listener, len(ids))
	var peers []replica.Peer
	for i, id := range ids {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln
		peers = append(peers, replica.Peer{ID: id, Addr: ln.Addr().String()})
	}
	var rs []*replica.Replica
	for i, id := range ids {
		cfg := fastConfig(id, logger)
		cfg.Dir = t.TempDir()
		cfg.Bootstrap = true
		cfg.Peers = peers
		sl, err := replica.NewStreamLayer(tlss[i].Listener(lns[i]), "", tlss[i].Dial())
		if err != nil {
			t.Fatal(err)
		}
		cfg.StreamLayer = sl
		r, err := replica.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		rs = append(rs, r)
	}
	return rs
}

func register(t *testing.T, r *replica.Replica) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := r.Apply(ctx, vaultstate.Command{Time: time.Now().UnixMilli(), RequestID: vaultstate.RequestID{1}, RecordID: vaultstate.RecordID{7}, Op: &vaultstate.RegisterCheck{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.(*vaultstate.RegisterCheckResult); !ok {
		t.Fatalf("result %T %+v", res, res)
	}
}

func leaderOf(t *testing.T, rs []*replica.Replica) *replica.Replica {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range rs {
			if r.IsLeader() {
				return r
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no leader elected")
	return nil
}

// TestMutualTLSFleet: three replicas with certificates from the fleet CA
// elect a leader and commit over TLS; a fourth bootstrapped with them but
// holding a certificate from another CA is refused at TLS, so it never hears
// from the leader, and the other three still form a majority.
func TestMutualTLSFleet(t *testing.T) {
	ca := newCA(t)
	other := newCA(t)
	ids := []string{"a", "b", "c", "x"}
	tlss := []*TLS{issue(t, ca, "a"), issue(t, ca, "b"), issue(t, ca, "c"), issue(t, other, "x")}
	rs := startNodes(t, tlss, ids)
	good := rs[:3]
	leader := leaderOf(t, good)
	register(t, leader)
	if leader == rs[3] {
		t.Fatal("the foreign replica became leader")
	}
	// Every good replica applies the entry; the foreign one applies nothing.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok := true
		for _, r := range good {
			if r.Stats().AppliedIndex < leader.Stats().CommitIndex {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("good replicas did not catch up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := rs[3].Stats(); st.CommitIndex != 0 || st.LeaderID != "" {
		t.Fatalf("the foreign replica heard from the fleet: %+v", st)
	}
}

// TestTLSRefusals: a client with another CA's certificate, or with none,
// cannot talk to a replica's Raft port; one from the fleet CA can.
func TestTLSRefusals(t *testing.T) {
	ca := newCA(t)
	rs := startNodes(t, []*TLS{issue(t, ca, "a")}, []string{"a"})
	leaderOf(t, rs)
	addr := rs[0].Addr()

	try := func(cfg *tls.Config) error {
		d := tls.Dialer{Config: cfg}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		// TLS 1.3: the server checks the client certificate after the
		// client's handshake finished; its refusal arrives on the first read.
		c.Write([]byte{0})
		_, err = c.Read(make([]byte, 1))
		return err
	}
	other := issue(t, newCA(t), "a")
	if err := try(other.ClientConfig("127.0.0.1")); err == nil {
		t.Fatal("a certificate from another CA was accepted")
	}
	// No client certificate, trusting the fleet CA.
	if err := try(&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: issue(t, ca, "z").Pool, ServerName: "127.0.0.1"}); err == nil {
		t.Fatal("a client without a certificate was accepted")
	}
	// Plain TCP gets no Raft answer either.
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(bytes.Repeat([]byte{0}, 64))
		n, _ := c.Read(make([]byte, 64))
		c.Close()
		if n > 0 {
			t.Fatal("plain TCP got an answer")
		}
	}
	// A replica certificate from this CA completes the handshake (the
	// server then waits for a Raft request: the read times out).
	good := issue(t, ca, "b")
	d := tls.Dialer{Config: good.ClientConfig("127.0.0.1")}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	gc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	gc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = gc.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("fleet certificate: read %v, want a timeout (connection open)", err)
	}
	gc.Close()
	// The server's certificate is checked by clients too: a fleet client
	// refuses a server with another CA's certificate.
	if _, err := other.Dial()(ctx, addr); err == nil {
		t.Fatal("dialing a fleet replica with another CA's trust succeeded")
	}
}
