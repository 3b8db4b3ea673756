// Package sealing encrypts and authenticates what a vault replica keeps on
// disk (its Raft log, snapshots, state records and fleet secrets) under a
// sealing key held in a key file (sealing/keyfile, for development) or
// wrapped by a PKCS#11 token (sealing/pkcs11).
//
// A Key seals a value bound to associated data that names what the value is
// and where it belongs (AAD): a sealed value moved to another record, log
// index or purpose does not open. Sealed values are
//
//	version (1 byte) || nonce || ciphertext || tag
//
// with version 1 = XAES-256-GCM (24-byte random nonce) under a key derived
// by HKDF-SHA-256 from a 32-byte secret (SoftKey), and version 2 = AES-256-GCM
// (12-byte random nonce) computed inside a PKCS#11 token (sealing/pkcs11).
// The version byte is authenticated as part of the associated data.
//
// See README.md for the threat model and the key hierarchy.
package sealing

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// Key seals and opens values. Implementations are safe for concurrent use.
type Key interface {
	// Seal encrypts plaintext and binds it to aad.
	Seal(aad, plaintext []byte) ([]byte, error)
	// Open returns the plaintext of sealed if it was sealed by this key
	// with the same aad; otherwise an error matching ErrAuthentication
	// (or ErrFormat, ErrUnsupportedVersion).
	Open(aad, sealed []byte) ([]byte, error)
	// Name says which key this is, for logs and error messages. It holds
	// no secret.
	Name() string
}

// Format versions (the first byte of a sealed value).
const (
	// VersionXAES is XAES-256-GCM with a 24-byte random nonce (SoftKey).
	VersionXAES byte = 1
	// VersionTokenGCM is AES-256-GCM with a 12-byte random nonce computed
	// by a PKCS#11 token (sealing/pkcs11).
	VersionTokenGCM byte = 2
)

// Errors. Opening errors wrap one of these and name the key.
var (
	// ErrAuthentication: the value does not open under this key with this
	// associated data: another sealing key (another key file or token), a
	// value moved from elsewhere, or altered bytes.
	ErrAuthentication = errors.New("sealed value does not open: wrong sealing key, or the data was moved or altered")
	// ErrFormat: too short or otherwise not a sealed value.
	ErrFormat = errors.New("not a sealed value (too short or damaged)")
	// ErrUnsupportedVersion: sealed by another kind of key or a newer
	// Coffer.
	ErrUnsupportedVersion = errors.New("sealed with an unsupported format version")
)

// AAD builds associated data: purpose, a zero byte, then parts. Each
// purpose must use a fixed layout of parts so the encoding is unambiguous.
func AAD(purpose string, parts ...[]byte) []byte {
	n := len(purpose) + 1
	for _, p := range parts {
		n += len(p)
	}
	out := make([]byte, 0, n)
	out = append(out, purpose...)
	out = append(out, 0)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// SoftKey is a Key held in process memory: XAES-256-GCM under a subkey
// derived by HKDF-SHA-256 from a 32-byte secret (a key file's contents, or a
// data key unwrapped by a token).
type SoftKey struct {
	name string
	id   string
	x    *xaes
	der  []byte // HKDF root of DeriveKey's subkeys
}

// Deriver is a Key that also derives secret subkeys for other purposes
// (a keyed digest of a replica's state: vaultstate.Options.DigestKey).
// SoftKey is one; a token key is not (its secret never leaves the token).
type Deriver interface {
	// DeriveKey returns a 32-byte secret subkey for purpose, always the
	// same for the same key and purpose, independent of the sealing key
	// and of every other purpose's.
	DeriveKey(purpose string) []byte
}

var _ Deriver = (*SoftKey)(nil)

var _ Key = (*SoftKey)(nil)

const (
	infoAEAD   = "coffer sealing v1 xaes-256-gcm"
	infoKeyID  = "coffer sealing v1 key id"
	infoDerive = "coffer sealing v1 derived keys"
)

// NewKey returns a SoftKey for secret. name describes where it comes from
// ("key file /etc/coffer/sealing.key"); Name adds the key id.
func NewKey(secret *[32]byte, name string) *SoftKey {
	sub, err := hkdf.Key(sha256.New, secret[:], nil, infoAEAD, 32)
	if err != nil {
		panic(err)
	}
	defer clear(sub)
	x, err := newXAES(sub)
	if err != nil {
		panic(err)
	}
	der, err := hkdf.Key(sha256.New, secret[:], nil, infoDerive, 32)
	if err != nil {
		panic(err)
	}
	return &SoftKey{name: name, id: KeyID(secret), x: x, der: der}
}

// DeriveKey returns HKDF-SHA-256 of the key's secret for purpose (through
// a root subkey of its own: the secret itself is not kept).
func (k *SoftKey) DeriveKey(purpose string) []byte {
	out, err := hkdf.Key(sha256.New, k.der, nil, "coffer sealing v1 derived key: "+purpose, 32)
	if err != nil {
		panic(err)
	}
	return out
}

// KeyID is a public fingerprint of a 32-byte secret (16 hex digits), so
// operators can tell keys apart without revealing them.
func KeyID(secret *[32]byte) string {
	id, err := hkdf.Key(sha256.New, secret[:], nil, infoKeyID, 8)
	if err != nil {
		panic(err)
	}
	return hex.EncodeToString(id)
}

// ID returns the key id (KeyID of the secret).
func (k *SoftKey) ID() string { return k.id }

// Name describes the key and its id.
func (k *SoftKey) Name() string {
	if k.name == "" {
		return "sealing key " + k.id
	}
	return fmt.Sprintf("%s (key id %s)", k.name, k.id)
}

// Overhead is how many bytes SoftKey.Seal adds to a plaintext.
const Overhead = 1 + xaesNonceSize + xaesOverhead

// Seal encrypts plaintext bound to aad.
func (k *SoftKey) Seal(aad, plaintext []byte) ([]byte, error) {
	out := make([]byte, 1+xaesNonceSize, Overhead+len(plaintext))
	out[0] = VersionXAES
	rand.Read(out[1 : 1+xaesNonceSize])
	full := versionedAAD(VersionXAES, aad)
	return k.x.seal(out, out[1:1+xaesNonceSize], plaintext, full), nil
}

// Open decrypts a value sealed by Seal with the same aad.
func (k *SoftKey) Open(aad, sealed []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%s: %w", k.Name(), ErrFormat)
	}
	if sealed[0] != VersionXAES {
		return nil, fmt.Errorf("%s: %w (%d; this key seals version %d)", k.Name(), ErrUnsupportedVersion, sealed[0], VersionXAES)
	}
	nonce := sealed[1 : 1+xaesNonceSize]
	plain, err := k.x.open(nil, nonce, sealed[1+xaesNonceSize:], versionedAAD(VersionXAES, aad))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k.Name(), ErrAuthentication)
	}
	return plain, nil
}

// versionedAAD prefixes the format version to aad, so the version byte is
// authenticated too.
func versionedAAD(v byte, aad []byte) []byte {
	out := make([]byte, 0, 1+len(aad))
	out = append(out, v)
	return append(out, aad...)
}

// VersionedAAD is versionedAAD for other Key implementations of this
// format (sealing/pkcs11).
func VersionedAAD(v byte, aad []byte) []byte { return versionedAAD(v, aad) }
