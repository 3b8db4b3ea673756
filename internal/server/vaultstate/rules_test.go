package vaultstate

import (
	"slices"
	"testing"
)

func TestTenLoginStartsWithoutFinishThenDestroyed(t *testing.T) {
	h := newHarness(t)
	epoch := h.register(1, Auth{})
	for i := 1; i <= testGuessLimit; i++ {
		h.advance(1000)
		r := want[*LoginStartResult](t, h.loginStart(byte(i)))
		if r.GuessesUsed != uint32(i) || r.GuessLimit != testGuessLimit || r.Fake {
			t.Fatalf("LoginStart %d: %+v", i, r)
		}
	}
	h.advance(1000)
	wantCode(t, h.loginStart(11), CodeDestroyed)
	a := h.account()
	if a.Live() || !a.Destroyed || a.DestroyedAt != h.now || a.Epoch != epoch || a.Pending != nil ||
		a.Ticket != nil || a.GuessesUsed != 0 || len(a.GuessTimes) != 0 {
		t.Fatalf("after destruction: %v %+v", a, a)
	}
	// The record is gone for good: logins get Destroyed, not a fake.
	wantCode(t, h.do(&LoginStartFake{GuessLimit: testGuessLimit}), CodeDestroyed)
	wantCode(t, h.do(&LoginStart{Epoch: epoch, LoginID: loginID(1), MACHash: HashMAC(mac(1))}), CodeConflict)
	wantCode(t, h.loginFinish(10, 10, "t"), CodeDestroyed)
	st := want[*StatusResult](t, h.do(&Status{}))
	if st.Registered || !st.Destroyed || st.Epoch != epoch || st.DestroyedAt == 0 {
		t.Fatalf("status: %+v", st)
	}
}

func TestNineWrongThenRight(t *testing.T) {
	h := newHarness(t)
	h.register(1, Auth{})
	var times []int64
	for i := 1; i <= 9; i++ {
		h.advance(60_000)
		times = append(times, h.now)
		want[*LoginStartResult](t, h.loginStart(byte(i))) // wrong password: no LoginFinish
	}
	h.advance(60_000)
	r := want[*LoginStartResult](t, h.loginStart(10))
	if r.GuessesUsed != 10 {
		t.Fatalf("guesses used %d, want 10", r.GuessesUsed)
	}
	h.advance(500)
	okAt := h.now
	res := want[*LoginFinishResult](t, h.loginFinish(10, 10, "ticket-1"))
	if !slices.Equal(res.FailedGuessTimes, times) {
		t.Fatalf("history %v, want %v", res.FailedGuessTimes, times)
	}
	if res.PreviousSuccess != 0 || res.Epoch != 1 || !slices.Equal(res.WrappedKey, testRecord(1).WrappedKey) ||
		res.TicketExpiry != okAt+TicketTTL.Milliseconds() {
		t.Fatalf("result: %+v", res)
	}
	a := h.account()
	if a.GuessesUsed != 0 || len(a.GuessTimes) != 0 || a.Pending != nil || a.LastSuccess != okAt || a.Ticket == nil {
		t.Fatalf("after success: %+v", a)
	}
	// The next success reports no failures and the previous success time.
	h.advance(1000)
	want[*LoginStartResult](t, h.loginStart(20))
	res = want[*LoginFinishResult](t, h.loginFinish(20, 20, "ticket-2"))
	if len(res.FailedGuessTimes) != 0 || res.PreviousSuccess != okAt {
		t.Fatalf("second success: %+v", res)
	}
}

func TestWrongMACAndBudgetSpentAtFinish(t *testing.T) {
	h := newHarness(t)
	h.register(1, Auth{})
	for i := 1; i < testGuessLimit; i++ {
		want[*LoginStartResult](t, h.loginStart(byte(i)))
		e := wantCode(t, h.loginFinish(byte(i), 0xEE, "x"), CodeWrongPassword)
		if e.GuessesLeft != uint32(testGuessLimit-i) || e.GuessLimit != testGuessLimit {
			t.Fatalf("guess %d: %+v", i, e)
		}
		// The pending login is cleared: the right MAC no longer helps.
		wantCode(t, h.loginFinish(byte(i), byte(i), "x"), CodeLoginExpired)
	}
	want[*LoginStartResult](t, h.loginStart(10))
	wantCode(t, h.loginFinish(10, 0xEE, "x"), CodeDestroyed)
	if a := h.account(); a.Live() || !a.Destroyed {
		t.Fatalf("not destroyed: %v", a)
	}
}

func TestLoginFinishSupersededOrExpired(t *testing.T) {
	h := newHarness(t)
	h.register(1, Auth{})

	// Superseded: A's answer is refused, B stays pending and succeeds.
	want[*LoginStartResult](t, h.loginStart('A'))
	want[*LoginStartResult](t, h.loginStart('B'))
	wantCode(t, h.loginFinish('A', 'A', "t"), CodeLoginExpired)
	want[*LoginFinishResult](t, h.loginFinish('B', 'B', "t"))

	// Expired with a wrong password: refused as expired, and the pending
	// login is cleared.
	want[*LoginStartResult](t, h.loginStart('C'))
	h.advance(LoginTTL.Milliseconds())
	wantCode(t, h.loginFinish('C', 'X', "t"), CodeLoginExpired)
	if a := h.account(); a.Pending != nil || a.GuessesUsed != 1 {
		t.Fatalf("after expiry: %+v", a)
	}
	// Just before the expiry it works.
	want[*LoginStartResult](t, h.loginStart('D'))
	h.advance(LoginTTL.Milliseconds() - 1)
	res := want[*LoginFinishResult](t, h.loginFinish('D', 'D', "t"))
	if len(res.FailedGuessTimes) != 1 {
		t.Fatalf("history %v, want the expired guess", res.FailedGuessTimes)
	}
	// A finished login cannot be finished twice.
	wantCode(t, h.loginFinish('D', 'D', "t"), CodeLoginExpired)
	// Expired with the right password: a success (its guess was counted).
	want[*LoginStartResult](t, h.loginStart('E'))
	h.advance(LoginTTL.Milliseconds())
	want[*LoginFinishResult](t, h.loginFinish('E', 'E', "t"))
	if a := h.account(); a.Pending != nil || a.GuessesUsed != 0 {
		t.Fatalf("after a late right finish: %+v", a)
	}
}

func TestReRegistrationNeedsAuthorization(t *testing.T) {
	h := newHarness(t)
	h.register(1, Auth{})

	// No authorization, a wrong proof, a ticket never issued: refused.
	for _, auth := range []Auth{{}, proofAuth(9), ticketAuth("never issued")} {
		wantCode(t, h.do(&RegisterCheck{Auth: auth}), CodeUnauthorized)
		wantCode(t, h.do(&Register{GuessLimit: testGuessLimit, Epoch: 2, Record: testRecord(2), Auth: auth}), CodeUnauthorized)
	}
	if a := h.account(); a.Epoch != 1 || a.Record.Opaque[0] != 1 {
		t.Fatalf("record changed: %v", a)
	}

	// With a login ticket: once.
	want[*LoginStartResult](t, h.loginStart(1))
	want[*LoginFinishResult](t, h.loginFinish(1, 1, "T1"))
	if e := h.register(2, ticketAuth("T1")); e < 2 {
		t.Fatalf("epoch %d", e)
	}
	wantCode(t, h.do(&RegisterCheck{Auth: ticketAuth("T1")}), CodeUnauthorized)
	wantCode(t, h.do(&Disable{Auth: ticketAuth("T1")}), CodeUnauthorized)

	// An expired ticket is refused.
	want[*LoginStartResult](t, h.loginStart(2))
	want[*LoginFinishResult](t, h.loginFinish(2, 2, "T2"))
	h.advance(TicketTTL.Milliseconds())
	wantCode(t, h.do(&RegisterCheck{Auth: ticketAuth("T2")}), CodeUnauthorized)

	// With the key proof of the current record (record 2's proof).
	wantCode(t, h.do(&RegisterCheck{Auth: proofAuth(1)}), CodeUnauthorized)
	e3 := h.register(3, proofAuth(2))
	a := h.account()
	if a.Epoch != e3 || a.Record.Opaque[0] != 3 || a.GuessesUsed != 0 {
		t.Fatalf("after proof registration: %+v", a)
	}
}

func TestUnauthorizedRegistrationResetsNothing(t *testing.T) {
	h := newHarness(t)
	h.register(1, Auth{})
	for i := 1; i <= 5; i++ {
		want[*LoginStartResult](t, h.loginStart(byte(i)))
	}
	before := h.account()

	// The owner starts an authorized re-registration...
	chk := want[*RegisterCheckResult](t, h.do(&RegisterCheck{Auth: proofAuth(1)}))
	// ...and an attacker (who has the account's token, not the key) tries
	// to finish a registration of its own with that epoch, or a later one.
	for _, ep := range []uint64{chk.Epoch, chk.Epoch + 1} {
		wantCode(t, h.do(&Register{GuessLimit: testGuessLimit, Epoch: ep, Record: testRecord(66), Auth: Auth{}}), CodeUnauthorized)
		wantCode(t, h.do(&Register{GuessLimit: testGuessLimit, Epoch: ep, Record: testRecord(66), Auth: proofAuth(66)}), CodeUnauthorized)
	}
	wantCode(t, h.do(&Disable{}), CodeUnauthorized)
	after := h.account()
	after.Reserved = before.Reserved // the owner's RegisterCheck reserved an epoch
	if after.GuessesUsed != 5 || after.String() != before.String() || after.Record.Opaque[0] != 1 {
		t.Fatalf("attacker changed the account: %v -> %v", before, after)
	}
	// A guess after the attempts still counts from 5.
	r := want[*LoginStartResult](t, h.loginStart(6))
	if r.GuessesUsed != 6 {
		t.Fatalf("guesses used %d, want 6", r.GuessesUsed)
	}
	// The owner's registration goes through and resets the count.
	reg := want[*RegisterResult](t, h.do(&Register{GuessLimit: testGuessLimit, Epoch: chk.Epoch, Record: testRecord(2), Auth: proofAuth(1)}))
	if a := h.account(); a.GuessesUsed != 0 || a.Epoch != reg.Epoch || a.Pending != nil {
		t.Fatalf("after owner registration: %+v", a)
	}
}

func TestRegisterEpochs(t *testing.T) {
	h := newHarness(t)
	// RegisterStarts on an account without a live record (no authorization
	// needed) each get a fresh epoch; only the latest one can finish.
	var epochs []uint64
	for range 3 {
		epochs = append(epochs, want[*RegisterCheckResult](t, h.do(&RegisterCheck{})).Epoch)
	}
	if !slices.Equal(epochs, []uint64{1, 2, 3}) {
		t.Fatalf("epochs %v", epochs)
	}
	wantCode(t, h.do(&Register{GuessLimit: testGuessLimit, Epoch: 2, Record: testRecord(1)}), CodeBadRequest)
	wantCode(t, h.do(&Register{GuessLimit: testGuessLimit, Epoch: 4, Record: testRecord(1)}), CodeBadRequest)
	want[*RegisterResult](t, h.do(&Register{GuessLimit: testGuessLimit, Epoch: 3, Record: testRecord(1)}))
	// A second Register with the same epoch is stale.
	wantCode(t, h.do(&Register{GuessLimit: testGuessLimit, Epoch: 3, Record: testRecord(2), Auth: proofAuth(1)}), CodeBadRequest)
	if e := h.register(2, proofAuth(1)); e != 4 {
		t.Fatalf("epoch %d, want 4", e)
	}
	// A registration's OPRF epoch is never handed out again, even after the
	// record is erased.
	want[*DisableResult](t, h.do(&Disable{Auth: proofAuth(2)}))
	if e := want[*RegisterCheckResult](t, h.do(&RegisterCheck{})).Epoch; e != 5 {
		t.Fatalf("epoch after disable %d, want 5", e)
	}
}

func TestLoginStartConflicts(t *testing.T) {
	h := newHarness(t)
	// Fake login on an unknown account: plausible, changes nothing.
	r := want[*LoginStartResult](t, h.do(&LoginStartFake{GuessLimit: 7}))
	if !r.Fake || r.GuessesUsed != 1 || r.GuessLimit != 7 {
		t.Fatalf("fake: %+v", r)
	}
	wantCode(t, h.loginFinish(1, 1, "t"), CodeLoginExpired)
	if a := h.account(); !a.isZero() {
		t.Fatalf("fake login stored state: %v", a)
	}
	// A real LoginStart computed before the record existed or changed: no
	// guess counted.
	wantCode(t, h.do(&LoginStart{Epoch: 0, LoginID: loginID(1), MACHash: HashMAC(mac(1))}), CodeConflict)
	epoch := h.register(1, Auth{})
	wantCode(t, h.do(&LoginStartFake{GuessLimit: testGuessLimit}), CodeConflict)
	wantCode(t, h.do(&LoginStart{Epoch: epoch - 1, LoginID: loginID(1), MACHash: HashMAC(mac(1))}), CodeConflict)
	if a := h.account(); a.GuessesUsed != 0 {
		t.Fatalf("conflicting LoginStart counted: %+v", a)
	}
}

func TestDisableAndReenable(t *testing.T) {
	h := newHarness(t)
	wantCode(t, h.do(&Disable{Auth: proofAuth(1)}), CodeNotRegistered)
	epoch := h.register(1, Auth{})
	want[*LoginStartResult](t, h.loginStart(1))
	wantCode(t, h.do(&Disable{}), CodeUnauthorized)
	wantCode(t, h.do(&Disable{Auth: proofAuth(2)}), CodeUnauthorized)
	d := want[*DisableResult](t, h.do(&Disable{Auth: proofAuth(1)}))
	if d.Epoch != epoch {
		t.Fatalf("disable epoch %d", d.Epoch)
	}
	a := h.account()
	if a.Live() || !a.Disabled || a.Destroyed || a.Epoch != epoch || a.GuessesUsed != 0 || a.Pending != nil {
		t.Fatalf("after disable: %+v", a)
	}
	st := want[*StatusResult](t, h.do(&Status{}))
	if st.Registered || !st.Disabled || st.Epoch != epoch {
		t.Fatalf("status: %+v", st)
	}
	r := want[*LoginStartResult](t, h.do(&LoginStartFake{GuessLimit: testGuessLimit}))
	if !r.Fake {
		t.Fatal("not fake")
	}
	wantCode(t, h.do(&Disable{Auth: proofAuth(1)}), CodeNotRegistered)
	// Turning on again needs no authorization and starts a fresh budget.
	e2 := h.register(2, Auth{})
	if a := h.account(); e2 <= epoch || a.Disabled || a.GuessesUsed != 0 || a.GuessLimit != testGuessLimit {
		t.Fatalf("after re-enable: %+v", a)
	}
	// With a ticket.
	want[*LoginStartResult](t, h.loginStart(3))
	want[*LoginFinishResult](t, h.loginFinish(3, 3, "T"))
	want[*DisableResult](t, h.do(&Disable{Auth: ticketAuth("T")}))
}

func TestRegistrationAfterDestroyHasFreshBudget(t *testing.T) {
	h := newHarness(t)
	h.register(1, Auth{})
	for i := 0; i <= testGuessLimit; i++ {
		h.loginStart(byte(i))
	}
	if !h.account().Destroyed {
		t.Fatal("not destroyed")
	}
	e := h.register(2, Auth{})
	a := h.account()
	if e != 2 || !a.Live() || a.Destroyed || a.DestroyedAt != 0 || a.GuessesUsed != 0 {
		t.Fatalf("after re-registration: %+v", a)
	}
	for i := 1; i <= testGuessLimit; i++ {
		want[*LoginStartResult](t, h.loginStart(byte(i)))
	}
	wantCode(t, h.loginStart(11), CodeDestroyed)
}

func TestGuessLimitPerRegistration(t *testing.T) {
	h := newHarness(t)
	chk := want[*RegisterCheckResult](t, h.do(&RegisterCheck{}))
	reg := want[*RegisterResult](t, h.do(&Register{Epoch: chk.Epoch, GuessLimit: 3, Record: testRecord(1)}))
	if reg.GuessLimit != 3 {
		t.Fatalf("limit %d", reg.GuessLimit)
	}
	for i := 1; i <= 3; i++ {
		want[*LoginStartResult](t, h.loginStart(byte(i)))
	}
	wantCode(t, h.loginStart(4), CodeDestroyed)
}

func TestReplay(t *testing.T) {
	h := newHarness(t)
	h.register(1, Auth{})
	c := h.cmd(&LoginStart{Epoch: 1, LoginID: loginID(1), MACHash: HashMAC(mac(1))})
	want[*LoginStartResult](t, h.applyCmd(c))
	// The same LoginStart again — a relay's retry whose first answer was
	// lost — is answered again, counting nothing more.
	if r := want[*LoginStartResult](t, h.applyCmd(c)); !r.Retried || r.GuessesUsed != 1 || r.LoginID != loginID(1) {
		t.Fatalf("retried LoginStart: %+v", r)
	}
	before := dump(t, h.m)
	// Another command under the same request id is refused and changes
	// nothing but the applied index.
	c2 := c
	c2.Time += 1000
	c2.Op = &Status{}
	wantCode(t, h.applyCmd(c2), CodeReplay)
	after := dump(t, h.m)
	// Only the log bookkeeping moves: the applied index and the newest
	// command time (the leader's clock).
	for _, k := range []string{"applied", "newest"} {
		delete(before, "meta/"+hexs(k))
		delete(after, "meta/"+hexs(k))
	}
	if d := diffDumps(before, after); d != "" {
		t.Fatalf("replay changed state:\n%s", d)
	}
	if a := h.account(); a.GuessesUsed != 1 {
		t.Fatalf("replay counted a guess: %d", a.GuessesUsed)
	}
	// Within the window it is still refused; once newer commands move the
	// window past it, the id is forgotten.
	h.advance(ReplayWindow.Milliseconds() - 1)
	h.do(&Status{})
	wantCode(t, h.applyCmd(c), CodeReplay)
	h.advance(2)
	h.do(&Status{})
	c.Time = h.now
	want[*LoginStartResult](t, h.applyCmd(c))
	// The bucket keeps only the ids within the window.
	h.advance(ReplayWindow.Milliseconds() + 1)
	h.do(&Status{})
	n := 0
	for k := range dump(t, h.m) {
		if len(k) > 7 && k[:7] == "replay/" {
			n++
		}
	}
	if n != 2 { // the last Status, by id and by time
		t.Fatalf("replay bucket holds %d keys, want 2", n)
	}
}

func hexs(s string) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 0, 2*len(s))
	for i := 0; i < len(s); i++ {
		b = append(b, digits[s[i]>>4], digits[s[i]&15])
	}
	return string(b)
}
