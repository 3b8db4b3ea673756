package attack

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cofferhq/coffer/internal/protocol/vaultv1/vaultv1connect"
	"github.com/cofferhq/coffer/internal/server/fleetca"
	"github.com/cofferhq/coffer/internal/server/serve"
	"github.com/cofferhq/coffer/internal/server/vault"
	"github.com/cofferhq/coffer/internal/server/vaultstate"
	"github.com/cofferhq/coffer/token"
)

const wait = 15 * time.Second

// fleet is what the attacks need of a fleet: its secrets, its CA (when
// it runs TLS) and a directory.
type fleet struct {
	t       *testing.T
	dir     string
	secrets *vault.Secrets
	ca      *fleetca.CA
	// advertise is the next spec's RaftAdvertise (allInterfaces).
	advertise string
}

func newFleet(t *testing.T, withTLS bool) *fleet {
	t.Helper()
	f := &fleet{t: t, dir: t.TempDir()}
	var err error
	if f.secrets, err = vault.GenerateSecrets(); err != nil {
		t.Fatal(err)
	}
	if withTLS {
		if f.ca, err = fleetca.Create(filepath.Join(f.dir, "ca"), "attack"); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// tlsFor issues role a certificate named name and loads it as TLS
// material.
func (f *fleet) tlsFor(role fleetca.Role, name string) *fleetca.TLS {
	f.t.Helper()
	c, k, err := f.ca.IssueRole(role, name, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		f.t.Fatal(err)
	}
	tl, err := fleetca.NewTLS(c, k, f.ca.PEM)
	if err != nil {
		f.t.Fatal(err)
	}
	return tl
}

// spec is a one-replica fleet's Spec, bootstrapping, with Raft on raftBind.
func (f *fleet) spec(id, raftBind string) *serve.Spec {
	s := &serve.Spec{
		ID: id, DataDir: filepath.Join(f.dir, id), Secrets: f.secrets,
		Listen: "127.0.0.1:0", RaftBind: raftBind, Bootstrap: true, InsecureDevKSF: true,
		Tokens: &token.Verifier{Key: make(ed25519.PublicKey, ed25519.PublicKeySize), Issuer: "attack", Audience: "attack-vault"},
		Timing: serve.Timing{Heartbeat: 300 * time.Millisecond, Election: 300 * time.Millisecond, LeaderLease: 150 * time.Millisecond, Commit: 5 * time.Millisecond},
		Logger: testLogger(f.t),
	}
	if f.ca != nil {
		s.TLS = f.tlsFor(fleetca.RoleReplica, id)
	}
	s.RaftAdvertise, f.advertise = f.advertise, ""
	return s
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("ATTACK_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

func start(t *testing.T, s *serve.Spec) *serve.Replica {
	t.Helper()
	r, err := serve.Start(s)
	if err != nil {
		t.Fatalf("start %s: %v", s.ID, err)
	}
	t.Cleanup(func() { r.Stop(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for !r.Replica().IsLeader() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s did not lead", s.ID)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return r
}

// dialer makes raft.StreamLayer connections for the attacker.
type dialer struct {
	dial func(ctx context.Context, addr string) (net.Conn, error)
	net.Listener
}

func (d dialer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.dial(ctx, string(addr))
}

// inject plays a Raft leader of a higher term against target: it finds the
// end of target's log, appends one entry holding cmd and tells target it is
// committed. It returns nil once target answered the append with success.
// dial is how it reaches target (plain TCP, or TLS with some certificate).
func inject(t *testing.T, target string, dial func(ctx context.Context, addr string) (net.Conn, error), cmd vaultstate.Command) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	trans := raft.NewNetworkTransport(dialer{dial: dial, Listener: ln}, 1, 5*time.Second, io.Discard)
	defer trans.Close()
	hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("attacker"), Addr: []byte(ln.Addr().String())}
	const term = 1000
	var resp raft.AppendEntriesResponse
	// A heartbeat of term 1000 with no previous entry: the target steps
	// down and says where its log ends.
	if err := trans.AppendEntries("victim", raft.ServerAddress(target), &raft.AppendEntriesRequest{RPCHeader: hdr, Term: term}, &resp); err != nil {
		return err
	}
	last := resp.LastLog
	data, err := cmd.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for prevTerm := uint64(1); prevTerm <= 20; prevTerm++ {
		req := &raft.AppendEntriesRequest{
			RPCHeader: hdr, Term: term, PrevLogEntry: last, PrevLogTerm: prevTerm,
			Entries:           []*raft.Log{{Index: last + 1, Term: term, Type: raft.LogCommand, Data: data}},
			LeaderCommitIndex: last + 1,
		}
		if err := trans.AppendEntries("victim", raft.ServerAddress(target), req, &resp); err != nil {
			return err
		}
		if resp.Success {
			return nil
		}
	}
	return fmt.Errorf("the target refused every append (log ends at %d)", last)
}

// injectedRecord is the record id the attacker registers.
var injectedRecord = vaultstate.RecordID{0xBA, 0xD0}

func registerCheck() vaultstate.Command {
	return vaultstate.Command{RequestID: vaultstate.RequestID{0xBA, 0xD0}, Time: time.Now().UnixMilli(), RecordID: injectedRecord, Op: &vaultstate.RegisterCheck{}}
}

// applied reports whether the injected RegisterCheck reached r's state
// (it reserves epoch 1), waiting a little.
func applied(t *testing.T, r *serve.Replica) bool {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		acc, err := r.Replica().Lookup(injectedRecord)
		if err == nil && acc.Reserved > 0 {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// allInterfaces is a Raft bind address on every interface, with a free
// port (peers are told 127.0.0.1 and that port).
func allInterfaces(t *testing.T, f *fleet) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	f.advertise = "127.0.0.1:" + port
	return "0.0.0.0:" + port
}

func plainDial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// TestAttackPlainRaftInjection: Raft without TLS on an address other hosts
// reach (here all interfaces) lets anyone who reaches the port claim a
// higher term and commit commands. serve refuses to start such a replica
// unless told InsecurePlainRaft; on loopback (development) plain Raft still
// runs.
func TestAttackPlainRaftInjection(t *testing.T) {
	f := newFleet(t, false)
	s := f.spec("r1", allInterfaces(t, f))
	r, err := serve.Start(s)
	if err == nil {
		defer r.Stop(context.Background())
		_, port, _ := net.SplitHostPort(r.Replica().Addr())
		ierr := inject(t, "127.0.0.1:"+port, plainDial, registerCheck())
		t.Fatalf("a replica with plain Raft on all interfaces started; injection: %v, entry applied: %v", ierr, applied(t, r))
	}
	t.Logf("refused: %v", err)

	// With the explicit setting it starts (and the attack works: that is
	// what the setting accepts).
	s = f.spec("r2", allInterfaces(t, f))
	s.InsecurePlainRaft = true
	r = start(t, s)
	_, port, _ := net.SplitHostPort(r.Replica().Addr())
	if err := inject(t, "127.0.0.1:"+port, plainDial, registerCheck()); err != nil || !applied(t, r) {
		t.Fatalf("control: injection into plain Raft failed (%v): the attack test does not attack", err)
	}
}

// TestAttackOperatorCertOnRaft: an operator's certificate (from 'coffer
// vault cert --role operator', for status/join/remove) chains to the fleet
// CA but must not be accepted on the Raft port; nor a relay's; nor a
// replica certificate naming a replica that is not a member.
func TestAttackOperatorCertOnRaft(t *testing.T) {
	f := newFleet(t, true)
	r := start(t, f.spec("r1", "127.0.0.1:0"))
	target := r.Replica().Addr()
	for _, c := range []struct {
		role fleetca.Role
		name string
	}{{fleetca.RoleOperator, "alice"}, {fleetca.RoleRelay, "relay-1"}, {fleetca.RoleReplica, "r9"}} {
		tl := f.tlsFor(c.role, c.name)
		err := inject(t, target, tl.Dial(), registerCheck())
		if err == nil || applied(t, r) {
			t.Fatalf("%s certificate %q: injection %v, applied %v", c.role, c.name, err, applied(t, r))
		}
		t.Logf("%s %q refused: %v", c.role, c.name, err)
	}
	// Control: a member's own certificate is a peer (this is what Raft
	// trusts, and why member certificates are guarded like the CA key).
	if err := inject(t, target, f.tlsFor(fleetca.RoleReplica, "r1").Dial(), registerCheck()); err != nil || !applied(t, r) {
		t.Fatalf("control: a member's certificate could not append (%v): the attack test does not attack", err)
	}
}

// TestAttackRelayCertOnAdmin: the admin endpoint (membership changes)
// takes replica and operator certificates of the fleet CA, not a relay's.
func TestAttackRelayCertOnAdmin(t *testing.T) {
	f := newFleet(t, true)
	r := start(t, f.spec("r1", "127.0.0.1:0"))
	status := func(tl *fleetca.TLS) int {
		hc := tl.HTTPClient()
		defer hc.CloseIdleConnections()
		resp, err := hc.Get(r.URL() + "/admin/status")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := status(f.tlsFor(fleetca.RoleRelay, "relay-1")); code != http.StatusForbidden {
		t.Fatalf("relay certificate on /admin/status: HTTP %d, want 403", code)
	}
	for _, role := range []fleetca.Role{fleetca.RoleOperator, fleetca.RoleReplica} {
		if code := status(f.tlsFor(role, "x")); code != http.StatusOK {
			t.Fatalf("%s certificate on /admin/status: HTTP %d, want 200", role, code)
		}
	}
}

// TestAttackVaultServiceCallers (attack 2, the port): anyone who reached a
// replica's VaultService port could name any account. On a TLS fleet the
// port now serves the VaultService only to relay and replica certificates
// of the fleet CA; a caller without one — or with an operator's — is
// refused before the vault reads a byte, while health checks still answer
// anyone. (The vault token check behind it is TestAttackActingForAnAccount.)
func TestAttackVaultServiceCallers(t *testing.T) {
	f := newFleet(t, true)
	r := start(t, f.spec("r1", "127.0.0.1:0"))
	anonymous := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: fleetca.AnonymousClientConfig(f.tlsFor(fleetca.RoleRelay, "pool").Pool)}}
	defer anonymous.CloseIdleConnections()
	call := func(hc *http.Client, path string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, r.URL()+path, http.NoBody)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/proto")
		if path == "/healthz" {
			req.Method = http.MethodGet
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	const exchange = vaultv1connect.VaultServiceExchangeProcedure
	if code := call(anonymous, exchange); code != http.StatusForbidden {
		t.Errorf("the VaultService without a certificate: HTTP %d, want 403", code)
	}
	if code := call(anonymous, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz without a certificate: HTTP %d, want 200", code)
	}
	op := f.tlsFor(fleetca.RoleOperator, "operator-1").HTTPClient()
	defer op.CloseIdleConnections()
	if code := call(op, exchange); code != http.StatusForbidden {
		t.Errorf("the VaultService with an operator certificate: HTTP %d, want 403", code)
	}
	for _, role := range []fleetca.Role{fleetca.RoleRelay, fleetca.RoleReplica} {
		hc := f.tlsFor(role, "caller").HTTPClient()
		// An empty request reaches the vault, which refuses it as
		// malformed: anything but the port's 403.
		if code := call(hc, exchange); code == http.StatusForbidden {
			t.Errorf("the VaultService with a %s certificate: HTTP 403, want the vault's own answer", role)
		}
		hc.CloseIdleConnections()
	}
}

// TestAttackEvaluateEndpointCallers: the threshold fleet's partial
// evaluations travel between replicas on vault.EvaluatePath; on a TLS
// fleet a relay's, an operator's or no certificate is refused there.
func TestAttackEvaluateEndpointCallers(t *testing.T) {
	f := newFleet(t, true)
	r := start(t, f.spec("r1", "127.0.0.1:0"))
	for name, hc := range map[string]*http.Client{
		"no certificate": {Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: fleetca.AnonymousClientConfig(f.tlsFor(fleetca.RoleRelay, "pool").Pool)}},
		"a relay's":      f.tlsFor(fleetca.RoleRelay, "relay-1").HTTPClient(),
		"an operator's":  f.tlsFor(fleetca.RoleOperator, "op-1").HTTPClient(),
	} {
		resp, err := hc.Post(r.URL()+vault.EvaluatePath, "application/json", strings.NewReader(`{"kind":"public","account":"a","epoch":1}`))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s certificate on the evaluation endpoint: HTTP %d, want 403", name, resp.StatusCode)
		}
		hc.CloseIdleConnections()
	}
}
