package toprf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/bytemare/ecc"
)

// Partial is one replica's partial evaluation Z_i = k_{c,i}·B of a blinded
// element B, with an RFC 9497 DLEQ proof that log_G(K_{c,i}) = log_B(Z_i),
// K_{c,i} being the replica's public share for the account.
type Partial struct {
	Index     uint16
	Evaluated []byte // ElementSize bytes
	Proof     []byte // ProofSize bytes
}

// Encode returns uint16be(Index) ‖ Evaluated ‖ Proof (PartialSize bytes).
func (p Partial) Encode() []byte {
	b := binary.BigEndian.AppendUint16(make([]byte, 0, PartialSize), p.Index)
	b = append(b, p.Evaluated...)
	return append(b, p.Proof...)
}

// DecodePartial is the inverse of Encode. It checks sizes only: Combine
// and VerifyPartial check the contents.
func DecodePartial(b []byte) (Partial, error) {
	if len(b) != PartialSize {
		return Partial{}, fmt.Errorf("%w: partial is %d bytes, want %d", ErrMalformed, len(b), PartialSize)
	}
	return Partial{
		Index:     binary.BigEndian.Uint16(b),
		Evaluated: slices.Clone(b[2 : 2+ElementSize]),
		Proof:     slices.Clone(b[2+ElementSize:]),
	}, nil
}

// Evaluate computes the partial evaluation of blinded (an encoded
// ristretto255 element, the client's RFC 9497 blinded element) under the
// share, with a fresh DLEQ proof (RFC 9497 §2.2.1, one element, A = G,
// B = K_{c,i}, C = [blinded], D = [Z_i]).
func (s *KeyShare) Evaluate(blinded []byte) (Partial, error) {
	r := group.NewScalar().Random()
	defer r.Zero()
	return s.evaluate(blinded, r)
}

func (s *KeyShare) evaluate(blinded []byte, r *ecc.Scalar) (Partial, error) {
	b, err := decodeElement(blinded)
	if err != nil {
		return Partial{}, fmt.Errorf("%w (blinded element)", err)
	}
	z := b.Copy().Multiply(s.k)
	pub := group.Base().Multiply(s.k)
	proof := generateProof(contextString, s.k, group.Base(), pub, []*ecc.Element{b}, []*ecc.Element{z}, r)
	return Partial{Index: s.Index, Evaluated: z.Encode(), Proof: proof}, nil
}

// VerifyPartial checks p's DLEQ proof against the replica's public share
// (RFC 9497 §2.2.2) for the blinded element.
func VerifyPartial(publicShare, blinded []byte, p Partial) error {
	k, err := decodeElement(publicShare)
	if err != nil {
		return fmt.Errorf("%w (public share)", err)
	}
	b, err := decodeElement(blinded)
	if err != nil {
		return fmt.Errorf("%w (blinded element)", err)
	}
	_, err = verifyPartial(k, b, p)
	return err
}

func verifyPartial(k, b *ecc.Element, p Partial) (*ecc.Element, error) {
	z, err := decodeElement(p.Evaluated)
	if err != nil {
		return nil, fmt.Errorf("%w (evaluation)", err)
	}
	if err := verifyProof(contextString, group.Base(), k, []*ecc.Element{b}, []*ecc.Element{z}, p.Proof); err != nil {
		return nil, err
	}
	return z, nil
}

// PublicShares are an account's public shares K_{c,i}, by replica index,
// stored with the record (CheckPublicShares makes them).
type PublicShares map[uint16][]byte

// CheckPublicShares checks that the public shares given (by replica index,
// at least t of them, all members of m) lie on one polynomial of degree t−1
// in the exponent: the first t (by index) interpolate F(x)·G, and every
// other given share must equal it at its index. It returns the shares of
// all n members (those not given are interpolated) and the account's
// public key K_c = F(0)·G. Used at registration, where every replica
// reports its share: with all n given and n > t, any replica whose share
// disagrees is named in the error (the majority polynomial is found by
// trying the t-subsets). With exactly t given nothing can be cross-checked;
// the vault should gather all n.
func CheckPublicShares(m Membership, given PublicShares) (all PublicShares, accountKey []byte, err error) {
	if err := m.Validate(); err != nil {
		return nil, nil, err
	}
	idx := make([]uint16, 0, len(given))
	elems := make(map[uint16]*ecc.Element, len(given))
	for i, b := range given {
		if !m.Has(i) {
			return nil, nil, Fault{Index: i, Reason: "not a member"}
		}
		e, err := decodeElement(b)
		if err != nil {
			return nil, nil, fmt.Errorf("replica %d: %w", i, err)
		}
		idx = append(idx, i)
		elems[i] = e
	}
	slices.Sort(idx)
	t := m.Threshold
	if len(idx) < t {
		return nil, nil, fmt.Errorf("%w: %d public shares, need %d", ErrNotEnough, len(idx), t)
	}
	// fit interpolates over base and returns the indices of given shares
	// that disagree.
	fit := func(base []uint16) []uint16 {
		vals := make([]*ecc.Element, len(base))
		for k, i := range base {
			vals[k] = elems[i]
		}
		var bad []uint16
		for _, j := range idx {
			if slices.Contains(base, j) {
				continue
			}
			if !interpolateElements(base, vals, j).Equal(elems[j]) {
				bad = append(bad, j)
			}
		}
		return bad
	}
	base := idx[:t]
	if bad := fit(base); len(bad) > 0 {
		// Find the t-subset that the most shares agree with (a brute-force
		// Reed–Solomon decoding; n ≤ MaxMembers and in practice n ≤ 7).
		best := bad
		for _, sub := range subsets(idx, t) {
			if b := fit(sub); len(b) < len(best) {
				best = b
			}
		}
		var parts []string
		for _, j := range best {
			parts = append(parts, fmt.Sprint(j))
		}
		if len(best) < len(bad) || len(idx)-len(best) > t {
			return nil, nil, fmt.Errorf("%w: replicas %s disagree with the others", ErrInconsistent, strings.Join(parts, ", "))
		}
		return nil, nil, fmt.Errorf("%w: no polynomial of degree %d fits more than %d of them", ErrInconsistent, t-1, t)
	}
	vals := make([]*ecc.Element, t)
	for k, i := range base {
		vals[k] = elems[i]
	}
	all = make(PublicShares, len(m.Indices))
	for _, j := range m.Indices {
		if e, ok := elems[j]; ok {
			all[j] = e.Encode()
		} else {
			all[j] = interpolateElements(base, vals, j).Encode()
		}
	}
	return all, interpolateElements(base, vals, 0).Encode(), nil
}

// subsets returns every subset of size k of s (in order).
func subsets(s []uint16, k int) [][]uint16 {
	var out [][]uint16
	var rec func(start int, cur []uint16)
	rec = func(start int, cur []uint16) {
		if len(cur) == k {
			out = append(out, slices.Clone(cur))
			return
		}
		for i := start; i < len(s); i++ {
			rec(i+1, append(cur, s[i]))
		}
	}
	rec(0, nil)
	return out
}

// Combine verifies the partial evaluations of blinded against the account's
// public shares and, given at least t valid ones, returns the evaluation
// Z = Σ λ_i·Z_i over the first t valid partials by index (Lagrange at 0 in
// the exponent, TOPPSS/2HashTDH). A partial from a non-member, a second
// partial from the same replica (both are refused), or one whose proof does
// not verify is reported in faults and left out; err is nil as long as t
// valid partials remain, and otherwise wraps ErrNotEnough and names the
// faults. Since every valid partial is proven against a public share and
// the public shares lie on one polynomial (CheckPublicShares), any t valid
// partials give the same Z.
func Combine(m Membership, public PublicShares, blinded []byte, partials []Partial) (evaluated []byte, faults []Fault, err error) {
	return combine(m, public, blinded, nil, partials)
}

// CombineOwn is Combine where own is the caller's own partial, computed
// with its own KeyShare (EvaluateOwn, no proof) and so not verified: the
// leader need not prove its own evaluation to itself. The other partials
// are verified as in Combine. own's public share on record must be the
// caller's own (KeyShare.Public): the caller checks it.
func CombineOwn(m Membership, public PublicShares, blinded []byte, own Partial, partials []Partial) (evaluated []byte, faults []Fault, err error) {
	return combine(m, public, blinded, &own, partials)
}

// EvaluateOwn is Evaluate without the proof, for CombineOwn only: the
// caller's own partial, which nobody else sees.
func (s *KeyShare) EvaluateOwn(blinded []byte) (Partial, error) {
	b, err := decodeElement(blinded)
	if err != nil {
		return Partial{}, fmt.Errorf("%w (blinded element)", err)
	}
	return Partial{Index: s.Index, Evaluated: b.Multiply(s.k).Encode()}, nil
}

func combine(m Membership, public PublicShares, blinded []byte, own *Partial, partials []Partial) (evaluated []byte, faults []Fault, err error) {
	if err := m.Validate(); err != nil {
		return nil, nil, err
	}
	b, err := decodeElement(blinded)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (blinded element)", err)
	}
	count := make(map[uint16]int, len(partials)+1)
	for _, p := range partials {
		count[p.Index]++
	}
	valid := make(map[uint16]*ecc.Element, len(partials)+1)
	if own != nil {
		if !m.Has(own.Index) || count[own.Index] > 0 {
			return nil, nil, fmt.Errorf("%w: the caller's own partial is not a member's, or another partial has its index", ErrMembership)
		}
		z, err := decodeElement(own.Evaluated)
		if err != nil {
			return nil, nil, fmt.Errorf("%w (own partial)", err)
		}
		valid[own.Index] = z
	}
	for _, p := range partials {
		switch {
		case !m.Has(p.Index):
			faults = append(faults, Fault{p.Index, "not a member"})
			continue
		case count[p.Index] > 1:
			faults = append(faults, Fault{p.Index, "more than one partial"})
			continue
		}
		pub, ok := public[p.Index]
		if !ok {
			faults = append(faults, Fault{p.Index, "no public share on record"})
			continue
		}
		k, err := decodeElement(pub)
		if err != nil {
			faults = append(faults, Fault{p.Index, "public share on record does not decode"})
			continue
		}
		z, err := verifyPartial(k, b, p)
		if err != nil {
			reason := "proof does not verify"
			if errors.Is(err, ErrMalformed) {
				reason = "malformed partial"
			}
			faults = append(faults, Fault{p.Index, reason})
			continue
		}
		valid[p.Index] = z
	}
	if len(valid) < m.Threshold {
		return nil, faults, notEnough(len(valid), m.Threshold, faults)
	}
	idx := make([]uint16, 0, len(valid))
	for i := range valid {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	idx = idx[:m.Threshold]
	vals := make([]*ecc.Element, len(idx))
	for k, i := range idx {
		vals[k] = valid[i]
	}
	z := interpolateElements(idx, vals, 0)
	if z.IsIdentity() {
		return nil, faults, fmt.Errorf("%w: combined evaluation is the identity", ErrInconsistent)
	}
	return z.Encode(), faults, nil
}

func notEnough(have, need int, faults []Fault) error {
	var parts []string
	for _, f := range faults {
		parts = append(parts, f.Error())
	}
	msg := fmt.Sprintf("%d valid, need %d", have, need)
	if len(parts) > 0 {
		msg += "; " + strings.Join(parts, "; ")
	}
	return fmt.Errorf("%w: %s", ErrNotEnough, msg)
}
