package toprf

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"github.com/bytemare/ecc"
)

// SetSeed is one PRSS seed s_A and the set A of members that hold it: a set
// of n−t+1 members, the complement of a maximal unqualified set (t−1
// members) of the membership (Cramer, Damgård, Ishai, TCC 2005, §3).
type SetSeed struct {
	Set  []uint16 // sorted
	Seed []byte   // SeedSize bytes, secret
}

// ReplicaSeeds is what the ceremony gives replica Index: the membership and
// the seeds of every set containing Index, C(n−1, t−1) of them. It is the
// replica's whole OPRF secret; no account's key is stored anywhere.
type ReplicaSeeds struct {
	Membership Membership
	Index      uint16
	Seeds      []SetSeed
}

// Zero overwrites the seeds.
func (r *ReplicaSeeds) Zero() {
	if r == nil {
		return
	}
	for i := range r.Seeds {
		clear(r.Seeds[i].Seed)
	}
}

// Sets returns every set A of n−t+1 members of m, in a fixed order
// (lexicographic in the complement): there are C(n, t−1).
func (m Membership) Sets() [][]uint16 {
	n, t := len(m.Indices), m.Threshold
	var out [][]uint16
	// Enumerate complements of size t−1 by their positions.
	comb := make([]int, t-1)
	for i := range comb {
		comb[i] = i
	}
	for {
		excluded := make(map[uint16]bool, t-1)
		for _, p := range comb {
			excluded[m.Indices[p]] = true
		}
		set := make([]uint16, 0, n-t+1)
		for _, x := range m.Indices {
			if !excluded[x] {
				set = append(set, x)
			}
		}
		out = append(out, set)
		// Next combination.
		k := len(comb) - 1
		for k >= 0 && comb[k] == n-(t-1)+k {
			k--
		}
		if k < 0 {
			return out
		}
		comb[k]++
		for j := k + 1; j < len(comb); j++ {
			comb[j] = comb[j-1] + 1
		}
	}
}

// Deal is the key ceremony (the only dealer, offline): for every set A of
// n−t+1 members it draws a seed s_A from rand and gives it to each member
// of A. It returns one ReplicaSeeds per member, in index order. Redealing
// for a new membership (join, replace, remove) is the same call; the
// accounts' keys are then carried over by the corrections of reshare.go.
func Deal(m Membership, rand io.Reader) ([]*ReplicaSeeds, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	out := make([]*ReplicaSeeds, len(m.Indices))
	pos := make(map[uint16]int, len(m.Indices))
	for k, x := range m.Indices {
		out[k] = &ReplicaSeeds{Membership: Membership{Indices: slices.Clone(m.Indices), Threshold: m.Threshold}, Index: x}
		pos[x] = k
	}
	for _, set := range m.Sets() {
		seed := make([]byte, SeedSize)
		if _, err := io.ReadFull(rand, seed); err != nil {
			return nil, fmt.Errorf("toprf: ceremony randomness: %w", err)
		}
		for _, x := range set {
			out[pos[x]].Seeds = append(out[pos[x]].Seeds, SetSeed{Set: slices.Clone(set), Seed: slices.Clone(seed)})
		}
		clear(seed)
	}
	return out, nil
}

// Validate checks that r holds exactly the seeds of the sets of its
// membership that contain its index.
func (r *ReplicaSeeds) Validate() error {
	if err := r.Membership.Validate(); err != nil {
		return err
	}
	if !r.Membership.Has(r.Index) {
		return fmt.Errorf("%w: index %d is not a member", ErrMembership, r.Index)
	}
	var want [][]uint16
	for _, set := range r.Membership.Sets() {
		if slices.Contains(set, r.Index) {
			want = append(want, set)
		}
	}
	if len(want) != len(r.Seeds) {
		return fmt.Errorf("%w: replica %d holds %d seeds, want %d", ErrMembership, r.Index, len(r.Seeds), len(want))
	}
	for k, s := range r.Seeds {
		if !slices.Equal(s.Set, want[k]) || len(s.Seed) != SeedSize {
			return fmt.Errorf("%w: replica %d: seed %d is for the wrong set or has the wrong size", ErrMembership, r.Index, k)
		}
	}
	return nil
}

// prf is the PRSS pseudorandom function: a ristretto255 scalar derived from
// seed s_A and the credential identifier c by RFC 9380 hash_to_field
// (expand_message_xmd with SHA-512, 64 bytes reduced mod ℓ — RFC 9497
// §4.1's HashToScalar for ristretto255-SHA512) under Coffer's own DST:
//
//	PRF(s, c) = HashToScalar(I2OSP(len(s), 2) ‖ s ‖ I2OSP(len(c), 2) ‖ c,
//	                         DST = prfDST)
//
// A random oracle keyed by a secret 256-bit seed is a PRF; the length
// prefixes make the input encoding injective.
func prf(seed, credID []byte) *ecc.Scalar {
	in := make([]byte, 0, 4+len(seed)+len(credID))
	in = binary.BigEndian.AppendUint16(in, uint16(len(seed)))
	in = append(in, seed...)
	in = binary.BigEndian.AppendUint16(in, uint16(len(credID)))
	in = append(in, credID...)
	s := group.HashToScalar(in, []byte(prfDST))
	clear(in)
	return s
}

// basisAt returns f_A(x), the unique polynomial of degree t−1 with
// f_A(0) = 1 and f_A(j) = 0 for every member j ∉ A (the t−1 members outside
// A): f_A(x) = Π_{j∉A} (j − x)/j.
func basisAt(m Membership, set []uint16, x uint16) *ecc.Scalar {
	return cached(coefficientKey('B', x, m.Indices, set), func() *ecc.Scalar { return basis(m, set, x) })
}

func basis(m Membership, set []uint16, x uint16) *ecc.Scalar {
	acc := group.NewScalar().One()
	xs := scalarOf(x)
	for _, j := range m.Indices {
		if slices.Contains(set, j) {
			continue
		}
		js := scalarOf(j)
		acc.Multiply(js.Copy().Subtract(xs)).Multiply(js.Copy().Invert())
	}
	return acc
}

// MaxCredentialIDSize bounds a credential identifier.
const MaxCredentialIDSize = 1 << 12

// Share derives replica r's share of account credID's OPRF key (CDI05 §3):
//
//	k_{c,i} = Σ_{A∋i} PRF(s_A, c)·f_A(i) + offset
//
// The shares of all members lie on F(x) = Σ_A PRF(s_A, c)·f_A(x) (+ offset),
// a polynomial of degree t−1 whose value at 0 is the account key
// k_c = Σ_A PRF(s_A, c) (+ offset). offset is the account's public
// correction from resharing (nil or all zero before the first reshare; see
// reshare.go): adding the same constant to every share adds it to the secret,
// because Lagrange coefficients at 0 sum to 1.
func (r *ReplicaSeeds) Share(credID, offset []byte) (*KeyShare, error) {
	if len(credID) == 0 || len(credID) > MaxCredentialIDSize {
		return nil, fmt.Errorf("%w: credential identifier of %d bytes", ErrMalformed, len(credID))
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	k := group.NewScalar()
	for _, s := range r.Seeds {
		v := prf(s.Seed, credID)
		k.Add(v.Multiply(basisAt(r.Membership, s.Set, r.Index)))
		v.Zero()
	}
	if offset != nil {
		o, err := decodeScalar(offset)
		if err != nil {
			k.Zero()
			return nil, fmt.Errorf("%w: offset", err)
		}
		k.Add(o)
	}
	return &KeyShare{Index: r.Index, k: k}, nil
}

// KeyShare is one replica's share k_{c,i} of one account's OPRF key. It is
// secret; Zero it after use.
type KeyShare struct {
	Index uint16
	k     *ecc.Scalar
}

// Zero overwrites the share.
func (s *KeyShare) Zero() {
	if s != nil && s.k != nil {
		s.k.Zero()
	}
}

// Public returns the public share K_{c,i} = k_{c,i}·G.
func (s *KeyShare) Public() []byte { return group.Base().Multiply(s.k).Encode() }

// Encode returns the share's scalar (secret: for test vectors and sealed
// storage only).
func (s *KeyShare) Encode() []byte { return s.k.Encode() }

// DecodeKeyShare is the inverse of Encode.
func DecodeKeyShare(index uint16, b []byte) (*KeyShare, error) {
	k, err := decodeScalar(b)
	if err != nil {
		return nil, err
	}
	return &KeyShare{Index: index, k: k}, nil
}
