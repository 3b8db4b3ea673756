package replica

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// DialFunc dials a peer's advertised address. Mutual TLS (issue 4) is a
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
