// Package backupkey holds Coffer's backup key: 256 random bits made on the
// device, and its human form, the 64-digit key (FORMAT.md, section 1).
//
// The key leaves the device only as the 64-digit key shown to its owner, or
// wrapped for the vault. Nothing in this package logs or formats a key except
// Key.Digits, which exists to show it to its owner.
package backupkey

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
)

// Size is the key length in bytes.
const Size = 32

// Digits is the number of hexadecimal digits in the 64-digit key.
const Digits = 2 * Size

// Key is a backup key. Its String and GoString methods never reveal it, so a
// key that reaches a log or an error by mistake prints as "backupkey(…)".
type Key struct {
	b [Size]byte
}

// ErrMalformed is wrapped by every parse error.
var ErrMalformed = errors.New("malformed 64-digit key")

// New makes a fresh key from crypto/rand.
func New() *Key {
	k := new(Key)
	rand.Read(k.b[:]) // crypto/rand.Read never fails (Go 1.24+).
	return k
}

// FromBytes copies a 32-byte key.
func FromBytes(b []byte) (*Key, error) {
	if len(b) != Size {
		return nil, fmt.Errorf("backup key is %d bytes, want %d", len(b), Size)
	}
	k := new(Key)
	copy(k.b[:], b)
	return k, nil
}

// Bytes returns the key material. The caller must not keep it longer than
// needed; Zero the Key when done.
func (k *Key) Bytes() *[Size]byte { return &k.b }

// Zero overwrites the key in memory.
func (k *Key) Zero() { clear(k.b[:]) }

// Equal reports, in constant time, whether two keys are the same.
func (k *Key) Equal(o *Key) bool { return subtle.ConstantTimeCompare(k.b[:], o.b[:]) == 1 }

// Fingerprint is a short public identifier of the key (not the key, and not
// usable to recover it): the first 8 bytes of SHA-256("coffer key
// fingerprint" || key), as 16 hex digits. It lets a person check two devices
// hold the same key.
func (k *Key) Fingerprint() string {
	h := sha256.New()
	h.Write([]byte("coffer key fingerprint"))
	h.Write(k.b[:])
	return fmt.Sprintf("%x", h.Sum(nil)[:8])
}

// String never reveals the key.
func (k *Key) String() string { return "backupkey(…)" }

// GoString never reveals the key.
func (k *Key) GoString() string { return "backupkey(…)" }

const hexdigits = "0123456789abcdef"

// Digits returns the 64-digit key: 64 lowercase hex digits in 16 groups of 4
// separated by single spaces. It is meant only to be shown to the key's owner.
func (k *Key) Digits() string {
	var sb strings.Builder
	sb.Grow(Digits + Digits/4 - 1)
	for i, c := range k.b {
		if i > 0 && i%2 == 0 {
			sb.WriteByte(' ')
		}
		sb.WriteByte(hexdigits[c>>4])
		sb.WriteByte(hexdigits[c&0x0f])
	}
	return sb.String()
}

// Parse reads a 64-digit key typed by a person: any case; spaces, tabs,
// dashes and line breaks anywhere are ignored. An error says exactly what is
// wrong (which character, at which position, or how many digits are missing)
// and never repeats the digits that were entered.
func Parse(s string) (*Key, error) {
	k := new(Key)
	n := 0
	for i, r := range s {
		var v byte
		switch {
		case r == ' ' || r == '\t' || r == '-' || r == '\n' || r == '\r':
			continue
		case '0' <= r && r <= '9':
			v = byte(r - '0')
		case 'a' <= r && r <= 'f':
			v = byte(r-'a') + 10
		case 'A' <= r && r <= 'F':
			v = byte(r-'A') + 10
		default:
			k.Zero()
			what := fmt.Sprintf("%q", r)
			if r == 'o' || r == 'O' {
				what += " (the letter O; did you mean the digit 0?)"
			} else if r == 'l' || r == 'I' {
				what += " (a letter; did you mean the digit 1?)"
			}
			return nil, fmt.Errorf("%w: character %d is %s; a key has only the digits 0-9 and letters a-f", ErrMalformed, i+1, what)
		}
		if n >= Digits {
			k.Zero()
			return nil, fmt.Errorf("%w: more than %d digits; check for an extra digit or a second key pasted in", ErrMalformed, Digits)
		}
		if n%2 == 0 {
			k.b[n/2] = v << 4
		} else {
			k.b[n/2] |= v
		}
		n++
	}
	if n < Digits {
		k.Zero()
		if n == 0 {
			return nil, fmt.Errorf("%w: the key is empty", ErrMalformed)
		}
		return nil, fmt.Errorf("%w: %d digits, want %d (%d missing); a key is 16 groups of 4", ErrMalformed, n, Digits, Digits-n)
	}
	return k, nil
}
