package faultharness

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// hist builds a synthetic history for account "a"; ops are given in order
// with their [call, return] times.
type hist struct {
	ops []*Op
	now int64
}

func (h *hist) add(o *Op, call, ret int64) *Op {
	o.ID = len(h.ops) + 1
	if o.Account == "" {
		o.Account = "a"
	}
	o.Call, o.Return = call, ret
	if o.Kind == OpRecover && o.Result != ResUnknown && o.Result != ResDestroyed && o.Result != ResNotRegistered {
		o.KE2 = true
	}
	h.ops = append(h.ops, o)
	return o
}

// seq appends o after everything so far.
func (h *hist) seq(o *Op) *Op {
	h.now += 10
	c := h.now
	h.now += 10
	return h.add(o, c, h.now)
}

func enrollOK(pw, key int, epoch uint64, auth AuthKind, authID int) *Op {
	o := &Op{Kind: OpEnroll, Pw: pw, Key: key, Auth: auth, Result: ResOK, Epoch: epoch, Limit: 5}
	if auth == AuthKey {
		o.AuthKey = authID
	} else if auth == AuthSession {
		o.AuthSession = authID
	}
	return o
}

func recoverOK(pw, key, failed int, epoch uint64) *Op {
	return &Op{Kind: OpRecover, Pw: pw, Result: ResOK, GotKey: key, Failed: failed, Epoch: epoch}
}

func wrong(pw, left int) *Op { return &Op{Kind: OpRecover, Pw: pw, Result: ResWrong, Left: left} }

func status(reg, dis, des bool, used, limit int, epoch uint64) *Op {
	return &Op{Kind: OpStatus, Result: ResOK, Status: &StatusOut{Registered: reg, Disabled: dis, Destroyed: des, GuessesUsed: used, GuessLimit: limit, Epoch: epoch}}
}

func linearizable(t *testing.T, ops []*Op) bool {
	t.Helper()
	res := porcupine.CheckOperationsTimeout(Model(5), porcupineOps(ops), 10*time.Second)
	if res == porcupine.Unknown {
		t.Fatal("porcupine timed out on a tiny history")
	}
	return res == porcupine.Ok
}

func TestModelSequential(t *testing.T) {
	var h hist
	h.seq(status(false, false, false, 0, 0, 0))
	h.seq(enrollOK(1, 1, 1, AuthNone, 0))
	h.seq(recoverOK(1, 1, 0, 1))
	h.seq(wrong(-1, 4))
	h.seq(wrong(-2, 3))
	h.seq(status(true, false, false, 2, 5, 1))
	h.seq(recoverOK(1, 1, 2, 1))
	s := h.seq(recoverOK(1, 1, 0, 1))
	h.seq(enrollOK(2, 2, 3, AuthSession, s.ID)) // epoch 2 went to an abandoned RegisterStart
	h.seq(wrong(1, 4))                          // the old password
	h.seq(&Op{Kind: OpEnroll, Pw: 3, Key: 3, Result: ResUnauthorized})
	h.seq(&Op{Kind: OpEnroll, Pw: 3, Key: 2, Auth: AuthSession, AuthSession: s.ID, Result: ResUnauthorized}) // ticket used up
	h.seq(enrollOK(3, 2, 4, AuthKey, 2))                                                                     // change password: resets the count
	h.seq(status(true, false, false, 0, 5, 4))
	h.seq(&Op{Kind: OpDisable, Auth: AuthKey, AuthKey: 2, Result: ResOK})
	h.seq(status(false, true, false, 0, 0, 4))
	h.seq(&Op{Kind: OpRecover, Pw: 3, Result: ResNotRegistered}) // no record, no KE2
	h.seq(&Op{Kind: OpDisable, Auth: AuthKey, AuthKey: 2, Result: ResNotRegistered})
	h.seq(enrollOK(4, 4, 5, AuthNone, 0))
	if !linearizable(t, h.ops) {
		t.Fatal("a legal sequential history is not linearizable")
	}
	if r := Check(h.ops, 5, 10*time.Second); r.Failed() {
		t.Fatalf("checks failed a legal history:\n%s", r.Summary())
	}
}

func TestModelBudget(t *testing.T) {
	var h hist
	h.seq(enrollOK(1, 1, 1, AuthNone, 0))
	for i := range 4 {
		h.seq(wrong(-1-i, 4-i))
	}
	// The fifth wrong guess spends the budget; its abort destroys.
	h.seq(&Op{Kind: OpRecover, Pw: -9, Result: ResWrongDestroyed})
	h.seq(&Op{Kind: OpRecover, Pw: 1, Result: ResDestroyed})
	h.seq(status(false, false, true, 0, 0, 1))
	h.seq(enrollOK(2, 2, 2, AuthNone, 0))
	h.seq(recoverOK(2, 2, 0, 2))
	if !linearizable(t, h.ops) {
		t.Fatal("a legal history is not linearizable")
	}
	if r := Check(h.ops, 5, 10*time.Second); r.Failed() || r.MaxWindowKE2 != 5 {
		t.Fatalf("checks on a legal history (want at most 5 KE2 per window):\n%s", r.Summary())
	}

	// A sixth KE2 in the same window: over the budget.
	var bad hist
	bad.seq(enrollOK(1, 1, 1, AuthNone, 0))
	for i := range 5 {
		bad.seq(wrong(-1-i, 4-i))
	}
	bad.seq(wrong(-7, 0))
	if linearizable(t, bad.ops) {
		t.Fatal("a sixth KE2 after five wrong guesses is linearizable")
	}
	r := Check(bad.ops, 5, 10*time.Second)
	if !strings.Contains(strings.Join(r.Violations, "\n"), "guess budget") {
		t.Fatalf("the budget check missed 6 KE2 in a window:\n%s", r.Summary())
	}
}

func TestModelViolations(t *testing.T) {
	for name, build := range map[string]func(h *hist){
		"lost registration": func(h *hist) {
			h.seq(enrollOK(1, 1, 1, AuthNone, 0))
			h.seq(wrong(1, 4))
		},
		"lost change": func(h *hist) {
			h.seq(enrollOK(1, 1, 1, AuthNone, 0))
			h.seq(enrollOK(2, 1, 2, AuthKey, 1))
			h.seq(recoverOK(1, 1, 0, 1))
		},
		"destroyed comes back": func(h *hist) {
			h.seq(enrollOK(1, 1, 1, AuthNone, 0))
			for i := range 5 {
				h.seq(wrong(-1-i, 4-i))
			}
			h.seq(&Op{Kind: OpRecover, Pw: 1, Result: ResDestroyed})
			h.seq(recoverOK(1, 1, 5, 1))
		},
		"stale read": func(h *hist) {
			h.seq(enrollOK(1, 1, 1, AuthNone, 0))
			h.seq(wrong(-1, 4))
			h.seq(status(true, false, false, 0, 5, 1))
		},
		"count not reset": func(h *hist) {
			h.seq(enrollOK(1, 1, 1, AuthNone, 0))
			h.seq(wrong(-1, 4))
			h.seq(recoverOK(1, 1, 1, 1))
			h.seq(wrong(-2, 3))
		},
		"wrong key": func(h *hist) {
			h.seq(enrollOK(1, 1, 1, AuthNone, 0))
			h.seq(recoverOK(1, 2, 0, 1))
		},
		"unauthorized replacement": func(h *hist) {
			h.seq(enrollOK(1, 1, 1, AuthNone, 0))
			h.seq(enrollOK(2, 2, 2, AuthNone, 0))
		},
		"KE2 without a record": func(h *hist) {
			h.seq(wrong(1, 4)) // no fake logins: a KE2 needs a live record
		},
		"record denied": func(h *hist) {
			h.seq(enrollOK(1, 1, 1, AuthNone, 0))
			h.seq(&Op{Kind: OpRecover, Pw: 1, Result: ResNotRegistered})
		},
		"epoch goes back": func(h *hist) {
			h.seq(enrollOK(1, 1, 3, AuthNone, 0))
			h.seq(enrollOK(2, 1, 2, AuthKey, 1))
		},
	} {
		t.Run(name, func(t *testing.T) {
			var h hist
			build(&h)
			if linearizable(t, h.ops) {
				t.Fatal("an illegal history is linearizable")
			}
		})
	}
}

func TestModelUnknownOutcomes(t *testing.T) {
	// An unknown change may take effect late, or never.
	for _, late := range []bool{false, true} {
		var h hist
		h.seq(enrollOK(1, 1, 1, AuthNone, 0))
		h.add(&Op{Kind: OpEnroll, Pw: 2, Key: 1, Auth: AuthKey, AuthKey: 1, Result: ResUnknown}, 25, 30)
		h.now = 40
		if late {
			h.seq(recoverOK(1, 1, 0, 1))
			h.seq(recoverOK(2, 1, 0, 7)) // the change landed after all
			h.seq(status(true, false, false, 0, 5, 7))
		} else {
			h.seq(recoverOK(1, 1, 0, 1))
			h.seq(wrong(2, 4))
		}
		if !linearizable(t, h.ops) {
			t.Fatalf("late=%v: legal history with an unknown enroll is not linearizable", late)
		}
	}
	// A finish of unknown outcome may have reset the count.
	for _, used := range []int{0, 1} {
		var h hist
		h.seq(enrollOK(1, 1, 1, AuthNone, 0))
		h.seq(&Op{Kind: OpRecover, Pw: 1, Result: ResKE2Unknown})
		h.seq(status(true, false, false, used, 5, 1))
		if !linearizable(t, h.ops) {
			t.Fatalf("used=%d after an unknown finish is not linearizable", used)
		}
	}
	// A finish refused for sure did not.
	var h hist
	h.seq(enrollOK(1, 1, 1, AuthNone, 0))
	h.seq(&Op{Kind: OpRecover, Pw: 1, Result: ResKE2Refused})
	h.seq(status(true, false, false, 0, 5, 1))
	if linearizable(t, h.ops) {
		t.Fatal("a refused finish reset the count")
	}
}

func TestModelConcurrent(t *testing.T) {
	// Two concurrent wrong guesses: their counts tell the order.
	var h hist
	h.seq(enrollOK(1, 1, 1, AuthNone, 0))
	h.add(wrong(-1, 3), 30, 60)
	h.add(wrong(-2, 4), 35, 50)
	h.now = 70
	h.seq(status(true, false, false, 2, 5, 1))
	if !linearizable(t, h.ops) {
		t.Fatal("concurrent wrong guesses")
	}
	// A superseded login (its finish refused) counted a guess; the other
	// login succeeded and reports it.
	var g hist
	g.seq(enrollOK(1, 1, 1, AuthNone, 0))
	g.add(&Op{Kind: OpRecover, Pw: 1, Result: ResKE2Refused}, 30, 60)
	g.add(recoverOK(1, 1, 1, 1), 35, 55)
	g.now = 70
	g.seq(status(true, false, false, 0, 5, 1))
	if !linearizable(t, g.ops) {
		t.Fatal("a superseded login and a successful one")
	}
	// A Status between a successful login's LoginStart and its finish
	// sees the guess counted.
	var s hist
	s.seq(enrollOK(1, 1, 1, AuthNone, 0))
	s.add(recoverOK(1, 1, 0, 1), 30, 60)
	s.add(status(true, false, false, 1, 5, 1), 40, 50)
	s.now = 70
	s.seq(status(true, false, false, 0, 5, 1))
	if !linearizable(t, s.ops) {
		t.Fatal("a Status inside a login")
	}
	// But a wrong guess cannot come between them and the login succeed.
	var x hist
	x.seq(enrollOK(1, 1, 1, AuthNone, 0))
	x.add(recoverOK(1, 1, 0, 1), 30, 60)
	x.add(wrong(-1, 3), 40, 50)
	x.now = 70
	x.seq(status(true, false, false, 0, 5, 1))
	if linearizable(t, x.ops) {
		t.Fatal("a login succeeded although another LoginStart came between its two steps")
	}
}

func TestAcknowledgedAndDestroyedChecks(t *testing.T) {
	var h hist
	h.seq(enrollOK(1, 1, 1, AuthNone, 0))
	h.seq(wrong(1, 4))
	r := Check(h.ops, 5, 10*time.Second)
	if !strings.Contains(strings.Join(r.Violations, "\n"), "acknowledged registration lost") {
		t.Fatalf("lost registration not reported:\n%s", r.Summary())
	}
	var g hist
	g.seq(enrollOK(1, 1, 1, AuthNone, 0))
	g.seq(status(false, false, true, 0, 0, 1))
	g.seq(status(true, false, false, 0, 5, 1))
	r = Check(g.ops, 5, 10*time.Second)
	if !strings.Contains(strings.Join(r.Violations, "\n"), "destroyed record came back") {
		t.Fatalf("resurrection not reported:\n%s", r.Summary())
	}
}

// TestExplainHistory explains a failure: COFFER_HARNESS_HISTORY=path/to/history.json
// (and optionally COFFER_HARNESS_ACCOUNT=name) checks that history again and
// prints, for each account that is not linearizable, where it breaks.
func TestExplainHistory(t *testing.T) {
	path := os.Getenv("COFFER_HARNESS_HISTORY")
	if path == "" {
		t.Skip("set COFFER_HARNESS_HISTORY to a history.json written by a failed run")
	}
	ops, limit, err := LoadHistory(path)
	if err != nil {
		t.Fatal(err)
	}
	by, names := byAccount(ops)
	only := os.Getenv("COFFER_HARNESS_ACCOUNT")
	for _, a := range names {
		if only != "" && a != only {
			continue
		}
		if res := porcupine.CheckOperationsTimeout(Model(limit), porcupineOps(by[a]), time.Minute); res == porcupine.Ok && only == "" {
			continue
		}
		t.Logf("account %s:\n%s", a, Explain(by[a], limit, time.Minute))
	}
	r := Check(ops, limit, time.Minute)
	t.Logf("%s", r.Summary())
}
