package e2e

// 'coffer dev --replicas 3': three vault replicas as child processes; the
// leader is killed and recovery goes on with two; the killed replica is
// restarted with the command replicas.json gives and catches up; SIGINT
// stops every child.

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/server/serve"
)

type devReplicaJSON struct {
	ID          string   `json:"id"`
	PID         int      `json:"pid"`
	URL         string   `json:"url"`
	Raft        string   `json:"raft"`
	DataDir     string   `json:"data_dir"`
	Config      string   `json:"config"`
	Log         string   `json:"log"`
	Restart     string   `json:"restart"`
	RestartArgv []string `json:"restart_argv"`
}

// raftMetrics reads coffer_vault_raft_leader and _applied_index from a
// replica's /metrics, on the metrics_listen address of its configuration
// file (the VaultService port does not serve them).
func raftMetrics(hc *http.Client, r devReplicaJSON) (leader bool, applied uint64, err error) {
	cfg, err := serve.LoadConfig(r.Config)
	if err != nil {
		return false, 0, err
	}
	if cfg.MetricsListen == "" {
		return false, 0, fmt.Errorf("%s: no metrics_listen: coffer dev must give each replica a metrics address", r.Config)
	}
	url := "http://" + serve.MetricsAddress(cfg.MetricsListen)
	resp, err := hc.Get(url + "/metrics")
	if err != nil {
		return false, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, 0, fmt.Errorf("%s/metrics: HTTP %d", url, resp.StatusCode)
	}
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		switch name {
		case "coffer_vault_raft_leader":
			leader, found = val == "1", found+1
		case "coffer_vault_raft_applied_index":
			f, perr := strconv.ParseFloat(val, 64)
			if perr != nil {
				return false, 0, perr
			}
			applied, found = uint64(f), found+1
		}
	}
	if found != 2 {
		return false, 0, fmt.Errorf("%s/metrics lacks the raft metrics", url)
	}
	return leader, applied, sc.Err()
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// pid (comm) STATE ...
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) {
			return b[i+2] != 'Z' && b[i+2] != 'X'
		}
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// startDevReplicas starts 'coffer dev --replicas 3' and waits until it is
// ready; it returns the process and replicas.json.
func startDevReplicas(t *testing.T, dir string) (*proc, []devReplicaJSON) {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	p := startProc(t, newEnv(t), "coffer dev", "dev", "--dir", dir, "--replicas", "3", "--account", "tester", "--ready-file", ready)
	deadline := time.Now().Add(40 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if p.exited() {
			t.Fatalf("coffer dev exited early\n%s", p.output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("coffer dev --replicas 3 not ready after 40 s\n%s", p.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	var reps []devReplicaJSON
	rb, err := os.ReadFile(filepath.Join(dir, "replicas.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(rb, &reps); err != nil || len(reps) != 3 {
		t.Fatalf("replicas.json: %v\n%s", err, rb)
	}
	return p, reps
}

func TestDevReplicas(t *testing.T) {
	ops := newEnv(t)
	dir := filepath.Join(t.TempDir(), "dev")
	p, reps := startDevReplicas(t, dir)
	b, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	vars := parseEnvFile(t, string(b))
	rb, _ := os.ReadFile(filepath.Join(dir, "replicas.json"))
	for i, r := range reps {
		pfx := fmt.Sprintf("COFFER_DEV_REPLICA_%d_", i+1)
		if vars[pfx+"PID"] != strconv.Itoa(r.PID) || vars[pfx+"URL"] != r.URL || vars[pfx+"RAFT"] != r.Raft || r.PID == 0 {
			t.Fatalf("env and replicas.json disagree on %s: %v\n%s", r.ID, vars, rb)
		}
		if !alive(r.PID) || len(r.RestartArgv) < 4 || !strings.Contains(r.Restart, "vault") || r.Config == "" || r.DataDir == "" {
			t.Fatalf("replica %+v", r)
		}
	}
	caPEM, err := os.ReadFile(vars["COFFER_DEV_FLEET_CA"])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()

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

	leader := func(skip int) (int, uint64) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			for i, r := range reps {
				if i == skip {
					continue
				}
				if l, applied, err := raftMetrics(hc, r); err == nil && l {
					return i, applied
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no leader among the replicas\n%s", p.output())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	li, _ := leader(-1)
	killed := reps[li]
	if err := syscall.Kill(killed.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	// Recovery with two of three, retried while they elect a new leader.
	deadline := time.Now().Add(20 * time.Second)
	for attempt := 0; ; attempt++ {
		laptop := withEnv()
		out := filepath.Join(work, fmt.Sprintf("out%d", attempt))
		r := laptop.run("restore", "--password", "--repo", repo, "--to", out)
		if r.code == 0 {
			sameTree(t, snap(t, data), filepath.Join(out, "data"))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("recovery with %s killed: %s\n%s", killed.ID, r, p.output())
		}
		time.Sleep(500 * time.Millisecond)
	}
	if p.exited() {
		t.Fatalf("coffer dev exited when a replica died\n%s", p.output())
	}

	// Restart it as replicas.json says; it catches up with the leader.
	logf, err := os.OpenFile(killed.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	re := exec.Command(killed.RestartArgv[0], killed.RestartArgv[1:]...)
	re.Env = ops.environ()
	re.Stdout, re.Stderr = logf, logf
	if err := re.Start(); err != nil {
		t.Fatal(err)
	}
	reDone := make(chan error, 1)
	go func() { reDone <- re.Wait() }()
	t.Cleanup(func() {
		re.Process.Kill()
		<-reDone
	})
	_, target := leader(li)
	deadline = time.Now().Add(20 * time.Second)
	for {
		_, applied, err := raftMetrics(hc, killed)
		if err == nil && applied >= target && target > 0 {
			break
		}
		if time.Now().After(deadline) {
			lb, _ := os.ReadFile(killed.Log)
			t.Fatalf("restarted %s did not catch up to index %d (applied %d, %v)\n%s", killed.ID, target, applied, err, lb)
		}
		time.Sleep(100 * time.Millisecond)
	}

	if code := p.stop(os.Interrupt, 30*time.Second); code != 0 {
		t.Fatalf("coffer dev exited %d after SIGINT\n%s", code, p.output())
	}
	if !strings.Contains(p.stdout.String(), "coffer dev: stopped") || !strings.Contains(p.stderr.String(), "replica "+killed.ID) {
		t.Fatalf("coffer dev output:\n%s", p.output())
	}
	for _, r := range reps {
		if alive(r.PID) {
			t.Errorf("replica %s (pid %d) still runs after coffer dev stopped", r.ID, r.PID)
		}
	}
	re.Process.Signal(syscall.SIGTERM)
	select {
	case <-reDone:
		reDone <- nil
	case <-time.After(20 * time.Second):
		t.Errorf("the restarted replica did not stop on SIGTERM")
	}
}

// TestDevReplicasParentKilled: the replicas die with a SIGKILLed 'coffer
// dev' (Linux's parent-death signal).
func TestDevReplicasParentKilled(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux only")
	}
	p, reps := startDevReplicas(t, filepath.Join(t.TempDir(), "dev"))
	p.stop(syscall.SIGKILL, 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for _, r := range reps {
		for alive(r.PID) {
			if time.Now().After(deadline) {
				t.Fatalf("replica %s (pid %d) outlived the SIGKILLed coffer dev", r.ID, r.PID)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
