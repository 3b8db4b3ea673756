package faultharness

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The Raft network of the fleet under test. Every replica advertises, as its
// Raft address, the listener of its own inbound proxy, so every Raft
// connection to replica j is accepted by proxy j and forwarded to j's real
// Raft port. Raft runs over mutual TLS (the fleet CA's certificates, as in
// production), so a proxy cannot read who dialled; instead every replica
// dials its peers from a loopback address of its own ('vault serve
// --raft-source-addr 127.0.0.N'; Linux routes all of 127.0.0.0/8 to the
// loopback interface), and a proxy learns the sender from the connection's
// remote IP. Knowing (source, destination) for every connection lets the
// proxies cut or slow any pair of replicas, in both directions (a Raft RPC
// and its answer travel on the dialler's connection):
//
//   - Partition(groups...) blocks every pair of replicas in different
//     groups; Isolate(i) is Partition({i}, the rest).
//   - Drop mode closes blocked connections and every new one at once (a
//     host that refuses connections); Blackhole mode holds them open and
//     forwards nothing until healed (a cable pulled: RPCs time out).
//   - SetDelay(src, dst, d) adds d of latency to each direction of the
//     connections between src and dst (chunks keep their order).
//
// A connection from an address that is no replica's source counts as from
// an unknown source: it is cut only when its destination is blocked from
// every other replica.

// PartitionMode says what a proxy does with blocked connections.
type PartitionMode int

const (
	// Blackhole holds blocked connections open and forwards nothing.
	Blackhole PartitionMode = iota
	// Drop closes blocked connections.
	Drop
)

func (m PartitionMode) String() string {
	if m == Drop {
		return "drop"
	}
	return "blackhole"
}

// Network is the set of proxies and the rules they apply.
type Network struct {
	mu      sync.Mutex
	n       int
	addrs   []string       // advertised (proxy) address of each replica
	sources map[string]int // source IP of each replica's Raft connections → index
	block   [][]bool       // block[src][dst]
	delay   [][]time.Duration
	mode    PartitionMode
	changed chan struct{} // closed and replaced at every change
	proxies []*Proxy
	closed  bool
}

// NewNetwork starts n proxies on 127.0.0.1 (upstreams are set later with
// SetUpstream).
func NewNetwork(n int) (*Network, error) {
	nw := &Network{n: n, changed: make(chan struct{}), sources: map[string]int{}}
	nw.block = make([][]bool, n)
	nw.delay = make([][]time.Duration, n)
	for i := range n {
		nw.block[i] = make([]bool, n)
		nw.delay[i] = make([]time.Duration, n)
	}
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			nw.Close()
			return nil, err
		}
		p := &Proxy{nw: nw, dst: i, ln: ln, conns: map[*pconn]struct{}{}}
		nw.proxies = append(nw.proxies, p)
		nw.addrs = append(nw.addrs, ln.Addr().String())
	}
	for _, p := range nw.proxies {
		go p.serve()
	}
	return nw, nil
}

// Addr is the address replica i advertises (its proxy's listener).
func (nw *Network) Addr(i int) string { return nw.addrs[i] }

// SetSource says that connections from ip are replica i's: the local
// address its outgoing Raft connections leave from.
func (nw *Network) SetSource(i int, ip string) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for k, v := range nw.sources {
		if v == i {
			delete(nw.sources, k)
		}
	}
	nw.sources[ip] = i
}

// sourceOf returns the replica whose source address a connection from
// addr comes from, or -1.
func (nw *Network) sourceOf(addr net.Addr) int {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return -1
	}
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if i, ok := nw.sources[ta.IP.String()]; ok {
		return i
	}
	return -1
}

// SetUpstream points proxy i at replica i's real Raft address.
func (nw *Network) SetUpstream(i int, addr string) { nw.proxies[i].upstream.Store(&addr) }

// Close stops every proxy and closes every connection.
func (nw *Network) Close() {
	nw.mu.Lock()
	nw.closed = true
	nw.notify()
	nw.mu.Unlock()
	for _, p := range nw.proxies {
		p.close()
	}
}

// notify wakes everything waiting on a change. Called with mu held.
func (nw *Network) notify() {
	close(nw.changed)
	nw.changed = make(chan struct{})
}

// SetMode sets what blocked connections get.
func (nw *Network) SetMode(m PartitionMode) {
	nw.mu.Lock()
	nw.mode = m
	nw.notify()
	nw.mu.Unlock()
	nw.enforce()
}

// Partition blocks every pair of replicas in different groups (replicas in
// no group are cut from everyone) and unblocks pairs within a group.
func (nw *Network) Partition(groups ...[]int) {
	group := make([]int, nw.n)
	for i := range group {
		group[i] = -1 - i // alone
	}
	for g, members := range groups {
		for _, m := range members {
			group[m] = g
		}
	}
	nw.mu.Lock()
	for s := range nw.n {
		for d := range nw.n {
			nw.block[s][d] = s != d && group[s] != group[d]
		}
	}
	nw.notify()
	nw.mu.Unlock()
	nw.enforce()
}

// Isolate cuts replica i from every other replica.
func (nw *Network) Isolate(i int) {
	var rest []int
	for j := range nw.n {
		if j != i {
			rest = append(rest, j)
		}
	}
	nw.Partition([]int{i}, rest)
}

// Heal removes every partition (latencies stay).
func (nw *Network) Heal() {
	nw.mu.Lock()
	for s := range nw.n {
		clear(nw.block[s])
	}
	nw.notify()
	nw.mu.Unlock()
}

// SetDelay sets the one-way latency between src and dst, both ways.
func (nw *Network) SetDelay(src, dst int, d time.Duration) {
	nw.mu.Lock()
	nw.delay[src][dst], nw.delay[dst][src] = d, d
	nw.mu.Unlock()
}

// SlowReplica sets latency d on every link of replica i (0 removes it).
func (nw *Network) SlowReplica(i int, d time.Duration) {
	for j := range nw.n {
		if j != i {
			nw.SetDelay(i, j, d)
		}
	}
}

// blocked reports whether traffic between src (-1: unknown) and dst is cut,
// and the channel that is closed at the next change.
func (nw *Network) blocked(src, dst int) (bool, PartitionMode, <-chan struct{}) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if nw.closed {
		return true, Drop, nw.changed
	}
	return nw.blockedLocked(src, dst), nw.mode, nw.changed
}

func (nw *Network) blockedLocked(src, dst int) bool {
	if src >= 0 {
		return nw.block[src][dst]
	}
	for s := range nw.n { // unknown source: cut only if dst is cut from all
		if s != dst && !nw.block[s][dst] {
			return false
		}
	}
	return true
}

func (nw *Network) delayOf(src, dst int) time.Duration {
	if src < 0 {
		return 0
	}
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.delay[src][dst]
}

// enforce closes, in Drop mode, the open connections that are now blocked.
func (nw *Network) enforce() {
	nw.mu.Lock()
	if nw.mode != Drop {
		nw.mu.Unlock()
		return
	}
	nw.mu.Unlock()
	for _, p := range nw.proxies {
		p.mu.Lock()
		var cut []*pconn
		for c := range p.conns {
			nw.mu.Lock()
			b := nw.blockedLocked(c.src, p.dst)
			nw.mu.Unlock()
			if b {
				cut = append(cut, c)
			}
		}
		p.mu.Unlock()
		for _, c := range cut {
			c.close()
		}
	}
}

// Stats counts what the proxies did.
type ProxyStats struct {
	Accepted, Identified, Refused, Cut int64 // Identified: from a known source address
}

// Stats sums the proxies' counters.
func (nw *Network) Stats() ProxyStats {
	var s ProxyStats
	for _, p := range nw.proxies {
		s.Accepted += p.accepted.Load()
		s.Identified += p.identified.Load()
		s.Refused += p.refused.Load()
		s.Cut += p.cut.Load()
	}
	return s
}

// Proxy is replica dst's inbound Raft proxy.
type Proxy struct {
	nw       *Network
	dst      int
	ln       net.Listener
	upstream atomic.Pointer[string]

	mu    sync.Mutex
	conns map[*pconn]struct{}

	accepted, identified, refused, cut atomic.Int64
}

type pconn struct {
	done       chan struct{} // closed by close
	src        int
	down, up   net.Conn // down: from the dialling replica; up: to dst
	once       sync.Once
	p          *Proxy
	wasBlocked atomic.Bool
}

func (c *pconn) close() {
	c.once.Do(func() {
		close(c.done)
		c.down.Close()
		if c.up != nil {
			c.up.Close()
		}
		c.p.mu.Lock()
		delete(c.p.conns, c)
		c.p.mu.Unlock()
	})
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		go p.handle(c)
	}
}

func (p *Proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	var all []*pconn
	for c := range p.conns {
		all = append(all, c)
	}
	p.mu.Unlock()
	for _, c := range all {
		c.close()
	}
}

func (p *Proxy) handle(down net.Conn) {
	src := p.nw.sourceOf(down.RemoteAddr())
	if src >= 0 {
		p.identified.Add(1)
	}
	c := &pconn{src: src, down: down, p: p, done: make(chan struct{})}
	p.mu.Lock()
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	// A new connection waits (Blackhole) or is refused (Drop) while blocked.
	for {
		b, mode, changed := p.nw.blocked(src, p.dst)
		if !b {
			break
		}
		if mode == Drop {
			p.refused.Add(1)
			c.close()
			return
		}
		select {
		case <-changed:
		case <-c.done:
			return
		}
	}
	up := p.upstream.Load()
	if up == nil {
		c.close()
		return
	}
	uc, err := net.DialTimeout("tcp", *up, 2*time.Second)
	if err != nil {
		c.close()
		return
	}
	p.mu.Lock()
	c.up = uc
	p.mu.Unlock()
	go p.pump(c, down, uc)
	go p.pump(c, uc, down)
}

type chunk struct {
	b   []byte
	due time.Time
}

// pump copies from → to, holding each chunk while the pair is blocked
// (Blackhole) or cutting the connection (Drop), and delaying it by the
// pair's latency.
func (p *Proxy) pump(c *pconn, from, to net.Conn) {
	ch := make(chan chunk, 256)
	go func() {
		defer close(ch)
		send := func(b []byte) bool {
			select {
			case ch <- chunk{b, time.Now().Add(p.nw.delayOf(c.src, p.dst))}:
				return true
			case <-c.done:
				return false
			}
		}
		for {
			buf := make([]byte, 32<<10)
			n, err := from.Read(buf)
			if n > 0 && !send(buf[:n]) {
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer c.close()
	for k := range ch {
		for {
			b, mode, changed := p.nw.blocked(c.src, p.dst)
			if !b {
				break
			}
			if mode == Drop {
				p.cut.Add(1)
				return
			}
			if !c.wasBlocked.Swap(true) {
				p.cut.Add(1)
			}
			select {
			case <-changed:
			case <-c.done:
				return
			}
		}
		if d := time.Until(k.due); d > 0 {
			select {
			case <-time.After(d):
			case <-c.done:
				return
			}
		}
		if _, err := to.Write(k.b); err != nil {
			return
		}
	}
	// from ended: the deferred close ends both directions (a Raft
	// connection is useless half-closed).
}

// String describes the partition for logs.
func (nw *Network) String() string {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	var cut []string
	for s := range nw.n {
		for d := s + 1; d < nw.n; d++ {
			if nw.block[s][d] {
				cut = append(cut, fmt.Sprintf("%d-%d", s+1, d+1))
			}
		}
	}
	if len(cut) == 0 {
		return "connected"
	}
	return fmt.Sprintf("cut %v (%s)", cut, nw.mode)
}

// CheckSources reports whether connections can leave from each of ips:
// Linux routes all of 127.0.0.0/8 to the loopback interface; other systems
// need the addresses added to it (macOS: ifconfig lo0 alias 127.0.0.N).
func CheckSources(ips ...string) error {
	for _, ip := range ips {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return fmt.Errorf("the harness dials Raft from %s, which is not a local address here (%v): on Linux all of 127.0.0.0/8 is; elsewhere add it to the loopback interface", ip, err)
		}
		ln.Close()
	}
	return nil
}
