//go:build unix

package process

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childEnv selects what the test binary does when it runs as a child.
const childEnv = "COFFER_PROCESS_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		child(mode)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child is the test binary run as a child process. Every mode that keeps
// running gives up after a minute, so a failed test leaves nothing behind.
func child(mode string) {
	forever := func() { time.Sleep(time.Minute); os.Exit(9) }
	switch mode {
	case "exit3":
		os.Exit(3)
	case "clean": // stops cleanly on SIGTERM
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		fmt.Println("ready")
		select {
		case <-c:
			os.Exit(0)
		case <-time.After(time.Minute):
			os.Exit(9)
		}
	case "stuck": // ignores SIGTERM; SIGQUIT ends it (Go's default)
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		forever()
	case "stubborn": // ignores SIGTERM and SIGQUIT
		signal.Ignore(syscall.SIGTERM, syscall.SIGQUIT)
		fmt.Println("ready")
		forever()
	case "group": // starts a grandchild in its own group, sharing stdout
		gc := exec.Command(os.Args[0])
		gc.Env = append(os.Environ(), childEnv+"=sleep")
		gc.Stdout = os.Stdout
		if err := gc.Start(); err != nil {
			os.Exit(8)
		}
		fmt.Println(gc.Process.Pid)
		forever()
	case "parent": // starts a grandchild with Start, sharing stdout
		gc := exec.Command(os.Args[0])
		gc.Env = append(os.Environ(), childEnv+"=sleep")
		gc.Stdout = os.Stdout
		p, err := Start(gc, nil)
		if err != nil {
			os.Exit(8)
		}
		fmt.Println(p.Pid())
		forever()
	case "sleep":
		forever()
	}
	os.Exit(7)
}

// command runs the test binary as a child in mode.
func command(mode string) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	return cmd
}

// startReady starts a child in mode and waits for its "ready" line; its
// stderr goes to the returned buffer, read once it has ended.
func startReady(t *testing.T, mode string) (*Process, *bytes.Buffer) {
	t.Helper()
	cmd := command(mode)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	p, err := Start(cmd, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("child %s: read %q, %v", mode, line, err)
	}
	return p, &stderr
}

func TestExitsAtOnce(t *testing.T) {
	var seen error
	p, err := Start(command("exit3"), func(err error) { seen = err })
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the child did not exit")
	}
	var ee *exec.ExitError
	if err := p.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("Wait: %v, want exit status 3", err)
	}
	if seen != p.Err() || !p.Exited() {
		t.Fatalf("onExit saw %v, Err %v, Exited %v", seen, p.Err(), p.Exited())
	}
	if end, err := p.Stop(time.Second, time.Second); end != Terminated || err != nil {
		t.Fatalf("Stop of an ended process: %v, %v", end, err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
}

func TestStartFails(t *testing.T) {
	if _, err := Start(exec.Command("/nonexistent/binary"), nil); err == nil {
		t.Fatal("Start of a missing binary succeeded")
	}
}

func TestStopClean(t *testing.T) {
	p, _ := startReady(t, "clean")
	if p.Exited() || p.Err() != nil {
		t.Fatal("the child ended early")
	}
	start := time.Now()
	end, err := p.Stop(10*time.Second, time.Second)
	if end != Terminated || err != nil {
		t.Fatalf("Stop: %v, %v; want terminated", end, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Stop took %v", d)
	}
	if err := p.Err(); err != nil {
		t.Fatalf("exit: %v, want status 0", err)
	}
}

func TestStopQuitsStuck(t *testing.T) {
	p, stderr := startReady(t, "stuck")
	end, err := p.Stop(200*time.Millisecond, 10*time.Second)
	if end != Quit || err != nil {
		t.Fatalf("Stop: %v, %v; want quit", end, err)
	}
	if s := stderr.String(); !strings.Contains(s, "SIGQUIT") || !strings.Contains(s, "goroutine ") {
		t.Fatalf("no goroutine dump on stderr after SIGQUIT:\n%s", s)
	}
}

func TestStopKills(t *testing.T) {
	p, _ := startReady(t, "stubborn")
	end, err := p.Stop(200*time.Millisecond, 200*time.Millisecond)
	if end != Killed || err != nil {
		t.Fatalf("Stop: %v, %v; want killed", end, err)
	}
	var ee *exec.ExitError
	if !errors.As(p.Err(), &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("exit: %v, want SIGKILL", p.Err())
	}
	// quit 0: no SIGQUIT, which "stuck" would have obeyed.
	p, _ = startReady(t, "stuck")
	if end, err := p.Stop(200*time.Millisecond, 0); end != Killed || err != nil {
		t.Fatalf("Stop without SIGQUIT: %v, %v; want killed", end, err)
	}
}

// grandchild starts a child in mode, which starts a grandchild holding the
// write end of a pipe, and returns the read end and the grandchild's pid.
func grandchild(t *testing.T, mode string) (*Process, *os.File, int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	cmd := command(mode)
	cmd.Stdout = w
	p, err := Start(cmd, nil)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(r).ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil {
		t.Fatalf("child %s: read %q, %v", mode, line, err)
	}
	t.Cleanup(func() { p.Kill(); syscall.Kill(pid, syscall.SIGKILL) })
	return p, r, pid
}

// waitEOF waits for every writer of r to be gone.
func waitEOF(t *testing.T, r *os.File, what string) {
	t.Helper()
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TestKillReachesGroup: Kill ends what the child started too.
func TestKillReachesGroup(t *testing.T) {
	p, r, _ := grandchild(t, "group")
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	waitEOF(t, r, "the grandchild outlived Kill of its group")
}

// TestSignalGroup: Signal reaches the whole group (SIGSTOP, SIGCONT).
func TestSignalGroup(t *testing.T) {
	p, _ := startReady(t, "clean")
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if end, err := p.Stop(10*time.Second, 0); end != Terminated || err != nil {
		t.Fatalf("Stop after SIGSTOP and SIGCONT: %v, %v", end, err)
	}
}
