//go:build linux

package harden

import (
	"errors"
	"fmt"
	"syscall"
)

const (
	prSetDumpable = 4 // PR_SET_DUMPABLE
	prGetDumpable = 3 // PR_GET_DUMPABLE
	rlimitMemlock = 8 // RLIMIT_MEMLOCK (not in package syscall)
)

func process() (Status, error) {
	var errs []error
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetDumpable, 0, 0); e != 0 {
		errs = append(errs, fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", e))
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{Cur: 0, Max: 0}); err != nil {
		errs = append(errs, fmt.Errorf("setrlimit(RLIMIT_CORE, 0): %w", err))
	}
	st, err := current()
	return st, errors.Join(append(errs, err)...)
}

func current() (Status, error) {
	d, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prGetDumpable, 0, 0)
	if e != 0 {
		return Status{}, fmt.Errorf("prctl(PR_GET_DUMPABLE): %w", e)
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_CORE, &rl); err != nil {
		return Status{}, fmt.Errorf("getrlimit(RLIMIT_CORE): %w", err)
	}
	return Status{Dumpable: d != 0, CoreLimit: rl.Cur}, nil
}

func lock(b []byte) error {
	if err := syscall.Mlock(b); err != nil {
		var rl syscall.Rlimit
		syscall.Getrlimit(rlimitMemlock, &rl)
		return fmt.Errorf("mlock %d bytes: %w (RLIMIT_MEMLOCK %d)", len(b), err, rl.Cur)
	}
	return nil
}
