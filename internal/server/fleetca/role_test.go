package fleetca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"slices"
	"testing"
	"time"
)

func issueRole(t *testing.T, ca *CA, role Role, name string) *TLS {
	t.Helper()
	c, k, err := ca.IssueRole(role, name, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := NewTLS(c, k, ca.PEM)
	if err != nil {
		t.Fatal(err)
	}
	if tl.Role != role || tl.ID != name {
		t.Fatalf("certificate reads as %s %q, want %s %q", tl.Role, tl.ID, role, name)
	}
	return tl
}

// TestIssueRoles: each role's certificate names it in its URI SAN; a
// replica's is a server and client certificate, an operator's and a
// relay's client-only and need no host; unknown roles and bad names are
// refused.
func TestIssueRoles(t *testing.T) {
	ca := newCA(t)
	for _, role := range Roles {
		tl := issueRole(t, ca, role, "n-1")
		leaf, _ := x509.ParseCertificate(tl.Cert.Certificate[0])
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "coffer-"+string(role)+"://n-1" {
			t.Fatalf("%s: URIs %v", role, leaf.URIs)
		}
		server := slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		if server != (role == RoleReplica) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
			t.Fatalf("%s: key usages %v", role, leaf.ExtKeyUsage)
		}
	}
	if _, _, err := ca.IssueRole(RoleOperator, "alice", nil, 0); err != nil {
		t.Fatalf("operator without hosts: %v", err)
	}
	if _, _, err := ca.IssueRole(RoleReplica, "r1", nil, 0); err == nil {
		t.Fatal("a replica certificate without hosts")
	}
	if _, _, err := ca.IssueRole("admin", "x", []string{"h"}, 0); err == nil {
		t.Fatal("an unknown role was issued")
	}
	if _, err := ParseRole("operator"); err != nil {
		t.Fatal(err)
	}
	// Issue (and so every replica certificate issued before roles) is a
	// replica's.
	c, k, _ := ca.Issue("r7", []string{"127.0.0.1"}, 0)
	if tl, _ := NewTLS(c, k, ca.PEM); tl.Role != RoleReplica || tl.ID != "r7" {
		t.Fatalf("Issue: %s %q", tl.Role, tl.ID)
	}
}

// TestIdentity: the role comes from exactly one coffer-ROLE:// URI; none,
// or two, is no role.
func TestIdentity(t *testing.T) {
	u := func(s string) *url.URL { v, _ := url.Parse(s); return v }
	for _, c := range []struct {
		uris []*url.URL
		role Role
		name string
	}{
		{[]*url.URL{u("coffer-replica://r1")}, RoleReplica, "r1"},
		{[]*url.URL{u("coffer-operator://alice")}, RoleOperator, "alice"},
		{[]*url.URL{u("coffer-relay://relay")}, RoleRelay, "relay"},
		{nil, "", "cn"},
		{[]*url.URL{u("https://example")}, "", "cn"},
		{[]*url.URL{u("coffer-replica://r1"), u("coffer-operator://r1")}, "", "cn"},
	} {
		cert := &x509.Certificate{URIs: c.uris}
		cert.Subject.CommonName = "cn"
		if role, name := Identity(cert); role != c.role || name != c.name {
			t.Errorf("%v: %s %q, want %s %q", c.uris, role, name, c.role, c.name)
		}
	}
}

// dialRaw connects to addr with cfg and reads once: nil means the server
// kept the connection open (accepted), an error that it refused.
func dialRaw(addr string, cfg *tls.Config) error {
	d := tls.Dialer{Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = c.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return nil
	}
	return err
}

// TestRaftListenerRoles: Raft's listener (Listener) takes replica
// certificates only: an operator's or a relay's, from the same CA, is
// refused at the handshake. PeerListener applies a caller's rule (serve's:
// members only).
func TestRaftListenerRoles(t *testing.T) {
	ca := newCA(t)
	srv := issueRole(t, ca, RoleReplica, "a")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tln := srv.Listener(ln)
	defer tln.Close()
	go func() {
		for {
			c, err := tln.Accept()
			if err != nil {
				return
			}
			go func() { c.Read(make([]byte, 1)); c.Close() }()
		}
	}()
	addr := ln.Addr().String()
	if err := dialRaw(addr, issueRole(t, ca, RoleReplica, "b").ClientConfig("127.0.0.1")); err != nil {
		t.Fatalf("replica certificate refused: %v", err)
	}
	for _, role := range []Role{RoleOperator, RoleRelay} {
		if err := dialRaw(addr, issueRole(t, ca, role, "x").ClientConfig("127.0.0.1")); err == nil {
			t.Fatalf("%s certificate accepted on the Raft port", role)
		}
	}

	// A caller's rule: only replica "a".
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	only := srv.PeerListener(ln2, func(role Role, name string) error {
		if role == RoleReplica && name == "a" {
			return nil
		}
		return ErrRole
	})
	defer only.Close()
	go func() {
		for {
			c, err := only.Accept()
			if err != nil {
				return
			}
			go func() { c.Read(make([]byte, 1)); c.Close() }()
		}
	}()
	if err := dialRaw(ln2.Addr().String(), issueRole(t, ca, RoleReplica, "b").ClientConfig("127.0.0.1")); err == nil {
		t.Fatal("a replica the rule does not name was accepted")
	}
	if err := dialRaw(ln2.Addr().String(), srv.ClientConfig("127.0.0.1")); err != nil {
		t.Fatalf("the named replica was refused: %v", err)
	}
}

// TestClientRefusesNonReplicaServer: a replica dialing a peer (Raft, or
// forwarding to the leader) refuses a server presenting an operator's
// certificate of the same CA.
func TestClientRefusesNonReplicaServer(t *testing.T) {
	ca := newCA(t)
	// The impostor's certificate is a server certificate of the fleet CA
	// for 127.0.0.1 (so chain and host verify) whose role is operator: the
	// role is what the client refuses.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	op, _ := url.Parse("coffer-operator://mallory")
	tmpl := &x509.Certificate{
		SerialNumber: serial(), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{op}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	me := issueRole(t, ca, RoleReplica, "a")
	_, err = me.Dial()(context.Background(), ln.Addr().String())
	if !errors.Is(err, ErrRole) {
		t.Fatalf("dialing a server with an operator's certificate: %v, want ErrRole", err)
	}
	t.Logf("refused: %v", err)
}

// TestAdminAllowed: replicas and operators may administer, relays and
// role-less certificates may not.
func TestAdminAllowed(t *testing.T) {
	for role, ok := range map[Role]bool{RoleReplica: true, RoleOperator: true, RoleRelay: false, "": false} {
		err := AdminAllowed(role, "x")
		if (err == nil) != ok {
			t.Errorf("%q: %v", role, err)
		}
		if err != nil && !errors.Is(err, ErrRole) {
			t.Errorf("%q: %v does not wrap ErrRole", role, err)
		}
	}
}
