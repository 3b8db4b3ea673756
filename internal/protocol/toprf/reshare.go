package toprf

import (
	"fmt"
	"slices"

	"github.com/bytemare/ecc"
)

// Resharing on a membership change (join, replace, remove).
//
// The ceremony deals fresh seeds for the new membership M' (Deal), which
// define for every account c a new, independent pseudorandom polynomial F'
// with F'(0) = k'_c. To keep the account's key k_c (so its record and the
// client's envelope stay valid), each account gets a public correction
//
//	o' = k_c − k'_c
//
// and the new effective share of replica i is k'_{c,i} + o' (Share with
// offset o'). This works because Lagrange coefficients at 0 sum to 1 for any
// set of t' points, so Σ λ_i·(F'(i) + o') = F'(0) + o' = k_c: adding a public
// constant to every share adds it to the secret.
//
// o' is computed without anyone learning k_c or k'_c: each replica i that
// is in both memberships computes locally
//
//	d_i = k_{c,i} − k'_{c,i}  (its old effective share minus its new raw share)
//
// which is D(i) for the polynomial D = F_eff − F' of degree max(t, t')−1;
// any max(t, t') of the d_i interpolate D(0) = k_c − k'_c = o'. Each d_i is
// checked against public values, d_i·G = K_{c,i} − K'_{c,i} (old stored
// public share minus the new one), so a wrong d_i is named, and the result
// is checked against the account key: K'_c + o'·G = K_c.
//
// What o' reveals: nothing about k_c to anyone with fewer than t' new
// shares, since k'_c is pseudorandom to them and o' = k_c − k'_c is then a
// one-time pad. The d_i themselves reveal the whole polynomial D, so they
// travel sealed to the combiner and are discarded after; see PROTOCOL.md
// (version 2, "Resharing") for the resulting bound.
//
// Old seeds must be erased by every replica once the corrections are
// committed: an old share combines only with other old shares.

// Delta is a replica's d_i for one account and one reshare. It is secret
// (sealed to the combiner).
type Delta struct {
	Index uint16
	d     *ecc.Scalar
}

// Zero overwrites the delta.
func (d *Delta) Zero() {
	if d != nil && d.d != nil {
		d.d.Zero()
	}
}

// Encode returns the delta's scalar (for sealing to the combiner).
func (d *Delta) Encode() []byte { return d.d.Encode() }

// DecodeDelta is the inverse of Encode.
func DecodeDelta(index uint16, b []byte) (*Delta, error) {
	s, err := decodeScalar(b)
	if err != nil {
		return nil, err
	}
	return &Delta{Index: index, d: s}, nil
}

// ReshareDelta computes d_i = old − new for one replica: old is its
// effective share under the old seeds (Share with the account's current
// offset), new its share under the new seeds with no offset (Share with
// nil). Both must have the same index.
func ReshareDelta(old, new *KeyShare) (*Delta, error) {
	if old.Index != new.Index {
		return nil, fmt.Errorf("%w: old share of replica %d, new share of replica %d", ErrMembership, old.Index, new.Index)
	}
	return &Delta{Index: old.Index, d: old.k.Copy().Subtract(new.k)}, nil
}

// CombineCorrection computes an account's new offset o' = k_c − k'_c from
// the deltas of replicas in both memberships. oldPublic are the account's
// public shares on record (effective, under the old membership), newPublic
// the new raw public shares K'_{c,i} (each new replica's Share(credID,
// nil).Public(), checked with CheckPublicShares on the new membership), and
// accountKey is K_c. Each delta is checked against d_i·G = K_{c,i} −
// K'_{c,i}; refused ones are reported in faults. At least max(t, t') valid
// deltas are needed. The result is checked: K'_c + o'·G must equal K_c.
// It returns o' (ScalarSize bytes, public) and the account's new effective
// public shares K'_{c,i} + o'·G to store with the record.
func CombineCorrection(oldM, newM Membership, oldPublic, newPublic PublicShares, accountKey []byte, deltas []*Delta) (offset []byte, public PublicShares, faults []Fault, err error) {
	if err := oldM.Validate(); err != nil {
		return nil, nil, nil, err
	}
	if err := newM.Validate(); err != nil {
		return nil, nil, nil, err
	}
	kc, err := decodeElement(accountKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w (account key)", err)
	}
	allNew, newKey, err := CheckPublicShares(newM, newPublic)
	if err != nil {
		return nil, nil, nil, err
	}
	need := max(oldM.Threshold, newM.Threshold)
	count := map[uint16]int{}
	for _, d := range deltas {
		count[d.Index]++
	}
	valid := map[uint16]*ecc.Scalar{}
	for _, d := range deltas {
		switch {
		case !oldM.Has(d.Index) || !newM.Has(d.Index):
			faults = append(faults, Fault{d.Index, "not in both memberships"})
			continue
		case count[d.Index] > 1:
			faults = append(faults, Fault{d.Index, "more than one delta"})
			continue
		}
		ko, err1 := decodeElement(oldPublic[d.Index])
		kn, err2 := decodeElement(allNew[d.Index])
		if err1 != nil || err2 != nil {
			faults = append(faults, Fault{d.Index, "public share missing or malformed"})
			continue
		}
		if !group.Base().Multiply(d.d).Equal(ko.Subtract(kn)) {
			faults = append(faults, Fault{d.Index, "delta does not match the public shares"})
			continue
		}
		valid[d.Index] = d.d
	}
	if len(valid) < need {
		return nil, nil, faults, notEnough(len(valid), need, faults)
	}
	idx := make([]uint16, 0, len(valid))
	for i := range valid {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	idx = idx[:need]
	vals := make([]*ecc.Scalar, need)
	for k, i := range idx {
		vals[k] = valid[i]
	}
	o := interpolateScalars(idx, vals, 0)
	nk, _ := decodeElement(newKey)
	if !nk.Add(group.Base().Multiply(o)).Equal(kc) {
		return nil, nil, faults, fmt.Errorf("%w: the correction does not carry the account key over", ErrInconsistent)
	}
	oG := group.Base().Multiply(o)
	public = make(PublicShares, len(allNew))
	for i, b := range allNew {
		e, _ := decodeElement(b)
		public[i] = e.Add(oG).Encode()
	}
	return o.Encode(), public, faults, nil
}
