package toprf

import (
	"encoding/binary"
	"sync"

	"github.com/bytemare/ecc"
)

// Lagrange coefficients and PRSS basis values depend only on public
// indices — the membership, a set, a point — never on a secret or an
// account, yet each costs a scalar inversion (a few tens of µs: 6 % of a
// 3-of-5 fleet's CPU per login before this cache). They are computed once
// per distinct input and kept: a fleet has a handful of memberships, so
// the cache holds at most a few hundred scalars.
var coefficients sync.Map // string key → *ecc.Scalar (never modified; callers get copies)

// coefficientKey encodes a kind byte, the point x and the index lists.
func coefficientKey(kind byte, x uint16, lists ...[]uint16) string {
	b := make([]byte, 0, 8+2*len(lists)*8)
	b = append(b, kind)
	b = binary.BigEndian.AppendUint16(b, x)
	for _, l := range lists {
		b = binary.BigEndian.AppendUint16(b, uint16(len(l)))
		for _, i := range l {
			b = binary.BigEndian.AppendUint16(b, i)
		}
	}
	return string(b)
}

// cached returns a copy of the scalar under key, computing it once.
func cached(key string, compute func() *ecc.Scalar) *ecc.Scalar {
	if v, ok := coefficients.Load(key); ok {
		return v.(*ecc.Scalar).Copy()
	}
	s := compute()
	coefficients.Store(key, s.Copy())
	return s
}
