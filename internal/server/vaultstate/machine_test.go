package vaultstate

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"
)

// gen makes random command sequences over a few accounts, reading the
// machine's state the way a leader does (sometimes stale), with replays,
// random time steps, right and wrong MACs and authorizations.
type gen struct {
	h        *harness
	rng      *rand.Rand
	recs     []RecordID
	sent     []Command // for replays
	tickets  map[RecordID]string
	nTickets int
	// attacker: never send the right MAC (a guesser without the password).
	attacker bool
}

func newGen(h *harness, seed uint64) *gen {
	g := &gen{h: h, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), tickets: map[RecordID]string{}}
	for i := range 3 {
		var id RecordID
		id[0], id[1] = 0xC0, byte(i)
		g.recs = append(g.recs, id)
	}
	return g
}

// next returns a command to apply now.
func (g *gen) next() Command {
	h, r := g.h, g.rng
	if r.IntN(8) == 0 {
		h.now += int64(r.IntN(200_000)) // no ticks: the entries are replayed elsewhere
	} else {
		h.now += int64(r.IntN(2000))
	}
	if len(g.sent) > 0 && r.IntN(25) == 0 {
		c := g.sent[r.IntN(len(g.sent))]
		c.Time = h.now
		return c
	}
	rec := g.recs[r.IntN(len(g.recs))]
	acc, err := h.m.Account(rec)
	if err != nil {
		h.t.Fatal(err)
	}
	auth := func() Auth {
		switch r.IntN(5) {
		case 0:
			return Auth{}
		case 1:
			if acc.Record != nil {
				return Auth{Kind: AuthProof, Hash: acc.Record.ProofHash}
			}
			return proofAuth(byte(r.IntN(4)))
		case 2:
			return proofAuth(byte(r.IntN(4)))
		case 3:
			if t, ok := g.tickets[rec]; ok {
				return ticketAuth(t)
			}
		}
		return ticketAuth(fmt.Sprint("t", r.IntN(g.nTickets+1)))
	}
	var op Op
	switch k := r.IntN(100); {
	case k < 40: // a login
		if acc.Live() || r.IntN(4) == 0 {
			epoch := acc.Epoch
			if r.IntN(10) == 0 {
				epoch = uint64(r.IntN(4))
			}
			b := byte(r.IntN(256))
			op = &LoginStart{Epoch: epoch, LoginID: loginID(b), MACHash: HashMAC(mac(b))}
		} else {
			op = &LoginStartFake{GuessLimit: 1 + uint32(r.IntN(12))}
		}
	case k < 65:
		f := &LoginFinish{}
		if acc.Pending != nil && !g.attacker && r.IntN(3) > 0 {
			f.LoginID = acc.Pending.ID
			f.ClientMAC = mac(acc.Pending.ID[0]) // the generator pairs loginID(b) with mac(b)
			if r.IntN(3) == 0 {
				f.ClientMAC = mac(0xEE)
			}
		} else {
			f.LoginID = loginID(byte(r.IntN(256)))
			f.ClientMAC = mac(byte(r.IntN(256)))
		}
		g.nTickets++
		f.TicketHash = HashTicket(fmt.Append(nil, "t", g.nTickets))
		op = f
	case k < 75:
		op = &RegisterCheck{Auth: auth()}
	case k < 87:
		epoch := acc.Reserved
		if r.IntN(5) == 0 {
			epoch = uint64(r.IntN(6))
		}
		op = &Register{Epoch: epoch, GuessLimit: 1 + uint32(r.IntN(12)), Record: testRecord(byte(r.IntN(4))), Auth: auth()}
	case k < 93:
		op = &Disable{Auth: auth()}
	default:
		op = &Status{}
	}
	c := Command{RequestID: h.nextReq(), Time: h.now, RecordID: rec, Op: op}
	g.sent = append(g.sent, c)
	return c
}

// observe notes the tickets successful logins hand out.
func (g *gen) observe(c Command, res Result) {
	if f, ok := c.Op.(*LoginFinish); ok {
		if _, ok := res.(*LoginFinishResult); ok {
			for i := g.nTickets; i >= 0; i-- {
				if HashTicket(fmt.Append(nil, "t", i)) == f.TicketHash {
					g.tickets[c.RecordID] = fmt.Sprint("t", i)
					break
				}
			}
		}
	}
}

// TestGuessBudgetProperty: whatever the interleaving of commands, at most
// guess_limit LoginStart results that release a real KE2 are answered for a
// record between two resets (a successful login or registration).
func TestGuessBudgetProperty(t *testing.T) {
	seeds := 24
	if testing.Short() {
		seeds = 8
	}
	totalExhausted := 0
	for seed := range uint64(seeds) {
		h := newHarness(t)
		g := newGen(h, seed)
		g.attacker = seed%2 == 1
		released := map[RecordID]uint32{}
		prevLimit := map[RecordID]uint32{}
		var successes, destroyed, maxReleased, exhausted int
		for range 400 {
			c := g.next()
			res := h.applyCmd(c)
			g.observe(c, res)
			acc, err := h.m.Account(c.RecordID)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := c.Op.(*LoginStart); ok && res != nil && released[c.RecordID] > 0 &&
				released[c.RecordID] == prevLimit[c.RecordID] {
				// The budget was spent: only Destroyed, Conflict or Replay.
				if e, ok := res.(*Error); !ok || (e.Code != CodeDestroyed && e.Code != CodeConflict && e.Code != CodeReplay) {
					t.Fatalf("seed %d: LoginStart after the budget was spent answered %s", seed, describe(res))
				}
				if e := res.(*Error); e.Code == CodeDestroyed {
					exhausted++
					released[c.RecordID] = 0
				}
			}
			prevLimit[c.RecordID] = acc.GuessLimit
			switch v := res.(type) {
			case *LoginStartResult:
				if v.Retried {
					// The same guess answered again: nothing more counted.
					if v.GuessesUsed != released[c.RecordID] {
						t.Fatalf("seed %d: a retried LoginStart reported %d guesses, %d were released", seed, v.GuessesUsed, released[c.RecordID])
					}
					break
				}
				if v.Fake {
					if acc.Live() {
						t.Fatalf("seed %d: fake login answered for a live record", seed)
					}
					break
				}
				released[c.RecordID]++
				if n := released[c.RecordID]; n > acc.GuessLimit || n != v.GuessesUsed {
					t.Fatalf("seed %d: %d real KE2 released since the last reset, limit %d, reported %d",
						seed, n, acc.GuessLimit, v.GuessesUsed)
				}
				maxReleased = max(maxReleased, int(released[c.RecordID]))
			case *LoginFinishResult:
				successes++
				released[c.RecordID] = 0
			case *RegisterResult:
				released[c.RecordID] = 0
			case *Error:
				if v.Code == CodeDestroyed {
					destroyed++
					released[c.RecordID] = 0
				}
			}
		}
		totalExhausted += exhausted
		if seed < 2 {
			t.Logf("seed %d (attacker %t): %d successes, %d destroyed answers, %d budgets spent and then refused, max %d guesses between resets",
				seed, g.attacker, successes, destroyed, exhausted, maxReleased)
		}
	}
	if totalExhausted == 0 {
		t.Fatal("no sequence spent a whole budget: the generator does not test the limit")
	}
}

// TestBatchingIsInvisible applies the same log one entry per transaction and
// in random batches: same results, same bytes in every bucket.
func TestBatchingIsInvisible(t *testing.T) {
	h := newHarness(t)
	g := newGen(h, 7)
	var entries []Entry
	var results []string
	for range 600 {
		c := g.next()
		data, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		h.index++
		e := Entry{Index: h.index, Term: 1, Data: data}
		if h.index%50 == 0 {
			// A Raft configuration entry in the middle.
			h.index++
			entries = append(entries, e, Entry{Index: h.index, Term: 1, NoOp: true})
			res := h.m.Apply(e)
			g.observe(c, res)
			results = append(results, describe(res), describe(h.m.Apply(entries[len(entries)-1])))
			continue
		}
		entries = append(entries, e)
		res := h.m.Apply(e)
		g.observe(c, res)
		results = append(results, describe(res))
	}
	b, err := Open(filepath.Join(t.TempDir(), "b.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	var got []string
	for i := 0; i < len(entries); {
		n := min(1+rng.IntN(64), len(entries)-i)
		for _, r := range b.ApplyBatch(entries[i : i+n]) {
			got = append(got, describe(r))
		}
		i += n
	}
	for i := range results {
		if results[i] != got[i] {
			t.Fatalf("entry %d: one by one %s, batched %s", i+1, results[i], got[i])
		}
	}
	if d := diffDumps(dump(t, h.m), dump(t, b)); d != "" {
		t.Fatalf("states differ:\n%s", d)
	}
}

func TestIdempotentReapply(t *testing.T) {
	h := newHarness(t)
	g := newGen(h, 3)
	var entries []Entry
	for range 100 {
		c := g.next()
		data, _ := c.MarshalBinary()
		h.index++
		e := Entry{Index: h.index, Term: 2, Data: data}
		entries = append(entries, e)
		g.observe(c, h.m.Apply(e))
	}
	want := dump(t, h.m)
	check := func(m *Machine) {
		t.Helper()
		for _, r := range m.ApplyBatch(entries) {
			if r != nil {
				t.Fatalf("re-applied entry answered %s", describe(r))
			}
		}
		if r := m.Apply(entries[40]); r != nil {
			t.Fatalf("re-applied entry answered %s", describe(r))
		}
		if d := diffDumps(want, dump(t, m)); d != "" {
			t.Fatalf("re-apply changed state:\n%s", d)
		}
		if i, term := m.LastApplied(); i != 100 || term != 2 {
			t.Fatalf("last applied %d/%d", i, term)
		}
	}
	check(h.m)
	// After a restart, the file remembers what it applied.
	path := filepath.Join(h.dir, "state.db")
	if err := h.m.Close(); err != nil {
		t.Fatal(err)
	}
	m, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	h.m = m
	check(m)
	// The next entry applies.
	if r := h.do(&Status{}); r == nil {
		t.Fatal("new entry skipped")
	}
}

func TestSnapshotRestore(t *testing.T) {
	h := newHarness(t)
	g := newGen(h, 11)
	for range 300 {
		c := g.next()
		g.observe(c, h.applyCmd(c))
	}
	snap, err := h.m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	atSnapshot := dump(t, h.m)
	snapIndex, _ := snap.Index()
	if snapIndex != h.index {
		t.Fatalf("snapshot index %d, want %d", snapIndex, h.index)
	}
	// Applies continue while the snapshot is open, and do not leak into it.
	for range 100 {
		c := g.next()
		g.observe(c, h.applyCmd(c))
	}
	var buf bytes.Buffer
	n, err := snap.WriteTo(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteTo: %d, %v (buffer %d)", n, err, buf.Len())
	}
	snap.Release()
	snap.Release()
	stream := buf.Bytes()

	// Into a machine with other state: replaced whole.
	other := newHarness(t)
	other.register(9, Auth{})
	if err := other.m.Restore(bytes.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	if d := diffDumps(atSnapshot, dump(t, other.m)); d != "" {
		t.Fatalf("restored state differs:\n%s", d)
	}
	if i, _ := other.m.LastApplied(); i != snapIndex {
		t.Fatalf("restored last applied %d, want %d", i, snapIndex)
	}
	// It keeps working, and survives a reopen.
	other.index = snapIndex
	want[*StatusResult](t, other.do(&Status{}))
	path := filepath.Join(other.dir, "state.db")
	other.m.Close()
	m, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if i, _ := m.LastApplied(); i != snapIndex+1 {
		t.Fatalf("after reopen last applied %d", i)
	}
	m.Close()

	// Into the machine it came from: back in time.
	if err := h.m.Restore(bytes.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	if d := diffDumps(atSnapshot, dump(t, h.m)); d != "" {
		t.Fatalf("restored state differs:\n%s", d)
	}
}

func TestRestoreRefusesBadStreams(t *testing.T) {
	h := newHarness(t)
	h.register(1, Auth{})
	good := snapshotBytes(t, h.m)

	target := newHarness(t)
	target.register(2, Auth{})
	before := dump(t, target.m)
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 1
		return b
	}
	cases := map[string][]byte{
		"empty":          nil,
		"magic":          flip(0),
		"size":           flip(len(snapshotMagic) + 7),
		"body":           flip(len(good) / 2),
		"checksum":       flip(len(good) - 1),
		"truncated":      good[:len(good)-40],
		"trailing":       append(bytes.Clone(good), 0),
		"not bbolt":      fakeSnapshot([]byte("definitely not a bbolt file, but checksummed")),
		"huge size":      append(append(bytes.Clone(snapshotMagic), 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF), 0),
		"empty bbolt db": fakeSnapshot(emptyBolt(t)),
	}
	for name, stream := range cases {
		err := target.m.Restore(bytes.NewReader(stream))
		if !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("%s: got %v, want ErrBadSnapshot", name, err)
		}
	}
	if d := diffDumps(before, dump(t, target.m)); d != "" {
		t.Fatalf("refused restore changed state:\n%s", d)
	}
	want[*StatusResult](t, target.do(&Status{}))
}

// fakeSnapshot frames body as a snapshot with a valid checksum.
func fakeSnapshot(body []byte) []byte {
	b := append([]byte(nil), snapshotMagic...)
	b = append(b, byte(len(body)>>56), byte(len(body)>>48), byte(len(body)>>40), byte(len(body)>>32),
		byte(len(body)>>24), byte(len(body)>>16), byte(len(body)>>8), byte(len(body)))
	b = append(b, body...)
	sum := sha256Sum(b)
	return append(b, sum[:]...)
}

// errSealer fails Seal or Open on demand.
type errSealer struct{ failSeal, failOpen bool }

func (s *errSealer) Seal(_, p []byte) ([]byte, error) {
	if s.failSeal {
		return nil, errors.New("sealing key unavailable")
	}
	return p, nil
}

func (s *errSealer) Open(_, p []byte) ([]byte, error) {
	if s.failOpen {
		return nil, errors.New("message authentication failed")
	}
	return p, nil
}

func TestStorageFailureStopsTheMachine(t *testing.T) {
	h := newHarness(t)
	path := filepath.Join(h.dir, "s2.db")
	sealer := &errSealer{}
	m, err := Open(path, Options{Sealer: sealer, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	h.m = m
	h.register(1, Auth{})
	applied, _ := m.LastApplied()
	before := dump(t, m)

	sealer.failSeal = true
	c := h.cmd(&LoginStart{Epoch: 1, LoginID: loginID(1), MACHash: HashMAC(mac(1))})
	wantCode(t, h.applyCmd(c), CodeUnavailable)
	if !errors.Is(m.Err(), ErrStorage) {
		t.Fatalf("Err() = %v", m.Err())
	}
	if i, _ := m.LastApplied(); i != applied {
		t.Fatalf("failed entry advanced the index to %d", i)
	}
	if d := diffDumps(before, dump(t, m)); d != "" {
		t.Fatalf("failed transaction left changes:\n%s", d)
	}
	// Everything after is refused, even when storage works again: the
	// replica must restart and re-apply from the log.
	sealer.failSeal = false
	wantCode(t, h.do(&Status{}), CodeUnavailable)
	if _, err := m.Snapshot(); err == nil {
		t.Fatal("snapshot of a failed machine")
	}
	m.Close()
	m2, err := Open(path, Options{Sealer: sealer, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	data, _ := c.MarshalBinary()
	r := m2.Apply(Entry{Index: applied + 1, Term: 1, Data: data})
	if v := want[*LoginStartResult](t, r); v.GuessesUsed != 1 {
		t.Fatalf("re-applied: %+v", v)
	}

	// A record that does not open (tampered, wrong key) stops it too.
	sealer.failOpen = true
	h.m = m2
	h.index = applied + 1
	wantCode(t, h.do(&Status{}), CodeUnavailable)
	if _, err := m2.Account(h.rec); !errors.Is(err, ErrStorage) {
		t.Fatalf("Account: %v", err)
	}
}

func TestUndecodableEntries(t *testing.T) {
	h := newHarness(t)
	for i, data := range [][]byte{nil, {}, {1}, {2, 1}, bytes.Repeat([]byte{0xFF}, 100)} {
		h.index++
		wantCode(t, h.m.Apply(Entry{Index: h.index, Term: 1, Data: data}), CodeBadRequest)
		if idx, _ := h.m.LastApplied(); idx != h.index {
			t.Fatalf("case %d: index not advanced", i)
		}
	}
}

func TestOpenRefusesForeignFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.db")
	m, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// A second open of the same file (another replica process) is refused
	// rather than blocking forever.
	m2, err := Open(path, Options{})
	if err == nil {
		m2.Close()
		t.Fatal("second open succeeded")
	}
	m.Close()
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// emptyBolt returns the bytes of a valid bbolt file without the vault's
// buckets.
func emptyBolt(t *testing.T) []byte {
	path := filepath.Join(t.TempDir(), "empty.db")
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
