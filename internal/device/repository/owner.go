package repository

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// A lock names its owner precisely enough that a process on the same
// machine can tell at once whether the owner is still running: its host
// name, machine id (/etc/machine-id), boot id, pid namespace, pid and the
// process's start time (clock ticks after boot, /proc/self/stat field 22).
// A pid alone is not enough, since pids are reused; a pid with the same
// start time in the same boot and pid namespace is the same process.

// owner is the identity of a process.
type owner struct {
	Host    string `json:"host"`
	PID     int    `json:"pid"`
	Start   uint64 `json:"start,omitempty"`   // process start time, clock ticks after boot
	Boot    string `json:"boot,omitempty"`    // /proc/sys/kernel/random/boot_id
	PIDNS   string `json:"pidns,omitempty"`   // readlink /proc/self/ns/pid
	Machine string `json:"machine,omitempty"` // /etc/machine-id
}

var (
	selfOnce sync.Once
	self     owner
)

// thisProcess returns this process's identity.
func thisProcess() owner {
	selfOnce.Do(func() {
		self.Host, _ = os.Hostname()
		self.PID = os.Getpid()
		self.Start, _ = processStart(self.PID)
		self.Boot = readTrim("/proc/sys/kernel/random/boot_id")
		self.PIDNS, _ = os.Readlink("/proc/self/ns/pid")
		if self.Machine = readTrim("/etc/machine-id"); self.Machine == "" {
			self.Machine = readTrim("/var/lib/dbus/machine-id")
		}
	})
	return self
}

func readTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// processStart reads field 22 (starttime) of /proc/PID/stat. The second
// field (the command name) may hold spaces and parentheses, so fields are
// counted after the last ')'.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return 0, errors.New("malformed stat")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// deadReason says why the owner o is known not to be running, or "" if it
// may be running (another machine, or no way to tell).
func (o owner) deadReason() string {
	me := thisProcess()
	if o.Host == "" || o.Host != me.Host {
		return ""
	}
	if o.Boot != "" && me.Boot != "" && o.Boot != me.Boot {
		// Another boot: of this machine only if the machine ids match.
		if o.Machine != "" && o.Machine == me.Machine {
			return "its machine has restarted since"
		}
		return ""
	}
	if o.Boot == "" || o.Boot != me.Boot || o.PIDNS == "" || o.PIDNS != me.PIDNS || o.Start == 0 || o.PID <= 0 {
		return "" // an older Coffer's lock, or another pid namespace: cannot tell
	}
	if err := syscall.Kill(o.PID, 0); errors.Is(err, syscall.ESRCH) {
		return "its process has exited"
	}
	start, err := processStart(o.PID)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "its process has exited"
		}
		return ""
	}
	if start != o.Start {
		return "its process has exited (the pid now belongs to another process)"
	}
	return ""
}
