//go:build unix

package faultharness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cofferhq/coffer/internal/server/fleetca"
	"github.com/cofferhq/coffer/internal/server/vault"
)

// Membership changes go through the operator's commands, as child
// processes: 'coffer vault remove', 'coffer vault join' and 'coffer vault
// status', with a certificate from the fleet CA (--tls-dir), against the
// replicas' admin endpoints.

// adminTimeout bounds one membership command (the replica bounds a change
// by 30 s; the command follows the leader and waits while none is known).
const adminTimeout = 60 * time.Second

// FleetStatus is what 'coffer vault status --json' prints (vault.Status).
type FleetStatus struct {
	ID           string   `json:"id"`
	State        string   `json:"state"`
	Term         uint64   `json:"term"`
	CommitIndex  uint64   `json:"commit_index"`
	AppliedIndex uint64   `json:"applied_index"`
	LeaderID     string   `json:"leader_id"`
	Healthy      bool     `json:"healthy"`
	Problems     []string `json:"problems"`
	Members      []struct {
		ID   string `json:"id"`
		Raft string `json:"raft"`
		URL  string `json:"url"`
	} `json:"members"`
}

// MemberIDs are the ids of the members, sorted.
func (s *FleetStatus) MemberIDs() []string {
	var ids []string
	for _, m := range s.Members {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	return ids
}

// vaultCmd runs 'coffer --json vault ARGS --tls-dir ADMIN' and returns its
// standard output.
func (c *Cluster) vaultCmd(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	full := append(append([]string{"--json", "vault"}, args...), "--tls-dir", c.adminDir)
	cmd := exec.CommandContext(ctx, c.cfg.Bin, full...)
	cmd.Env = childEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		// With --json the error is a JSON object on standard output.
		msg := strings.TrimSpace(strings.TrimSpace(string(out)) + " " + strings.TrimSpace(stderr.String()))
		return out, fmt.Errorf("coffer vault %s: %w: %s", strings.Join(args, " "), err, msg)
	}
	return out, nil
}

// Status is replica i's view of the fleet ('coffer vault status'; an
// unhealthy replica's status is returned with the error).
func (c *Cluster) Status(ctx context.Context, i int) (*FleetStatus, error) {
	out, err := c.vaultCmd(ctx, "status", "--url", c.Replicas[i].URL)
	var st FleetStatus
	// An unhealthy replica's status is followed by the error, both JSON.
	if jerr := json.NewDecoder(bytes.NewReader(out)).Decode(&st); jerr != nil || st.ID == "" {
		return nil, errors.Join(err, fmt.Errorf("status of %s: no status in %q (%v)", c.ID(i), out, jerr))
	}
	return &st, err
}

// adminTargets are the URLs a membership command may be sent to, in
// order: another running replica (a follower, usually: the command must
// follow the leader, as an operator's does), then the leader.
func (c *Cluster) adminTargets(except int) []string {
	l := c.Leader()
	var out []string
	for _, j := range c.Followers(l) {
		if j != except {
			out = append(out, c.Replicas[j].URL)
			break
		}
	}
	if l >= 0 {
		out = append(out, c.Replicas[l].URL)
	}
	return out
}

// admin runs a membership command against the targets in turn, up to three
// rounds (a leader change in between, or a follower that does not know the
// leader's URL, fails a try). Both commands are idempotent.
func (c *Cluster) admin(ctx context.Context, except int, args ...string) error {
	var errs []error
	for round := 0; round < 3 && ctx.Err() == nil; round++ {
		for _, url := range c.adminTargets(except) {
			_, err := c.vaultCmd(ctx, slices.Concat(args, []string{"--leader", url})...)
			if err == nil {
				if len(errs) > 0 {
					c.logf("  %s succeeded after: %v", args[0], errors.Join(errs...))
				}
				return nil
			}
			errs = append(errs, err)
		}
		sleep(ctx, time.Second)
	}
	return fmt.Errorf("%s failed: %w", args[0], errors.Join(errs...))
}

// RemoveMember takes replica i out of the fleet's configuration ('coffer
// vault remove'). Its process keeps running (a removed Raft node shuts its
// Raft down) until Replace stops it.
func (c *Cluster) RemoveMember(ctx context.Context, i int) error {
	return c.admin(ctx, i, "remove", "--id", c.ID(i))
}

// Replace puts a new replica in place i, whose replica RemoveMember took
// out of the fleet, the way OPERATIONS.md replaces one: stop the removed
// replica (SIGTERM), wipe its data directory, issue a certificate for a new
// id, start 'coffer vault serve' with an empty directory (no --bootstrap;
// the same addresses), add it with 'coffer vault join', and wait until it
// has applied everything the leader had committed when it joined. It
// returns the new id.
func (c *Cluster) Replace(ctx context.Context, i int, within time.Duration) (string, error) {
	r := c.Replicas[i]
	c.mu.Lock()
	p, old := r.proc, r.ID
	r.state = Removed
	c.mu.Unlock()
	start := time.Now()
	if err := terminate(p, 20*time.Second); err != nil {
		return "", fmt.Errorf("stopping the removed %s: %w", old, err)
	}
	stopped := time.Since(start)
	if err := os.RemoveAll(r.Data); err != nil {
		return "", err
	}
	c.mu.Lock()
	c.lastID++
	id := fmt.Sprintf("r%d", c.lastID)
	c.mu.Unlock()
	c.name(r, id)
	c.mu.Lock()
	r.bootstrap = false
	c.mu.Unlock()
	if err := c.issueCert(ctx, fleetca.RoleReplica, id, r.TLSDir); err != nil {
		return id, err
	}
	if err := c.start(r); err != nil {
		return id, err
	}
	if err := c.waitHTTP(ctx, r.proc, r.URL+"/healthz", 30*time.Second); err != nil {
		return id, err
	}
	started := time.Since(start)
	if err := c.admin(ctx, i, "join", "--id", id, "--raft", c.Net.Addr(i), "--url", r.URL); err != nil {
		return id, err
	}
	joined := time.Since(start)
	c.noteJoin(id)
	// Caught up: applied what the leader had committed after the join.
	deadline := time.Now().Add(within)
	var target float64 = -1
	var last string
	for {
		if target < 0 {
			if l := c.Leader(); l >= 0 {
				if m, err := c.Scrape(l); err == nil {
					target = m["coffer_vault_raft_commit_index"]
				}
			}
		}
		if m, err := c.Scrape(i); err == nil {
			a := m["coffer_vault_raft_applied_index"]
			last = fmt.Sprintf("applied %.0f of %.0f", a, target)
			if target >= 0 && a >= target {
				c.logf("  %s stopped (SIGTERM) after %v, %s serving after %v, joined after %v, caught up (%s) after %v",
					old, stopped.Round(time.Millisecond), id, started.Round(time.Millisecond), joined.Round(time.Millisecond), last, time.Since(start).Round(time.Millisecond))
				return id, nil
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return id, fmt.Errorf("the new replica %s did not catch up within %v: %s", id, within, last)
		}
		sleep(ctx, 200*time.Millisecond)
		if ctx.Err() != nil {
			return id, ctx.Err()
		}
	}
}

// CheckMembership waits until every replica reports, through 'coffer
// vault status', the same leader and exactly the replicas in place now as
// members, and is healthy.
func (c *Cluster) CheckMembership(ctx context.Context, within time.Duration) error {
	var want []string
	for i := range c.Replicas {
		want = append(want, c.ID(i))
	}
	slices.Sort(want)
	deadline := time.Now().Add(within)
	for {
		var problems []string
		leaders := map[string]bool{}
		for i := range c.Replicas {
			st, err := c.Status(ctx, i)
			if st == nil {
				problems = append(problems, fmt.Sprintf("%s: %v", c.ID(i), err))
				continue
			}
			leaders[st.LeaderID] = true
			if got := st.MemberIDs(); !slices.Equal(got, want) {
				problems = append(problems, fmt.Sprintf("%s sees members %v", st.ID, got))
			}
			if !st.Healthy {
				problems = append(problems, fmt.Sprintf("%s unhealthy: %v", st.ID, st.Problems))
			}
		}
		if len(leaders) > 1 {
			problems = append(problems, fmt.Sprintf("the replicas name different leaders: %v", leaders))
		}
		if len(problems) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("membership (want %v): %s", want, strings.Join(problems, "; "))
		}
		sleep(ctx, 500*time.Millisecond)
	}
}

// FleetDir is the key ceremony's directory (secrets, CA, OPRF shares).
func (c *Cluster) FleetDir() string { return c.fleetDir }

// SetShares gives place i the OPRF share files it starts with from its
// next start (Restart, or the replacement Replace starts).
func (c *Cluster) SetShares(i int, paths ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Replicas[i].shares = slices.Clone(paths)
}

// DealShares deals share generation gen for the members with these
// indices ('coffer vault deal-shares --members … --generation gen') into
// the fleet directory, and returns each index's file.
func (c *Cluster) DealShares(ctx context.Context, gen uint32, indices ...uint16) (map[uint16]string, error) {
	var list []string
	for _, i := range indices {
		list = append(list, strconv.Itoa(int(i)))
	}
	dir := filepath.Join(c.fleetDir, fmt.Sprintf("oprf-shares-gen%d", gen))
	cmd := exec.CommandContext(ctx, c.cfg.Bin, "--json", "vault", "deal-shares", "--out", dir, "--members", strings.Join(list, ","), "--generation", strconv.Itoa(int(gen)))
	cmd.Env = childEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("vault deal-shares: %w: %s", err, out)
	}
	paths := map[uint16]string{}
	for _, i := range indices {
		paths[i] = filepath.Join(dir, fmt.Sprintf("share-%d-gen%d.json", i, gen))
	}
	return paths, nil
}

// Reshare runs 'coffer vault reshare --generation gen' against the leader.
func (c *Cluster) Reshare(ctx context.Context, gen uint32) (*vault.ReshareReport, error) {
	l := c.Leader()
	if l < 0 {
		return nil, errors.New("reshare: no leader")
	}
	out, err := c.vaultCmd(ctx, "reshare", "--generation", strconv.Itoa(int(gen)), "--leader", c.Replicas[l].URL)
	var rep vault.ReshareReport
	if jerr := json.NewDecoder(bytes.NewReader(out)).Decode(&rep); jerr != nil {
		return nil, errors.Join(err, fmt.Errorf("reshare printed %q", out))
	}
	return &rep, err
}
