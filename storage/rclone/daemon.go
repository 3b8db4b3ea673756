package rclone

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer/storage"
)

// secretOpt matches on-the-fly remote options that carry secrets.
var secretOpt = regexp.MustCompile(`(?i)[,:](pass|password|token|secret|key_file_pass|client_secret|service_account_credentials|bearer_token|key_pem)=`)

// startTimeout bounds the start of the rclone daemon.
const startTimeout = 20 * time.Second

// daemonKey names one daemon: the binary and the config file it reads.
type daemonKey struct {
	bin, config string
}

// Binary returns the rclone binary the provider runs: COFFER_RCLONE, or
// rclone in PATH.
func Binary() (string, error) {
	if p := os.Getenv("COFFER_RCLONE"); p != "" {
		return p, nil
	}
	p, err := exec.LookPath("rclone")
	if err != nil {
		return "", errors.New("rclone: the rclone binary was not found in PATH (install it: https://rclone.org/install/, or `apt install rclone`; or set COFFER_RCLONE to its path)")
	}
	return p, nil
}

func currentKey() (daemonKey, error) {
	bin, err := Binary()
	if err != nil {
		return daemonKey{}, err
	}
	return daemonKey{bin: bin, config: os.Getenv("RCLONE_CONFIG")}, nil
}

type daemon struct {
	host, user, pass string
	client           *http.Client
	cmd              *exec.Cmd
	exited           chan struct{}
	log              *tail
}

var daemons struct {
	sync.Mutex
	m map[daemonKey]*daemon
}

// getDaemon returns the running daemon for key, starting it if it is not
// running (or has exited).
func getDaemon(key daemonKey) (*daemon, error) {
	daemons.Lock()
	defer daemons.Unlock()
	if d := daemons.m[key]; d != nil {
		select {
		case <-d.exited:
		default:
			return d, nil
		}
	}
	d, err := startDaemon(key)
	if err != nil {
		return nil, err
	}
	if daemons.m == nil {
		daemons.m = make(map[daemonKey]*daemon)
	}
	daemons.m[key] = d
	return d, nil
}

// Shutdown stops every rclone daemon this process started. The daemons
// also stop when the process exits; later calls start them again.
func Shutdown() {
	daemons.Lock()
	defer daemons.Unlock()
	for k, d := range daemons.m {
		d.cmd.Process.Kill()
		<-d.exited
		delete(daemons.m, k)
	}
}

var servingRE = regexp.MustCompile(`Serving remote control on http://([^/ ]+)/`)

func startDaemon(key daemonKey) (*daemon, error) {
	secret := func() string {
		var b [16]byte
		rand.Read(b[:])
		return hex.EncodeToString(b[:])
	}
	d := &daemon{user: secret(), pass: secret(), exited: make(chan struct{}), log: &tail{}}
	cmd := exec.Command(key.bin, "rcd", "--rc-addr", "127.0.0.1:0", "--rc-serve", "--no-check-dest", "--log-level", "NOTICE")
	// The credentials go in the environment, not the command line, which
	// other local users can read.
	cmd.Env = append(os.Environ(), "RCLONE_RC_USER="+d.user, "RCLONE_RC_PASS="+d.pass)
	cmd.SysProcAttr = sysProcAttr()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("rclone: starting %s rcd: %w", key.bin, err)
	}
	d.cmd = cmd
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			d.log.add(line)
			if m := servingRE.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	go func() { cmd.Wait(); close(d.exited) }()
	select {
	case d.host = <-found:
	case <-d.exited:
		return nil, fmt.Errorf("%w: rclone rcd exited at start: %s", storage.ErrUnavailable, d.log.String())
	case <-time.After(startTimeout):
		cmd.Process.Kill()
		return nil, fmt.Errorf("%w: rclone rcd did not start within %v: %s", storage.ErrUnavailable, startTimeout, d.log.String())
	}
	d.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, Proxy: nil}}
	return d, nil
}

// tail keeps the last lines of the daemon's log, for error messages.
type tail struct {
	mu    sync.Mutex
	lines []string
}

func (t *tail) add(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, s)
	if len(t.lines) > 20 {
		t.lines = t.lines[1:]
	}
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}
