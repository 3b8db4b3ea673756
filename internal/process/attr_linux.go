package process

import "syscall"

// sysProcAttr puts a child in its own process group and has the kernel
// SIGKILL it when this process dies (strictly: when the thread that started
// it ends, which Go's runtime does only to a thread a goroutine locked and
// did not unlock).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
