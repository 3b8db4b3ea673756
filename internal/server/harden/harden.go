// Package harden keeps a vault replica's secrets out of places they could
// leak from: core files, other processes of the same user (ptrace,
// /proc/PID/mem) and swap.
//
// Process makes the process non-dumpable (Linux: prctl(PR_SET_DUMPABLE, 0):
// no core file, no ptrace attach and no /proc/PID/mem reads by other
// processes of the same user, root excepted) and sets RLIMIT_CORE to 0
// (no core file on any system with rlimits). Lock mlocks the pages that hold
// secret bytes so they are never written to swap; it is best effort
// (RLIMIT_MEMLOCK may be too small, and the Go runtime may hold other
// copies: AES key schedules, HPKE keys inside crypto/hpke), which is why
// Process matters more. serve calls both once the fleet secrets are loaded.
package harden

import "errors"

// ErrUnsupported: the platform has no such control (Process and Lock do
// what it has and report the rest).
var ErrUnsupported = errors.New("not supported on this platform")

// Status is what Process achieved.
type Status struct {
	Dumpable  bool   // the process can still be dumped or traced
	CoreLimit uint64 // RLIMIT_CORE's soft limit after the call
}

// Process disables core dumps and tracing of this process. The error says
// what could not be done; the rest is done anyway.
func Process() (Status, error) { return process() }

// Current reports the process's state without changing it.
func Current() (Status, error) { return current() }

// Lock keeps the pages of every b in memory (never swapped). It returns an
// error naming what failed (RLIMIT_MEMLOCK too small, no permission) and
// locks what it can.
func Lock(bufs ...[]byte) error {
	var errs []error
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		if err := lock(b); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
