package vault_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/protocol/wire"

	"connectrpc.com/connect"

	"github.com/cofferhq/coffer/internal/protocol/vaultv1"
	"github.com/cofferhq/coffer/internal/protocol/vaultv1/vaultv1connect"
	"github.com/cofferhq/coffer/internal/server/devfleet"
	"github.com/cofferhq/coffer/internal/server/replica"
	"github.com/cofferhq/coffer/internal/server/vault"
)

// memberWait bounds every wait of these tests.
const memberWait = 20 * time.Second

// node is one in-process replica with its VaultService, on 127.0.0.1.
type node struct {
	id, url string
	raftLn  net.Listener
	vaultLn net.Listener
	rep     *replica.Replica
	srv     *vault.Server
	hs      *http.Server
}

// syncLog collects logs and prints them only if the test fails.
type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func testLog(t *testing.T) *slog.Logger {
	l := &syncLog{}
	t.Cleanup(func() {
		if t.Failed() {
			l.mu.Lock()
			t.Logf("logs:\n%s", l.buf.String())
			l.mu.Unlock()
		}
	})
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// listenNode reserves a node's two ports.
func listenNode(t *testing.T, id string) *node {
	t.Helper()
	n := &node{id: id}
	var err error
	if n.raftLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if n.vaultLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	n.url = "http://" + n.vaultLn.Addr().String()
	return n
}

// start opens the node's replica and serves its VaultService with cfg
// (Secrets, Replica and Forward filled in).
func (n *node) start(t *testing.T, keys *devfleet.Keys, dir string, log *slog.Logger, bootstrap bool, peers []replica.Peer, cfg vault.Config) {
	t.Helper()
	rep, err := replica.Open(replica.Config{
		ID: n.id, Dir: filepath.Join(dir, n.id), Listener: n.raftLn, Bootstrap: bootstrap, Peers: peers,
		Logger:           log.With("replica", n.id),
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	n.rep = rep
	cfg.Secrets, cfg.Replica, cfg.Tokens = keys.Secrets, rep, keys.VaultTokenVerifier()
	cfg.Forward = &http.Client{Timeout: 10 * time.Second}
	cfg.AllowWeakKSF = true
	cfg.Logger = log.With("replica", n.id)
	if cfg.MemberSyncInterval == 0 {
		cfg.MemberSyncInterval = 100 * time.Millisecond
	}
	if n.srv, err = vault.New(cfg); err != nil {
		t.Fatal(err)
	}
	n.hs = &http.Server{Handler: n.srv.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go n.hs.Serve(n.vaultLn)
	t.Cleanup(n.stop)
}

func (n *node) stop() {
	if n.hs != nil {
		n.hs.Close()
	}
	if n.rep != nil {
		n.rep.Close()
	}
}

func (n *node) status(t *testing.T) vault.Status {
	t.Helper()
	var st vault.Status
	if code := adminCall(t, n.url, "/admin/status", nil, &st); code != http.StatusOK {
		t.Fatalf("status of %s: HTTP %d", n.id, code)
	}
	return st
}

// adminCall calls an admin endpoint (GET without a body) and decodes the
// answer into out (on 200) or an AdminError (else).
func adminCall(t *testing.T, base, path string, body, out any) int {
	t.Helper()
	method, rd := http.MethodGet, io.Reader(nil)
	if body != nil {
		b, _ := json.Marshal(body)
		method, rd = http.MethodPost, bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), memberWait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, base+path, rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, base+path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	} else if ae, ok := out.(*vault.AdminError); ok {
		json.Unmarshal(data, ae)
	} else {
		t.Logf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, data)
	}
	return resp.StatusCode
}

// leaderCall calls an admin endpoint that only the leader serves, following
// 421 answers to the leader (an election may move it), as 'coffer vault'
// does.
func leaderCall(t *testing.T, base, path string, body, out any) int {
	t.Helper()
	deadline := time.Now().Add(memberWait)
	for {
		var ae vault.AdminError
		code := adminCall(t, base, path, body, &ae)
		if code == http.StatusOK {
			return adminCall(t, base, "/admin/status", nil, out) // the answer is the status
		}
		if code != http.StatusMisdirectedRequest || time.Now().After(deadline) {
			t.Logf("%s %s: HTTP %d: %s", base, path, code, ae.Error)
			return code
		}
		if ae.LeaderURL != "" {
			base = ae.LeaderURL
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// eventually retries check until it returns nil, for at most memberWait.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(memberWait)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// agreedLeader waits until every node follows the same leader and returns it.
func agreedLeader(t *testing.T, nodes []*node) *node {
	t.Helper()
	var leader *node
	eventually(t, "a leader every replica follows", func() error {
		leader = nil
		lid, _ := nodes[0].rep.Leader()
		for _, n := range nodes {
			if id, _ := n.rep.Leader(); id == "" || id != lid {
				return fmt.Errorf("%s follows %q, %s follows %q", nodes[0].id, lid, n.id, id)
			}
			if n.id == lid {
				leader = n
			}
		}
		if leader == nil || !leader.rep.IsLeader() {
			return fmt.Errorf("leader %q not running or not leading", lid)
		}
		return nil
	})
	return leader
}

func memberOf(st vault.Status, id string) (vault.Member, bool) {
	for _, m := range st.Members {
		if m.ID == id {
			return m, true
		}
	}
	return vault.Member{}, false
}

// startThree bootstraps r1..r3; each one's configuration lists every peer
// with its URL, and data centres as dcs says (nil: none).
func startThree(t *testing.T, keys *devfleet.Keys, dir string, log *slog.Logger, cfgFor func(i int, nodes []*node) vault.Config) []*node {
	t.Helper()
	nodes := []*node{listenNode(t, "r1"), listenNode(t, "r2"), listenNode(t, "r3")}
	var peers []replica.Peer
	for _, n := range nodes {
		peers = append(peers, replica.Peer{ID: n.id, Addr: n.raftLn.Addr().String()})
	}
	for i, n := range nodes {
		n.start(t, keys, dir, log, true, peers, cfgFor(i, nodes))
	}
	return nodes
}

// TestJoinedMemberKnownAfterLeaderChange: a fourth replica joins through
// the leader's admin endpoint; no other replica's configuration knows it.
// After leadership moves to the joined replica, another replica's status
// shows its URL and data centre, names it as the leader, hints its URL to
// relays, and forwards requests to it.
func TestJoinedMemberKnownAfterLeaderChange(t *testing.T) {
	dir := t.TempDir()
	log := testLog(t)
	keys, err := devfleet.LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	dcs := []string{"dc-a", "dc-b", "dc-c"}
	nodes := startThree(t, keys, dir, log, func(i int, nodes []*node) vault.Config {
		urls, others := map[string]string{}, map[string]string{}
		for j, n := range nodes {
			urls[n.id] = n.url
			if j != i {
				others[n.id] = dcs[j]
			}
		}
		return vault.Config{URLs: urls, DataCentre: dcs[i], DataCentres: others}
	})
	agreedLeader(t, nodes)

	// r4 starts empty, without bootstrap. Its configuration has its URL but
	// no data centre: the data centre the others learn comes from the join.
	r4 := listenNode(t, "r4")
	r4.start(t, keys, dir, log, false, nil, vault.Config{URLs: map[string]string{"r4": r4.url}})
	join := vault.JoinRequest{ID: "r4", Raft: r4.raftLn.Addr().String(), URL: r4.url + "/", DataCentre: "dc-d"}
	var st vault.Status
	if code := leaderCall(t, nodes[0].url, "/admin/join", join, &st); code != http.StatusOK {
		t.Fatalf("join: HTTP %d", code)
	}
	if m, ok := memberOf(st, "r4"); !ok || m.URL != r4.url || m.DataCentre != "dc-d" {
		t.Fatalf("join answered members %+v", st.Members)
	}
	// first: the replica that handled the join.
	var first *node
	for _, n := range nodes {
		if n.id == st.ID {
			first = n
		}
	}
	// A bad URL is refused before anything changes.
	var ae vault.AdminError
	if code := adminCall(t, first.url, "/admin/join", vault.JoinRequest{ID: "r5", Raft: "127.0.0.1:1", URL: "http://0.0.0.0:7100"}, &ae); code != http.StatusBadRequest {
		t.Fatalf("join with an unspecified host: HTTP %d %s", code, ae.Error)
	}
	all := append(slices.Clone(nodes), r4)
	agreedLeader(t, all)

	// Every replica's status shows r4 with its URL and data centre, the
	// ones that never saw the join included.
	for _, n := range all {
		eventually(t, n.id+" shows r4", func() error {
			st := n.status(t)
			if m, ok := memberOf(st, "r4"); !ok || m.URL != r4.url || m.DataCentre != "dc-d" {
				return fmt.Errorf("members %+v", st.Members)
			}
			return nil
		})
	}

	// Leadership moves to r4.
	ctx, cancel := context.WithTimeout(context.Background(), memberWait)
	defer cancel()
	eventually(t, "leadership moves to r4", func() error {
		l := agreedLeader(t, all)
		if l == r4 {
			return nil
		}
		if err := l.rep.TransferLeadership(ctx, "r4"); err != nil {
			return err
		}
		if l = agreedLeader(t, all); l != r4 {
			return fmt.Errorf("leader %s after the transfer", l.id)
		}
		return nil
	})
	// follower: an original replica other than the one that handled the join.
	var follower *node
	for _, n := range nodes {
		if n != first {
			follower = n
			break
		}
	}
	for _, n := range []*node{follower, first} {
		eventually(t, n.id+" names r4 as the leader", func() error {
			st := n.status(t)
			m, ok := memberOf(st, "r4")
			if st.LeaderID != "r4" || st.LeaderURL != r4.url || !ok || !m.Leader || m.URL != r4.url || m.DataCentre != "dc-d" {
				return fmt.Errorf("leader %q at %q, members %+v", st.LeaderID, st.LeaderURL, st.Members)
			}
			for i, o := range nodes {
				if m, _ := memberOf(st, o.id); m.URL != o.url || m.DataCentre != dcs[i] {
					return fmt.Errorf("member %s: %+v", o.id, m)
				}
			}
			return nil
		})
	}
	if st := r4.status(t); st.URL != r4.url || st.DataCentre != "dc-d" {
		t.Fatalf("r4's own status: url %q, data centre %q", st.URL, st.DataCentre)
	}

	// The relay hint: a request the follower may not forward (it was
	// forwarded already) is answered Unavailable with the leader's URL.
	vc := vaultv1connect.NewVaultServiceClient(http.DefaultClient, follower.url)
	fctx, call := connect.NewClientContext(ctx)
	call.RequestHeader().Set(wire.ForwardedByHeader, "someone")
	_, err = vc.Exchange(fctx, &vaultv1.VaultExchangeRequest{Account: "nobody", Sealed: []byte("x")})
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeUnavailable || ce.Meta().Get(wire.LeaderHeader) != r4.url {
		t.Fatalf("not-leader answer: %v", err)
	}

	// Forwarding: a relay that knows only the follower serves requests,
	// which the follower forwards to r4.
	rf, err := devfleet.StartRelay(ctx, devfleet.RelayOptions{Keys: keys, Vaults: []string{follower.url}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	tok, err := rf.Token("joined", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	vtok, err := rf.VaultToken("joined", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	enrollAndRecover(ctx, t, rf.RelayURL, "joined", tok, vtok, rf.Bundle)
	if n := metric(t, follower.url, "coffer_vault_forwarded_total", `result="ok"`); n < 1 {
		t.Fatalf("the follower forwarded %v requests", n)
	}

	// Remove: the directory forgets the removed server.
	if code := leaderCall(t, r4.url, "/admin/remove", vault.RemoveRequest{ID: follower.id}, &st); code != http.StatusOK {
		t.Fatalf("remove: HTTP %d", code)
	}
	eventually(t, "the removed server's entry forgotten", func() error {
		ms, err := first.rep.Members()
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.ID == follower.id {
				return fmt.Errorf("removed %s still in the directory: %+v", follower.id, ms)
			}
		}
		return nil
	})
	if _, ok := memberOf(st, follower.id); ok || len(st.Members) != 3 {
		t.Fatalf("members after remove: %+v", st.Members)
	}

	// POST /admin/member records a server's entry (r4's configuration has
	// no data centre, so r4 does not change it back), refuses ids that are
	// not servers, and sends callers of a follower to the leader.
	if code := leaderCall(t, r4.url, "/admin/member", vault.MemberRequest{ID: "r4", DataCentre: "dc-d2"}, &st); code != http.StatusOK {
		t.Fatalf("member: HTTP %d", code)
	}
	eventually(t, first.id+" shows r4's new data centre", func() error {
		if m, _ := memberOf(first.status(t), "r4"); m.DataCentre != "dc-d2" || m.URL != r4.url {
			return fmt.Errorf("r4: %+v", m)
		}
		return nil
	})
	if code := leaderCall(t, r4.url, "/admin/member", vault.MemberRequest{ID: follower.id, URL: follower.url}, &st); code != http.StatusNotFound {
		t.Fatalf("member for a removed server: HTTP %d", code)
	}
	eventually(t, "a follower sends member calls to the leader", func() error {
		var left []*node // the fleet after the removal
		for _, n := range all {
			if n != follower {
				left = append(left, n)
			}
		}
		l := agreedLeader(t, left)
		f := left[0]
		if f == l {
			f = left[1]
		}
		ae = vault.AdminError{}
		if code := adminCall(t, f.url, "/admin/member", vault.MemberRequest{ID: "r4", DataCentre: "x"}, &ae); code != http.StatusMisdirectedRequest || ae.LeaderURL != l.url {
			return fmt.Errorf("HTTP %d %+v", code, ae)
		}
		return nil
	})
}

// metric reads the sample of name whose labels include label from a
// replica's /metrics (0 if absent).
func metric(t *testing.T, base, name, label string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		labels, v, ok := strings.Cut(line, " ")
		if ok && strings.HasPrefix(labels, name+"{") && strings.Contains(labels, label) {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// TestMemberDirectoryConverges: replicas configured with only their own
// data centre, and one with a wrong URL for a peer, converge on every
// member's own URL and data centre (the leader records its own and fills
// gaps from its peers; followers ask the leader to record theirs), and a
// settled fleet proposes nothing more.
func TestMemberDirectoryConverges(t *testing.T) {
	dir := t.TempDir()
	log := testLog(t)
	keys, err := devfleet.LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	dcs := []string{"dc-a", "dc-b", "dc-c"}
	nodes := startThree(t, keys, dir, log, func(i int, nodes []*node) vault.Config {
		urls := map[string]string{}
		for _, n := range nodes {
			urls[n.id] = n.url
		}
		if i == 0 {
			urls["r2"] = "http://127.0.0.1:1" // stale: r2's own entry wins
		}
		return vault.Config{URLs: urls, DataCentre: dcs[i]}
	})
	agreedLeader(t, nodes)
	check := func() error {
		for _, n := range nodes {
			st := n.status(t)
			for i, o := range nodes {
				if m, ok := memberOf(st, o.id); !ok || m.URL != o.url || m.DataCentre != dcs[i] {
					return fmt.Errorf("%s sees %s as %+v", n.id, o.id, m)
				}
			}
		}
		return nil
	}
	eventually(t, "the directory converges", check)

	// Settled: no more member entries, with or without a leader change.
	settled := func() {
		t.Helper()
		eventually(t, "no member entries in a settled fleet", func() error {
			l := agreedLeader(t, nodes)
			before := l.rep.Stats()
			time.Sleep(15 * 100 * time.Millisecond) // beyond a follower's publish delay
			after := l.rep.Stats()
			if after.Term != before.Term {
				return fmt.Errorf("an election meanwhile (term %d → %d)", before.Term, after.Term)
			}
			if after.CommitIndex != before.CommitIndex {
				return fmt.Errorf("commit index %d → %d", before.CommitIndex, after.CommitIndex)
			}
			return nil
		})
	}
	settled()
	l := agreedLeader(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), memberWait)
	defer cancel()
	for _, n := range nodes {
		if n != l {
			if err := l.rep.TransferLeadership(ctx, n.id); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	settled()
	if err := check(); err != nil {
		t.Fatal(err)
	}
}
