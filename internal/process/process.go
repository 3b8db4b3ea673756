//go:build unix

// Package process supervises child processes. Start puts a child in its
// own process group, so that a signal reaches everything it started and the
// terminal's signals (Ctrl-C) do not, and on Linux has the kernel SIGKILL it
// if this process dies. Stop ends it in steps: SIGTERM (a clean stop), then
// SIGQUIT (a Go program writes every goroutine's stack to its stderr: what
// it was stuck on), then SIGKILL.
package process

import (
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// KillWait bounds the wait for a process to end after SIGKILL.
const KillWait = 10 * time.Second

// Process is a started child process.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts cmd in its own process group (it sets cmd.SysProcAttr) and
// waits for it in the background. onExit, if not nil, is called with
// cmd.Wait's result once the process has ended, before Done is closed:
// there the caller closes or annotates the files it gave the child.
func Start(cmd *exec.Cmd, onExit func(error)) (*Process, error) {
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		if onExit != nil {
			onExit(p.err)
		}
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id (also the id of its process group).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err returns how the process ended (cmd.Wait's result; nil for exit
// status 0), or nil while it runs.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Wait waits for the process to end and returns Err.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) error {
	return syscall.Kill(-p.Pid(), sig)
}

// waitFor waits up to d for the process to end, reporting whether it did.
func (p *Process) waitFor(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// Kill SIGKILLs the process group and waits up to KillWait for the process
// to end (at once if it has). The error says it did not.
func (p *Process) Kill() error {
	if p.Exited() {
		return nil
	}
	p.Signal(syscall.SIGKILL)
	if !p.waitFor(KillWait) {
		return fmt.Errorf("pid %d did not die after SIGKILL", p.Pid())
	}
	return nil
}

// Ending is how Stop ended a process.
type Ending int

const (
	// Terminated: it had ended, or ended within the grace period after
	// SIGTERM.
	Terminated Ending = iota
	// Quit: it was still running after the grace period and ended after
	// SIGQUIT.
	Quit
	// Killed: it was still running after SIGTERM (and SIGQUIT) and got
	// SIGKILL.
	Killed
)

func (e Ending) String() string {
	switch e {
	case Terminated:
		return "terminated"
	case Quit:
		return "quit"
	case Killed:
		return "killed"
	}
	return fmt.Sprintf("Ending(%d)", int(e))
}

// Stop sends SIGTERM to the process group and waits up to grace for the
// process to end. If it still runs and quit is positive, it sends SIGQUIT
// to the process (not its group: the stacks wanted are its own) and waits up
// to quit; then it SIGKILLs the group (Kill). quit 0 goes from SIGTERM
// straight to SIGKILL. It returns how the process ended; the error is
// Kill's.
func (p *Process) Stop(grace, quit time.Duration) (Ending, error) {
	if p.Exited() {
		return Terminated, nil
	}
	p.Signal(syscall.SIGTERM)
	if p.waitFor(grace) {
		return Terminated, nil
	}
	if quit > 0 {
		p.cmd.Process.Signal(syscall.SIGQUIT)
		if p.waitFor(quit) {
			return Quit, nil
		}
	}
	return Killed, p.Kill()
}
