package vaultstate

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"testing"

	"go.etcd.io/bbolt"
)

// t0 is an arbitrary start time (2026-01-01T00:00:00Z) in Unix ms.
const t0 = int64(1767225600000)

// harness applies commands to a Machine with increasing indexes, a fake
// clock and fresh request ids.
type harness struct {
	t     testing.TB
	m     *Machine
	dir   string
	index uint64
	now   int64
	reqN  uint64
	rec   RecordID
}

// harnessOptions are the Options of newHarness's machine
// (TestUnderGroupCommit runs the tests again with group commit). Every
// harness keeps the state digest (digest.go), so the scenario, property,
// batching, reopen and snapshot tests all check it: a reopen recomputes it
// over the whole file.
var harnessOptions = Options{NoSync: true, DigestKey: testDigestKey}

// testDigestKey is the harnesses' digest key.
var testDigestKey = bytes.Repeat([]byte{0x5D}, 32)

func newHarness(t testing.TB) *harness {
	t.Helper()
	dir := t.TempDir()
	m, err := Open(filepath.Join(dir, "state.db"), harnessOptions)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	h := &harness{t: t, m: m, dir: dir, now: t0}
	h.rec[0] = 0xAA
	return h
}

func (h *harness) nextReq() RequestID {
	h.reqN++
	var id RequestID
	binary.BigEndian.PutUint64(id[8:], h.reqN)
	return id
}

// cmd makes a command for the harness's record at the current time.
func (h *harness) cmd(op Op) Command {
	return Command{RequestID: h.nextReq(), Time: h.now, RecordID: h.rec, Op: op}
}

func (h *harness) applyCmd(c Command) Result {
	h.t.Helper()
	data, err := c.MarshalBinary()
	if err != nil {
		h.t.Fatalf("encode %v: %v", c, err)
	}
	h.index++
	return h.m.Apply(Entry{Index: h.index, Term: 1, Data: data})
}

func (h *harness) do(op Op) Result {
	h.t.Helper()
	return h.applyCmd(h.cmd(op))
}

func (h *harness) account() *Account {
	h.t.Helper()
	a, err := h.m.Account(h.rec)
	if err != nil {
		h.t.Fatal(err)
	}
	return a
}

// advance moves the clock ms forward as an idle fleet's leader does: with a
// Tick at least every MaxClockStep, so later commands are on time.
func (h *harness) advance(ms int64) {
	step := MaxClockStep.Milliseconds()
	for ms > step {
		h.now += step
		ms -= step
		h.tick()
	}
	h.now += ms
}

func (h *harness) tick() {
	h.t.Helper()
	c := h.cmd(&Tick{})
	c.RecordID = RecordID{}
	want[*TickResult](h.t, h.applyCmd(c))
}

func testRecord(tag byte) Record {
	r := Record{
		Opaque:     bytes.Repeat([]byte{tag}, 192),
		KSF:        KSFParams{Time: 1, MemoryKiB: 19 * 1024, Threads: 1},
		WrappedKey: bytes.Repeat([]byte{tag ^ 0x55}, 60),
	}
	r.ProofHash = HashKeyProof([]byte{'p', tag})
	return r
}

func proofAuth(tag byte) Auth { return Auth{Kind: AuthProof, Hash: HashKeyProof([]byte{'p', tag})} }

func ticketAuth(ticket string) Auth { return Auth{Kind: AuthTicket, Hash: HashTicket([]byte(ticket))} }

func mac(b byte) []byte { return bytes.Repeat([]byte{b}, 64) }

func loginID(b byte) LoginID {
	var id LoginID
	id[0] = b
	return id
}

// register runs RegisterCheck + Register with auth and fails the test
// unless both succeed.
func (h *harness) register(tag byte, auth Auth) uint64 {
	h.t.Helper()
	r := h.do(&RegisterCheck{Auth: auth})
	chk, ok := r.(*RegisterCheckResult)
	if !ok {
		h.t.Fatalf("RegisterCheck: %v", describe(r))
	}
	r = h.do(&Register{GuessLimit: testGuessLimit, Epoch: chk.Epoch, Record: testRecord(tag), Auth: auth})
	reg, ok := r.(*RegisterResult)
	if !ok {
		h.t.Fatalf("Register: %v", describe(r))
	}
	if reg.Epoch != chk.Epoch {
		h.t.Fatalf("Register epoch %d, RegisterCheck said %d", reg.Epoch, chk.Epoch)
	}
	return reg.Epoch
}

// loginStart counts a guess with the expected MAC mac(b) and login id b.
func (h *harness) loginStart(b byte) Result {
	h.t.Helper()
	return h.do(&LoginStart{Epoch: h.account().Epoch, LoginID: loginID(b), MACHash: HashMAC(mac(b))})
}

func (h *harness) loginFinish(id, macByte byte, ticket string) Result {
	h.t.Helper()
	return h.do(&LoginFinish{LoginID: loginID(id), ClientMAC: mac(macByte), TicketHash: HashTicket([]byte(ticket))})
}

func describe(r Result) string {
	switch v := r.(type) {
	case nil:
		return "<nil>"
	case *Error:
		return fmt.Sprintf("error %s: %s (left %d/%d)", v.Code, v.Message, v.GuessesLeft, v.GuessLimit)
	default:
		return fmt.Sprintf("%T %+v", r, r)
	}
}

func wantCode(t testing.TB, r Result, code Code) *Error {
	t.Helper()
	e, ok := r.(*Error)
	if !ok || e.Code != code {
		t.Fatalf("got %s, want error %s", describe(r), code)
	}
	return e
}

func want[T Result](t testing.TB, r Result) T {
	t.Helper()
	v, ok := r.(T)
	if !ok {
		var zero T
		t.Fatalf("got %s, want %T", describe(r), zero)
	}
	return v
}

// dump returns every key and value of every bucket, for comparing states.
func dump(t testing.TB, m *Machine) map[string]string {
	t.Helper()
	out := map[string]string{}
	m.mu.RLock()
	defer m.mu.RUnlock()
	// Through the open transaction under group commit: what is applied.
	err := m.view(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				if bytes.Equal(name, bucketMeta) && bytes.Equal(k, metaDigest) {
					return nil // machines with and without a digest key compare equal
				}
				out[fmt.Sprintf("%s/%x", name, k)] = fmt.Sprintf("%x", v)
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffDumps(a, b map[string]string) string {
	var keys []string
	seen := map[string]bool{}
	for k := range a {
		keys, seen[k] = append(keys, k), true
	}
	for k := range b {
		if !seen[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	for _, k := range keys {
		if a[k] != b[k] {
			fmt.Fprintf(&buf, "%s: %q != %q\n", k, a[k], b[k])
		}
	}
	return buf.String()
}

// snapshotBytes takes a snapshot of m and returns its stream.
func snapshotBytes(t testing.TB, m *Machine) []byte {
	t.Helper()
	return snapshotWith(t, m, (*Snapshot).WriteTo)
}

// snapshotWith takes a snapshot of m and returns what write makes of it.
func snapshotWith(t testing.TB, m *Machine, write func(*Snapshot, io.Writer) (int64, error)) []byte {
	t.Helper()
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var buf bytes.Buffer
	if _, err := write(snap, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// testGuessLimit is the guess limit the tests' commands name (the vault
// server's default; the state machine itself has none).
const testGuessLimit = 10

func (h *harness) loginStartWith(b byte, m []byte) Result {
	h.t.Helper()
	return h.do(&LoginStart{Epoch: h.account().Epoch, LoginID: loginID(b), MACHash: HashMAC(m)})
}
