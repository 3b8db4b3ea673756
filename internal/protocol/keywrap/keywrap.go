// Package keywrap wraps the backup key for the vault under a key derived
// from OPAQUE's export key, and derives the key proof that authorizes
// replacing or erasing a vault record (PROTOCOL.md §2):
//
//	wrapKey   = HKDF-SHA-256(IKM = export_key, salt = "", info = "coffer v1 key wrap" || account, L = 32)
//	wrapped   = nonce (12 random bytes) || AES-256-GCM(wrapKey, nonce, K, aad = "coffer v1 wrapped key" || account)
//	keyProof  = HKDF-SHA-256(IKM = K, salt = "", info = "coffer v1 key proof" || account, L = 32)
//	proofHash = SHA-256(keyProof)
//
// The vault stores wrapped and proofHash; it never sees K, export_key or the
// password. Errors never contain key material.
package keywrap

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
)

const (
	// KeySize is the size of the backup key.
	KeySize = 32
	// NonceSize is the size of the AES-GCM nonce at the start of a wrapped key.
	NonceSize = 12
	// WrappedSize is the size of a wrapped key: nonce, encrypted key, tag.
	WrappedSize = NonceSize + KeySize + 16
	// MinExportKeySize is the smallest export key accepted; OPAQUE's is 64
	// bytes in Coffer's configuration.
	MinExportKeySize = 32
)

const (
	infoWrap  = "coffer v1 key wrap"
	aadWrap   = "coffer v1 wrapped key"
	infoProof = "coffer v1 key proof"
)

var (
	// ErrUnwrap means a wrapped key did not open: the vault returned a
	// record made under another password or for another account, or the
	// bytes were altered.
	ErrUnwrap = errors.New("keywrap: wrapped key does not open under this export key and account")

	// ErrExportKey is returned for an export key shorter than MinExportKeySize.
	ErrExportKey = errors.New("keywrap: export key too short")

	// ErrAccount is returned for an empty account.
	ErrAccount = errors.New("keywrap: empty account")
)

// Wrap encrypts key for account under a key derived from exportKey, with a
// fresh random nonce. The result is WrappedSize bytes.
func Wrap(exportKey []byte, account string, key *[KeySize]byte) ([]byte, error) {
	var nonce [NonceSize]byte
	rand.Read(nonce[:]) // crypto/rand.Read never fails (Go 1.24+).
	return wrap(exportKey, account, key, nonce)
}

func wrap(exportKey []byte, account string, key *[KeySize]byte, nonce [NonceSize]byte) ([]byte, error) {
	if key == nil {
		return nil, errors.New("keywrap: nil key")
	}
	aead, err := newAEAD(exportKey, account)
	if err != nil {
		return nil, err
	}
	out := make([]byte, NonceSize, WrappedSize)
	copy(out, nonce[:])
	return aead.Seal(out, nonce[:], key[:], []byte(aadWrap+account)), nil
}

// Unwrap decrypts a key wrapped by Wrap for account under exportKey. Any
// failure to open — wrong export key, wrong account, altered or truncated
// bytes — is ErrUnwrap.
func Unwrap(exportKey []byte, account string, wrapped []byte) (*[KeySize]byte, error) {
	aead, err := newAEAD(exportKey, account)
	if err != nil {
		return nil, err
	}
	if len(wrapped) != WrappedSize {
		return nil, ErrUnwrap
	}
	key := new([KeySize]byte)
	if _, err := aead.Open(key[:0], wrapped[:NonceSize], wrapped[NonceSize:], []byte(aadWrap+account)); err != nil {
		clear(key[:])
		return nil, ErrUnwrap
	}
	return key, nil
}

func newAEAD(exportKey []byte, account string) (cipher.AEAD, error) {
	if len(exportKey) < MinExportKeySize {
		return nil, ErrExportKey
	}
	if account == "" {
		return nil, ErrAccount
	}
	wrapKey, err := hkdf.Key(sha256.New, exportKey, nil, infoWrap+account, 32)
	if err != nil {
		return nil, fmt.Errorf("keywrap: deriving the wrapping key: %w", err)
	}
	defer clear(wrapKey)
	block, err := aes.NewCipher(wrapKey)
	if err != nil {
		return nil, fmt.Errorf("keywrap: %w", err)
	}
	return cipher.NewGCM(block)
}

// KeyProof derives the proof that the client holds the backup key of
// account. It is sent, inside the sealed channel, only to authorize
// replacing or erasing the account's record; the vault keeps its ProofHash.
func KeyProof(key *[KeySize]byte, account string) [32]byte {
	var proof [32]byte
	p, err := hkdf.Key(sha256.New, key[:], nil, infoProof+account, 32)
	if err != nil {
		// HKDF-SHA-256 with L = 32 cannot fail.
		panic("keywrap: " + err.Error())
	}
	copy(proof[:], p)
	clear(p)
	return proof
}

// ProofHash is what the vault stores to check a key proof: SHA-256(proof).
func ProofHash(proof [32]byte) [32]byte {
	return sha256.Sum256(proof[:])
}

// CheckProof reports, in constant time, whether proof (as received) hashes
// to proofHash (as stored). It is false for inputs of the wrong size.
func CheckProof(proof, proofHash []byte) bool {
	if len(proof) != 32 || len(proofHash) != 32 {
		return false
	}
	h := sha256.Sum256(proof)
	return subtle.ConstantTimeCompare(h[:], proofHash) == 1
}
