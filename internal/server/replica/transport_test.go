package replica

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestSourceDialer: a stream layer whose Dial is replaced by WithDial
// connects from the source address SourceDialer binds.
func TestSourceDialer(t *testing.T) {
	if _, err := SourceDialer("10.0.0.1:80"); err == nil {
		t.Fatal("a source address with a port was accepted")
	}
	if _, err := SourceDialer("0.0.0.0"); err == nil {
		t.Fatal("an unspecified source address was accepted")
	}
	probe, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("127.0.0.2 is not a local address here: %v", err)
	}
	probe.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sl, err := NewStreamLayer(ln, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()
	nd, err := SourceDialer("127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	sl = WithDial(sl, func(ctx context.Context, addr string) (net.Conn, error) { return nd.DialContext(ctx, "tcp", addr) })
	if sl.Addr().String() != ln.Addr().String() {
		t.Fatalf("Addr %s, want %s", sl.Addr(), ln.Addr())
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := sl.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := sl.Dial(raft.ServerAddress(ln.Addr().String()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case a := <-accepted:
		defer a.Close()
		if ip := a.RemoteAddr().(*net.TCPAddr).IP.String(); ip != "127.0.0.2" {
			t.Fatalf("the connection came from %s, want 127.0.0.2", ip)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
	}
}
