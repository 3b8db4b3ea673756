package toprf

import (
	"fmt"
	"testing"
)

// Benchmarks for the threshold OPRF's per-request costs:
//
//	go test ./internal/protocol/toprf -run '^$' -bench . -benchtime 2s
//
// Figures are in BENCHMARKS.md ("Threshold OPRF").

var benchConfigs = []struct {
	idx []uint16
	t   int
}{{[]uint16{1, 2, 3}, 2}, {[]uint16{1, 2, 3, 4, 5}, 3}}

func name(n, t int) string { return fmt.Sprintf("n=%d,t=%d", n, t) }

// BenchmarkShareDerivation: one replica's share of one account,
// C(n−1, t−1) PRF calls (2 for 2-of-3, 6 for 3-of-5).
func BenchmarkShareDerivation(b *testing.B) {
	for _, c := range benchConfigs {
		f := newFleet(b, c.idx, c.t, 1)
		b.Run(name(len(c.idx), c.t), func(b *testing.B) {
			for b.Loop() {
				s, _ := f.seeds[1].Share([]byte("bench-account"), nil)
				s.Zero()
			}
		})
	}
}

// BenchmarkPartialEvaluate: Z_i and its DLEQ proof.
func BenchmarkPartialEvaluate(b *testing.B) {
	f := newFleet(b, []uint16{1, 2, 3}, 2, 1)
	s := f.share(b, 1, []byte("bench-account"), nil)
	blinded, _ := blindedFor([]byte("pw"))
	for b.Loop() {
		s.Evaluate(blinded)
	}
}

// BenchmarkVerifyPartial: one DLEQ verification.
func BenchmarkVerifyPartial(b *testing.B) {
	f := newFleet(b, []uint16{1, 2, 3}, 2, 1)
	s := f.share(b, 1, []byte("bench-account"), nil)
	blinded, _ := blindedFor([]byte("pw"))
	p, _ := s.Evaluate(blinded)
	pub := s.Public()
	for b.Loop() {
		if err := VerifyPartial(pub, blinded, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCombine: verify t partials and interpolate (what the leader does
// per login beyond its own partial).
func BenchmarkCombine(b *testing.B) {
	for _, c := range benchConfigs {
		f := newFleet(b, c.idx, c.t, 1)
		cred := []byte("bench-account")
		pub, _, _ := CheckPublicShares(f.m, f.publicShares(b, cred, nil))
		blinded, _ := blindedFor([]byte("pw"))
		ps := f.partials(b, cred, nil, blinded, c.idx[:c.t]...)
		b.Run(name(len(c.idx), c.t), func(b *testing.B) {
			for b.Loop() {
				if _, _, err := Combine(f.m, pub, blinded, ps); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCheckPublicShares: the registration-time consistency check of n
// public shares.
func BenchmarkCheckPublicShares(b *testing.B) {
	for _, c := range benchConfigs {
		f := newFleet(b, c.idx, c.t, 1)
		given := f.publicShares(b, []byte("bench-account"), nil)
		b.Run(name(len(c.idx), c.t), func(b *testing.B) {
			for b.Loop() {
				if _, _, err := CheckPublicShares(f.m, given); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
