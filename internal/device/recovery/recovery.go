// Package recovery is the device's side of the Backup Key Vault
// (PROTOCOL.md): it stores a backup key with the vault fleet under a
// password and gets it back on a new device with the password alone.
//
// Fill in Settings for the account (the relay, the account id and its
// short-lived token, the signed fleet bundle and the pinned fleet root key)
// and make a Client:
//
//	c, err := recovery.New(recovery.Settings{
//		Relay: relayURL, Account: account, Token: token,
//		Fleet: "bundle.json", FleetRoot: "coffer-fleet-root:…",
//	})
//	e, err := c.Enroll(ctx, password, key, recovery.Authorization{})
//
// and on the new device, with a Client for the same account:
//
//	key, session, err := c.Recover(ctx, password)
//
// Settings.Validate is the one check of the settings and ValidatePassword
// the one password rule. Settings.Load checks the settings and reads and
// verifies the fleet bundle; the loaded Settings carry the bundle, so check
// early with Load and pass its result on, and nothing is read twice.
// Status asks what the vault holds without spending a guess; Disable erases
// the record.
//
// What it guarantees, against a relay and a network that are hostile and a
// vault that follows the protocol:
//
//   - Neither the vault nor the relay sees the password or the backup key.
//     The password goes only into OPAQUE (RFC 9807); the key travels
//     wrapped under a key that only the password derives.
//   - The relay reads, alters, replays and redirects nothing undetected:
//     every request is sealed (HPKE) to the fleet key of a bundle that
//     verifies under the pinned root key, and an answer is accepted only
//     if it opens under that request's keys and names that request.
//     Anything else fails with ErrIntegrity and reveals nothing.
//   - Guessing is bounded: the vault counts a guess before it releases
//     anything that could test it, and erases the key after the guess
//     limit (ErrDestroyed; ErrLastGuess when this very guess was the
//     last). A wrong password fails with a *WrongPasswordError that says
//     how many guesses are left. After a success, the Session reports the
//     wrong guesses made since the previous one, and when.
//   - Replacing or erasing a live record needs the current backup key or a
//     fresh successful recovery (Authorization); otherwise ErrUnauthorized.
//   - Offline guessing stays expensive: new records use pake.DefaultKSF,
//     and a vault that asks for key stretching below PROTOCOL.md's floor
//     is refused (unless Settings.InsecureDevKSF, for development fleets
//     only), as is one above its ceiling, always.
//
// The relay can still drop or delay requests: errors that wrap
// ErrUnavailable are worth trying again. Errors wrap the sentinels below
// where one applies (errors.Is). A Client is safe for concurrent use.
//
// The package never imports server code.
package recovery

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/protocol/channel"
	"github.com/cofferhq/coffer/internal/protocol/keywrap"
	"github.com/cofferhq/coffer/internal/protocol/pake"
	"github.com/cofferhq/coffer/internal/protocol/vaultv1"
	"github.com/cofferhq/coffer/internal/protocol/vaultv1/vaultv1connect"
	"github.com/cofferhq/coffer/internal/protocol/wire"
)

// Errors, wrapped so that errors.Is works.
var (
	// ErrWrongPassword: the password is wrong. The error is a
	// *WrongPasswordError that says how many guesses are left.
	ErrWrongPassword = errors.New("wrong password")
	// ErrDestroyed: too many wrong guesses; the vault erased the key for good.
	ErrDestroyed = errors.New("the vault has destroyed this backup key after too many wrong passwords")
	// ErrNotRegistered: the account has no key in the vault.
	ErrNotRegistered = errors.New("no backup key is stored in the vault for this account")
	// ErrUnauthorized: replacing or erasing the vault record needs the
	// current password or the backup key.
	ErrUnauthorized = errors.New("the vault refused: replacing or erasing the record needs the current password or the backup key")
	// ErrUnavailable: the relay or the vault could not be reached or could
	// not serve (no quorum, rate limited); nothing was counted.
	ErrUnavailable = errors.New("the vault service is unavailable")
	// ErrAuthentication: the relay refused the account token.
	ErrAuthentication = errors.New("the relay refused the account token")
	// ErrVaultToken: the vault refused the vault token (missing, expired,
	// or for another account). It wraps ErrAuthentication.
	ErrVaultToken = fmt.Errorf("the vault refused the vault token: %w", ErrAuthentication)
	// ErrKSFRefused: the record's key-stretching profile is below the floor
	// this client accepts; the vault refused before counting a guess.
	ErrKSFRefused = errors.New("the vault record's key stretching is too weak for this client")
	// ErrIntegrity: an answer did not open under the channel keys or did
	// not belong to the request: the relay or network tampered with it.
	ErrIntegrity = errors.New("the vault's answer failed its integrity check")

	// The errors below tell apart outcomes that share one of the errors
	// above, which they wrap (errors.Is matches both).

	// ErrLastGuess: Recover's password was wrong and that guess was the
	// last of the budget: the vault destroyed the record (wraps
	// ErrDestroyed). The vault answered the abort of this very login with
	// "destroyed"; a plain ErrDestroyed means the record was gone already.
	ErrLastGuess = fmt.Errorf("wrong password, and that was the last guess: %w", ErrDestroyed)
	// ErrLoginExpired: the vault refused to finish the login because it
	// expired or a newer login for the account superseded it
	// (CODE_LOGIN_EXPIRED; the vault does not say which). The guess was
	// counted when the KE2 was released; nothing was reset. Wraps
	// ErrUnavailable: starting again is the remedy.
	ErrLoginExpired = fmt.Errorf("%w: the login took too long or another login for this account started meanwhile; try again", ErrUnavailable)
	// ErrReplayed: the vault already handled this request id
	// (CODE_REPLAY): the relay retried a request whose first answer was
	// lost. The first one may have taken effect (a login attempt may have
	// been counted). Wraps ErrUnavailable.
	ErrReplayed = fmt.Errorf("%w: the vault already handled this request (its answer was lost on the way); try again", ErrUnavailable)
	// ErrRegistrationSuperseded: Enroll's registration was refused as
	// stale because another registration for the account started or
	// finished since its RegisterStart; nothing was changed. Start again.
	ErrRegistrationSuperseded = errors.New("the vault refused the registration as stale: another registration for this account started or finished meanwhile; try again")
)

// staleRegistration is how the vault's refusal of a stale registration
// begins (internal/server/vaultstate: Register with an epoch no longer reserved). The wire
// code is CODE_BAD_REQUEST, shared with malformed requests, so the message
// is what tells it apart.
const staleRegistration = "stale registration"

// WrongPasswordError is returned for a wrong password.
type WrongPasswordError struct {
	GuessesLeft int
	GuessLimit  int
}

func (e *WrongPasswordError) Error() string {
	if e.GuessesLeft == 1 {
		return fmt.Sprintf("wrong password: 1 guess left of %d; one more wrong guess destroys the backup key for good", e.GuessLimit)
	}
	return fmt.Sprintf("wrong password: %d guesses left of %d", e.GuessesLeft, e.GuessLimit)
}

func (e *WrongPasswordError) Unwrap() error { return ErrWrongPassword }

// ErrThrottled: the vault refused a login because it came too soon after
// the last wrong guess; nothing was counted. Errors wrapping it are
// *ThrottledError, which says how long to wait.
var ErrThrottled = errors.New("too soon after the last wrong guess")

// ThrottledError is a login refused by the vault's pacing (PROTOCOL.md §5):
// wait RetryAfter, then try again; GuessesLeft of GuessLimit remain.
type ThrottledError struct {
	RetryAfter              time.Duration
	GuessesLeft, GuessLimit int
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("the vault spaces out wrong guesses: wait %s before the next try (%d of %d guesses left; nothing was counted)",
		e.RetryAfter.Round(time.Second), e.GuessesLeft, e.GuessLimit)
}

func (e *ThrottledError) Unwrap() error { return ErrThrottled }

// Client talks to the vault for one account.
type Client struct {
	settings Settings // loaded: Bundle is set
	ksf      pake.KSF // for new registrations
	relay    vaultv1connect.RelayServiceClient
	fleet    *channel.PublicKey
	pake     pake.Client
	now      func() time.Time
}

// New returns a Client for the settings: it loads them (Settings.Load,
// which reads and verifies the fleet bundle unless they carry it already)
// and refuses a bundle outside its validity period now.
func New(s Settings) (*Client, error) {
	s, err := s.Load()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if b := s.Bundle; now.Before(b.NotBefore) || now.After(b.NotAfter) {
		return nil, fmt.Errorf("%w: the fleet bundle is valid from %s to %s, not now: get the fleet's current bundle", ErrIntegrity,
			b.NotBefore.UTC().Format(time.RFC3339), b.NotAfter.UTC().Format(time.RFC3339))
	}
	pub, err := channel.ParsePublicKey(s.Bundle.HPKEPublicKey)
	if err != nil {
		return nil, fmt.Errorf("fleet bundle: %w", err)
	}
	ksf := pake.DefaultKSF
	if s.InsecureDevKSF {
		ksf = pake.TestKSF
	}
	hc := s.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{
		settings: s,
		ksf:      ksf,
		relay:    vaultv1connect.NewRelayServiceClient(hc, strings.TrimRight(s.Relay, "/")),
		fleet:    pub,
		pake:     pake.Client{ServerPublicKey: s.Bundle.OPAQUEServerPublicKey, AllowWeakKSF: s.InsecureDevKSF},
		now:      time.Now,
	}, nil
}

// exchange seals req for the fleet, sends it through the relay and opens
// the answer. A vault error in the answer becomes a Go error.
// prepare gives req its request id and time (exchange does it for a
// request without them): a key signature signs both.
func (c *Client) prepare(req *vaultv1.Request) {
	req.RequestId = make([]byte, 16)
	rand.Read(req.RequestId)
	req.TimeUnixMs = c.now().UnixMilli()
}

// keyAuth is a request authorized by the backup key: a fresh signature
// over its id and time (records registered with a key-proof public key),
// or, legacy, the static key proof of a version-1 record. A version-1
// record refuses the signature, and the caller retries with legacy set.
type keyAuth struct {
	key    *backupkey.Key
	legacy bool
}

// sign fills req's id and time and returns the signature or the proof for
// op, one of them nil; both nil without a key.
func (c *Client) sign(k *keyAuth, req *vaultv1.Request, op byte) (sig, proof []byte) {
	if k == nil || k.key == nil {
		return nil, nil
	}
	c.prepare(req)
	if k.legacy {
		p := keywrap.KeyProof(k.key.Bytes(), c.settings.Account)
		return nil, p[:]
	}
	return keywrap.SignProof(k.key.Bytes(), c.settings.Account, op, req.RequestId, req.TimeUnixMs), nil
}

func (c *Client) exchange(ctx context.Context, req *vaultv1.Request) (*vaultv1.Response, error) {
	req.Account = c.settings.Account
	if len(req.RequestId) == 0 {
		c.prepare(req)
	}
	req.VaultToken = c.settings.VaultToken
	wire.PadRequest(req)
	plain, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	sealed, opener, err := channel.Seal(c.fleet, c.settings.Bundle.FleetID, c.settings.Account, plain)
	if err != nil {
		return nil, err
	}
	cctx, call := connect.NewClientContext(ctx)
	call.RequestHeader().Set("Authorization", "Bearer "+c.settings.Token)
	cresp, err := c.relay.Exchange(cctx, &vaultv1.ExchangeRequest{Sealed: sealed})
	if err != nil {
		return nil, classifyTransport(c.settings.Relay, err)
	}
	rb, err := opener.Open(cresp.GetSealed(), req.RequestId)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIntegrity, err)
	}
	resp := new(vaultv1.Response)
	if err := proto.Unmarshal(rb, resp); err != nil {
		return nil, fmt.Errorf("%w: undecodable answer", ErrIntegrity)
	}
	if string(resp.GetRequestId()) != string(req.RequestId) {
		return nil, fmt.Errorf("%w: the answer is for another request", ErrIntegrity)
	}
	if e := resp.GetError(); e != nil && e.GetCode() != vaultv1.Code_CODE_UNSPECIFIED {
		return nil, vaultError(e)
	}
	return resp, nil
}

func classifyTransport(relay string, err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		switch ce.Code() {
		case connect.CodeUnauthenticated, connect.CodePermissionDenied:
			return fmt.Errorf("%w: %s", ErrAuthentication, ce.Message())
		case connect.CodeResourceExhausted:
			return fmt.Errorf("%w: rate limited by the relay (%s); wait and try again", ErrUnavailable, ce.Message())
		case connect.CodeInvalidArgument:
			// The vault could not open what it received: altered on the
			// way, or sealed for another fleet.
			return fmt.Errorf("%w: the vault could not open the request (altered on the way, or the fleet bundle is not this fleet's): %s", ErrIntegrity, ce.Message())
		}
		return fmt.Errorf("%w: relay %s: %s", ErrUnavailable, relay, ce.Message())
	}
	return fmt.Errorf("%w: relay %s: %v", ErrUnavailable, relay, err)
}

func vaultError(e *vaultv1.Error) error {
	switch e.GetCode() {
	case vaultv1.Code_CODE_WRONG_PASSWORD:
		return &WrongPasswordError{GuessesLeft: int(e.GetGuessesLeft()), GuessLimit: int(e.GetGuessLimit())}
	case vaultv1.Code_CODE_DESTROYED:
		return ErrDestroyed
	case vaultv1.Code_CODE_UNAUTHENTICATED:
		return fmt.Errorf("%w: %s", ErrVaultToken, e.GetMessage())
	case vaultv1.Code_CODE_THROTTLED:
		return &ThrottledError{RetryAfter: time.Duration(e.GetRetryAfterMs()) * time.Millisecond, GuessesLeft: int(e.GetGuessesLeft()), GuessLimit: int(e.GetGuessLimit())}
	case vaultv1.Code_CODE_KSF_REFUSED:
		return fmt.Errorf("%w: %s", ErrKSFRefused, e.GetMessage())
	case vaultv1.Code_CODE_UNAUTHORIZED:
		return ErrUnauthorized
	case vaultv1.Code_CODE_NOT_REGISTERED:
		return ErrNotRegistered
	case vaultv1.Code_CODE_UNAVAILABLE:
		return fmt.Errorf("%w: %s", ErrUnavailable, e.GetMessage())
	case vaultv1.Code_CODE_STALE:
		return fmt.Errorf("the vault refused the request as stale: check this device's clock (%s)", e.GetMessage())
	case vaultv1.Code_CODE_LOGIN_EXPIRED:
		return ErrLoginExpired
	case vaultv1.Code_CODE_REPLAY:
		// The relay retried a request whose first answer was lost: the vault
		// acted on it once (a login attempt may have been counted) and
		// refuses the repeat. Nothing leaked; the caller may try again.
		return ErrReplayed
	case vaultv1.Code_CODE_BAD_REQUEST:
		if strings.HasPrefix(e.GetMessage(), staleRegistration) {
			return ErrRegistrationSuperseded
		}
	}
	return fmt.Errorf("the vault refused the request: %s (%v)", e.GetMessage(), e.GetCode())
}

func toKSF(k *vaultv1.KSFParams) (pake.KSF, error) {
	if k == nil {
		return pake.KSF{}, fmt.Errorf("%w: no key-stretching profile in the answer", ErrIntegrity)
	}
	return pake.ParseKSF(k.GetAlgorithm(), k.GetTime(), k.GetMemoryKib(), k.GetThreads())
}

func fromKSF(k pake.KSF) *vaultv1.KSFParams {
	return &vaultv1.KSFParams{Algorithm: pake.KSFAlgorithm, Time: k.Time, MemoryKib: k.MemoryKiB, Threads: k.Threads}
}

// Authorization lets Enroll replace a live record, or Disable erase it.
// Exactly one of its fields is used.
type Authorization struct {
	// Key proves the device holds the current backup key.
	Key *backupkey.Key
	// Session is a successful Recover in this flow.
	Session *Session
}

// Enrollment describes a stored record.
type Enrollment struct {
	Epoch      uint64 `json:"epoch"`
	GuessLimit int    `json:"guess_limit"`
}

// Enroll stores key in the vault under password. If the account already
// has a live record, auth must prove the current password (a Session) or
// the current backup key; otherwise the vault refuses (ErrUnauthorized).
func (c *Client) Enroll(ctx context.Context, password []byte, key *backupkey.Key, auth Authorization) (*Enrollment, error) {
	if err := ValidatePassword(password); err != nil {
		return nil, err
	}
	if err := c.checkKSF(c.ksf); err != nil {
		return nil, err
	}
	ticket, ka := c.authFields(auth)
	st, regReq, err := c.pake.RegistrationStart(password)
	if err != nil {
		return nil, err
	}
	defer st.Clear()
	var resp *vaultv1.Response
	for {
		start := &vaultv1.RegisterStart{RegistrationRequest: regReq, LoginTicket: ticket}
		req := &vaultv1.Request{Op: &vaultv1.Request_RegisterStart{RegisterStart: start}}
		start.KeySignature, start.KeyProof = c.sign(ka, req, keywrap.ProofRegisterStart)
		resp, err = c.exchange(ctx, req)
		if errors.Is(err, ErrUnauthorized) && ka != nil && !ka.legacy {
			ka.legacy = true // a version-1 record: it knows only the static proof
			continue
		}
		break
	}
	if err != nil {
		return nil, fmt.Errorf("registering with the vault: %w", err)
	}
	rs := resp.GetRegisterStart()
	if rs == nil {
		return nil, fmt.Errorf("%w: unexpected answer to RegisterStart", ErrIntegrity)
	}
	record, exportKey, err := c.pake.RegistrationFinish(st, password, rs.GetRegistrationResponse(), c.ksf)
	if err != nil {
		return nil, fmt.Errorf("registering with the vault: %w", err)
	}
	defer clear(exportKey)
	wrapped, err := keywrap.Wrap(exportKey, c.settings.Account, key.Bytes())
	if err != nil {
		return nil, err
	}
	newProof := keywrap.KeyProof(key.Bytes(), c.settings.Account)
	proofHash := keywrap.ProofHash(newProof)
	clear(newProof[:])
	finish := &vaultv1.RegisterFinish{
		RegistrationRecord: record,
		Ksf:                fromKSF(c.ksf),
		WrappedKey:         wrapped,
		KeyProofHash:       proofHash[:],
		KeyProofPublic:     keywrap.ProofPublicKey(key.Bytes(), c.settings.Account),
		LoginTicket:        ticket,
		Epoch:              rs.GetEpoch(),
	}
	req := &vaultv1.Request{Op: &vaultv1.Request_RegisterFinish{RegisterFinish: finish}}
	finish.KeySignature, finish.KeyProof = c.sign(ka, req, keywrap.ProofRegisterFinish)
	resp, err = c.exchange(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("registering with the vault: %w", err)
	}
	rf := resp.GetRegisterFinish()
	if rf == nil {
		return nil, fmt.Errorf("%w: unexpected answer to RegisterFinish", ErrIntegrity)
	}
	return &Enrollment{Epoch: rf.GetEpoch(), GuessLimit: int(rf.GetGuessLimit())}, nil
}

func (c *Client) authFields(a Authorization) (ticket []byte, key *keyAuth) {
	if a.Session != nil && len(a.Session.ticket) > 0 {
		return a.Session.ticket, nil
	}
	if a.Key != nil {
		return nil, &keyAuth{key: a.Key}
	}
	return nil, nil
}

func (c *Client) checkKSF(k pake.KSF) error {
	if c.settings.InsecureDevKSF {
		return k.ValidateAllowWeak()
	}
	return k.Validate()
}

// Session is the result of a successful Recover: what the vault reported,
// and a short-lived ticket that authorizes one Enroll or Disable.
type Session struct {
	// FailedGuesses is the number of wrong guesses since the previous
	// successful recovery, and FailedTimes when they were made.
	FailedGuesses   int         `json:"failed_guesses"`
	FailedTimes     []time.Time `json:"failed_guess_times,omitempty"`
	PreviousSuccess time.Time   `json:"previous_success,omitzero"`
	Epoch           uint64      `json:"epoch"`
	// Reenrolled: the vault asked for the record to be registered again
	// (a version-1 record on a threshold fleet, PROTOCOL.md §7), and it
	// was, under the same password; the session's ticket is spent.
	Reenrolled bool `json:"reenrolled,omitempty"`
	ticket     []byte
}

// Recover logs in with password and returns the backup key. A wrong
// password fails with a *WrongPasswordError (the guess is counted); a
// destroyed record with ErrDestroyed.
func (c *Client) Recover(ctx context.Context, password []byte) (*backupkey.Key, *Session, error) {
	st, ke1, err := c.pake.LoginStart(password)
	if err != nil {
		return nil, nil, err
	}
	defer st.Clear()
	// The vault refuses, before counting a guess, a record whose profile
	// this client would refuse after KE2 (CODE_KSF_REFUSED).
	resp, err := c.exchange(ctx, &vaultv1.Request{Op: &vaultv1.Request_LoginStart{LoginStart: &vaultv1.LoginStart{
		Ke1: ke1, AcceptWeakKsf: c.settings.InsecureDevKSF,
	}}})
	if err != nil {
		return nil, nil, fmt.Errorf("recovering the backup key: %w", err)
	}
	ls := resp.GetLoginStart()
	if ls == nil {
		return nil, nil, fmt.Errorf("%w: unexpected answer to LoginStart", ErrIntegrity)
	}
	ksf, err := toKSF(ls.GetKsf())
	if err != nil {
		return nil, nil, err
	}
	if err := c.checkKSF(ksf); err != nil {
		return nil, nil, fmt.Errorf("%w: the vault asked for an unacceptable key-stretching profile: %v", ErrIntegrity, err)
	}
	ke3, exportKey, sessionKey, err := c.pake.LoginFinish(st, password, ls.GetKe2(), ksf)
	clear(sessionKey)
	if errors.Is(err, pake.ErrWrongPassword) {
		return nil, nil, c.abortLogin(ctx, ls)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("recovering the backup key: %w", err)
	}
	defer clear(exportKey)
	resp, err = c.exchange(ctx, &vaultv1.Request{Op: &vaultv1.Request_LoginFinish{LoginFinish: &vaultv1.LoginFinish{LoginId: ls.GetLoginId(), Ke3: ke3}}})
	if err != nil {
		return nil, nil, fmt.Errorf("recovering the backup key: %w", err)
	}
	lf := resp.GetLoginFinish()
	if lf == nil {
		return nil, nil, fmt.Errorf("%w: unexpected answer to LoginFinish", ErrIntegrity)
	}
	raw, err := keywrap.Unwrap(exportKey, c.settings.Account, lf.GetWrappedKey())
	if err != nil {
		return nil, nil, fmt.Errorf("%w: the wrapped key from the vault does not open: %v", ErrIntegrity, err)
	}
	key, err := backupkey.FromBytes(raw[:])
	clear(raw[:])
	if err != nil {
		return nil, nil, err
	}
	s := &Session{FailedGuesses: int(lf.GetFailedGuesses()), Epoch: lf.GetEpoch(), ticket: lf.GetLoginTicket()}
	if lf.GetReenroll() {
		// The fleet moved to the threshold OPRF and this record is still
		// under the version-1 seed: register it again under the same
		// password, proving the key (no guess is spent, the count resets).
		// The recovery succeeded whatever happens here; a failure is
		// tried again at the next recovery.
		if e, err := c.Enroll(ctx, password, key, Authorization{Key: key}); err == nil {
			s.Reenrolled, s.Epoch, s.ticket = true, e.Epoch, nil
		}
	}
	for _, t := range lf.GetFailedGuessTimesUnixMs() {
		s.FailedTimes = append(s.FailedTimes, time.UnixMilli(t).UTC())
	}
	if ms := lf.GetPreviousSuccessUnixMs(); ms > 0 {
		s.PreviousSuccess = time.UnixMilli(ms).UTC()
	}
	return key, s, nil
}

// abortLogin tells the vault that this login cannot finish (the password
// was wrong), by sending a KE3 that cannot verify. The vault then clears the
// pending login and, if that was the last guess, erases the record at once
// rather than at the next attempt; its answer carries the authoritative
// count. The guess was counted when KE2 was released, whatever happens here.
func (c *Client) abortLogin(ctx context.Context, ls *vaultv1.LoginStartResult) error {
	left := max(int(ls.GetGuessLimit())-int(ls.GetGuessesUsed()), 0)
	wrong := &WrongPasswordError{GuessesLeft: left, GuessLimit: int(ls.GetGuessLimit())}
	_, err := c.exchange(ctx, &vaultv1.Request{Op: &vaultv1.Request_LoginFinish{LoginFinish: &vaultv1.LoginFinish{
		LoginId: ls.GetLoginId(), Ke3: make([]byte, pake.KE3Size),
	}}})
	var w *WrongPasswordError
	switch {
	case errors.As(err, &w):
		return w
	case errors.Is(err, ErrDestroyed):
		return ErrLastGuess
	}
	return wrong
}

// ChangePassword replaces the record with one under newPassword, proving
// the current backup key (so no guess is spent and the budget resets).
func (c *Client) ChangePassword(ctx context.Context, key *backupkey.Key, newPassword []byte) (*Enrollment, error) {
	return c.Enroll(ctx, newPassword, key, Authorization{Key: key})
}

// Disable erases the record from the vault, proving the backup key or a
// fresh Session.
func (c *Client) Disable(ctx context.Context, auth Authorization) error {
	ticket, ka := c.authFields(auth)
	if ticket == nil && ka == nil {
		return errors.New("turning the vault off needs the backup key or a fresh recovery")
	}
	for {
		d := &vaultv1.Disable{LoginTicket: ticket}
		req := &vaultv1.Request{Op: &vaultv1.Request_Disable{Disable: d}}
		d.KeySignature, d.KeyProof = c.sign(ka, req, keywrap.ProofDisable)
		_, err := c.exchange(ctx, req)
		if errors.Is(err, ErrUnauthorized) && ka != nil && !ka.legacy {
			ka.legacy = true // a version-1 record
			continue
		}
		if err != nil {
			return fmt.Errorf("turning the vault off: %w", err)
		}
		return nil
	}
}

// Status is what the vault holds for the account; asking spends no guess.
type Status struct {
	Registered  bool        `json:"registered"`
	Disabled    bool        `json:"disabled"`
	Destroyed   bool        `json:"destroyed"`
	GuessesUsed int         `json:"guesses_used"`
	GuessLimit  int         `json:"guess_limit"`
	FailedTimes []time.Time `json:"failed_guess_times,omitempty"`
	LastSuccess time.Time   `json:"last_success,omitzero"`
	Epoch       uint64      `json:"epoch"`
	KSF         string      `json:"key_stretching,omitempty"`
	// KeyProofHash is the live record's key proof hash: a device compares
	// it with its own key's (KeyProofHashOf) to tell its record from one
	// someone else registered.
	KeyProofHash []byte `json:"-"`
}

// OwnsRecord reports whether the live record st describes was registered
// with key: its key proof hash is key's for this account. False for a
// record someone else registered (after a destroy, or with a stolen
// ticket), or when there is no live record.
func (c *Client) OwnsRecord(st *Status, key *backupkey.Key) bool {
	return OwnsRecord(c.settings.Account, st, key)
}

// OwnsRecord reports whether the live record st describes, of account, was
// registered with key (see Client.OwnsRecord).
func OwnsRecord(account string, st *Status, key *backupkey.Key) bool {
	if st == nil || !st.Registered || len(st.KeyProofHash) != 32 {
		return false
	}
	h := keywrap.ProofHash(keywrap.KeyProof(key.Bytes(), account))
	return subtle.ConstantTimeCompare(h[:], st.KeyProofHash) == 1
}

// Status asks the vault about the account without spending a guess.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	resp, err := c.exchange(ctx, &vaultv1.Request{Op: &vaultv1.Request_Status{Status: &vaultv1.Status{}}})
	if err != nil {
		return nil, fmt.Errorf("asking the vault: %w", err)
	}
	sr := resp.GetStatus()
	if sr == nil {
		return nil, fmt.Errorf("%w: unexpected answer to Status", ErrIntegrity)
	}
	s := &Status{
		Registered: sr.GetRegistered(), Disabled: sr.GetDisabled(), Destroyed: sr.GetDestroyed(),
		GuessesUsed: int(sr.GetGuessesUsed()), GuessLimit: int(sr.GetGuessLimit()), Epoch: sr.GetEpoch(),
	}
	for _, t := range sr.GetFailedGuessTimesUnixMs() {
		s.FailedTimes = append(s.FailedTimes, time.UnixMilli(t).UTC())
	}
	if ms := sr.GetLastSuccessUnixMs(); ms > 0 {
		s.LastSuccess = time.UnixMilli(ms).UTC()
	}
	if k, err := toKSF(sr.GetKsf()); err == nil && sr.GetRegistered() {
		s.KSF = k.String()
	}
	if sr.GetRegistered() {
		s.KeyProofHash = sr.GetKeyProofHash()
	}
	return s, nil
}
