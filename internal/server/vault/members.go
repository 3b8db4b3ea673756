package vault

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer/internal/server/replica"
	"github.com/cofferhq/coffer/internal/server/vaultstate"
)

// The member directory: each fleet member's VaultService URL and data
// centre, which Raft's configuration (ids and Raft addresses) does not hold.
// It is part of the replicated state (state.SetMember, state.ForgetMember),
// so every replica knows the URL of a replica that joined through another
// one: status shows it, a follower forwards to it when it leads, relays are
// told where it is.
//
// Who writes what (OPERATIONS.md, "Membership"):
//
//   - join records the joiner's URL and data centre before adding the voter
//     (a successful join never leaves a voter without them; a failed
//     AddVoter leaves an entry for a non-member, which nothing shows or
//     uses, and a retried join overwrites);
//   - remove forgets the entry once the voter is removed;
//   - every replica is the authority on its own entry (its configured url
//     and data_centre): the leader records its own, a follower whose entry
//     differs asks the leader (POST /admin/member) — at most every
//     publishEvery;
//   - the peers[] of the leader's configuration only fill fields the
//     directory lacks (SetMember.FillOnly), for current voters: second-hand
//     configuration never overrides a join or a member's own entry, so
//     leaders with differing configurations do not undo each other.
//
// Nothing is proposed while the directory already says what the leader would
// propose, so restarts and leader changes of a settled fleet add no entries.

// memberInfo is what the directory knows of one member.
type memberInfo struct{ url, dc string }

// memberSource is where the replicated directory is read (the replica).
type memberSource interface {
	Members() ([]vaultstate.Member, error)
	MembersVersion() uint64
}

// members reads the directory: the replicated entry first, field by field
// falling back to this replica's configuration (Config.URLs, DataCentre,
// DataCentres) for members the state does not describe yet.
type members struct {
	src   memberSource
	local map[string]memberInfo // from the configuration; read-only after New

	mu      sync.Mutex
	loaded  bool
	version uint64
	repl    map[string]memberInfo // replaced whole, never modified
}

func newMembers(src memberSource, cfg *Config, self string) *members {
	m := &members{src: src, local: map[string]memberInfo{}}
	for id, u := range cfg.URLs {
		e := m.local[id]
		e.url = strings.TrimRight(u, "/")
		m.local[id] = e
	}
	for id, dc := range cfg.DataCentres {
		e := m.local[id]
		e.dc = dc
		m.local[id] = e
	}
	if cfg.DataCentre != "" {
		e := m.local[self]
		e.dc = cfg.DataCentre
		m.local[self] = e
	}
	return m
}

// replicated returns the state machine's directory, read again only when
// its version changed. On a read error (the state machine stopped) it keeps
// what it had.
func (m *members) replicated() map[string]memberInfo {
	v := m.src.MembersVersion()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.loaded && v == m.version {
		return m.repl
	}
	ms, err := m.src.Members()
	if err != nil {
		return m.repl
	}
	repl := make(map[string]memberInfo, len(ms))
	for _, e := range ms {
		repl[e.ID] = memberInfo{url: e.URL, dc: e.DataCentre}
	}
	m.repl, m.version, m.loaded = repl, v, true
	return repl
}

func (m *members) get(id string) (url, dc string) {
	if id == "" {
		return "", ""
	}
	r, l := m.replicated()[id], m.local[id]
	url, dc = r.url, r.dc
	if url == "" {
		url = l.url
	}
	if dc == "" {
		dc = l.dc
	}
	return url, dc
}

func (m *members) url(id string) string {
	u, _ := m.get(id)
	return u
}

// memberURL checks a member's VaultService base URL and returns it without
// a trailing slash: http or https, a host that is not an unspecified
// address (0.0.0.0 is where a replica listens, never where peers reach
// it), no credentials, query or fragment.
func memberURL(raw string) (string, error) {
	s := strings.TrimRight(raw, "/")
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("url %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("url %q: want http:// or https://", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("url %q: want a base URL without credentials, query or fragment", raw)
	}
	host := u.Hostname()
	if host == "" {
		return "", fmt.Errorf("url %q: no host", raw)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return "", fmt.Errorf("url %q: %s is not an address peers can reach (set the replica's url)", raw, host)
	}
	if len(s) > vaultstate.MaxMemberURLSize {
		return "", fmt.Errorf("url %q: longer than %d bytes", raw, vaultstate.MaxMemberURLSize)
	}
	return s, nil
}

// checkMember validates a directory entry as the state machine will (id,
// data centre) and the URL as memberURL does; it returns the URL to
// record.
func checkMember(id, rawURL, dc string) (string, error) {
	u := ""
	if rawURL != "" {
		var err error
		if u, err = memberURL(rawURL); err != nil {
			return "", err
		}
	}
	var op vaultstate.Op = &vaultstate.ForgetMember{ID: id}
	if u != "" || dc != "" {
		op = &vaultstate.SetMember{ID: id, URL: u, DataCentre: dc}
	}
	if _, err := (vaultstate.Command{Op: op}).MarshalBinary(); err != nil {
		return "", fmt.Errorf("member %q: want an id and a data centre of printable characters (id without spaces): %w", id, err)
	}
	return u, nil
}

// applyMember commits a member directory command.
func (s *Server) applyMember(ctx context.Context, op vaultstate.Op) (*vaultstate.MemberResult, error) {
	cmd := vaultstate.Command{Time: s.cfg.Now().UnixMilli(), Op: op}
	rand.Read(cmd.RequestID[:])
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	res, err := s.cfg.Replica.Apply(ctx, cmd)
	if err != nil {
		return nil, err
	}
	switch r := res.(type) {
	case *vaultstate.MemberResult:
		return r, nil
	case *vaultstate.Error:
		return nil, r
	}
	return nil, fmt.Errorf("vault: unexpected result %T", res)
}

// selfEntry is this replica's own entry as configured ("" fields are not
// published). A URL peers cannot use is left out, with a warning once: one
// memberURL refuses, or a loopback URL while peers reach this replica's
// Raft address from elsewhere (a configuration without url whose listen
// address is localhost must not replace the URL a join recorded).
func (s *Server) selfEntry() memberInfo {
	e := s.members.local[s.cfg.Replica.ID()]
	if e.url == "" {
		return e
	}
	_, err := memberURL(e.url)
	if err == nil && isLoopbackURL(e.url) && !isLoopbackAddr(s.cfg.Replica.Addr()) {
		err = fmt.Errorf("url %q is a loopback address, but peers reach this replica at %s (set the replica's url)", e.url, s.cfg.Replica.Addr())
	}
	if err != nil {
		s.selfURLWarn.Do(func() {
			s.log.Warn("this replica's URL is not published to the fleet's member directory", "reason", err.Error())
		})
		e.url = ""
	}
	return e
}

func isLoopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && isLoopbackHost(u.Hostname())
}

func isLoopbackAddr(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	return err == nil && isLoopbackHost(host)
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// missing returns the fields of want that the directory entry have lacks
// or (unless fillOnly) holds differently, as a SetMember; nil if none.
func missing(id string, want, have memberInfo, fillOnly bool) *vaultstate.SetMember {
	op := &vaultstate.SetMember{ID: id, FillOnly: fillOnly}
	if want.url != "" && (have.url == "" || (!fillOnly && have.url != want.url)) {
		op.URL = want.url
	}
	if want.dc != "" && (have.dc == "" || (!fillOnly && have.dc != want.dc)) {
		op.DataCentre = want.dc
	}
	if op.URL == "" && op.DataCentre == "" {
		return nil
	}
	return op
}

// DefaultMemberSyncInterval is Config.MemberSyncInterval's default.
const DefaultMemberSyncInterval = time.Second

// keepMembers runs until the replica closes: on the leader it records its
// own entry and fills gaps from its configured peers; on a follower it asks
// the leader to record this replica's own entry when the directory differs.
func (s *Server) keepMembers(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	// A follower leaves the first rounds to the leader, which fills gaps
	// from its configuration: usually what the follower would send.
	nextPublish := time.Now().Add(3 * interval)
	wasLeader := false
	for {
		select {
		case <-s.cfg.Replica.Done():
			return
		case <-t.C:
		}
		if !s.cfg.Replica.IsLeader() {
			wasLeader = false
			if now := time.Now(); !now.Before(nextPublish) && s.publishSelf() {
				nextPublish = now.Add(10 * interval)
			}
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ApplyTimeout)
		if !wasLeader {
			// A new leader's state machine may lag the log: read the
			// directory once every earlier entry is applied.
			if err := s.cfg.Replica.Barrier(ctx); err != nil {
				cancel()
				continue
			}
			wasLeader = true
		}
		s.recordMembers(ctx)
		cancel()
	}
}

// recordMembers, on the leader, proposes what the directory lacks: this
// replica's own entry (authoritative) and its configured peers' (fill
// only, current voters only).
func (s *Server) recordMembers(ctx context.Context) {
	self := s.cfg.Replica.ID()
	dir := s.members.replicated()
	ops := []*vaultstate.SetMember{}
	if op := missing(self, s.selfEntry(), dir[self], false); op != nil {
		ops = append(ops, op)
	}
	servers, err := s.cfg.Replica.Servers()
	if err != nil {
		return
	}
	ids := make([]string, 0, len(s.members.local))
	for id := range s.members.local {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if id == self || !slices.ContainsFunc(servers, func(p replica.Peer) bool { return p.ID == id }) {
			continue
		}
		want := s.members.local[id]
		if want.url != "" {
			if _, err := memberURL(want.url); err != nil {
				want.url = ""
			}
		}
		if op := missing(id, want, dir[id], true); op != nil {
			ops = append(ops, op)
		}
	}
	for _, op := range ops {
		if _, err := checkMember(op.ID, op.URL, op.DataCentre); err != nil {
			s.memberWarn("a configured member is not recorded in the member directory", "member", op.ID, "reason", err.Error())
			continue
		}
		r, err := s.applyMember(ctx, op)
		if err != nil {
			s.memberWarn("recording the member directory failed; retrying", "member", op.ID, "error", err.Error())
			return
		}
		if r.Changed {
			source := "peers configuration"
			if op.ID == self {
				source = "own configuration"
			}
			s.log.Info("member directory: recorded", "member", op.ID, "url", r.Member.URL, "data_centre", r.Member.DataCentre, "from", source)
		}
	}
}

// publishSelf, on a follower, asks the leader to record this replica's own
// entry if the directory differs from the configuration. It reports
// whether it asked.
func (s *Server) publishSelf() bool {
	if s.cfg.Forward == nil {
		return false
	}
	self := s.cfg.Replica.ID()
	op := missing(self, s.selfEntry(), s.members.replicated()[self], false)
	if op == nil {
		return false
	}
	lid, _ := s.cfg.Replica.Leader()
	leaderURL := s.members.url(lid)
	if lid == "" || lid == self || leaderURL == "" {
		return false
	}
	body, _ := json.Marshal(MemberRequest{ID: self, URL: op.URL, DataCentre: op.DataCentre})
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ApplyTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, leaderURL+"/admin/member", bytes.NewReader(body))
	if err != nil {
		return true
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.cfg.Forward.Do(req)
	if err != nil {
		s.memberWarn("asking the leader to record this replica in the member directory failed; retrying", "leader", lid, "error", err.Error())
		return true
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var ae AdminError
		json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&ae)
		s.memberWarn("the leader did not record this replica in the member directory; retrying", "leader", lid, "status", resp.StatusCode, "error", ae.Error)
		return true
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	s.log.Info("member directory: asked the leader to record this replica", "leader", lid, "url", op.URL, "data_centre", op.DataCentre)
	return true
}

// memberWarn logs a member directory problem at most once a minute (the
// upkeep retries every interval).
func (s *Server) memberWarn(msg string, args ...any) {
	s.warnMu.Lock()
	now := time.Now()
	quiet := now.Sub(s.lastWarn) < time.Minute
	if !quiet {
		s.lastWarn = now
	}
	s.warnMu.Unlock()
	if quiet {
		s.log.Debug(msg, args...)
		return
	}
	s.log.Warn(msg, args...)
}

// errNotServer refuses a directory entry for an id Raft does not know.
var errNotServer = errors.New("not a server of the fleet (join it first)")
