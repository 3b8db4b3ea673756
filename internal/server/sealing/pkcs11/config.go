// Package pkcs11 keeps Coffer's sealing key in a PKCS#11 token (an HSM;
// SoftHSM2 in tests): a non-extractable AES-256 key generated inside the
// token, AES-256-GCM computed by the token, and the replica's high-water mark
// (sealing.Mark) stored as a token data object.
//
// The token's key wraps a data key (sealing.CreateWrappedKey,
// sealing.LoadWrappedKey) that seals the replica's data in process memory:
// one token operation per start-up instead of one per stored value
// (README.md in sealing has the numbers and the trade-off).
//
// The package talks to the module with github.com/miekg/pkcs11 and needs
// cgo; without cgo Open and GenerateKey return ErrNoCgo and the rest of
// Coffer builds and runs with key files.
package pkcs11

import (
	"errors"
	"fmt"
)

// Config selects a token and a key.
type Config struct {
	// Module is the path of the PKCS#11 library
	// (/usr/lib/softhsm/libsofthsm2.so for SoftHSM2).
	Module string
	// TokenLabel selects the token.
	TokenLabel string
	// PIN is the user PIN.
	PIN string
	// KeyLabel names the sealing key (and this replica's marks).
	KeyLabel string
	// Sessions is the size of the session pool (default DefaultSessions).
	Sessions int
}

// DefaultSessions is the default session pool size.
const DefaultSessions = 4

// DefaultModule is where Debian's softhsm2 package installs SoftHSM2.
const DefaultModule = "/usr/lib/softhsm/libsofthsm2.so"

// Errors.
var (
	// ErrNoKey: the token has no key with the configured label.
	ErrNoKey = errors.New("no sealing key in the token")
	// ErrKeyExists: GenerateKey found a key with the label.
	ErrKeyExists = errors.New("a key with this label exists")
	// ErrClosed: the Token was closed.
	ErrClosed = errors.New("pkcs11: token is closed")
	// ErrNoCgo: this binary was built without cgo.
	ErrNoCgo = errors.New("pkcs11: this Coffer was built without cgo (CGO_ENABLED=0) and cannot load PKCS#11 modules; rebuild with cgo or use a key file")
)

func (c Config) check() error {
	switch {
	case c.Module == "":
		return fmt.Errorf("pkcs11: Config.Module (the PKCS#11 library path, e.g. %s) is required", DefaultModule)
	case c.TokenLabel == "":
		return errors.New("pkcs11: Config.TokenLabel is required")
	case c.KeyLabel == "":
		return errors.New("pkcs11: Config.KeyLabel is required")
	}
	return nil
}
