package vaultstate

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// errMalformed is wrapped by every decoding error. Decoding errors name the
// field that failed, never its contents.
var errMalformed = errors.New("malformed")

// enc appends fixed-width big-endian integers and length-prefixed byte
// strings. Every encoding in this package is canonical: one value has exactly
// one encoding, so decode(encode(v)) == v and encode(decode(b)) == b.
type enc struct{ b []byte }

func (e *enc) u8(v uint8)   { e.b = append(e.b, v) }
func (e *enc) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *enc) i64(v int64)  { e.u64(uint64(v)) }
func (e *enc) raw(p []byte) { e.b = append(e.b, p...) }

// bytes writes a uint16 length and then p; callers bound len(p) first.
func (e *enc) bytes(p []byte) {
	e.b = binary.BigEndian.AppendUint16(e.b, uint16(len(p)))
	e.b = append(e.b, p...)
}

// dec reads what enc wrote. The first failure sticks: later reads return
// zero values, and err reports the first field that failed.
type dec struct {
	b   []byte
	err error
	// version is the encoding version of what is being decoded, for
	// fields whose meaning changed between versions.
	version uint8
}

func (d *dec) fail(field, why string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s: %s", errMalformed, field, why)
	}
}

func (d *dec) take(n int, field string) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.fail(field, "truncated")
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *dec) u8(field string) uint8 {
	p := d.take(1, field)
	if p == nil {
		return 0
	}
	return p[0]
}

func (d *dec) u32(field string) uint32 {
	p := d.take(4, field)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

func (d *dec) u64(field string) uint64 {
	p := d.take(8, field)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

// time reads a Unix-millisecond time, which is never negative.
func (d *dec) time(field string) int64 {
	v := d.u64(field)
	if v > 1<<62 {
		d.fail(field, "time out of range")
		return 0
	}
	return int64(v)
}

// fixed copies exactly len(dst) bytes into dst.
func (d *dec) fixed(dst []byte, field string) {
	if p := d.take(len(dst), field); p != nil {
		copy(dst, p)
	}
}

// bytes reads a length-prefixed byte string of min..max bytes and returns a
// copy, so decoded values never alias the input buffer.
func (d *dec) bytes(field string, min, max int) []byte {
	p := d.take(2, field)
	if p == nil {
		return nil
	}
	n := int(binary.BigEndian.Uint16(p))
	if n < min || n > max {
		d.fail(field, fmt.Sprintf("length %d outside %d..%d", n, min, max))
		return nil
	}
	q := d.take(n, field)
	if q == nil {
		return nil
	}
	return append([]byte(nil), q...)
}

// bool reads a byte that must be 0 or 1.
func (d *dec) bool(field string) bool {
	switch d.u8(field) {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail(field, "not 0 or 1")
		return false
	}
}

// end fails unless all input was consumed.
func (d *dec) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("end", fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
	return d.err
}

// proofKey reads a record's key-proof public key: empty, or 32 bytes.
func (d *dec) proofKey() []byte {
	k := d.bytes("proof key", 0, 32)
	switch {
	case len(k) == 0:
		return nil
	case len(k) != 32:
		d.fail("proof key", "not 32 bytes")
		return nil
	}
	return k
}

// MaxCredIDSize bounds a stored credential identifier (the account id, a
// zero byte and the epoch).
const MaxCredIDSize = 512

// OffsetSize is the size of a record's public correction: a ristretto255
// scalar.
const OffsetSize = 32

// offset decodes a record's public correction: empty (none) or 32 bytes.
func (d *dec) offset() []byte {
	o := d.bytes("offset", 0, OffsetSize)
	switch {
	case len(o) == 0:
		return nil
	case len(o) != OffsetSize:
		d.fail("offset", "not 32 bytes")
		return nil
	}
	return o
}

// credID decodes a stored credential identifier: empty (none) or at most
// MaxCredIDSize bytes.
func (d *dec) credID() []byte {
	c := d.bytes("credential id", 0, MaxCredIDSize)
	if len(c) == 0 {
		return nil
	}
	return c
}
