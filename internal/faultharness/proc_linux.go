package faultharness

import "syscall"

// sysProcAttr puts a child in its own process group (so a signal reaches
// everything it started) and has the kernel kill it if the test process dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
