package faultharness

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// echo runs a server that answers every read with "dst<i>:" + the bytes.
func echo(t *testing.T, i int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 1024)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					c.Write(append([]byte{byte('0' + i)}, buf[:n]...))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// testSource is the loopback address replica i dials from in these tests.
func testSource(i int) string { return fmt.Sprintf("127.0.0.%d", 200+i) }

// dialAs connects to proxy dst as replica src: from src's source address.
func dialAs(t *testing.T, nw *Network, src, dst int) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(testSource(src))}}
	c, err := d.Dial("tcp", nw.Addr(dst))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// roundTrip writes a byte and waits (up to wait) for the echo.
func roundTrip(c net.Conn, wait time.Duration) bool {
	c.SetDeadline(time.Now().Add(wait))
	defer c.SetDeadline(time.Time{})
	// Drain the echo of the first message, if any, then ping.
	if _, err := c.Write([]byte("!")); err != nil {
		return false
	}
	buf := make([]byte, 4096)
	var got []byte
	for !bytes.Contains(got, []byte("!")) {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return false
		}
	}
	return true
}

func TestProxyPartitions(t *testing.T) {
	nw, err := NewNetwork(3)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Close()
	if err := CheckSources(testSource(0)); err != nil {
		t.Skip(err)
	}
	for i := range 3 {
		nw.SetUpstream(i, echo(t, i))
		nw.SetSource(i, testSource(i))
	}
	c01 := dialAs(t, nw, 0, 1)
	c21 := dialAs(t, nw, 2, 1)
	if !roundTrip(c01, 2*time.Second) || !roundTrip(c21, 2*time.Second) {
		t.Fatal("no traffic through a connected network")
	}

	// Isolate 0 (blackhole): 0↔1 stalls, 2↔1 flows.
	nw.Isolate(0)
	if roundTrip(c01, 300*time.Millisecond) {
		t.Fatal("traffic from an isolated replica got through")
	}
	if !roundTrip(c21, 2*time.Second) {
		t.Fatal("traffic between connected replicas stopped")
	}
	nw.Heal()
	if !roundTrip(c01, 2*time.Second) {
		t.Fatal("a blackholed connection did not resume after healing")
	}

	// Drop mode: blocked connections are cut, new ones refused.
	nw.SetMode(Drop)
	nw.Partition([]int{0, 1}, []int{2})
	c21.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadAll(c21); err != nil {
		t.Fatalf("a cut connection: %v", err)
	}
	c2 := dialAs(t, nw, 2, 1)
	c2.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, _ := c2.Read(make([]byte, 10)); n != 0 {
		t.Fatal("a new connection across the partition got an answer")
	}
	if !roundTrip(c01, 2*time.Second) {
		t.Fatal("traffic within a side stopped")
	}
	nw.Heal()

	// Latency.
	nw.SlowReplica(1, 100*time.Millisecond)
	start := time.Now()
	if !roundTrip(c01, 2*time.Second) {
		t.Fatal("no traffic over a slow link")
	}
	if rt := time.Since(start); rt < 200*time.Millisecond {
		t.Fatalf("round trip over a link with 100 ms each way took %v", rt)
	}
	if s := nw.Stats(); s.Identified < 3 || s.Refused < 1 {
		t.Fatalf("stats %+v", s)
	}
}
