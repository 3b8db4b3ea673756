package vaultstate

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/cofferhq/coffer/internal/server/sealing"
)

// aeadSealer seals values under a sealing key bound to their key, as
// vault/replica's StateSealer does.
type aeadSealer struct{ k *sealing.SoftKey }

func (s aeadSealer) Seal(key, p []byte) ([]byte, error) {
	return s.k.Seal(sealing.AAD("test record", key), p)
}
func (s aeadSealer) Open(key, p []byte) ([]byte, error) {
	return s.k.Open(sealing.AAD("test record", key), p)
}

// keyedOptions are a replica's machine options under its own random key.
func keyedOptions() (Options, *sealing.SoftKey) {
	var secret [32]byte
	copy(secret[:], randomBytes(32))
	k := sealing.NewKey(&secret, "test key")
	return Options{NoSync: true, Sealer: aeadSealer{k}, DigestKey: k.DeriveKey("test digest")}, k
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// keyedHarness is a harness whose machine seals under its own key.
func keyedHarness(t *testing.T) (*harness, Options, *sealing.SoftKey) {
	t.Helper()
	opts, k := keyedOptions()
	dir := t.TempDir()
	m, err := Open(filepath.Join(dir, "state.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	h := &harness{t: t, m: m, dir: dir, now: t0}
	h.rec[0] = 0xAA
	return h, opts, k
}

func stateHash(t *testing.T, m *Machine) (uint64, [32]byte) {
	t.Helper()
	i, h, err := m.StateHash()
	if err != nil {
		t.Fatal(err)
	}
	return i, h
}

// storedValuesOpen reports how many account and member values of the
// state file at path open under s (the machine must be closed).
func storedValuesOpen(t *testing.T, path string, s Sealer) (n, opened int) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bbolt.Tx) error {
		tx.Bucket(bucketRecords).ForEach(func(k, v []byte) error {
			n++
			if _, err := s.Open(k, v); err == nil {
				opened++
			}
			return nil
		})
		tx.Bucket(bucketMembers).ForEach(func(k, v []byte) error {
			n++
			if _, err := s.Open(memberSealKey(string(k)), v); err == nil {
				opened++
			}
			return nil
		})
		return nil
	})
	return n, opened
}

// TestSnapshotAcrossKeys: a snapshot (version 2) from a machine sealing
// under one key restores into a machine sealing under another: the same
// plaintext state (StateHash), each machine's keyed digest its own, the
// restored file sealed under the restorer's key only and reopening under
// it; both keep agreeing as they apply the same entries.
func TestSnapshotAcrossKeys(t *testing.T) {
	a, _, ka := keyedHarness(t)
	g := newGen(a, 31)
	var entries []Entry
	for range 150 {
		c := g.next()
		g.observe(c, a.applyCmd(c))
	}
	setMember := a.cmd(&SetMember{ID: "r2", URL: "https://r2.example:8443", DataCentre: "dc2"})
	setMember.RecordID = RecordID{}
	a.applyCmd(setMember)
	stream := snapshotBytes(t, a.m)
	if !bytes.HasPrefix(stream, snapshotMagicV2) {
		t.Fatalf("snapshot starts %q", stream[:16])
	}

	b, bopts, kb := keyedHarness(t)
	b.register(9, Auth{})
	if err := b.m.Restore(bytes.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	ia, ha := stateHash(t, a.m)
	ib, hb := stateHash(t, b.m)
	if ia != ib || ha != hb {
		t.Fatalf("state hash after restore: %d %x vs %d %x", ia, ha[:8], ib, hb[:8])
	}
	if d := diffDumps(plainDump(t, a.m), plainDump(t, b.m)); d != "" {
		t.Fatalf("restored plaintext state differs:\n%s", d)
	}
	_, _, da := a.m.CommittedDigest()
	_, _, db := b.m.CommittedDigest()
	if da == db || db.IsZero() {
		t.Fatalf("keyed digests %x %x: want each machine's own", da[:8], db[:8])
	}
	checkAccumulator(t, b.m)

	// The same entries on both from here: still the same state.
	b.index, b.now = a.index, a.now
	for range 40 {
		c := g.next()
		data, _ := c.MarshalBinary()
		a.index++
		e := Entry{Index: a.index, Term: 1, Data: data}
		entries = append(entries, e)
		a.m.Apply(e)
		b.m.Apply(e)
	}
	if _, ha, _ = a.m.StateHash(); true {
		if _, hb, _ = b.m.StateHash(); ha != hb {
			t.Fatal("state hashes differ after the same entries")
		}
	}

	// On disk, b's values open under b's key only.
	path := filepath.Join(b.dir, "state.db")
	b.m.Close()
	if n, ok := storedValuesOpen(t, path, aeadSealer{ka}); n == 0 || ok != 0 {
		t.Fatalf("%d of %d of the restored values open under the writer's key", ok, n)
	}
	if n, ok := storedValuesOpen(t, path, aeadSealer{kb}); ok != n {
		t.Fatalf("%d of %d of the restored values open under the restorer's key", ok, n)
	}
	m, err := Open(path, bopts)
	if err != nil {
		t.Fatalf("reopen the restored file under its own key: %v", err)
	}
	m.Close()
}

// plainDump is every pair of m with account and member values opened (the
// meta bucket's digest left out).
func plainDump(t *testing.T, m *Machine) map[string]string {
	t.Helper()
	out := map[string]string{}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.view(func(tx *bbolt.Tx) error {
		return forEachOpened(tx, m.opts.Sealer, func(b, k, v []byte) error {
			if !(bytes.Equal(b, bucketMeta) && bytes.Equal(k, metaDigest)) {
				out[string(b)+"/"+string(k)] = string(v)
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// snapshotBytesV1 is m's snapshot in version 1 (values as stored), as a
// Coffer before per-replica keys wrote it.
func snapshotBytesV1(t testing.TB, m *Machine) []byte {
	t.Helper()
	return snapshotWith(t, m, (*Snapshot).writeV1)
}

// TestSnapshotV1LegacyKey: a version 1 snapshot (values sealed under the
// writer's key, the fleet's legacy storage key) restores as it is into a
// machine under that key (a replica still on the fleet key), is refused
// with the reason by a machine under its own key without the legacy key,
// and is re-sealed under the machine's own key when the legacy key is
// given (Options.LegacySealer): the same plaintext state either way.
func TestSnapshotV1LegacyKey(t *testing.T) {
	legacy, lopts, kl := keyedHarness(t)
	g := newGen(legacy, 5)
	for range 120 {
		c := g.next()
		g.observe(c, legacy.applyCmd(c))
	}
	v1 := snapshotBytesV1(t, legacy.m)
	_, want := stateHash(t, legacy.m)

	// A replica on the same (legacy) key: taken as it is.
	same, err := Open(filepath.Join(t.TempDir(), "s.db"), lopts)
	if err != nil {
		t.Fatal(err)
	}
	defer same.Close()
	if err := same.Restore(bytes.NewReader(v1)); err != nil {
		t.Fatal(err)
	}
	if _, got := stateHash(t, same); got != want {
		t.Fatal("legacy replica: state differs")
	}

	// Its own key, no legacy key: refused, saying why; state unchanged.
	own, _, _ := keyedHarness(t)
	own.register(3, Auth{})
	before := dump(t, own.m)
	err = own.m.Restore(bytes.NewReader(v1))
	if !errors.Is(err, ErrBadSnapshot) || !strings.Contains(err.Error(), "legacy") {
		t.Fatalf("version 1 snapshot under another key: %v", err)
	}
	if d := diffDumps(before, dump(t, own.m)); d != "" {
		t.Fatalf("refused restore changed state:\n%s", d)
	}

	// Its own key and the legacy key: re-sealed.
	opts, kown := keyedOptions()
	opts.LegacySealer, opts.LegacyDigestKey = aeadSealer{kl}, lopts.DigestKey
	path := filepath.Join(t.TempDir(), "c.db")
	conv, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := conv.Restore(bytes.NewReader(v1)); err != nil {
		t.Fatal(err)
	}
	if _, got := stateHash(t, conv); got != want {
		t.Fatal("converted: state differs")
	}
	conv.Close()
	if n, ok := storedValuesOpen(t, path, aeadSealer{kl}); n == 0 || ok != 0 {
		t.Fatalf("%d of %d converted values still open under the legacy key", ok, n)
	}
	if n, ok := storedValuesOpen(t, path, aeadSealer{kown}); ok != n {
		t.Fatalf("%d of %d converted values open under the own key", ok, n)
	}
	if m, err := Open(path, opts); err != nil {
		t.Fatalf("reopen converted: %v", err)
	} else {
		m.Close()
	}

	// A legacy snapshot whose digest was forged is refused on conversion.
	bad := bytes.Clone(v1)
	tmp := filepath.Join(t.TempDir(), "edited.db")
	writeFile(t, tmp, bad[len(snapshotMagic)+8:len(bad)-32])
	spliceFile(t, tmp, func(tx *bbolt.Tx) error { return tx.Bucket(bucketReplay).Put([]byte("iX"), []byte("12345678")) })
	conv2, err := Open(filepath.Join(t.TempDir(), "c2.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer conv2.Close()
	if err := conv2.Restore(bytes.NewReader(fakeSnapshot(readFile(t, tmp)))); !errors.Is(err, ErrStateTampered) {
		t.Fatalf("edited legacy snapshot: %v", err)
	}
}

// v2Stream frames pairs as a version 2 snapshot with a valid checksum.
func v2Stream(pairs [][3][]byte) []byte {
	b := bytes.Clone(snapshotMagicV2)
	for _, p := range pairs {
		b = append(b, 1, byte(len(p[0])))
		b = append(b, p[0]...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(p[1])))
		b = append(b, p[1]...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(p[2])))
		b = append(b, p[2]...)
	}
	b = binary.BigEndian.AppendUint64(append(b, 0), uint64(len(pairs)))
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// TestRestoreRefusesBadV2Streams: well-checksummed version 2 streams that
// do not describe a vault state are refused and change nothing.
func TestRestoreRefusesBadV2Streams(t *testing.T) {
	target, _, _ := keyedHarness(t)
	target.register(2, Auth{})
	before := dump(t, target.m)
	schema := [3][]byte{[]byte("meta"), []byte("schema"), {schemaVersion}}
	applied := [3][]byte{[]byte("meta"), []byte("applied"), make([]byte, 16)}
	applied[2][7] = 1
	rid := bytes.Repeat([]byte{1}, RecordIDSize)
	cases := map[string][]byte{
		"no schema":         v2Stream(nil),
		"unknown bucket":    v2Stream([][3][]byte{applied, schema, {[]byte("zzz"), []byte("k"), []byte("v")}}),
		"out of order":      v2Stream([][3][]byte{schema, applied}),
		"duplicate":         v2Stream([][3][]byte{applied, applied, schema}),
		"bad record":        v2Stream([][3][]byte{applied, schema, {[]byte("records"), rid, []byte("not an account")}}),
		"short record id":   v2Stream([][3][]byte{applied, schema, {[]byte("records"), rid[:5], []byte("x")}}),
		"records, no index": v2Stream([][3][]byte{schema, {[]byte("replay"), []byte("i0123456789abcdef"), make([]byte, 8)}}),
	}
	good := v2Stream([][3][]byte{applied, schema})
	miscounted := bytes.Clone(good[:len(good)-32])
	miscounted[len(miscounted)-1]++
	sum := sha256.Sum256(miscounted)
	cases["miscounted"] = append(miscounted, sum[:]...)
	for name, stream := range cases {
		if err := target.m.Restore(bytes.NewReader(stream)); !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("%s: %v, want ErrBadSnapshot", name, err)
		}
	}
	if d := diffDumps(before, dump(t, target.m)); d != "" {
		t.Fatalf("refused restore changed state:\n%s", d)
	}
	if err := target.m.Restore(bytes.NewReader(good)); err != nil {
		t.Fatalf("minimal good stream: %v", err)
	}
}
