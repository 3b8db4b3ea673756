// Command profcat sorts the samples of a CPU profile of a vault fleet (or
// of an end-to-end benchmark) into where the time goes: the vault's
// cryptography, Raft, the state machine, HTTP, the relay, the Go runtime.
// It reads the output of `go tool pprof -traces`:
//
//	go tool pprof -traces BINARY PROFILE | go run ./bench/vault/profcat -ops 3237
//
// -ops (recoveries during the profile) adds a µs-per-recovery column.
// Each sample goes to the first category, in the order listed, one of whose
// frames it contains, so e.g. a write syscall made by the Raft log counts
// as the Raft log, and GC assist inside KE2 counts as GC.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

type category struct {
	name   string
	frames []string // substrings of function names
}

var categories = []category{
	{"Go runtime: GC", []string{"runtime.gcBgMarkWorker", "runtime.gcAssistAlloc", "runtime.bgsweep", "runtime.bgscavenge", "runtime.gcStart", "runtime.markroot"}},
	{"client side (in-process benchmarks only)", []string{"coffer/recovery.", "coffer/pake.Client.", "coffer/vault_test.registerAccounts", "coffer/vault_test.clientRecoveries"}},
	{"crypto: OPAQUE KE2 / OPRF (ristretto255)", []string{"coffer/pake.(*Server)", "coffer/pake.ValidateRecord"}},
	{"crypto: HPKE open (ML-KEM-768 + X25519)", []string{"coffer/channel.(*Recipient).Open"}},
	{"crypto: response seal (HKDF + AES-GCM)", []string{"coffer/channel.(*Responder).Seal"}},
	{"crypto: other (record-id HMAC, ticket hash)", []string{"coffer/vault.(*Server).recordID", "coffer/vault/state.HashTicket"}},
	{"relay: token verify (Ed25519 + JSON)", []string{"coffer/token.(*Verifier).Verify"}},
	{"relay: request log", []string{"coffer/relay.(*service).Exchange.", "log/slog.(*Logger).log"}},
	{"Raft log: raft-wal append + fsync", []string{"hashicorp/raft-wal", "raftwal."}},
	{"state machine: bbolt apply", []string{"coffer/vault/state.(*Machine).Apply", "coffer/vault/replica.(*fsm).Apply", "coffer/vault/replica.unbatched"}},
	{"state machine: read (Lookup)", []string{"coffer/vault/state.(*Machine).Account", "coffer/vault/replica.(*Replica).Lookup"}},
	{"state machine: snapshot", []string{"coffer/vault/state.(*Snapshot)", "coffer/vault/replica.(*fsmSnapshot)", "raft.(*FileSnapshot"}},
	{"Raft: command encode + future wait", []string{"coffer/vault/replica.(*Replica).Apply", "coffer/vault/replica.(*Replica).wait"}},
	{"Raft: replication + transport (AppendEntries, msgpack, TCP)", []string{"hashicorp/raft.", "hashicorp/go-msgpack"}},
	{"relay: forward to vault (HTTP client)", []string{"coffer/relay.(*Relay).forward", "net/http.(*persistConn)", "net/http.(*Transport)"}},
	{"relay: other", []string{"coffer/relay."}},
	{"vault: other (protobuf, metrics, checks)", []string{"coffer/vault.(*Server)"}},
	{"HTTP server + Connect framing", []string{"net/http.", "connectrpc.com/connect", "golang.org/x/net/http2"}},
	{"Go runtime: scheduler, netpoll, timers", []string{"runtime.schedule", "runtime.findRunnable", "runtime.mcall", "runtime.park_m", "runtime.netpoll", "runtime.goexit0", "runtime.sysmon", "runtime.timer", "runtime.mstart", "runtime.wakep", "runtime.ready"}},
	{"network syscalls (other)", []string{"internal/poll.", "syscall."}},
}

func main() {
	ops := flag.Float64("ops", 0, "operations (recoveries) during the profile, for µs per operation")
	flag.Parse()
	totals := make([]time.Duration, len(categories)+1)
	var all time.Duration
	var stack []string
	var value time.Duration
	flush := func() {
		if value == 0 {
			return
		}
		i := classify(stack)
		totals[i] += value
		all += value
		stack, value = stack[:0], 0
	}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "-----------+") {
			flush()
			continue
		}
		f := strings.TrimSpace(line)
		if f == "" {
			continue
		}
		// A sample starts with its value, e.g. "     130ms   frame".
		if fs := strings.Fields(line); len(fs) >= 2 && strings.HasSuffix(fs[0], "s") {
			if v, err := parseDur(fs[0]); err == nil {
				flush()
				value = v
				stack = append(stack, strings.TrimSpace(strings.TrimPrefix(f, fs[0])))
				continue
			}
		}
		if value != 0 {
			stack = append(stack, f)
		}
	}
	flush()
	if all == 0 {
		fmt.Fprintln(os.Stderr, "profcat: no samples (feed it `go tool pprof -traces BINARY PROFILE`)")
		os.Exit(1)
	}
	idx := make([]int, len(totals))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return totals[idx[a]] > totals[idx[b]] })
	fmt.Printf("| where | CPU | share |%s\n", map[bool]string{true: " µs per recovery |", false: ""}[*ops > 0])
	fmt.Printf("|---|---:|---:|%s\n", map[bool]string{true: "---:|", false: ""}[*ops > 0])
	for _, i := range idx {
		if totals[i] == 0 {
			continue
		}
		name := "other"
		if i < len(categories) {
			name = categories[i].name
		}
		fmt.Printf("| %s | %.2f s | %.1f %% |", name, totals[i].Seconds(), 100*totals[i].Seconds()/all.Seconds())
		if *ops > 0 {
			fmt.Printf(" %.0f |", float64(totals[i].Microseconds()) / *ops)
		}
		fmt.Println()
	}
	fmt.Printf("| total | %.2f s | 100 %% |", all.Seconds())
	if *ops > 0 {
		fmt.Printf(" %.0f |", float64(all.Microseconds()) / *ops)
	}
	fmt.Println()
}

func classify(stack []string) int {
	for i, c := range categories {
		for _, fr := range stack {
			for _, s := range c.frames {
				if strings.Contains(fr, s) {
					return i
				}
			}
		}
	}
	return len(categories)
}

func parseDur(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	// pprof prints e.g. "1.20s"; ParseDuration handles it, but guard plain
	// numbers (nanoseconds) too.
	n, err := strconv.ParseFloat(s, 64)
	return time.Duration(n), err
}
