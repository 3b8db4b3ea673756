package vaultstate

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
)

// Protocol constants (PROTOCOL.md, section 5). They are part of the state
// machine's definition: changing one changes what every replica computes, so
// a change needs a new command or record version.
const (
	// MaxGuessLimit bounds a registration's guess budget (and so the size of
	// its guess history).
	MaxGuessLimit = 100
	// v1GuessLimit is what a version-1 Register or LoginStartFake entry
	// with GuessLimit 0 meant. It is frozen: such entries are still in old
	// logs and snapshots' tails, and replaying one must give the answer it
	// gave then. Version 2 has no default: the proposer (the vault server,
	// vault.DefaultGuessLimit) always names the limit.
	v1GuessLimit = 10
	// MaxClockStep is the furthest one command's time may move the state
	// machine's clock (the newest command time applied) ahead, from
	// command version 3 on: a command timestamped later counts as
	// newest + MaxClockStep. Without it, one far-future time (a leader's
	// clock gone wrong, an injected entry) would expire every request id
	// of the replay window at once, and with them replay protection. The
	// vault proposes a Tick when idle so that honest times are never held
	// back for long. It is below ReplayWindow − the vault's request
	// freshness (2 min), so one entry cannot expire the id of a request
	// fresh enough to be accepted again.
	MaxClockStep = 2 * time.Minute
	// LoginTTL is how long a pending login waits for its LoginFinish.
	LoginTTL = 120 * time.Second
	// TicketTTL is how long a login ticket authorizes one replacement or
	// erasure of the record.
	TicketTTL = 10 * time.Minute
	// ReplayWindow is how long a request id is remembered, measured against
	// the newest command time applied so far.
	ReplayWindow = 10 * time.Minute
)

// Field bounds enforced when decoding commands and accounts.
const (
	// RecordIDSize is the size of a record id, HMAC-SHA-256(recordIdKey, account).
	RecordIDSize = 32
	// RequestIDSize is the size of a request id.
	RequestIDSize = 16
	// LoginIDSize is the size of a login id.
	LoginIDSize = 16
	// HashSize is the size of a proof hash or ticket hash (SHA-256).
	HashSize = 32
	// MaxOpaqueRecordSize bounds the OPAQUE registration record (192 bytes
	// for ristretto255).
	MaxOpaqueRecordSize = 1024
	// MaxWrappedKeySize bounds the wrapped backup key (60 bytes in version 1).
	MaxWrappedKeySize = 1024
	// MaxPublicSharesSize bounds a threshold record's public shares
	// (PROTOCOL.md §7: 34 bytes a replica).
	MaxPublicSharesSize = 64 * 34
	// MinMACSize and MaxMACSize bound the client MAC of KE3 (64 bytes for
	// HMAC-SHA-512).
	MinMACSize = 16
	MaxMACSize = 64
)

// RecordID identifies an account's state: HMAC-SHA-256(recordIdKey, account),
// computed by the caller. The state machine never sees account ids.
type RecordID [RecordIDSize]byte

// String returns a short hex prefix, enough to correlate log lines.
func (id RecordID) String() string { return hex.EncodeToString(id[:6]) }

// RequestID is a request's 16 random bytes, used for replay protection.
type RequestID [RequestIDSize]byte

// String returns the id in hex.
func (id RequestID) String() string { return hex.EncodeToString(id[:]) }

// LoginID names one pending login.
type LoginID [LoginIDSize]byte

// Hash is a SHA-256 digest: a key proof hash or a login ticket hash.
type Hash [HashSize]byte

// HashKeyProof returns SHA-256(keyProof), the value stored as a record's
// proof hash and carried by commands authorized with a key proof (PROTOCOL.md,
// section 2). The leader hashes the proof before proposing a command, so the
// replicated log never holds a proof.
func HashKeyProof(keyProof []byte) Hash { return sha256.Sum256(keyProof) }

// HashMAC returns SHA-256(mac): what a pending login keeps of the client
// MAC a valid KE3 carries (PROTOCOL.md, section 5). The leader hashes the
// expected MAC before proposing LoginStart, so neither the replicated log
// nor any replica's state holds a value that finishes the login: whoever
// reads them still needs the password.
func HashMAC(mac []byte) Hash { return sha256.Sum256(mac) }

// HashBlinded returns SHA-256(blinded element): what RegisterCheck and
// LoginStart carry of the OPRF input on a threshold fleet, and what a
// replica compares before it evaluates its share (PROTOCOL.md §7).
func HashBlinded(blinded []byte) Hash { return sha256.Sum256(blinded) }

// HashTicket returns SHA-256(ticket). The leader makes a random ticket, gives
// it to the client and puts only its hash in commands.
func HashTicket(ticket []byte) Hash { return sha256.Sum256(ticket) }

// KSFParams are the Argon2id parameters of a registration (PROTOCOL.md,
// section 1). The algorithm is Argon2id in record version 1.
type KSFParams struct {
	Time      uint32
	MemoryKiB uint32
	Threads   uint32
}

// Record is what a registration stores: everything a login needs.
type Record struct {
	// Opaque is the RFC 9807 RegistrationRecord.
	Opaque []byte
	// KSF is the key stretching profile the client registered with.
	KSF KSFParams
	// WrappedKey is the backup key wrapped under a key only the password
	// opens.
	WrappedKey []byte
	// ProofHash is SHA-256 of the key proof.
	ProofHash Hash
	// PublicShares are the replicas' public key shares for the record's
	// OPRF key on a threshold fleet (PROTOCOL.md §7: per replica, its index
	// u16 then the element), which the leader checks partial evaluations
	// against; nil for a record whose key the fleet's OPRF seed derives.
	PublicShares []byte
	// ProofKey is the record's key-proof public key (Ed25519, 32 bytes;
	// nil for a version-1 record): authorizations by the key are then
	// fresh signatures (AuthSignature), never the static proof.
	ProofKey []byte
	// ShareGen is the generation of OPRF shares the record's key is
	// shared under (PROTOCOL.md §7, "Resharing"): 1 for the shares of the
	// fleet's first ceremony, one more after each reshare; 0 for a
	// record without public shares. Offset is the record's public
	// correction o_c (32 bytes; nil for zero, before its first reshare),
	// added to every replica's share of generation ShareGen.
	ShareGen uint32
	Offset   []byte
	// CredID is the record's OPAQUE credential identifier (PROTOCOL.md
	// §1: the account id and the epoch), kept on threshold records
	// (account version 4 on) so that a reshare can derive the record's
	// shares without the client. nil on older records, which cannot be
	// reshared and are moved by re-enrolment at their next login.
	CredID []byte
}

func (r *Record) clone() *Record {
	if r == nil {
		return nil
	}
	c := *r
	c.Opaque = append([]byte(nil), r.Opaque...)
	c.WrappedKey = append([]byte(nil), r.WrappedKey...)
	c.PublicShares = append([]byte(nil), r.PublicShares...)
	if len(c.PublicShares) == 0 {
		c.PublicShares = nil
	}
	c.ProofKey = append([]byte(nil), r.ProofKey...)
	if len(c.ProofKey) == 0 {
		c.ProofKey = nil
	}
	c.Offset = append([]byte(nil), r.Offset...)
	if len(c.Offset) == 0 {
		c.Offset = nil
	}
	c.CredID = append([]byte(nil), r.CredID...)
	if len(c.CredID) == 0 {
		c.CredID = nil
	}
	return &c
}

// Reshareable reports whether a reshare can move the record to another
// generation of shares: a threshold record that keeps its credential id.
func (r *Record) Reshareable() bool { return len(r.PublicShares) > 0 && len(r.CredID) > 0 }

// PendingLogin is the login a LoginStart opened and a LoginFinish may close.
type PendingLogin struct {
	ID LoginID
	// MACHash is HashMAC of the client MAC a valid KE3 carries, computed
	// by the leader from its OPAQUE server state. The MAC itself is never
	// replicated or stored.
	MACHash Hash
	// RequestID is the LoginStart request that opened it (zero in a
	// version-1 account): a retry of that very request, whose first answer
	// was lost, is answered again without counting another guess.
	RequestID RequestID
	// RetryMACHash is HashMAC of the MAC that the retry's KE2 expects (zero
	// if there was no retry). A LoginFinish may match either hash: whichever
	// answer reached the client, its right password finishes the login.
	RetryMACHash Hash
	// Expiry is in Unix milliseconds.
	Expiry int64
	// Blinded is HashBlinded of the login's blinded element on a threshold
	// fleet (zero otherwise): a replica evaluates its share for this
	// element only, and only while the login is pending.
	Blinded Hash
}

// Ticket is a login ticket: a successful login's authorization to replace or
// erase the record. It is single use because the only operations it
// authorizes (Register, Disable) replace or erase the record, and the ticket
// with it.
type Ticket struct {
	Hash   Hash
	Expiry int64 // Unix milliseconds
}

// Account is the state of one record id (PROTOCOL.md, section 5). An account
// is live when Record is set; a disabled or destroyed account keeps only its
// epoch and flags.
type Account struct {
	// Epoch is the registration epoch of the record (or of the last record,
	// once erased): 0 before the first registration. It grows with every
	// successful Register.
	Epoch uint64
	// Reserved is the highest epoch a RegisterCheck handed out (>= Epoch).
	// Every RegisterStart gets a fresh epoch, so OPRF evaluations made for a
	// registration that never finished are under a key no record will use
	// (PROTOCOL.md, section 5).
	Reserved uint64
	// ReservedBlinded is HashBlinded of the blinded element of the
	// RegisterCheck that reserved Reserved, on a threshold fleet: the only
	// element a replica evaluates the reserved epoch's key for, and only
	// until a record of that epoch is registered.
	ReservedBlinded Hash
	// ReservedGen is the share generation the reserved registration is
	// evaluated under (RegisterCheck.ShareGen; account version 4).
	ReservedGen uint32
	// Record is nil unless the account is live.
	Record *Record
	// GuessesUsed counts LoginStarts since the last successful login or
	// authorized replacement; GuessLimit is the budget.
	GuessesUsed uint32
	GuessLimit  uint32
	// GuessTimes holds the times (Unix ms) of the guesses counted in
	// GuessesUsed, oldest first; at most GuessLimit of them.
	GuessTimes []int64
	// LastSuccess is the time of the last successful login (0 if none).
	LastSuccess int64
	Pending     *PendingLogin
	Ticket      *Ticket
	Disabled    bool
	Destroyed   bool
	// DestroyedAt is when the guess budget ran out (0 unless Destroyed).
	DestroyedAt int64
}

// Live reports whether the account holds a record.
func (a *Account) Live() bool { return a.Record != nil }

// String describes the account without revealing secrets.
func (a *Account) String() string {
	return fmt.Sprintf("account{epoch=%d reserved=%d live=%t guesses=%d/%d disabled=%t destroyed=%t}",
		a.Epoch, a.Reserved, a.Live(), a.GuessesUsed, a.GuessLimit, a.Disabled, a.Destroyed)
}

// Clone returns a deep copy.
func (a *Account) Clone() *Account {
	c := *a
	c.Record = a.Record.clone()
	c.GuessTimes = append([]int64(nil), a.GuessTimes...)
	if a.Pending != nil {
		p := *a.Pending
		c.Pending = &p
	}
	if a.Ticket != nil {
		t := *a.Ticket
		c.Ticket = &t
	}
	return &c
}

// isZero reports whether the account is indistinguishable from one that
// never existed, so it need not be stored.
func (a *Account) isZero() bool {
	return a.Epoch == 0 && a.Reserved == 0 && a.ReservedBlinded == (Hash{}) && a.ReservedGen == 0 && a.Record == nil && a.GuessesUsed == 0 && a.GuessLimit == 0 &&
		len(a.GuessTimes) == 0 && a.LastSuccess == 0 && a.Pending == nil && a.Ticket == nil &&
		!a.Disabled && !a.Destroyed && a.DestroyedAt == 0
}

// accountVersion is the first byte of every account MarshalBinary encodes.
// Version 2 keeps a pending login's MAC hash (HashMAC) where version 1 kept
// the MAC itself; UnmarshalBinary reads both, hashing a version-1 MAC.
// Version 3 adds the threshold fields (PROTOCOL.md §7): the reserved
// registration's blinded element hash, a record's public shares and a
// pending login's blinded element hash. Version 4 adds a record's share
// generation, public correction and credential id (resharing).
const accountVersion = 4

// account flags (encoding version 1).
const (
	flagLive = 1 << iota
	flagPending
	flagTicket
	flagDisabled
	flagDestroyed
	flagsKnown = flagLive | flagPending | flagTicket | flagDisabled | flagDestroyed
)

// MarshalBinary encodes the account (version 1):
//
//	version u8 | flags u8 | epoch u64 | reserved u64 | guesses_used u32 | guess_limit u32 |
//	last_success i64 | destroyed_at i64 | n u32 | n × time i64 |
//	[v3]      reserved_blinded [32] | [v4] reserved_gen u32 |
//	[live]    opaque bytes16 | ksf 3×u32 | wrapped bytes16 | proof_hash [32] | [v3] public_shares bytes16 | proof_key bytes16 |
//	          [v4] share_gen u32 | offset bytes16 | cred_id bytes16 |
//	[pending] login_id [16] | mac_hash [32] | request_id [16] | retry_mac_hash [32] | expiry i64 | [v3] blinded [32] |
//	[ticket]  hash [32] | expiry i64
//
// Integers are big-endian; bytes16 is a uint16 length then the bytes.
func (a *Account) MarshalBinary() ([]byte, error) {
	if err := a.validate(); err != nil {
		return nil, err
	}
	var e enc
	e.u8(accountVersion)
	var flags uint8
	if a.Record != nil {
		flags |= flagLive
	}
	if a.Pending != nil {
		flags |= flagPending
	}
	if a.Ticket != nil {
		flags |= flagTicket
	}
	if a.Disabled {
		flags |= flagDisabled
	}
	if a.Destroyed {
		flags |= flagDestroyed
	}
	e.u8(flags)
	e.u64(a.Epoch)
	e.u64(a.Reserved)
	e.u32(a.GuessesUsed)
	e.u32(a.GuessLimit)
	e.i64(a.LastSuccess)
	e.i64(a.DestroyedAt)
	e.u32(uint32(len(a.GuessTimes)))
	for _, t := range a.GuessTimes {
		e.i64(t)
	}
	e.raw(a.ReservedBlinded[:])
	e.u32(a.ReservedGen)
	if r := a.Record; r != nil {
		e.bytes(r.Opaque)
		e.u32(r.KSF.Time)
		e.u32(r.KSF.MemoryKiB)
		e.u32(r.KSF.Threads)
		e.bytes(r.WrappedKey)
		e.raw(r.ProofHash[:])
		e.bytes(r.PublicShares)
		e.bytes(r.ProofKey)
		e.u32(r.ShareGen)
		e.bytes(r.Offset)
		e.bytes(r.CredID)
	}
	if p := a.Pending; p != nil {
		e.raw(p.ID[:])
		e.raw(p.MACHash[:])
		e.raw(p.RequestID[:])
		e.raw(p.RetryMACHash[:])
		e.i64(p.Expiry)
		e.raw(p.Blinded[:])
	}
	if t := a.Ticket; t != nil {
		e.raw(t.Hash[:])
		e.i64(t.Expiry)
	}
	return e.b, nil
}

// UnmarshalBinary decodes an account encoded by MarshalBinary. It rejects
// unknown versions, unknown flags, out-of-range fields, inconsistent states
// and trailing bytes.
func (a *Account) UnmarshalBinary(b []byte) error {
	d := dec{b: b}
	d.version = d.u8("account version")
	if d.err == nil && (d.version < 1 || d.version > accountVersion) {
		return fmt.Errorf("%w: account version %d, want 1 to %d (a newer vault wrote it?)", errMalformed, d.version, accountVersion)
	}
	flags := d.u8("account flags")
	if d.err == nil && flags&^flagsKnown != 0 {
		d.fail("account flags", "unknown flag")
	}
	var n Account
	n.Epoch = d.u64("epoch")
	n.Reserved = d.u64("reserved epoch")
	n.GuessesUsed = d.u32("guesses used")
	n.GuessLimit = d.u32("guess limit")
	n.LastSuccess = d.time("last success")
	n.DestroyedAt = d.time("destroyed at")
	count := d.u32("guess times")
	if d.err == nil && count > MaxGuessLimit {
		d.fail("guess times", "too many")
	}
	if d.err == nil && count > 0 {
		n.GuessTimes = make([]int64, count)
		for i := range n.GuessTimes {
			n.GuessTimes[i] = d.time("guess time")
		}
	}
	if d.version >= 3 {
		d.fixed(n.ReservedBlinded[:], "reserved blinded element hash")
		if n.ReservedBlinded != (Hash{}) {
			n.ReservedGen = 1
		}
	}
	if d.version >= 4 {
		n.ReservedGen = d.u32("reserved share generation")
	}
	if flags&flagLive != 0 {
		r := &Record{}
		r.Opaque = d.bytes("opaque record", 1, MaxOpaqueRecordSize)
		r.KSF.Time = d.u32("ksf time")
		r.KSF.MemoryKiB = d.u32("ksf memory")
		r.KSF.Threads = d.u32("ksf threads")
		r.WrappedKey = d.bytes("wrapped key", 1, MaxWrappedKeySize)
		d.fixed(r.ProofHash[:], "proof hash")
		if d.version >= 3 {
			if r.PublicShares = d.bytes("public shares", 0, MaxPublicSharesSize); len(r.PublicShares) == 0 {
				r.PublicShares = nil
			}
			r.ProofKey = d.proofKey()
			if r.PublicShares != nil {
				r.ShareGen = 1 // version 3: the first ceremony's shares
			}
		}
		if d.version >= 4 {
			r.ShareGen = d.u32("share generation")
			r.Offset = d.offset()
			r.CredID = d.credID()
		}
		n.Record = r
	}
	if flags&flagPending != 0 {
		p := &PendingLogin{}
		d.fixed(p.ID[:], "login id")
		p.MACHash = d.macHash(2)
		if d.version >= 2 {
			d.fixed(p.RequestID[:], "login request id")
			d.fixed(p.RetryMACHash[:], "retry mac hash")
		}
		p.Expiry = d.time("login expiry")
		if d.version >= 3 {
			d.fixed(p.Blinded[:], "login blinded element hash")
		}
		n.Pending = p
	}
	if flags&flagTicket != 0 {
		t := &Ticket{}
		d.fixed(t.Hash[:], "ticket hash")
		t.Expiry = d.time("ticket expiry")
		n.Ticket = t
	}
	n.Disabled = flags&flagDisabled != 0
	n.Destroyed = flags&flagDestroyed != 0
	if err := d.end(); err != nil {
		return err
	}
	if err := n.validate(); err != nil {
		return err
	}
	*a = n
	return nil
}

// validate checks the invariants the rules maintain, so that a decoded
// account is one the rules could have produced.
func (a *Account) validate() error {
	bad := func(why string) error { return fmt.Errorf("%w: account: %s", errMalformed, why) }
	switch {
	case a.Reserved < a.Epoch:
		return bad("reserved epoch below the epoch")
	case a.Disabled && a.Destroyed:
		return bad("both disabled and destroyed")
	case a.Record != nil && (a.Disabled || a.Destroyed):
		return bad("live record flagged disabled or destroyed")
	case a.Record == nil && (a.Pending != nil || a.Ticket != nil || a.GuessesUsed != 0 || a.GuessLimit != 0 ||
		len(a.GuessTimes) != 0 || a.LastSuccess != 0):
		return bad("erased record keeps login state")
	case !a.Destroyed && a.DestroyedAt != 0:
		return bad("destroyed time without destroyed flag")
	case a.Record != nil && (a.GuessLimit == 0 || a.GuessLimit > MaxGuessLimit):
		return bad("guess limit out of range")
	case a.GuessesUsed > a.GuessLimit:
		return bad("more guesses used than the limit")
	case len(a.GuessTimes) > int(a.GuessesUsed):
		return bad("more guess times than guesses")
	case a.Record != nil && a.Epoch == 0:
		return bad("live record at epoch 0")
	}
	if r := a.Record; r != nil {
		if len(r.Opaque) == 0 || len(r.Opaque) > MaxOpaqueRecordSize ||
			len(r.WrappedKey) == 0 || len(r.WrappedKey) > MaxWrappedKeySize || len(r.PublicShares) > MaxPublicSharesSize {
			return bad("record field size out of range")
		}
		if (len(r.PublicShares) > 0) != (r.ShareGen > 0) || (len(r.PublicShares) == 0 && (r.Offset != nil || r.CredID != nil)) {
			return bad("share generation, correction or credential id without public shares, or public shares without a generation")
		}
	}
	for _, t := range a.GuessTimes {
		if t < 0 || t > 1<<62 {
			return bad("guess time out of range")
		}
	}
	if a.LastSuccess < 0 || a.LastSuccess > 1<<62 || a.DestroyedAt < 0 || a.DestroyedAt > 1<<62 {
		return bad("time out of range")
	}
	if p := a.Pending; p != nil && (p.Expiry < 0 || p.Expiry > 1<<62) {
		return bad("time out of range")
	}
	if t := a.Ticket; t != nil && (t.Expiry < 0 || t.Expiry > 1<<62) {
		return bad("time out of range")
	}
	return nil
}
