package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cofferhq/coffer/internal/atomicfile"
	"github.com/cofferhq/coffer/internal/process"
	"github.com/cofferhq/coffer/internal/server/devfleet"
	"github.com/cofferhq/coffer/internal/server/fleetca"
	"github.com/cofferhq/coffer/internal/server/sealing/keyfile"
	"github.com/cofferhq/coffer/internal/server/serve"
)

// 'coffer dev --replicas N': a development fleet of N vault replicas, each
// a 'coffer vault serve --config FILE' child process (Raft over mutual TLS
// from the fleet CA, disks sealed with a key file per replica), and the
// relay in this process.

// Bounds of 'coffer dev --replicas N'.
const (
	devLeaderWait = 45 * time.Second // for every replica to know a leader
	devStopWait   = 15 * time.Second // after SIGTERM, before SIGKILL
)

// devReplica is one replica child, as DIR/replicas.json lists it.
type devReplica struct {
	ID          string   `json:"id"`
	PID         int      `json:"pid"`
	URL         string   `json:"url"`
	Raft        string   `json:"raft"`
	DataDir     string   `json:"data_dir"`
	Config      string   `json:"config"`
	Log         string   `json:"log"`
	Restart     string   `json:"restart"`
	RestartArgv []string `json:"restart_argv"`

	proc *process.Process
}

// devReplicaCount returns how many replicas DIR/replicas holds configs for.
func devReplicaCount(root string) int {
	n := 0
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(root, e.Name(), "replica.json")); err == nil {
			n++
		}
	}
	return n
}

// loopbackAddrs returns n distinct free 127.0.0.1 addresses.
func loopbackAddrs(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var out []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	return out, nil
}

// prepareDevReplicas makes (or reuses) the replicas' certificates, sealing
// key files and configuration files under DIR/replicas.
// devRelayTLSDir holds the development relay's certificate of the fleet CA.
func devRelayTLSDir(abs string) string { return filepath.Join(abs, "relay-tls") }

func prepareDevReplicas(abs string, keys *devfleet.Keys, n int, guessLimit uint32) ([]*devReplica, string, error) {
	root := filepath.Join(abs, "replicas")
	if have := devReplicaCount(root); have != 0 && have != n {
		return nil, "", usagef("dev: %s holds a %d-replica fleet; run it with --replicas %d, or use a new --dir", abs, have, have)
	}
	ca, err := fleetca.Load(keys.FleetDir)
	if errors.Is(err, os.ErrNotExist) {
		ca, err = fleetca.Create(keys.FleetDir, "coffer-dev")
	}
	if err != nil {
		return nil, "", err
	}
	caPath := filepath.Join(keys.FleetDir, fleetca.CACertFile)
	// The relay's certificate: replicas serve the VaultService over TLS to
	// relays and replicas only.
	if _, err := os.Stat(filepath.Join(devRelayTLSDir(abs), fleetca.CertFile)); errors.Is(err, os.ErrNotExist) {
		if err := ca.IssueRoleFiles(fleetca.RoleRelay, devRelayTLSDir(abs), "dev-relay", nil, 0); err != nil {
			return nil, "", err
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	fresh, err := loopbackAddrs(3 * n)
	if err != nil {
		return nil, "", err
	}
	reps := make([]*devReplica, n)
	cfgs := make([]*serve.Config, n)
	var peers []serve.Peer
	for i := range n {
		id := "r" + strconv.Itoa(i+1)
		dir := filepath.Join(root, id)
		cfgPath := filepath.Join(dir, "replica.json")
		listen, raft, metrics := fresh[3*i], fresh[3*i+1], fresh[3*i+2]
		if old, err := serve.LoadConfig(cfgPath); err == nil {
			// Raft remembers its peers' addresses: keep them.
			listen, raft = old.Listen, old.RaftBind
			if old.MetricsListen != "" {
				metrics = old.MetricsListen
			}
		}
		tlsDir := filepath.Join(dir, "tls")
		if _, err := os.Stat(filepath.Join(tlsDir, fleetca.CertFile)); errors.Is(err, os.ErrNotExist) {
			if err := ca.IssueFiles(tlsDir, id, []string{"127.0.0.1"}, 0); err != nil {
				return nil, "", err
			}
		}
		sealKey := filepath.Join(dir, "sealing.key")
		if _, err := os.Stat(sealKey); errors.Is(err, os.ErrNotExist) {
			if _, err := keyfile.Create(sealKey); err != nil {
				return nil, "", err
			}
		}
		// A sealed replica reads the fleet secrets sealed under its own key
		// (it refuses plaintext ones).
		sealedSecrets := filepath.Join(dir, "secrets.sealed")
		if _, err := os.Stat(sealedSecrets); errors.Is(err, os.ErrNotExist) {
			kek, err := keyfile.Load(sealKey)
			if err != nil {
				return nil, "", err
			}
			if err := keys.Secrets.SaveSealed(sealedSecrets, kek); err != nil {
				return nil, "", err
			}
		}
		url := "https://" + listen
		cfgs[i] = &serve.Config{
			ID: id, Secrets: sealedSecrets, DataDir: filepath.Join(dir, "data"),
			Listen: listen, URL: url, RaftBind: raft, MetricsListen: metrics,
			AppTokenKey: filepath.Join(keys.Dir, devfleet.TokenPubFile), AppTokenIssuer: devfleet.Issuer, VaultAudience: devfleet.VaultAudience,
			Pacing: &serve.Pacing{Free: devfleet.DevPacing.Free, Base: serve.Duration{Duration: time.Duration(devfleet.DevPacing.Base) * time.Second},
				Max: serve.Duration{Duration: time.Duration(devfleet.DevPacing.Max) * time.Second}},
			TLS:        &serve.TLS{Cert: filepath.Join(tlsDir, fleetca.CertFile), Key: filepath.Join(tlsDir, fleetca.KeyFile), CA: filepath.Join(tlsDir, fleetca.CACertFile)},
			Sealing:    &serve.Sealing{KeyFile: sealKey},
			GuessLimit: guessLimit, Bootstrap: true, InsecureDevKSF: true,
			RaftTiming: &serve.RaftTiming{
				Heartbeat: serve.Duration{Duration: 500 * time.Millisecond}, Election: serve.Duration{Duration: 500 * time.Millisecond},
				LeaderLease: serve.Duration{Duration: 250 * time.Millisecond}, Commit: serve.Duration{Duration: 50 * time.Millisecond},
			},
		}
		peers = append(peers, serve.Peer{ID: id, Raft: raft, URL: url})
		log := filepath.Join(abs, "replica-"+id+".log")
		argv := []string{exe, "vault", "serve", "--config", cfgPath}
		quoted := make([]string, len(argv))
		for j, s := range argv {
			quoted[j] = shellQuote(s)
		}
		reps[i] = &devReplica{
			ID: id, URL: url, Raft: raft, DataDir: cfgs[i].DataDir, Config: cfgPath, Log: log,
			Restart:     strings.Join(quoted, " ") + " >>" + shellQuote(log) + " 2>&1",
			RestartArgv: argv,
		}
	}
	for i, c := range cfgs {
		c.Peers = peers
		if err := os.MkdirAll(filepath.Dir(reps[i].Config), 0o700); err != nil {
			return nil, "", err
		}
		if err := serve.WriteConfig(reps[i].Config, c); err != nil {
			return nil, "", err
		}
	}
	return reps, caPath, nil
}

// devChildEnv is this process's environment without the COFFER_VAULT_*
// settings, which would override the children's config files.
func devChildEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "COFFER_VAULT_") {
			out = append(out, kv)
		}
	}
	return out
}

func (r *devReplica) start() error {
	logf, err := os.OpenFile(r.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(r.RestartArgv[0], r.RestartArgv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = devChildEnv()
	// Its own process group keeps it from the terminal's Ctrl-C (this
	// process stops it, relay first); on Linux it dies with this process.
	p, err := process.Start(cmd, func(error) { logf.Close() })
	if err != nil {
		logf.Close()
		return fmt.Errorf("starting replica %s: %w", r.ID, err)
	}
	r.proc, r.PID = p, p.Pid()
	return nil
}

// stopDevReplicas sends SIGTERM to every running child, and SIGKILL to
// those still running after devStopWait.
func stopDevReplicas(reps []*devReplica) {
	var wg sync.WaitGroup
	for _, r := range reps {
		if r.proc != nil {
			wg.Go(func() { r.proc.Stop(devStopWait, 0) })
		}
	}
	wg.Wait()
}

// waitDevLeader waits until every replica's /readyz answers (they know a
// leader), failing early if one exits.
func waitDevLeader(ctx context.Context, reps []*devReplica, caPath string) error {
	pool, err := fleetca.LoadCAPool(caPath)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: fleetca.AnonymousClientConfig(pool)}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(devLeaderWait)
	for {
		ready := 0
		var last error
		for _, r := range reps {
			if r.proc.Exited() {
				return fmt.Errorf("replica %s exited (%v) while starting: see %s", r.ID, r.proc.Err(), r.Log)
			}
			resp, err := hc.Get(r.URL + "/readyz")
			if err != nil {
				last = err
				continue
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ready++
			} else {
				last = fmt.Errorf("%s/readyz: HTTP %d", r.URL, resp.StatusCode)
			}
		}
		if ready == len(reps) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the replicas elected no leader within %v (last: %v); see the logs %s", devLeaderWait, last, filepath.Join(filepath.Dir(reps[0].Log), "replica-*.log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// runDevReplicas is 'coffer dev' with n > 1 replicas.
func (a *app) runDevReplicas(ctx context.Context, abs, account, readyFile string, n int, guessLimit uint32) error {
	keys, err := devfleet.LoadKeys(abs)
	if err != nil {
		return fail("dev", err)
	}
	reps, caPath, err := prepareDevReplicas(abs, keys, n, guessLimit)
	if err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			return err
		}
		return fail("dev", err)
	}
	var stopping atomic.Bool
	defer func() {
		stopping.Store(true)
		stopDevReplicas(reps)
	}()
	for _, r := range reps {
		if err := r.start(); err != nil {
			return fail("dev", err)
		}
	}
	if err := waitDevLeader(ctx, reps, caPath); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fail("dev", err)
	}
	// Log children's exits; scripts restart them (replicas.json).
	for _, r := range reps {
		go func() {
			<-r.proc.Done()
			if !stopping.Load() {
				fmt.Fprintf(a.Stderr, "coffer: dev: replica %s (pid %d) exited: %v; not restarting it (log %s; restart: %s)\n",
					r.ID, r.PID, exitDescription(r.proc.Err()), r.Log, r.Restart)
			}
		}()
	}

	urls := make([]string, n)
	for i, r := range reps {
		urls[i] = r.URL
	}
	f, err := devfleet.StartRelay(ctx, devfleet.RelayOptions{Keys: keys, Vaults: urls, VaultTLSDir: devRelayTLSDir(abs), Logger: a.newLogger(slog.LevelWarn)})
	if err != nil {
		return fail("dev", err)
	}
	relayClosed := false
	defer func() {
		if !relayClosed {
			f.Close()
		}
	}()

	extra := map[string]string{"COFFER_DEV_REPLICAS": strconv.Itoa(n), "COFFER_DEV_FLEET_CA": caPath}
	for i, r := range reps {
		p := fmt.Sprintf("COFFER_DEV_REPLICA_%d_", i+1)
		extra[p+"PID"], extra[p+"URL"], extra[p+"RAFT"] = strconv.Itoa(r.PID), r.URL, r.Raft
	}
	envFile := filepath.Join(abs, "env")
	exp, err := writeDevEnv(f, envFile, account, extra)
	if err != nil {
		return fail("dev", err)
	}
	repsFile := filepath.Join(abs, "replicas.json")
	b, err := json.MarshalIndent(reps, "", "  ")
	if err != nil {
		return fail("dev", err)
	}
	if err := atomicfile.Replace(repsFile, append(b, '\n'), 0o600); err != nil {
		return fail("dev", err)
	}
	if a.json {
		if err := a.printJSON(map[string]any{
			"ready": true, "dir": abs, "env": envFile, "relay": f.RelayURL, "vault": f.VaultURL, "vaults": urls,
			"replicas": reps, "replicas_file": repsFile, "fleet_ca": caPath,
			"account": account, "bundle": f.BundlePath, "root_public": f.RootPublic, "token_expires": exp,
		}); err != nil {
			return err
		}
	} else {
		w := a.Stdout
		fmt.Fprintf(w, "Development vault fleet of %d replicas in %s (cheap key stretching allowed: never for real accounts).\n", n, abs)
		for _, r := range reps {
			fmt.Fprintf(w, "  replica %-5s  %s  raft %s  pid %d  log %s\n", r.ID, r.URL, r.Raft, r.PID, r.Log)
		}
		fmt.Fprintf(w, "  relay          %s\n  fleet bundle   %s\n  fleet CA       %s\n  account        %s\n\n", f.RelayURL, f.BundlePath, caPath, account)
		fmt.Fprintf(w, "The settings for account %s are in %s; in another shell:\n\n", account, envFile)
		fmt.Fprintf(w, "    source %s\n    coffer init --password --repo /tmp/coffer-repo\n\n", envFile)
		fmt.Fprintf(w, "Kill a replica (kill $COFFER_DEV_REPLICA_1_PID) to try a failure; %s has the\n", repsFile)
		fmt.Fprintf(w, "command that restarts it. This process does not restart replicas, and stops only those it started.\n")
		fmt.Fprintf(w, "The token expires at %s; a fresh one is written every 30 minutes while this runs. Stop with Ctrl-C.\n", when(exp))
		fmt.Fprintln(w, "coffer dev: ready")
	}
	return a.devUntilDone(ctx, readyFile, envFile,
		func() error { _, err := writeDevEnv(f, envFile, account, extra); return err },
		func() error {
			relayClosed = true
			f.Close()
			stopping.Store(true)
			stopDevReplicas(reps)
			return nil
		})
}

func exitDescription(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
