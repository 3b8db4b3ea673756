package e2e

// Password recovery end to end, with real processes on 127.0.0.1: 'coffer
// vault init', 'coffer vault serve', 'coffer relay serve' and 'coffer
// relay token' run as child processes, and devices are 'coffer' runs with
// their own state directories.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for a child's output and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a long-running coffer child process.
type proc struct {
	t              testing.TB
	name           string
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{}
	err            error
}

// startProc starts coffer with args in e's environment; t.Cleanup kills
// it if it still runs.
func startProc(t testing.TB, e *env, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, done: make(chan struct{})}
	p.cmd = exec.Command(cofferBin, args...)
	p.cmd.Env = e.environ()
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not die after SIGKILL", name, p.cmd.Process.Pid)
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) output() string {
	return fmt.Sprintf("%s stdout:\n%s\n%s stderr:\n%s", p.name, p.stdout.String(), p.name, p.stderr.String())
}

// stop sends sig and waits (bounded) for the process to exit; it returns
// the exit code.
func (p *proc) stop(sig os.Signal, within time.Duration) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !p.exited() {
		p.t.Fatalf("signalling %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(within):
		p.t.Fatalf("%s did not stop within %v of %v\n%s", p.name, within, sig, p.output())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		p.t.Fatalf("%s: %v", p.name, p.err)
	}
	return 0
}

// waitHTTP waits (at most within) until GET url answers 200, failing early
// if the process exits.
func waitHTTP(t testing.TB, p *proc, url string, within time.Duration) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(within)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if p.exited() {
			t.Fatalf("%s exited while waiting for %s\n%s", p.name, url, p.output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %v (last: %v)\n%s", url, within, err, p.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// procFleet is a vault replica and a relay running as child processes.
type procFleet struct {
	t                  *testing.T
	ops                *env // where the operator's commands run
	dir                string
	bundle, root       string
	tokenKey           string
	issuer, audience   string
	vaultAudience      string
	vaultURL, relayURL string
	metricsURL         string // the replica's /metrics (metrics_listen)
	vault, relay       *proc
}

func startProcFleet(t *testing.T) *procFleet {
	t.Helper()
	f := &procFleet{t: t, ops: newEnv(t), dir: filepath.Join(t.TempDir(), "fleet"), issuer: "e2e-app", audience: "e2e-relay", vaultAudience: "e2e-vault"}

	// The key ceremony.
	var ini struct {
		Secrets    string `json:"secrets"`
		RootKey    string `json:"root_key"`
		RootPublic string `json:"root_public"`
		Bundle     string `json:"bundle"`
	}
	f.ops.okJSON(&ini, "vault", "init", "--dir", f.dir)
	if !strings.HasPrefix(ini.RootPublic, "coffer-fleet-root:") || ini.Bundle == "" || ini.Secrets == "" {
		t.Fatalf("vault init: %+v", ini)
	}
	for _, p := range []string{ini.Secrets, ini.RootKey, ini.Bundle} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("vault init did not write %s: %v", p, err)
		}
	}
	if r := f.ops.want(1, "vault", "init", "--dir", f.dir); !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("a second key ceremony in the same directory: %s", r)
	}
	f.bundle, f.root = ini.Bundle, ini.RootPublic

	// The app backend's token key.
	f.tokenKey = filepath.Join(f.dir, "app-token.key")
	pub := filepath.Join(f.dir, "app-token.pub")
	f.ops.ok("relay", "keygen", "--private", f.tokenKey, "--public", pub)

	vaultPort, raftPort, relayPort, metricsPort := closedPort(t), closedPort(t), closedPort(t), closedPort(t)
	f.vaultURL = fmt.Sprintf("http://127.0.0.1:%d", vaultPort)
	f.metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	// Metrics are served apart from the VaultService (metrics_listen).
	cfgPath := filepath.Join(f.dir, "replica.json")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`{"metrics_listen": "127.0.0.1:%d", "pacing": {"free": 0}}`, metricsPort)), 0o600); err != nil {
		t.Fatal(err)
	}
	f.relayURL = fmt.Sprintf("http://127.0.0.1:%d", relayPort)
	f.vault = startProc(t, f.ops, "vault serve", "vault", "serve", "--config", cfgPath, "--dir", f.dir, "--id", "r1",
		"--listen", fmt.Sprintf("127.0.0.1:%d", vaultPort), "--raft", fmt.Sprintf("127.0.0.1:%d", raftPort),
		"--bootstrap", "--insecure-dev-ksf", "--token-key", pub, "--issuer", f.issuer, "--vault-audience", f.vaultAudience)
	f.relay = startProc(t, f.ops, "relay serve", "relay", "serve", "--listen", fmt.Sprintf("127.0.0.1:%d", relayPort),
		"--vault", f.vaultURL, "--token-key", pub, "--issuer", f.issuer, "--audience", f.audience, "--no-rate-limits")
	waitHTTP(t, f.vault, f.vaultURL+"/readyz", 30*time.Second)
	waitHTTP(t, f.relay, f.relayURL+"/healthz", 30*time.Second)
	return f
}

// token mints a relay token for account with 'coffer relay token'.
func (f *procFleet) token(t testing.TB, account string) string {
	return f.mint(t, account, f.audience)
}

// vaultToken mints a vault token for account: the same command, for the
// vault's audience.
func (f *procFleet) vaultToken(t testing.TB, account string) string {
	return f.mint(t, account, f.vaultAudience)
}

func (f *procFleet) mint(t testing.TB, account, audience string) string {
	t.Helper()
	ops := *f.ops
	ops.t = t
	r := ops.ok("relay", "token", "--key", f.tokenKey, "--account", account, "--issuer", f.issuer, "--audience", audience, "--ttl", "15m")
	tok := strings.TrimSpace(r.stdout)
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("relay token printed %q", tok)
	}
	return tok
}

// device is a new device (its own state directory) set up to reach the
// fleet as account, through relayURL (the fleet's relay if empty), with
// password in COFFER_PASSWORD.
func (f *procFleet) device(t testing.TB, account, token, password string) *env {
	e := newEnv(t)
	e.vars = []string{
		"COFFER_RELAY=" + f.relayURL, "COFFER_ACCOUNT=" + account, "COFFER_TOKEN=" + token,
		"COFFER_VAULT_TOKEN=" + f.vaultToken(t, account),
		"COFFER_FLEET=" + f.bundle, "COFFER_FLEET_ROOT=" + f.root, "COFFER_DEV_KSF=1",
		"COFFER_PASSWORD=" + password,
	}
	return e
}

// setVar replaces (or adds) one variable of e.
func (e *env) setVar(name, value string) {
	out := e.vars[:0:0]
	for _, kv := range e.vars {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	e.vars = append(out, name+"="+value)
}

type vaultStatusJSON struct {
	Vault struct {
		Registered  bool     `json:"registered"`
		Disabled    bool     `json:"disabled"`
		Destroyed   bool     `json:"destroyed"`
		GuessesUsed int      `json:"guesses_used"`
		GuessLimit  int      `json:"guess_limit"`
		GuessesLeft int      `json:"guesses_left"`
		FailedTimes []string `json:"failed_guess_times"`
	} `json:"vault"`
}

func vaultStatus(e *env) vaultStatusJSON {
	e.t.Helper()
	var s vaultStatusJSON
	e.okJSON(&s, "status")
	return s
}

func TestVaultProcesses(t *testing.T) {
	f := startProcFleet(t)
	dir := t.TempDir()
	data := smallTree(t, dir, 300<<10)
	want := snap(t, data)
	const good = "correct horse battery"
	const bad = "wrong horse battery"

	t.Run("RestoreAndNineWrong", func(t *testing.T) {
		tok := f.token(t, "alice")
		phone := f.device(t, "alice", tok, good)
		repo := filepath.Join(dir, "repo-alice")
		r := phone.ok("init", "--password", "--repo", repo)
		if !strings.Contains(r.stdout, "Password recovery is on") || !strings.Contains(r.stderr, "insecure-dev-ksf") {
			t.Fatalf("init --password:\n%s", r)
		}
		phone.ok("backup", data)

		// A new device restores with the password alone.
		laptop := f.device(t, "alice", tok, good)
		out := filepath.Join(dir, "alice-1")
		r = laptop.ok("restore", "--password", "--repo", repo, "--to", out)
		if !strings.Contains(r.stdout, "No wrong guesses") {
			t.Fatalf("restore --password:\n%s", r)
		}
		sameTree(t, want, filepath.Join(out, "data"))
		if _, err := os.Stat(laptop.state); err == nil {
			t.Fatal("restore --password on a device that is not set up created its state directory")
		}

		// Nine wrong passwords, each exit 3 with the guesses left.
		thief := f.device(t, "alice", tok, bad)
		for i := 1; i <= 9; i++ {
			target := filepath.Join(dir, fmt.Sprintf("alice-wrong-%d", i))
			r := thief.want(3, "restore", "--password", "--repo", repo, "--to", target)
			if w := fmt.Sprintf("wrong password: %d guesses left of 10", 10-i); i < 9 && !strings.Contains(r.stderr, w) {
				t.Fatalf("wrong guess %d: want %q in\n%s", i, w, r)
			}
			if i == 9 && !strings.Contains(r.stderr, "1 guess left of 10") {
				t.Fatalf("wrong guess 9:\n%s", r)
			}
			nothingAt(t, target)
		}
		// The JSON error carries the same.
		if s := vaultStatus(laptop); s.Vault.GuessesUsed != 9 || s.Vault.GuessesLeft != 1 || len(s.Vault.FailedTimes) != 9 {
			t.Fatalf("status after 9 wrong: %+v", s.Vault)
		}
		// The right password still works, and says what happened.
		out = filepath.Join(dir, "alice-2")
		var rs struct {
			Recovery struct {
				FailedGuesses int      `json:"failed_guesses"`
				FailedTimes   []string `json:"failed_guess_times"`
			} `json:"recovery"`
		}
		laptop.okJSON(&rs, "restore", "--password", "--repo", repo, "--to", out)
		if rs.Recovery.FailedGuesses != 9 || len(rs.Recovery.FailedTimes) != 9 {
			t.Fatalf("restore after 9 wrong: %+v", rs)
		}
		sameTree(t, want, filepath.Join(out, "data"))
		r = laptop.ok("restore", "--password", "--repo", repo, "--to", filepath.Join(dir, "alice-3"))
		if !strings.Contains(r.stdout, "No wrong guesses") || !strings.Contains(r.stdout, "previous successful recovery") {
			t.Fatalf("restore after a success:\n%s", r)
		}
		if s := vaultStatus(laptop); s.Vault.GuessesUsed != 0 {
			t.Fatalf("status after the right password: %+v", s.Vault)
		}
	})

	t.Run("TenWrongDestroy", func(t *testing.T) {
		tok := f.token(t, "bob")
		phone := f.device(t, "bob", tok, good)
		repo := filepath.Join(dir, "repo-bob")
		phone.ok("init", "--password", "--repo", repo)
		phone.ok("backup", data)
		thief := f.device(t, "bob", tok, bad)
		for i := 1; i <= 10; i++ {
			code := 3
			if i == 10 {
				code = 4
			}
			r := thief.want(code, "restore", "--password", "--repo", repo, "--to", filepath.Join(dir, "bob-x"))
			if i == 10 && (!strings.Contains(r.stderr, "erased the key after too many wrong passwords") || !strings.Contains(r.stderr, "64-digit key")) {
				t.Fatalf("the 10th wrong guess:\n%s", r)
			}
		}
		owner := f.device(t, "bob", tok, good)
		msg := owner.wantJSONError(4, "restore", "--password", "--repo", repo, "--to", filepath.Join(dir, "bob-y"))
		if !strings.Contains(msg, "destroyed") {
			t.Fatalf("the right password after destruction: %s", msg)
		}
		nothingAt(t, filepath.Join(dir, "bob-y"))
		if s := vaultStatus(owner); !s.Vault.Destroyed || s.Vault.Registered {
			t.Fatalf("status after destruction: %+v", s.Vault)
		}
		if r := phone.ok("status"); !strings.Contains(r.stdout, "DESTROYED") {
			t.Fatalf("status for people after destruction:\n%s", r)
		}
		// The phone still holds the key: the 64-digit key restores, and
		// 'enable' stores it in the vault again under a new password.
		var ks struct {
			Key string `json:"key"`
		}
		phone.okJSON(&ks, "key", "show")
		byKey := newEnv(t)
		byKey.vars = []string{"COFFER_KEY=" + ks.Key}
		byKey.ok("restore", "--repo", repo, "--to", filepath.Join(dir, "bob-key"))
		sameTree(t, want, filepath.Join(dir, "bob-key", "data"))
		phone.setVar("COFFER_PASSWORD", "a fresh password")
		phone.ok("enable")
		owner.setVar("COFFER_PASSWORD", "a fresh password")
		owner.ok("restore", "--password", "--repo", repo, "--to", filepath.Join(dir, "bob-z"))
	})

	t.Run("ChangeDisableEnable", func(t *testing.T) {
		tok := f.token(t, "carol")
		phone := f.device(t, "carol", tok, good)
		repo := filepath.Join(dir, "repo-carol")
		phone.ok("init", "--password", "--repo", repo)
		phone.ok("backup", data)
		const newPW = "a brand new password"
		phone.setVar("COFFER_PASSWORD", newPW)
		r := phone.ok("password", "change")
		if !strings.Contains(r.stdout, "Changed the password") {
			t.Fatalf("password change:\n%s", r)
		}
		old := f.device(t, "carol", tok, good)
		if r := old.want(3, "restore", "--password", "--repo", repo, "--to", filepath.Join(dir, "carol-x")); !strings.Contains(r.stderr, "9 guesses left") {
			t.Fatalf("old password after change:\n%s", r)
		}
		fresh := f.device(t, "carol", tok, newPW)
		fresh.ok("restore", "--password", "--repo", repo, "--to", filepath.Join(dir, "carol-1"))
		sameTree(t, want, filepath.Join(dir, "carol-1", "data"))
		// The local check follows the change.
		phone.ok("password", "check")
		phone.setVar("COFFER_PASSWORD", good)
		phone.want(3, "password", "check")

		// Turn off: the vault erases the record; the device forgets its verifier.
		phone.ok("disable")
		s := vaultStatus(phone)
		if s.Vault.Registered || !s.Vault.Disabled {
			t.Fatalf("status after disable: %+v", s.Vault)
		}
		if r := phone.ok("status"); !strings.Contains(r.stdout, "turned off") {
			t.Fatalf("status for people after disable:\n%s", r)
		}
		phone.want(1, "password", "check")
		// A disabled account has no record: the vault says so, counting
		// nothing (there are no fake logins), exit 1.
		if r := fresh.want(1, "restore", "--password", "--repo", repo, "--to", filepath.Join(dir, "carol-y")); !strings.Contains(r.stderr, "no backup key is stored") {
			t.Fatalf("restore --password after disable:\n%s", r)
		}
		phone.want(1, "password", "change") // recovery is off: enable, not change

		// Turn on again.
		phone.setVar("COFFER_PASSWORD", newPW)
		phone.ok("enable")
		if s := vaultStatus(phone); !s.Vault.Registered || s.Vault.GuessesUsed != 0 {
			t.Fatalf("status after enable: %+v", s.Vault)
		}
		fresh.ok("restore", "--password", "--repo", repo, "--to", filepath.Join(dir, "carol-2"))
		sameTree(t, want, filepath.Join(dir, "carol-2", "data"))
		phone.ok("password", "check")
	})

	t.Run("NoKeyNoReset", func(t *testing.T) {
		tok := f.token(t, "dave")
		phone := f.device(t, "dave", tok, good)
		repo := filepath.Join(dir, "repo-dave")
		phone.ok("init", "--password", "--repo", repo)
		thief := f.device(t, "dave", tok, bad)
		for range 3 {
			thief.want(3, "restore", "--password", "--repo", repo, "--to", filepath.Join(dir, "dave-x"))
		}
		// With only the token: no key on the device.
		thief.setVar("COFFER_PASSWORD", "attacker's new password")
		thief.want(2, "password", "change")
		thief.want(2, "disable")
		thief.want(2, "enable")
		// With a key that is not the account's: the vault refuses.
		thief.setVar("COFFER_KEY", strings.Repeat("0123", 16))
		for _, cmd := range [][]string{{"password", "change"}, {"disable"}, {"enable"}} {
			msg := thief.wantJSONError(1, cmd...)
			if !strings.Contains(msg, "refused") {
				t.Fatalf("%v with another key: %s", cmd, msg)
			}
		}
		// A new device cannot set up a second key for the account.
		thief.vars = thief.vars[:len(thief.vars)-1]
		msg := thief.wantJSONError(1, "init", "--password", "--repo", filepath.Join(dir, "repo-dave-2"))
		if !strings.Contains(msg, "already holds a backup key") {
			t.Fatalf("init --password on a registered account: %s", msg)
		}
		if _, err := os.Stat(filepath.Join(dir, "repo-dave-2")); err == nil {
			t.Fatal("a refused init --password created a repository")
		}
		if s := vaultStatus(phone); s.Vault.GuessesUsed != 3 || !s.Vault.Registered {
			t.Fatalf("the budget changed: %+v", s.Vault)
		}
		// The owner, with the key, can.
		phone.setVar("COFFER_PASSWORD", "owner's new password")
		phone.ok("password", "change")
		if s := vaultStatus(phone); s.Vault.GuessesUsed != 0 {
			t.Fatalf("after the owner's change: %+v", s.Vault)
		}
	})

	t.Run("CheckSpendsNoGuess", func(t *testing.T) {
		tok := f.token(t, "erin")
		phone := f.device(t, "erin", tok, good)
		phone.ok("init", "--password", "--repo", filepath.Join(dir, "repo-erin"))
		thief := f.device(t, "erin", tok, bad)
		thief.want(3, "restore", "--password", "--repo", filepath.Join(dir, "repo-erin"), "--to", filepath.Join(dir, "erin-x"))
		before := vaultStatus(phone)
		for range 3 {
			phone.ok("password", "check")
		}
		phone.setVar("COFFER_PASSWORD", bad)
		for range 3 {
			if msg := phone.wantJSONError(3, "password", "check"); !strings.Contains(msg, "no guess") && !strings.Contains(msg, "Nothing was counted") {
				t.Fatalf("password check of a wrong password: %s", msg)
			}
		}
		// --password-stdin.
		phone.setVar("COFFER_PASSWORD", "")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := phone.command(ctx, "password", "check", "--password-stdin")
		cmd.Stdin = strings.NewReader(good + "\nignored\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("password check --password-stdin: %v\n%s", err, out)
		}
		after := vaultStatus(phone)
		if after.Vault.GuessesUsed != before.Vault.GuessesUsed || after.Vault.GuessesUsed != 1 {
			t.Fatalf("password check spent guesses: before %+v, after %+v", before.Vault, after.Vault)
		}
		// Too short a password is refused before anything is made.
		short := f.device(t, "erin2", f.token(t, "erin2"), "short")
		if msg := short.wantJSONError(2, "init", "--password", "--repo", filepath.Join(dir, "repo-erin2")); !strings.Contains(msg, "at least 8") {
			t.Fatalf("short password: %s", msg)
		}
	})

	t.Run("Errors", func(t *testing.T) {
		tok := f.token(t, "frank")
		phone := f.device(t, "frank", tok, good)
		repo := filepath.Join(dir, "repo-frank")
		phone.ok("init", "--password", "--repo", repo)
		laptop := f.device(t, "frank", tok, good)
		target := filepath.Join(dir, "frank-x")

		// A token the relay refuses: exit 1, get a fresh one.
		laptop.setVar("COFFER_TOKEN", "not.a.token")
		if msg := laptop.wantJSONError(1, "restore", "--password", "--repo", repo, "--to", target); !strings.Contains(msg, "fresh account token") {
			t.Fatalf("refused token: %s", msg)
		}
		// A token for another account than COFFER_ACCOUNT: refused before
		// anything is sent, as a settings (usage) error.
		laptop.setVar("COFFER_TOKEN", f.token(t, "someone-else"))
		if msg := laptop.wantJSONError(2, "restore", "--password", "--repo", repo, "--to", target); !strings.Contains(msg, "someone-else") {
			t.Fatalf("another account's token: %s", msg)
		}
		// Another account's token and account reach another record (here
		// none): no key stored, nothing counted.
		laptop.setVar("COFFER_ACCOUNT", "someone-else")
		laptop.setVar("COFFER_VAULT_TOKEN", f.vaultToken(t, "someone-else"))
		if r := laptop.want(1, "restore", "--password", "--repo", repo, "--to", target); !strings.Contains(r.stderr, "no backup key is stored") {
			t.Fatalf("restore --password for an account without a record:\n%s", r)
		}
		laptop.setVar("COFFER_ACCOUNT", "frank")
		laptop.setVar("COFFER_VAULT_TOKEN", f.vaultToken(t, "frank"))
		laptop.setVar("COFFER_TOKEN", tok)
		// The relay token where the vault token belongs: the vault refuses
		// it (wrong audience) and counts nothing.
		laptop.setVar("COFFER_VAULT_TOKEN", tok)
		if msg := laptop.wantJSONError(1, "restore", "--password", "--repo", repo, "--to", target); !strings.Contains(msg, "vault token") {
			t.Fatalf("the relay token as vault token: %s", msg)
		}
		laptop.setVar("COFFER_VAULT_TOKEN", f.vaultToken(t, "frank"))
		// An unreachable relay: exit 6.
		laptop.setVar("COFFER_RELAY", fmt.Sprintf("http://127.0.0.1:%d", closedPort(t)))
		laptop.want(6, "restore", "--password", "--repo", repo, "--to", target)
		laptop.setVar("COFFER_RELAY", f.relayURL)
		// A bundle that does not verify under the pinned root: exit 5.
		other := make([]byte, 32)
		rand.Read(other)
		laptop.setVar("COFFER_FLEET_ROOT", "coffer-fleet-root:"+base64.RawURLEncoding.EncodeToString(other))
		if msg := laptop.wantJSONError(5, "restore", "--password", "--repo", repo, "--to", target); !strings.Contains(msg, "bundle") {
			t.Fatalf("bundle under another root: %s", msg)
		}
		laptop.setVar("COFFER_FLEET_ROOT", f.root)
		// No password at all (not a terminal, nothing given): usage.
		laptop.setVar("COFFER_PASSWORD", "")
		laptop.want(2, "restore", "--password", "--repo", repo, "--to", target)
		nothingAt(t, target)
		if s := vaultStatus(phone); s.Vault.GuessesUsed != 0 {
			t.Fatalf("failed attempts were counted: %+v", s.Vault)
		}
	})

	t.Run("TamperingRelay", func(t *testing.T) {
		tok := f.token(t, "grace")
		phone := f.device(t, "grace", tok, good)
		repo := filepath.Join(dir, "repo-grace")
		phone.ok("init", "--password", "--repo", repo)
		phone.ok("backup", data)
		target := filepath.Join(dir, "grace-x")

		// A relay that flips a byte of every request: the vault cannot
		// open the sealed request and refuses it (InvalidArgument), which
		// the client reports as an integrity failure: exit 5, nothing
		// counted.
		flipReq := newTamperProxy(t, f.relayURL, flipRequest)
		viaFlip := f.device(t, "grace", tok, bad)
		viaFlip.setVar("COFFER_RELAY", flipReq.URL())
		if msg := viaFlip.wantJSONError(5, "restore", "--password", "--repo", repo, "--to", target); !strings.Contains(msg, "does not open") {
			t.Fatalf("tampered request: %s", msg)
		}
		viaFlip.want(5, "status")
		if flipReq.count() == 0 {
			t.Fatal("the tampering proxy saw no request")
		}

		// A relay that flips a byte of every answer: the client cannot
		// open it: exit 5. (The LoginStart was counted: the vault released
		// its answer.)
		flipResp := newTamperProxy(t, f.relayURL, flipResponse)
		viaFlipResp := f.device(t, "grace", tok, good)
		viaFlipResp.setVar("COFFER_RELAY", flipResp.URL())
		if msg := viaFlipResp.wantJSONError(5, "restore", "--password", "--repo", repo, "--to", target); !strings.Contains(msg, "integrity") {
			t.Fatalf("tampered answer: %s", msg)
		}
		viaFlipResp.want(5, "status")
		nothingAt(t, target)
		s := vaultStatus(phone)
		if s.Vault.GuessesUsed != 1 {
			t.Fatalf("after a tampered request and a tampered answer: %+v", s.Vault)
		}

		// A relay that replays every request once more and hands back the
		// replay's answer: the vault answers a replayed LoginStart again
		// (as it does a relay's retry, PROTOCOL.md §5) without counting,
		// and refuses the replayed LoginFinish, so a wrong password is
		// counted once, not twice, and reported as one.
		replay := newTamperProxy(t, f.relayURL, replayRequest)
		viaReplay := f.device(t, "grace", tok, bad)
		viaReplay.setVar("COFFER_RELAY", replay.URL())
		if msg := viaReplay.wantJSONError(3, "restore", "--password", "--repo", repo, "--to", target); !strings.Contains(msg, "wrong password") {
			t.Fatalf("replayed request: %s", msg)
		}
		if s := vaultStatus(phone); s.Vault.GuessesUsed != 2 {
			t.Fatalf("a replayed wrong guess was counted twice (or not at all): %+v", s.Vault)
		}
		if replay.count() != 4 { // LoginStart and LoginFinish, each sent twice
			t.Fatalf("the replaying proxy sent %d requests, want 4", replay.count())
		}
		// Straight to the relay, the right password works and reports the
		// two counted guesses.
		honest := f.device(t, "grace", tok, good)
		var rs struct {
			Recovery struct {
				FailedGuesses int `json:"failed_guesses"`
			} `json:"recovery"`
		}
		honest.okJSON(&rs, "restore", "--password", "--repo", repo, "--to", filepath.Join(dir, "grace-ok"))
		if rs.Recovery.FailedGuesses != 2 {
			t.Fatalf("after the tampering: %+v", rs)
		}
		sameTree(t, want, filepath.Join(dir, "grace-ok", "data"))
	})

	// Clean shutdown: SIGTERM stops the relay and the replica, exit 0.
	if code := f.relay.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Errorf("relay serve exited %d after SIGTERM\n%s", code, f.relay.output())
	}
	if code := f.vault.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Errorf("vault serve exited %d after SIGTERM\n%s", code, f.vault.output())
	}
	if !strings.Contains(f.vault.stderr.String(), "vault replica stopped") {
		t.Errorf("vault serve did not log its clean stop:\n%s", f.vault.output())
	}
	// Its log is JSON lines.
	sc := bufio.NewScanner(strings.NewReader(f.vault.stderr.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Errorf("vault serve logged a line that is not JSON: %q", sc.Text())
			break
		}
	}
}

type tamperMode int

const (
	flipRequest tamperMode = iota
	flipResponse
	replayRequest
)

// tamperProxy stands between the client and the relay and misbehaves.
type tamperProxy struct {
	srv    *httptest.Server
	target string
	mode   tamperMode
	mu     sync.Mutex
	sent   int
}

func newTamperProxy(t testing.TB, target string, mode tamperMode) *tamperProxy {
	p := &tamperProxy{target: target, mode: mode}
	p.srv = httptest.NewServer(p)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *tamperProxy) URL() string { return p.srv.URL }

func (p *tamperProxy) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent
}

func (p *tamperProxy) forward(r *http.Request, body []byte) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header = r.Header.Clone()
	p.mu.Lock()
	p.sent++
	p.mu.Unlock()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func (p *tamperProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	var resp *http.Response
	var out []byte
	switch p.mode {
	case flipRequest:
		if len(body) > 0 {
			body[len(body)-1] ^= 0x01 // the last byte of the sealed request
		}
		resp, out, err = p.forward(r, body)
	case flipResponse:
		resp, out, err = p.forward(r, body)
		if err == nil && resp.StatusCode == http.StatusOK && len(out) > 0 {
			out[len(out)-1] ^= 0x01 // the last byte of the sealed answer
		}
	case replayRequest:
		if _, _, err = p.forward(r, body); err == nil {
			resp, out, err = p.forward(r, body)
		}
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for k, vs := range resp.Header {
		if k == "Content-Length" {
			continue
		}
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(out)
}

// TestDevCommand: 'coffer dev' starts, writes its env file, a device using
// it works, and SIGINT stops it cleanly.
func TestDevCommand(t *testing.T) {
	ops := newEnv(t)
	dir := filepath.Join(t.TempDir(), "dev")
	ready := filepath.Join(t.TempDir(), "ready")
	p := startProc(t, ops, "coffer dev", "dev", "--dir", dir, "--account", "tester", "--ready-file", ready)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if p.exited() {
			t.Fatalf("coffer dev exited early\n%s", p.output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("coffer dev not ready after 30 s\n%s", p.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(p.stdout.String(), "coffer dev: ready") {
		t.Fatalf("no ready line:\n%s", p.output())
	}
	envFile := filepath.Join(dir, "env")
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	vars := parseEnvFile(t, string(b))
	for _, k := range []string{"COFFER_RELAY", "COFFER_ACCOUNT", "COFFER_TOKEN", "COFFER_VAULT_TOKEN", "COFFER_FLEET", "COFFER_FLEET_ROOT", "COFFER_DEV_KSF"} {
		if vars[k] == "" {
			t.Fatalf("env file lacks %s:\n%s", k, b)
		}
	}
	if vars["COFFER_ACCOUNT"] != "tester" {
		t.Fatalf("env file account %q", vars["COFFER_ACCOUNT"])
	}
	// A shell can source it.
	if sh, err := exec.LookPath("sh"); err == nil {
		out, err := exec.Command(sh, "-c", ". "+envFile+` && printf %s "$COFFER_ACCOUNT"`).CombinedOutput()
		if err != nil || string(out) != "tester" {
			t.Fatalf("sourcing the env file: %v %q", err, out)
		}
	}

	work := t.TempDir()
	data := smallTree(t, work, 0)
	repo := filepath.Join(work, "repo")
	withEnv := func() *env {
		e := newEnv(t)
		for k, v := range vars {
			e.vars = append(e.vars, k+"="+v)
		}
		e.vars = append(e.vars, "COFFER_PASSWORD=dev password 1")
		return e
	}
	phone := withEnv()
	phone.ok("init", "--password", "--repo", repo)
	phone.ok("backup", data)
	laptop := withEnv()
	laptop.ok("restore", "--password", "--repo", repo, "--to", filepath.Join(work, "out"))
	sameTree(t, snap(t, data), filepath.Join(work, "out", "data"))

	if code := p.stop(os.Interrupt, 20*time.Second); code != 0 {
		t.Fatalf("coffer dev exited %d after SIGINT\n%s", code, p.output())
	}
	if !strings.Contains(p.stdout.String(), "coffer dev: stopped") {
		t.Fatalf("coffer dev did not say it stopped:\n%s", p.output())
	}
}

// parseEnvFile reads the export lines 'coffer dev' writes.
func parseEnvFile(t testing.TB, s string) map[string]string {
	t.Helper()
	vars := map[string]string{}
	for line := range strings.SplitSeq(s, "\n") {
		rest, ok := strings.CutPrefix(line, "export ")
		if !ok {
			continue
		}
		k, v, ok := strings.Cut(rest, "=")
		if !ok || len(v) < 2 || v[0] != '\'' || v[len(v)-1] != '\'' {
			t.Fatalf("env file line %q", line)
		}
		vars[k] = strings.ReplaceAll(v[1:len(v)-1], `'\''`, `'`)
	}
	return vars
}
