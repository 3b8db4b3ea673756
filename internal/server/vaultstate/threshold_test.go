package vaultstate

import (
	"bytes"
	"testing"
)

// On a threshold fleet (PROTOCOL.md §7) the reservation and the pending
// login keep the blinded element's hash, which a replica compares before
// it evaluates its share; the KE2's MAC hash arrives in LoginMAC.
func TestThresholdLogin(t *testing.T) {
	h := newHarness(t)
	blind := HashBlinded([]byte("the registration's blinded element"))
	chk := want[*RegisterCheckResult](t, h.do(&RegisterCheck{Blinded: blind}))
	if got := h.account().ReservedBlinded; got != blind {
		t.Fatal("RegisterCheck did not keep the blinded element's hash")
	}
	rec := testRecord(1)
	rec.PublicShares = bytes.Repeat([]byte{7}, 3*34)
	want[*RegisterResult](t, h.do(&Register{GuessLimit: testGuessLimit, Epoch: chk.Epoch, Record: rec}))
	acc := h.account()
	if acc.ReservedBlinded != (Hash{}) {
		t.Fatal("the reservation's blinded element survived the registration: replicas would still evaluate for it")
	}
	if !bytes.Equal(acc.Record.PublicShares, rec.PublicShares) {
		t.Fatal("the record lost its public shares")
	}

	lb := HashBlinded([]byte("KE1's blinded element"))
	want[*LoginStartResult](t, h.do(&LoginStart{Epoch: acc.Epoch, LoginID: loginID('L'), Blinded: lb}))
	if p := h.account().Pending; p == nil || p.Blinded != lb || p.MACHash != (Hash{}) {
		t.Fatalf("pending login after a threshold LoginStart: %+v", p)
	}
	// Before LoginMAC no finish can succeed: the MAC hash is zero.
	wantCode(t, h.do(&LoginMAC{LoginID: loginID('X'), MACHash: HashMAC(mac('L'))}), CodeLoginExpired)
	want[*LoginMACResult](t, h.do(&LoginMAC{LoginID: loginID('L'), MACHash: HashMAC(mac('L'))}))
	want[*LoginFinishResult](t, h.loginFinish('L', 'L', "ticket"))

	// The account round-trips through its version-3 encoding.
	want[*LoginStartResult](t, h.do(&LoginStart{Epoch: acc.Epoch, LoginID: loginID('M'), Blinded: lb}))
	a := h.account()
	b, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var back Account
	if err := back.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if back.Pending.Blinded != lb || !bytes.Equal(back.Record.PublicShares, rec.PublicShares) {
		t.Fatal("the threshold fields did not round-trip")
	}
}

// LoginMAC is a version-4 command: an older encoding of it does not decode.
func TestLoginMACNeedsVersion4(t *testing.T) {
	c := Command{Op: &LoginMAC{LoginID: loginID(1), MACHash: HashMAC(mac(1))}, Time: 1}
	b, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	b[0] = 3
	if err := new(Command).UnmarshalBinary(b); err == nil {
		t.Fatal("a version-3 LoginMAC decoded")
	}
}
