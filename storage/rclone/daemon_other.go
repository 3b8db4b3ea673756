//go:build !linux

package rclone

import "syscall"

// sysProcAttr: outside Linux the daemon is stopped by Shutdown, or ends
// when its stderr pipe closes with this process.
func sysProcAttr() *syscall.SysProcAttr { return nil }
