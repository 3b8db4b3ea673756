package attack

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/recovery"
	"github.com/cofferhq/coffer/internal/protocol/pake"
	"github.com/cofferhq/coffer/internal/protocol/vaultv1"
)

// evaluated is the OPRF evaluation a KE2 carries: its first Noe bytes
// (RFC 9807 §6.1: CredentialResponse starts with evaluated_message).
func evaluated(t *testing.T, resp *vaultv1.Response) []byte {
	t.Helper()
	ls := resp.GetLoginStart()
	if ls == nil {
		t.Fatalf("no KE2: %v %s", resp.GetError().GetCode(), resp.GetError().GetMessage())
	}
	return ls.GetKe2()[:32]
}

// Attack 1 (critical): a LoginStart on an account with no live record got a
// fake KE2 evaluated under the OPRF key of the record the account's next
// registration would get, and counted nothing. Whoever holds a vault token
// for the account before its owner enrols — the app's backend mints them —
// harvests one evaluation per candidate password, then tests candidates
// offline against the envelope of one counted LoginStart. There are no fake
// answers any more (attack 10): an account without a live record — never
// registered, turned off, or destroyed — gets no KE2 at all, so no OPRF
// evaluation leaves the vault except under a counted LoginStart.
func TestAttackFreeOPRFEvaluations(t *testing.T) {
	const account = "attack-oprf-harvest"
	password := "the password the attacker guesses"
	tok, vtok, err := cluster.Tokens(account)
	if err != nil {
		t.Fatal(err)
	}
	cl := pake.Client{ServerPublicKey: cluster.Bundle.OPAQUEServerPublicKey, AllowWeakKSF: true}
	st, ke1, err := cl.LoginStart([]byte(password))
	if err != nil {
		t.Fatal(err)
	}
	st.Clear()
	login := func() *vaultv1.Request {
		return &vaultv1.Request{VaultToken: vtok, Op: &vaultv1.Request_LoginStart{LoginStart: &vaultv1.LoginStart{Ke1: ke1, AcceptWeakKsf: true}}}
	}
	noEvaluation := func(when string, want vaultv1.Code) {
		t.Helper()
		for range 3 {
			resp := viaRelay(t, account, tok, login())
			if ls := resp.GetLoginStart(); ls != nil {
				t.Fatalf("%s: the vault released a KE2 (an OPRF evaluation) for an account without a live record", when)
			}
			if got := resp.GetError().GetCode(); got != want {
				t.Fatalf("%s: got %v (%s), want %v", when, got, resp.GetError().GetMessage(), want)
			}
		}
	}
	noEvaluation("before enrolment", vaultv1.Code_CODE_NOT_REGISTERED)
	key := enroll(t, account, password)
	resp := viaRelay(t, account, tok, login())
	if resp.GetLoginStart() == nil {
		t.Fatalf("after enrolment: no KE2: %v %s", resp.GetError().GetCode(), resp.GetError().GetMessage())
	}
	if st := status(t, account); st.GuessesUsed != 1 {
		t.Fatalf("the one KE2 released was counted as %d guesses, want 1 (and none before enrolment)", st.GuessesUsed)
	}
	if err := owner(t, account).Disable(deadline(t), recovery.Authorization{Key: key}); err != nil {
		t.Fatal(err)
	}
	noEvaluation("after the owner turned recovery off", vaultv1.Code_CODE_NOT_REGISTERED)
}

// Attack 10: fake answers were distinguishable from real ones (a fake
// always said "1 guess used", and the client's abort of a fake got another
// code than a wrong password), so they hid nothing and cost a commit. They
// are gone: whoever may ask about an account — a holder of its vault token —
// can ask Status anyway, so LoginStart says plainly what Status says, and
// counts nothing. Asserted: for a never-registered and a destroyed account,
// LoginStart and Status agree, no KE2 leaves the vault, and no guess is
// counted; the answer is one padded size whatever the account's state
// (TestAttackLengthsRevealNothing).
func TestAttackFakeAnswersGone(t *testing.T) {
	const account = "attack-fake-answers"
	c := owner(t, account)
	ctx := deadline(t)
	if _, _, err := c.Recover(ctx, []byte("anything")); !errors.Is(err, recovery.ErrNotRegistered) {
		t.Fatalf("recovering an account that never enrolled: %v, want ErrNotRegistered", err)
	}
	if st := status(t, account); st.Registered || st.GuessesUsed != 0 {
		t.Fatalf("status after a login on a never-registered account: registered %v, %d guesses used; want neither", st.Registered, st.GuessesUsed)
	}
	enroll(t, account, "the right password")
	limit := status(t, account).GuessLimit
	for i := range limit {
		_, _, err := c.Recover(ctx, []byte("a wrong password"))
		var throttled *recovery.ThrottledError
		for errors.As(err, &throttled) {
			time.Sleep(throttled.RetryAfter)
			_, _, err = c.Recover(ctx, []byte("a wrong password"))
		}
		if err == nil {
			t.Fatalf("wrong password %d recovered the key", i+1)
		}
	}
	if st := status(t, account); !st.Destroyed {
		t.Fatalf("after %d wrong guesses the record is not destroyed: %+v", limit, st)
	}
	tok, vtok, err := cluster.Tokens(account)
	if err != nil {
		t.Fatal(err)
	}
	cl := pake.Client{ServerPublicKey: cluster.Bundle.OPAQUEServerPublicKey, AllowWeakKSF: true}
	st, ke1, err := cl.LoginStart([]byte("the right password"))
	if err != nil {
		t.Fatal(err)
	}
	st.Clear()
	resp := viaRelay(t, account, tok, &vaultv1.Request{VaultToken: vtok, Op: &vaultv1.Request_LoginStart{LoginStart: &vaultv1.LoginStart{Ke1: ke1, AcceptWeakKsf: true}}})
	if resp.GetLoginStart() != nil || resp.GetError().GetCode() != vaultv1.Code_CODE_DESTROYED {
		t.Fatalf("LoginStart on a destroyed record: got %v, want CODE_DESTROYED and no KE2", resp.GetError().GetCode())
	}
}

// Attack 2: a replica believed any caller about the account, and the
// vault believed the relay. Without the account's vault token — which only
// the app's backend mints and which travels sealed, so a relay never sees
// it — nobody can act for an account: not through the relay with a valid
// relay token, not with the relay token replayed as a vault token, not
// with another account's vault token, and not by calling a replica's port
// directly — with the relay's own certificate (the vault token check), or
// without one (refused at the port). Nothing is counted.
func TestAttackActingForAnAccount(t *testing.T) {
	const victim = "attack-victim"
	enroll(t, victim, "the victim's password")
	relayTok, _, err := cluster.Tokens(victim)
	if err != nil {
		t.Fatal(err)
	}
	_, otherVault, err := cluster.Tokens("attack-someone-else")
	if err != nil {
		t.Fatal(err)
	}
	cl := pake.Client{ServerPublicKey: cluster.Bundle.OPAQUEServerPublicKey, AllowWeakKSF: true}
	guess := func(vaultToken string) *vaultv1.Request {
		st, ke1, err := cl.LoginStart([]byte("a guess"))
		if err != nil {
			t.Fatal(err)
		}
		st.Clear()
		return &vaultv1.Request{VaultToken: vaultToken, Op: &vaultv1.Request_LoginStart{LoginStart: &vaultv1.LoginStart{Ke1: ke1, AcceptWeakKsf: true}}}
	}
	for name, vaultToken := range map[string]string{
		"no vault token":                 "",
		"the relay token as vault token": relayTok,
		"another account's vault token":  otherVault,
	} {
		resp := viaRelay(t, victim, relayTok, guess(vaultToken))
		if resp.GetLoginStart() != nil || resp.GetError().GetCode() != vaultv1.Code_CODE_UNAUTHENTICATED {
			t.Errorf("through the relay with %s: got %v, want CODE_UNAUTHENTICATED", name, resp.GetError().GetCode())
		}
		for i := range cluster.Replicas {
			if resp, err := directAnonymous(t, i, victim, guess(vaultToken)); err == nil {
				t.Errorf("at replica %d's port without a certificate, with %s: answered %v; want the port to refuse", i, name, resp.GetError().GetCode())
			}
		}
		answered := 0
		for i := range cluster.Replicas {
			resp, err := direct(t, i, victim, guess(vaultToken))
			if err != nil {
				continue // a follower's transport answer, or the port refused the caller
			}
			answered++
			if resp.GetLoginStart() != nil || resp.GetError().GetCode() != vaultv1.Code_CODE_UNAUTHENTICATED {
				t.Errorf("at replica %d's port with %s: got %v, want a refusal", i, name, resp.GetError().GetCode())
			}
		}
		// The leader (or a forwarding follower) answers a relay
		// certificate: if none did, this leg proved nothing.
		if answered == 0 {
			t.Errorf("with %s no replica's port answered at all: the direct attack was not tried", name)
		}
	}
	// Destroying the record needs guesses: none were counted.
	if st := status(t, victim); !st.Registered || st.GuessesUsed != 0 {
		t.Fatalf("after the attempts: registered %v, %d guesses used; want the record intact and 0", st.Registered, st.GuessesUsed)
	}
}

// Attack 8: a device that refuses the record's key-stretching profile
// learnt it only with KE2 — after its guess was counted — and the owner's
// next success then warned that someone was guessing. The client now says
// which profiles it accepts in LoginStart, and the vault refuses before
// counting.
func TestAttackOwnRefusalCostsNoGuess(t *testing.T) {
	const account = "attack-ksf-refusal"
	enroll(t, account, "enrolled with cheap stretching") // a development profile
	strict := owner(t, account, func(s *recovery.Settings) { s.InsecureDevKSF = false })
	if _, _, err := strict.Recover(deadline(t), []byte("enrolled with cheap stretching")); !errors.Is(err, recovery.ErrKSFRefused) {
		t.Fatalf("a strict client recovering a cheap record: %v, want ErrKSFRefused", err)
	}
	if st := status(t, account); st.GuessesUsed != 0 {
		t.Fatalf("the refusal cost %d guesses, want 0", st.GuessesUsed)
	}
}

// Attack 9: after someone destroyed a record (wrong guesses) and
// registered their own, the owner's device still said "key stored". The
// status now carries the record's key proof hash, and the device tells its
// record from someone else's.
func TestAttackReplacedRecordNoticed(t *testing.T) {
	const account = "attack-replaced"
	mine := enroll(t, account, "the owner's password")
	c := owner(t, account)
	if !c.OwnsRecord(status(t, account), mine) {
		t.Fatal("the owner's device does not recognise its own record")
	}
	for spent := 0; spent < cluster.GuessLimit(); {
		_, _, err := c.Recover(deadline(t), []byte("wrong guess"))
		var th *recovery.ThrottledError
		switch {
		case err == nil:
			t.Fatal("a wrong guess recovered the key")
		case errors.As(err, &th): // the fleet paces guesses: wait, as an attacker must
			time.Sleep(th.RetryAfter + 20*time.Millisecond)
		default:
			spent++
		}
	}
	if st := status(t, account); !st.Destroyed {
		t.Fatalf("after %d wrong guesses: %+v, want destroyed", cluster.GuessLimit(), st)
	}
	theirs := backupkey.New()
	if _, err := c.Enroll(deadline(t), []byte("the attacker's password"), theirs, recovery.Authorization{}); err != nil {
		t.Fatal(err)
	}
	st := status(t, account)
	if !st.Registered || c.OwnsRecord(st, mine) {
		t.Fatal("the owner's device takes the attacker's record for its own")
	}
	if !c.OwnsRecord(st, theirs) {
		t.Fatal("the proof hash does not identify the record that is there")
	}
}

// Attack 10 (lengths): sealed requests and answers had the length of their
// content, so the relay and the network learnt the operation, and whether
// the account had a record. Every request is now one size, and every
// answer one size.
func TestAttackLengthsRevealNothing(t *testing.T) {
	const account = "attack-lengths"
	rec := &recordingTransport{}
	c := owner(t, account, func(s *recovery.Settings) {
		s.HTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: rec}
	})
	ctx := deadline(t)
	if _, err := c.Status(ctx); err != nil { // no record yet
		t.Fatal(err)
	}
	if _, _, err := c.Recover(ctx, []byte("no record yet")); !errors.Is(err, recovery.ErrNotRegistered) { // no record: no KE2
		t.Fatalf("recovering an unregistered account: %v, want ErrNotRegistered", err)
	}
	key := backupkey.New()
	if _, err := c.Enroll(ctx, []byte("a real password"), key, recovery.Authorization{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Recover(ctx, []byte("a wrong password")); err == nil {
		t.Fatal("a wrong password recovered the key")
	}
	if _, _, err := c.Recover(ctx, []byte("a real password")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(ctx); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, sizes := range [][]int{rec.sent, rec.got} {
		for _, n := range sizes {
			if n != sizes[0] {
				t.Fatalf("message sizes differ: sent %v, received %v", rec.sent, rec.got)
			}
		}
	}
	t.Logf("%d requests of %d bytes, %d answers of %d bytes", len(rec.sent), rec.sent[0], len(rec.got), rec.got[0])
}

// Attack 7 (line speed): nothing paced guesses, so a token holder spent a
// budget in a second. The vault now spaces wrong guesses out: after the
// free ones, a guess too soon is refused with the wait — and counts
// nothing — until the wait has passed.
func TestAttackGuessingAtLineSpeed(t *testing.T) {
	const account = "attack-line-speed"
	enroll(t, account, "the owner's password")
	c := owner(t, account)
	for i := range 3 { // the free ones
		if _, _, err := c.Recover(deadline(t), []byte("wrong")); !errors.Is(err, recovery.ErrWrongPassword) {
			t.Fatalf("free guess %d: %v", i+1, err)
		}
	}
	_, _, err := c.Recover(deadline(t), []byte("wrong, at once"))
	var th *recovery.ThrottledError
	if !errors.As(err, &th) || th.RetryAfter <= 0 || th.RetryAfter > time.Second {
		t.Fatalf("a fourth guess at once: %v, want a wait of at most 1 s", err)
	}
	if st := status(t, account); st.GuessesUsed != 3 {
		t.Fatalf("the refused guess was counted: %d used", st.GuessesUsed)
	}
	time.Sleep(th.RetryAfter + 50*time.Millisecond)
	if _, _, err := c.Recover(deadline(t), []byte("the owner's password")); err != nil {
		t.Fatalf("after the wait, the right password: %v", err)
	}
}
