// Package fleetca is a vault fleet's own certificate authority: the key
// ceremony (ceremony.Init) makes it, 'coffer vault cert' issues each replica a
// certificate from it, and replicas talk to each other (Raft) and take admin
// calls over TLS 1.3 with mutual authentication: both ends must present a
// certificate that chains to the fleet CA.
//
// Keys are ECDSA P-256. The CA key is an offline secret like the fleet root
// key: it is needed only to issue or replace replica certificates.
package fleetca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cofferhq/coffer/internal/atomicfile"
)

// File names in the fleet directory (beside root.key) and in a replica's
// certificate directory.
const (
	CACertFile = "fleet-ca.crt" // the fleet CA certificate: public, give to every replica
	CAKeyFile  = "fleet-ca.key" // the fleet CA private key: offline, with root.key

	CertFile = "replica.crt" // a replica's certificate (written by Issue)
	KeyFile  = "replica.key" // its private key (0600)
)

// Validity of the certificates made here.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	CertValidity = 2 * 365 * 24 * time.Hour
)

// URIPrefix is the scheme of the URI SAN naming a replica:
// coffer-replica://ID.
const URIPrefix = "coffer-replica://"

// Role is what a certificate of the fleet CA is for, named by its URI SAN:
// coffer-replica://ID (a replica: a Raft peer, an administrator, a
// follower forwarding to the leader), coffer-operator://NAME (a person
// running 'coffer vault status/join/remove': the admin endpoint only) or
// coffer-relay://NAME (a relay: neither Raft nor the admin endpoint).
// Replica certificates issued before roles carry coffer-replica://ID
// already and read as RoleReplica.
type Role string

// The roles.
const (
	RoleReplica  Role = "replica"
	RoleOperator Role = "operator"
	RoleRelay    Role = "relay"
)

// Roles lists the roles, for flags and messages.
var Roles = []Role{RoleReplica, RoleOperator, RoleRelay}

// ParseRole reads a role's name ("replica", "operator", "relay").
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("fleetca: unknown certificate role %q (want replica, operator or relay)", s)
}

// uriPrefix is the URI SAN scheme of role r.
func (r Role) uriPrefix() string { return "coffer-" + string(r) + "://" }

// ErrRole: a peer's certificate chains to the fleet CA but its role (or
// name) is not allowed where it was presented.
var ErrRole = errors.New("certificate role not allowed here")

// Identity returns the role and name a certificate's URI SAN gives
// (coffer-ROLE://NAME). A certificate with none, or with more than one,
// has no role ("", and its common name).
func Identity(c *x509.Certificate) (Role, string) {
	var role Role
	var name string
	n := 0
	for _, u := range c.URIs {
		s := u.String()
		for _, r := range Roles {
			if strings.HasPrefix(s, r.uriPrefix()) {
				role, name = r, strings.TrimPrefix(s, r.uriPrefix())
				n++
			}
		}
	}
	if n != 1 || name == "" {
		return "", c.Subject.CommonName
	}
	return role, name
}

// CA is a loaded fleet CA.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte // the certificate, PEM
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}

// Create makes a new fleet CA in dir: CACertFile (0644) and CAKeyFile
// (0600). It refuses to overwrite either.
func Create(dir, fleetName string) (*CA, error) {
	for _, f := range []string{CACertFile, CAKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return nil, fmt.Errorf("fleetca: %s already exists", filepath.Join(dir, f))
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Coffer vault fleet CA " + fleetName, Organization: []string{"Coffer vault fleet"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := atomicfile.CreateExclusive(filepath.Join(dir, CAKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, err
	}
	if err := atomicfile.CreateExclusive(filepath.Join(dir, CACertFile), certPEM, 0o644); err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: certPEM}, nil
}

// Load reads the fleet CA from dir (CACertFile and CAKeyFile).
func Load(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("fleetca: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("fleetca: %w (the fleet CA key is kept offline with root.key; bring it back to issue certificates)", err)
	}
	defer clear(keyPEM)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("fleetca: %s: %w", dir, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("fleetca: the CA key is not ECDSA")
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("fleetca: %s is not a CA certificate", filepath.Join(dir, CACertFile))
	}
	return &CA{Cert: cert, Key: key, PEM: certPEM}, nil
}

// Issue makes a certificate for replica id, valid for hosts (IP addresses
// or DNS names; the addresses peers dial it at), usable as a TLS server
// and client certificate. It returns the certificate and key in PEM.
func (ca *CA) Issue(id string, hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	return ca.IssueRole(RoleReplica, id, hosts, validity)
}

// IssueRole makes a certificate of role for name. A replica's is a TLS
// server and client certificate for hosts (at least one); an operator's or
// a relay's is a client certificate only (hosts optional, unused by
// peers).
func (ca *CA) IssueRole(role Role, id string, hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if _, err := ParseRole(string(role)); err != nil {
		return nil, nil, err
	}
	if id == "" || strings.ContainsAny(id, "/ ") {
		return nil, nil, fmt.Errorf("fleetca: bad %s name %q", role, id)
	}
	if len(hosts) == 0 && role == RoleReplica {
		return nil, nil, errors.New("fleetca: name at least one host (IP address or DNS name) the replica is reached at")
	}
	if validity <= 0 {
		validity = CertValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	u, err := url.Parse(role.uriPrefix() + id)
	if err != nil {
		return nil, nil, fmt.Errorf("fleetca: bad %s name %q (letters, digits, '-', '.')", role, id)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: id, Organization: []string{"Coffer vault fleet"}, OrganizationalUnit: []string{string(role)}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{u},
	}
	if role != RoleReplica {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// IssueFiles issues a certificate for id and writes outDir/replica.crt,
// outDir/replica.key (0600) and outDir/fleet-ca.crt, refusing to overwrite.
func (ca *CA) IssueFiles(outDir, id string, hosts []string, validity time.Duration) error {
	return ca.IssueRoleFiles(RoleReplica, outDir, id, hosts, validity)
}

// IssueRoleFiles is IssueFiles for a certificate of role (the files have
// the same names whatever the role: 'coffer vault ... --tls-dir' reads
// them).
func (ca *CA) IssueRoleFiles(role Role, outDir, id string, hosts []string, validity time.Duration) error {
	certPEM, keyPEM, err := ca.IssueRole(role, id, hosts, validity)
	if err != nil {
		return err
	}
	defer clear(keyPEM)
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return err
	}
	for _, f := range []string{CertFile, KeyFile} {
		if _, err := os.Stat(filepath.Join(outDir, f)); err == nil {
			return fmt.Errorf("fleetca: %s already exists; remove it to issue a new certificate", filepath.Join(outDir, f))
		}
	}
	if err := atomicfile.CreateExclusive(filepath.Join(outDir, KeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	if err := atomicfile.CreateExclusive(filepath.Join(outDir, CertFile), certPEM, 0o644); err != nil {
		return err
	}
	caPath := filepath.Join(outDir, CACertFile)
	if old, err := os.ReadFile(caPath); err == nil {
		if string(old) != string(ca.PEM) {
			return fmt.Errorf("fleetca: %s holds another CA certificate", caPath)
		}
		return nil
	}
	return atomicfile.CreateExclusive(caPath, ca.PEM, 0o644)
}

// TLS is a replica's mutual-TLS material: its certificate and the fleet CA.
type TLS struct {
	Cert tls.Certificate
	Pool *x509.CertPool
	ID   string // the replica id in the certificate (or the name of another role)
	Role Role   // the certificate's role ("" for none)
}

// LoadTLS reads a replica's certificate, key and the fleet CA certificate.
func LoadTLS(certFile, keyFile, caFile string) (*TLS, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("fleetca: replica certificate %s / key %s: %w", certFile, keyFile, err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("fleetca: fleet CA certificate: %w", err)
	}
	return newTLS(pair, caPEM, caFile)
}

// NewTLS builds TLS material from PEM blocks.
func NewTLS(certPEM, keyPEM, caPEM []byte) (*TLS, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("fleetca: %w", err)
	}
	return newTLS(pair, caPEM, "CA certificate")
}

func newTLS(pair tls.Certificate, caPEM []byte, caName string) (*TLS, error) {
	pool, err := parsePool(caPEM, caName)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("fleetca: the replica certificate (%s) is not from this fleet CA: %w", leaf.Subject.CommonName, err)
	}
	role, name := Identity(leaf)
	return &TLS{Cert: pair, Pool: pool, ID: name, Role: role}, nil
}

// ErrNoCertificate: a fleet CA file holds no PEM certificate.
var ErrNoCertificate = errors.New("holds no PEM certificate")

// LoadCAPool reads the fleet CA certificate file (CACertFile) into a pool,
// for callers that check replicas' certificates without presenting one of
// their own (AnonymousClientConfig). A file without a PEM certificate is
// an error satisfying errors.Is(err, ErrNoCertificate); a read error is
// os.ReadFile's.
func LoadCAPool(caFile string) (*x509.CertPool, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	return parsePool(caPEM, caFile)
}

func parsePool(caPEM []byte, caName string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("fleetca: %s %w", caName, ErrNoCertificate)
	}
	return pool, nil
}

// ReplicaID returns the replica id a certificate names (its URI SAN, else
// its common name).
func ReplicaID(c *x509.Certificate) string {
	for _, u := range c.URIs {
		if s := u.String(); strings.HasPrefix(s, URIPrefix) {
			return strings.TrimPrefix(s, URIPrefix)
		}
	}
	return c.Subject.CommonName
}

// ServerConfig accepts only TLS 1.3 clients presenting a certificate from
// the fleet CA (of any role: see PeerServerConfig for Raft).
func (t *TLS) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{t.Cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    t.Pool,
	}
}

// Allow decides whether a verified fleet certificate of role naming name
// may go on (nil) or not (an error, wrapping ErrRole).
type Allow func(role Role, name string) error

// AllowRoles allows certificates of the roles given, whatever their name.
func AllowRoles(roles ...Role) Allow {
	return func(role Role, name string) error {
		for _, r := range roles {
			if role == r && role != "" {
				return nil
			}
		}
		if role == "" {
			return fmt.Errorf("fleetca: %q: %w (the certificate names no role)", name, ErrRole)
		}
		return fmt.Errorf("fleetca: %s certificate %q: %w", role, name, ErrRole)
	}
}

// CheckPeer applies allow to the verified client (or server) certificate
// of cs; no verified certificate is refused too.
func CheckPeer(cs *tls.ConnectionState, allow Allow) error {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return errors.New("fleetca: no certificate from the fleet CA")
	}
	role, name := Identity(cs.PeerCertificates[0])
	return allow(role, name)
}

// PeerServerConfig is ServerConfig that also applies allow to the
// client's certificate once its chain is verified, refusing the handshake
// otherwise: Raft's port takes replicas only, not the operators' or
// relays' certificates of the same CA.
func (t *TLS) PeerServerConfig(allow Allow) *tls.Config {
	c := t.ServerConfig()
	c.VerifyConnection = func(cs tls.ConnectionState) error { return CheckPeer(&cs, allow) }
	return c
}

// AdminAllowed is the admin endpoint's rule: replicas and operators.
var AdminAllowed = AllowRoles(RoleReplica, RoleOperator)

// ExchangeAllowed is the VaultService's rule on a TLS port: relays, and
// replicas forwarding to the leader. Operators have no business there, and
// a caller without a certificate of the fleet CA is refused before any
// request is read (SECURITY.md).
var ExchangeAllowed = AllowRoles(RoleRelay, RoleReplica)

// OptionalClientConfig is ServerConfig for a port that also serves clients
// without certificates: the VaultService port, whose /healthz and /readyz
// answer anyone, while the VaultService itself (ExchangeAllowed) and
// /admin/ (AdminAllowed) check the verified chain per request. A
// certificate that is presented must chain to the fleet CA.
func (t *TLS) OptionalClientConfig() *tls.Config {
	c := t.ServerConfig()
	c.ClientAuth = tls.VerifyClientCertIfGiven
	return c
}

// ClientConfig dials peers: TLS 1.3, presents this replica's certificate,
// and verifies the server's certificate against the fleet CA only (not the
// system roots) for serverName (the host peers dial; an IP address works
// when the certificate lists it).
//
// The server must present a replica's certificate: an operator's or a
// relay's certificate (client certificates only, but of the same CA) is
// not a peer.
func (t *TLS) ClientConfig(serverName string) *tls.Config {
	c := AnonymousClientConfig(t.Pool)
	c.Certificates = []tls.Certificate{t.Cert}
	c.ServerName = serverName
	c.VerifyConnection = func(cs tls.ConnectionState) error { return CheckPeer(&cs, AllowRoles(RoleReplica)) }
	return c
}

// AnonymousClientConfig calls replicas without a certificate of its own
// (health checks): TLS 1.3, the server's certificate verified against pool
// (the fleet CA: LoadCAPool) only, for the host dialed. A replica's
// /healthz and /readyz answer it; its VaultService and its Raft port do
// not (a relay calls with its relay certificate: ClientConfig).
func AnonymousClientConfig(pool *x509.CertPool) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}
}

// Dial returns a function that dials a peer over mutual TLS and completes
// the handshake before returning (Raft's transport and the vault's
// forwarding dial peers with it).
func (t *TLS) Dial() func(ctx context.Context, addr string) (net.Conn, error) { return t.DialFrom(nil) }

// DialFrom is Dial with connections made by nd (nil: a zero net.Dialer),
// for instance from a source address (replica.SourceDialer).
func (t *TLS) DialFrom(nd *net.Dialer) func(ctx context.Context, addr string) (net.Conn, error) {
	from := ""
	if nd != nil {
		if a, ok := nd.LocalAddr.(*net.TCPAddr); ok {
			from = " from " + a.IP.String()
		}
	}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		d := tls.Dialer{NetDialer: nd, Config: t.ClientConfig(host)}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("fleetca: mutual TLS to peer %s%s: %w", addr, from, err)
		}
		return c, nil
	}
}

// Listener serves mutual TLS on ln: every accepted connection is a TLS
// server connection that requires a replica's certificate of the fleet CA
// (PeerListener with AllowRoles(RoleReplica)), and its handshake is
// bounded in time. Raft's transport listens on it.
func (t *TLS) Listener(ln net.Listener) net.Listener {
	return t.PeerListener(ln, AllowRoles(RoleReplica))
}

// PeerListener is Listener with allow deciding which certificates are
// peers (serve allows replicas that are members of the fleet).
func (t *TLS) PeerListener(ln net.Listener, allow Allow) net.Listener {
	return &handshakeListener{Listener: tls.NewListener(ln, t.PeerServerConfig(allow))}
}

// handshakeListener completes the TLS handshake of an accepted connection
// before Raft reads from it... in the connection's own goroutine: Accept
// must not block on one slow or hostile client, so the handshake runs on
// the first Read (crypto/tls does that); this wrapper only bounds it.
type handshakeListener struct{ net.Listener }

func (l *handshakeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := c.(*tls.Conn)
	return &handshakeConn{Conn: tc}, nil
}

type handshakeConn struct {
	*tls.Conn
	done bool
}

func (c *handshakeConn) Read(p []byte) (int, error) {
	if !c.done {
		c.done = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.Conn.HandshakeContext(ctx)
		cancel()
		if err != nil {
			c.Conn.Close()
			return 0, fmt.Errorf("fleetca: peer %s refused at TLS: %w", c.RemoteAddr(), err)
		}
	}
	return c.Conn.Read(p)
}

// HasFleetCert reports whether a TLS connection state carries a client
// certificate verified against the fleet CA (the server's ClientCAs), of
// any role (CheckPeer with AdminAllowed is the admin endpoint's rule).
func HasFleetCert(cs *tls.ConnectionState) bool {
	return cs != nil && len(cs.VerifiedChains) > 0
}
