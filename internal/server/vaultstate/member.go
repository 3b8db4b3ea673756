package vaultstate

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"unicode/utf8"

	"go.etcd.io/bbolt"
)

// The member directory: each fleet member's VaultService URL and data
// centre, which Raft's configuration (id and Raft address only) does not
// hold. It is replicated like everything else, so every replica knows the
// URL of a replica that joined through another one (to forward requests to
// it when it leads, to name it to relays, to show it in status).
//
// Commands on it carry a zero record id; they go through the replay check
// like every command.

// Bounds of member directory fields.
const (
	MaxMemberIDSize   = 128
	MaxMemberURLSize  = 512
	MaxDataCentreSize = 128
)

// Member is one entry of the member directory.
type Member struct {
	ID         string
	URL        string // VaultService base URL, "" if unknown
	DataCentre string // "" if unknown
}

// SetMember records a member's URL and data centre. An empty field leaves
// the stored value as it is (nothing clears a field but ForgetMember), and
// at least one field must be set. With FillOnly, only fields that are empty
// in the directory are filled: for second-hand knowledge (a peer listed in
// a replica's configuration), which must never override what a join or the
// member itself recorded. It answers *MemberResult.
type SetMember struct {
	ID         string
	URL        string
	DataCentre string
	FillOnly   bool
}

// ForgetMember removes a member's entry (after the member was removed from
// the fleet). It answers *MemberResult.
type ForgetMember struct {
	ID string
}

// MemberResult is the entry after a SetMember (zero after a ForgetMember)
// and whether the command changed the directory.
type MemberResult struct {
	Member  Member
	Changed bool
}

func (*MemberResult) isResult() {}

// memberFlagFillOnly is SetMember's only flag bit.
const memberFlagFillOnly = 1

// Kind implements Op.
func (*SetMember) Kind() Kind { return KindSetMember }
func (o *SetMember) encode(e *enc) {
	var flags uint8
	if o.FillOnly {
		flags |= memberFlagFillOnly
	}
	e.u8(flags)
	e.bytes([]byte(o.ID))
	e.bytes([]byte(o.URL))
	e.bytes([]byte(o.DataCentre))
}
func (o *SetMember) decode(d *dec) {
	flags := d.u8("member flags")
	if d.err == nil && flags&^memberFlagFillOnly != 0 {
		d.fail("member flags", "unknown")
	}
	o.FillOnly = flags&memberFlagFillOnly != 0
	o.ID = decodeMemberID(d)
	o.URL = string(d.bytes("member url", 0, MaxMemberURLSize))
	o.DataCentre = string(d.bytes("member data centre", 0, MaxDataCentreSize))
	if d.err != nil {
		return
	}
	switch {
	case !validToken(o.URL):
		d.fail("member url", "not printable ASCII without spaces")
	case !validLabel(o.DataCentre):
		d.fail("member data centre", "not printable UTF-8")
	case o.URL == "" && o.DataCentre == "":
		d.fail("member", "neither a URL nor a data centre")
	}
}

// Kind implements Op.
func (*ForgetMember) Kind() Kind      { return KindForgetMember }
func (o *ForgetMember) encode(e *enc) { e.bytes([]byte(o.ID)) }
func (o *ForgetMember) decode(d *dec) { o.ID = decodeMemberID(d) }

func decodeMemberID(d *dec) string {
	id := d.bytes("member id", 1, MaxMemberIDSize)
	if d.err == nil && !validToken(string(id)) {
		d.fail("member id", "not printable ASCII without spaces")
	}
	return string(id)
}

// validToken: printable ASCII, no spaces (ids, URLs).
func validToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// validLabel: UTF-8 without control characters (data centre labels).
func validLabel(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// isMemberOp reports whether op is a member directory command.
func isMemberOp(op Op) bool {
	switch op.(type) {
	case *SetMember, *ForgetMember:
		return true
	}
	return false
}

// memberVersion is the first byte of a stored member value.
const memberVersion = 1

// marshalMember encodes a stored member value:
//
//	version u8 (1) | url bytes | data_centre bytes
func marshalMember(mb Member) []byte {
	var e enc
	e.u8(memberVersion)
	e.bytes([]byte(mb.URL))
	e.bytes([]byte(mb.DataCentre))
	return e.b
}

func unmarshalMember(id string, b []byte) (Member, error) {
	d := dec{b: b}
	if v := d.u8("member version"); d.err == nil && v != memberVersion {
		return Member{}, fmt.Errorf("%w: member version %d, want %d", errMalformed, v, memberVersion)
	}
	mb := Member{ID: id}
	mb.URL = string(d.bytes("member url", 0, MaxMemberURLSize))
	mb.DataCentre = string(d.bytes("member data centre", 0, MaxDataCentreSize))
	return mb, d.end()
}

// memberSealKey is the Sealer key of a member's value: the member id with
// a prefix, so a sealed value is bound to its member and cannot pass for an
// account's (whose key is its 32-byte record id, a keyed hash).
func memberSealKey(id string) []byte { return append([]byte("member:"), id...) }

// membersGen counts changes to the member directory (memory only; see
// MembersVersion).
type membersGen struct{ n atomic.Uint64 }

func (g *membersGen) bump() { g.n.Add(1) }

// applyMember applies a member directory command inside tx. A returned
// error is a storage failure.
func (m *Machine) applyMember(tx *bbolt.Tx, meta *txMeta, op Op) (Result, error) {
	b, err := tx.CreateBucketIfNotExists(bucketMembers)
	if err != nil {
		return nil, err
	}
	switch op := op.(type) {
	case *SetMember:
		cur, found, err := m.loadMember(b, op.ID)
		if err != nil {
			return nil, err
		}
		next := cur
		if op.URL != "" && (!op.FillOnly || cur.URL == "") {
			next.URL = op.URL
		}
		if op.DataCentre != "" && (!op.FillOnly || cur.DataCentre == "") {
			next.DataCentre = op.DataCentre
		}
		if found && next == cur {
			return &MemberResult{Member: cur}, nil
		}
		sealed, err := m.opts.Sealer.Seal(memberSealKey(op.ID), marshalMember(next))
		if err != nil {
			return nil, fmt.Errorf("seal member: %w", err)
		}
		if err := m.put(tx, meta, bucketMembers, []byte(op.ID), sealed); err != nil {
			return nil, err
		}
		m.members.bump()
		return &MemberResult{Member: next, Changed: true}, nil

	case *ForgetMember:
		if b.Get([]byte(op.ID)) == nil {
			return &MemberResult{}, nil
		}
		if err := m.del(tx, meta, bucketMembers, []byte(op.ID)); err != nil {
			return nil, err
		}
		m.members.bump()
		return &MemberResult{Changed: true}, nil
	}
	return refuse(CodeBadRequest, "unknown operation"), nil
}

// loadMember reads and opens a member's entry; found is false (and mb has
// only the id) when the directory has none.
func (m *Machine) loadMember(b *bbolt.Bucket, id string) (mb Member, found bool, err error) {
	v := b.Get([]byte(id))
	if v == nil {
		return Member{ID: id}, false, nil
	}
	mb, err = m.openMember(id, v)
	return mb, err == nil, err
}

func (m *Machine) openMember(id string, sealed []byte) (Member, error) {
	plain, err := m.opts.Sealer.Open(memberSealKey(id), sealed)
	if err != nil {
		return Member{}, fmt.Errorf("%w: member %q does not open: %w", ErrStorage, id, err)
	}
	mb, err := unmarshalMember(id, plain)
	if err != nil {
		return Member{}, fmt.Errorf("%w: member %q: %w", ErrStorage, id, err)
	}
	return mb, nil
}

// Members returns the member directory, sorted by id. Like Account it is a
// local read reflecting every entry applied (committed or not). A state
// file written before the directory existed has none: it reads as empty.
func (m *Machine) Members() ([]Member, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if _, err := m.status(); err != nil {
		return nil, err
	}
	type kv struct{ k, v []byte }
	var raw []kv
	err := m.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketMembers)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			raw = append(raw, kv{bytes.Clone(k), bytes.Clone(v)})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("%w: read members: %w", ErrStorage, err)
	}
	// Opened outside the transaction's lock, as Account does.
	out := make([]Member, 0, len(raw))
	for _, e := range raw {
		mb, err := m.openMember(string(e.k), e.v)
		if err != nil {
			return nil, err
		}
		out = append(out, mb)
	}
	return out, nil
}

// MembersVersion changes whenever the member directory may have changed: a
// member command changed it, a Restore replaced the state, an open
// transaction was dropped. It is not replicated state, only a hint for
// callers that cache Members: read the version first, then Members, and
// read Members again once the version differs.
func (m *Machine) MembersVersion() uint64 { return m.members.n.Load() }
