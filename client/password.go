package client

// Password recovery: the device's backup key stored with the vault fleet
// under a password (PROTOCOL.md), on top of package recovery. The
// functions below take VaultSettings as given or as loaded
// (VaultSettings.Load): loaded ones carry the verified fleet bundle, and
// nothing reads it again.

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/devicestate"
	"github.com/cofferhq/coffer/internal/device/recovery"
)

// Errors of password recovery, for errors.Is. ErrAccountInUse,
// ErrPasswordMismatch, ErrNoPassword and ErrEnrollFailed are this
// package's; the others are the device packages' (recovery, devicestate),
// re-exported so that an app, which cannot import them, can tell them
// apart.
var (
	// ErrAccountInUse: the vault already holds a backup key for the account,
	// so a new device cannot store another one without the password or the
	// key.
	ErrAccountInUse = errors.New("the vault already holds a backup key for this account")
	// ErrPasswordMismatch: the local password check failed.
	ErrPasswordMismatch = errors.New("that is not the password")
	// ErrNoPassword: password recovery is not on for this device.
	ErrNoPassword = errors.New("password recovery is not turned on for this device")
	// ErrEnrollFailed: InitWithPassword made the repository and the key, but
	// storing the key in the vault failed. It wraps the cause.
	ErrEnrollFailed = errors.New("storing the backup key in the vault failed")

	// ErrNoPasswordVerifier: the device keeps no local password verifier
	// (Device.CheckPassword); password recovery was never turned on here,
	// or was turned off.
	ErrNoPasswordVerifier = devicestate.ErrNoPasswordVerifier

	// ErrWeakPassword: a new password is shorter than MinPasswordLength
	// (ValidatePassword).
	ErrWeakPassword = recovery.ErrWeakPassword
	// ErrVaultSettings: the VaultSettings are incomplete or inconsistent
	// (VaultSettings.Validate); nothing was sent.
	ErrVaultSettings = recovery.ErrSettings
	// ErrWrongPassword: the password is wrong and the guess was counted.
	// The error is a *WrongPasswordError that says how many are left.
	ErrWrongPassword = recovery.ErrWrongPassword
	// ErrDestroyed: too many wrong guesses; the vault erased the key for
	// good. Only the 64-digit key restores the backups now.
	ErrDestroyed = recovery.ErrDestroyed
	// ErrLastGuess: this wrong password was the last guess, and the vault
	// erased the key (wraps ErrDestroyed).
	ErrLastGuess = recovery.ErrLastGuess
	// ErrNotRegistered: the vault holds no backup key for the account.
	ErrNotRegistered = recovery.ErrNotRegistered
	// ErrRegistrationSuperseded: another registration for the account
	// started or finished meanwhile; nothing was changed: try again.
	ErrRegistrationSuperseded = recovery.ErrRegistrationSuperseded
	// ErrUnauthorized: replacing or erasing the vault's record needs the
	// current password or the backup key.
	ErrUnauthorized = recovery.ErrUnauthorized
	// ErrAuthentication: the relay refused the account token (expired, or
	// not the relay's); get a fresh one from the app's backend.
	ErrAuthentication = recovery.ErrAuthentication
	// ErrVaultUnavailable: the relay or the vault could not be reached or
	// could not serve; try again. (Storage that cannot be reached is
	// storage.ErrUnavailable.)
	ErrVaultUnavailable = recovery.ErrUnavailable
	// ErrVaultToken: the vault refused the vault token (missing, expired or
	// for another account); it wraps ErrAuthentication.
	ErrVaultToken = recovery.ErrVaultToken
	// ErrThrottled: too soon after the last wrong guess; errors wrapping it
	// are *ThrottledError, which says how long to wait. Nothing was counted.
	ErrThrottled = recovery.ErrThrottled
	// ErrKSFRefused: the vault's record has key stretching too weak for
	// this client; refused before a guess was counted.
	ErrKSFRefused = recovery.ErrKSFRefused
	// ErrVaultIntegrity: an answer from the vault, or the fleet bundle,
	// failed its integrity check: the relay or the network tampered with
	// it, or the bundle is not the pinned fleet's. Nothing secret was
	// revealed. (A damaged backup is container.ErrIntegrity.)
	ErrVaultIntegrity = recovery.ErrIntegrity
)

// MinPasswordLength is the shortest password the vault accepts, in
// characters (ValidatePassword).
const MinPasswordLength = recovery.MinPasswordLength

// ValidatePassword refuses a new password shorter than MinPasswordLength
// characters (Unicode code points) with ErrWeakPassword. The functions
// that store a password apply it first; an app may call it as the password
// is typed.
func ValidatePassword(password []byte) error { return recovery.ValidatePassword(password) }

// The types of password recovery, from package recovery.
type (
	// VaultSettings say how to reach the vault fleet for one account: the
	// relay's URL, the account id and its short-lived token, the signed
	// fleet bundle and the pinned fleet root key (see recovery.Settings
	// for the fields). VaultSettings.Validate checks them, with messages
	// that say what to do; VaultSettings.Load also reads and verifies the
	// fleet bundle, and the loaded settings carry it, so that the calls
	// they are passed to read it no more. VaultSettings.Merge fills the
	// empty ones from a device's SavedVault.
	VaultSettings = recovery.Settings
	// SavedVault is what a device saved of its VaultSettings (never the
	// token), and whether password recovery is on (Device.VaultConfig).
	SavedVault = devicestate.Vault
	// Status is what the vault holds for an account (VaultStatus).
	Status = recovery.Status
	// ThrottledError says how long the vault's pacing asks to wait.
	ThrottledError = recovery.ThrottledError
	// Enrollment describes the record the vault stored.
	Enrollment = recovery.Enrollment
	// Session is what a successful recovery reports: the wrong guesses
	// since the previous one, and when.
	Session = recovery.Session
	// WrongPasswordError is the error of a wrong password: how many
	// guesses are left (it wraps ErrWrongPassword).
	WrongPasswordError = recovery.WrongPasswordError
)

// savedVault is what a device keeps of the settings (not the token).
func savedVault(s VaultSettings) *SavedVault {
	fleet := s.Fleet
	if abs, err := filepath.Abs(fleet); err == nil && fleet != "" {
		fleet = abs
	}
	return &SavedVault{Relay: strings.TrimRight(s.Relay, "/"), Account: s.Account, Fleet: fleet, FleetRoot: strings.TrimSpace(s.FleetRoot)}
}

// RecordIsMine reports whether the vault's live record of the device's
// account (st, from VaultStatus) holds this device's backup key: false when
// someone registered their own record after destroying or replacing this
// device's — the device must not say "key stored" then. It needs the
// device's key (false if the device holds none).
func (d *Device) RecordIsMine(account string, st *Status) bool {
	key, err := d.Key()
	if err != nil {
		return false
	}
	defer key.Zero()
	return recovery.OwnsRecord(account, st, key)
}

// VaultStatus asks the vault about the account; it spends no guess.
func VaultStatus(ctx context.Context, s VaultSettings) (*Status, error) {
	c, err := recovery.New(s)
	if err != nil {
		return nil, err
	}
	return c.Status(ctx)
}

// RecoverKey gets the backup key back from the vault with the password (a
// new device). A wrong password is counted and fails with a
// *WrongPasswordError; a destroyed record with ErrDestroyed. The caller
// zeroes the key when done.
func RecoverKey(ctx context.Context, s VaultSettings, password []byte) (*backupkey.Key, *Session, error) {
	c, err := recovery.New(s)
	if err != nil {
		return nil, nil, err
	}
	return c.Recover(ctx, password)
}

// EnablePassword stores key in the vault under password, proving the key
// (so it also replaces a live record of the same key, and resets its guess
// count). It keeps no device state; Device.EnablePassword does.
func EnablePassword(ctx context.Context, s VaultSettings, key *backupkey.Key, password []byte) (*Enrollment, error) {
	if err := ValidatePassword(password); err != nil {
		return nil, err
	}
	c, err := recovery.New(s)
	if err != nil {
		return nil, err
	}
	return c.Enroll(ctx, password, key, recovery.Authorization{Key: key})
}

// DisablePassword erases the account's record from the vault, proving key.
// It keeps no device state; Device.DisablePassword does.
func DisablePassword(ctx context.Context, s VaultSettings, key *backupkey.Key) error {
	c, err := recovery.New(s)
	if err != nil {
		return err
	}
	return c.Disable(ctx, recovery.Authorization{Key: key})
}

// PasswordInitResult is what InitWithPassword did.
type PasswordInitResult struct {
	*InitResult
	Enrollment *Enrollment
}

// InitWithPassword sets the device up like Init and stores the new backup
// key in the vault under password. It first asks the vault (spending no
// guess) whether the account already holds a key, and refuses with
// ErrAccountInUse before creating anything if so. If storing the key fails
// after the repository was made, the device is still set up with the key
// (as by Init) and the error wraps ErrEnrollFailed: EnablePassword retries.
func (d *Device) InitWithPassword(ctx context.Context, repoURL string, password []byte, s VaultSettings) (*PasswordInitResult, error) {
	if d.Initialized() {
		return nil, fmt.Errorf("%w (state %s)", ErrAlreadyInitialized, d.dir.Path)
	}
	if err := ValidatePassword(password); err != nil {
		return nil, err
	}
	c, err := recovery.New(s)
	if err != nil {
		return nil, err
	}
	st, err := c.Status(ctx)
	if err != nil {
		return nil, err
	}
	if st.Registered {
		return nil, fmt.Errorf("%w (account %q): restore on this device with the password, or use another account", ErrAccountInUse, s.Account)
	}
	res, err := d.Init(ctx, repoURL)
	if err != nil {
		return nil, err
	}
	e, err := c.Enroll(ctx, password, res.Key, recovery.Authorization{})
	if err != nil {
		return &PasswordInitResult{InitResult: res}, fmt.Errorf("%w: %w", ErrEnrollFailed, err)
	}
	if err := d.savePassword(s, e, password); err != nil {
		return &PasswordInitResult{InitResult: res, Enrollment: e}, fmt.Errorf("the backup key was stored in the vault, but this device could not record it: %w", err)
	}
	return &PasswordInitResult{InitResult: res, Enrollment: e}, nil
}

// JoinWithPassword sets up a new device for an existing repository with
// the password alone: it recovers the backup key from the vault
// (RecoverKey: a wrong password is counted), then joins the repository
// (JoinRecovered). The Session says how many wrong guesses were made since
// the previous successful recovery: show it.
func (d *Device) JoinWithPassword(ctx context.Context, repoURL string, password []byte, s VaultSettings) (*Repo, *Session, error) {
	if d.Initialized() {
		return nil, nil, fmt.Errorf("%w (state %s)", ErrAlreadyInitialized, d.dir.Path)
	}
	key, sess, err := RecoverKey(ctx, s, password)
	if err != nil {
		return nil, nil, err
	}
	defer key.Zero()
	r, err := d.JoinRecovered(ctx, repoURL, key, s, sess, password)
	return r, sess, err
}

// JoinRecovered is Join with a key just recovered from the vault with
// password (RecoverKey, whose Session is sess): the device also keeps the
// vault settings (never the token) and a local password verifier, so that
// password recovery is on for it as if it had enrolled the key itself
// ('coffer status', 'password check', 'password change' work).
func (d *Device) JoinRecovered(ctx context.Context, repoURL string, key *Key, s VaultSettings, sess *Session, password []byte) (*Repo, error) {
	r, err := d.Join(ctx, repoURL, key)
	if err != nil {
		return nil, err
	}
	var epoch uint64
	if sess != nil {
		epoch = sess.Epoch
	}
	if err := d.savePassword(s, &Enrollment{Epoch: epoch}, password); err != nil {
		r.Close()
		return nil, fmt.Errorf("this device joined the repository, but could not record its password recovery settings: %w", err)
	}
	return r, nil
}

// VaultConfig returns the device's saved vault settings, or nil if it has
// none. VaultSettings.Merge fills settings from them.
func (d *Device) VaultConfig() (*SavedVault, error) {
	cfg, err := d.dir.Load()
	if err != nil {
		return nil, err
	}
	return cfg.Vault, nil
}

// HasPasswordVerifier reports whether the device keeps a local password
// verifier, so that CheckPassword can test a password.
func (d *Device) HasPasswordVerifier() bool {
	_, err := d.dir.LoadPasswordVerifier()
	return err == nil
}

// PasswordEnabled reports whether the device turned password recovery on
// (and not off since).
func (d *Device) PasswordEnabled() bool {
	v, err := d.VaultConfig()
	return err == nil && v != nil && v.Enabled
}

// keyOr returns key, or the device's key if key is nil, and whether the
// caller must zero the result.
func (d *Device) keyOr(key *backupkey.Key) (*backupkey.Key, bool, error) {
	if key != nil {
		return key, false, nil
	}
	k, err := d.dir.LoadKey()
	return k, err == nil, err
}

// EnablePassword turns password recovery on (or on again) for the device:
// it stores the device's backup key (or key, if not nil) in the vault under
// password, proving the key, and saves the settings and a local password
// verifier.
func (d *Device) EnablePassword(ctx context.Context, s VaultSettings, key *backupkey.Key, password []byte) (*Enrollment, error) {
	if _, err := d.dir.Load(); err != nil {
		return nil, err
	}
	k, zero, err := d.keyOr(key)
	if err != nil {
		return nil, err
	}
	if zero {
		defer k.Zero()
	}
	e, err := EnablePassword(ctx, s, k, password)
	if err != nil {
		return nil, err
	}
	if err := d.savePassword(s, e, password); err != nil {
		return e, fmt.Errorf("the backup key was stored in the vault, but this device could not record it: %w", err)
	}
	return e, nil
}

// ChangePassword replaces the vault record with one under newPassword,
// proving the device's backup key (or key); no guess is spent and the
// guess count starts again. The local password verifier follows.
func (d *Device) ChangePassword(ctx context.Context, s VaultSettings, key *backupkey.Key, newPassword []byte) (*Enrollment, error) {
	if !d.PasswordEnabled() {
		if _, err := d.dir.Load(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: turn it on with 'coffer enable'", ErrNoPassword)
	}
	return d.EnablePassword(ctx, s, key, newPassword)
}

// DisablePassword turns password recovery off: the vault erases its record
// (the device proves its backup key, or key) and the device forgets its
// password verifier. Backups then restore on a new device only with the
// 64-digit key.
func (d *Device) DisablePassword(ctx context.Context, s VaultSettings, key *backupkey.Key) error {
	cfg, err := d.dir.Load()
	if err != nil {
		return err
	}
	k, zero, err := d.keyOr(key)
	if err != nil {
		return err
	}
	if zero {
		defer k.Zero()
	}
	if err := DisablePassword(ctx, s, k); err != nil {
		return err
	}
	v := savedVault(s)
	v.Changed = time.Now().UTC().Truncate(time.Second)
	cfg.Vault = v
	if err := d.dir.RemovePasswordVerifier(); err != nil {
		return err
	}
	return d.dir.Save(cfg)
}

func (d *Device) savePassword(s VaultSettings, e *Enrollment, password []byte) error {
	cfg, err := d.dir.Load()
	if err != nil {
		return err
	}
	pv, err := NewPasswordVerifier(password, s.InsecureDevKSF)
	if err != nil {
		return err
	}
	if err := d.dir.SavePasswordVerifier(pv); err != nil {
		return err
	}
	v := savedVault(s)
	v.Enabled, v.Epoch, v.GuessLimit = true, e.Epoch, e.GuessLimit
	v.Changed = time.Now().UTC().Truncate(time.Second)
	cfg.Vault = v
	return d.dir.Save(cfg)
}

// CheckPassword tests password against the device's local verifier,
// spending no guess in the vault. A wrong password fails with
// ErrPasswordMismatch; a device without a verifier with
// ErrNoPasswordVerifier.
func (d *Device) CheckPassword(password []byte) error {
	v, err := d.dir.LoadPasswordVerifier()
	if err != nil {
		return err
	}
	return checkVerifier(v, password)
}

// Local password verifier parameters: Argon2id as RFC 9106 section 4
// recommends for memory-constrained uses (t=3, m=64 MiB, p=4), and a cheap
// profile for the insecure development mode.
var (
	verifierParams    = devicestate.PasswordVerifier{Algorithm: "argon2id", Time: 3, MemoryKiB: 64 * 1024, Threads: 4}
	devVerifierParams = devicestate.PasswordVerifier{Algorithm: "argon2id", Time: 1, MemoryKiB: 64, Threads: 1}
)

// NewPasswordVerifier makes a local verifier for password: Argon2id with a
// random 16-byte salt (cheap parameters if insecureDev).
func NewPasswordVerifier(password []byte, insecureDev bool) (*devicestate.PasswordVerifier, error) {
	v := verifierParams
	if insecureDev {
		v = devVerifierParams
	}
	v.Salt = make([]byte, 16)
	rand.Read(v.Salt)
	v.Hash = argon2.IDKey(password, v.Salt, v.Time, v.MemoryKiB, v.Threads, 32)
	return &v, nil
}

// checkVerifier tests password against v.
func checkVerifier(v *devicestate.PasswordVerifier, password []byte) error {
	if v.Algorithm != "argon2id" || v.Time < 1 || v.Time > 16 || v.Threads < 1 || v.MemoryKiB < 8*uint32(v.Threads) || v.MemoryKiB > 4<<20 || len(v.Salt) < 8 || len(v.Hash) < 16 || len(v.Hash) > 64 {
		return fmt.Errorf("the password verifier on this device is damaged (algorithm %q, t=%d, m=%d KiB, p=%d)", v.Algorithm, v.Time, v.MemoryKiB, v.Threads)
	}
	h := argon2.IDKey(password, v.Salt, v.Time, v.MemoryKiB, v.Threads, uint32(len(v.Hash)))
	if subtle.ConstantTimeCompare(h, v.Hash) != 1 {
		return ErrPasswordMismatch
	}
	return nil
}
