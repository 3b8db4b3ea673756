//go:build !cgo

package pkcs11

import "github.com/cofferhq/coffer/internal/server/sealing"

// Available reports whether this build can talk to PKCS#11 modules (it
// needs cgo).
const Available = false

// Token is unavailable without cgo.
type Token struct{}

// Open returns ErrNoCgo.
func Open(Config) (*Token, error) { return nil, ErrNoCgo }

// GenerateKey returns ErrNoCgo.
func GenerateKey(Config) (*Token, error) { return nil, ErrNoCgo }

// Key returns nil.
func (*Token) Key() sealing.Key { return nil }

// ReadMark returns ErrNoCgo.
func (*Token) ReadMark() (sealing.Mark, error) { return sealing.Mark{}, ErrNoCgo }

// WriteMark returns ErrNoCgo.
func (*Token) WriteMark(sealing.Mark) error { return ErrNoCgo }

// Close does nothing.
func (*Token) Close() error { return nil }
