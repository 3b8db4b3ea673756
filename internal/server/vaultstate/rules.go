package vaultstate

import (
	"crypto/subtle"

	"github.com/cofferhq/coffer/internal/protocol/keywrap"
)

// transition applies op to the account acc at the command's time now and
// reports the result and whether acc changed. It is the whole of
// PROTOCOL.md section 5's rules: pure, deterministic, and independent of
// storage. The replay check happens before it is called.
func transition(acc *Account, c *Command) (Result, bool) {
	now := c.Time
	switch op := c.Op.(type) {
	case *RegisterCheck:
		if acc.Live() && !authorized(acc, &op.Auth, now, c.RequestID, keywrap.ProofRegisterStart) {
			return unauthorized(), false
		}
		// Every RegisterStart gets an epoch never handed out before, so
		// the OPRF key it evaluates under (derived from the epoch) serves
		// at most one registration: evaluations gathered by RegisterStarts
		// that never finish help no guess against a later record.
		acc.Reserved++
		acc.ReservedBlinded = op.Blinded
		acc.ReservedGen = op.ShareGen
		if op.Blinded != (Hash{}) && c.encodedVersion() < 5 {
			acc.ReservedGen = 1 // version 4: the first generation's shares
		}
		return &RegisterCheckResult{Epoch: acc.Reserved}, true

	case *Register:
		live := acc.Live()
		if live && !authorized(acc, &op.Auth, now, c.RequestID, keywrap.ProofRegisterFinish) {
			return unauthorized(), false
		}
		if op.Epoch != acc.Reserved || op.Epoch <= acc.Epoch {
			return refuse(CodeBadRequest, "stale registration: another registration started or finished since this RegisterStart; start the registration again"), false
		}
		if op.Record.PublicShares != nil && c.encodedVersion() >= 5 && op.Record.ShareGen != acc.ReservedGen {
			return refuse(CodeBadRequest, "stale registration: its record's shares are of another generation than its RegisterStart was evaluated under; start the registration again"), false
		}
		limit := op.GuessLimit
		if limit == 0 || limit > MaxGuessLimit {
			return refuse(CodeBadRequest, "registration without a valid guess limit"), false
		}
		lastSuccess := int64(0)
		if live {
			lastSuccess = acc.LastSuccess
		}
		// The new record replaces the old one with its pending login and
		// ticket (so a ticket authorizes once), and starts a fresh count.
		*acc = Account{
			Epoch:       op.Epoch,
			Reserved:    acc.Reserved,
			Record:      op.Record.clone(),
			GuessLimit:  limit,
			LastSuccess: lastSuccess,
		}
		return &RegisterResult{Epoch: acc.Epoch, GuessLimit: limit}, true

	case *LoginStart:
		if !acc.Live() || acc.Epoch != op.Epoch {
			return refuse(CodeConflict, "the record changed while the login started; recompute KE2 and retry"), false
		}
		if acc.GuessesUsed >= acc.GuessLimit {
			destroy(acc, now)
			return destroyed(), true
		}
		if n := len(acc.GuessTimes); n > 0 && c.encodedVersion() >= 3 {
			if wait := op.Pacing.Wait(acc.GuessesUsed); wait > 0 && now < acc.GuessTimes[n-1]+wait {
				next := acc.GuessTimes[n-1] + wait
				return &Error{
					Code:        CodeThrottled,
					Message:     "too soon after the last wrong guess: the vault spaces guesses out; try again later",
					GuessesLeft: acc.GuessLimit - acc.GuessesUsed,
					GuessLimit:  acc.GuessLimit,
					RetryAfter:  next - now,
				}, false
			}
		}
		acc.GuessesUsed++
		acc.GuessTimes = append(acc.GuessTimes, now)
		if n := len(acc.GuessTimes); n > int(acc.GuessLimit) {
			acc.GuessTimes = append([]int64(nil), acc.GuessTimes[n-int(acc.GuessLimit):]...)
		}
		acc.Pending = &PendingLogin{
			ID:        op.LoginID,
			MACHash:   op.MACHash,
			RequestID: c.RequestID,
			Expiry:    now + LoginTTL.Milliseconds(),
			Blinded:   op.Blinded,
		}
		return &LoginStartResult{GuessesUsed: acc.GuessesUsed, GuessLimit: acc.GuessLimit, Expiry: acc.Pending.Expiry, LoginID: op.LoginID}, true

	case *LoginStartFake:
		switch {
		case acc.Live():
			return refuse(CodeConflict, "the account was registered while the login started; retry"), false
		case acc.Destroyed:
			return destroyed(), false
		}
		if op.GuessLimit == 0 || op.GuessLimit > MaxGuessLimit {
			return refuse(CodeBadRequest, "fake login without a valid guess limit"), false
		}
		return &LoginStartResult{GuessesUsed: 1, GuessLimit: op.GuessLimit, Fake: true}, false

	case *LoginMAC:
		p := acc.Pending
		if !acc.Live() || p == nil || subtle.ConstantTimeCompare(p.ID[:], op.LoginID[:]) != 1 || now >= p.Expiry {
			return loginExpired(), false
		}
		if p.MACHash == (Hash{}) {
			p.MACHash = op.MACHash
		} else {
			p.RetryMACHash = op.MACHash // a retried LoginStart's new KE2
		}
		return &LoginMACResult{}, true

	case *Reshare:
		r := acc.Record
		switch {
		case !acc.Live() || acc.Epoch != op.Epoch:
			return refuse(CodeConflict, "the record changed since the reshare read it; read it again"), false
		case len(r.PublicShares) == 0:
			return refuse(CodeBadRequest, "not a threshold record: it has no shares to move"), false
		case r.ShareGen == op.ToGen:
			return &ReshareResult{}, false
		case r.ShareGen != op.FromGen:
			return refuse(CodeConflict, "the record is at another share generation than the reshare read"), false
		}
		// A pending login survives: its KE2 came from an evaluation under
		// the account key, which the reshare keeps, so its MAC hash still
		// finishes it. A login still gathering partials under the old
		// generation fails to combine and is retried by the client, which
		// reads the record again and counts nothing more.
		r.ShareGen, r.PublicShares = op.ToGen, append([]byte(nil), op.PublicShares...)
		r.Offset = append([]byte(nil), op.Offset[:]...)
		if op.Offset == ([OffsetSize]byte{}) {
			r.Offset = nil
		}
		return &ReshareResult{Moved: true}, true

	case *LoginFinish:
		if !acc.Live() {
			if acc.Destroyed {
				return destroyed(), false
			}
			return loginExpired(), false
		}
		p := acc.Pending
		if p == nil || subtle.ConstantTimeCompare(p.ID[:], op.LoginID[:]) != 1 {
			// An answer to a login that a newer LoginStart superseded (or
			// that already finished): the newer pending login stays.
			return loginExpired(), false
		}
		acc.Pending = nil
		got := HashMAC(op.ClientMAC)
		macOK := subtle.ConstantTimeCompare(p.MACHash[:], got[:]) == 1
		if p.RetryMACHash != (Hash{}) && subtle.ConstantTimeCompare(p.RetryMACHash[:], got[:]) == 1 {
			macOK = true
		}
		expired := now >= p.Expiry
		if expired && macOK && c.encodedVersion() >= 3 {
			// The right password is a success even after the pending
			// login's expiry (version 3 on): its guess was counted at
			// LoginStart and the MAC proves the password, so refusing it
			// would only cost the owner a guess — or, on the last guess,
			// the record. Version-1 and -2 entries replay as they were.
			expired = false
		}
		if expired || !macOK {
			if acc.GuessesUsed >= acc.GuessLimit {
				destroy(acc, now)
				return destroyed(), true
			}
			if expired {
				return loginExpired(), true
			}
			return &Error{
				Code:        CodeWrongPassword,
				Message:     "wrong password",
				GuessesLeft: acc.GuessLimit - acc.GuessesUsed,
				GuessLimit:  acc.GuessLimit,
			}, true
		}
		// Success. The last counted guess is this login; the ones before it
		// failed.
		var failed []int64
		if n := len(acc.GuessTimes); n > 1 {
			failed = append([]int64(nil), acc.GuessTimes[:n-1]...)
		}
		res := &LoginFinishResult{
			WrappedKey:       append([]byte(nil), acc.Record.WrappedKey...),
			FailedGuessTimes: failed,
			PreviousSuccess:  acc.LastSuccess,
			Epoch:            acc.Epoch,
			TicketExpiry:     now + TicketTTL.Milliseconds(),
			Reshareable:      acc.Record.Reshareable(),
		}
		acc.GuessesUsed = 0
		acc.GuessTimes = nil
		acc.LastSuccess = now
		acc.Ticket = &Ticket{Hash: op.TicketHash, Expiry: res.TicketExpiry}
		return res, true

	case *Disable:
		if !acc.Live() {
			if acc.Destroyed {
				return destroyed(), false
			}
			return refuse(CodeNotRegistered, "the account has no record to disable"), false
		}
		if !authorized(acc, &op.Auth, now, c.RequestID, keywrap.ProofDisable) {
			return unauthorized(), false
		}
		*acc = Account{Epoch: acc.Epoch, Reserved: acc.Reserved, Disabled: true}
		return &DisableResult{Epoch: acc.Epoch}, true

	case *Status:
		s := &StatusResult{
			Registered:  acc.Live(),
			Disabled:    acc.Disabled,
			Destroyed:   acc.Destroyed,
			DestroyedAt: acc.DestroyedAt,
			GuessesUsed: acc.GuessesUsed,
			GuessLimit:  acc.GuessLimit,
			GuessTimes:  append([]int64(nil), acc.GuessTimes...),
			LastSuccess: acc.LastSuccess,
			Epoch:       acc.Epoch,
		}
		if acc.Record != nil {
			s.KSF = acc.Record.KSF
			s.ProofHash = append([]byte(nil), acc.Record.ProofHash[:]...)
		}
		return s, false
	}
	return refuse(CodeBadRequest, "unknown operation"), false
}

// authorized reports whether auth proves the right to replace or erase the
// live record of acc at time now: the hash of the record's unexpired login
// ticket, or the hash of the key proof. It changes nothing; the operations
// that succeed with it replace or erase the record, ticket included.
func authorized(acc *Account, auth *Auth, now int64, req RequestID, op byte) bool {
	switch auth.Kind {
	case AuthSignature:
		// A fresh key proof (version-2 records): a signature over this
		// very request's id and time, made at most SignatureWindow from
		// the replicated clock. Within the window the request id is
		// refused as a replay; after it, the time is.
		w := SignatureWindow.Milliseconds()
		return len(acc.Record.ProofKey) != 0 && auth.SignedAt >= now-w && auth.SignedAt <= now+w &&
			keywrap.VerifyProof(acc.Record.ProofKey, op, req[:], auth.SignedAt, auth.Sig[:])
	case AuthTicket:
		t := acc.Ticket
		if t == nil || now >= t.Expiry {
			return false
		}
		return subtle.ConstantTimeCompare(t.Hash[:], auth.Hash[:]) == 1
	case AuthProof:
		// A record with a signing key takes signatures only: its static
		// proof may have been seen by a replica (PROTOCOL.md §2).
		return len(acc.Record.ProofKey) == 0 && subtle.ConstantTimeCompare(acc.Record.ProofHash[:], auth.Hash[:]) == 1
	}
	return false
}

// destroy erases everything but the epoch and marks the account destroyed.
func destroy(acc *Account, now int64) {
	*acc = Account{Epoch: acc.Epoch, Reserved: acc.Reserved, Destroyed: true, DestroyedAt: now}
}

func destroyed() *Error {
	return refuse(CodeDestroyed, "the guess limit was reached and the record is erased for good; register again to set a new password")
}

func unauthorized() *Error {
	return refuse(CodeUnauthorized, "replacing or erasing a registered record needs a login ticket from a successful login or the key proof of the backup key")
}

func loginExpired() *Error {
	return refuse(CodeLoginExpired, "the login expired or was superseded by a newer one; start the login again")
}
