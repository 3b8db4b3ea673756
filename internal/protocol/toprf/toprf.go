// Package toprf is Coffer's threshold OPRF over ristretto255 (PROTOCOL.md,
// "Version 2"): the OPRF key of every account is shared t-of-n
// across the vault fleet, so that no serving replica ever holds it and fewer
// than t replicas together learn nothing about it, while the fleet still
// answers an unmodified RFC 9807 client with one ordinary evaluation.
//
// Constructions, each cited where it is implemented:
//
//   - 2HashTDH / TOPPSS: Jarecki, Kiayias, Krawczyk, Xu, "TOPPSS: Cost-minimal
//     Password-Protected Secret Sharing based on Threshold OPRF", ACNS 2017
//     (ePrint 2017/363). The client's blinded element B = r·H(pw) is
//     evaluated by each replica i under its share, Z_i = k_i·B, and the
//     combiner interpolates Z = Σ λ_i·Z_i = k·B in the exponent. The
//     client's unblinding and final hash are RFC 9497's, unchanged.
//   - Per-account keys by pseudorandom secret sharing (PRSS): Cramer,
//     Damgård, Ishai, "Share Conversion, Pseudorandom Secret-Sharing and
//     Applications to Secure Computation", TCC 2005, §3 (replicated seeds
//     to Shamir shares). The ceremony deals one random seed per set A of
//     n−t+1 members to the members of A; replica i derives its Shamir share
//     of account c's key locally as k_{c,i} = Σ_{A∋i} PRF(s_A, c)·f_A(i).
//   - DLEQ proofs: RFC 9497 §2.2 (GenerateProof / VerifyProof,
//     Chaum–Pedersen with Fiat–Shamir), so the combiner can tell a wrong
//     partial evaluation from a right one and name the replica.
//   - Lagrange interpolation at 0 (Shamir, "How to share a secret", CACM
//     1979), in the scalar field and in the exponent.
//   - Resharing to a new membership with a public per-account correction
//     (reshare.go), in the spirit of proactive secret sharing (Herzberg,
//     Jarecki, Krawczyk, Yung, CRYPTO 1995) but with the new shares coming
//     from freshly dealt PRSS seeds.
//
// The package is pure computation over byte slices and scalars: no
// networking, no storage. Secret scalars are ristretto255 scalars of
// github.com/bytemare/ecc (constant-time arithmetic); every type holding one
// has a Zero method. Errors never contain secrets.
package toprf

import (
	"errors"
	"fmt"
	"slices"

	"github.com/bytemare/ecc"
)

// group is ristretto255 with SHA-512 hashing (RFC 9496, RFC 9380), the
// group of Coffer's OPRF (RFC 9497 ristretto255-SHA512).
const group = ecc.Ristretto255Sha512

// Domain separation. contextString plays RFC 9497 §3.1's role for Coffer's
// own uses of RFC 9497 machinery (the DLEQ proofs); the PRF has its own
// hash-to-scalar DST.
const (
	// contextString replaces RFC 9497's "OPRFV1-" || mode || "-" ||
	// identifier for the proofs between replicas and combiner: they are
	// internal to the fleet, so they get a DST no RFC 9497 deployment uses.
	contextString = "coffer-toprf-v2-ristretto255-SHA512"
	// prfDST is the hash-to-scalar DST of the PRSS pseudorandom function.
	prfDST = "coffer-toprf-v2-PRSS-HashToScalar-ristretto255-SHA512"
)

// Sizes in bytes.
const (
	ScalarSize  = 32 // an encoded ristretto255 scalar
	ElementSize = 32 // an encoded ristretto255 element
	SeedSize    = 32 // a PRSS seed
	ProofSize   = 2 * ScalarSize
	// PartialSize is an encoded Partial: uint16be index ‖ element ‖ proof.
	PartialSize = 2 + ElementSize + ProofSize
	// MaxMembers bounds n: the ceremony deals C(n, t−1) seeds and a replica
	// derives C(n−1, t−1) PRF values per account.
	MaxMembers = 16
)

var (
	// ErrMalformed is wrapped by every error about an encoding that does
	// not decode or is not a valid non-identity group element.
	ErrMalformed = errors.New("toprf: malformed input")
	// ErrMembership is wrapped by every error about a membership (indices,
	// threshold) that is invalid or does not fit the operation.
	ErrMembership = errors.New("toprf: invalid membership")
	// ErrNotEnough means fewer than t valid contributions were given; the
	// error lists the faults found.
	ErrNotEnough = errors.New("toprf: fewer than the threshold of valid contributions")
	// ErrInconsistent means public shares (or a correction) do not lie on
	// one polynomial of degree t−1 in the exponent.
	ErrInconsistent = errors.New("toprf: public shares are inconsistent")
	// ErrProof means a DLEQ proof did not verify.
	ErrProof = errors.New("toprf: proof does not verify")
)

// Fault names a replica whose contribution was refused, and why. It is
// reported by Combine and the other combining functions.
type Fault struct {
	Index  uint16
	Reason string
}

func (f Fault) Error() string { return fmt.Sprintf("replica %d: %s", f.Index, f.Reason) }

// Membership is a fleet's set of replica indices (the x-coordinates of their
// shares: distinct, non-zero, sorted) and threshold t: any t members
// together evaluate, t−1 learn nothing.
type Membership struct {
	Indices   []uint16
	Threshold int
}

// DefaultThreshold is t = ⌊n/2⌋ + 1, a majority: 2 of 3, 3 of 5, 4 of 7.
// Availability already needs a majority (Raft commits the guess before any
// evaluation), so a larger t would lose availability for no gain, and a
// smaller one would let a minority — which cannot count a guess — evaluate.
func DefaultThreshold(n int) int { return n/2 + 1 }

// NewMembership checks indices and t (1 ≤ t ≤ n ≤ MaxMembers, indices
// distinct and non-zero) and returns the membership with sorted indices.
func NewMembership(indices []uint16, t int) (Membership, error) {
	m := Membership{Indices: slices.Clone(indices), Threshold: t}
	slices.Sort(m.Indices)
	return m, m.Validate()
}

// Validate checks the membership's invariants.
func (m Membership) Validate() error {
	n := len(m.Indices)
	switch {
	case n == 0 || n > MaxMembers:
		return fmt.Errorf("%w: %d members (want 1 to %d)", ErrMembership, n, MaxMembers)
	case m.Threshold < 1 || m.Threshold > n:
		return fmt.Errorf("%w: threshold %d of %d members", ErrMembership, m.Threshold, n)
	case !slices.IsSorted(m.Indices):
		return fmt.Errorf("%w: indices not sorted", ErrMembership)
	}
	for i, x := range m.Indices {
		if x == 0 {
			return fmt.Errorf("%w: index 0 is the secret's position", ErrMembership)
		}
		if i > 0 && m.Indices[i-1] == x {
			return fmt.Errorf("%w: index %d twice", ErrMembership, x)
		}
	}
	return nil
}

// Has reports whether index is a member.
func (m Membership) Has(index uint16) bool {
	_, ok := slices.BinarySearch(m.Indices, index)
	return ok
}

// scalarOf returns x as a scalar.
func scalarOf(x uint16) *ecc.Scalar { return group.NewScalar().SetUInt64(uint64(x)) }

// lagrangeAt returns λ_i(x) = Π_{j∈S, j≠i} (x − j)/(i − j), the Lagrange
// basis polynomial of i over the distinct points S evaluated at x
// (Shamir 1979). At x = 0 this is the familiar Π j/(j − i).
func lagrangeAt(i uint16, set []uint16, x uint16) *ecc.Scalar {
	return cached(coefficientKey('L', x, []uint16{i}, set), func() *ecc.Scalar { return lagrange(i, set, x) })
}

func lagrange(i uint16, set []uint16, x uint16) *ecc.Scalar {
	num := group.NewScalar().One()
	den := group.NewScalar().One()
	xs, is := scalarOf(x), scalarOf(i)
	for _, j := range set {
		if j == i {
			continue
		}
		js := scalarOf(j)
		num.Multiply(xs.Copy().Subtract(js))
		den.Multiply(is.Copy().Subtract(js))
	}
	return num.Multiply(den.Invert())
}

// interpolateScalars returns f(x) for the polynomial of degree len(pts)−1
// through the points (indices[k], values[k]).
func interpolateScalars(indices []uint16, values []*ecc.Scalar, x uint16) *ecc.Scalar {
	acc := group.NewScalar()
	for k, i := range indices {
		acc.Add(lagrangeAt(i, indices, x).Multiply(values[k]))
	}
	return acc
}

// interpolateElements returns F(x)·G for the polynomial F of degree
// len(pts)−1 with F(indices[k])·G = values[k]: interpolation in the exponent.
func interpolateElements(indices []uint16, values []*ecc.Element, x uint16) *ecc.Element {
	acc := group.NewElement()
	for k, i := range indices {
		acc.Add(values[k].Copy().Multiply(lagrangeAt(i, indices, x)))
	}
	return acc
}

// decodeElement decodes an element and refuses the identity.
func decodeElement(b []byte) (*ecc.Element, error) {
	if len(b) != ElementSize {
		return nil, fmt.Errorf("%w: element is %d bytes, want %d", ErrMalformed, len(b), ElementSize)
	}
	e := group.NewElement()
	if err := e.Decode(b); err != nil {
		return nil, fmt.Errorf("%w: element does not decode", ErrMalformed)
	}
	if e.IsIdentity() {
		return nil, fmt.Errorf("%w: identity element", ErrMalformed)
	}
	return e, nil
}

// decodeScalar decodes a canonical scalar (zero allowed).
func decodeScalar(b []byte) (*ecc.Scalar, error) {
	if len(b) != ScalarSize {
		return nil, fmt.Errorf("%w: scalar is %d bytes, want %d", ErrMalformed, len(b), ScalarSize)
	}
	s := group.NewScalar()
	if err := s.Decode(b); err != nil {
		return nil, fmt.Errorf("%w: scalar does not decode", ErrMalformed)
	}
	return s, nil
}
