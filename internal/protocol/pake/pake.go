// Package pake is the one place Coffer configures OPAQUE (RFC 9807), the
// password-authenticated key exchange between a device and the vault fleet
// (PROTOCOL.md, section 1).
//
// The configuration is fixed: OPRF ristretto255-SHA512, 3DH over
// ristretto255, HKDF-SHA-512 / HMAC-SHA-512 / SHA-512, Argon2id key
// stretching with a salt of 16 zero bytes and a 64-byte output, the empty
// context, and the default identities (the parties' public keys).
// Only the Argon2id cost (KSF) varies; it is stored with each account.
//
// The package has a client half (Client, RegistrationState, LoginState) and a
// server half (Server, ServerKeys, VerifyKE3, ValidateRecord). Both halves are
// pure computation over byte slices — no networking, no storage — so the
// client can use this package without importing anything of the vault, and
// the vault stays stateless across the two halves of a login: GenerateKE2
// returns the client MAC the vault must keep (in its replicated state) and
// check with VerifyKE3.
//
// Every decoder rejects malformed input with an error wrapping ErrMalformed;
// no input makes it panic. Errors never contain passwords, keys or other
// secrets.
package pake

import (
	"crypto"
	"encoding/binary"
	"errors"

	"github.com/bytemare/ecc"
	bksf "github.com/bytemare/ksf"
	"github.com/bytemare/opaque"
)

// Context is the RFC 9807 context string bound into every Coffer handshake:
// empty, as in @serenity-kit/opaque (which cannot set it) and opaque-ke's
// default. Protocol v1.1 and earlier used "coffer vault v1"; the binding to
// the fleet is carried by the HPKE info and the fleet's keys (PROTOCOL.md
// §1, "Context"). The context enters only the AKE preamble, so records
// registered under the old context log in unchanged.
const Context = ""

// ContextV1 is the context of protocol v1.1 and earlier, kept for the test
// that shows their records still log in.
const ContextV1 = "coffer vault v1"

// Sizes of the RFC 9807 messages in Coffer's configuration, in bytes.
const (
	RegistrationRequestSize  = 32
	RegistrationResponseSize = 64
	RecordSize               = 192
	KE1Size                  = 96
	KE2Size                  = 320
	KE3Size                  = 64
	ExportKeySize            = 64
	SessionKeySize           = 64
	PublicKeySize            = 32
	PrivateKeySize           = 32
	OPRFSeedSize             = 64
)

// ksfSaltSize and ksfOutputSize are RFC 9807's Argon2id salt (all zeros) and
// output length Nh.
const (
	ksfSaltSize   = 16
	ksfOutputSize = 64
)

var (
	// ErrWrongPassword means the server's response did not authenticate
	// under this password: the envelope did not open or the server's MAC
	// did not verify. It is also what an account without a record looks like
	// (the vault answers with a fake record).
	ErrWrongPassword = errors.New("pake: wrong password")

	// ErrMalformed is wrapped by every error about a message, record or key
	// that cannot be decoded or is not a valid group element.
	ErrMalformed = errors.New("pake: malformed input")

	// ErrKSF is wrapped by every error about a key-stretching profile that is
	// unknown, invalid, or outside the floor and ceiling of PROTOCOL.md §1.
	ErrKSF = errors.New("pake: key-stretching profile refused")

	// ErrServerKey means a registration response carried a server public key
	// other than the one the client pinned (from the fleet bundle).
	ErrServerKey = errors.New("pake: server public key does not match the pinned key")

	// ErrStateUsed means a RegistrationState or LoginState was finished (or
	// cleared) already; every exchange starts afresh.
	ErrStateUsed = errors.New("pake: exchange state already used")

	// ErrPasswordMismatch means the password given to a Finish call is not
	// the one the exchange was started with.
	ErrPasswordMismatch = errors.New("pake: password differs from the one the exchange started with")

	// ErrEmptyPassword is returned for an empty password.
	ErrEmptyPassword = errors.New("pake: empty password")

	// ErrCredentialID is returned for an empty credential identifier.
	ErrCredentialID = errors.New("pake: empty credential identifier")

	// ErrNoOPRFSeed is returned by the methods that evaluate the OPRF
	// themselves (protocol v1) on a Server made without an OPRF seed
	// (protocol v2, where the fleet evaluates: use the *FromEvaluation
	// methods).
	ErrNoOPRFSeed = errors.New("pake: server has no OPRF seed (threshold OPRF: use the FromEvaluation methods)")
)

// CredentialID returns the RFC 9807 credential_identifier of an account's
// record registered at epoch (PROTOCOL.md §1):
//
//	account || 0x00 || uint64be(epoch)
//
// The vault derives the account's OPRF key from it, so every registration
// epoch has its own OPRF key. The encoding is injective whatever bytes the
// account holds, because the epoch has a fixed width at the end.
func CredentialID(account string, epoch uint64) []byte {
	b := make([]byte, 0, len(account)+9)
	b = append(b, account...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, epoch)
}

// suite is an OPAQUE configuration together with the choices RFC 9807 leaves
// to the application. Coffer uses exactly one (coffer); the RFC test
// vectors need another (an identity KSF, the RFC's context and, in one
// vector, explicit identities), which is why the rest of the package is
// written against a suite rather than against package-level constants.
type suite struct {
	conf *opaque.Configuration
	// argon2 is true when the KSF is Argon2id with Coffer's salt and output
	// length; false means the identity KSF of the RFC vectors.
	argon2 bool
	// clientIdentity and serverIdentity are nil (the default identities) in
	// Coffer.
	clientIdentity, serverIdentity []byte
}

var coffer = newSuite(&opaque.Configuration{
	OPRF:    opaque.RistrettoSha512,
	AKE:     opaque.RistrettoSha512,
	KSF:     bksf.Argon2id,
	KDF:     crypto.SHA512,
	MAC:     crypto.SHA512,
	Hash:    crypto.SHA512,
	Context: []byte(Context),
}, true, nil, nil)

func newSuite(conf *opaque.Configuration, argon2 bool, clientIdentity, serverIdentity []byte) *suite {
	return &suite{
		conf:           conf,
		argon2:         argon2,
		clientIdentity: clientIdentity,
		serverIdentity: serverIdentity,
	}
}

// group is the OPRF and AKE group (the same in every suite used here).
func (s *suite) group() ecc.Group { return s.conf.AKE.Group() }

// ksfOptions returns the client options that make the KSF computation what
// PROTOCOL.md §1 says. They must be identical at registration and at every
// login, or the envelope will not open.
func (s *suite) ksfOptions(k KSF) *opaque.ClientOptions {
	if !s.argon2 {
		return &opaque.ClientOptions{}
	}
	return &opaque.ClientOptions{
		KSFSalt:       make([]byte, ksfSaltSize),
		KSFParameters: []uint64{uint64(k.Time), uint64(k.MemoryKiB), uint64(k.Threads)},
		KSFLength:     ksfOutputSize,
	}
}

func (s *suite) newClient() *opaque.Client {
	c, err := s.conf.Client()
	if err != nil {
		// The configurations are constants of this package; a failure is a
		// programming error caught by every test.
		panic("pake: invalid OPAQUE configuration: " + err.Error())
	}
	return c
}

// isAllZero reports whether b is all zero bytes, in time that depends only on
// len(b).
func isAllZero(b []byte) bool {
	var acc byte
	for _, x := range b {
		acc |= x
	}
	return acc == 0
}
