package harden

import (
	"encoding/json"
	"os"
	"os/exec"
	"runtime"
	"testing"
)

// TestProcessInChild runs Process in a child process (the test binary
// again) and checks there, with prctl(PR_GET_DUMPABLE) and getrlimit, that
// the child is no longer dumpable and has no core limit, and from here
// that /proc/CHILD is then owned by root (so other processes of the same
// user cannot read its memory or attach).
func TestProcessInChild(t *testing.T) {
	if os.Getenv("HARDEN_CHILD") != "" {
		before, _ := Current()
		after, err := Process()
		secret := []byte("a fleet secret's bytes")
		lerr := Lock(secret)
		json.NewEncoder(os.Stdout).Encode(map[string]any{"before": before, "after": after, "err": errString(err), "lock_err": errString(lerr)})
		os.Stdin.Read(make([]byte, 1)) // wait for the parent's look at /proc
		os.Exit(0)
	}
	if runtime.GOOS != "linux" {
		t.Skip("Linux controls")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestProcessInChild$")
	cmd.Env = append(os.Environ(), "HARDEN_CHILD=1")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	var got struct {
		Before, After Status
		Err, LockErr  string
	}
	if err := json.NewDecoder(stdout).Decode(&got); err != nil {
		t.Fatal(err)
	}
	t.Logf("child: %+v", got)
	if got.Err != "" || got.After.Dumpable || got.After.CoreLimit != 0 {
		t.Fatalf("after Process: %+v (%s)", got.After, got.Err)
	}
	if got.LockErr != "" {
		t.Logf("mlock (best effort) failed here: %s", got.LockErr)
	}
	if os.Getuid() != 0 {
		// A non-dumpable process's /proc files belong to root.
		fi, err := os.Stat("/proc/" + itoa(cmd.Process.Pid) + "/mem")
		if err == nil {
			if st, ok := statUID(fi); ok && st != 0 {
				t.Fatalf("/proc/CHILD/mem owned by uid %d, want root", st)
			}
		}
		if _, err := os.ReadFile("/proc/" + itoa(cmd.Process.Pid) + "/environ"); err == nil {
			t.Fatal("read a non-dumpable process's /proc/PID/environ as the same user")
		}
	}
	stdin.Close()
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func itoa(n int) string {
	b := []byte{}
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}
