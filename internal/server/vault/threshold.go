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
	"github.com/cofferhq/coffer/internal/server/sealing"
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
	evalReshare  = "reshare"  // a record's delta and new public share (reshare.go)
)

// evalRequest asks a replica for its partial evaluation.
type evalRequest struct {
	Kind    string `json:"kind"`
	Account string `json:"account"`
	Epoch   uint64 `json:"epoch"`
	LoginID string `json:"login_id,omitempty"` // hex
	Blinded []byte `json:"blinded,omitempty"`
	// Gen is the share generation to evaluate under (0: the first; a
	// login's must be its record's).
	Gen uint32 `json:"generation,omitempty"`
	// Record is the record id (hex) of a reshare, which names no account.
	Record string `json:"record,omitempty"`
}

// evalResponse is a replica's answer.
type evalResponse struct {
	Index   uint16 `json:"index"`
	Partial []byte `json:"partial,omitempty"` // toprf.Partial encoding
	Public  []byte `json:"public"`            // K_{c,i}
	// Delta is a reshare's d_i = k_{c,i} − k'_{c,i} (secret: it travels
	// to the leader over the fleet's mutual TLS only).
	Delta []byte `json:"delta,omitempty"`
	Error string `json:"error,omitempty"`
	// own is this replica's own partial, without a proof (never sent).
	own *toprf.Partial
}

// evalWait bounds how long a replica waits to have applied the entry a
// request names (its apply can lag the leader's commit a little).
const evalWait = 2 * time.Second

// shareFileVersion is the version of an OPRF share file: 2 names its
// generation; a version-1 file is of generation 1.
const shareFileVersion = 2

type shareFile struct {
	Version    int      `json:"coffer_oprf_share"`
	Generation uint32   `json:"generation,omitempty"`
	Indices    []uint16 `json:"members"`
	Threshold  int      `json:"threshold"`
	Index      uint16   `json:"index"`
	Seeds      []struct {
		Set  []uint16 `json:"set"`
		Seed string   `json:"seed"`
	} `json:"seeds"`
}

// ShareSet is one generation of a replica's OPRF shares (PROTOCOL.md §7):
// the PRSS seeds a ceremony dealt it for one membership. A replica holds
// one generation, or two around a reshare; it keeps its index across
// generations.
type ShareSet struct {
	Generation uint32
	// Sealed: the file was sealed under a replica's key (SealShareFile).
	Sealed bool
	*toprf.ReplicaSeeds
}

// DealShares is the key ceremony's step for a threshold fleet of n
// replicas (PROTOCOL.md §7): it deals the PRSS seeds of generation 1 for
// members 1..n with t = a majority and writes one file per replica,
// share-<index>.json, in dir (0600, never overwritten). Each file goes to
// one replica only.
func DealShares(dir string, n int) ([]string, error) {
	if n < 1 || n > 64 {
		return nil, fmt.Errorf("vault: a threshold fleet has 1 to 64 replicas, not %d", n)
	}
	indices := make([]uint16, n)
	for i := range indices {
		indices[i] = uint16(i + 1)
	}
	return DealGeneration(dir, indices, 1)
}

// DealGeneration deals a generation of shares for the members with these
// indices (t = a majority of them): the fleet's first (generation 1), or
// the next one for a membership change, which a reshare then moves every
// record to. A member keeps its index; a new member gets an index no
// member ever had. Files are share-<index>.json for generation 1 and
// share-<index>-gen<g>.json after.
func DealGeneration(dir string, indices []uint16, gen uint32) ([]string, error) {
	if gen == 0 {
		return nil, errors.New("vault: share generations start at 1")
	}
	if len(indices) < 1 || len(indices) > 64 {
		return nil, fmt.Errorf("vault: a threshold fleet has 1 to 64 replicas, not %d", len(indices))
	}
	m, err := toprf.NewMembership(indices, toprf.DefaultThreshold(len(indices)))
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
	defer func() {
		for _, rs := range seeds {
			rs.Zero()
		}
	}()
	for _, rs := range seeds {
		f := shareFile{Version: shareFileVersion, Generation: gen, Indices: rs.Membership.Indices, Threshold: rs.Membership.Threshold, Index: rs.Index}
		for _, s := range rs.Seeds {
			f.Seeds = append(f.Seeds, struct {
				Set  []uint16 `json:"set"`
				Seed string   `json:"seed"`
			}{s.Set, base64.StdEncoding.EncodeToString(s.Seed)})
		}
		b, err := json.MarshalIndent(f, "", "  ")
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("share-%d.json", rs.Index)
		if gen > 1 {
			name = fmt.Sprintf("share-%d-gen%d.json", rs.Index, gen)
		}
		p := filepath.Join(dir, name)
		err = atomicfile.CreateExclusive(p, append(b, '\n'), 0o600)
		clear(b)
		if err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// LoadShareFile reads one replica's OPRF share file (DealGeneration),
// plaintext. LoadShareFileSealed reads a sealed one too.
func LoadShareFile(path string) (*ShareSet, error) { return LoadShareFileSealed(path, nil) }

// ErrShareSealed: the share file is sealed and no key was given.
var ErrShareSealed = errors.New("the OPRF share file is sealed: configure this replica's sealing key file or PKCS#11 token")

// LoadShareFileSealed reads a share file, plaintext or sealed under kek
// (SealShareFile; kek nil: plaintext only).
func LoadShareFileSealed(path string, kek sealing.Key) (*ShareSet, error) {
	b, sealed, err := readShareFile(path, kek)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	set, err := parseShareFile(path, b)
	if err == nil {
		set.Sealed = sealed
	}
	return set, err
}

// SealShareFile writes the share file in (plaintext, or sealed under kek)
// to out sealed under kek (0600, never overwriting), for a replica that
// seals its disk: its share then opens only with its key file or token.
func SealShareFile(in, out string, kek sealing.Key) error {
	b, _, err := readShareFile(in, kek)
	if err != nil {
		return err
	}
	defer clear(b)
	set, err := parseShareFile(in, b)
	if err != nil {
		return err
	}
	set.Zero()
	return sealing.WriteWrappedFile(kek, out, sealing.PurposeOPRFShare, b) // create-only
}

// readShareFile returns a share file's plaintext, opening it under kek if
// it is sealed.
func readShareFile(path string, kek sealing.Key) (plain []byte, sealed bool, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, false, fmt.Errorf("OPRF share file: %w", err)
	}
	if !sealing.IsWrappedFile(b) {
		return b, false, nil
	}
	defer clear(b)
	if kek == nil {
		return nil, true, fmt.Errorf("OPRF share file %s: %w", path, ErrShareSealed)
	}
	if plain, err = sealing.UnwrapFile(kek, sealing.PurposeOPRFShare, b); err != nil {
		return nil, true, fmt.Errorf("OPRF share file %s: %w", path, err)
	}
	return plain, true, nil
}

func parseShareFile(path string, b []byte) (*ShareSet, error) {
	var f shareFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("OPRF share file %s: %v", path, err)
	}
	switch {
	case f.Version == 1 && f.Generation == 0:
		f.Generation = 1
	case f.Version == 2 && f.Generation > 0:
	case f.Version > shareFileVersion:
		return nil, fmt.Errorf("OPRF share file %s: version %d, this vault reads 1 to %d (a newer ceremony wrote it?)", path, f.Version, shareFileVersion)
	default:
		return nil, fmt.Errorf("OPRF share file %s: version %d with generation %d", path, f.Version, f.Generation)
	}
	m, err := toprf.NewMembership(f.Indices, f.Threshold)
	if err != nil {
		return nil, fmt.Errorf("OPRF share file %s: %w", path, err)
	}
	if m.Threshold != toprf.DefaultThreshold(len(m.Indices)) {
		return nil, fmt.Errorf("OPRF share file %s: threshold %d of %d; a Coffer fleet's is a majority, %d", path, m.Threshold, len(m.Indices), toprf.DefaultThreshold(len(m.Indices)))
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
	return &ShareSet{Generation: f.Generation, ReplicaSeeds: rs}, nil
}

// membershipOf is the membership a record's public shares were made
// under: their indices, with a majority threshold (DealGeneration's).
func membershipOf(public toprf.PublicShares) (toprf.Membership, error) {
	idx := make([]uint16, 0, len(public))
	for i := range public {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	return toprf.NewMembership(idx, toprf.DefaultThreshold(len(idx)))
}

// threshold is the leader's and the evaluator's side of the threshold OPRF.
type threshold struct {
	s      *Server
	gens   map[uint32]*toprf.ReplicaSeeds // this replica's share generations
	newest uint32                         // the generation registrations use
	index  uint16                         // this replica's index (the same in every generation)
	hc     *http.Client
	next   atomic.Uint32 // rotates the peers a login asks first
}

// newThreshold checks a replica's share generations: each valid, no
// generation twice, one index in all.
func newThreshold(s *Server, sets []*ShareSet, hc *http.Client) (*threshold, error) {
	t := &threshold{s: s, gens: map[uint32]*toprf.ReplicaSeeds{}, hc: hc}
	for _, set := range sets {
		if err := set.Validate(); err != nil {
			return nil, fmt.Errorf("generation %d: %w", set.Generation, err)
		}
		if t.gens[set.Generation] != nil {
			return nil, fmt.Errorf("two share files of generation %d", set.Generation)
		}
		if len(t.gens) > 0 && set.Index != t.index {
			return nil, fmt.Errorf("shares of index %d and %d: a replica keeps its index across generations", t.index, set.Index)
		}
		t.gens[set.Generation], t.index = set.ReplicaSeeds, set.Index
		t.newest = max(t.newest, set.Generation)
	}
	return t, nil
}

// seeds returns this replica's shares of generation gen (0: 1).
func (t *threshold) seeds(gen uint32) (*toprf.ReplicaSeeds, error) {
	if gen == 0 {
		gen = 1
	}
	if rs := t.gens[gen]; rs != nil {
		return rs, nil
	}
	return nil, fmt.Errorf("this replica holds no OPRF shares of generation %d", gen)
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
// budget), under the record's own share generation and correction; or the
// reserved registration of that epoch, element and generation. A "public"
// request returns only the public share.
func (t *threshold) evaluate(ctx context.Context, req *evalRequest, own bool) (*evalResponse, error) {
	if req.Kind == evalReshare {
		return t.evaluateReshare(ctx, req, own)
	}
	gen := max(req.Gen, 1)
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
			return acc.Live() && acc.Epoch == req.Epoch && acc.Record.ShareGen == gen && p != nil && p.ID == loginID && p.Blinded == blinded &&
				time.Now().UnixMilli() < p.Expiry+vaultstate.MaxClockStep.Milliseconds()
		case evalRegister:
			return acc.Reserved == req.Epoch && acc.Epoch < req.Epoch && acc.ReservedBlinded == blinded && acc.ReservedGen == gen
		case evalPublic:
			return acc.Reserved >= req.Epoch
		}
		return false
	}
	deadline := time.Now().Add(evalWait)
	var acc *vaultstate.Account
	for {
		var err error
		acc, err = t.s.cfg.Replica.Lookup(rid)
		if err != nil {
			return nil, errors.New("this replica cannot read its state")
		}
		if acc != nil && ok(acc) {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("this replica has not applied an entry that authorizes a %s evaluation of generation %d for this account", req.Kind, gen)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	seeds, err := t.seeds(gen)
	if err != nil {
		return nil, err
	}
	var offset []byte
	if req.Kind == evalLogin {
		offset = acc.Record.Offset
		if len(acc.Record.CredID) > 0 {
			credID = acc.Record.CredID
		}
	}
	share, err := seeds.Share(credID, offset)
	if err != nil {
		return nil, err
	}
	defer share.Zero()
	out := &evalResponse{Index: seeds.Index, Public: share.Public()}
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
	if req.Kind == evalReshare {
		if err := t.reshareCaller(r); err != nil {
			w.WriteHeader(http.StatusForbidden)
			json.NewEncoder(w).Encode(evalResponse{Error: err.Error()})
			return
		}
	}
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
func (t *threshold) gather(ctx context.Context, m toprf.Membership, req *evalRequest, public toprf.PublicShares, all bool) (own *toprf.Partial, partials []toprf.Partial, publics toprf.PublicShares) {
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
//
// The membership is the record's (its public shares' indices) for a
// login, and this replica's generation req.Gen's for a registration.
func (t *threshold) combine(ctx context.Context, req *evalRequest, public toprf.PublicShares) (evaluated []byte, all toprf.PublicShares, err error) {
	var m toprf.Membership
	if public != nil {
		m, err = membershipOf(public)
	} else {
		var seeds *toprf.ReplicaSeeds
		if seeds, err = t.seeds(req.Gen); err == nil {
			m = seeds.Membership
		}
	}
	if err != nil {
		return nil, nil, err
	}
	for try := 0; try < 2; try++ {
		own, partials, publics := t.gather(ctx, m, req, public, try > 0)
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

// publicShares gathers and checks the public shares of generation gen of
// account's record of epoch, for its Register entry.
func (t *threshold) publicShares(ctx context.Context, account string, epoch uint64, gen uint32) ([]byte, error) {
	seeds, err := t.seeds(gen)
	if err != nil {
		return nil, err
	}
	_, _, publics := t.gather(ctx, seeds.Membership, &evalRequest{Kind: evalPublic, Account: account, Epoch: epoch, Gen: gen}, nil, true)
	all, _, err := toprf.CheckPublicShares(seeds.Membership, publics)
	if err != nil {
		return nil, err
	}
	return encodePublicShares(all), nil
}
