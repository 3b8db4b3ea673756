package cli

import "syscall"

// devChildAttr keeps 'coffer dev --replicas N' children out of the
// terminal's process group (the dev process stops them, relay first) and
// kills them if the dev process dies.
func devChildAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
