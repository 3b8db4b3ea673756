package fleetca

import (
	"context"
	"crypto/tls"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// served is what serveOnce saw: the handshake's result and the client
// certificate's replica id ("" if none).
type served struct {
	err error
	id  string
}

// serveOnce accepts one TLS connection with cfg, completes the handshake
// and answers one byte.
func serveOnce(t *testing.T, cfg *tls.Config) (string, <-chan served) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	res := make(chan served, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- served{err: err}
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tc.HandshakeContext(ctx); err != nil {
			res <- served{err: err}
			return
		}
		st := tc.ConnectionState()
		var id string
		if HasFleetCert(&st) {
			id = ReplicaID(st.PeerCertificates[0])
		}
		tc.Write([]byte{1})
		res <- served{id: id}
	}()
	return ln.Addr().String(), res
}

// exchange dials addr with dial and reads the server's byte: in TLS 1.3 a
// refused client certificate shows on the client's first read.
func exchange(dial func(ctx context.Context, addr string) (net.Conn, error), addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := dial(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	return err
}

func dialWith(cfg *tls.Config) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		return (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	}
}

// TestClientConfigHandshake: two certificates of one CA complete a mutual
// handshake through ClientConfig, Dial and DialFrom; a certificate from
// another CA is refused by the server, and a server with one by the client.
func TestClientConfigHandshake(t *testing.T) {
	ca := newCA(t)
	a, b := issue(t, ca, "a"), issue(t, ca, "b")
	other := issue(t, newCA(t), "b")

	for name, dial := range map[string]func(context.Context, string) (net.Conn, error){
		"ClientConfig": dialWith(b.ClientConfig("127.0.0.1")),
		"Dial":         b.Dial(),
		"DialFrom":     b.DialFrom(&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}),
		"DialFrom nil": b.DialFrom(nil),
	} {
		addr, res := serveOnce(t, a.ServerConfig())
		if err := exchange(dial, addr); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r := <-res; r.err != nil || r.id != "b" {
			t.Fatalf("%s: server saw %v, client id %q; want b", name, r.err, r.id)
		}
	}

	// The client's certificate is from another CA: the server refuses it.
	addr, res := serveOnce(t, a.ServerConfig())
	if err := exchange(other.Dial(), addr); err == nil {
		t.Fatal("a client certificate from another CA was accepted")
	}
	if r := <-res; r.err == nil {
		t.Fatal("the server completed a handshake with another CA's certificate")
	}

	// The server's certificate is from another CA: the client refuses it
	// (DialFrom names the source address).
	addr, _ = serveOnce(t, other.ServerConfig())
	err := exchange(b.DialFrom(&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}), addr)
	if err == nil {
		t.Fatal("the client accepted a server certificate from another CA")
	}
	if !strings.Contains(err.Error(), "mutual TLS to peer "+addr+" from 127.0.0.1") {
		t.Fatalf("error %q does not name the peer and the source", err)
	}

	// The server's certificate does not name the host dialed.
	addr, _ = serveOnce(t, a.ServerConfig())
	if err := exchange(dialWith(b.ClientConfig("vault-9.example")), addr); err == nil {
		t.Fatal("the client accepted a certificate for another host")
	}
}

// TestAnonymousClientConfig: a client without a certificate, trusting the
// fleet CA, talks to a port with optional client certificates, not to one
// that requires them, and refuses a server from another CA.
func TestAnonymousClientConfig(t *testing.T) {
	dir := t.TempDir()
	ca, err := Create(dir, "f")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := LoadCAPool(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	a := issue(t, ca, "a")
	cfg := AnonymousClientConfig(pool)
	cfg.ServerName = "127.0.0.1"

	addr, res := serveOnce(t, a.OptionalClientConfig())
	if err := exchange(dialWith(cfg), addr); err != nil {
		t.Fatal(err)
	}
	if r := <-res; r.err != nil || r.id != "" {
		t.Fatalf("server saw %v, client id %q; want no certificate", r.err, r.id)
	}
	addr, _ = serveOnce(t, a.ServerConfig())
	if err := exchange(dialWith(cfg), addr); err == nil {
		t.Fatal("a port requiring client certificates accepted none")
	}
	addr, _ = serveOnce(t, issue(t, newCA(t), "x").OptionalClientConfig())
	if err := exchange(dialWith(cfg), addr); err == nil {
		t.Fatal("the client accepted a server certificate from another CA")
	}
}

func TestLoadCAPool(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadCAPool(filepath.Join(dir, "missing.crt")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v, want fs.ErrNotExist", err)
	}
	junk := filepath.Join(dir, "junk.crt")
	if err := os.WriteFile(junk, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCAPool(junk); !errors.Is(err, ErrNoCertificate) || !strings.Contains(err.Error(), junk) {
		t.Fatalf("file without PEM: %v, want ErrNoCertificate naming the file", err)
	}
}
