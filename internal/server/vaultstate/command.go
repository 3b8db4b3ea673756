package vaultstate

import (
	"fmt"
	"log/slog"
	"time"
)

// Command is one replicated log entry: an operation on one account, with
// everything nondeterministic (time, login ids, expected MACs, ticket hashes)
// already decided by the leader.
type Command struct {
	// RequestID is the client's request id; a repeat is refused (CodeReplay).
	RequestID RequestID
	// Time is the leader's clock when it proposed the command, in Unix
	// milliseconds. Expiries are measured against it.
	Time int64
	// RecordID is the account's record id.
	RecordID RecordID
	// Op is the operation.
	Op Op
	// version is the encoding version the command was decoded from (0:
	// built in memory, the current version). Rules whose meaning changed
	// between versions consult it, so an old log entry replays as it was
	// applied when it was written.
	version uint8
}

// encodedVersion is the version the command was (or will be) encoded in.
func (c *Command) encodedVersion() uint8 {
	if c.version == 0 {
		return commandVersion
	}
	return c.version
}

// String describes the command without revealing secrets.
func (c Command) String() string {
	kind := "none"
	if c.Op != nil {
		kind = c.Op.Kind().String()
	}
	return fmt.Sprintf("%s{request=%s record=%s time=%d}", kind, c.RequestID, c.RecordID, c.Time)
}

// LogValue makes slog print the command without secrets.
func (c Command) LogValue() slog.Value { return slog.StringValue(c.String()) }

// Kind names an operation; it is the second byte of an encoded command.
type Kind uint8

// Operation kinds. The values are part of the encoding: never reuse one.
const (
	KindRegisterCheck  Kind = 1
	KindRegister       Kind = 2
	KindLoginStart     Kind = 3
	KindLoginStartFake Kind = 4
	KindLoginFinish    Kind = 5
	KindDisable        Kind = 6
	KindStatus         Kind = 7
	KindSetMember      Kind = 8
	KindForgetMember   Kind = 9
	KindTick           Kind = 10
	KindLoginMAC       Kind = 11
	KindReshare        Kind = 12
)

func (k Kind) String() string {
	switch k {
	case KindRegisterCheck:
		return "RegisterCheck"
	case KindRegister:
		return "Register"
	case KindLoginStart:
		return "LoginStart"
	case KindLoginStartFake:
		return "LoginStartFake"
	case KindLoginFinish:
		return "LoginFinish"
	case KindDisable:
		return "Disable"
	case KindStatus:
		return "Status"
	case KindSetMember:
		return "SetMember"
	case KindForgetMember:
		return "ForgetMember"
	case KindTick:
		return "Tick"
	case KindLoginMAC:
		return "LoginMAC"
	case KindReshare:
		return "Reshare"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Op is one of *RegisterCheck, *Register, *LoginStart, *LoginStartFake,
// *LoginFinish, *Disable, *Status (operations on the account RecordID), or
// *SetMember, *ForgetMember (the member directory, member.go; RecordID is
// zero).
type Op interface {
	Kind() Kind
	encode(e *enc)
	decode(d *dec)
}

// AuthKind says how a command proves the right to replace or erase a live
// record.
type AuthKind uint8

// Authorization kinds. The values are part of the encoding.
const (
	AuthNone   AuthKind = 0
	AuthTicket AuthKind = 1 // Hash is HashTicket(login ticket)
	AuthProof  AuthKind = 2 // Hash is HashKeyProof(key proof)
	// AuthSignature is a fresh key proof: Sig is the Ed25519 signature
	// (keywrap.SignProof) over the command's request id and SignedAt
	// (command version 4).
	AuthSignature AuthKind = 3
)

// SignatureWindow is how far a key signature's time may be from the
// replicated clock: well within ReplayWindow, so that a signed request id
// is still remembered as long as its signature is acceptable.
const SignatureWindow = 2 * time.Minute

// Auth is an authorization: a login ticket's hash or a key proof's hash,
// computed by the leader from what the client sent.
type Auth struct {
	Kind AuthKind
	Hash Hash
	// AuthSignature: the signature and the request time it signs.
	Sig      [64]byte
	SignedAt int64
}

func (a *Auth) encode(e *enc) {
	e.u8(uint8(a.Kind))
	switch a.Kind {
	case AuthNone:
	case AuthSignature:
		e.raw(a.Sig[:])
		e.i64(a.SignedAt)
	default:
		e.raw(a.Hash[:])
	}
}

func (a *Auth) decode(d *dec) {
	a.Kind = AuthKind(d.u8("auth kind"))
	switch a.Kind {
	case AuthNone:
	case AuthTicket, AuthProof:
		d.fixed(a.Hash[:], "auth hash")
	case AuthSignature:
		if d.version < 4 {
			d.fail("auth kind", "a signature needs command version 4")
			return
		}
		d.fixed(a.Sig[:], "auth signature")
		a.SignedAt = d.time("auth signed time")
	default:
		d.fail("auth kind", "unknown")
	}
}

// RegisterCheck authorizes a RegisterStart before the leader evaluates the
// OPRF: it answers *RegisterCheckResult with a fresh epoch for the new record
// (reserved: greater than any epoch handed out before for this account), or
// CodeUnauthorized when a live record exists and Auth does not prove the
// password (ticket) or the key (proof). It does not use up a ticket.
type RegisterCheck struct {
	Auth Auth
	// Blinded is HashBlinded of the registration request's blinded
	// element (command version 4; zero before): on a threshold fleet
	// (PROTOCOL.md §7) a replica evaluates its share of the reserved
	// epoch's key for that element only.
	Blinded Hash
	// ShareGen is the generation of OPRF shares the registration is
	// evaluated under (command version 5; 0: the fleet's OPRF seed, or
	// before version 5 the first generation): the Register that finishes
	// it must store public shares of the same generation.
	ShareGen uint32
}

// Kind implements Op.
func (*RegisterCheck) Kind() Kind { return KindRegisterCheck }
func (o *RegisterCheck) encode(e *enc) {
	o.Auth.encode(e)
	e.raw(o.Blinded[:])
	e.u32(o.ShareGen)
}
func (o *RegisterCheck) decode(d *dec) {
	o.Auth.decode(d)
	if d.version >= 4 {
		d.fixed(o.Blinded[:], "blinded element hash")
	}
	if d.version >= 5 {
		o.ShareGen = d.u32("share generation")
	}
}

// Register stores a new record (RegisterFinish). Over a live record it needs
// Auth (a ticket is then used up) and resets the guess count; without a live
// record it needs nothing and starts a fresh budget. Epoch must be the epoch
// the latest RegisterCheck reserved (from RegisterCheckResult), else
// CodeBadRequest: another registration started or finished since.
type Register struct {
	Epoch uint64
	// GuessLimit is the new record's budget, 1 to MaxGuessLimit: the
	// proposer fills it from the fleet's configuration. A command without
	// one is refused (a version-1 entry's 0 meant 10).
	GuessLimit uint32
	Record     Record
	Auth       Auth
}

// Kind implements Op.
func (*Register) Kind() Kind { return KindRegister }
func (o *Register) encode(e *enc) {
	e.u64(o.Epoch)
	e.u32(o.GuessLimit)
	e.bytes(o.Record.Opaque)
	e.u32(o.Record.KSF.Time)
	e.u32(o.Record.KSF.MemoryKiB)
	e.u32(o.Record.KSF.Threads)
	e.bytes(o.Record.WrappedKey)
	e.raw(o.Record.ProofHash[:])
	o.Auth.encode(e)
	e.bytes(o.Record.PublicShares)
	e.bytes(o.Record.ProofKey)
	e.u32(o.Record.ShareGen)
	e.bytes(o.Record.CredID)
}
func (o *Register) decode(d *dec) {
	o.Epoch = d.u64("epoch")
	o.GuessLimit = d.guessLimit()
	o.Record.Opaque = d.bytes("opaque record", 1, MaxOpaqueRecordSize)
	o.Record.KSF.Time = d.u32("ksf time")
	o.Record.KSF.MemoryKiB = d.u32("ksf memory")
	o.Record.KSF.Threads = d.u32("ksf threads")
	o.Record.WrappedKey = d.bytes("wrapped key", 1, MaxWrappedKeySize)
	d.fixed(o.Record.ProofHash[:], "proof hash")
	o.Auth.decode(d)
	if d.version >= 4 {
		o.Record.PublicShares = d.bytes("public shares", 0, MaxPublicSharesSize)
		if len(o.Record.PublicShares) == 0 {
			o.Record.PublicShares = nil
		}
		o.Record.ProofKey = d.proofKey()
		if o.Record.PublicShares != nil {
			o.Record.ShareGen = 1
		}
	}
	if d.version >= 5 {
		o.Record.ShareGen = d.u32("share generation")
		o.Record.CredID = d.credID()
		if d.err == nil && (o.Record.PublicShares != nil) != (o.Record.ShareGen > 0) {
			d.fail("share generation", "public shares need a generation and a generation public shares")
		}
		if d.err == nil && o.Record.PublicShares == nil && o.Record.CredID != nil {
			d.fail("credential id", "only threshold records keep one")
		}
	}
}

// LoginStart counts a guess against a live record and stores the pending
// login whose KE2 the leader computed from the record of Epoch. It answers
// *LoginStartResult (release KE2), CodeDestroyed (the budget was spent: the
// record is erased now), or CodeConflict (the record changed since the
// leader read it: recompute KE2 and retry; nothing was counted).
type LoginStart struct {
	Epoch   uint64
	LoginID LoginID
	// MACHash is HashMAC(expected client MAC): the log never carries a
	// value that would finish the login without the password.
	MACHash Hash
	// Pacing is the fleet's schedule of waits between wrong guesses
	// (zero: none); the proposer fills it from its configuration.
	Pacing Pacing
	// Blinded is HashBlinded of KE1's blinded element (command version 4;
	// zero before and on a fleet without OPRF shares). On a threshold
	// fleet MACHash is zero: the KE2 is made after every replica has
	// applied this entry and evaluated its share for this element, and
	// its MAC hash comes in a LoginMAC entry.
	Blinded Hash
}

// Pacing spaces out wrong guesses (PROTOCOL.md §5, "Pacing"), as Apple's
// escrow service and iOS do: after Free guesses since the last success,
// the next one waits Base seconds after the previous guess, each further
// one twice as long, up to Max seconds. With Free 3, Base 300 and Max
// 28,800 (8 h), spending a budget of 10 takes about 10½ hours.
type Pacing struct {
	Free      uint8
	Base, Max uint32 // seconds
}

// Wait is how long a guess after used guesses (since the last success)
// must wait after the previous guess, in milliseconds.
func (p Pacing) Wait(used uint32) int64 {
	if p.Base == 0 || used < uint32(p.Free) {
		return 0
	}
	shift := used - uint32(p.Free)
	d := int64(p.Base)
	for ; shift > 0 && d < int64(p.Max); shift-- {
		d *= 2
	}
	return min(d, int64(max(p.Max, p.Base))) * 1000
}

// Kind implements Op.
func (*LoginStart) Kind() Kind { return KindLoginStart }
func (o *LoginStart) encode(e *enc) {
	e.u64(o.Epoch)
	e.raw(o.LoginID[:])
	e.raw(o.MACHash[:])
	e.u8(o.Pacing.Free)
	e.u32(o.Pacing.Base)
	e.u32(o.Pacing.Max)
	e.raw(o.Blinded[:])
}
func (o *LoginStart) decode(d *dec) {
	o.Epoch = d.u64("epoch")
	d.fixed(o.LoginID[:], "login id")
	o.MACHash = d.macHash(3)
	if d.version >= 3 {
		o.Pacing.Free = d.u8("pacing free")
		o.Pacing.Base = d.u32("pacing base")
		o.Pacing.Max = d.u32("pacing max")
		if d.err == nil && (o.Pacing.Max > 7*24*3600 || o.Pacing.Base > o.Pacing.Max) {
			d.fail("pacing", "base above max, or max above a week")
		}
	}
	if d.version >= 4 {
		d.fixed(o.Blinded[:], "blinded element hash")
	}
}

// LoginMAC stores the MAC hash of a threshold fleet's KE2 (PROTOCOL.md §7)
// in the pending login LoginID, after the leader combined the replicas'
// partial evaluations: the first one as MACHash, a retried LoginStart's as
// RetryMACHash. It answers *LoginMACResult, or CodeLoginExpired when
// LoginID is no longer the pending login (nothing is released then). It
// counts nothing: LoginStart did.
type LoginMAC struct {
	LoginID LoginID
	MACHash Hash
}

// Kind implements Op.
func (*LoginMAC) Kind() Kind { return KindLoginMAC }
func (o *LoginMAC) encode(e *enc) {
	e.raw(o.LoginID[:])
	e.raw(o.MACHash[:])
}
func (o *LoginMAC) decode(d *dec) {
	if d.version < 4 {
		d.fail("login mac", "needs command version 4")
	}
	d.fixed(o.LoginID[:], "login id")
	d.fixed(o.MACHash[:], "mac hash")
	if d.err == nil && o.MACHash == (Hash{}) {
		d.fail("mac hash", "zero")
	}
}

// macHash decodes a pending login's MAC hash: 32 bytes, or in an encoding
// older than hashedSince (which carried the expected MAC itself,
// length-prefixed) the hash of the MAC it carried.
func (d *dec) macHash(hashedSince uint8) Hash {
	if d.version < hashedSince {
		return HashMAC(d.bytes("expected mac", MinMACSize, MaxMACSize))
	}
	var h Hash
	d.fixed(h[:], "mac hash")
	return h
}

// Reshare moves a threshold record to another generation of OPRF shares
// (PROTOCOL.md §7, "Resharing"): the leader has combined the replicas'
// deltas into the record's new public correction Offset and gathered the
// new effective public shares. It answers *ReshareResult; CodeConflict if
// the record changed (another epoch, a generation other than FromGen); an
// already moved record (generation ToGen) answers Moved false. A pending
// login stays (the account key is the same). It changes nothing but the
// record's generation, correction and public shares: not the OPAQUE
// record, the guesses or anything a login checks the password against.
type Reshare struct {
	Epoch          uint64
	FromGen, ToGen uint32
	Offset         [OffsetSize]byte
	PublicShares   []byte
}

// Kind implements Op.
func (*Reshare) Kind() Kind { return KindReshare }
func (o *Reshare) encode(e *enc) {
	e.u64(o.Epoch)
	e.u32(o.FromGen)
	e.u32(o.ToGen)
	e.raw(o.Offset[:])
	e.bytes(o.PublicShares)
}
func (o *Reshare) decode(d *dec) {
	if d.version < 5 {
		d.fail("reshare", "needs command version 5")
	}
	o.Epoch = d.u64("epoch")
	o.FromGen = d.u32("from generation")
	o.ToGen = d.u32("to generation")
	d.fixed(o.Offset[:], "offset")
	o.PublicShares = d.bytes("public shares", 1, MaxPublicSharesSize)
	if d.err == nil && (o.FromGen == 0 || o.ToGen <= o.FromGen) {
		d.fail("generation", "a reshare goes from a generation to a later one")
	}
}

// LoginStartFake is the entry for a LoginStart on an account without a live
// record, whose KE2 the leader computed from a fake record. It changes
// nothing but the replay set and answers a plausible *LoginStartResult
// (Fake set, one guess used of GuessLimit), CodeDestroyed for a destroyed
// account, or CodeConflict if the account became live meanwhile.
type LoginStartFake struct {
	// GuessLimit is the limit to report, 1 to MaxGuessLimit, as for
	// Register.
	GuessLimit uint32
}

// Kind implements Op.
func (*LoginStartFake) Kind() Kind      { return KindLoginStartFake }
func (o *LoginStartFake) encode(e *enc) { e.u32(o.GuessLimit) }
func (o *LoginStartFake) decode(d *dec) { o.GuessLimit = d.guessLimit() }

// guessLimit decodes a guess limit: 1 to MaxGuessLimit. In a version-1
// command 0 stands for v1GuessLimit, what it meant when it was written; in
// version 2 a command without a limit is malformed.
func (d *dec) guessLimit() uint32 {
	n := d.u32("guess limit")
	switch {
	case d.err != nil:
	case n == 0 && d.version == 1:
		n = v1GuessLimit
	case n == 0:
		d.fail("guess limit", "missing: the proposer must name the fleet's limit")
	case n > MaxGuessLimit:
		d.fail("guess limit", "above MaxGuessLimit")
	}
	return n
}

// LoginFinish closes the pending login LoginID with the client MAC from KE3.
// TicketHash is the hash of the fresh login ticket the leader will hand out
// if the login succeeds.
type LoginFinish struct {
	LoginID    LoginID
	ClientMAC  []byte
	TicketHash Hash
}

// Kind implements Op.
func (*LoginFinish) Kind() Kind { return KindLoginFinish }
func (o *LoginFinish) encode(e *enc) {
	e.raw(o.LoginID[:])
	e.bytes(o.ClientMAC)
	e.raw(o.TicketHash[:])
}
func (o *LoginFinish) decode(d *dec) {
	d.fixed(o.LoginID[:], "login id")
	o.ClientMAC = d.bytes("client mac", MinMACSize, MaxMACSize)
	d.fixed(o.TicketHash[:], "ticket hash")
}

// Disable erases a live record, keeping its epoch; it needs Auth.
type Disable struct {
	Auth Auth
}

// Kind implements Op.
func (*Disable) Kind() Kind      { return KindDisable }
func (o *Disable) encode(e *enc) { o.Auth.encode(e) }
func (o *Disable) decode(d *dec) { o.Auth.decode(d) }

// Tick carries the leader's clock into the state machine when no other
// command does (an idle fleet), so that command times, which may advance
// at most MaxClockStep per command, keep up with real time. It touches no
// account; its record id is zero. It answers *TickResult.
type Tick struct{}

// Kind implements Op.
func (*Tick) Kind() Kind    { return KindTick }
func (*Tick) encode(e *enc) {}
func (*Tick) decode(d *dec) {}

// Status reads the account. It is still a log entry, so the answer is
// linearizable and the request id is recorded.
type Status struct{}

// Kind implements Op.
func (*Status) Kind() Kind    { return KindStatus }
func (*Status) encode(e *enc) {}
func (*Status) decode(d *dec) {}

// commandVersion is the first byte of every command MarshalBinary encodes.
// Version 2 differs from version 1 in that Register and LoginStartFake must
// name their guess limit; version 3 in that LoginStart carries the hash of
// the expected client MAC (HashMAC), not the MAC. UnmarshalBinary reads all
// three. Version 4 adds the blinded element's hash to RegisterCheck and
// LoginStart, the public shares to Register, and LoginMAC (threshold
// fleets, PROTOCOL.md §7). Version 5 adds the share generation and
// credential id to Register, and Reshare.
const commandVersion = 5

// MaxCommandSize bounds an encoded command.
const MaxCommandSize = 4096

// MarshalBinary encodes the command (version 5):
//
//	version u8 | kind u8 | request_id [16] | time i64 | record_id [32] | op fields
//
// Integers are big-endian; variable-length fields are a uint16 length and
// the bytes. The encoding is canonical.
func (c Command) MarshalBinary() ([]byte, error) {
	if c.Op == nil {
		return nil, fmt.Errorf("state: encode command: no operation")
	}
	if c.Time < 0 || c.Time > 1<<62 {
		return nil, fmt.Errorf("state: encode command: time %d out of range", c.Time)
	}
	var e enc
	e.b = make([]byte, 0, 128)
	e.u8(commandVersion)
	e.u8(uint8(c.Op.Kind()))
	e.raw(c.RequestID[:])
	e.i64(c.Time)
	e.raw(c.RecordID[:])
	c.Op.encode(&e)
	// Check by decoding, so nothing is proposed that replicas would refuse.
	var chk Command
	if err := chk.UnmarshalBinary(e.b); err != nil {
		return nil, fmt.Errorf("state: encode %s: %w", c.Op.Kind(), err)
	}
	return e.b, nil
}

// UnmarshalBinary decodes a command encoded by MarshalBinary. It rejects
// unknown versions and kinds, out-of-range fields and trailing bytes, and
// never panics.
func (c *Command) UnmarshalBinary(b []byte) error {
	if len(b) > MaxCommandSize {
		return fmt.Errorf("%w: command of %d bytes exceeds %d", errMalformed, len(b), MaxCommandSize)
	}
	d := dec{b: b}
	d.version = d.u8("command version")
	if d.err == nil && (d.version < 1 || d.version > commandVersion) {
		return fmt.Errorf("%w: command version %d, want 1 to %d (is a newer vault leading?)", errMalformed, d.version, commandVersion)
	}
	kind := Kind(d.u8("command kind"))
	var n Command
	d.fixed(n.RequestID[:], "request id")
	n.Time = d.time("time")
	d.fixed(n.RecordID[:], "record id")
	if d.err != nil {
		return d.err
	}
	switch kind {
	case KindRegisterCheck:
		n.Op = &RegisterCheck{}
	case KindRegister:
		n.Op = &Register{}
	case KindLoginStart:
		n.Op = &LoginStart{}
	case KindLoginStartFake:
		n.Op = &LoginStartFake{}
	case KindLoginFinish:
		n.Op = &LoginFinish{}
	case KindDisable:
		n.Op = &Disable{}
	case KindStatus:
		n.Op = &Status{}
	case KindSetMember:
		n.Op = &SetMember{}
	case KindForgetMember:
		n.Op = &ForgetMember{}
	case KindTick:
		n.Op = &Tick{}
	case KindLoginMAC:
		n.Op = &LoginMAC{}
	case KindReshare:
		n.Op = &Reshare{}
	default:
		return fmt.Errorf("%w: unknown command kind %d", errMalformed, uint8(kind))
	}
	if isMemberOp(n.Op) && n.RecordID != (RecordID{}) {
		return fmt.Errorf("%w: record id: not zero in a member command", errMalformed)
	}
	if _, tick := n.Op.(*Tick); tick && (n.RecordID != (RecordID{}) || d.version < 3) {
		return fmt.Errorf("%w: tick: a version-3 command with record id zero", errMalformed)
	}
	n.Op.decode(&d)
	if err := d.end(); err != nil {
		return err
	}
	if d.version != commandVersion {
		n.version = d.version // a command of today's version compares equal to one built in memory
	}
	*c = n
	return nil
}
