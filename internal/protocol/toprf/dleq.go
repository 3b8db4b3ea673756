package toprf

import (
	"crypto/sha512"
	"encoding/binary"
	"fmt"

	"github.com/bytemare/ecc"
)

// The DLEQ proof of RFC 9497 §2.2 (Chaum–Pedersen, made non-interactive by
// Fiat–Shamir), written against the RFC's pseudocode and checked against its
// Appendix A.1.2 vectors (dleq_test.go). ctx is the RFC's contextString: the
// vectors use "OPRFV1-\x01-ristretto255-SHA512"; Coffer's replicas use
// contextString (toprf.go). The proof shows that k = log_A(B) equals
// log_{C[i]}(D[i]) for every i, without revealing k.

// hashToScalar is RFC 9497 §4.1 HashToScalar for ristretto255-SHA512 with
// DST = "HashToScalar-" || contextString.
func hashToScalar(ctx string, input []byte) *ecc.Scalar {
	return group.HashToScalar(input, []byte("HashToScalar-"+ctx))
}

func appendLenPrefixed(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

// computeComposites is RFC 9497 §2.2.1 ComputeComposites (k == nil) and
// ComputeCompositesFast (k != nil: Z = k·M).
func computeComposites(ctx string, k *ecc.Scalar, b *ecc.Element, c, d []*ecc.Element) (m, z *ecc.Element) {
	// seedTranscript = I2OSP(len(Bm), 2) || Bm || I2OSP(len(seedDST), 2) || seedDST
	var st []byte
	st = appendLenPrefixed(st, b.Encode())
	st = appendLenPrefixed(st, []byte("Seed-"+ctx))
	seed := sha512.Sum512(st)
	m, z = group.NewElement(), group.NewElement()
	for i := range c {
		// compositeTranscript = I2OSP(len(seed), 2) || seed || I2OSP(i, 2) ||
		//   I2OSP(len(Ci), 2) || Ci || I2OSP(len(Di), 2) || Di || "Composite"
		var ct []byte
		ct = appendLenPrefixed(ct, seed[:])
		ct = binary.BigEndian.AppendUint16(ct, uint16(i))
		ct = appendLenPrefixed(ct, c[i].Encode())
		ct = appendLenPrefixed(ct, d[i].Encode())
		ct = append(ct, "Composite"...)
		di := hashToScalar(ctx, ct)
		m.Add(c[i].Copy().Multiply(di))
		if k == nil {
			z.Add(d[i].Copy().Multiply(di))
		}
	}
	if k != nil {
		z = m.Copy().Multiply(k)
	}
	return m, z
}

// challenge is the Fiat–Shamir challenge of RFC 9497 §2.2.1/§2.2.2:
//
//	challengeTranscript = I2OSP(len(Bm), 2) || Bm || I2OSP(len(a0), 2) || a0 ||
//	  I2OSP(len(a1), 2) || a1 || I2OSP(len(a2), 2) || a2 ||
//	  I2OSP(len(a3), 2) || a3 || "Challenge"
func challenge(ctx string, b, m, z, t2, t3 *ecc.Element) *ecc.Scalar {
	var tr []byte
	for _, e := range []*ecc.Element{b, m, z, t2, t3} {
		tr = appendLenPrefixed(tr, e.Encode())
	}
	tr = append(tr, "Challenge"...)
	return hashToScalar(ctx, tr)
}

// generateProof is RFC 9497 §2.2.1 GenerateProof(k, A, B, C, D) with the
// nonce r given (random in production, fixed by the vectors):
//
//	(M, Z) = ComputeCompositesFast(k, B, C, D)
//	t2 = r * A; t3 = r * M
//	c = HashToScalar(challengeTranscript); s = r - c * k
//	proof = [c, s]
func generateProof(ctx string, k *ecc.Scalar, a, b *ecc.Element, c, d []*ecc.Element, r *ecc.Scalar) []byte {
	m, z := computeComposites(ctx, k, b, c, d)
	t2 := a.Copy().Multiply(r)
	t3 := m.Copy().Multiply(r)
	ch := challenge(ctx, b, m, z, t2, t3)
	s := r.Copy().Subtract(ch.Copy().Multiply(k))
	proof := append(ch.Encode(), s.Encode()...)
	s.Zero()
	return proof
}

// verifyProof is RFC 9497 §2.2.2 VerifyProof(A, B, C, D, proof):
//
//	(M, Z) = ComputeComposites(B, C, D)
//	t2 = (s * A) + (c * B); t3 = (s * M) + (c * Z)
//	verified = (HashToScalar(challengeTranscript) == c)
func verifyProof(ctx string, a, b *ecc.Element, c, d []*ecc.Element, proof []byte) error {
	if len(proof) != ProofSize {
		return fmt.Errorf("%w: proof is %d bytes, want %d", ErrMalformed, len(proof), ProofSize)
	}
	ch, err := decodeScalar(proof[:ScalarSize])
	if err != nil {
		return fmt.Errorf("%w: proof challenge", err)
	}
	s, err := decodeScalar(proof[ScalarSize:])
	if err != nil {
		return fmt.Errorf("%w: proof response", err)
	}
	m, z := computeComposites(ctx, nil, b, c, d)
	t2 := a.Copy().Multiply(s).Add(b.Copy().Multiply(ch))
	t3 := m.Copy().Multiply(s).Add(z.Copy().Multiply(ch))
	if !challenge(ctx, b, m, z, t2, t3).Equal(ch) {
		return ErrProof
	}
	return nil
}
