package vaultstate

import "fmt"

// Code is an error code. The values of the codes that reach clients are
// those of vault.proto's Code enum; CodeConflict never leaves the vault.
type Code uint8

// Codes.
const (
	CodeOK            Code = 0
	CodeWrongPassword Code = 1  // KE3 did not verify; GuessesLeft and GuessLimit are set
	CodeDestroyed     Code = 2  // the guess budget is spent; the record is erased
	CodeUnauthorized  Code = 3  // replacing or erasing a live record needs a ticket or a key proof
	CodeLoginExpired  Code = 4  // the pending login expired or was superseded
	CodeReplay        Code = 5  // the request id was seen in the last ReplayWindow
	CodeBadRequest    Code = 7  // malformed or stale command
	CodeNotRegistered Code = 8  // the operation needs a live record
	CodeUnavailable   Code = 9  // the replica cannot apply commands (storage failure); nothing was applied
	CodeThrottled     Code = 12 // too soon after the last wrong guess (Pacing); RetryAfter is set; nothing was counted
	// CodeConflict: the record changed between the leader's read and the
	// apply (a LoginStart's epoch is no longer current, or a fake login
	// meets a live record). Nothing was counted; the leader recomputes KE2
	// from the current record and proposes again. Not a wire code.
	CodeConflict Code = 100
)

func (c Code) String() string {
	switch c {
	case CodeOK:
		return "ok"
	case CodeWrongPassword:
		return "wrong password"
	case CodeDestroyed:
		return "destroyed"
	case CodeUnauthorized:
		return "unauthorized"
	case CodeLoginExpired:
		return "login expired"
	case CodeReplay:
		return "replay"
	case CodeBadRequest:
		return "bad request"
	case CodeNotRegistered:
		return "not registered"
	case CodeUnavailable:
		return "unavailable"
	case CodeConflict:
		return "conflict"
	}
	return fmt.Sprintf("code %d", uint8(c))
}

// Result is what applying a command answers: *Error, or the operation's
// result type (*RegisterCheckResult, *RegisterResult, *LoginStartResult,
// *LoginFinishResult, *DisableResult, *StatusResult).
type Result interface {
	isResult()
}

// Error is a refused command. It is also a Go error. Messages are safe to log
// and to show: they never hold secrets.
type Error struct {
	Code    Code
	Message string
	// With CodeWrongPassword and CodeThrottled: guesses left and the limit.
	GuessesLeft uint32
	GuessLimit  uint32
	// With CodeThrottled: milliseconds until the next guess is allowed.
	RetryAfter int64
}

func (*Error) isResult() {}

func (e *Error) Error() string {
	if e.Code == CodeWrongPassword {
		return fmt.Sprintf("vault state: %s (%d of %d guesses left)", e.Message, e.GuessesLeft, e.GuessLimit)
	}
	return "vault state: " + e.Message
}

func refuse(c Code, msg string) *Error { return &Error{Code: c, Message: msg} }

// RegisterCheckResult authorizes a RegisterStart.
type RegisterCheckResult struct {
	// Epoch is the epoch the new record will have, reserved for this
	// RegisterStart; the leader evaluates the OPRF for it and
	// RegisterFinish must carry it.
	Epoch uint64
}

func (*RegisterCheckResult) isResult() {}

// RegisterResult confirms a registration.
type RegisterResult struct {
	Epoch      uint64
	GuessLimit uint32
}

func (*RegisterResult) isResult() {}

// LoginStartResult lets the leader release KE2: the guess is counted.
type LoginStartResult struct {
	// GuessesUsed counts this guess; GuessLimit is the budget.
	GuessesUsed uint32
	GuessLimit  uint32
	// Expiry of the pending login, Unix ms (0 when Fake).
	Expiry int64
	// Fake is set when the account has no live record: the leader sends the
	// KE2 it computed from a fake record.
	Fake bool
	// Retried is set when this answers again the LoginStart that opened
	// the pending login (a relay's retry whose first answer was lost):
	// nothing more was counted, and LoginID is the pending login's.
	Retried bool
	// LoginID is the pending login's id, which the client's LoginFinish
	// must name (not Fake).
	LoginID LoginID
}

func (*LoginStartResult) isResult() {}

// LoginFinishResult is a successful login.
type LoginFinishResult struct {
	// WrappedKey is the record's wrapped backup key.
	WrappedKey []byte
	// FailedGuessTimes are the times (Unix ms) of the guesses made since the
	// previous success, before the one that succeeded.
	FailedGuessTimes []int64
	// PreviousSuccess is the time of the previous successful login (0 if
	// none).
	PreviousSuccess int64
	Epoch           uint64
	// TicketExpiry is when the login ticket whose hash the command carried
	// stops authorizing, Unix ms.
	TicketExpiry int64
	// Reshareable is the record's Reshareable: false for a record of the
	// fleet's OPRF seed or a threshold record without its credential id,
	// which a threshold fleet asks the client to register again.
	Reshareable bool
}

func (*LoginFinishResult) isResult() {}

// String hides the wrapped key.
func (r *LoginFinishResult) String() string {
	return fmt.Sprintf("LoginFinishResult{epoch=%d failed=%d}", r.Epoch, len(r.FailedGuessTimes))
}

// ReshareResult answers a Reshare: Moved is false when the record was at
// the target generation already (a retry).
type ReshareResult struct {
	Moved bool
}

func (*ReshareResult) isResult() {}

// DisableResult confirms that the record is erased.
type DisableResult struct {
	Epoch uint64
}

func (*DisableResult) isResult() {}

// StatusResult reports an account (zero for an account never registered).
// TickResult answers a Tick: the state machine's clock after it (Unix
// milliseconds), which is the tick's time unless MaxClockStep held it back.
type TickResult struct{ Now int64 }

func (*TickResult) isResult() {}

type StatusResult struct {
	Registered  bool
	Disabled    bool
	Destroyed   bool
	DestroyedAt int64
	GuessesUsed uint32
	GuessLimit  uint32
	// GuessTimes are the times of all guesses since the last success,
	// including one whose login may still be pending.
	GuessTimes  []int64
	LastSuccess int64
	Epoch       uint64
	// KSF and ProofHash (the record's key proof hash) are set when
	// Registered.
	KSF       KSFParams
	ProofHash []byte
}

func (*StatusResult) isResult() {}

// LoginMACResult answers LoginMAC: the pending login now takes the KE2's
// MAC; release the KE2.
type LoginMACResult struct{}

func (*LoginMACResult) isResult() {}
