package rclone

import "syscall"

// sysProcAttr makes the daemon die with this process.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
