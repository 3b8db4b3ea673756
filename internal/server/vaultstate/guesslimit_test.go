package vaultstate

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// limitOffset is where a Register's or LoginStartFake's guess limit sits in
// an encoded command: version, kind, request id, time, record id, and for
// Register the epoch before it.
const (
	headerSize         = 1 + 1 + 16 + 8 + 32
	registerLimitAt    = headerSize + 8
	fakeLoginLimitAt   = headerSize
	versionWithDefault = 1
)

// withLimit returns enc with its version byte and the guess limit at off
// replaced.
func withLimit(enc []byte, version byte, off int, limit uint32) []byte {
	b := bytes.Clone(enc)
	b[0] = version
	binary.BigEndian.PutUint32(b[off:], limit)
	return b
}

// The state machine has no guess-limit default: a version-2 command
// without a limit is malformed, and the transition refuses one that got
// past the decoder.
func TestCommandWithoutGuessLimitRefused(t *testing.T) {
	h := newHarness(t)
	reg := h.cmd(&Register{Epoch: 1, GuessLimit: 7, Record: testRecord(1)})
	enc, err := reg.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if enc[0] != commandVersion || commandVersion < 2 {
		t.Fatalf("encoded version %d, want the current one (2 or later)", enc[0])
	}
	if got := binary.BigEndian.Uint32(enc[registerLimitAt:]); got != 7 {
		t.Fatalf("limit offset is off: read %d", got)
	}
	var c Command
	if err := c.UnmarshalBinary(withLimit(enc, commandVersion, registerLimitAt, 0)); err == nil || !strings.Contains(err.Error(), "guess limit") {
		t.Fatalf("version-2 Register without a limit: %v", err)
	}
	if _, err := h.cmd(&Register{Epoch: 1, Record: testRecord(1)}).MarshalBinary(); err == nil {
		t.Fatal("a Register without a limit was encoded")
	}
	if _, err := h.cmd(&LoginStartFake{}).MarshalBinary(); err == nil {
		t.Fatal("a LoginStartFake without a limit was encoded")
	}
	// Past the decoder (a caller building Commands in memory), the rules
	// refuse it too.
	acc := &Account{Reserved: 1}
	if r, _ := transition(acc, &Command{Op: &Register{Epoch: 1, Record: testRecord(1)}}); r.(*Error).Code != CodeBadRequest {
		t.Fatalf("transition of a Register without a limit: %+v", r)
	}
	if r, _ := transition(&Account{}, &Command{Op: &LoginStartFake{}}); r.(*Error).Code != CodeBadRequest {
		t.Fatalf("transition of a fake login without a limit: %+v", r)
	}
}

// Entries written by version 1, whose 0 meant 10, replay as they did.
func TestVersion1EntriesKeepTheirMeaning(t *testing.T) {
	h := newHarness(t)
	h.do(&RegisterCheck{})
	reg := h.cmd(&Register{Epoch: 1, GuessLimit: 7, Record: testRecord(1)})
	enc, err := reg.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	enc = enc[:len(enc)-10] // version 4's public shares and proof key (empty), version 5's share generation and credential id, are not in version 1
	v1 := withLimit(enc, versionWithDefault, registerLimitAt, 0)
	var c Command
	if err := c.UnmarshalBinary(v1); err != nil {
		t.Fatalf("version-1 Register: %v", err)
	}
	if got := c.Op.(*Register).GuessLimit; got != 10 {
		t.Fatalf("version-1 Register with limit 0 decoded as %d, want 10", got)
	}
	h.index++
	r := h.m.Apply(Entry{Index: h.index, Term: 1, Data: v1})
	if res, ok := r.(*RegisterResult); !ok || res.GuessLimit != 10 {
		t.Fatalf("replaying a version-1 Register: %+v", r)
	}
	if a := h.account(); a.GuessLimit != 10 {
		t.Fatalf("record's limit %d, want 10", a.GuessLimit)
	}
	// A version-1 entry that named its limit keeps it.
	if err := c.UnmarshalBinary(withLimit(enc, versionWithDefault, registerLimitAt, 3)); err != nil || c.Op.(*Register).GuessLimit != 3 {
		t.Fatalf("version-1 Register with limit 3: %v %+v", err, c.Op)
	}
	// Fake logins too.
	fake, err := h.cmd(&LoginStartFake{GuessLimit: 5}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.UnmarshalBinary(withLimit(fake, versionWithDefault, fakeLoginLimitAt, 0)); err != nil || c.Op.(*LoginStartFake).GuessLimit != 10 {
		t.Fatalf("version-1 fake login with limit 0: %v %+v", err, c.Op)
	}
	// Versions outside 1..commandVersion are refused.
	for _, v := range []byte{0, commandVersion + 1} {
		if err := c.UnmarshalBinary(withLimit(enc, v, registerLimitAt, 7)); err == nil {
			t.Fatalf("command version %d accepted", v)
		}
	}
}
