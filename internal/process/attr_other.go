//go:build unix && !linux

package process

import "syscall"

// sysProcAttr puts a child in its own process group. Without Linux's
// parent-death signal, a child outlives this process if it is killed.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
