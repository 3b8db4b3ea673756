package toprf

import (
	"errors"
	"testing"

	"github.com/bytemare/ecc"
	"github.com/cofferhq/coffer/internal/protocol/pake"
)

// thresholdRegister registers password for cred through the threshold path:
// the fleet's partials are combined and handed to
// RegistrationResponseFromEvaluation. It returns the record.
func thresholdRegister(t *testing.T, f *fleet, srv *pake.Server, c pake.Client, cred, pw []byte) ([]byte, *account) {
	t.Helper()
	acct := register1(t, f, cred)
	st, req, err := c.RegistrationStart(pw)
	if err != nil {
		t.Fatal(err)
	}
	blinded, err := pake.RegistrationBlindedElement(req)
	if err != nil {
		t.Fatal(err)
	}
	z, _, err := Combine(f.m, acct.public, blinded, f.partials(t, cred, nil, blinded, f.m.Indices...))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.RegistrationResponseFromEvaluation(z)
	if err != nil {
		t.Fatal(err)
	}
	record, _, err := c.RegistrationFinish(st, pw, resp, pake.TestKSF)
	if err != nil {
		t.Fatal(err)
	}
	return record, acct
}

// testGuess is the offline attacker's oracle: it plays the server with the
// stolen record and server key, takes a candidate OPRF key k for the
// account, evaluates the guess's KE1 under it, builds KE2 with
// KE2FromEvaluation and runs the OPAQUE client's LoginFinish on it. The
// guess is confirmed iff the envelope opens and the MACs verify.
func testGuess(t *testing.T, srv *pake.Server, c pake.Client, record, guess []byte, k *ecc.Scalar) bool {
	t.Helper()
	st, ke1, err := c.LoginStart(guess)
	if err != nil {
		t.Fatal(err)
	}
	b, err := pake.BlindedElement(ke1)
	if err != nil {
		t.Fatal(err)
	}
	z := mustElement(t, hexOf(b)).Multiply(k).Encode()
	ke2, mac, err := srv.KE2FromEvaluation(record, ke1, z)
	if err != nil {
		t.Fatal(err)
	}
	ke3, _, _, err := c.LoginFinish(st, guess, ke2, pake.TestKSF)
	switch {
	case err == nil:
		return pake.VerifyKE3(ke3, mac)
	case errors.Is(err, pake.ErrWrongPassword):
		return false
	default:
		t.Fatal(err)
		return false
	}
}

// TestAttackOfflineGuessWithTMinus1Replicas: an attacker holding
// everything t−1 replicas hold — their PRSS seeds, hence their shares of
// every account — plus the record and the fleet's OPAQUE server key (the
// worst case: every replica's disk and AKE key) tries to test the right
// password offline. It tries every candidate OPRF key it can form: each
// single share, the sum of its shares, Lagrange interpolation of its t−1
// shares as if the threshold were t−1, and the sum of the PRF values of the
// seeds it holds (the part of k_c = Σ_A PRF(s_A, c) it knows). Each is run
// through the OPAQUE client's LoginFinish: none opens the envelope. With t
// replicas' seeds, the same attacker interpolates the key and the right
// password is confirmed — so the test is able to find a password, and it is
// the missing seed that stops it.
func TestAttackOfflineGuessWithTMinus1Replicas(t *testing.T) {
	keys, err := pake.GenerateServerKeys()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := pake.NewServer(&pake.ServerKeys{PrivateKey: keys.PrivateKey, PublicKey: keys.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	c := pake.Client{AllowWeakKSF: true}
	pw := []byte("correct horse battery staple")
	for _, cfg := range []struct {
		idx []uint16
		t   int
	}{{[]uint16{1, 2, 3}, 2}, {[]uint16{1, 2, 3, 4, 5}, 3}} {
		f := newFleet(t, cfg.idx, cfg.t, 50)
		cred := pake.CredentialID("victim", 1)
		record, _ := thresholdRegister(t, f, srv, c, cred, pw)

		for _, stolen := range subsets(cfg.idx, cfg.t-1) {
			var cands []*ecc.Scalar
			shares := make([]*ecc.Scalar, len(stolen))
			sum := group.NewScalar()
			prfSum := group.NewScalar()
			seen := map[string]bool{}
			for k, i := range stolen {
				shares[k] = f.share(t, i, cred, nil).k
				cands = append(cands, shares[k])
				sum.Add(shares[k])
				for _, s := range f.seeds[i].Seeds {
					if !seen[string(s.Seed)] {
						seen[string(s.Seed)] = true
						prfSum.Add(prf(s.Seed, cred))
					}
				}
			}
			cands = append(cands, sum, prfSum, interpolateScalars(stolen, shares, 0))
			for n, k := range cands {
				if testGuess(t, srv, c, record, pw, k) {
					t.Fatalf("n=%d: replicas %v tested the password offline (candidate %d)", len(cfg.idx), stolen, n)
				}
			}
		}
		// t replicas: the attack works.
		for _, sub := range subsets(cfg.idx, cfg.t) {
			shares := make([]*ecc.Scalar, len(sub))
			for k, i := range sub {
				shares[k] = f.share(t, i, cred, nil).k
			}
			k := interpolateScalars(sub, shares, 0)
			if !testGuess(t, srv, c, record, pw, k) {
				t.Fatalf("n=%d: t replicas %v failed to confirm the password: the oracle is broken", len(cfg.idx), sub)
			}
			if testGuess(t, srv, c, record, []byte("wrong guess"), k) {
				t.Fatal("a wrong guess is confirmed")
			}
		}
	}
}

// TestThresholdLoginByzantineAndDown: a real login through the threshold
// path of a 5-replica fleet with replica 2 Byzantine (a wrong scalar) and
// replica 5 down: Combine names replica 2, the others' partials combine and
// the client logs in with the export key of its registration.
func TestThresholdLoginByzantineAndDown(t *testing.T) {
	keys, err := pake.GenerateServerKeys()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := pake.NewServer(&pake.ServerKeys{PrivateKey: keys.PrivateKey, PublicKey: keys.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	c := pake.Client{AllowWeakKSF: true}
	f := newFleet(t, []uint16{1, 2, 3, 4, 5}, 3, 60)
	cred := pake.CredentialID("judy", 1)
	pw := []byte("pw for judy")
	record, acct := thresholdRegister(t, f, srv, c, cred, pw)

	st, ke1, err := c.LoginStart(pw)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pake.BlindedElement(ke1)
	ps := f.partials(t, cred, nil, b, 1, 3, 4)
	bad := f.share(t, 2, cred, nil)
	bad.k.Add(group.NewScalar().One())
	bp, _ := bad.Evaluate(b)
	z, faults, err := Combine(f.m, acct.public, b, append([]Partial{bp}, ps...))
	if err != nil || len(faults) != 1 || faults[0].Index != 2 {
		t.Fatalf("combine: %v %v", err, faults)
	}
	ke2, mac, err := srv.KE2FromEvaluation(record, ke1, z)
	if err != nil {
		t.Fatal(err)
	}
	ke3, _, _, err := c.LoginFinish(st, pw, ke2, pake.TestKSF)
	if err != nil || !pake.VerifyKE3(ke3, mac) {
		t.Fatalf("login: %v", err)
	}
}
