//go:build !linux

package harden

import (
	"fmt"
	"runtime"
)

func process() (Status, error) {
	return Status{Dumpable: true}, fmt.Errorf("harden: %w on %s (set the core file limit to 0 and keep swap encrypted)", ErrUnsupported, runtime.GOOS)
}

func current() (Status, error) { return Status{Dumpable: true}, nil }

func lock([]byte) error { return fmt.Errorf("harden: mlock: %w on %s", ErrUnsupported, runtime.GOOS) }
