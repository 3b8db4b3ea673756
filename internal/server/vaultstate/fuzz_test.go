package vaultstate

import (
	"bytes"
	"reflect"
	"testing"
)

// commandSeeds returns one valid encoding of every operation.
func commandSeeds(t testing.TB) [][]byte {
	rec := testRecord(1)
	ops := []Op{
		&RegisterCheck{},
		&RegisterCheck{Auth: proofAuth(1)},
		&Register{Epoch: 3, GuessLimit: 10, Record: rec, Auth: ticketAuth("t")},
		&LoginStart{Epoch: 1, LoginID: loginID(1), MACHash: HashMAC(mac(1))},
		&LoginStartFake{GuessLimit: 5},
		&LoginFinish{LoginID: loginID(2), ClientMAC: mac(2), TicketHash: HashTicket([]byte("x"))},
		&Disable{Auth: ticketAuth("y")},
		&Status{},
	}
	var out [][]byte
	for i, op := range ops {
		c := Command{Time: t0 + int64(i), Op: op}
		c.RequestID[0], c.RecordID[0] = byte(i), byte(i)
		b, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	// Member directory commands carry a zero record id.
	for i, op := range []Op{
		&SetMember{ID: "r1", URL: "https://10.0.0.1:7100", DataCentre: "fra1"},
		&SetMember{ID: "r2", DataCentre: "ams1", FillOnly: true},
		&ForgetMember{ID: "r3"},
	} {
		c := Command{Time: t0 + int64(i), Op: op}
		c.RequestID[0] = byte(0x80 + i)
		b, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func FuzzDecodeCommand(f *testing.F) {
	for _, b := range commandSeeds(f) {
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Command
		if err := c.UnmarshalBinary(b); err != nil {
			return
		}
		// What decodes re-encodes to the same bytes (canonical) in the
		// current version; an older version's command re-encodes in the
		// current one to the same command.
		again, err := c.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded command does not encode: %v", err)
		}
		if b[0] == commandVersion && !bytes.Equal(again, b) {
			t.Fatalf("not canonical:\n%x\n%x", b, again)
		}
		var back Command
		err = back.UnmarshalBinary(again)
		c.version = 0 // the same command, re-encoded in today's version
		if err != nil || back.String() != c.String() || !reflect.DeepEqual(back, c) {
			t.Fatalf("re-encoding changed the command: %v\n%v\n%v", err, c, back)
		}
		_ = c.String()
	})
}

func accountSeeds(t testing.TB) [][]byte {
	rec := testRecord(1)
	accs := []Account{
		{},
		{Epoch: 1, Reserved: 2, Record: &rec, GuessesUsed: 2, GuessLimit: 10, GuessTimes: []int64{t0, t0 + 1},
			LastSuccess: t0 - 5, Pending: &PendingLogin{ID: loginID(1), MACHash: HashMAC(mac(1)), Expiry: t0 + 100},
			Ticket: &Ticket{Hash: HashTicket([]byte("t")), Expiry: t0 + 600}},
		{Epoch: 4, Reserved: 4, Destroyed: true, DestroyedAt: t0},
		{Epoch: 2, Reserved: 3, Disabled: true},
	}
	var out [][]byte
	for _, a := range accs {
		b, err := a.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func FuzzDecodeAccount(f *testing.F) {
	for _, b := range accountSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var a Account
		if err := a.UnmarshalBinary(b); err != nil {
			return
		}
		again, err := a.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded account does not encode: %v", err)
		}
		if b[0] == accountVersion && !bytes.Equal(again, b) {
			t.Fatalf("not canonical:\n%x\n%x", b, again)
		}
		var back Account
		if err := back.UnmarshalBinary(again); err != nil || !reflect.DeepEqual(&back, &a) {
			t.Fatalf("re-encoding changed the account: %v", err)
		}
		// The rules accept whatever decodes.
		c := &Command{Time: t0, Op: &Status{}}
		transition(a.Clone(), c)
	})
}

func TestEncodingRoundTrip(t *testing.T) {
	for _, b := range commandSeeds(t) {
		var c Command
		if err := c.UnmarshalBinary(b); err != nil {
			t.Fatalf("%x: %v", b, err)
		}
		again, _ := c.MarshalBinary()
		if !bytes.Equal(again, b) {
			t.Fatalf("round trip changed %v", c)
		}
	}
	for _, b := range accountSeeds(t) {
		var a Account
		if err := a.UnmarshalBinary(b); err != nil {
			t.Fatalf("%x: %v", b, err)
		}
	}
	// Bad values are refused at encoding time, before they reach the log.
	bad := []Command{
		{Op: nil},
		{Time: -1, Op: &Status{}},
		{Op: &LoginFinish{ClientMAC: []byte{1}}},
		{Op: &Register{Record: Record{Opaque: []byte{1}}}},
		{Op: &Register{GuessLimit: MaxGuessLimit + 1, Record: testRecord(1)}},
		{Op: &Disable{Auth: Auth{Kind: 7}}},
	}
	for _, c := range bad {
		if _, err := c.MarshalBinary(); err == nil {
			t.Errorf("%v encoded", c)
		}
	}
}
