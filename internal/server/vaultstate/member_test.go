package vaultstate

import (
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.etcd.io/bbolt"
)

// doMember applies a member directory command (zero record id).
func (h *harness) doMember(op Op) Result {
	h.t.Helper()
	return h.applyCmd(Command{RequestID: h.nextReq(), Time: h.now, Op: op})
}

func (h *harness) members() []Member {
	h.t.Helper()
	ms, err := h.m.Members()
	if err != nil {
		h.t.Fatal(err)
	}
	return ms
}

func TestMemberDirectory(t *testing.T) {
	h := newHarness(t)
	if ms := h.members(); len(ms) != 0 {
		t.Fatalf("new machine has members %+v", ms)
	}
	v0 := h.m.MembersVersion()
	r := want[*MemberResult](t, h.doMember(&SetMember{ID: "r2", URL: "https://10.0.0.2:7100", DataCentre: "ams1"}))
	if !r.Changed || r.Member != (Member{ID: "r2", URL: "https://10.0.0.2:7100", DataCentre: "ams1"}) {
		t.Fatalf("set: %+v", r)
	}
	v1 := h.m.MembersVersion()
	if v1 == v0 {
		t.Fatal("version unchanged by a change")
	}
	// The same again changes nothing (and not the version).
	if r := want[*MemberResult](t, h.doMember(&SetMember{ID: "r2", URL: "https://10.0.0.2:7100"})); r.Changed {
		t.Fatalf("repeat: %+v", r)
	}
	if h.m.MembersVersion() != v1 {
		t.Fatal("version changed without a change")
	}
	// An empty field keeps the stored one; a set field replaces it.
	r = want[*MemberResult](t, h.doMember(&SetMember{ID: "r2", URL: "https://r2.example:7100"}))
	if !r.Changed || r.Member.URL != "https://r2.example:7100" || r.Member.DataCentre != "ams1" {
		t.Fatalf("update URL: %+v", r)
	}
	// FillOnly never overrides, only fills.
	r = want[*MemberResult](t, h.doMember(&SetMember{ID: "r2", URL: "https://stale:1", DataCentre: "stale", FillOnly: true}))
	if r.Changed || r.Member.URL != "https://r2.example:7100" || r.Member.DataCentre != "ams1" {
		t.Fatalf("fill over set fields: %+v", r)
	}
	want[*MemberResult](t, h.doMember(&SetMember{ID: "r1", DataCentre: "fra1"}))
	r = want[*MemberResult](t, h.doMember(&SetMember{ID: "r1", URL: "https://10.0.0.1:7100", DataCentre: "other", FillOnly: true}))
	if !r.Changed || r.Member != (Member{ID: "r1", URL: "https://10.0.0.1:7100", DataCentre: "fra1"}) {
		t.Fatalf("fill: %+v", r)
	}
	want[*MemberResult](t, h.doMember(&SetMember{ID: "r3", URL: "https://10.0.0.3:7100", FillOnly: true}))
	wantMembers := []Member{
		{ID: "r1", URL: "https://10.0.0.1:7100", DataCentre: "fra1"},
		{ID: "r2", URL: "https://r2.example:7100", DataCentre: "ams1"},
		{ID: "r3", URL: "https://10.0.0.3:7100"},
	}
	if ms := h.members(); !reflect.DeepEqual(ms, wantMembers) {
		t.Fatalf("members %+v", ms)
	}
	// Forget.
	v := h.m.MembersVersion()
	if r := want[*MemberResult](t, h.doMember(&ForgetMember{ID: "r2"})); !r.Changed {
		t.Fatalf("forget: %+v", r)
	}
	if h.m.MembersVersion() == v {
		t.Fatal("version unchanged by forget")
	}
	if r := want[*MemberResult](t, h.doMember(&ForgetMember{ID: "r2"})); r.Changed {
		t.Fatalf("forget again: %+v", r)
	}
	if ms := h.members(); len(ms) != 2 || ms[0].ID != "r1" || ms[1].ID != "r3" {
		t.Fatalf("after forget: %+v", ms)
	}
	// Member commands leave accounts alone, and a replayed one is refused.
	if a := h.account(); a.Live() || a.Reserved != 0 {
		t.Fatalf("account touched: %+v", a)
	}
	c := Command{RequestID: h.nextReq(), Time: h.now, Op: &SetMember{ID: "r9", URL: "https://r9:1"}}
	want[*MemberResult](t, h.applyCmd(c))
	c.Op = &SetMember{ID: "r9", URL: "https://changed:1"}
	wantCode(t, h.applyCmd(c), CodeReplay)
	if ms := h.members(); ms[len(ms)-1].URL != "https://r9:1" {
		t.Fatalf("replayed member command applied: %+v", ms)
	}
}

func TestMemberCommandEncoding(t *testing.T) {
	good := []Command{
		{Time: t0, Op: &SetMember{ID: "r1", URL: "https://10.0.0.1:7100", DataCentre: "Frankfurt 1"}},
		{Time: t0, Op: &SetMember{ID: "vault-2", DataCentre: "ams1", FillOnly: true}},
		{Time: t0, Op: &SetMember{ID: strings.Repeat("a", MaxMemberIDSize), URL: "http://x/" + strings.Repeat("p", MaxMemberURLSize-9)}},
		{Time: t0, Op: &ForgetMember{ID: "r3"}},
	}
	for _, c := range good {
		b, err := c.MarshalBinary()
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		var back Command
		if err := back.UnmarshalBinary(b); err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("round trip: %+v != %+v", back, c)
		}
	}
	var rec RecordID
	rec[0] = 1
	bad := []Command{
		{Op: &SetMember{ID: "", URL: "https://x"}},
		{Op: &SetMember{ID: "r1"}},
		{Op: &SetMember{ID: "r 1", URL: "https://x"}},
		{Op: &SetMember{ID: "r1", URL: "https://x y"}},
		{Op: &SetMember{ID: "r1", URL: "https://x\n"}},
		{Op: &SetMember{ID: "r1", DataCentre: "dc\x00"}},
		{Op: &SetMember{ID: "r1", DataCentre: "\xff"}},
		{Op: &SetMember{ID: strings.Repeat("a", MaxMemberIDSize+1), URL: "https://x"}},
		{Op: &SetMember{ID: "r1", URL: "https://" + strings.Repeat("x", MaxMemberURLSize)}},
		{Op: &SetMember{ID: "r1", DataCentre: strings.Repeat("d", MaxDataCentreSize+1)}},
		{Op: &ForgetMember{}},
		{RecordID: rec, Op: &ForgetMember{ID: "r1"}},
		{RecordID: rec, Op: &SetMember{ID: "r1", URL: "https://x"}},
	}
	for _, c := range bad {
		if _, err := c.MarshalBinary(); err == nil {
			t.Errorf("%+v encoded", c.Op)
		}
	}
	// Unknown flags are refused.
	b, _ := Command{Op: &SetMember{ID: "r1", URL: "https://x"}}.MarshalBinary()
	b[2+RequestIDSize+8+RecordIDSize] = 2
	var c Command
	if err := c.UnmarshalBinary(b); err == nil {
		t.Fatal("unknown member flag decoded")
	}
}

// TestMembersSnapshotReplay: the directory is in snapshots, and re-applying
// the log after a reopen changes nothing.
func TestMembersSnapshotReplay(t *testing.T) {
	h := newHarness(t)
	var entries []Entry
	add := func(op Op) {
		c := Command{RequestID: h.nextReq(), Time: h.now, Op: op}
		data, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		h.index++
		e := Entry{Index: h.index, Term: 3, Data: data}
		entries = append(entries, e)
		if r := h.m.Apply(e); r == nil {
			t.Fatal("entry skipped")
		}
	}
	add(&SetMember{ID: "r1", URL: "https://a:1", DataCentre: "dc-a"})
	add(&SetMember{ID: "r2", URL: "https://b:1"})
	h.register(1, Auth{})
	add(&SetMember{ID: "r2", DataCentre: "dc-b", FillOnly: true})
	add(&SetMember{ID: "r3", URL: "https://c:1"})
	add(&ForgetMember{ID: "r3"})
	add(&SetMember{ID: "r4", URL: "https://d:1", DataCentre: "dc-d"})
	wantMembers := []Member{{"r1", "https://a:1", "dc-a"}, {"r2", "https://b:1", "dc-b"}, {"r4", "https://d:1", "dc-d"}}
	if ms := h.members(); !reflect.DeepEqual(ms, wantMembers) {
		t.Fatalf("members %+v", ms)
	}

	stream := snapshotBytes(t, h.m)
	other := newHarness(t)
	want[*MemberResult](t, other.doMember(&SetMember{ID: "zz", URL: "https://z:1"}))
	v := other.m.MembersVersion()
	if err := other.m.Restore(bytes.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	if other.m.MembersVersion() == v {
		t.Fatal("restore did not change the members version")
	}
	if ms := other.members(); !reflect.DeepEqual(ms, wantMembers) {
		t.Fatalf("restored members %+v", ms)
	}
	if d := diffDumps(dump(t, h.m), dump(t, other.m)); d != "" {
		t.Fatalf("restored state differs:\n%s", d)
	}

	// Replay after a reopen: every entry is skipped, nothing changes.
	before := dump(t, h.m)
	path := filepath.Join(h.dir, "state.db")
	if err := h.m.Close(); err != nil {
		t.Fatal(err)
	}
	m, err := Open(path, harnessOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, r := range m.ApplyBatch(entries) {
		if r != nil {
			t.Fatalf("re-applied entry answered %s", describe(r))
		}
	}
	if d := diffDumps(before, dump(t, m)); d != "" {
		t.Fatalf("replay changed state:\n%s", d)
	}
	// The same log on a fresh machine, in one batch, gives the same
	// directory (deterministic, whatever the batching).
	fresh := newHarness(t)
	fresh.m.ApplyBatch(entries)
	got, err := fresh.m.Members()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, wantMembers) {
		t.Fatalf("members from the log alone: %+v", got)
	}
}

// TestStateFileWithoutMembers: a state file (or snapshot) written before the
// member directory existed opens, reads as an empty directory, and takes
// member commands.
func TestStateFileWithoutMembers(t *testing.T) {
	// Files that old have no state digest either (and dropping a bucket
	// that held a member is an edit the digest refuses).
	saved := harnessOptions
	harnessOptions.DigestKey = nil
	defer func() { harnessOptions = saved }()
	h := newHarness(t)
	h.register(1, Auth{})
	path := filepath.Join(h.dir, "state.db")
	if err := h.m.Close(); err != nil {
		t.Fatal(err)
	}
	dropMembersBucket(t, path)

	m, err := Open(path, harnessOptions)
	if err != nil {
		t.Fatal(err)
	}
	h.m = m
	defer m.Close()
	if ms := h.members(); len(ms) != 0 {
		t.Fatalf("members %+v", ms)
	}
	if !h.account().Live() {
		t.Fatal("account lost")
	}
	want[*MemberResult](t, h.doMember(&SetMember{ID: "r1", URL: "https://a:1"}))
	if ms := h.members(); len(ms) != 1 {
		t.Fatalf("members %+v", ms)
	}

	// A snapshot of an old file restores, and the directory is empty.
	m.Close()
	dropMembersBucket(t, path)
	m2, err := Open(path, harnessOptions)
	if err != nil {
		t.Fatal(err)
	}
	h.m = m2
	defer m2.Close()
	// Drop the bucket Open just created, as an old version's file would be
	// streamed.
	m2.mu.Lock()
	m2.txMu.Lock()
	m2.commitLocked()
	err = m2.db.Update(func(tx *bbolt.Tx) error { return tx.DeleteBucket(bucketMembers) })
	m2.txMu.Unlock()
	m2.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if ms := h.members(); len(ms) != 0 {
		t.Fatalf("members without a bucket %+v", ms)
	}
	stream := snapshotBytes(t, m2)
	other := newHarness(t)
	want[*MemberResult](t, other.doMember(&SetMember{ID: "zz", URL: "https://z:1"}))
	if err := other.m.Restore(bytes.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	if ms := other.members(); len(ms) != 0 {
		t.Fatalf("members after restoring an old snapshot %+v", ms)
	}
	other.index, _ = other.m.LastApplied()
	other.reqN = 1000 // past the restored request ids
	want[*MemberResult](t, other.doMember(&SetMember{ID: "r1", URL: "https://a:1"}))
	if ms := other.members(); len(ms) != 1 {
		t.Fatalf("members %+v", ms)
	}
}

func dropMembersBucket(t *testing.T, path string) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bbolt.Tx) error { return tx.DeleteBucket(bucketMembers) }); err != nil {
		t.Fatal(err)
	}
}

// keySealer binds values to their key (as AEAD associated data would) and
// marks them sealed.
type keySealer struct{}

func (keySealer) Seal(key, p []byte) ([]byte, error) {
	return append(append(append([]byte("sealed|"), key...), '|'), p...), nil
}

func (keySealer) Open(key, s []byte) ([]byte, error) {
	prefix := append(append([]byte("sealed|"), key...), '|')
	if !bytes.HasPrefix(s, prefix) {
		return nil, errors.New("message authentication failed")
	}
	return s[len(prefix):], nil
}

// TestMembersSealed: member values go through the Sealer, bound to the
// member: a value moved to another member does not open.
func TestMembersSealed(t *testing.T) {
	h := newHarness(t)
	m, err := Open(filepath.Join(h.dir, "sealed.db"), Options{Sealer: keySealer{}, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	h.m = m
	want[*MemberResult](t, h.doMember(&SetMember{ID: "r1", URL: "https://a:1", DataCentre: "dc-a"}))
	want[*MemberResult](t, h.doMember(&SetMember{ID: "r2", URL: "https://b:1"}))
	if ms := h.members(); len(ms) != 2 || ms[0].URL != "https://a:1" {
		t.Fatalf("members %+v", ms)
	}
	d := dump(t, m)
	raw := d["members/"+hexs("r1")]
	if !strings.HasPrefix(raw, hexs("sealed|member:r1|")) {
		t.Fatalf("member value not sealed under its key: %s", raw)
	}
	// Move r1's value to r2: it no longer opens, which is a storage failure.
	m.mu.RLock()
	m.txMu.Lock()
	m.commitLocked()
	err = m.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketMembers)
		return b.Put([]byte("r2"), bytes.Clone(b.Get([]byte("r1"))))
	})
	m.txMu.Unlock()
	m.mu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Members(); !errors.Is(err, ErrStorage) {
		t.Fatalf("moved member value: %v", err)
	}
	wantCode(t, h.doMember(&SetMember{ID: "r2", DataCentre: "x"}), CodeUnavailable)
}
