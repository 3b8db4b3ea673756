package cli

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime/debug"
	"time"

	"github.com/cofferhq/coffer/internal/server/serve"
)

// What the long-running servers (vault serve, relay serve, dev) share:
// JSON logs, GC tuning, pprof.

// newLogger returns a JSON logger on stderr.
func (a *app) newLogger(level slog.Level) *slog.Logger {
	if a.quiet && level < slog.LevelWarn {
		level = slog.LevelWarn // --quiet: warnings and errors only
	}
	return slog.New(slog.NewJSONHandler(a.Stderr, &slog.HandlerOptions{Level: level}))
}

// serverGCPercent is the garbage collector's target for the long-running
// servers (vault replicas, relays) when GOGC is not set: their live heaps
// are small (tens of MB) and they allocate per request, so collecting half
// as often costs little memory and saved 5 % of a fleet's CPU per recovery
// (bench/vault/README.md). GOGC or GOMEMLIMIT in the environment win.
const serverGCPercent = 200

// tuneGC applies serverGCPercent unless the operator set GOGC.
func (a *app) tuneGC() {
	if a.Getenv("GOGC") == "" {
		debug.SetGCPercent(serverGCPercent)
	}
}

// startPprof serves Go's net/http/pprof on the loopback address in
// COFFER_PPROF, if set, for profiling a server under load (OPERATIONS.md,
// "Profiling"). It refuses other addresses: profiles reveal memory layout
// and timing, and the endpoint has no authentication.
func (a *app) startPprof(log *slog.Logger) error {
	addr := a.Getenv("COFFER_PPROF")
	if addr == "" {
		return nil
	}
	if h, _, err := net.SplitHostPort(addr); err != nil || !serve.IsLoopbackHost(h) {
		return usagef("COFFER_PPROF=%q: give a loopback HOST:PORT, e.g. 127.0.0.1:6060", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("COFFER_PPROF: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("serving net/http/pprof (COFFER_PPROF)", "addr", ln.Addr().String())
	go (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
	return nil
}
