package vault

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/cofferhq/coffer/internal/server/replica"
	"github.com/cofferhq/coffer/internal/server/vaultstate"
)

// The admin endpoint (OPERATIONS.md): membership and status, under /admin/
// on the VaultService port.
//
//	GET  /admin/status                      this replica's view (Status, JSON)
//	POST /admin/join   {"id","raft","url","data_centre"}   leader only: add a voter
//	POST /admin/remove {"id"}                              leader only: remove a server
//	POST /admin/member {"id","url","data_centre"}          leader only: record a
//	                                                       server's URL / data centre
//	POST /admin/reshare {"generation"}                     leader only: move every
//	                                                       threshold record to that
//	                                                       share generation (reshare.go)
//
// join, remove and member keep the replicated member directory (members.go);
// a follower calls member for itself when its configured URL or data centre
// differs from the directory's.
//
// With TLS (Config.AdminRequiresCert) a caller must present a certificate
// from the fleet CA (the port's TLS config verifies it); without TLS only
// loopback callers are served, so a development replica's admin endpoint is
// reachable from its own host only.

// Member is one server of the fleet as a replica knows it.
type Member struct {
	ID         string `json:"id"`
	Raft       string `json:"raft"`
	URL        string `json:"url,omitempty"`
	DataCentre string `json:"data_centre,omitempty"`
	Leader     bool   `json:"leader,omitempty"`
}

// Status is GET /admin/status.
type Status struct {
	ID                string    `json:"id"`
	DataCentre        string    `json:"data_centre,omitempty"`
	URL               string    `json:"url,omitempty"`
	State             string    `json:"state"`
	Term              uint64    `json:"term"`
	LastLogIndex      uint64    `json:"last_log_index"`
	CommitIndex       uint64    `json:"commit_index"`
	AppliedIndex      uint64    `json:"applied_index"`
	LastSnapshotIndex uint64    `json:"last_snapshot_index"`
	LastContact       time.Time `json:"last_contact,omitzero"`
	LastContactAgo    string    `json:"last_contact_ago,omitempty"`
	LeaderID          string    `json:"leader_id,omitempty"`
	LeaderURL         string    `json:"leader_url,omitempty"`
	Members           []Member  `json:"members"`
	Healthy           bool      `json:"healthy"`
	Problems          []string  `json:"problems,omitempty"`
}

// JoinRequest is POST /admin/join.
type JoinRequest struct {
	ID         string `json:"id"`
	Raft       string `json:"raft"`
	URL        string `json:"url"`
	DataCentre string `json:"data_centre,omitempty"`
}

// MemberRequest is POST /admin/member: record the URL and data centre (the
// fields set; at least one) of a server of the fleet in the member
// directory. Re-running join does the same for a member.
type MemberRequest struct {
	ID         string `json:"id"`
	URL        string `json:"url,omitempty"`
	DataCentre string `json:"data_centre,omitempty"`
}

// RemoveRequest is POST /admin/remove.
type RemoveRequest struct {
	ID string `json:"id"`
}

// AdminError is the JSON body of a refused admin call; LeaderURL is set
// when the call must go to the leader (HTTP 421).
type AdminError struct {
	Error     string `json:"error"`
	LeaderID  string `json:"leader_id,omitempty"`
	LeaderURL string `json:"leader_url,omitempty"`
}

// StatusNow returns this replica's view of the fleet.
func (s *Server) StatusNow() Status {
	r := s.cfg.Replica
	st := r.Stats()
	// This replica's own URL and data centre: as configured, else as the
	// directory has them (a joined replica configured without them).
	selfURL, selfDC := s.members.get(r.ID())
	selfURL, selfDC = cmp.Or(s.members.local[r.ID()].url, selfURL), cmp.Or(s.cfg.DataCentre, selfDC)
	out := Status{
		ID: r.ID(), DataCentre: selfDC, URL: selfURL, State: st.State, Term: st.Term,
		LastLogIndex: st.LastLogIndex, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex,
		LastSnapshotIndex: st.LastSnapshotIndex, LeaderID: st.LeaderID, LeaderURL: s.members.url(st.LeaderID),
	}
	if !st.LastContact.IsZero() {
		out.LastContact = st.LastContact
		out.LastContactAgo = time.Since(st.LastContact).Round(time.Millisecond).String()
	}
	servers, err := r.Servers()
	if err != nil {
		out.Problems = append(out.Problems, err.Error())
	}
	for _, p := range servers {
		u, dc := s.members.get(p.ID)
		out.Members = append(out.Members, Member{ID: p.ID, Raft: p.Addr, URL: u, DataCentre: dc, Leader: p.ID == st.LeaderID})
	}
	sort.Slice(out.Members, func(i, j int) bool { return out.Members[i].ID < out.Members[j].ID })
	if st.LeaderID == "" {
		out.Problems = append(out.Problems, "no leader known (election in progress, or no quorum)")
	}
	if st.State == "Follower" && !st.LastContact.IsZero() && time.Since(st.LastContact) > 10*time.Second {
		out.Problems = append(out.Problems, "no contact with the leader for "+out.LastContactAgo)
	}
	if st.CommitIndex > st.AppliedIndex+1000 {
		out.Problems = append(out.Problems, "applying lags the commit index by more than 1000 entries")
	}
	if st.State == "Shutdown" {
		out.Problems = append(out.Problems, "raft is shut down (storage failure or closing)")
	}
	out.Healthy = len(out.Problems) == 0
	return out
}

// adminAllowed enforces the admin endpoint's access rule.
func (s *Server) adminAllowed(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.AdminRequiresCert {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			writeAdmin(w, http.StatusForbidden, AdminError{Error: "the admin endpoint needs a client certificate from the fleet CA (coffer vault cert)"})
			return false
		}
		return true
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	ip := net.ParseIP(host)
	if err != nil || ip == nil || !ip.IsLoopback() {
		writeAdmin(w, http.StatusForbidden, AdminError{Error: "without TLS the admin endpoint serves loopback callers only; configure the fleet CA certificates"})
		return false
	}
	return true
}

func writeAdmin(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) adminHandler(mux *http.ServeMux) {
	mux.HandleFunc("GET /admin/status", func(w http.ResponseWriter, r *http.Request) {
		if !s.adminAllowed(w, r) {
			return
		}
		writeAdmin(w, http.StatusOK, s.StatusNow())
	})
	mux.HandleFunc("POST /admin/join", func(w http.ResponseWriter, r *http.Request) {
		if !s.adminAllowed(w, r) {
			return
		}
		var req JoinRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.ID == "" || req.Raft == "" {
			writeAdmin(w, http.StatusBadRequest, AdminError{Error: "want JSON {\"id\", \"raft\", \"url\", \"data_centre\"} with id and raft set"})
			return
		}
		if _, _, err := net.SplitHostPort(req.Raft); err != nil {
			writeAdmin(w, http.StatusBadRequest, AdminError{Error: "raft: want HOST:PORT: " + err.Error()})
			return
		}
		u, err := checkMember(req.ID, req.URL, req.DataCentre)
		if err != nil {
			writeAdmin(w, http.StatusBadRequest, AdminError{Error: err.Error()})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		// The directory entry first: once AddVoter succeeds, every replica
		// knows the new voter's URL and data centre. Should AddVoter fail,
		// the entry stays for a non-member, which nothing shows or uses,
		// and a retried join overwrites it.
		if u != "" || req.DataCentre != "" {
			if _, err := s.applyMember(ctx, &vaultstate.SetMember{ID: req.ID, URL: u, DataCentre: req.DataCentre}); !s.adminResult(w, err) {
				return
			}
		}
		if s.adminResult(w, s.cfg.Replica.AddVoter(ctx, req.ID, req.Raft)) {
			s.log.Info("admin: voter added", "member", req.ID, "raft", req.Raft, "url", u, "data_centre", req.DataCentre)
			writeAdmin(w, http.StatusOK, s.StatusNow())
		}
	})
	mux.HandleFunc("POST /admin/member", func(w http.ResponseWriter, r *http.Request) {
		if !s.adminAllowed(w, r) {
			return
		}
		var req MemberRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.ID == "" || (req.URL == "" && req.DataCentre == "") {
			writeAdmin(w, http.StatusBadRequest, AdminError{Error: "want JSON {\"id\", \"url\", \"data_centre\"} with id and a url or a data centre set"})
			return
		}
		u, err := checkMember(req.ID, req.URL, req.DataCentre)
		if err != nil {
			writeAdmin(w, http.StatusBadRequest, AdminError{Error: err.Error()})
			return
		}
		if !s.adminLeader(w) {
			return
		}
		servers, err := s.cfg.Replica.Servers()
		if !s.adminResult(w, err) {
			return
		}
		if !slices.ContainsFunc(servers, func(p replica.Peer) bool { return p.ID == req.ID }) {
			writeAdmin(w, http.StatusNotFound, AdminError{Error: req.ID + ": " + errNotServer.Error()})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		// Nothing to record (a follower's view lagged): no entry.
		if op := missing(req.ID, memberInfo{url: u, dc: req.DataCentre}, s.members.replicated()[req.ID], false); op != nil {
			res, err := s.applyMember(ctx, op)
			if !s.adminResult(w, err) {
				return
			}
			if res.Changed {
				s.log.Info("admin: member directory updated", "member", req.ID, "url", res.Member.URL, "data_centre", res.Member.DataCentre)
			}
		}
		writeAdmin(w, http.StatusOK, s.StatusNow())
	})
	mux.HandleFunc("POST /admin/reshare", func(w http.ResponseWriter, r *http.Request) {
		if !s.adminAllowed(w, r) {
			return
		}
		var req ReshareRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.Generation < 2 {
			writeAdmin(w, http.StatusBadRequest, AdminError{Error: "want JSON {\"generation\"} naming a share generation from 2 on (the one 'coffer vault deal-shares --generation' dealt)"})
			return
		}
		if s.th == nil {
			writeAdmin(w, http.StatusConflict, AdminError{Error: "this replica holds no OPRF shares: not a threshold fleet, or started without --oprf-share"})
			return
		}
		if !s.adminLeader(w) {
			return
		}
		// No timeout but the caller's: a reshare walks every record.
		rep, err := s.th.reshare(r.Context(), req.Generation)
		if err != nil {
			if rep == nil {
				writeAdmin(w, http.StatusConflict, AdminError{Error: err.Error()})
				return
			}
			rep.Errors = append(rep.Errors, err.Error())
			rep.Done = false
		}
		writeAdmin(w, http.StatusOK, rep)
	})
	mux.HandleFunc("POST /admin/remove", func(w http.ResponseWriter, r *http.Request) {
		if !s.adminAllowed(w, r) {
			return
		}
		var req RemoveRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.ID == "" {
			writeAdmin(w, http.StatusBadRequest, AdminError{Error: "want JSON {\"id\"}"})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		err := s.cfg.Replica.RemoveServer(ctx, req.ID)
		if s.adminResult(w, err) {
			s.log.Info("admin: server removed", "member", req.ID)
			// Then its directory entry. Should this fail, the entry stays
			// for a non-member, which nothing shows or uses.
			if _, err := checkMember(req.ID, "", ""); err == nil {
				if _, err := s.applyMember(ctx, &vaultstate.ForgetMember{ID: req.ID}); err != nil {
					s.log.Warn("admin: the removed server's member directory entry was not forgotten (harmless: only servers' entries are used)", "member", req.ID, "error", err.Error())
				}
			}
			writeAdmin(w, http.StatusOK, s.StatusNow())
		}
	})
}

// adminLeader answers 421 naming the leader (if this replica knows one
// other than itself) unless this replica leads.
func (s *Server) adminLeader(w http.ResponseWriter) bool {
	if s.cfg.Replica.IsLeader() {
		return true
	}
	lid, laddr := s.cfg.Replica.Leader()
	if lid == s.cfg.Replica.ID() {
		lid, laddr = "", ""
	}
	s.adminResult(w, &replica.NotLeaderError{LeaderID: lid, LeaderAddr: laddr})
	return false
}

// adminResult writes the error of a membership change, if any.
func (s *Server) adminResult(w http.ResponseWriter, err error) bool {
	var nl *replica.NotLeaderError
	switch {
	case err == nil:
		return true
	case errors.As(err, &nl):
		writeAdmin(w, http.StatusMisdirectedRequest, AdminError{Error: err.Error(), LeaderID: nl.LeaderID, LeaderURL: s.members.url(nl.LeaderID)})
	default:
		writeAdmin(w, http.StatusServiceUnavailable, AdminError{Error: err.Error()})
	}
	return false
}
