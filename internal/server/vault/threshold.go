package vault

// The threshold OPRF of PROTOCOL.md §7 (version 2): on a fleet whose
// replicas hold OPRF shares instead of the fleet's OPRF seed, no replica
// can evaluate an account's OPRF alone. The leader commits the counting
// entry (LoginStart, or the RegisterCheck of a registration) with the hash
// of the client's blinded element; every replica that has applied that
// entry evaluates its share for that element and proves it (DLEQ); the
// leader verifies t partials against the record's public shares, combines
// them into the ordinary RFC 9807 evaluation, and only then computes the
// KE2 (or registration response) — whose MAC hash a LoginMAC entry
// replicates before the KE2 leaves.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cofferhq/coffer/internal/atomicfile"
	"github.com/cofferhq/coffer/internal/protocol/pake"
	"github.com/cofferhq/coffer/internal/protocol/toprf"
	"github.com/cofferhq/coffer/internal/server/vaultstate"
)

// EvaluatePath is the replica-to-replica endpoint of partial evaluations,
// on the VaultService port. On a TLS fleet it takes member replicas'
// certificates only (serve's handler checks them).
const EvaluatePath = "/coffer.vault.internal/Evaluate"

// evaluation kinds.
const (
	evalLogin    = "login"    // a pending login's blinded element
	evalRegister = "register" // the reserved registration's blinded element
	evalPublic   = "public"   // only the public share, for a registration's record
)

// evalRequest asks a replica for its partial evaluation.
type evalRequest struct {
	Kind    string `json:"kind"`
	Account string `json:"account"`
	Epoch   uint64 `json:"epoch"`
	LoginID string `json:"login_id,omitempty"` // hex
	Blinded []byte `json:"blinded,omitempty"`
}

// evalResponse is a replica's answer.
type evalResponse struct {
	Index   uint16 `json:"index"`
	Partial []byte `json:"partial,omitempty"` // toprf.Partial encoding
	Public  []byte `json:"public"`            // K_{c,i}
	Error   string `json:"error,omitempty"`
	// own is this replica's own partial, without a proof (never sent).
	own *toprf.Partial
}

// evalWait bounds how long a replica waits to have applied the entry a
// request names (its apply can lag the leader's commit a little).
const evalWait = 2 * time.Second

// shareFileVersion is the version of an OPRF share file.
const shareFileVersion = 1

type shareFile struct {
	Version   int      `json:"coffer_oprf_share"`
	Indices   []uint16 `json:"members"`
	Threshold int      `json:"threshold"`
	Index     uint16   `json:"index"`
	Seeds     []struct {
		Set  []uint16 `json:"set"`
		Seed string   `json:"seed"`
	} `json:"seeds"`
}

// DealShares is the key ceremony's step for a threshold fleet of n
// replicas (PROTOCOL.md §7): it deals the PRSS seeds with t = a majority
// and writes one file per replica, share-<index>.json, in dir (0600, never
// overwritten). Each file goes to one replica only.
func DealShares(dir string, n int) ([]string, error) {
	if n < 1 || n > 64 {
		return nil, fmt.Errorf("vault: a threshold fleet has 1 to 64 replicas, not %d", n)
	}
	indices := make([]uint16, n)
	for i := range indices {
		indices[i] = uint16(i + 1)
	}
	m, err := toprf.NewMembership(indices, toprf.DefaultThreshold(n))
	if err != nil {
		return nil, err
	}
	seeds, err := toprf.Deal(m, rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var paths []string
	for _, rs := range seeds {
		f := shareFile{Version: shareFileVersion, Indices: rs.Membership.Indices, Threshold: rs.Membership.Threshold, Index: rs.Index}
		for _, s := range rs.Seeds {
			f.Seeds = append(f.Seeds, struct {
				Set  []uint16 `json:"set"`
				Seed string   `json:"seed"`
			}{s.Set, base64.StdEncoding.EncodeToString(s.Seed)})
		}
		b, err := json.MarshalIndent(f, "", "  ")
		rs.Zero()
		if err != nil {
			return nil, err
		}
		p := filepath.Join(dir, fmt.Sprintf("share-%d.json", rs.Index))
		err = atomicfile.CreateExclusive(p, append(b, '\n'), 0o600)
		clear(b)
		if err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// LoadShareFile reads one replica's OPRF share file (DealShares).
func LoadShareFile(path string) (*toprf.ReplicaSeeds, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("OPRF share file: %w", err)
	}
	defer clear(b)
	var f shareFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("OPRF share file %s: %v", path, err)
	}
	if f.Version != shareFileVersion {
		return nil, fmt.Errorf("OPRF share file %s: version %d, want %d", path, f.Version, shareFileVersion)
	}
	m, err := toprf.NewMembership(f.Indices, f.Threshold)
	if err != nil {
		return nil, fmt.Errorf("OPRF share file %s: %w", path, err)
	}
	rs := &toprf.ReplicaSeeds{Membership: m, Index: f.Index}
	for _, s := range f.Seeds {
		seed, err := base64.StdEncoding.DecodeString(s.Seed)
		if err != nil {
			return nil, fmt.Errorf("OPRF share file %s: a seed is not base64", path)
		}
		rs.Seeds = append(rs.Seeds, toprf.SetSeed{Set: s.Set, Seed: seed})
	}
	if err := rs.Validate(); err != nil {
		rs.Zero()
		return nil, fmt.Errorf("OPRF share file %s: %w", path, err)
	}
	return rs, nil
}

// threshold is the leader's and the evaluator's side of the threshold OPRF.
type threshold struct {
	s     *Server
	seeds *toprf.ReplicaSeeds
	hc    *http.Client
	next  atomic.Uint32 // rotates the peers a login asks first
}

// encodePublicShares is the record's encoding: per index ascending, u16
// index then the 32-byte element.
func encodePublicShares(p toprf.PublicShares) []byte {
	idx := make([]uint16, 0, len(p))
	for i := range p {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	var b []byte
	for _, i := range idx {
		b = binary.BigEndian.AppendUint16(b, i)
		b = append(b, p[i]...)
	}
	return b
}

// DecodePublicShares reads a record's public shares (vaultstate.Record's
// PublicShares encoding: per replica, u16 index then the element).
func DecodePublicShares(b []byte) (toprf.PublicShares, error) {
	const each = 2 + pake.PublicKeySize
	if len(b) == 0 || len(b)%each != 0 {
		return nil, errors.New("malformed public shares")
	}
	p := make(toprf.PublicShares, len(b)/each)
	for ; len(b) > 0; b = b[each:] {
		p[binary.BigEndian.Uint16(b)] = bytes.Clone(b[2:each])
	}
	return p, nil
}

// evaluate is one replica's partial evaluation for req, made only if this
// replica's own state has applied the entry that authorizes it: a pending
// login with that id and blinded element (counted: LoginStart checked the
// budget), or the reserved registration of that epoch and element. A
// "public" request returns only the public share.
func (t *threshold) evaluate(ctx context.Context, req *evalRequest, own bool) (*evalResponse, error) {
	credID := pake.CredentialID(req.Account, req.Epoch)
	rid := t.s.recordID(req.Account)
	var blinded vaultstate.Hash
	if req.Kind != evalPublic {
		blinded = vaultstate.HashBlinded(req.Blinded)
	}
	var loginID vaultstate.LoginID
	if req.Kind == evalLogin {
		id, err := hex.DecodeString(req.LoginID)
		if err != nil || len(id) != vaultstate.LoginIDSize {
			return nil, errors.New("malformed login id")
		}
		copy(loginID[:], id)
	}
	ok := func(acc *vaultstate.Account) bool {
		switch req.Kind {
		case evalLogin:
			p := acc.Pending
			return acc.Live() && acc.Epoch == req.Epoch && p != nil && p.ID == loginID && p.Blinded == blinded &&
				time.Now().UnixMilli() < p.Expiry+vaultstate.MaxClockStep.Milliseconds()
		case evalRegister:
			return acc.Reserved == req.Epoch && acc.Epoch < req.Epoch && acc.ReservedBlinded == blinded
		case evalPublic:
			return acc.Reserved >= req.Epoch
		}
		return false
	}
	deadline := time.Now().Add(evalWait)
	for {
		acc, err := t.s.cfg.Replica.Lookup(rid)
		if err != nil {
			return nil, errors.New("this replica cannot read its state")
		}
		if acc != nil && ok(acc) {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("this replica has not applied an entry that authorizes a %s evaluation for this account", req.Kind)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	share, err := t.seeds.Share(credID, nil)
	if err != nil {
		return nil, err
	}
	defer share.Zero()
	out := &evalResponse{Index: t.seeds.Index, Public: share.Public()}
	switch {
	case req.Kind == evalPublic:
	case own:
		p, err := share.EvaluateOwn(req.Blinded)
		if err != nil {
			return nil, err
		}
		out.own = &p
	default:
		p, err := share.Evaluate(req.Blinded)
		if err != nil {
			return nil, err
		}
		out.Partial = p.Encode()
	}
	return out, nil
}

// handleEvaluate serves EvaluatePath.
func (t *threshold) handleEvaluate(w http.ResponseWriter, r *http.Request) {
	var req evalRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 8<<10)).Decode(&req); err != nil {
		http.Error(w, "malformed evaluation request", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	resp, err := t.evaluate(r.Context(), &req, false)
	if err != nil {
		w.WriteHeader(http.StatusConflict)
		json.NewEncoder(w).Encode(evalResponse{Error: err.Error()})
		return
	}
	json.NewEncoder(w).Encode(resp)
}

// peers are the other members' base URLs.
func (t *threshold) peers() []string {
	self := t.s.cfg.Replica.ID()
	seen := map[string]bool{}
	var out []string
	add := func(id, u string) {
		if id != self && u != "" && !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	for id, m := range t.s.members.replicated() {
		add(id, m.url)
	}
	for id, u := range t.s.cfg.URLs {
		add(id, u)
	}
	sort.Strings(out)
	return out
}

func (t *threshold) remote(ctx context.Context, base string, req *evalRequest) (*evalResponse, error) {
	body, _ := json.Marshal(req)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, base+EvaluatePath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := t.hc.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out evalResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 8<<10)).Decode(&out); err != nil {
		return nil, fmt.Errorf("%s: HTTP %d", base, resp.StatusCode)
	}
	if out.Error != "" || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", base, out.Error)
	}
	return &out, nil
}

// gather collects answers to req from this replica and its peers until
// enough is in. A login asks only t−1 peers at first (rotating, so the
// load spreads) and the rest only if one of those fails or is slow: t
// evaluations per login, not n. A registration asks every member and
// waits for all of them, or a short grace after t, for CheckPublicShares.
// Each answer is checked as it arrives: a peer's partial against the
// public share (the record's, or the one the replica sent with it); this
// replica's own needs no proof check.
func (t *threshold) gather(ctx context.Context, req *evalRequest, public toprf.PublicShares, all bool) (own *toprf.Partial, partials []toprf.Partial, publics toprf.PublicShares) {
	m := t.seeds.Membership
	ctx, cancel := context.WithTimeout(ctx, evalWait+time.Second)
	defer cancel()
	type answer struct {
		r     *evalResponse
		local bool
	}
	peers := t.peers()
	answers := make(chan answer, 1+len(peers))
	var wg sync.WaitGroup
	ask := func(local bool, f func() (*evalResponse, error)) {
		wg.Go(func() {
			r, err := f()
			if err != nil {
				t.s.log.Debug("threshold: no partial", "kind", req.Kind, "err", err)
				r = nil
			}
			answers <- answer{r, local}
		})
	}
	ask(true, func() (*evalResponse, error) { return t.evaluate(ctx, req, true) })
	first := len(peers)
	if req.Kind == evalLogin && len(peers) > 0 && !all {
		first = min(len(peers), m.Threshold-1)
		off := int(t.next.Add(1)) % len(peers)
		peers = append(peers[off:], peers[:off]...)
	}
	asked := 0
	askMore := func(k int) {
		for ; k > 0 && asked < len(peers); k-- {
			p := peers[asked]
			asked++
			ask(false, func() (*evalResponse, error) { return t.remote(ctx, p, req) })
		}
	}
	askMore(first)
	pending := 1 + asked
	publics = toprf.PublicShares{}
	have := func() int {
		if own != nil {
			return len(partials) + 1
		}
		return len(partials)
	}
	var grace <-chan time.Time
	slow := time.After(evalWait / 4) // then ask the peers not yet asked
	for pending > 0 {
		select {
		case a := <-answers:
			pending--
			r := a.r
			if r == nil || !m.Has(r.Index) || publics[r.Index] != nil {
				pending += min(1, len(peers)-asked)
				askMore(1) // a failed answer: ask another peer
				continue
			}
			switch {
			case req.Kind == evalPublic:
				publics[r.Index] = r.Public
			case a.local:
				if public != nil && !bytes.Equal(public[r.Index], r.Public) {
					t.s.log.Warn("threshold: this replica's own public share differs from the record's; not using it", "index", r.Index)
					pending += min(1, len(peers)-asked)
					askMore(1)
					continue
				}
				own = r.own
				publics[r.Index] = r.Public
			default:
				p, err := toprf.DecodePartial(r.Partial)
				// A login's partials are verified once, by CombineOwn; a
				// registration's here, against the share sent with them.
				if err != nil || p.Index != r.Index || (public == nil && toprf.VerifyPartial(r.Public, req.Blinded, p) != nil) {
					t.s.log.Warn("threshold: a replica's partial evaluation does not verify against its public share; ignoring it", "index", r.Index)
					pending += min(1, len(peers)-asked)
					askMore(1)
					continue
				}
				partials = append(partials, p)
				publics[r.Index] = r.Public
			}
			if req.Kind == evalLogin && have() >= m.Threshold {
				return own, partials, publics
			}
			if len(publics) == len(m.Indices) {
				return own, partials, publics
			}
			if len(publics) >= m.Threshold && grace == nil {
				grace = time.After(100 * time.Millisecond)
			}
		case <-slow:
			n := len(peers) - asked
			pending += n
			askMore(n)
		case <-grace:
			return own, partials, publics
		case <-ctx.Done():
			return own, partials, publics
		}
	}
	return own, partials, publics
}

// combine gathers and combines the evaluation of blinded for req: this
// replica's own partial (unproven: it made it) and t−1 peers' (proven). A
// login asks t−1 peers first; if a partial is refused (a Byzantine or
// stale replica), it asks every member again.
func (t *threshold) combine(ctx context.Context, req *evalRequest, public toprf.PublicShares) (evaluated []byte, all toprf.PublicShares, err error) {
	m := t.seeds.Membership
	for try := 0; try < 2; try++ {
		own, partials, publics := t.gather(ctx, req, public, try > 0)
		n := len(partials)
		if own != nil {
			n++
		}
		if n < m.Threshold {
			err = fmt.Errorf("%w: %d of the %d partial evaluations needed", toprf.ErrNotEnough, n, m.Threshold)
			continue
		}
		all = public
		if all == nil {
			if all, _, err = toprf.CheckPublicShares(m, publics); err != nil {
				return nil, nil, err
			}
		}
		var faults []toprf.Fault
		if own != nil {
			evaluated, faults, err = toprf.CombineOwn(m, all, req.Blinded, *own, partials)
		} else {
			evaluated, faults, err = toprf.Combine(m, all, req.Blinded, partials)
		}
		for _, f := range faults {
			t.s.log.Warn("threshold: refused a partial evaluation", "index", f.Index, "reason", f.Reason)
		}
		if err == nil {
			return evaluated, all, nil
		}
		if public == nil {
			break // a registration asked everyone already
		}
	}
	return nil, nil, err
}

// publicShares gathers and checks the public shares of account's record of
// epoch, for its Register entry.
func (t *threshold) publicShares(ctx context.Context, account string, epoch uint64) ([]byte, error) {
	_, _, publics := t.gather(ctx, &evalRequest{Kind: evalPublic, Account: account, Epoch: epoch}, nil, true)
	all, _, err := toprf.CheckPublicShares(t.seeds.Membership, publics)
	if err != nil {
		return nil, err
	}
	return encodePublicShares(all), nil
}
