package faultharness

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"
)

// OpKind names a client operation of package recovery.
type OpKind string

const (
	OpEnroll  OpKind = "enroll"  // Enroll (ChangePassword is an Enroll with key authorization)
	OpRecover OpKind = "recover" // Recover
	OpDisable OpKind = "disable" // Disable
	OpStatus  OpKind = "status"  // Status
)

// AuthKind is how an Enroll or Disable proves the right to replace or
// erase a live record.
type AuthKind string

const (
	AuthNone    AuthKind = ""
	AuthKey     AuthKind = "key"     // the current backup key's proof
	AuthSession AuthKind = "session" // the login ticket of a successful Recover
)

// Result is an operation's outcome as the client saw it. Every result but
// ResUnknown and ResKE2Unknown is definite.
type Result string

const (
	// ResOK: the operation succeeded.
	ResOK Result = "ok"
	// ResUnknown: no definite answer (timeout, unavailable, replayed,
	// login superseded before any KE2 …): it may or may not have taken
	// effect. For Recover: no KE2 reached the client.
	ResUnknown Result = "unknown"
	// ResUnauthorized: Enroll or Disable refused for lack of authorization.
	ResUnauthorized Result = "unauthorized"
	// ResStale: Enroll refused because another registration started or
	// finished since its RegisterStart (recovery.ErrRegistrationSuperseded).
	ResStale Result = "stale"
	// ResWrong: Recover got a KE2 that its password did not open
	// (WrongPasswordError, with Left guesses left).
	ResWrong Result = "wrong"
	// ResWrongDestroyed: Recover got a KE2 its password did not open, and
	// the vault answered the abort with "destroyed" (the last guess).
	ResWrongDestroyed Result = "wrong-destroyed"
	// ResKE2Refused: Recover's password opened the KE2, and the vault
	// definitely refused the finish (login superseded or expired, or the
	// record destroyed meanwhile): a guess was spent, nothing reset.
	ResKE2Refused Result = "ke2-refused"
	// ResKE2Unknown: Recover's password opened the KE2, and the finish's
	// outcome is unknown: it may have succeeded (reset the count and made a
	// ticket the client never saw).
	ResKE2Unknown Result = "ke2-unknown"
	// ResDestroyed: the vault answered "destroyed" with no KE2.
	ResDestroyed Result = "destroyed"
	// ResNotRegistered: Disable or Recover on an account without a live
	// record (Recover: no KE2; PROTOCOL.md §5 has no fake logins).
	ResNotRegistered Result = "not-registered"
)

// StatusOut is what Status returned.
type StatusOut struct {
	Registered  bool   `json:"registered"`
	Disabled    bool   `json:"disabled"`
	Destroyed   bool   `json:"destroyed"`
	GuessesUsed int    `json:"guesses_used"`
	GuessLimit  int    `json:"guess_limit"`
	Epoch       uint64 `json:"epoch"`
}

// Op is one recorded client operation: its input, when it was invoked and
// when it completed (nanoseconds on the monotonic clock since the history
// began), and what it returned.
type Op struct {
	ID      int    `json:"id"`
	Client  int    `json:"client"`
	Account string `json:"account"`
	Kind    OpKind `json:"kind"`
	Phase   string `json:"phase,omitempty"`

	// Pw is the password id: the new password of an Enroll, the one tried
	// by a Recover (negative ids are never registered).
	Pw int `json:"pw,omitempty"`
	// Key is the backup key id an Enroll stores.
	Key         int      `json:"key,omitempty"`
	Auth        AuthKind `json:"auth,omitempty"`
	AuthKey     int      `json:"auth_key,omitempty"`
	AuthSession int      `json:"auth_session,omitempty"` // the id of the Recover whose ticket is used

	Call   int64 `json:"call_ns"`
	Return int64 `json:"return_ns"`

	Result Result `json:"result"`
	Left   int    `json:"left,omitempty"`    // ResWrong: guesses left
	GotKey int    `json:"got_key,omitempty"` // Recover ok: the key id returned (-1: a key never enrolled)
	Failed int    `json:"failed,omitempty"`  // Recover ok: wrong guesses reported since the last success
	Epoch  uint64 `json:"epoch,omitempty"`   // Enroll or Recover ok
	Limit  int    `json:"limit,omitempty"`   // Enroll ok
	// KE2 is set when a Recover's LoginStart answer reached the client (it
	// sent a second request): a guess was counted and a KE2 released.
	KE2      bool       `json:"ke2,omitempty"`
	Requests int        `json:"requests"`
	Status   *StatusOut `json:"status,omitempty"`
	// Anomaly is set for an error no fault explains (integrity, token,
	// clock, an unexpected refusal); such an op is treated as unknown.
	Anomaly bool `json:"anomaly,omitempty"`
	// Unavailable: the error was recovery.ErrUnavailable.
	Unavailable bool   `json:"unavailable,omitempty"`
	Err         string `json:"err,omitempty"`
}

// Unknown reports whether the op's outcome is not definite.
func (o *Op) Unknown() bool { return o.Result == ResUnknown || o.Result == ResKE2Unknown }

// Event is a fault (or other harness action) in the history's time base.
type Event struct {
	Start int64  `json:"start_ns"`
	End   int64  `json:"end_ns"`
	What  string `json:"what"`
}

// History records operations and faults. It is safe for concurrent use.
type History struct {
	t0     time.Time
	mu     sync.Mutex
	ops    []*Op
	events []*Event
}

// NewHistory starts a history now.
func NewHistory() *History { return &History{t0: time.Now()} }

// Now is the time since the history began (monotonic).
func (h *History) Now() int64 { return int64(time.Since(h.t0)) }

// Begin records op's invocation and gives it an id.
func (h *History) Begin(op *Op) {
	h.mu.Lock()
	op.ID = len(h.ops) + 1
	op.Call = h.Now()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// End records op's completion. The caller sets the outcome first.
func (h *History) End(op *Op) {
	t := h.Now()
	h.mu.Lock()
	op.Return = t
	h.mu.Unlock()
}

// Event records a fault that starts now; the returned func marks its end.
func (h *History) Event(format string, args ...any) func() {
	e := &Event{Start: h.Now(), What: fmt.Sprintf(format, args...)}
	h.mu.Lock()
	h.events = append(h.events, e)
	h.mu.Unlock()
	return func() {
		t := h.Now()
		h.mu.Lock()
		e.End = t
		h.mu.Unlock()
	}
}

// Ops returns the completed operations, by invocation time.
func (h *History) Ops() []*Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*Op
	for _, o := range h.ops {
		if o.Return != 0 {
			out = append(out, o)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Call < out[j].Call })
	return out
}

// Events returns the recorded faults.
func (h *History) Events() []*Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*Event, len(h.events))
	for i, e := range h.events {
		c := *e
		out[i] = &c
	}
	return out
}

// WriteJSON writes the history (operations, faults and extra) to path.
func (h *History) WriteJSON(path string, extra map[string]any) error {
	doc := map[string]any{
		"started": h.t0.Format(time.RFC3339Nano),
		"ops":     h.Ops(),
		"faults":  h.Events(),
	}
	for k, v := range extra {
		doc[k] = v
	}
	b, err := json.MarshalIndent(doc, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
