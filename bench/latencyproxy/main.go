// Command latencyproxy runs internal/latencyproxy from the command line, so
// that shell scripts (bench/clouds.sh) can put a link with latency in front
// of a server on 127.0.0.1:
//
//	latencyproxy -upstream 127.0.0.1:7070 -rtt 20ms [-addr-file FILE]
//
// It listens on a free port of 127.0.0.1, prints that address (host:port)
// on stdout, and writes it to -addr-file if given, then forwards every
// connection to -upstream, each byte delivered rtt/2 late in each direction,
// until it gets SIGINT or SIGTERM.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cofferhq/coffer/internal/latencyproxy"
)

func main() {
	upstream := flag.String("upstream", "", "address to forward to, host:port (required)")
	rtt := flag.Duration("rtt", 20*time.Millisecond, "round-trip time to add")
	addrFile := flag.String("addr-file", "", "also write the listening address to this file")
	flag.Parse()
	if *upstream == "" || flag.NArg() > 0 || *rtt < 0 {
		flag.Usage()
		os.Exit(2)
	}
	p, err := latencyproxy.Start(*upstream, *rtt)
	if err != nil {
		fmt.Fprintln(os.Stderr, "latencyproxy:", err)
		os.Exit(1)
	}
	fmt.Println(p.Addr)
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(p.Addr+"\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "latencyproxy:", err)
			os.Exit(1)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	p.Close()
}
