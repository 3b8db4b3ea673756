// Package rclonetest runs real servers behind rclone remotes, for tests:
// OpenSSH's sshd (SFTP) and Apache httpd with mod_dav (WebDAV), both
// Debian packages (openssh-server, apache2) that nobody here wrote, on
// 127.0.0.1, each with its own generated keys or password, stopped when
// the test ends. It writes an rclone config naming the remote and points
// RCLONE_CONFIG at it (t.Setenv: the test must not be parallel).
//
// A missing binary (rclone, sshd, apache2) skips the test, or fails it
// when the environment variable CI is "true": .ci/test installs them
// (.ci/install-rclone.sh, apt-get install openssh-server apache2).
package rclonetest

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/storage/rclone"
)

const startTimeout = 15 * time.Second

func missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Require skips (or, under CI, fails) the test unless rclone is installed,
// and stops the rclone daemons the test started when it ends.
func Require(t testing.TB) string {
	t.Helper()
	bin, err := rclone.Binary()
	if err != nil {
		missing(t, err.Error()+": run .ci/install-rclone.sh")
	}
	out, err := exec.Command(bin, "version").Output()
	var major, minor int
	if err == nil {
		_, err = fmt.Sscanf(string(out), "rclone v%d.%d", &major, &minor)
	}
	if err != nil || major < rclone.MinVersion[0] || (major == rclone.MinVersion[0] && minor < rclone.MinVersion[1]) {
		missing(t, fmt.Sprintf("%s is not rclone v%d.%d or later (%q, %v): run .ci/install-rclone.sh", bin, rclone.MinVersion[0], rclone.MinVersion[1], strings.SplitN(string(out), "\n", 2)[0], err))
	}
	t.Cleanup(rclone.Shutdown)
	return bin
}

func need(t testing.TB, paths ...string) string {
	t.Helper()
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	missing(t, fmt.Sprintf("%s not found: install Debian's %s (.ci/test does)", paths[0], map[string]string{"/usr/sbin/sshd": "openssh-server", "/usr/sbin/apache2": "apache2"}[paths[0]]))
	return ""
}

// Server is a running server behind an rclone remote.
type Server struct {
	// Name is the remote's name in the rclone config.
	Name string
	// Root is the directory the server serves, on this machine.
	Root string
	// Addr is host:port, on 127.0.0.1.
	Addr string

	base   string // path prefix in the remote for Remote
	cmd    *exec.Cmd
	exited chan struct{}
	out    *syncBuffer
	once   sync.Once
}

// Remote returns "NAME:path" for a fresh, empty directory n on the server.
func (s *Server) Remote(t testing.TB, n int) string {
	return fmt.Sprintf("%s:%sr%d", s.Name, s.base, n)
}

// Stop kills the server. Safe to call more than once.
func (s *Server) Stop() {
	s.once.Do(func() {
		s.cmd.Process.Kill()
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
		}
	})
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// publicDir makes a directory other users can enter (Apache drops root).
func publicDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "coffer-rclonetest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func writeFile(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// start starts argv (with the port put in by mk) until ready answers,
// trying 3 free ports.
func start(t testing.TB, mk func(port int) []string, ready func(addr string) bool) (*Server, int) {
	t.Helper()
	var last string
	for range 3 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		argv := mk(port)
		cmd := exec.Command(argv[0], argv[1:]...)
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting %s: %v", argv[0], err)
		}
		s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), cmd: cmd, exited: make(chan struct{}), out: out}
		go func() { cmd.Wait(); close(s.exited) }()
		deadline := time.Now().Add(startTimeout)
		for {
			select {
			case <-s.exited:
				last = fmt.Sprintf("%s exited at start: %s\n%s", argv[0], cmd.ProcessState, out.String())
			default:
				if ready(s.Addr) {
					t.Cleanup(func() {
						s.Stop()
						if t.Failed() {
							t.Logf("%s output:\n%s", argv[0], out.String())
						}
					})
					return s, port
				}
				if time.Now().Before(deadline) {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				s.Stop()
				last = fmt.Sprintf("%s did not answer on %s within %v:\n%s", argv[0], s.Addr, startTimeout, out.String())
			}
			break
		}
	}
	t.Fatal(last)
	return nil, 0
}

func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

func writeConfig(t testing.TB, section string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rclone.conf")
	writeFile(t, path, section, 0o600)
	t.Setenv("RCLONE_CONFIG", path)
}

// StartSFTP starts OpenSSH's sshd on 127.0.0.1 with a fresh host key,
// accepting a fresh user key for the current user, with the SFTP
// subsystem, and writes an rclone config with the remote "sftp" on it.
func StartSFTP(t testing.TB) *Server {
	t.Helper()
	bin := Require(t)
	_ = bin
	sshd := need(t, "/usr/sbin/sshd")
	keygen, err := exec.LookPath("ssh-keygen")
	if err != nil {
		missing(t, "ssh-keygen not found: install Debian's openssh-client")
	}
	dir := publicDir(t)
	run(t, keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "host_key"))
	run(t, keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "user_key"))
	pub, err := os.ReadFile(filepath.Join(dir, "user_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "authorized_keys"), string(pub), 0o600)
	if os.Geteuid() == 0 {
		os.MkdirAll("/run/sshd", 0o755) // sshd's privilege separation directory
	}
	root := filepath.Join(dir, "data")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	s, port := start(t, func(port int) []string {
		cfg := filepath.Join(dir, "sshd_config")
		writeFile(t, cfg, fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
AuthorizedKeysFile %s
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowUsers %s
PidFile none
MaxStartups 64:30:128
MaxSessions 64
Subsystem sftp internal-sftp
`, port, filepath.Join(dir, "host_key"), filepath.Join(dir, "authorized_keys"), u.Username), 0o600)
		return []string{sshd, "-D", "-e", "-f", cfg}
	}, dialable)
	hostPub, err := os.ReadFile(filepath.Join(dir, "host_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(hostPub))
	known := filepath.Join(dir, "known_hosts")
	writeFile(t, known, fmt.Sprintf("[127.0.0.1]:%d %s %s\n", port, f[0], f[1]), 0o600)
	writeConfig(t, fmt.Sprintf(`[sftp]
type = sftp
host = 127.0.0.1
port = %d
user = %s
key_file = %s
known_hosts_file = %s
shell_type = none
disable_hashcheck = true
`, port, u.Username, filepath.Join(dir, "user_key"), known))
	s.Name, s.Root, s.base = "sftp", root, root+"/"
	return s
}

// WebDAV credentials of the test server.
const (
	DAVUser = "coffer"
	DAVPass = "dav-test-password"
)

// StartWebDAV starts Apache httpd with mod_dav_fs on 127.0.0.1, with basic
// authentication, and writes an rclone config with the remote "dav" on
// it. Run as root, httpd drops to www-data, which then owns the served
// directory.
func StartWebDAV(t testing.TB) *Server {
	t.Helper()
	bin := Require(t)
	httpd := need(t, "/usr/sbin/apache2")
	mods := "/usr/lib/apache2/modules"
	dir := publicDir(t)
	root := filepath.Join(dir, "data")
	for _, d := range []string{root, filepath.Join(dir, "run")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	userLine := ""
	if os.Geteuid() == 0 {
		wd, err := user.Lookup("www-data")
		if err != nil {
			t.Fatalf("httpd runs as www-data when started by root: %v", err)
		}
		uid, _ := strconv.Atoi(wd.Uid)
		gid, _ := strconv.Atoi(wd.Gid)
		for _, d := range []string{root, filepath.Join(dir, "run")} {
			if err := os.Chown(d, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		userLine = "User www-data\nGroup www-data\n"
	}
	sum := sha1.Sum([]byte(DAVPass))
	writeFile(t, filepath.Join(dir, "htpasswd"), DAVUser+":{SHA}"+base64.StdEncoding.EncodeToString(sum[:])+"\n", 0o644)
	s, port := start(t, func(port int) []string {
		cfg := filepath.Join(dir, "httpd.conf")
		writeFile(t, cfg, fmt.Sprintf(`ServerRoot %[1]s
ServerName 127.0.0.1
Listen 127.0.0.1:%[2]d
PidFile %[1]s/run/httpd.pid
DefaultRuntimeDir %[1]s/run
Mutex file:%[1]s/run default
ErrorLog %[1]s/run/error.log
LogLevel warn
%[4]sLoadModule mpm_event_module %[3]s/mod_mpm_event.so
LoadModule authz_core_module %[3]s/mod_authz_core.so
LoadModule authz_user_module %[3]s/mod_authz_user.so
LoadModule authn_core_module %[3]s/mod_authn_core.so
LoadModule authn_file_module %[3]s/mod_authn_file.so
LoadModule auth_basic_module %[3]s/mod_auth_basic.so
LoadModule dav_module %[3]s/mod_dav.so
LoadModule dav_fs_module %[3]s/mod_dav_fs.so
ThreadsPerChild 50
DavLockDB %[1]s/run/davlock
DocumentRoot %[1]s/data
LimitRequestBody 0
<Directory %[1]s/data>
  Dav On
  AuthType Basic
  AuthName coffer
  AuthUserFile %[1]s/htpasswd
  Require valid-user
</Directory>
`, dir, port, mods, userLine), 0o644)
		return []string{httpd, "-f", cfg, "-DFOREGROUND"}
	}, func(addr string) bool {
		resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	obscured := run(t, bin, "obscure", DAVPass)
	writeConfig(t, fmt.Sprintf(`[dav]
type = webdav
url = http://127.0.0.1:%d/
vendor = other
user = %s
pass = %s
`, port, DAVUser, obscured))
	s.Name, s.Root, s.base = "dav", root, ""
	return s
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
