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
	chk := want[*RegisterCheckResult](t, h.do(&RegisterCheck{Blinded: blind, ShareGen: 1}))
	if got := h.account().ReservedBlinded; got != blind {
		t.Fatal("RegisterCheck did not keep the blinded element's hash")
	}
	rec := testRecord(1)
	rec.PublicShares = bytes.Repeat([]byte{7}, 3*34)
	rec.ShareGen = 1
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

// Reshare (PROTOCOL.md §7, "Resharing") moves a threshold record to a new
// share generation and changes nothing a login checks: not the OPAQUE
// record, not the guess count, not a pending login (the account key is the
// same). It is refused for a record that changed and for a record without
// shares; a retry
// after it moved answers Moved false.
func TestReshareRules(t *testing.T) {
	h := newHarness(t)
	chk := want[*RegisterCheckResult](t, h.do(&RegisterCheck{Blinded: HashBlinded([]byte("B")), ShareGen: 1}))
	rec := testRecord(1)
	rec.PublicShares, rec.ShareGen, rec.CredID = bytes.Repeat([]byte{7}, 3*34), 1, []byte("alice\x00\x00\x00\x00\x00\x00\x00\x00\x01")
	want[*RegisterResult](t, h.do(&Register{GuessLimit: testGuessLimit, Epoch: chk.Epoch, Record: rec}))
	if !h.account().Record.Reshareable() {
		t.Fatal("a threshold record with its credential id is not reshareable")
	}
	// One wrong guess, so the count can be checked after the move.
	want[*LoginStartResult](t, h.do(&LoginStart{Epoch: chk.Epoch, LoginID: loginID('L'), Blinded: HashBlinded([]byte("K"))}))
	var offset [OffsetSize]byte
	offset[0] = 9
	newShares := bytes.Repeat([]byte{8}, 3*34)
	rs := &Reshare{Epoch: chk.Epoch, FromGen: 1, ToGen: 2, Offset: offset, PublicShares: newShares}
	wantCode(t, h.do(&Reshare{Epoch: chk.Epoch + 1, FromGen: 1, ToGen: 2, Offset: offset, PublicShares: newShares}), CodeConflict)
	wantCode(t, h.do(&Reshare{Epoch: chk.Epoch, FromGen: 3, ToGen: 4, Offset: offset, PublicShares: newShares}), CodeConflict)
	before := h.account()
	if r := want[*ReshareResult](t, h.do(rs)); !r.Moved {
		t.Fatal("the reshare did not move the record")
	}
	after := h.account()
	if after.Record.ShareGen != 2 || !bytes.Equal(after.Record.Offset, offset[:]) || !bytes.Equal(after.Record.PublicShares, newShares) {
		t.Fatalf("after the reshare: generation %d, offset %x", after.Record.ShareGen, after.Record.Offset)
	}
	if after.GuessesUsed != before.GuessesUsed || !bytes.Equal(after.Record.Opaque, before.Record.Opaque) || after.Epoch != before.Epoch || after.Pending == nil {
		t.Fatal("the reshare changed what a login checks")
	}
	if r := want[*ReshareResult](t, h.do(&Reshare{Epoch: chk.Epoch, FromGen: 1, ToGen: 2, Offset: offset, PublicShares: newShares})); r.Moved {
		t.Fatal("a retried reshare moved the record again")
	}
	// The account round-trips through its version-4 encoding.
	b, err := after.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var back Account
	if err := back.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if back.Record.ShareGen != 2 || !bytes.Equal(back.Record.Offset, offset[:]) || !bytes.Equal(back.Record.CredID, rec.CredID) {
		t.Fatal("the reshare fields did not round-trip")
	}

	// A registration evaluated under one generation cannot store shares of
	// another.
	h2 := newHarness(t)
	c2 := want[*RegisterCheckResult](t, h2.do(&RegisterCheck{Blinded: HashBlinded([]byte("B")), ShareGen: 2}))
	wantCode(t, h2.do(&Register{GuessLimit: testGuessLimit, Epoch: c2.Epoch, Record: rec}), CodeBadRequest)

	// A record without shares has nothing to move; Reshare needs version 5.
	h3 := newHarness(t)
	h3.register(1, Auth{})
	wantCode(t, h3.do(&Reshare{Epoch: 1, FromGen: 1, ToGen: 2, Offset: offset, PublicShares: newShares}), CodeBadRequest)
	c := Command{Op: rs, Time: 1}
	enc, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	enc[0] = 4
	if err := new(Command).UnmarshalBinary(enc); err == nil {
		t.Fatal("a version-4 Reshare decoded")
	}
}
