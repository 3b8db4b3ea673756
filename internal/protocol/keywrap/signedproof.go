package keywrap

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
)

// Fresh key proofs (PROTOCOL.md §2, version 2 records). The key proof of
// version 1 is a static bearer secret: a replica that once saw it in a
// request can present it again. A version-2 record stores instead an
// Ed25519 public key derived from the backup key, and every authorization
// by the key is a signature over the request's own id and time and the
// operation: a replica that saw one can replay nothing (the request id is
// refused as a replay within the window, and the time is too old after).

const infoSigning = "coffer v2 key proof signing key"

// Operations a key signature authorizes. The values are part of the
// signed message.
const (
	ProofRegisterStart  byte = 1
	ProofRegisterFinish byte = 2
	ProofDisable        byte = 3
)

// ProofSigningKey derives the account's key-proof signing key from the
// backup key: Ed25519 with seed HKDF-SHA-256(key, info "coffer v2 key proof
// signing key" ‖ account).
func ProofSigningKey(key *[KeySize]byte, account string) ed25519.PrivateKey {
	seed, err := hkdf.Key(sha256.New, key[:], nil, infoSigning+account, ed25519.SeedSize)
	if err != nil {
		panic("keywrap: HKDF cannot fail for 32 bytes: " + err.Error())
	}
	defer clear(seed)
	return ed25519.NewKeyFromSeed(seed)
}

// ProofPublicKey is the public half of ProofSigningKey: what a version-2
// record stores.
func ProofPublicKey(key *[KeySize]byte, account string) []byte {
	priv := ProofSigningKey(key, account)
	defer clear(priv)
	return append([]byte(nil), priv.Public().(ed25519.PublicKey)...)
}

// ProofMessage is what a key signature signs:
//
//	"coffer v2 key proof" ‖ op u8 ‖ request_id (16) ‖ time_unix_ms i64
func ProofMessage(op byte, requestID []byte, timeUnixMs int64) []byte {
	m := make([]byte, 0, 19+1+len(requestID)+8)
	m = append(m, "coffer v2 key proof"...)
	m = append(m, op)
	m = append(m, requestID...)
	return binary.BigEndian.AppendUint64(m, uint64(timeUnixMs))
}

// SignProof signs op for the request requestID made at timeUnixMs.
func SignProof(key *[KeySize]byte, account string, op byte, requestID []byte, timeUnixMs int64) []byte {
	priv := ProofSigningKey(key, account)
	defer clear(priv)
	return ed25519.Sign(priv, ProofMessage(op, requestID, timeUnixMs))
}

// VerifyProof checks a key signature against a record's public key.
func VerifyProof(public []byte, op byte, requestID []byte, timeUnixMs int64, sig []byte) bool {
	if len(public) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(public, ProofMessage(op, requestID, timeUnixMs), sig)
}
