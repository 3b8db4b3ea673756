package vaultstate

import (
	"testing"

	"github.com/cofferhq/coffer/internal/protocol/keywrap"
)

// Issue 11 item 5: the key proof that authorizes replacing or erasing a
// record was a static bearer secret, so a replica that once saw it in a
// request could present it again at any time. A version-2 record keeps a
// key-proof public key, and each authorization is a signature over its own
// request's id and time. Attacked here as a replica would: it re-proposes a
// seen authorization under the same request id (a replay), under another
// request id, and under the same id once the replay window has passed; and
// it presents the static proof. All are refused. The version-1 behaviour —
// the static proof accepted again and again — is the control.
func TestAttackReplayedKeyProof(t *testing.T) {
	var key [keywrap.KeySize]byte
	key[0] = 42
	const account = "keyproof-owner"
	proof := keywrap.KeyProof(&key, account)

	register := func(h *harness, withKey bool) {
		rec := testRecord(1)
		rec.ProofHash = HashKeyProof(proof[:])
		if withKey {
			rec.ProofKey = keywrap.ProofPublicKey(&key, account)
		}
		chk := want[*RegisterCheckResult](t, h.do(&RegisterCheck{}))
		want[*RegisterResult](t, h.do(&Register{GuessLimit: testGuessLimit, Epoch: chk.Epoch, Record: rec}))
	}
	signed := func(h *harness) Command {
		c := h.cmd(nil)
		a := Auth{Kind: AuthSignature, SignedAt: h.now}
		copy(a.Sig[:], keywrap.SignProof(&key, account, keywrap.ProofRegisterStart, c.RequestID[:], h.now))
		c.Op = &RegisterCheck{Auth: a}
		return c
	}

	// Version 1, the control: the static proof authorizes every time.
	h := newHarness(t)
	register(h, false)
	for range 3 {
		want[*RegisterCheckResult](t, h.do(&RegisterCheck{Auth: Auth{Kind: AuthProof, Hash: HashKeyProof(proof[:])}}))
	}

	// Version 2.
	h = newHarness(t)
	register(h, true)
	wantCode(t, h.do(&RegisterCheck{Auth: Auth{Kind: AuthProof, Hash: HashKeyProof(proof[:])}}), CodeUnauthorized)
	seen := signed(h)
	want[*RegisterCheckResult](t, h.applyCmd(seen)) // the owner's request
	wantCode(t, h.applyCmd(seen), CodeReplay)       // the same request again
	other := seen
	other.RequestID = h.nextReq() // the signature under another request id
	wantCode(t, h.applyCmd(other), CodeUnauthorized)
	h.advance(ReplayWindow.Milliseconds() + 1000) // the id is forgotten now
	late := seen
	late.Time = h.now
	wantCode(t, h.applyCmd(late), CodeUnauthorized) // but the signature is too old
	// A fresh signature still works: the owner is not locked out.
	want[*RegisterCheckResult](t, h.applyCmd(signed(h)))
}
