package vault

// Resharing (PROTOCOL.md §7, "Resharing on membership change"): after a
// replica joins, is replaced or is removed, the offline ceremony deals a
// new generation of OPRF shares for the new membership
// (DealGeneration), each replica of it is restarted holding its new share
// file (and, if it was a member before, its current one), and the operator
// runs the reshare (POST /admin/reshare, 'coffer vault reshare'). The
// leader then walks every record: each replica in both memberships sends it
// d_i = k_{c,i} − k'_{c,i} (its current effective share minus its new raw
// share) with its new public share K'_{c,i}, every new member sends its
// K'_{c,i}, and the leader combines the record's new public correction
// (toprf.CombineCorrection: each d_i checked against the public shares,
// the result against the account key) and commits it in a Reshare entry.
// The account key, the OPAQUE record and the guess count stay as they were;
// the client notices nothing. Once every record is at the new generation,
// the replicas are restarted without their old share files, which the
// operator deletes: an old share then combines with nothing (the records'
// public shares are the new ones, and the old polynomial is another).
//
// The d_i are secret (together they give the difference of the two
// polynomials, which turns a removed replica's old share into a point of
// the new one), so a replica sends them only to the replica it sees as
// the Raft leader, over the fleet's mutual TLS, and the leader discards
// them after each record: PROTOCOL.md counts the leader of a reshare as
// one of the t−1 replicas an attacker may hold.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/cofferhq/coffer/internal/protocol/toprf"
	"github.com/cofferhq/coffer/internal/server/fleetca"
	"github.com/cofferhq/coffer/internal/server/vaultstate"
)

// ReshareRequest is POST /admin/reshare.
type ReshareRequest struct {
	// Generation is the share generation to move every record to: one
	// the leader holds (its newest, normally).
	Generation uint32 `json:"generation"`
}

// ReshareReport is what a reshare did, record by record.
type ReshareReport struct {
	Generation uint32 `json:"generation"`
	// Moved records are now at Generation; Already were before.
	Moved   int `json:"moved"`
	Already int `json:"already"`
	// Unmovable are threshold records from before records kept their
	// credential id; they move by re-enrolment at their next login.
	Unmovable int `json:"unmovable"`
	// Version1 are records of the fleet's OPRF seed (no shares).
	Version1 int `json:"version1"`
	// Failed records are still at their old generation (Errors has the
	// first few reasons); run the reshare again.
	Failed int      `json:"failed"`
	Errors []string `json:"errors,omitempty"`
	// Done: every threshold record that can move is at Generation, so
	// the replicas may drop their older share files.
	Done bool `json:"done"`
}

// reshareCaller checks that a reshare request comes from the replica
// this one sees as the Raft leader: only the leader of a reshare sees the
// d_i. A fleet without TLS (development) cannot tell callers apart.
func (t *threshold) reshareCaller(r *http.Request) error {
	if r.TLS == nil {
		return nil
	}
	if len(r.TLS.PeerCertificates) == 0 {
		return errors.New("a reshare delta needs the leader's replica certificate")
	}
	_, name := fleetca.Identity(r.TLS.PeerCertificates[0])
	if leader, _ := t.s.cfg.Replica.Leader(); leader == "" || name != leader {
		return fmt.Errorf("reshare deltas go to the Raft leader only, and replica %q is not the leader this replica follows", name)
	}
	return nil
}

// evaluateReshare is a replica's part of a reshare of one record: its new
// public share of generation req.Gen, and if it holds the record's current
// generation too, its delta. It answers only for a live record at the
// epoch named that can move (a credential id, a generation below req.Gen).
func (t *threshold) evaluateReshare(ctx context.Context, req *evalRequest, own bool) (*evalResponse, error) {
	raw, err := hex.DecodeString(req.Record)
	var id vaultstate.RecordID
	if err != nil || len(raw) != len(id) {
		return nil, errors.New("malformed record id")
	}
	copy(id[:], raw)
	newSeeds, err := t.seeds(req.Gen)
	if err != nil {
		return nil, err
	}
	var acc *vaultstate.Account
	deadline := time.Now().Add(evalWait)
	for {
		if acc, err = t.s.cfg.Replica.Lookup(id); err != nil {
			return nil, errors.New("this replica cannot read its state")
		}
		if acc != nil && acc.Live() && acc.Epoch == req.Epoch {
			break
		}
		if time.Now().After(deadline) {
			return nil, errors.New("this replica has no live record of that epoch")
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	r := acc.Record
	if !r.Reshareable() || r.ShareGen >= req.Gen {
		return nil, fmt.Errorf("the record cannot move to generation %d (generation %d, credential id kept: %v)", req.Gen, r.ShareGen, len(r.CredID) > 0)
	}
	fresh, err := newSeeds.Share(r.CredID, nil)
	if err != nil {
		return nil, err
	}
	defer fresh.Zero()
	out := &evalResponse{Index: newSeeds.Index, Public: fresh.Public()}
	if oldSeeds := t.gens[r.ShareGen]; oldSeeds != nil {
		old, err := oldSeeds.Share(r.CredID, r.Offset)
		if err != nil {
			return nil, err
		}
		defer old.Zero()
		d, err := toprf.ReshareDelta(old, fresh)
		if err != nil {
			return nil, err
		}
		out.Delta = d.Encode()
		d.Zero()
	}
	return out, nil
}

// collectReshare asks this replica and every peer for their part of a
// reshare of one record and waits for all of them (or the timeout).
func (t *threshold) collectReshare(ctx context.Context, req *evalRequest) []*evalResponse {
	ctx, cancel := context.WithTimeout(ctx, evalWait+time.Second)
	defer cancel()
	peers := t.peers()
	out := make([]*evalResponse, 1+len(peers))
	var wg sync.WaitGroup
	wg.Go(func() {
		r, err := t.evaluateReshare(ctx, req, true)
		if err != nil {
			t.s.log.Debug("reshare: no part from this replica", "err", err)
		}
		out[0] = r
	})
	for i, p := range peers {
		wg.Go(func() {
			r, err := t.remote(ctx, p, req)
			if err != nil {
				t.s.log.Debug("reshare: no part from a peer", "peer", p, "err", err)
			}
			out[1+i] = r
		})
	}
	wg.Wait()
	return out
}

// reshareRecord moves one record to generation gen and commits it.
func (t *threshold) reshareRecord(ctx context.Context, id vaultstate.RecordID, acc *vaultstate.Account, gen uint32) (moved bool, err error) {
	newSeeds, err := t.seeds(gen)
	if err != nil {
		return false, err
	}
	oldPublic, err := DecodePublicShares(acc.Record.PublicShares)
	if err != nil {
		return false, err
	}
	oldM, err := membershipOf(oldPublic)
	if err != nil {
		return false, err
	}
	_, accountKey, err := toprf.CheckPublicShares(oldM, oldPublic)
	if err != nil {
		return false, fmt.Errorf("the record's public shares: %w", err)
	}
	newM := newSeeds.Membership
	answers := t.collectReshare(ctx, &evalRequest{Kind: evalReshare, Record: hex.EncodeToString(id[:]), Epoch: acc.Epoch, Gen: gen})
	newPublic := toprf.PublicShares{}
	var deltas []*toprf.Delta
	defer func() {
		for _, d := range deltas {
			d.Zero()
		}
	}()
	for _, a := range answers {
		if a == nil || !newM.Has(a.Index) || newPublic[a.Index] != nil {
			continue
		}
		newPublic[a.Index] = a.Public
		if a.Delta != nil && oldM.Has(a.Index) {
			d, err := toprf.DecodeDelta(a.Index, a.Delta)
			clear(a.Delta)
			if err != nil {
				t.s.log.Warn("reshare: a malformed delta; ignoring it", "index", a.Index)
				continue
			}
			deltas = append(deltas, d)
		}
	}
	offset, public, faults, err := toprf.CombineCorrection(oldM, newM, oldPublic, newPublic, accountKey, deltas)
	for _, f := range faults {
		t.s.log.Warn("reshare: refused a replica's part", "index", f.Index, "reason", f.Reason)
	}
	if err != nil {
		return false, fmt.Errorf("%w (%d of the new members answered, %d deltas)", err, len(newPublic), len(deltas))
	}
	op := &vaultstate.Reshare{Epoch: acc.Epoch, FromGen: acc.Record.ShareGen, ToGen: gen, PublicShares: encodePublicShares(public)}
	copy(op.Offset[:], offset)
	cmd := vaultstate.Command{Time: t.s.cfg.Now().UnixMilli(), RecordID: id, Op: op}
	rand.Read(cmd.RequestID[:])
	actx, cancel := context.WithTimeout(ctx, t.s.cfg.ApplyTimeout)
	res, err := t.s.cfg.Replica.Apply(actx, cmd)
	cancel()
	if err != nil {
		return false, fmt.Errorf("committing the reshare: %w", err)
	}
	if e, ok := res.(*vaultstate.Error); ok {
		return false, fmt.Errorf("the state machine refused the reshare: %s", e.Message)
	}
	return res.(*vaultstate.ReshareResult).Moved, nil
}

// reshare moves every record that can move to generation gen. Run on the
// leader; a record that fails (a login under way, too few replicas) is
// counted and the walk goes on, so running it again finishes the job.
func (t *threshold) reshare(ctx context.Context, gen uint32) (*ReshareReport, error) {
	if _, err := t.seeds(gen); err != nil {
		return nil, fmt.Errorf("%w: restart this leader with its share file of generation %d, or make a replica that has one the leader", err, gen)
	}
	if err := t.s.cfg.Replica.Barrier(ctx); err != nil {
		return nil, fmt.Errorf("reading the committed state: %w", err)
	}
	rep := &ReshareReport{Generation: gen}
	var after vaultstate.RecordID
	for {
		ids, err := t.s.cfg.Replica.RecordIDs(after, 256)
		if err != nil {
			return rep, err
		}
		if len(ids) == 0 {
			break
		}
		after = ids[len(ids)-1]
		for _, id := range ids {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			acc, err := t.s.cfg.Replica.Lookup(id)
			if err != nil {
				return rep, err
			}
			switch r := acc.Record; {
			case r == nil:
			case len(r.PublicShares) == 0:
				rep.Version1++
			case !r.Reshareable():
				rep.Unmovable++
			case r.ShareGen >= gen:
				rep.Already++
			default:
				moved, err := t.reshareRecord(ctx, id, acc, gen)
				switch {
				case err != nil:
					rep.Failed++
					if len(rep.Errors) < 5 {
						rep.Errors = append(rep.Errors, fmt.Sprintf("record %s: %v", id, err))
					}
				case moved:
					rep.Moved++
				default:
					rep.Already++
				}
			}
		}
	}
	rep.Done = rep.Failed == 0
	t.s.log.Info("reshare", "generation", gen, "moved", rep.Moved, "already", rep.Already, "unmovable", rep.Unmovable, "version1", rep.Version1, "failed", rep.Failed)
	return rep, nil
}
