package toprf

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/bytemare/ecc"
)

// detRand is a deterministic io.Reader for ceremonies in tests and vectors.
func detRand(seed byte) *rand.ChaCha8 {
	var s [32]byte
	s[0] = seed
	return rand.NewChaCha8(s)
}

type fleet struct {
	m     Membership
	seeds map[uint16]*ReplicaSeeds
}

func newFleet(t testing.TB, indices []uint16, thr int, seed byte) *fleet {
	t.Helper()
	m, err := NewMembership(indices, thr)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Deal(m, detRand(seed))
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{m: m, seeds: map[uint16]*ReplicaSeeds{}}
	for _, r := range rs {
		f.seeds[r.Index] = r
	}
	return f
}

func (f *fleet) share(t testing.TB, i uint16, credID, offset []byte) *KeyShare {
	t.Helper()
	s, err := f.seeds[i].Share(credID, offset)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// accountKey computes k_c = Σ_A PRF(s_A, c) from the whole deal — what no
// serving replica ever does; tests only.
func (f *fleet) accountKey(credID []byte) *ecc.Scalar {
	k := group.NewScalar()
	for _, set := range f.m.Sets() {
		r := f.seeds[set[0]]
		for _, s := range r.Seeds {
			if slices.Equal(s.Set, set) {
				k.Add(prf(s.Seed, credID))
			}
		}
	}
	return k
}

func (f *fleet) publicShares(t testing.TB, credID, offset []byte) PublicShares {
	p := PublicShares{}
	for _, i := range f.m.Indices {
		p[i] = f.share(t, i, credID, offset).Public()
	}
	return p
}

func (f *fleet) partials(t testing.TB, credID, offset, blinded []byte, who ...uint16) []Partial {
	var out []Partial
	for _, i := range who {
		p, err := f.share(t, i, credID, offset).Evaluate(blinded)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func blindedFor(password []byte) ([]byte, *ecc.Element) {
	r := group.NewScalar().Random()
	h := group.HashToGroup(password, []byte("HashToGroup-OPRFV1-\x00-ristretto255-SHA512"))
	return h.Copy().Multiply(r).Encode(), h
}

func TestDefaultThreshold(t *testing.T) {
	for n, want := range map[int]int{1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 4, 7: 4} {
		if got := DefaultThreshold(n); got != want {
			t.Errorf("DefaultThreshold(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestMembership(t *testing.T) {
	bad := []struct {
		idx []uint16
		t   int
	}{{nil, 1}, {[]uint16{1, 2, 3}, 0}, {[]uint16{1, 2, 3}, 4}, {[]uint16{0, 1, 2}, 2}, {[]uint16{1, 1, 2}, 2},
		{make([]uint16, MaxMembers+1), 2}}
	for _, b := range bad {
		if _, err := NewMembership(b.idx, b.t); !errors.Is(err, ErrMembership) {
			t.Errorf("NewMembership(%v, %d): %v", b.idx, b.t, err)
		}
	}
	m, err := NewMembership([]uint16{5, 1, 3}, 2)
	if err != nil || !slices.Equal(m.Indices, []uint16{1, 3, 5}) {
		t.Fatalf("%v %v", m, err)
	}
}

// TestSetsAndDeal: C(n, t−1) sets of n−t+1 members, each replica holds the
// C(n−1, t−1) containing it, and Validate accepts exactly that.
func TestSetsAndDeal(t *testing.T) {
	binom := func(n, k int) int {
		r := 1
		for i := 0; i < k; i++ {
			r = r * (n - i) / (i + 1)
		}
		return r
	}
	for _, c := range []struct{ n, t int }{{1, 1}, {3, 2}, {3, 3}, {5, 3}, {7, 4}, {5, 1}} {
		idx := make([]uint16, c.n)
		for i := range idx {
			idx[i] = uint16(i + 1)
		}
		f := newFleet(t, idx, c.t, 1)
		sets := f.m.Sets()
		if len(sets) != binom(c.n, c.t-1) {
			t.Fatalf("n=%d t=%d: %d sets", c.n, c.t, len(sets))
		}
		for _, s := range sets {
			if len(s) != c.n-c.t+1 {
				t.Fatalf("set %v", s)
			}
		}
		for _, r := range f.seeds {
			if len(r.Seeds) != binom(c.n-1, c.t-1) {
				t.Fatalf("n=%d t=%d: replica %d holds %d seeds", c.n, c.t, r.Index, len(r.Seeds))
			}
			if err := r.Validate(); err != nil {
				t.Fatal(err)
			}
		}
	}
	f := newFleet(t, []uint16{1, 2, 3}, 2, 1)
	r := f.seeds[1]
	r.Seeds = r.Seeds[1:]
	if _, err := r.Share([]byte("c"), nil); !errors.Is(err, ErrMembership) {
		t.Fatalf("share with a missing seed: %v", err)
	}
}

// TestShares: the shares of every member lie on one polynomial of degree
// t−1 whose value at 0 is Σ_A PRF(s_A, c); every t-subset interpolates it,
// no (t−1)-subset does; different accounts get unrelated keys.
func TestShares(t *testing.T) {
	for _, c := range []struct {
		idx []uint16
		t   int
	}{{[]uint16{1, 2, 3}, 2}, {[]uint16{1, 2, 3, 4, 5}, 3}, {[]uint16{2, 7, 9, 11, 40, 41, 300}, 4}} {
		f := newFleet(t, c.idx, c.t, 2)
		cred := []byte("alice\x00\x00\x00\x00\x00\x00\x00\x00\x01")
		want := f.accountKey(cred)
		shares := map[uint16]*ecc.Scalar{}
		for _, i := range c.idx {
			shares[i] = f.share(t, i, cred, nil).k
		}
		for _, sub := range subsets(c.idx, c.t) {
			vals := make([]*ecc.Scalar, len(sub))
			for k, i := range sub {
				vals[k] = shares[i]
			}
			if !interpolateScalars(sub, vals, 0).Equal(want) {
				t.Fatalf("%v: subset %v does not interpolate the account key", c.idx, sub)
			}
		}
		for _, sub := range subsets(c.idx, c.t-1) {
			if len(sub) == 0 {
				continue
			}
			vals := make([]*ecc.Scalar, len(sub))
			for k, i := range sub {
				vals[k] = shares[i]
			}
			if interpolateScalars(sub, vals, 0).Equal(want) {
				t.Fatalf("%v: t−1 shares %v interpolate the account key", c.idx, sub)
			}
		}
		if f.accountKey([]byte("bob")).Equal(want) {
			t.Fatal("two accounts share a key")
		}
	}
}

// TestCombine: t partials of honest replicas combine into k_c·B, whichever
// t (so one of n down still combines), and extra partials are harmless.
func TestCombine(t *testing.T) {
	for _, c := range []struct {
		idx []uint16
		t   int
	}{{[]uint16{1, 2, 3}, 2}, {[]uint16{1, 2, 3, 4, 5}, 3}} {
		f := newFleet(t, c.idx, c.t, 3)
		cred := []byte("carol")
		pub, key, err := CheckPublicShares(f.m, f.publicShares(t, cred, nil))
		if err != nil {
			t.Fatal(err)
		}
		kc := f.accountKey(cred)
		if !bytes.Equal(key, group.Base().Multiply(kc).Encode()) {
			t.Fatal("CheckPublicShares: wrong account key")
		}
		blinded, _ := blindedFor([]byte("pw"))
		want := mustElement(t, hexOf(blinded)).Multiply(kc).Encode()
		all := f.partials(t, cred, nil, blinded, c.idx...)
		for _, sub := range subsets(c.idx, c.t) {
			var ps []Partial
			for _, p := range all {
				if slices.Contains(sub, p.Index) {
					ps = append(ps, p)
				}
			}
			z, faults, err := Combine(f.m, pub, blinded, ps)
			if err != nil || len(faults) != 0 || !bytes.Equal(z, want) {
				t.Fatalf("subset %v: err=%v faults=%v", sub, err, faults)
			}
		}
		// One of n down: n−1 partials.
		z, _, err := Combine(f.m, pub, blinded, all[1:])
		if err != nil || !bytes.Equal(z, want) {
			t.Fatalf("one down: %v", err)
		}
		// t−1: not enough.
		if _, _, err := Combine(f.m, pub, blinded, all[:c.t-1]); !errors.Is(err, ErrNotEnough) {
			t.Fatalf("t−1 partials: %v", err)
		}
	}
}

// TestByzantinePartials: a replica answering with a wrong scalar, with a
// proof for another element, with a tampered proof or evaluation, twice, or
// under an index that is no member is named in faults and left out; the
// combine succeeds with another honest replica's partial, and fails
// (naming the faults) when too few honest ones remain.
func TestByzantinePartials(t *testing.T) {
	f := newFleet(t, []uint16{1, 2, 3, 4, 5}, 3, 4)
	cred := []byte("dave")
	pub, _, err := CheckPublicShares(f.m, f.publicShares(t, cred, nil))
	if err != nil {
		t.Fatal(err)
	}
	blinded, _ := blindedFor([]byte("pw"))
	want := mustElement(t, hexOf(blinded)).Multiply(f.accountKey(cred)).Encode()
	honest := f.partials(t, cred, nil, blinded, 1, 2, 3, 4, 5)

	// Wrong scalar: replica 2 evaluates (and proves) under k_2 + 1.
	s2 := f.share(t, 2, cred, nil)
	s2.k.Add(group.NewScalar().One())
	wrongScalar, _ := s2.Evaluate(blinded)
	// Proof for another element: replica 2 evaluates another blinded
	// element honestly and returns that.
	other, _ := blindedFor([]byte("another"))
	otherElem, _ := f.share(t, 2, cred, nil).Evaluate(other)
	tamperedProof := honest[1]
	tamperedProof.Proof = slices.Clone(tamperedProof.Proof)
	tamperedProof.Proof[0] ^= 1
	tamperedEval := honest[1]
	tamperedEval.Evaluated = group.Base().Encode()
	garbage := honest[1]
	garbage.Evaluated = bytes.Repeat([]byte{0xff}, 32)

	for name, bad := range map[string]Partial{
		"wrong scalar": wrongScalar, "proof for another element": otherElem,
		"tampered proof": tamperedProof, "tampered evaluation": tamperedEval, "garbage": garbage,
	} {
		// The bad partial first, then honest 1 and 3, then 4: the combine
		// must skip 2 and use 1, 3, 4.
		ps := []Partial{bad, honest[0], honest[2], honest[3]}
		z, faults, err := Combine(f.m, pub, blinded, ps)
		if err != nil || !bytes.Equal(z, want) {
			t.Fatalf("%s: combine failed: %v", name, err)
		}
		if len(faults) != 1 || faults[0].Index != 2 {
			t.Fatalf("%s: faults %v, want replica 2", name, faults)
		}
		if err := VerifyPartial(pub[2], blinded, bad); err == nil {
			t.Fatalf("%s: VerifyPartial accepts it", name)
		}
		// With only two honest partials left, the combine fails and names 2.
		_, faults, err = Combine(f.m, pub, blinded, []Partial{bad, honest[0], honest[2]})
		if !errors.Is(err, ErrNotEnough) || len(faults) != 1 || faults[0].Index != 2 {
			t.Fatalf("%s: too few honest: err=%v faults=%v", name, err, faults)
		}
	}
	// Duplicates (both refused) and an unknown index.
	stranger := honest[0]
	stranger.Index = 9
	z, faults, err := Combine(f.m, pub, blinded, []Partial{honest[0], honest[0], stranger, honest[2], honest[3], honest[4]})
	if err != nil || !bytes.Equal(z, want) || len(faults) != 3 {
		t.Fatalf("duplicates/unknown: err=%v faults=%v", err, faults)
	}
	for _, fl := range faults {
		if fl.Index != 1 && fl.Index != 9 {
			t.Fatalf("fault %v", fl)
		}
	}
	// Malformed inputs.
	if _, _, err := Combine(f.m, pub, make([]byte, 32), honest); !errors.Is(err, ErrMalformed) {
		t.Fatalf("identity blinded element: %v", err)
	}
	if _, err := f.share(t, 1, cred, nil).Evaluate(make([]byte, 32)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Evaluate(identity): %v", err)
	}
	if _, err := DecodePartial(honest[0].Encode()[:50]); !errors.Is(err, ErrMalformed) {
		t.Fatal("short partial decodes")
	}
	if p, err := DecodePartial(honest[0].Encode()); err != nil || !bytes.Equal(p.Encode(), honest[0].Encode()) {
		t.Fatal("partial round trip")
	}
}

// TestCheckPublicShares: consistent shares pass (missing ones are
// interpolated); a replica reporting a wrong public share is named.
func TestCheckPublicShares(t *testing.T) {
	f := newFleet(t, []uint16{1, 2, 3, 4, 5}, 3, 5)
	cred := []byte("erin")
	full := f.publicShares(t, cred, nil)
	all, key, err := CheckPublicShares(f.m, full)
	if err != nil {
		t.Fatal(err)
	}
	partial := PublicShares{1: full[1], 3: full[3], 5: full[5]}
	all2, key2, err := CheckPublicShares(f.m, partial)
	if err != nil || !bytes.Equal(key, key2) || !bytes.Equal(all2[2], all[2]) || !bytes.Equal(all2[4], all[4]) {
		t.Fatalf("interpolating missing shares: %v", err)
	}
	lying := PublicShares{}
	for i, b := range full {
		lying[i] = b
	}
	lying[4] = group.Base().Encode()
	_, _, err = CheckPublicShares(f.m, lying)
	if !errors.Is(err, ErrInconsistent) || !bytes.Contains([]byte(err.Error()), []byte("replicas 4 disagree")) {
		t.Fatalf("liar: %v", err)
	}
	lying[1] = group.Base().Encode() // liar first: the subset search still finds it
	lying[4] = full[4]
	_, _, err = CheckPublicShares(f.m, lying)
	if !errors.Is(err, ErrInconsistent) || !bytes.Contains([]byte(err.Error()), []byte("replicas 1 disagree")) {
		t.Fatalf("liar 1: %v", err)
	}
	if _, _, err := CheckPublicShares(f.m, PublicShares{1: full[1], 2: full[2]}); !errors.Is(err, ErrNotEnough) {
		t.Fatalf("two of 3: %v", err)
	}
	if _, _, err := CheckPublicShares(f.m, PublicShares{1: full[1], 2: full[2], 7: full[3]}); err == nil {
		t.Fatal("non-member accepted")
	}
}

func TestShareInputs(t *testing.T) {
	f := newFleet(t, []uint16{1, 2, 3}, 2, 6)
	if _, err := f.seeds[1].Share(nil, nil); !errors.Is(err, ErrMalformed) {
		t.Fatal(err)
	}
	if _, err := f.seeds[1].Share([]byte("c"), []byte{1}); !errors.Is(err, ErrMalformed) {
		t.Fatal(err)
	}
	s := f.share(t, 1, []byte("c"), nil)
	s.Zero()
	if !s.k.IsZero() {
		t.Fatal("Zero left the share")
	}
	f.seeds[1].Zero()
	if !bytes.Equal(f.seeds[1].Seeds[0].Seed, make([]byte, SeedSize)) {
		t.Fatal("Zero left the seeds")
	}
}

// CombineOwn takes the caller's own unproven partial and gives what
// Combine gives; its index must be a member's and not repeated.
func TestCombineOwn(t *testing.T) {
	m, err := NewMembership([]uint16{1, 2, 3}, 2)
	if err != nil {
		t.Fatal(err)
	}
	seeds, err := Deal(m, detRand(7))
	if err != nil {
		t.Fatal(err)
	}
	credID := []byte("combine own")
	blinded := group.HashToGroup([]byte("a password"), []byte("test")).Encode()
	public := PublicShares{}
	var shares []*KeyShare
	for _, rs := range seeds {
		ks, err := rs.Share(credID, nil)
		if err != nil {
			t.Fatal(err)
		}
		shares = append(shares, ks)
		public[rs.Index] = ks.Public()
	}
	p1, _ := shares[0].Evaluate(blinded)
	p2, _ := shares[1].Evaluate(blinded)
	want, _, err := Combine(m, public, blinded, []Partial{p1, p2})
	if err != nil {
		t.Fatal(err)
	}
	own, err := shares[0].EvaluateOwn(blinded)
	if err != nil || own.Proof != nil {
		t.Fatalf("EvaluateOwn: %v, proof %x", err, own.Proof)
	}
	got, _, err := CombineOwn(m, public, blinded, own, []Partial{p2})
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("CombineOwn: %v, equal %v", err, bytes.Equal(got, want))
	}
	if _, _, err := CombineOwn(m, public, blinded, own, []Partial{p1}); err == nil {
		t.Fatal("CombineOwn took another partial under the caller's own index")
	}
	bad := p2
	bad.Evaluated = p1.Evaluated
	if _, _, err := CombineOwn(m, public, blinded, own, []Partial{bad}); !errors.Is(err, ErrNotEnough) {
		t.Fatalf("CombineOwn with a peer's bad partial: %v, want ErrNotEnough", err)
	}
}

// The coefficient cache returns what the direct computation does, and a
// caller modifying its copy does not change the cached value.
func TestCoefficientCache(t *testing.T) {
	m, err := NewMembership([]uint16{1, 2, 4, 7, 9}, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range m.Sets() {
		for _, x := range m.Indices {
			for range 2 {
				got := basisAt(m, set, x)
				if !got.Equal(basis(m, set, x)) {
					t.Fatalf("basis of %v at %d: cached value differs", set, x)
				}
				got.Add(group.NewScalar().One()) // must not reach the cache
			}
		}
	}
	for range 2 {
		l := lagrangeAt(2, []uint16{1, 2, 4}, 0)
		if !l.Equal(lagrange(2, []uint16{1, 2, 4}, 0)) {
			t.Fatal("Lagrange coefficient: cached value differs")
		}
		l.Add(group.NewScalar().One())
	}
}
