package faultharness

import (
	"fmt"
	"sort"

	"github.com/anishathalye/porcupine"
)

// The sequential specification of one account of the vault (PROTOCOL.md
// section 5), at the level of package recovery's operations.
//
//   - Enroll changes the account only at RegisterFinish (RegisterStart only
//     reserves an epoch, which neither the model nor Status shows), so it
//     is one step: it takes effect at one point or not at all.
//   - Disable and Status are one request each.
//   - Recover is two requests, and other clients can see the state between
//     them (a Status sees the guess counted by LoginStart before the
//     finish resets it), so a Recover that received a KE2 is two steps in
//     porcupine's history, both spanning the op's whole interval: its
//     LoginStart (a guess counted, this login pending) and its finish,
//     which succeeds only if its login is still the pending one, exactly as
//     the state machine decides. The abort a client sends after a wrong
//     password changes nothing another op can see, unless it spends the
//     last guess (the record is destroyed at once rather than at the next
//     LoginStart): only then is it a step of its own.
//   - An op with an unknown outcome allows every effect it could have had,
//     or none; porcupine gets it with its return at the end of the history,
//     as its request may still be applied late.
//
// The model is nondeterministic (a set of states), through porcupine's
// NondeterministicModel.

// acct is the model state of one account.
type acct struct {
	Live      bool // a record is stored (registered)
	Disabled  bool
	Destroyed bool
	Pw, Key   int   // password and key ids of the live record
	Used      int   // guesses counted since the last success or replacement
	Epoch     int64 // of the record, or of the last one once erased; -1: unknown
	Pending   int   // id of the Recover whose login is pending; 0 none
	Ticket    int   // id of the Recover whose ticket is valid; 0 none; -1 one the client never saw
}

func (s acct) String() string {
	ep := fmt.Sprint(s.Epoch)
	if s.Epoch < 0 {
		ep = "?"
	}
	switch {
	case s.Destroyed:
		return "destroyed e" + ep
	case s.Disabled:
		return "disabled e" + ep
	case !s.Live:
		return "unregistered e" + ep
	}
	t := ""
	if s.Pending != 0 {
		t += fmt.Sprintf(" pending#%d", s.Pending)
	}
	switch {
	case s.Ticket > 0:
		t += fmt.Sprintf(" ticket#%d", s.Ticket)
	case s.Ticket < 0:
		t += " ticket?"
	}
	return fmt.Sprintf("pw%d key%d used%d e%s%s", s.Pw, s.Key, s.Used, ep, t)
}

// Step kinds of an op in porcupine's history.
const (
	partWhole  = iota // the whole op (Enroll, Disable, Status, a Recover without KE2)
	partLogin         // a Recover's LoginStart that released a KE2
	partFinish        // that Recover's finish (or abort)
)

// step is one element of porcupine's history: an op, or a part of one.
type stepInput struct {
	Op   *Op
	Part int
}

// Model is the porcupine model of the vault for guess limit limit,
// partitioned by account. Inputs are stepInput values (see porcupineOps);
// outputs are unused (an Op holds its result).
func Model(limit int) porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Partition: partitionByAccount,
		Init:      func() []any { return []any{acct{}} },
		Step: func(state, input, _ any) []any {
			in := input.(stepInput)
			return stepPart(limit, state.(acct), in.Op, in.Part)
		},
		Equal: func(a, b any) bool { return a.(acct) == b.(acct) },
		Hash: func(s any) uint64 {
			a := s.(acct)
			h := uint64(0)
			for _, v := range []int64{b2i(a.Live), b2i(a.Disabled), b2i(a.Destroyed), int64(a.Pw), int64(a.Key), int64(a.Used), a.Epoch, int64(a.Pending), int64(a.Ticket)} {
				h = h*1099511628211 ^ uint64(v)
			}
			return h
		},
		DescribeOperation: func(input, _ any) string {
			in := input.(stepInput)
			switch in.Part {
			case partLogin:
				return in.Op.Describe() + " [LoginStart]"
			case partFinish:
				return in.Op.Describe() + " [finish]"
			}
			return in.Op.Describe()
		},
		DescribeState: func(s any) string { return s.(acct).String() },
	}
	return nm.ToModel()
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func partitionByAccount(history []porcupine.Operation) [][]porcupine.Operation {
	by := map[string][]porcupine.Operation{}
	var names []string
	for _, o := range history {
		a := o.Input.(stepInput).Op.Account
		if _, ok := by[a]; !ok {
			names = append(names, a)
		}
		by[a] = append(by[a], o)
	}
	sort.Strings(names)
	out := make([][]porcupine.Operation, 0, len(names))
	for _, n := range names {
		out = append(out, by[n])
	}
	return out
}

func authorized(s acct, op *Op) bool {
	switch op.Auth {
	case AuthKey:
		return op.AuthKey == s.Key
	case AuthSession:
		return op.AuthSession > 0 && s.Ticket == op.AuthSession
	}
	return false
}

func enrolled(op *Op, epoch int64) acct {
	return acct{Live: true, Pw: op.Pw, Key: op.Key, Epoch: epoch}
}

func destroyedFrom(s acct) acct { return acct{Destroyed: true, Epoch: s.Epoch} }
func disabledFrom(s acct) acct  { return acct{Disabled: true, Epoch: s.Epoch} }

// loginStarted is the state after a LoginStart of op id counted a guess.
func loginStarted(s acct, id int) acct {
	s.Used++
	s.Pending = id
	return s
}

// succeeded is the state after the pending login's finish succeeded.
func succeeded(s acct, ticket int) acct {
	s.Used, s.Pending, s.Ticket = 0, 0, ticket
	return s
}

// needsAbortStep reports whether a wrong-password Recover's abort is a step
// of its own: when it may spend the last guess.
func needsAbortStep(o *Op) bool {
	return o.Result == ResWrongDestroyed || o.Result == ResWrong && o.Left == 0
}

// stepPart returns the states op (or the given part of it) can lead to
// from s; none if its outcome is impossible in s.
func stepPart(limit int, s acct, op *Op, part int) []any {
	unknown := op.Unknown()
	switch op.Kind {
	case OpEnroll:
		may := !s.Live || authorized(s, op)
		switch {
		case unknown:
			out := []any{s}
			if may {
				out = append(out, enrolled(op, -1))
			}
			return out
		case op.Result == ResOK:
			if !may || op.Limit != limit || (s.Epoch >= 0 && int64(op.Epoch) <= s.Epoch) {
				return nil
			}
			return []any{enrolled(op, int64(op.Epoch))}
		case op.Result == ResUnauthorized:
			if s.Live && !authorized(s, op) {
				return []any{s}
			}
		case op.Result == ResStale:
			return []any{s}
		}
		return nil

	case OpDisable:
		may := s.Live && authorized(s, op)
		switch {
		case unknown:
			out := []any{s}
			if may {
				out = append(out, disabledFrom(s))
			}
			return out
		case op.Result == ResOK:
			if may {
				return []any{disabledFrom(s)}
			}
		case op.Result == ResUnauthorized:
			if s.Live && !authorized(s, op) {
				return []any{s}
			}
		case op.Result == ResNotRegistered:
			if !s.Live && !s.Destroyed {
				return []any{s}
			}
		case op.Result == ResDestroyed:
			if s.Destroyed {
				return []any{s}
			}
		}
		return nil

	case OpStatus:
		if unknown {
			return []any{s}
		}
		st := op.Status
		if st == nil || st.Registered != s.Live || st.Disabled != s.Disabled || st.Destroyed != s.Destroyed || st.GuessesUsed != s.Used {
			return nil
		}
		if s.Live && st.GuessLimit != limit || !s.Live && st.GuessLimit != 0 {
			return nil
		}
		if s.Epoch >= 0 {
			if int64(st.Epoch) != s.Epoch {
				return nil
			}
			return []any{s}
		}
		s.Epoch = int64(st.Epoch) // learn the epoch of a record an unknown Enroll made
		return []any{s}

	case OpRecover:
		real := s.Live && s.Used < limit // a LoginStart would count a guess and release a KE2
		switch part {
		case partWhole: // no KE2 reached the client
			switch op.Result {
			case ResDestroyed:
				switch {
				case s.Destroyed:
					return []any{s}
				case s.Live && s.Used >= limit:
					return []any{destroyedFrom(s)}
				}
				return nil
			case ResNotRegistered:
				if !s.Live && !s.Destroyed {
					return []any{s}
				}
				return nil
			case ResUnknown:
				switch {
				case real:
					return []any{s, loginStarted(s, op.ID)}
				case s.Live:
					return []any{s, destroyedFrom(s)}
				}
				return []any{s} // no record, or "destroyed": no change
			}
			return nil

		case partLogin: // the LoginStart that released the KE2
			switch op.Result {
			case ResOK, ResKE2Refused, ResKE2Unknown: // the password opened the KE2
				if real && op.Pw == s.Pw {
					return []any{loginStarted(s, op.ID)}
				}
			case ResWrong:
				if real && op.Pw != s.Pw && op.Left == limit-(s.Used+1) {
					return []any{loginStarted(s, op.ID)}
				}
			case ResWrongDestroyed:
				if real && op.Pw != s.Pw {
					return []any{loginStarted(s, op.ID)}
				}
			}
			return nil

		case partFinish:
			mine := s.Live && s.Pending == op.ID
			switch op.Result {
			case ResOK:
				if !mine || op.GotKey != s.Key || op.Failed != s.Used-1 || (s.Epoch >= 0 && int64(op.Epoch) != s.Epoch) {
					return nil
				}
				n := succeeded(s, op.ID)
				n.Epoch = int64(op.Epoch)
				return []any{n}
			case ResKE2Refused: // superseded, expired, or the record gone
				if !mine {
					return []any{s}
				}
				return nil
			case ResKE2Unknown:
				if mine {
					return []any{s, succeeded(s, -1)}
				}
				return []any{s}
			case ResWrong: // an abort at the limit whose answer was lost, or not applied
				if mine && s.Used >= limit {
					return []any{s, destroyedFrom(s)}
				}
				return []any{s}
			case ResWrongDestroyed: // the abort answered "destroyed"
				switch {
				case mine && s.Used >= limit:
					return []any{destroyedFrom(s)}
				case s.Destroyed:
					return []any{s}
				}
				return nil
			}
			return nil
		}
	}
	return nil
}

// Describe is a one-line description of an op for reports and
// visualisations.
func (o *Op) Describe() string {
	var in string
	switch o.Kind {
	case OpEnroll:
		in = fmt.Sprintf("enroll(pw%d, key%d%s)", o.Pw, o.Key, o.authString())
	case OpRecover:
		in = fmt.Sprintf("recover(pw%d)", o.Pw)
	case OpDisable:
		in = fmt.Sprintf("disable(%s)", o.authString())
	case OpStatus:
		in = "status()"
	}
	out := string(o.Result)
	switch {
	case o.Kind == OpEnroll && o.Result == ResOK:
		out = fmt.Sprintf("ok e%d", o.Epoch)
	case o.Kind == OpRecover && o.Result == ResOK:
		out = fmt.Sprintf("ok key%d failed%d e%d ticket#%d", o.GotKey, o.Failed, o.Epoch, o.ID)
	case o.Result == ResWrong:
		out = fmt.Sprintf("wrong, %d left", o.Left)
	case o.Kind == OpStatus && o.Status != nil:
		st := o.Status
		out = fmt.Sprintf("registered=%t disabled=%t destroyed=%t used=%d/%d e%d", st.Registered, st.Disabled, st.Destroyed, st.GuessesUsed, st.GuessLimit, st.Epoch)
	}
	if o.Kind == OpRecover && o.KE2 && o.Result != ResOK {
		out += " (KE2)"
	}
	if o.Anomaly {
		out += " ANOMALY: " + o.Err
	}
	return fmt.Sprintf("#%d %s -> %s", o.ID, in, out)
}

func (o *Op) authString() string {
	switch o.Auth {
	case AuthKey:
		return fmt.Sprintf(", auth key%d", o.AuthKey)
	case AuthSession:
		return fmt.Sprintf(", auth ticket#%d", o.AuthSession)
	}
	return ""
}

// porcupineOps converts ops for porcupine. A Recover that received a KE2
// becomes its LoginStart and its finish (see above). An op or part with an
// unknown outcome returns at the end of the history (it may take effect any
// time after its invocation); unknown Status ops, which constrain nothing,
// are left out.
func porcupineOps(ops []*Op) []porcupine.Operation {
	var end int64
	for _, o := range ops {
		end = max(end, o.Return)
	}
	end++
	out := make([]porcupine.Operation, 0, len(ops))
	add := func(o *Op, part int, unknown bool) {
		ret := o.Return
		if unknown {
			ret = end
		}
		out = append(out, porcupine.Operation{ClientId: o.Client, Input: stepInput{o, part}, Call: o.Call, Return: ret})
	}
	for _, o := range ops {
		switch {
		case o.Kind == OpStatus && o.Unknown():
		case o.Kind == OpRecover && o.KE2:
			add(o, partLogin, false)
			switch {
			case o.Result == ResOK || o.Result == ResKE2Refused || o.Result == ResWrongDestroyed:
				add(o, partFinish, false)
			case o.Result == ResKE2Unknown || o.Result == ResWrong && o.Left == 0:
				add(o, partFinish, true)
			}
		default:
			add(o, partWhole, o.Unknown())
		}
	}
	return out
}
