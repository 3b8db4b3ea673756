package pake

import (
	"bytes"
	"crypto/subtle"
	"fmt"

	"github.com/bytemare/ecc"
	"github.com/bytemare/opaque"
	"github.com/bytemare/opaque/message"
)

// ServerKeys are the vault fleet's OPAQUE secrets, made once at the key
// ceremony and shared by every replica: the global OPRF seed from which each
// record's OPRF key is derived (with its credential identifier) and the AKE
// key pair. PublicKey is published in the fleet bundle.
//
// In protocol version 2 (threshold OPRF, package toprf) no replica holds an
// OPRF seed: OPRFSeed is nil, the v1 methods that evaluate the OPRF
// themselves (RegistrationResponse, GenerateKE2, FakeKE2) return
// ErrNoOPRFSeed, and the *FromEvaluation methods are used instead.
type ServerKeys struct {
	OPRFSeed   []byte // OPRFSeedSize bytes, or nil (protocol v2)
	PrivateKey []byte // PrivateKeySize bytes, a ristretto255 scalar
	PublicKey  []byte // PublicKeySize bytes, a ristretto255 element
}

// GenerateServerKeys makes fresh fleet keys from crypto/rand.
func GenerateServerKeys() (*ServerKeys, error) {
	conf := coffer.conf
	sk, pk := conf.KeyGen()
	keys := &ServerKeys{
		OPRFSeed:   conf.GenerateOPRFSeed(),
		PrivateKey: sk.Encode(),
		PublicKey:  pk.Encode(),
	}
	sk.Zero()
	return keys, nil
}

// Zero overwrites the secret parts of the keys.
func (k *ServerKeys) Zero() {
	clear(k.OPRFSeed)
	clear(k.PrivateKey)
}

// Server is the vault's half of OPAQUE, built once from the fleet keys. It
// keeps no per-client state and is safe for concurrent use.
type Server struct {
	suite *suite
	srv   *opaque.Server
	// fake is the record behind FakeKE2, made once per Server as RFC 9807
	// §6.3.2.2 recommends (random public key and masking key, zero
	// envelope), so a fake login costs what a real one does.
	fake *message.RegistrationRecord
	// fakeRecord is fake, encoded, for FakeKE2FromEvaluation.
	fakeRecord []byte
	// noSeed is true for a protocol-v2 Server without an OPRF seed.
	noSeed bool
}

// NewServer checks the keys (sizes, a valid scalar, the public key matching
// it) and returns a Server using them. It keeps its own copy of the keys.
func NewServer(keys *ServerKeys) (*Server, error) {
	return newServer(coffer, keys)
}

func newServer(s *suite, keys *ServerKeys) (*Server, error) {
	if keys == nil {
		return nil, fmt.Errorf("%w: nil server keys", ErrMalformed)
	}
	if (keys.OPRFSeed != nil && len(keys.OPRFSeed) != OPRFSeedSize) || len(keys.PrivateKey) != PrivateKeySize || len(keys.PublicKey) != PublicKeySize {
		return nil, fmt.Errorf("%w: server keys have the wrong sizes", ErrMalformed)
	}
	srv, err := s.conf.Server()
	if err != nil {
		return nil, fmt.Errorf("pake: configuration: %w", err)
	}
	sk, err := srv.Deserialize.DecodePrivateKey(keys.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("%w: server private key", ErrMalformed)
	}
	pk, err := decodeElement(s.group(), keys.PublicKey)
	if err != nil || !pk.Equal(s.group().Base().Multiply(sk)) {
		return nil, fmt.Errorf("%w: server public key does not match the private key", ErrMalformed)
	}
	var seed []byte
	if keys.OPRFSeed != nil {
		seed = bytes.Clone(keys.OPRFSeed)
	}
	err = srv.SetKeyMaterial(&opaque.ServerKeyMaterial{
		PrivateKey:     sk,
		PublicKeyBytes: bytes.Clone(keys.PublicKey),
		OPRFGlobalSeed: seed,
		Identity:       bytes.Clone(s.serverIdentity),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: server keys", ErrMalformed)
	}
	fake, err := s.conf.GetFakeRecord([]byte("coffer fake record"))
	if err != nil {
		return nil, fmt.Errorf("pake: fake record: %w", err)
	}
	return &Server{
		suite:      s,
		srv:        srv,
		fake:       fake.RegistrationRecord,
		fakeRecord: fake.RegistrationRecord.Serialize(),
		noSeed:     seed == nil,
	}, nil
}

// PublicKey returns a copy of the server's AKE public key.
func (s *Server) PublicKey() []byte {
	return bytes.Clone(s.srv.ServerKeyMaterial.PublicKeyBytes)
}

// RegistrationResponse answers a client's RegistrationRequest for the
// record that will have credential identifier credID (see CredentialID):
// it evaluates the OPRF under the key derived from the OPRF seed and credID.
func (s *Server) RegistrationResponse(credID, request []byte) ([]byte, error) {
	if s.noSeed {
		return nil, ErrNoOPRFSeed
	}
	if len(credID) == 0 {
		return nil, ErrCredentialID
	}
	req, err := s.srv.Deserialize.RegistrationRequest(request)
	if err != nil {
		return nil, fmt.Errorf("%w: registration request", ErrMalformed)
	}
	resp, err := s.srv.RegistrationResponse(req, credID, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: registration request", ErrMalformed)
	}
	return resp.Serialize(), nil
}

// GenerateKE2 answers a client's KE1 for the stored record with credential
// identifier credID. It returns KE2 for the client and the client MAC a
// valid KE3 must carry; the caller keeps expectedClientMAC (it is secret: it
// authenticates the client) and checks KE3 with VerifyKE3. The server's
// session key is not returned: Coffer does not use it.
func (s *Server) GenerateKE2(credID, record, ke1 []byte) (ke2, expectedClientMAC []byte, err error) {
	return s.generateKE2(credID, record, ke1, nil)
}

// FakeKE2 answers a KE1 for an account that has no record (RFC 9807 §10.9):
// the KE2 has the size and shape of a real one and is computed the same way,
// with the OPRF key derived from credID as for a real record, so nobody who
// does not know a registered password can tell the difference. The client
// cannot complete the login (it gets ErrWrongPassword); expectedClientMAC is
// returned so the caller can treat the login exactly like a real one, and no
// KE3 will ever match it.
func (s *Server) FakeKE2(credID, ke1 []byte) (ke2, expectedClientMAC []byte, err error) {
	if s.noSeed {
		return nil, nil, ErrNoOPRFSeed
	}
	if len(credID) == 0 {
		return nil, nil, ErrCredentialID
	}
	m, err := s.srv.Deserialize.KE1(ke1)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: KE1", ErrMalformed)
	}
	return s.respond(credID, s.fake, m, nil)
}

func (s *Server) generateKE2(credID, record, ke1 []byte, opts *opaque.ServerOptions) ([]byte, []byte, error) {
	if s.noSeed {
		return nil, nil, ErrNoOPRFSeed
	}
	if len(credID) == 0 {
		return nil, nil, ErrCredentialID
	}
	rec, err := s.srv.Deserialize.RegistrationRecord(record)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: record", ErrMalformed)
	}
	m, err := s.srv.Deserialize.KE1(ke1)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: KE1", ErrMalformed)
	}
	return s.respond(credID, rec, m, opts)
}

func (s *Server) respond(credID []byte, rec *message.RegistrationRecord, ke1 *message.KE1, opts *opaque.ServerOptions) ([]byte, []byte, error) {
	var options []*opaque.ServerOptions
	if opts != nil {
		options = append(options, opts)
	}
	ke2, out, err := s.srv.GenerateKE2(ke1, &opaque.ClientRecord{
		RegistrationRecord:   rec,
		CredentialIdentifier: credID,
		ClientIdentity:       s.suite.clientIdentity,
	}, options...)
	if err != nil {
		// KE1 and the record were decoded above; what is left is their
		// validity as group elements (e.g. the identity element).
		return nil, nil, fmt.Errorf("%w: KE1 or record", ErrMalformed)
	}
	clear(out.SessionSecret)
	return ke2.Serialize(), out.ClientMAC, nil
}

// VerifyKE3 reports, in constant time, whether ke3 carries the expected
// client MAC that GenerateKE2 returned, i.e. whether the client knew the
// password. It is false for inputs of the wrong size and for an all-zero
// expected MAC (which GenerateKE2 never returns, but a zeroed or missing
// pending login would hold).
func VerifyKE3(ke3, expectedClientMAC []byte) bool {
	if len(ke3) != KE3Size || len(expectedClientMAC) != KE3Size || isAllZero(expectedClientMAC) {
		return false
	}
	return subtle.ConstantTimeCompare(ke3, expectedClientMAC) == 1
}

// ValidateRecord checks a RegistrationRecord uploaded by a client before the
// vault stores it: the size, a client public key that is a valid non-identity
// ristretto255 element, a non-zero masking key, and a non-zero envelope (an
// all-zero envelope is what fake records have).
func ValidateRecord(record []byte) error {
	if len(record) != RecordSize {
		return fmt.Errorf("%w: record is %d bytes, want %d", ErrMalformed, len(record), RecordSize)
	}
	g := coffer.group()
	if _, err := decodeElement(g, record[:PublicKeySize]); err != nil {
		return fmt.Errorf("%w: record: client public key", ErrMalformed)
	}
	maskingKey := record[PublicKeySize : PublicKeySize+64]
	envelope := record[PublicKeySize+64:]
	if isAllZero(maskingKey) {
		return fmt.Errorf("%w: record: zero masking key", ErrMalformed)
	}
	if isAllZero(envelope[:32]) || isAllZero(envelope[32:]) {
		return fmt.Errorf("%w: record: zero envelope", ErrMalformed)
	}
	return nil
}

// decodeElement decodes a group element and refuses the identity.
func decodeElement(g ecc.Group, b []byte) (*ecc.Element, error) {
	e, err := opaque.DeserializeElement(g, b)
	if err != nil {
		return nil, err
	}
	if e.IsIdentity() {
		return nil, fmt.Errorf("%w: identity element", ErrMalformed)
	}
	return e, nil
}
