// Package latencyproxy is a TCP proxy on 127.0.0.1 that adds latency, for
// tests and benchmarks of transfers over a slow link (BENCHMARKS.md,
// "Latency"). Every byte is delivered RTT/2 after it was read, in each
// direction, so a request and its answer take RTT longer; bytes keep
// flowing meanwhile (the delay is a pipe's length, not a stop-and-wait),
// as on a real long link.
package latencyproxy

import (
	"io"
	"net"
	"sync"
	"time"
)

// Proxy forwards connections from Addr to an upstream address.
type Proxy struct {
	// Addr is where the proxy listens: 127.0.0.1:port.
	Addr string

	upstream string
	rtt      time.Duration
	l        net.Listener
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]bool
	closed   bool
}

// Start listens on 127.0.0.1 on a free port and forwards every connection
// to upstream, adding rtt to every round trip.
func Start(upstream string, rtt time.Duration) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: l.Addr().String(), upstream: upstream, rtt: rtt, l: l, conns: map[net.Conn]bool{}}
	p.wg.Go(p.accept)
	return p, nil
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *Proxy) accept() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Go(func() {
			defer c.Close()
			u, err := net.Dial("tcp", p.upstream)
			if err != nil {
				return
			}
			if !p.track(u) {
				return
			}
			defer u.Close()
			var wg sync.WaitGroup
			wg.Go(func() { p.pipe(u, c) })
			wg.Go(func() { p.pipe(c, u) })
			wg.Wait()
		})
	}
}

type chunk struct {
	data []byte
	due  time.Time
}

// pipe copies src to dst, each chunk rtt/2 after it was read.
func (p *Proxy) pipe(dst, src net.Conn) {
	q := make(chan chunk, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ch := range q {
			time.Sleep(time.Until(ch.due))
			if _, err := dst.Write(ch.data); err != nil {
				for range q {
				}
				return
			}
		}
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			q <- chunk{append([]byte(nil), buf[:n]...), time.Now().Add(p.rtt / 2)}
		}
		if err != nil {
			if err != io.EOF {
				dst.Close()
			}
			break
		}
	}
	close(q)
	<-done
}

// Close stops listening, cuts every connection and waits for the proxy's
// goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	err := p.l.Close()
	p.wg.Wait()
	return err
}
