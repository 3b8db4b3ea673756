package latencyproxy

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// TestRoundTrip checks that an echo through the proxy takes about the
// added round trip, and that the proxy closes cleanly.
func TestRoundTrip(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadBytes('\n')
					if err != nil {
						return
					}
					c.Write(line)
				}
			}()
		}
	}()
	const rtt = 40 * time.Millisecond
	p, err := Start(l.Addr().String(), rtt)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for range 3 {
		start := time.Now()
		c.Write([]byte("ping\n"))
		line, err := r.ReadString('\n')
		if err != nil || line != "ping\n" {
			t.Fatalf("echo = %q, %v", line, err)
		}
		if d := time.Since(start); d < rtt || d > rtt+500*time.Millisecond {
			t.Fatalf("round trip took %v, want about %v", d, rtt)
		}
	}
}
