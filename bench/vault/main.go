// Command vault is a load generator for the Backup Key Vault: it registers
// accounts, then runs password recoveries (LoginStart + LoginFinish with the
// right password, through the relay to the vault fleet) and reports
// recoveries per second, latency percentiles, errors by kind, and the CPU
// time the fleet process and the load generator spent per recovery.
//
// Against a fleet in its own process (fair: the generator's client-side
// cryptography does not run in the fleet's address space):
//
//	go run ./bench/vault/fleet -replicas 5 -settings /tmp/fleet.json &
//	go run ./bench/vault -settings /tmp/fleet.json -accounts 2000 -concurrency 64 -duration 20s -half
//
// or against any relay:
//
//	go run ./bench/vault -relay URL -fleet BUNDLE -fleet-root ROOT -token-key PRIV.pem ...
//
// or with a fleet started in this process (-dev; the fleet and the
// generator then share the CPU and the CPU figures mix both).
//
// Modes: closed loop (-concurrency workers, each recovering its own accounts
// back to back: saturation throughput); open loop (-rate R: recoveries
// start at a fixed rate whatever the answers, latency measured from the
// scheduled start, so a slow fleet cannot hide queueing); -half runs the
// closed loop and then the open loop at half the throughput it measured.
// Clients use cheap key stretching (pake.TestKSF): stretching runs on
// devices, not on the fleet.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cofferhq/coffer/bench/vault/benchfleet"
	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/recovery"
	"github.com/cofferhq/coffer/internal/protocol/pake"
	"github.com/cofferhq/coffer/internal/server/devfleet"
	"github.com/cofferhq/coffer/token"
)

type config struct {
	relay, fleet, fleetRoot, tokenKey, issuer, audience, vaultAudience string
	fleetPIDs                                                          []int
	accounts, concurrency, regConcurrency                              int
	duration, warmup, timeout, maxTotal                                time.Duration
	rate                                                               float64
	half, h2c                                                          bool
	jsonOut, pprofURL, profileOut, label                               string
}

func main() {
	var c config
	settings := flag.String("settings", "", "JSON settings written by `go run ./bench/vault/fleet` (sets -relay, -fleet, -fleet-root, -token-key, -fleet-pid)")
	dev := flag.Bool("dev", false, "start a fleet in this process (it then shares the CPU with the generator)")
	devReplicas := flag.Int("replicas", 1, "with -dev: Raft voters")
	flag.StringVar(&c.relay, "relay", "", "relay base URL")
	flag.StringVar(&c.fleet, "fleet", "", "signed fleet bundle file")
	flag.StringVar(&c.fleetRoot, "fleet-root", "", "pinned fleet root public key (coffer-fleet-root:…)")
	flag.StringVar(&c.tokenKey, "token-key", "", "the app backend's Ed25519 private key (PKCS#8 PEM) to mint account tokens")
	flag.StringVar(&c.issuer, "issuer", devfleet.Issuer, "token issuer")
	flag.StringVar(&c.audience, "audience", devfleet.Audience, "token audience")
	flag.StringVar(&c.vaultAudience, "vault-audience", devfleet.VaultAudience, "vault token audience")
	pids := flag.String("fleet-pid", "", "the fleet's process ids, comma-separated, for its CPU time per recovery (Linux /proc); added to those -settings or -coffer-dev name")
	cofferDev := flag.String("coffer-dev", "", "the directory of a running `coffer dev [--replicas N]`: relay, bundle, root key and token key from DIR/env and DIR/app-token.key, the replicas' pids from DIR/env")
	flag.IntVar(&c.accounts, "accounts", 1000, "accounts to register (at least -concurrency)")
	flag.IntVar(&c.concurrency, "concurrency", 64, "closed-loop workers")
	flag.IntVar(&c.regConcurrency, "register-concurrency", 0, "registration workers (default -concurrency)")
	flag.DurationVar(&c.duration, "duration", 20*time.Second, "measured time of each recovery run")
	flag.DurationVar(&c.warmup, "warmup", 3*time.Second, "unmeasured time before each recovery run")
	flag.DurationVar(&c.timeout, "timeout", 10*time.Second, "bound on one recovery or registration")
	flag.DurationVar(&c.maxTotal, "max-total", 15*time.Minute, "hard bound on the whole run")
	flag.Float64Var(&c.rate, "rate", 0, "open loop: recoveries started per second (0: closed loop)")
	flag.BoolVar(&c.half, "half", false, "after the closed loop, run the open loop at half its throughput")
	flag.BoolVar(&c.h2c, "h2c", false, "talk to the relay over cleartext HTTP/2 (default HTTP/1.1 keep-alive, one connection per worker)")
	flag.StringVar(&c.jsonOut, "json", "", "append results as JSON lines to this file")
	flag.StringVar(&c.label, "label", "", "label of this run in -json output (e.g. replicas=5)")
	summarize := flag.String("summarize", "", "print the medians of the runs in this -json file by label and mode, and exit")
	flag.StringVar(&c.pprofURL, "pprof", "", "the fleet's net/http/pprof base URL (set by -settings)")
	flag.StringVar(&c.profileOut, "profile", "", "write CPU profiles of the fleet process over the measured closed loop to this file, and over the open loop to FILE.open (needs -pprof or -settings)")
	flag.Parse()
	if *summarize != "" {
		if err := summarizeRuns(*summarize); err != nil {
			log.Fatal(err)
		}
		return
	}

	// Hard bound, whatever happens.
	go func() {
		time.Sleep(c.maxTotal)
		fmt.Fprintf(os.Stderr, "vault bench: -max-total %s reached; exiting\n", c.maxTotal)
		os.Exit(2)
	}()
	ctx := context.Background()

	if *settings != "" {
		b, err := os.ReadFile(*settings)
		if err != nil {
			log.Fatal(err)
		}
		var s benchfleet.Settings
		if err := json.Unmarshal(b, &s); err != nil {
			log.Fatalf("%s: %v", *settings, err)
		}
		c.relay, c.fleet, c.fleetRoot, c.tokenKey = s.Relay, s.Fleet, s.FleetRoot, s.TokenKey
		c.fleetPIDs = append(c.fleetPIDs, s.PID)
		if c.pprofURL == "" {
			c.pprofURL = s.Pprof
		}
		if s.Issuer != "" {
			c.issuer, c.audience = s.Issuer, s.Audience
			if s.VaultAudience != "" {
				c.vaultAudience = s.VaultAudience
			}
		}
	}
	if *dev {
		dir, err := os.MkdirTemp("", "coffer-bench-dev-")
		if err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(dir)
		f, err := devfleet.Start(ctx, devfleet.BenchmarkOptions(dir, *devReplicas))
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		c.relay, c.fleet, c.fleetRoot, c.tokenKey = f.RelayURL, f.BundlePath, f.RootPublic, f.TokenKeyPath
	}
	if *cofferDev != "" {
		if err := c.fromCofferDev(*cofferDev); err != nil {
			log.Fatal(err)
		}
	}
	for _, p := range strings.Split(*pids, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			log.Fatalf("-fleet-pid: %q is not a process id", p)
		}
		c.fleetPIDs = append(c.fleetPIDs, n)
	}
	if c.relay == "" || c.fleet == "" || c.fleetRoot == "" || c.tokenKey == "" {
		log.Fatal("need -settings, -dev, or all of -relay, -fleet, -fleet-root and -token-key")
	}
	if c.concurrency < 1 || c.accounts < c.concurrency {
		log.Fatalf("-accounts (%d) must be at least -concurrency (%d) ≥ 1: two logins of one account at once cancel each other", c.accounts, c.concurrency)
	}
	if c.regConcurrency == 0 {
		c.regConcurrency = c.concurrency
	}
	if err := run(ctx, c); err != nil {
		log.Fatal(err)
	}
}

// account is one registered account and its client.
type account struct {
	name     string
	password []byte
	key      *backupkey.Key
	client   *recovery.Client
}

func run(ctx context.Context, c config) error {
	bundle, err := recovery.LoadBundle(c.fleet, c.fleetRoot)
	if err != nil {
		return err
	}
	pemBytes, err := os.ReadFile(c.tokenKey)
	if err != nil {
		return err
	}
	priv, err := token.ParsePrivateKeyPEM(pemBytes)
	if err != nil {
		return err
	}
	hc := httpClient(c)
	prefix := "bench-" + randHex(4) + "-"
	accts := make([]*account, c.accounts)
	for i := range accts {
		name := prefix + strconv.Itoa(i)
		tok, err := mint(priv, c, name)
		if err != nil {
			return err
		}
		vtok, err := mintVault(priv, c, name)
		if err != nil {
			return err
		}
		cl, err := recovery.New(recovery.Settings{
			Relay: c.relay, Account: name, Token: tok, VaultToken: vtok, Bundle: bundle,
			InsecureDevKSF: true, HTTPClient: hc,
		})
		if err != nil {
			return err
		}
		accts[i] = &account{name: name, password: []byte("bench password " + strconv.Itoa(i)), key: backupkey.New(), client: cl}
	}
	printMachine(c)

	// Registration.
	reg := register(ctx, c, accts)
	reg.print()
	emit(c, reg)
	if reg.ok < c.accounts {
		return fmt.Errorf("only %d of %d accounts registered", reg.ok, c.accounts)
	}

	var sat *result
	if c.rate == 0 {
		sat = closedLoop(ctx, c, accts)
		sat.print()
		emit(c, sat)
	}
	rate := c.rate
	if c.half && sat != nil {
		rate = sat.throughput() / 2
	}
	if rate > 0 {
		r := openLoop(ctx, c, accts, rate)
		r.print()
		emit(c, r)
	}
	return nil
}

func mint(priv ed25519.PrivateKey, c config, name string) (string, error) {
	return mintFor(priv, c.issuer, c.audience, name)
}

func mintVault(priv ed25519.PrivateKey, c config, name string) (string, error) {
	return mintFor(priv, c.issuer, c.vaultAudience, name)
}

func mintFor(priv ed25519.PrivateKey, issuer, audience, name string) (string, error) {
	now := time.Now()
	return token.Mint(priv, token.Claims{Issuer: issuer, Audience: audience, Subject: name, IssuedAt: now, Expiry: now.Add(time.Hour)})
}

func httpClient(c config) *http.Client {
	t := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: c.concurrency + c.regConcurrency + 16,
		IdleConnTimeout:     90 * time.Second,
	}
	if c.h2c {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		t.Protocols = &p
	}
	return &http.Client{Transport: t, Timeout: c.timeout}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// result is one measured run.
type result struct {
	Label       string         `json:"label,omitempty"`
	Name        string         `json:"name"`
	Mode        string         `json:"mode"`
	Concurrency int            `json:"concurrency,omitempty"`
	TargetRate  float64        `json:"target_rate,omitempty"`
	Seconds     float64        `json:"seconds"`
	OK          int            `json:"ok"`
	PerSecond   float64        `json:"per_second"`
	P50ms       float64        `json:"p50_ms"`
	P90ms       float64        `json:"p90_ms"`
	P99ms       float64        `json:"p99_ms"`
	MaxMs       float64        `json:"max_ms"`
	Errors      map[string]int `json:"errors,omitempty"`
	FleetCPUus  float64        `json:"fleet_cpu_us_per_op,omitempty"`
	GenCPUus    float64        `json:"generator_cpu_us_per_op"`
	FleetCores  float64        `json:"fleet_cores,omitempty"`
	GenCores    float64        `json:"generator_cores"`
	OtherCores  float64        `json:"other_cores"`
	Late        int            `json:"late_starts,omitempty"`

	ok      int
	lat     []time.Duration
	errs    map[string]int
	example map[string]string
	elapsed time.Duration
	cpu     cpuDelta
}

func (r *result) throughput() float64 { return float64(r.ok) / r.elapsed.Seconds() }

func (r *result) finish() {
	slices.Sort(r.lat)
	r.OK = r.ok
	r.Seconds = r.elapsed.Seconds()
	r.PerSecond = r.throughput()
	r.P50ms, r.P90ms, r.P99ms = ms(pct(r.lat, 0.50)), ms(pct(r.lat, 0.90)), ms(pct(r.lat, 0.99))
	if len(r.lat) > 0 {
		r.MaxMs = ms(r.lat[len(r.lat)-1])
	}
	r.Errors = r.errs
	if r.ok > 0 {
		if r.cpu.fleetOK {
			r.FleetCPUus = r.cpu.fleet.Seconds() * 1e6 / float64(r.ok)
		}
		r.GenCPUus = r.cpu.self.Seconds() * 1e6 / float64(r.ok)
	}
	s := r.elapsed.Seconds()
	if r.cpu.fleetOK {
		r.FleetCores = r.cpu.fleet.Seconds() / s
	}
	r.GenCores = r.cpu.self.Seconds() / s
	r.OtherCores = max(0, (r.cpu.machine.Seconds()-r.cpu.fleet.Seconds()-r.cpu.self.Seconds())/s)
}

func (r *result) print() {
	r.finish()
	fmt.Printf("\n== %s ==\n", r.Name)
	fmt.Printf("  %d ok in %.1f s: %.1f /s\n", r.OK, r.Seconds, r.PerSecond)
	fmt.Printf("  latency p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms\n", r.P50ms, r.P90ms, r.P99ms, r.MaxMs)
	if r.FleetCPUus > 0 {
		fmt.Printf("  fleet process CPU: %.0f µs per op (%.2f cores busy)\n", r.FleetCPUus, r.FleetCores)
	}
	fmt.Printf("  generator CPU: %.0f µs per op (%.2f cores); other processes on the machine: %.2f cores\n", r.GenCPUus, r.GenCores, r.OtherCores)
	if r.Late > 0 {
		fmt.Printf("  open loop: %d starts found no idle account (counted as errors \"no_idle_account\")\n", r.Late)
	}
	if len(r.errs) == 0 {
		fmt.Println("  errors: none")
	}
	kinds := make([]string, 0, len(r.errs))
	for k := range r.errs {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Printf("  errors %s: %d (e.g. %s)\n", k, r.errs[k], r.example[k])
	}
}

func emit(c config, r *result) {
	if c.jsonOut == "" {
		return
	}
	f, err := os.OpenFile(c.jsonOut, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		log.Print(err)
		return
	}
	defer f.Close()
	r.Label = c.label
	b, _ := json.Marshal(r)
	f.Write(append(b, '\n'))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func pct(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := int(p*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// recorder collects outcomes from many goroutines.
type recorder struct {
	mu      sync.Mutex
	ok      int
	lat     []time.Duration
	errs    map[string]int
	example map[string]string
}

func newRecorder() *recorder {
	return &recorder{errs: map[string]int{}, example: map[string]string{}}
}

func (r *recorder) add(d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		r.ok++
		r.lat = append(r.lat, d)
		return
	}
	k := kind(err)
	r.errs[k]++
	if _, ok := r.example[k]; !ok {
		msg := err.Error()
		if len(msg) > 160 {
			msg = msg[:160] + "…"
		}
		r.example[k] = msg
	}
}

func (r *recorder) result(name, mode string, elapsed time.Duration, cpu cpuDelta) *result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &result{Name: name, Mode: mode, ok: r.ok, lat: r.lat, errs: r.errs, example: r.example, elapsed: elapsed, cpu: cpu}
}

func kind(err error) string {
	switch {
	case errors.Is(err, errWrongKey):
		return "wrong_key"
	case errors.Is(err, recovery.ErrWrongPassword):
		return "wrong_password"
	case errors.Is(err, recovery.ErrDestroyed):
		return "destroyed"
	case errors.Is(err, recovery.ErrIntegrity):
		return "integrity"
	case errors.Is(err, recovery.ErrAuthentication):
		return "token_refused"
	case errors.Is(err, recovery.ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(err.Error(), "deadline exceeded"), strings.Contains(err.Error(), "Client.Timeout"):
		return "timeout"
	case strings.Contains(err.Error(), "login took too long or another login"):
		return "login_expired"
	case strings.Contains(err.Error(), "already handled this request"):
		return "replay"
	case strings.Contains(err.Error(), "could not commit"):
		return "vault_could_not_commit"
	case strings.Contains(err.Error(), "no vault replica could serve"):
		return "relay_no_replica"
	case errors.Is(err, recovery.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, errNoIdleAccount):
		return "no_idle_account"
	}
	return "other"
}

var (
	errWrongKey      = errors.New("recovered a different key")
	errNoIdleAccount = errors.New("every account was busy: the open-loop rate is above what the fleet sustains with this many accounts")
)

func recoverOne(ctx context.Context, c config, a *account) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	k, _, err := a.client.Recover(ctx, a.password)
	if err != nil {
		return err
	}
	if !k.Equal(a.key) {
		return errWrongKey
	}
	return nil
}

// register enrolls every account from regConcurrency workers.
func register(ctx context.Context, c config, accts []*account) *result {
	rec := newRecorder()
	var next atomic.Int64
	cpu0 := sampleCPU(c.fleetPIDs)
	start := time.Now()
	var wg sync.WaitGroup
	for range c.regConcurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(accts) {
					return
				}
				a := accts[i]
				t := time.Now()
				cctx, cancel := context.WithTimeout(ctx, c.timeout)
				_, err := a.client.Enroll(cctx, a.password, a.key, recovery.Authorization{})
				cancel()
				rec.add(time.Since(t), err)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	r := rec.result(fmt.Sprintf("registrations, %d accounts, %d workers", len(accts), c.regConcurrency), "register", elapsed, sampleCPU(c.fleetPIDs).sub(cpu0))
	r.Concurrency = c.regConcurrency
	return r
}

// closedLoop runs concurrency workers, each recovering its own accounts back
// to back, for warmup + duration; it measures completions in the last
// duration.
func closedLoop(ctx context.Context, c config, accts []*account) *result {
	rec := newRecorder()
	var measuring atomic.Bool
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range c.concurrency {
		wg.Go(func() {
			// Worker w owns accounts w, w+C, w+2C, …: no two logins of
			// one account overlap (they would cancel each other).
			var mine []*account
			for j := w; j < len(accts); j += c.concurrency {
				mine = append(mine, accts[j])
			}
			for i := 0; ctx.Err() == nil; i++ {
				a := mine[i%len(mine)]
				t := time.Now()
				err := recoverOne(ctx, c, a)
				if ctx.Err() != nil {
					return // cut off by the end of the run: not counted
				}
				if measuring.Load() {
					rec.add(time.Since(t), err)
				}
			}
		})
	}
	time.Sleep(c.warmup)
	profDone := profileFleet(c, c.profileOut)
	cpu0 := sampleCPU(c.fleetPIDs)
	measuring.Store(true)
	start := time.Now()
	time.Sleep(c.duration)
	measuring.Store(false)
	elapsed := time.Since(start)
	cpu := sampleCPU(c.fleetPIDs).sub(cpu0)
	cancel()
	wg.Wait()
	<-profDone
	r := rec.result(fmt.Sprintf("recoveries, closed loop, %d workers (saturation)", c.concurrency), "closed", elapsed, cpu)
	r.Concurrency = c.concurrency
	return r
}

// openLoop starts recoveries at a fixed rate, each on an idle account,
// whatever the answers; latency counts from the scheduled start.
func openLoop(ctx context.Context, c config, accts []*account, rate float64) *result {
	rec := newRecorder()
	idle := make(chan *account, len(accts))
	for _, a := range accts {
		idle <- a
	}
	interval := time.Duration(float64(time.Second) / rate)
	var measuring atomic.Bool
	var late atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	warmEnd := start.Add(c.warmup)
	end := warmEnd.Add(c.duration)
	var cpu0 cpuSample
	cpuTaken := false
	profDone := profileFleet(c, "")
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * interval)
		if !at.Before(end) {
			break
		}
		if !cpuTaken && !at.Before(warmEnd) {
			if d := time.Until(at); d > 0 {
				time.Sleep(d)
			}
			if c.profileOut != "" {
				profDone = profileFleet(c, c.profileOut+".open")
			}
			cpu0 = sampleCPU(c.fleetPIDs)
			measuring.Store(true)
			cpuTaken = true
		}
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		counted := measuring.Load()
		var a *account
		select {
		case a = <-idle:
		default:
			if counted {
				late.Add(1)
				rec.add(0, errNoIdleAccount)
			}
			continue
		}
		wg.Go(func() {
			err := recoverOne(ctx, c, a)
			d := time.Since(at)
			idle <- a
			if counted {
				rec.add(d, err)
			}
		})
	}
	// Completions of measured starts after `end` still count: the rate
	// is over the starts, the latency over every measured start.
	cpu := sampleCPU(c.fleetPIDs).sub(cpu0)
	elapsed := time.Since(warmEnd)
	wg.Wait()
	<-profDone
	r := rec.result(fmt.Sprintf("recoveries, open loop at %.0f /s", rate), "open", elapsed, cpu)
	r.TargetRate = rate
	r.Late = int(late.Load())
	return r
}

// CPU accounting from /proc: the fleet process, this process, and the whole
// machine (to see what other users of a shared machine took).
type cpuSample struct {
	fleet, self, machine time.Duration
	fleetOK              bool
}

type cpuDelta = cpuSample

func (a cpuSample) sub(b cpuSample) cpuDelta {
	return cpuDelta{fleet: a.fleet - b.fleet, self: a.self - b.self, machine: a.machine - b.machine, fleetOK: a.fleetOK && b.fleetOK}
}

const clkTck = 100 // USER_HZ on Linux

// sampleCPU reads the CPU time of this process, of the fleet's processes
// (summed; fleetOK only if every one was read) and of the machine.
func sampleCPU(pids []int) cpuSample {
	var s cpuSample
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	s.fleetOK = len(pids) > 0
	for _, pid := range pids {
		t, ok := processCPU(pid)
		s.fleet += t
		s.fleetOK = s.fleetOK && ok
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		// cpu user nice system idle iowait irq softirq steal ...
		var busy int64
		for i, v := range f[1:] {
			if i == 3 || i == 4 { // idle, iowait
				continue
			}
			if i >= 8 { // guest time is included in user
				break
			}
			n, _ := strconv.ParseInt(v, 10, 64)
			busy += n
		}
		s.machine = time.Duration(busy) * time.Second / clkTck
	}
	return s
}

// processCPU returns the user + system CPU time of a process from
// /proc/PID/stat.
func processCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// Fields after the ")" of the command name: state is field 3; utime
	// and stime are fields 14 and 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b)[i+1:])
	if len(f) <= 13 {
		return 0, false
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * time.Second / clkTck, true
}

// fromCofferDev takes the relay, fleet bundle, root key, token key and
// replica pids of a running `coffer dev` from its directory.
func (c *config) fromCofferDev(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		return fmt.Errorf("-coffer-dev: %w (is `coffer dev --dir %s` running?)", err, dir)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
			v = strings.ReplaceAll(v[1:len(v)-1], `'\''`, "'")
		}
		env[k] = v
	}
	c.relay, c.fleet, c.fleetRoot = env["COFFER_RELAY"], env["COFFER_FLEET"], env["COFFER_FLEET_ROOT"]
	c.tokenKey = filepath.Join(dir, devfleet.TokenKeyFile)
	c.issuer, c.audience, c.vaultAudience = devfleet.Issuer, devfleet.Audience, devfleet.VaultAudience
	for i := 1; ; i++ {
		p, ok := env[fmt.Sprintf("COFFER_DEV_REPLICA_%d_PID", i)]
		if !ok {
			break
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("-coffer-dev: %s/env: replica %d pid %q", dir, i, p)
		}
		if _, ok := processCPU(n); ok { // a replica a script killed is not counted
			c.fleetPIDs = append(c.fleetPIDs, n)
		}
	}
	if c.relay == "" || c.fleet == "" || c.fleetRoot == "" {
		return fmt.Errorf("-coffer-dev: %s/env lacks COFFER_RELAY, COFFER_FLEET or COFFER_FLEET_ROOT", dir)
	}
	return nil
}

func printMachine(c config) {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	fmt.Printf("machine: %d CPUs (%s), %s, GOMAXPROCS %d, load average %s\n", runtime.NumCPU(), model, runtime.Version(), runtime.GOMAXPROCS(0), load)
	fmt.Printf("relay %s, %d accounts, key stretching %s (clients), HTTP/%s\n", c.relay, c.accounts, pake.TestKSF, map[bool]string{false: "1.1", true: "2 (h2c)"}[c.h2c])
}

// profileFleet fetches a CPU profile of the fleet process lasting the
// measured duration, if asked to; the channel closes when it is written.
func profileFleet(c config, out string) <-chan struct{} {
	done := make(chan struct{})
	if out == "" || c.pprofURL == "" {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		secs := max(1, int(c.duration/time.Second))
		u := strings.TrimRight(c.pprofURL, "/") + "/profile?seconds=" + strconv.Itoa(secs)
		resp, err := (&http.Client{Timeout: c.duration + 30*time.Second}).Get(u)
		if err != nil {
			log.Printf("fleet profile: %v", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(out)
		if err != nil {
			log.Printf("fleet profile: %v", err)
			return
		}
		defer f.Close()
		if _, err := io.Copy(f, resp.Body); err != nil {
			log.Printf("fleet profile: %v", err)
		}
	}()
	return done
}

// summarizeRuns prints, per label and mode, the median of each figure over
// the runs in a -json file (and the number of runs).
func summarizeRuns(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	type key struct{ label, mode string }
	groups := map[key][]result{}
	var order []key
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
		k := key{r.Label, r.Mode}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	med := func(rs []result, f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	fmt.Println("| label | run | runs | ops/s (median) | ops/s (min–max) | p50 ms | p90 ms | p99 ms | fleet CPU µs/op | fleet cores | generator CPU µs/op | other load (cores) | errors |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, k := range order {
		rs := groups[k]
		lo, hi := rs[0].PerSecond, rs[0].PerSecond
		errs := 0
		for _, r := range rs {
			lo, hi = min(lo, r.PerSecond), max(hi, r.PerSecond)
			for _, n := range r.Errors {
				errs += n
			}
		}
		what := k.mode
		switch k.mode {
		case "closed":
			what = fmt.Sprintf("recoveries, saturation (%d workers)", rs[0].Concurrency)
		case "open":
			what = fmt.Sprintf("recoveries, open loop at %.0f /s (median target)", med(rs, func(r result) float64 { return r.TargetRate }))
		case "register":
			what = fmt.Sprintf("registrations (%d workers)", rs[0].Concurrency)
		}
		fmt.Printf("| %s | %s | %d | %.0f | %.0f–%.0f | %.1f | %.1f | %.1f | %.0f | %.2f | %.0f | %.2f | %d |\n",
			k.label, what, len(rs), med(rs, func(r result) float64 { return r.PerSecond }), lo, hi,
			med(rs, func(r result) float64 { return r.P50ms }), med(rs, func(r result) float64 { return r.P90ms }),
			med(rs, func(r result) float64 { return r.P99ms }), med(rs, func(r result) float64 { return r.FleetCPUus }),
			med(rs, func(r result) float64 { return r.FleetCores }), med(rs, func(r result) float64 { return r.GenCPUus }),
			med(rs, func(r result) float64 { return r.OtherCores }), errs)
	}
	return nil
}
