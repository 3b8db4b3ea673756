// Package channel seals client→vault requests and vault→client responses
// (PROTOCOL.md section 3), so the relay in between can neither read nor
// alter them, nor move a request from one account to another.
//
// A request is sealed with HPKE (RFC 9180, base mode) to the fleet's public
// key with the suite MLKEM768X25519 + HKDF-SHA256 + AES-256-GCM:
//
//	sealedRequest  = 0x01 || enc (1120 bytes) || HPKE.Seal(aad = account, request)
//	info           = "coffer vault v1" || fleet_id
//
// and its response as in Oblivious HTTP (RFC 9458 section 4.4), with a
// fresh random nonce per response:
//
//	secret         = Export("coffer vault v1 response", 32)
//	response_nonce = 32 random bytes
//	prk            = HKDF-Extract(salt = enc || response_nonce, IKM = secret)     (SHA-256)
//	key            = HKDF-Expand(prk, "key", 32)
//	nonce          = HKDF-Expand(prk, "nonce", 12)
//	sealedResponse = 0x01 || response_nonce || AES-256-GCM(key, nonce, response, aad = request_id)
//
// A vault may answer one sealed request more than once (a replayed request
// is answered CODE_REPLAY; a retry may reach a new leader): each answer
// still gets its own key and nonce.
//
// Client side:
//
//	sealed, opener, err := channel.Seal(fleetKey, fleetID, account, marshalledRequest)
//	// ... send sealed through the relay, receive sealedResp ...
//	resp, err := opener.Open(sealedResp, requestID)
//
// Vault side:
//
//	r := channel.NewRecipient(fleetPrivateKey, fleetID)
//	req, responder, err := r.Open(sealed, assertedAccount)
//	// ... act on req ...
//	sealedResp, err := responder.Seal(marshalledResponse, requestID)
//
// The package treats requests and responses as opaque bytes. The caller
// still checks what PROTOCOL.md asks of the content: the vault that
// Request.account equals the asserted account, the time window and replays;
// the client that Response.request_id is its own.
package channel

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// Version is the first byte of every sealed request and response.
const Version byte = 0x01

// Sizes of the suite's keys and of the framing.
const (
	// PublicKeySize is the size of an MLKEM768X25519 public key.
	PublicKeySize = 1216
	// PrivateKeySize is the size of a private key as stored: its seed.
	PrivateKeySize = 32
	// EncapsulatedKeySize is the size of the KEM output (enc) in a request.
	EncapsulatedKeySize = 1120
	// ResponseNonceSize is the size of a response's random nonce.
	ResponseNonceSize = 32
	// Overhead is the number of bytes a sealed request adds to its
	// plaintext; ResponseOverhead is the same for a response.
	Overhead         = 1 + EncapsulatedKeySize + 16
	ResponseOverhead = 1 + ResponseNonceSize + 16
)

const (
	infoPrefix      = "coffer vault v1"
	responseContext = "coffer vault v1 response"
)

var (
	// ErrOpen means a sealed message did not open: it was altered, cut,
	// sealed for another account or fleet key, or (for a response) belongs
	// to another request. It says no more, by design.
	ErrOpen = errors.New("channel: sealed message did not open (altered, or not for this account, request or key)")
	// ErrUnsupportedVersion means the first byte is not Version: the
	// message comes from a newer or older protocol version.
	ErrUnsupportedVersion = errors.New("channel: unsupported sealed message version (this program speaks version 1; upgrade it)")
)

func suite() (hpke.KEM, hpke.KDF, hpke.AEAD) {
	return hpke.MLKEM768X25519(), hpke.HKDFSHA256(), hpke.AES256GCM()
}

func info(fleetID [16]byte) []byte {
	return append([]byte(infoPrefix), fleetID[:]...)
}

// PublicKey is a fleet's HPKE public key.
type PublicKey struct {
	k hpke.PublicKey
}

// ParsePublicKey parses a PublicKeySize-byte MLKEM768X25519 public key, as
// carried in the fleet bundle.
func ParsePublicKey(b []byte) (*PublicKey, error) {
	if len(b) != PublicKeySize {
		return nil, fmt.Errorf("channel: HPKE public key is %d bytes, want %d", len(b), PublicKeySize)
	}
	kem, _, _ := suite()
	k, err := kem.NewPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("channel: invalid HPKE public key: %w", err)
	}
	return &PublicKey{k: k}, nil
}

// Bytes returns the PublicKeySize-byte encoding of the key.
func (p *PublicKey) Bytes() []byte { return p.k.Bytes() }

// PrivateKey is a fleet's HPKE private key.
type PrivateKey struct {
	k hpke.PrivateKey
}

// GenerateKey makes a new fleet HPKE key pair.
func GenerateKey() (*PrivateKey, error) {
	kem, _, _ := suite()
	k, err := kem.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("channel: generating the HPKE key: %w", err)
	}
	return &PrivateKey{k: k}, nil
}

// NewPrivateKey loads a private key from its PrivateKeySize-byte seed, as
// returned by Bytes. Its errors never contain key material.
func NewPrivateKey(seed []byte) (*PrivateKey, error) {
	if len(seed) != PrivateKeySize {
		return nil, fmt.Errorf("channel: HPKE private key is %d bytes, want %d", len(seed), PrivateKeySize)
	}
	kem, _, _ := suite()
	k, err := kem.NewPrivateKey(seed)
	if err != nil {
		return nil, errors.New("channel: invalid HPKE private key")
	}
	return &PrivateKey{k: k}, nil
}

// Bytes returns the key's PrivateKeySize-byte seed, the form to store
// (sealed) at rest. It is secret.
func (k *PrivateKey) Bytes() []byte {
	b, err := k.k.Bytes()
	if err != nil {
		// A key made by this package always serializes.
		panic("channel: cannot serialize HPKE private key: " + err.Error())
	}
	return b
}

// PublicKey returns the matching public key.
func (k *PrivateKey) PublicKey() *PublicKey { return &PublicKey{k: k.k.PublicKey()} }

// Seal seals a request for the fleet whose public key and id are given, for
// the account the relay will assert. It returns the sealed request and the
// opener of its response.
func Seal(pub *PublicKey, fleetID [16]byte, account string, req []byte) (sealed []byte, opener *ResponseOpener, err error) {
	if pub == nil {
		return nil, nil, errors.New("channel: no fleet public key")
	}
	_, kdf, aead := suite()
	enc, s, err := hpke.NewSender(pub.k, kdf, aead, info(fleetID))
	if err != nil {
		return nil, nil, fmt.Errorf("channel: sealing the request: %w", err)
	}
	ct, err := s.Seal([]byte(account), req)
	if err != nil {
		return nil, nil, fmt.Errorf("channel: sealing the request: %w", err)
	}
	secret, err := s.Export(responseContext, 32)
	if err != nil {
		return nil, nil, fmt.Errorf("channel: deriving the response secret: %w", err)
	}
	out := make([]byte, 0, 1+len(enc)+len(ct))
	out = append(out, Version)
	out = append(out, enc...)
	out = append(out, ct...)
	return out, &ResponseOpener{r: responseKeys{secret: secret, enc: enc}}, nil
}

// responseKeys derives the per-response AEAD from the exported secret.
type responseKeys struct {
	secret, enc []byte
}

func (k responseKeys) aead(responseNonce []byte) (cipher.AEAD, []byte, error) {
	salt := make([]byte, 0, len(k.enc)+len(responseNonce))
	salt = append(append(salt, k.enc...), responseNonce...)
	prk, err := hkdf.Extract(sha256.New, k.secret, salt)
	if err != nil {
		return nil, nil, err
	}
	key, err := hkdf.Expand(sha256.New, prk, "key", 32)
	if err != nil {
		return nil, nil, err
	}
	nonce, err := hkdf.Expand(sha256.New, prk, "nonce", 12)
	if err != nil {
		return nil, nil, err
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, nil, err
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return nil, nil, err
	}
	return g, nonce, nil
}

// ResponseOpener opens the response to one sealed request.
type ResponseOpener struct {
	r responseKeys
}

// Open opens the sealed response to the request whose request id is given.
// It returns ErrOpen if the response was altered or answers another request,
// ErrUnsupportedVersion if its version byte is unknown.
func (o *ResponseOpener) Open(sealedResp, requestID []byte) ([]byte, error) {
	if len(sealedResp) < ResponseOverhead {
		return nil, ErrOpen
	}
	if sealedResp[0] != Version {
		return nil, ErrUnsupportedVersion
	}
	aead, nonce, err := o.r.aead(sealedResp[1 : 1+ResponseNonceSize])
	if err != nil {
		return nil, ErrOpen
	}
	pt, err := aead.Open(nil, nonce, sealedResp[1+ResponseNonceSize:], requestID)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// Recipient opens requests on the vault side.
type Recipient struct {
	key  *PrivateKey
	info []byte
}

// NewRecipient returns a Recipient for the fleet with the given private key
// and id. It is safe for concurrent use.
func NewRecipient(key *PrivateKey, fleetID [16]byte) *Recipient {
	return &Recipient{key: key, info: info(fleetID)}
}

// Open opens a sealed request for the account the relay asserts. It returns
// ErrOpen if the request was altered, cut, sealed for another account or to
// another fleet key, ErrUnsupportedVersion if its version byte is unknown.
// The Responder seals the one response to it.
func (r *Recipient) Open(sealed []byte, account string) (req []byte, responder *Responder, err error) {
	if len(sealed) < Overhead {
		return nil, nil, ErrOpen
	}
	if sealed[0] != Version {
		return nil, nil, ErrUnsupportedVersion
	}
	_, kdf, aead := suite()
	enc, ct := sealed[1:1+EncapsulatedKeySize], sealed[1+EncapsulatedKeySize:]
	rc, err := hpke.NewRecipient(enc, r.key.k, kdf, aead, r.info)
	if err != nil {
		return nil, nil, ErrOpen
	}
	req, err = rc.Open([]byte(account), ct)
	if err != nil {
		return nil, nil, ErrOpen
	}
	secret, err := rc.Export(responseContext, 32)
	if err != nil {
		return nil, nil, fmt.Errorf("channel: deriving the response secret: %w", err)
	}
	return req, &Responder{r: responseKeys{secret: secret, enc: bytes.Clone(enc)}}, nil
}

// Responder seals responses to an opened request.
type Responder struct {
	r responseKeys
}

// Seal seals a response to the request with the given request id. Each call
// draws a fresh random response nonce, so answering one request more than
// once (a replay, a retry) never reuses a key and nonce.
func (r *Responder) Seal(resp, requestID []byte) ([]byte, error) {
	out := make([]byte, 1+ResponseNonceSize, ResponseOverhead+len(resp))
	out[0] = Version
	rand.Read(out[1:])
	aead, nonce, err := r.r.aead(out[1:])
	if err != nil {
		return nil, fmt.Errorf("channel: deriving the response key: %w", err)
	}
	return aead.Seal(out, nonce, resp, requestID), nil
}
