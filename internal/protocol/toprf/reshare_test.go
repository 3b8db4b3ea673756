package toprf

import (
	"bytes"
	"errors"
	"testing"

	"github.com/bytemare/ecc"
)

// account is what the vault stores per account for the threshold OPRF.
type account struct {
	cred   []byte
	offset []byte // nil before the first reshare
	public PublicShares
	key    []byte // K_c
}

func register1(t *testing.T, f *fleet, cred []byte) *account {
	pub, key, err := CheckPublicShares(f.m, f.publicShares(t, cred, nil))
	if err != nil {
		t.Fatal(err)
	}
	return &account{cred: cred, public: pub, key: key}
}

// reshare moves acct from old to nw through the deltas of the replicas in
// both, returning the account's new state.
func reshare(t *testing.T, old, nw *fleet, acct *account) (*account, []*Delta) {
	t.Helper()
	newPub := PublicShares{}
	for _, i := range nw.m.Indices {
		newPub[i] = nw.share(t, i, acct.cred, nil).Public()
	}
	var deltas []*Delta
	for _, i := range nw.m.Indices {
		if !old.m.Has(i) {
			continue
		}
		d, err := ReshareDelta(old.share(t, i, acct.cred, acct.offset), nw.share(t, i, acct.cred, nil))
		if err != nil {
			t.Fatal(err)
		}
		deltas = append(deltas, d)
	}
	off, pub, faults, err := CombineCorrection(old.m, nw.m, acct.public, newPub, acct.key, deltas)
	if err != nil || len(faults) != 0 {
		t.Fatalf("CombineCorrection: %v %v", err, faults)
	}
	return &account{cred: acct.cred, offset: off, public: pub, key: acct.key}, deltas
}

func evaluateWith(t *testing.T, f *fleet, acct *account, blinded []byte, who ...uint16) []byte {
	t.Helper()
	z, faults, err := Combine(f.m, acct.public, blinded, f.partials(t, acct.cred, acct.offset, blinded, who...))
	if err != nil || len(faults) != 0 {
		t.Fatalf("combine: %v %v", err, faults)
	}
	return z
}

// TestReshareKeepsTheKey (a): through a replacement (member
// 3 by 4), a growth (3 → 5 members, t 2 → 3) and a shrink (5 → 3), the account's
// evaluation is unchanged, and the effective public shares verify the new
// partials.
func TestReshareKeepsTheKey(t *testing.T) {
	f0 := newFleet(t, []uint16{1, 2, 3}, 2, 10)
	acct := register1(t, f0, []byte("frank"))
	blinded, _ := blindedFor([]byte("pw"))
	want := evaluateWith(t, f0, acct, blinded, 1, 2)

	steps := []*fleet{
		newFleet(t, []uint16{1, 2, 4}, 2, 11),       // replace 3 by 4
		newFleet(t, []uint16{1, 2, 4, 5, 6}, 3, 12), // grow to 5, t = 3
		newFleet(t, []uint16{2, 5, 6}, 2, 13),       // shrink to 3
	}
	prev := f0
	for k, nw := range steps {
		acct, _ = reshare(t, prev, nw, acct)
		for _, sub := range subsets(nw.m.Indices, nw.m.Threshold) {
			if z := evaluateWith(t, nw, acct, blinded, sub...); !bytes.Equal(z, want) {
				t.Fatalf("step %d, subset %v: evaluation changed", k, sub)
			}
		}
		prev = nw
	}
}

// TestOldSharesDoNotCombineWithNew (b): after a reshare, partials made with
// old shares are refused by Combine (they do not verify against the new
// public shares), and interpolating old and new partials directly, without
// the proofs, does not give the account's evaluation.
func TestOldSharesDoNotCombineWithNew(t *testing.T) {
	old := newFleet(t, []uint16{1, 2, 3, 4, 5}, 3, 20)
	nw := newFleet(t, []uint16{1, 2, 3, 4, 6}, 3, 21) // 5 removed, 6 joined
	acct0 := register1(t, old, []byte("grace"))
	acct1, _ := reshare(t, old, nw, acct0)
	blinded, _ := blindedFor([]byte("pw"))
	want := evaluateWith(t, nw, acct1, blinded, 1, 2, 3)

	oldP := old.partials(t, acct0.cred, acct0.offset, blinded, 1, 2, 5)
	newP := nw.partials(t, acct1.cred, acct1.offset, blinded, 3, 4)
	mixed := []Partial{oldP[0], oldP[1], newP[0]}
	_, faults, err := Combine(nw.m, acct1.public, blinded, mixed)
	if !errors.Is(err, ErrNotEnough) || len(faults) != 2 {
		t.Fatalf("old partials accepted: err=%v faults=%v", err, faults)
	}
	// Raw interpolation of every mix of old and new partials, ignoring the
	// proofs: none gives the evaluation.
	byIdx := func(ps []Partial) map[uint16]*ecc.Element {
		m := map[uint16]*ecc.Element{}
		for _, p := range ps {
			m[p.Index] = mustElement(t, hexOf(p.Evaluated))
		}
		return m
	}
	o, n := byIdx(oldP), byIdx(newP)
	mixes := [][2][]uint16{{{1, 2}, {3}}, {{1}, {3, 4}}, {{5}, {3, 4}}, {{1, 5}, {4}}, {{2, 5}, {3}}}
	for _, mix := range mixes {
		var idx []uint16
		var vals []*ecc.Element
		for _, i := range mix[0] {
			idx, vals = append(idx, i), append(vals, o[i])
		}
		for _, i := range mix[1] {
			idx, vals = append(idx, i), append(vals, n[i])
		}
		if bytes.Equal(interpolateElements(idx, vals, 0).Encode(), want) {
			t.Fatalf("old %v + new %v combine", mix[0], mix[1])
		}
	}
}

// TestRemovedReplicaCannotEvaluate (c): replica 5 is removed; the attacker
// holds its old seeds, the new seeds of t−2 = 1 current replica, every
// delta of the reshare (the whole polynomial D) and all public values. It
// tries every way we know to get the evaluation: its old share with the
// current replica's new share (raw and offset-corrected), and the new
// effective share at index 5 reconstructed from D, with the same. All fail.
// The positive control shows the attack is real: with the new seeds of
// t−1 = 2 current replicas and the deltas it succeeds — which is the bound
// PROTOCOL.md states (the deltas travel sealed to the combiner and are
// erased).
func TestRemovedReplicaCannotEvaluate(t *testing.T) {
	old := newFleet(t, []uint16{1, 2, 3, 4, 5}, 3, 30)
	nw := newFleet(t, []uint16{1, 2, 3, 4, 6}, 3, 31)
	acct0 := register1(t, old, []byte("heidi"))
	acct1, deltas := reshare(t, old, nw, acct0)
	kc := old.accountKey(acct0.cred)

	dIdx := make([]uint16, len(deltas))
	dVals := make([]*ecc.Scalar, len(deltas))
	for k, d := range deltas {
		dIdx[k], dVals[k] = d.Index, d.d
	}
	oldAt5 := old.share(t, 5, acct0.cred, acct0.offset).k                   // F_eff(5)
	newEffAt5 := oldAt5.Copy().Subtract(interpolateScalars(dIdx, dVals, 5)) // F'(5) via D
	off := mustScalar(t, hexOf(acct1.offset))
	newEffAt5.Add(off)

	attempt := func(current []uint16) bool {
		var cands [][]*ecc.Scalar
		var idxs [][]uint16
		var eff []*ecc.Scalar
		for _, i := range current {
			eff = append(eff, nw.share(t, i, acct1.cred, acct1.offset).k)
		}
		idx := append([]uint16{5}, current...)
		cands = append(cands, append([]*ecc.Scalar{oldAt5}, eff...), append([]*ecc.Scalar{newEffAt5}, eff...))
		idxs = append(idxs, idx, idx)
		for k := range cands {
			if interpolateScalars(idxs[k], cands[k], 0).Equal(kc) {
				return true
			}
		}
		// Every delta-derived point of the new polynomial the attacker can
		// reach: F'(j)+o' for j in the deltas' indices needs F_eff(j),
		// which it has only for j = 5 and the current replicas (whose old
		// seeds were erased), so nothing more.
		return false
	}
	if attempt([]uint16{1}) {
		t.Fatal("removed replica + t−2 current replicas evaluated the account")
	}
	if !attempt([]uint16{1, 2}) {
		t.Fatal("positive control: removed replica + t−1 current + the deltas should reach the key (the stated bound)")
	}
}

// TestCorrectionFaults: a wrong delta is named and left out; too few
// deltas fail.
func TestCorrectionFaults(t *testing.T) {
	old := newFleet(t, []uint16{1, 2, 3}, 2, 40)
	nw := newFleet(t, []uint16{1, 2, 3}, 2, 41)
	acct := register1(t, old, []byte("ivan"))
	newPub := nw.publicShares(t, acct.cred, nil)
	var deltas []*Delta
	for _, i := range []uint16{1, 2, 3} {
		d, err := ReshareDelta(old.share(t, i, acct.cred, nil), nw.share(t, i, acct.cred, nil))
		if err != nil {
			t.Fatal(err)
		}
		deltas = append(deltas, d)
	}
	deltas[0].d.Add(group.NewScalar().One())
	off, _, faults, err := CombineCorrection(old.m, nw.m, acct.public, newPub, acct.key, deltas)
	if err != nil || len(faults) != 1 || faults[0].Index != 1 || off == nil {
		t.Fatalf("wrong delta: %v %v", err, faults)
	}
	if _, _, _, err := CombineCorrection(old.m, nw.m, acct.public, newPub, acct.key, deltas[:2]); !errors.Is(err, ErrNotEnough) {
		t.Fatalf("one valid delta: %v", err)
	}
	if _, err := ReshareDelta(old.share(t, 1, acct.cred, nil), nw.share(t, 2, acct.cred, nil)); err == nil {
		t.Fatal("delta across indices")
	}
}
