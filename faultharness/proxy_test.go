package faultharness

import (
	"bytes"
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

// dialAs connects to proxy dst as replica src: the first message carries
// src's advertised address, as a Raft RPC header does.
func dialAs(t *testing.T, nw *Network, src, dst int) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", nw.Addr(dst), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	msg := append([]byte{0x00, 0x84, 0xa4, 'A', 'd', 'd', 'r', 0xc4, byte(len(nw.Addr(src)))}, nw.Addr(src)...)
	c.Write(append(msg, 0xa2, 'I', 'D'))
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
	for i := range 3 {
		nw.SetUpstream(i, echo(t, i))
	}
	if got := nw.findSender([]byte("xx" + nw.Addr(2) + "\xa2")); got != 2 {
		t.Fatalf("findSender = %d, want 2", got)
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
