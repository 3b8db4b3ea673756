package pake

// Server-side RFC 9807 messages assembled from an OPRF evaluation made
// elsewhere (PROTOCOL.md, "Version 2"): with the threshold OPRF of
// package toprf, no vault process holds a record's OPRF key; the fleet
// combines partial evaluations into the evaluated element Z = k·B and this
// file builds the RegistrationResponse and KE2 around Z.
//
// bytemare/opaque cannot do this: it takes the OPRF key as a scalar and
// evaluates itself. So this file composes RFC 9807's server functions
// directly, section by section, from ristretto255 (github.com/bytemare/ecc),
// crypto/hkdf, crypto/hmac and crypto/sha512:
//
//	CreateRegistrationResponse  RFC 9807 §5.2.2 (minus BlindEvaluate)
//	CreateCredentialResponse    RFC 9807 §6.3.2.2 (minus BlindEvaluate)
//	CreateCleartextCredentials  RFC 9807 §4.1.2 (default identities)
//	AuthServerRespond (3DH)     RFC 9807 §6.4.4
//	Preamble, DeriveKeys        RFC 9807 §6.4.2.1, §6.4.2.2
//	Expand-Label, Derive-Secret RFC 9807 §6.4.2.1 (after RFC 8446 §7.1)
//	DeriveDiffieHellmanKeyPair  RFC 9807 §6.4.1.1 = RFC 9497 §3.2 DeriveKeyPair
//
// The RFC's Appendix C vectors (vectors_test.go) and bytemare's own
// GenerateKE2 (evaluated_test.go) check every byte.

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha512"
	"encoding/binary"
	"fmt"

	"github.com/bytemare/ecc"
)

// Lengths of RFC 9807 for ristretto255-SHA512 (§7, Appendix C): Nn nonce,
// Nseed key-share seed, Nm MAC, Nx KDF output, Npk/Noe public key and
// OPRF element, Nh hash output, and the envelope (Nn + Nm).
const (
	nn           = 32
	nseed        = 32
	nm           = 64
	nx           = 64
	npk          = 32
	noe          = 32
	envelopeSize = nn + nm
	maskingSize  = 64
	credRespSize = noe + nn + npk + envelopeSize // CredentialResponse: 192
)

// oprfContextString is RFC 9497 §3.1's contextString for ristretto255-SHA512
// in modeOPRF: "OPRFV1-" || I2OSP(0x00, 1) || "-" || "ristretto255-SHA512".
// RFC 9807 §6.4.1.1 derives the 3DH key shares with RFC 9497's
// DeriveKeyPair, whose DST is "DeriveKeyPair" || contextString.
const oprfContextString = "OPRFV1-\x00-ristretto255-SHA512"

// EvaluatedElementSize is the size of an encoded OPRF evaluation (Noe).
const EvaluatedElementSize = noe

// ke2Randomness is what AuthServerRespond and CreateCredentialResponse draw
// at random; the vector tests inject it.
type ke2Randomness struct {
	maskingNonce, keyshareSeed, serverNonce []byte
}

func freshKE2Randomness() *ke2Randomness {
	r := &ke2Randomness{
		maskingNonce: make([]byte, nn),
		keyshareSeed: make([]byte, nseed),
		serverNonce:  make([]byte, nn),
	}
	// crypto/rand.Read never fails (Go 1.24+).
	rand.Read(r.maskingNonce)
	rand.Read(r.keyshareSeed)
	rand.Read(r.serverNonce)
	return r
}

// BlindedElement returns the blinded element of a KE1 (its first 32 bytes,
// RFC 9807 §6.1 CredentialRequest.blinded_message) after checking KE1's
// size and that its two group elements are valid non-identity ristretto255
// encodings. This is the element the fleet evaluates for KE2FromEvaluation.
func BlindedElement(ke1 []byte) ([]byte, error) {
	if _, _, err := decodeKE1(ke1); err != nil {
		return nil, err
	}
	return append([]byte(nil), ke1[:noe]...), nil
}

// RegistrationBlindedElement returns the blinded element of a
// RegistrationRequest (RFC 9807 §5.1: it is the whole request) after
// checking it is a valid non-identity ristretto255 encoding.
func RegistrationBlindedElement(request []byte) ([]byte, error) {
	if len(request) != RegistrationRequestSize {
		return nil, fmt.Errorf("%w: registration request is %d bytes, want %d", ErrMalformed, len(request), RegistrationRequestSize)
	}
	if _, err := decodeElement(coffer.group(), request); err != nil {
		return nil, fmt.Errorf("%w: registration request", ErrMalformed)
	}
	return append([]byte(nil), request...), nil
}

// RegistrationResponseFromEvaluation is RFC 9807 §5.2.2
// CreateRegistrationResponse with BlindEvaluate done elsewhere: the
// response is evaluated ‖ server_public_key. evaluated must be a valid
// non-identity ristretto255 element (the combined evaluation of the
// request's blinded element under the account's OPRF key).
func (s *Server) RegistrationResponseFromEvaluation(evaluated []byte) ([]byte, error) {
	if _, err := decodeEvaluated(s.suite.group(), evaluated); err != nil {
		return nil, err
	}
	out := make([]byte, 0, RegistrationResponseSize)
	out = append(out, evaluated...)
	return append(out, s.srv.ServerKeyMaterial.PublicKeyBytes...), nil
}

// KE2FromEvaluation answers a client's KE1 for a stored record like
// GenerateKE2, except that the OPRF evaluation of KE1's blinded element
// (BlindedElement) is given, combined by the fleet, instead of computed from
// the OPRF seed. It returns KE2 and the client MAC a valid KE3 carries (keep
// it secret; check KE3 with VerifyKE3). No credential identifier is needed:
// in RFC 9807 it only selects the OPRF key, which the evaluation already
// applied.
func (s *Server) KE2FromEvaluation(record, ke1, evaluated []byte) (ke2, expectedClientMAC []byte, err error) {
	ke2, mac, sk, err := s.ke2FromEvaluation(record, ke1, evaluated, freshKE2Randomness())
	clear(sk)
	return ke2, mac, err
}

// FakeKE2FromEvaluation is FakeKE2 for the threshold path (RFC 9807 §10.9):
// KE2 is built around the fleet's evaluation (under the fake account's key)
// and the Server's fake record, so it has the size, shape and cost of a real
// one, and no KE3 will ever match the returned MAC.
func (s *Server) FakeKE2FromEvaluation(ke1, evaluated []byte) (ke2, expectedClientMAC []byte, err error) {
	ke2, mac, sk, err := s.ke2FromEvaluation(s.fakeRecord, ke1, evaluated, freshKE2Randomness())
	clear(sk)
	return ke2, mac, err
}

// ke2FromEvaluation is RFC 9807 §6.2.2 GenerateKE2 from an evaluated
// element. It also returns the server's session key (for tests; Coffer
// does not use it).
func (s *Server) ke2FromEvaluation(record, ke1, evaluated []byte, rnd *ke2Randomness) (ke2, expectedClientMAC, sessionKey []byte, err error) {
	g := s.suite.group()
	if len(record) != RecordSize {
		return nil, nil, nil, fmt.Errorf("%w: record is %d bytes, want %d", ErrMalformed, len(record), RecordSize)
	}
	clientPublicKey, err := decodeElement(g, record[:npk])
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: record: client public key", ErrMalformed)
	}
	maskingKey := record[npk : npk+maskingSize]
	envelope := record[npk+maskingSize:]
	_, clientKeyshare, err := decodeKE1(ke1)
	if err != nil {
		return nil, nil, nil, err
	}
	if _, err := decodeEvaluated(g, evaluated); err != nil {
		return nil, nil, nil, err
	}
	serverPublicKey := s.srv.ServerKeyMaterial.PublicKeyBytes

	// CreateCredentialResponse (§6.3.2.2), after BlindEvaluate:
	//   credential_response_pad = Expand(record.masking_key,
	//       concat(masking_nonce, "CredentialResponsePad"), Npk + Nn + Nm)
	//   masked_response = xor(credential_response_pad,
	//       concat(server_public_key, record.envelope))
	pad, err := hkdf.Expand(sha512.New, maskingKey, string(rnd.maskingNonce)+"CredentialResponsePad", npk+envelopeSize)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("pake: masking: %w", err)
	}
	credResp := make([]byte, 0, credRespSize)
	credResp = append(credResp, evaluated...)
	credResp = append(credResp, rnd.maskingNonce...)
	plain := append(append(make([]byte, 0, npk+envelopeSize), serverPublicKey...), envelope...)
	for i := range pad {
		pad[i] ^= plain[i]
	}
	credResp = append(credResp, pad...)

	// CreateCleartextCredentials (§4.1.2) with the default identities:
	// server_identity = server_public_key, client_identity =
	// client_public_key (explicit ones only in the RFC vectors).
	serverIdentity := s.suite.serverIdentity
	if serverIdentity == nil {
		serverIdentity = serverPublicKey
	}
	clientIdentity := s.suite.clientIdentity
	if clientIdentity == nil {
		clientIdentity = record[:npk]
	}

	// AuthServerRespond (§6.4.4).
	ske, serverKeyshare, err := deriveDiffieHellmanKeyPair(g, rnd.keyshareSeed)
	if err != nil {
		return nil, nil, nil, err
	}
	defer ske.Zero()
	preamble := s.preamble(clientIdentity, ke1, serverIdentity, credResp, rnd.serverNonce, serverKeyshare)

	sks := s.srv.ServerKeyMaterial.PrivateKey
	// dh1 = DH(server_private_keyshare, client_public_keyshare)
	// dh2 = DH(server_private_key,      client_public_keyshare)
	// dh3 = DH(server_private_keyshare, client_public_key)
	ikm := make([]byte, 0, 3*npk)
	ikm = append(ikm, clientKeyshare.Copy().Multiply(ske).Encode()...)
	ikm = append(ikm, clientKeyshare.Copy().Multiply(sks).Encode()...)
	ikm = append(ikm, clientPublicKey.Copy().Multiply(ske).Encode()...)
	defer clear(ikm)

	km2, km3, sessionKey, err := deriveKeys(ikm, preamble)
	if err != nil {
		return nil, nil, nil, err
	}
	defer clear(km2)
	defer clear(km3)
	preambleHash := sha512.Sum512(preamble)
	serverMAC := mac(km2, preambleHash[:])
	// expected_client_mac = MAC(Km3, Hash(concat(preamble, server_mac)))
	h := sha512.New()
	h.Write(preamble)
	h.Write(serverMAC)
	expectedClientMAC = mac(km3, h.Sum(nil))

	// KE2 = CredentialResponse ‖ AuthResponse{server_nonce,
	// server_public_keyshare, server_mac} (§6.1).
	ke2 = make([]byte, 0, KE2Size)
	ke2 = append(ke2, credResp...)
	ke2 = append(ke2, rnd.serverNonce...)
	ke2 = append(ke2, serverKeyshare...)
	ke2 = append(ke2, serverMAC...)
	return ke2, expectedClientMAC, sessionKey, nil
}

// preamble is RFC 9807 §6.4.2.1 Preamble:
//
//	concat("OPAQUEv1-", I2OSP(len(context), 2), context,
//	       I2OSP(len(client_identity), 2), client_identity, ke1,
//	       I2OSP(len(server_identity), 2), server_identity,
//	       credential_response, server_nonce, server_public_keyshare)
func (s *Server) preamble(clientIdentity, ke1, serverIdentity, credResp, serverNonce, serverKeyshare []byte) []byte {
	ctx := s.suite.conf.Context
	p := make([]byte, 0, 9+2+len(ctx)+2+len(clientIdentity)+len(ke1)+2+len(serverIdentity)+len(credResp)+len(serverNonce)+len(serverKeyshare))
	p = append(p, "OPAQUEv1-"...)
	p = binary.BigEndian.AppendUint16(p, uint16(len(ctx)))
	p = append(p, ctx...)
	p = binary.BigEndian.AppendUint16(p, uint16(len(clientIdentity)))
	p = append(p, clientIdentity...)
	p = append(p, ke1...)
	p = binary.BigEndian.AppendUint16(p, uint16(len(serverIdentity)))
	p = append(p, serverIdentity...)
	p = append(p, credResp...)
	p = append(p, serverNonce...)
	return append(p, serverKeyshare...)
}

// deriveKeys is RFC 9807 §6.4.2.2 DeriveKeys:
//
//	prk = Extract("", ikm)
//	handshake_secret = Derive-Secret(prk, "HandshakeSecret", Hash(preamble))
//	session_key = Derive-Secret(prk, "SessionKey", Hash(preamble))
//	Km2 = Derive-Secret(handshake_secret, "ServerMAC", "")
//	Km3 = Derive-Secret(handshake_secret, "ClientMAC", "")
func deriveKeys(ikm, preamble []byte) (km2, km3, sessionKey []byte, err error) {
	prk, err := hkdf.Extract(sha512.New, ikm, nil)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("pake: key schedule: %w", err)
	}
	defer clear(prk)
	ph := sha512.Sum512(preamble)
	hs, err := expandLabel(prk, "HandshakeSecret", ph[:], nx)
	if err != nil {
		return nil, nil, nil, err
	}
	defer clear(hs)
	if sessionKey, err = expandLabel(prk, "SessionKey", ph[:], nx); err != nil {
		return nil, nil, nil, err
	}
	if km2, err = expandLabel(hs, "ServerMAC", nil, nx); err != nil {
		return nil, nil, nil, err
	}
	if km3, err = expandLabel(hs, "ClientMAC", nil, nx); err != nil {
		return nil, nil, nil, err
	}
	return km2, km3, sessionKey, nil
}

// expandLabel is RFC 9807 §6.4.2.1 Expand-Label (Derive-Secret is
// Expand-Label with Length = Nx):
//
//	Expand(Secret, CustomLabel, Length), CustomLabel = struct {
//	    uint16 length = Length;
//	    opaque label<8..255> = "OPAQUE-" + Label;
//	    uint8 context<0..255> = Context; }
func expandLabel(secret []byte, label string, context []byte, length int) ([]byte, error) {
	full := "OPAQUE-" + label
	info := make([]byte, 0, 2+1+len(full)+1+len(context))
	info = binary.BigEndian.AppendUint16(info, uint16(length))
	info = append(info, byte(len(full)))
	info = append(info, full...)
	info = append(info, byte(len(context)))
	info = append(info, context...)
	out, err := hkdf.Expand(sha512.New, secret, string(info), length)
	if err != nil {
		return nil, fmt.Errorf("pake: key schedule: %w", err)
	}
	return out, nil
}

// mac is RFC 9807's MAC: HMAC-SHA-512 (RFC 2104).
func mac(key, msg []byte) []byte {
	m := hmac.New(sha512.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// deriveDiffieHellmanKeyPair is RFC 9807 §6.4.1.1: RFC 9497 §3.2
// DeriveKeyPair(seed, "OPAQUE-DeriveDiffieHellmanKeyPair"):
//
//	deriveInput = seed || I2OSP(len(info), 2) || info
//	skS = G.HashToScalar(deriveInput || I2OSP(counter, 1),
//	                     DST = "DeriveKeyPair" || contextString)
//	(repeated with counter = 0, 1, … while skS == 0)
//	pkS = G.ScalarMultGen(skS)
func deriveDiffieHellmanKeyPair(g ecc.Group, seed []byte) (*ecc.Scalar, []byte, error) {
	return deriveKeyPair(g, seed, "OPAQUE-DeriveDiffieHellmanKeyPair")
}

// deriveKeyPair is RFC 9497 §3.2 DeriveKeyPair(seed, info) in modeOPRF.
func deriveKeyPair(g ecc.Group, seed []byte, info string) (*ecc.Scalar, []byte, error) {
	in := make([]byte, 0, len(seed)+2+len(info)+1)
	in = append(in, seed...)
	in = binary.BigEndian.AppendUint16(in, uint16(len(info)))
	in = append(in, info...)
	in = append(in, 0)
	dst := []byte("DeriveKeyPair" + oprfContextString)
	for counter := 0; counter <= 255; counter++ {
		in[len(in)-1] = byte(counter)
		sk := g.HashToScalar(in, dst)
		if !sk.IsZero() {
			return sk, g.Base().Multiply(sk).Encode(), nil
		}
	}
	return nil, nil, fmt.Errorf("pake: DeriveKeyPairError")
}

// decodeKE1 checks a KE1's size and decodes its blinded element and client
// key share, refusing the identity.
func decodeKE1(ke1 []byte) (blinded, clientKeyshare *ecc.Element, err error) {
	if len(ke1) != KE1Size {
		return nil, nil, fmt.Errorf("%w: KE1 is %d bytes, want %d", ErrMalformed, len(ke1), KE1Size)
	}
	g := coffer.group()
	if blinded, err = decodeElement(g, ke1[:noe]); err != nil {
		return nil, nil, fmt.Errorf("%w: KE1: blinded element", ErrMalformed)
	}
	if clientKeyshare, err = decodeElement(g, ke1[noe+nn:]); err != nil {
		return nil, nil, fmt.Errorf("%w: KE1: client key share", ErrMalformed)
	}
	return blinded, clientKeyshare, nil
}

func decodeEvaluated(g ecc.Group, evaluated []byte) (*ecc.Element, error) {
	if len(evaluated) != EvaluatedElementSize {
		return nil, fmt.Errorf("%w: evaluated element is %d bytes, want %d", ErrMalformed, len(evaluated), EvaluatedElementSize)
	}
	e, err := decodeElement(g, evaluated)
	if err != nil {
		return nil, fmt.Errorf("%w: evaluated element", ErrMalformed)
	}
	return e, nil
}
