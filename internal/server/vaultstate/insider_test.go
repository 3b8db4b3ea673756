package vaultstate

import (
	"bytes"
	"testing"
	"time"
)

// Attack 3 of the insiders review: the expected client MAC was replicated in
// clear (in the LoginStart command and the account's pending login), so
// whoever read the Raft stream, a follower's log or its state could finish
// their own failed logins — resetting the count and getting a login ticket:
// unlimited online guesses. Now only HashMAC(mac) travels and is stored,
// and the MAC that finishes the login must hash to it.
func TestReplicatedStateCannotFinishALogin(t *testing.T) {
	h := newHarness(t)
	h.register(1, Auth{})
	secretMAC := mac('S') // what the leader's OPAQUE computed; only the password holder can send it
	start := h.cmd(&LoginStart{Epoch: h.account().Epoch, LoginID: loginID('S'), MACHash: HashMAC(secretMAC)})
	entry, err := start.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(entry, secretMAC) {
		t.Fatal("the LoginStart entry carries the expected MAC")
	}
	want[*LoginStartResult](t, h.applyCmd(start))
	acc := h.account()
	stored, err := acc.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(stored, secretMAC) {
		t.Fatal("the account's state carries the expected MAC")
	}
	// An insider replays what it read as the client MAC: the log entry's
	// bytes after the login id, and the stored hash itself.
	h2 := acc.Pending.MACHash
	for _, forged := range [][]byte{h2[:], append(h2[:], h2[:]...), entry[len(entry)-MaxMACSize:]} {
		if len(forged) < MinMACSize {
			continue
		}
		r := h.do(&LoginFinish{LoginID: loginID('S'), ClientMAC: forged, TicketHash: HashTicket([]byte("t"))})
		if _, ok := r.(*LoginFinishResult); ok {
			t.Fatalf("a login finished with a MAC forged from replicated state (%x…)", forged[:8])
		}
		want[*LoginStartResult](t, h.loginStartWith('S', secretMAC))
	}
	// The real MAC still works.
	want[*LoginFinishResult](t, h.do(&LoginFinish{LoginID: loginID('S'), ClientMAC: secretMAC, TicketHash: HashTicket([]byte("t"))}))
}

// A version-2 LoginStart (which carried the MAC) still replays: its MAC is
// hashed at decoding, and the right finish still succeeds.
func TestVersion2LoginStartReplays(t *testing.T) {
	h := newHarness(t)
	h.register(1, Auth{})
	m := mac('V')
	c := h.cmd(&LoginStart{Epoch: h.account().Epoch, LoginID: loginID('V')})
	v3, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// Version 2: the same fields, the MAC length-prefixed where version 3
	// has the 32-byte hash, and no pacing (9 bytes in version 3) nor
	// blinded element hash (32 bytes in version 4).
	v2 := append(bytes.Clone(v3[:len(v3)-HashSize-9-HashSize]), 0, byte(len(m)))
	v2 = append(v2, m...)
	v2[0] = 2
	var back Command
	if err := back.UnmarshalBinary(v2); err != nil {
		t.Fatalf("version-2 LoginStart: %v", err)
	}
	if got := back.Op.(*LoginStart).MACHash; got != HashMAC(m) {
		t.Fatal("a version-2 MAC was not hashed at decoding")
	}
	h.index++
	want[*LoginStartResult](t, h.m.Apply(Entry{Index: h.index, Term: 1, Data: v2}))
	want[*LoginFinishResult](t, h.do(&LoginFinish{LoginID: loginID('V'), ClientMAC: m, TicketHash: HashTicket([]byte("t"))}))
}

// A right password whose finish arrives after the pending login expired is
// a success from version 3 on; a version-2 entry replays as it was applied
// then (login expired; on the last guess, the record destroyed).
func TestLateRightFinishByVersion(t *testing.T) {
	for _, version := range []byte{2, commandVersion} {
		h := newHarness(t)
		h.register(1, Auth{})
		want[*LoginStartResult](t, h.loginStart('L'))
		h.advance(LoginTTL.Milliseconds() + 1)
		fin := h.cmd(&LoginFinish{LoginID: loginID('L'), ClientMAC: mac('L'), TicketHash: HashTicket([]byte("t"))})
		b, err := fin.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		b[0] = version
		h.index++
		r := h.m.Apply(Entry{Index: h.index, Term: 1, Data: b})
		switch version {
		case 2:
			if e, ok := r.(*Error); !ok || e.Code != CodeLoginExpired {
				t.Fatalf("version 2: %s, want login expired", describe(r))
			}
		default:
			if _, ok := r.(*LoginFinishResult); !ok {
				t.Fatalf("version %d: %s, want a success", version, describe(r))
			}
		}
	}
}

// The last guess's right password, late, must not destroy the record.
func TestLateRightFinishOnLastGuessKeepsRecord(t *testing.T) {
	h := newHarness(t)
	h.register(1, Auth{})
	for i := 1; i < testGuessLimit; i++ {
		want[*LoginStartResult](t, h.loginStart(byte(i)))
		wantCode(t, h.loginFinish(byte(i), 0xEE, "t"), CodeWrongPassword)
	}
	want[*LoginStartResult](t, h.loginStart('Z')) // the last guess
	h.advance(LoginTTL.Milliseconds() + 1)
	want[*LoginFinishResult](t, h.loginFinish('Z', 'Z', "t"))
	if a := h.account(); !a.Live() || a.GuessesUsed != 0 {
		t.Fatalf("record after a late right finish on the last guess: %+v", a)
	}
}

// Attack 6 of the insiders review: the replay window was measured from the
// newest time ever applied, so one command timestamped a year ahead (an
// injected entry, a leader's clock gone wrong) expired every request id at
// once, and a captured request could be replayed. From version 3 a command
// moves the clock at most MaxClockStep.
func TestFarFutureTimeKeepsReplayProtection(t *testing.T) {
	h := newHarness(t)
	h.register(1, Auth{})
	captured := h.cmd(&Status{}) // a request someone recorded
	want[*StatusResult](t, h.applyCmd(captured))

	future := h.cmd(&Status{})
	future.Time = h.now + 365*24*3600*1000
	want[*StatusResult](t, h.applyCmd(future))

	// The captured request, still fresh for the vault (a minute old), comes
	// back: it must still be a replay.
	captured.Time = h.now + 60*1000
	wantCode(t, h.applyCmd(captured), CodeReplay)

	// The clock moved one step, not a year.
	tick := h.cmd(&Tick{})
	tick.Time, tick.RecordID = h.now, RecordID{}
	r := want[*TickResult](t, h.applyCmd(tick))
	if limit := h.now + 2*MaxClockStep.Milliseconds() + 60*1000; r.Now > limit {
		t.Fatalf("clock at %d after one far-future command, want at most %d", r.Now, limit)
	}
}

// An idle fleet's ticks keep the clock current: after an hour of ticks
// every 30 s, a command's time is not held back.
func TestTicksKeepTheClock(t *testing.T) {
	h := newHarness(t)
	h.register(1, Auth{})
	for range 120 {
		h.advance(30 * 1000)
		tick := h.cmd(&Tick{})
		tick.RecordID = RecordID{}
		if r := want[*TickResult](t, h.applyCmd(tick)); r.Now != h.now {
			t.Fatalf("tick at %d answered %d", h.now, r.Now)
		}
	}
	// A command an hour after the last one without ticks would be held
	// back to MaxClockStep; with them it is on time.
	want[*LoginStartResult](t, h.loginStart('T'))
	if a := h.account(); a.GuessTimes[len(a.GuessTimes)-1] != h.now {
		t.Fatalf("guess time %d, want %d", a.GuessTimes[len(a.GuessTimes)-1], h.now)
	}
	// A tick names no account.
	bad := h.cmd(&Tick{})
	if _, err := bad.MarshalBinary(); err == nil && bad.RecordID != (RecordID{}) {
		t.Fatal("a tick with a record id encoded")
	}
}

// The same attack on a version-2 entry (what every vault before version 3
// wrote) still succeeds, as it did then: this is the attack the clamp
// closes, and old log entries keep their meaning on replay.
func TestFarFutureTimeVersion2AsBefore(t *testing.T) {
	h := newHarness(t)
	h.register(1, Auth{})
	captured := h.cmd(&Status{})
	want[*StatusResult](t, h.applyCmd(captured))
	future := h.cmd(&Status{})
	future.Time = h.now + 365*24*3600*1000
	b, err := future.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	b[0] = 2
	h.index++
	want[*StatusResult](t, h.m.Apply(Entry{Index: h.index, Term: 1, Data: b}))
	captured.Time = h.now + 60*1000
	if _, ok := h.applyCmd(captured).(*StatusResult); !ok {
		t.Fatal("under version-2 rules the replay was refused: the test no longer shows the old attack")
	}
}

// Pacing (attack 7): with the production schedule, spending a budget of 10
// takes hours; a guess too soon is refused with the wait and counts
// nothing; a success resets the schedule.
func TestPacingSpacesOutWrongGuesses(t *testing.T) {
	pace := Pacing{Free: 3, Base: 300, Max: 8 * 3600}
	h := newHarness(t)
	h.register(1, Auth{})
	start := h.now
	for i := 1; i <= testGuessLimit; i++ {
		c := h.cmd(&LoginStart{Epoch: 1, LoginID: loginID(byte(i)), MACHash: HashMAC(mac(byte(i))), Pacing: pace})
		r := h.applyCmd(c)
		if e, ok := r.(*Error); ok && e.Code == CodeThrottled {
			if a := h.account(); a.GuessesUsed != uint32(i-1) {
				t.Fatalf("a throttled guess was counted: %d used", a.GuessesUsed)
			}
			h.advance(e.RetryAfter)
			c = h.cmd(&LoginStart{Epoch: 1, LoginID: loginID(byte(i)), MACHash: HashMAC(mac(byte(i))), Pacing: pace})
			r = h.applyCmd(c)
		}
		want[*LoginStartResult](t, r)
		if i < testGuessLimit {
			wantCode(t, h.loginFinish(byte(i), 0xEE, "t"), CodeWrongPassword)
		} else {
			wantCode(t, h.loginFinish(byte(i), 0xEE, "t"), CodeDestroyed)
		}
	}
	spent := time.Duration(h.now-start) * time.Millisecond
	if spent < 10*time.Hour {
		t.Fatalf("a budget of %d spent in %s, want hours", testGuessLimit, spent)
	}
	t.Logf("a budget of %d at the fastest pace: %s", testGuessLimit, spent.Round(time.Minute))
	// Without pacing (a zero schedule) the same budget goes at line speed:
	// the attack pacing closes.
	h2 := newHarness(t)
	h2.register(1, Auth{})
	for i := 1; i <= testGuessLimit; i++ {
		want[*LoginStartResult](t, h2.loginStart(byte(i)))
		h2.loginFinish(byte(i), 0xEE, "t")
	}
	if a := h2.account(); !a.Destroyed {
		t.Fatalf("without pacing the budget was not spent at once: %+v", a)
	}
}

func TestPacingWait(t *testing.T) {
	p := Pacing{Free: 3, Base: 300, Max: 8 * 3600}
	for used, want := range map[uint32]int64{0: 0, 2: 0, 3: 300, 4: 600, 5: 1200, 9: 19200, 10: 8 * 3600, 99: 8 * 3600} {
		if got := p.Wait(used); got != want*1000 {
			t.Errorf("Wait(%d) = %d ms, want %d s", used, got, want)
		}
	}
	if (Pacing{}).Wait(50) != 0 {
		t.Error("a zero schedule waits")
	}
}

// A relay's retry of a LoginStart whose answer was lost is answered again,
// never counting a second guess, and either answer's right password
// finishes the login (attack 7, "a relay retry must never spend a guess
// without an answer").
func TestRetriedLoginStartCountsOnce(t *testing.T) {
	for _, finishWith := range []string{"first", "retry"} {
		h := newHarness(t)
		h.register(1, Auth{})
		first := h.cmd(&LoginStart{Epoch: 1, LoginID: loginID('F'), MACHash: HashMAC(mac('F'))})
		want[*LoginStartResult](t, h.applyCmd(first))
		retry := first // the same sealed request, so the same request id; a new KE2
		retry.Op = &LoginStart{Epoch: 1, LoginID: loginID('R'), MACHash: HashMAC(mac('R'))}
		r := want[*LoginStartResult](t, h.applyCmd(retry))
		if !r.Retried || r.GuessesUsed != 1 || r.LoginID != loginID('F') {
			t.Fatalf("retry: %+v", r)
		}
		m := mac('F')
		if finishWith == "retry" {
			m = mac('R')
		}
		want[*LoginFinishResult](t, h.do(&LoginFinish{LoginID: loginID('F'), ClientMAC: m, TicketHash: HashTicket([]byte("t"))}))
	}
}

// Without pacing, a new leader whose clock is a little behind the last
// guess's is never throttled (the fault harness found a "wait 0s").
func TestNoPacingNoThrottleUnderClockSkew(t *testing.T) {
	h := newHarness(t)
	h.register(1, Auth{})
	want[*LoginStartResult](t, h.loginStart(1))
	h.loginFinish(1, 0xEE, "t")
	h.now -= 500 // the next leader's clock
	want[*LoginStartResult](t, h.loginStart(2))
}
