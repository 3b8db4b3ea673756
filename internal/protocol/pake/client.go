package pake

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/bytemare/ecc"
	"github.com/bytemare/opaque"
)

// Client is the device's half of OPAQUE. The zero value is the production
// policy; it is safe for concurrent use (it holds no per-exchange state: each
// exchange has its own RegistrationState or LoginState).
type Client struct {
	// ServerPublicKey, if set, is the vault's OPAQUE public key as pinned by
	// the fleet bundle; RegistrationFinish refuses a response carrying any
	// other key. (A login needs no such check: the envelope binds the key
	// the record was registered with.)
	ServerPublicKey []byte

	// AllowWeakKSF accepts key-stretching profiles below the floor of
	// PROTOCOL.md §1 (the ceiling still holds). For tests, load generators
	// and explicitly enabled development setups only: in production, a weak
	// profile at registration makes a record cheap to attack offline for
	// whoever steals the vault's secrets, and one offered at login means
	// the vault is not what it should be.
	AllowWeakKSF bool

	// suite is nil (Coffer's configuration) except in the RFC vector tests.
	suite *suite
}

func (c Client) s() *suite {
	if c.suite == nil {
		return coffer
	}
	return c.suite
}

func (c Client) checkKSF(k KSF) error {
	if !c.s().argon2 {
		return nil
	}
	if c.AllowWeakKSF {
		return k.ValidateAllowWeak()
	}
	return k.Validate()
}

// RegistrationState is what a client keeps between RegistrationStart and
// RegistrationFinish: the OPRF blind (secret) and the request sent. It is
// used once; Clear wipes it. It is not safe for concurrent use.
type RegistrationState struct {
	blind   *ecc.Scalar
	request []byte
}

// Clear wipes the state. RegistrationFinish clears it too.
func (st *RegistrationState) Clear() {
	if st == nil {
		return
	}
	if st.blind != nil {
		st.blind.Zero()
		st.blind = nil
	}
	st.request = nil
}

// LoginState is what a client keeps between LoginStart and LoginFinish: the
// OPRF blind, the seed of its ephemeral AKE key, its nonce (all secret) and
// KE1. It is used once; Clear wipes it. It is not safe for concurrent use.
type LoginState struct {
	blind *ecc.Scalar
	seed  []byte
	nonce []byte
	ke1   []byte
}

// Clear wipes the state. LoginFinish clears it too.
func (st *LoginState) Clear() {
	if st == nil {
		return
	}
	if st.blind != nil {
		st.blind.Zero()
		st.blind = nil
	}
	clear(st.seed)
	st.seed, st.nonce, st.ke1 = nil, nil, nil
}

// RegistrationStart blinds the password and returns the state to keep and
// the RegistrationRequest (RegistrationRequestSize bytes) for the vault.
// The state does not hold the password: pass it again to RegistrationFinish.
func (c Client) RegistrationStart(password []byte) (*RegistrationState, []byte, error) {
	return c.registrationStart(password, nil)
}

func (c Client) registrationStart(password []byte, blind *ecc.Scalar) (*RegistrationState, []byte, error) {
	if len(password) == 0 {
		return nil, nil, ErrEmptyPassword
	}
	s := c.s()
	if blind == nil {
		blind = s.group().NewScalar().Random()
	}
	cl := s.newClient()
	defer cl.ClearState()
	req, err := cl.RegistrationInit(password, &opaque.ClientOptions{OPRFBlind: blind.Copy()})
	if err != nil {
		return nil, nil, fmt.Errorf("pake: registration start: %w", err)
	}
	request := req.Serialize()
	return &RegistrationState{blind: blind, request: request}, request, nil
}

// RegistrationFinish completes a registration with the vault's
// RegistrationResponse. It stretches the password with ksf, which must be
// the profile the vault stores with the record. It returns the
// RegistrationRecord (RecordSize bytes) for the vault and the export key
// (ExportKeySize bytes, secret) from which the client derives the key that
// wraps the backup key (package keywrap). The state is cleared, whatever the
// outcome.
func (c Client) RegistrationFinish(st *RegistrationState, password, response []byte, ksf KSF) (record, exportKey []byte, err error) {
	return c.registrationFinish(st, password, response, ksf, nil)
}

func (c Client) registrationFinish(st *RegistrationState, password, response []byte, ksf KSF, envelopeNonce []byte) ([]byte, []byte, error) {
	if st == nil || st.blind == nil {
		return nil, nil, ErrStateUsed
	}
	defer st.Clear()
	if err := c.checkKSF(ksf); err != nil {
		return nil, nil, err
	}
	s := c.s()
	cl := s.newClient()
	defer cl.ClearState()

	// Blinding the password again with the same blind must give the same
	// request; otherwise the password is not the one the exchange began with
	// and the record would be unusable.
	req, err := cl.RegistrationInit(password, &opaque.ClientOptions{OPRFBlind: st.blind.Copy()})
	if err != nil {
		return nil, nil, fmt.Errorf("pake: registration finish: %w", err)
	}
	if subtle.ConstantTimeCompare(req.Serialize(), st.request) != 1 {
		return nil, nil, ErrPasswordMismatch
	}

	resp, err := cl.Deserialize.RegistrationResponse(response)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: registration response", ErrMalformed)
	}
	if resp.EvaluatedMessage.IsIdentity() {
		return nil, nil, fmt.Errorf("%w: registration response", ErrMalformed)
	}
	if _, err := decodeElement(s.group(), resp.ServerPublicKey); err != nil {
		return nil, nil, fmt.Errorf("%w: registration response: server public key", ErrMalformed)
	}
	if c.ServerPublicKey != nil && subtle.ConstantTimeCompare(resp.ServerPublicKey, c.ServerPublicKey) != 1 {
		return nil, nil, ErrServerKey
	}

	opts := s.ksfOptions(ksf)
	opts.RegistrationEnvelopeNonce = envelopeNonce
	rec, exportKey, err := cl.RegistrationFinalize(resp, s.clientIdentity, s.serverIdentity, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: registration response", ErrMalformed)
	}
	return rec.Serialize(), exportKey, nil
}

// LoginStart blinds the password and returns the state to keep and KE1
// (KE1Size bytes) for the vault. The state does not hold the password: pass
// it again to LoginFinish.
func (c Client) LoginStart(password []byte) (*LoginState, []byte, error) {
	seed := make([]byte, 32)
	nonce := make([]byte, 32)
	// crypto/rand.Read never fails (Go 1.24+).
	rand.Read(seed)
	rand.Read(nonce)
	return c.loginStart(password, nil, seed, nonce)
}

func (c Client) loginStart(password []byte, blind *ecc.Scalar, seed, nonce []byte) (*LoginState, []byte, error) {
	if len(password) == 0 {
		return nil, nil, ErrEmptyPassword
	}
	s := c.s()
	if blind == nil {
		blind = s.group().NewScalar().Random()
	}
	st := &LoginState{blind: blind, seed: seed, nonce: nonce}
	cl := s.newClient()
	defer cl.ClearState()
	ke1, err := st.prime(cl, password)
	if err != nil {
		st.Clear()
		return nil, nil, err
	}
	st.ke1 = ke1
	return st, ke1, nil
}

// prime computes KE1 from the state's secrets and password on cl, which is
// then ready for GenerateKE3. The caller clears cl's state.
func (st *LoginState) prime(cl *opaque.Client, password []byte) ([]byte, error) {
	m, err := cl.GenerateKE1(password, &opaque.ClientOptions{
		OPRFBlind: st.blind.Copy(),
		AKE:       &opaque.AKEOptions{SecretKeyShareSeed: st.seed, Nonce: st.nonce},
	})
	if err != nil {
		return nil, fmt.Errorf("pake: login: %w", err)
	}
	return m.Serialize(), nil
}

// LoginFinish completes a login with the vault's KE2, stretching the
// password with ksf — the profile the vault returned with KE2, checked
// against the floor and ceiling first. It returns KE3 (KE3Size bytes) for
// the vault, the export key (ExportKeySize bytes, the same as at
// registration) and the session key (SessionKeySize bytes). Both keys are
// secret.
//
// If the password is wrong — or the account has no record and the vault
// answered with a fake one — it returns ErrWrongPassword; a KE2 that cannot
// be decoded gives an error wrapping ErrMalformed. The state is cleared,
// whatever the outcome.
func (c Client) LoginFinish(st *LoginState, password, ke2 []byte, ksf KSF) (ke3, exportKey, sessionKey []byte, err error) {
	if st == nil || st.blind == nil {
		return nil, nil, nil, ErrStateUsed
	}
	defer st.Clear()
	if err := c.checkKSF(ksf); err != nil {
		return nil, nil, nil, err
	}
	s := c.s()
	cl := s.newClient()
	defer cl.ClearState()

	m, err := cl.Deserialize.KE2(ke2)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: KE2", ErrMalformed)
	}
	// Recomputing KE1 from the state and this password must give the KE1
	// that was sent; otherwise the password is not the one the login began
	// with (and the error would be misreported as a wrong password).
	ke1, err := st.prime(cl, password)
	if err != nil {
		return nil, nil, nil, err
	}
	if subtle.ConstantTimeCompare(ke1, st.ke1) != 1 {
		return nil, nil, nil, ErrPasswordMismatch
	}

	k3, sessionKey, exportKey, err := cl.GenerateKE3(m, s.clientIdentity, s.serverIdentity, s.ksfOptions(ksf))
	switch {
	case errors.Is(err, opaque.ErrAuthentication):
		return nil, nil, nil, ErrWrongPassword
	case err != nil:
		return nil, nil, nil, fmt.Errorf("%w: KE2", ErrMalformed)
	}
	return k3.Serialize(), exportKey, sessionKey, nil
}
