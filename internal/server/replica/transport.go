package replica

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// DialFunc dials a peer's advertised address. Mutual TLS (fleetca.TLS.Dial) is a
// DialFunc that wraps the connection in tls.Client, with a listener wrapped
// by tls.NewListener.
type DialFunc func(ctx context.Context, addr string) (net.Conn, error)

// streamLayer is a raft.StreamLayer over any net.Listener and dialer.
type streamLayer struct {
	ln        net.Listener
	advertise net.Addr
	dial      DialFunc
}

// NewStreamLayer returns the stream layer Raft uses to talk to peers: it
// accepts on ln, advertises advertise to peers (ln's address if empty) and
// dials with dial (plain TCP if nil). Pass the result as Config.StreamLayer.
func NewStreamLayer(ln net.Listener, advertise string, dial DialFunc) (raft.StreamLayer, error) {
	if ln == nil {
		return nil, errors.New("replica: stream layer needs a listener")
	}
	var adv net.Addr = ln.Addr()
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			return nil, fmt.Errorf("replica: advertise address %q: %w", advertise, err)
		}
		adv = a
	}
	if a, ok := adv.(*net.TCPAddr); ok && (a.IP == nil || a.IP.IsUnspecified() || a.Port == 0) {
		return nil, fmt.Errorf("replica: advertise address %s is not reachable by peers; set AdvertiseAddr to this replica's address", adv)
	}
	if dial == nil {
		var d net.Dialer
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	return &streamLayer{ln: ln, advertise: adv, dial: dial}, nil
}

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.dial(ctx, string(address))
}

func (s *streamLayer) Accept() (net.Conn, error) { return s.ln.Accept() }
func (s *streamLayer) Close() error              { return s.ln.Close() }
func (s *streamLayer) Addr() net.Addr            { return s.advertise }

// SourceDialer returns a dialer whose connections leave from the local IP
// address source, the port chosen by the system: for a multi-homed host
// whose peers or firewalls expect Raft from one address. An empty source
// leaves the choice to the system (a zero net.Dialer).
func SourceDialer(source string) (*net.Dialer, error) {
	if source == "" {
		return &net.Dialer{}, nil
	}
	ip := net.ParseIP(source)
	if ip == nil {
		return nil, fmt.Errorf("replica: Raft source address %q is not an IP address", source)
	}
	if ip.IsUnspecified() {
		return nil, fmt.Errorf("replica: Raft source address %s is unspecified; leave it empty to let the system choose", source)
	}
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}, nil
}

// WithDial returns a stream layer that accepts, advertises and closes as sl
// does and dials peers with dial (for instance a TLS dialer bound to a
// source address by SourceDialer).
func WithDial(sl raft.StreamLayer, dial DialFunc) raft.StreamLayer {
	return &dialLayer{StreamLayer: sl, dial: dial}
}

type dialLayer struct {
	raft.StreamLayer
	dial DialFunc
}

func (d *dialLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.dial(ctx, string(address))
}
