package recovery

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cofferhq/coffer/internal/device/devicestate"
	"github.com/cofferhq/coffer/internal/protocol/bundle"
)

// MinPasswordLength is the shortest password Enroll accepts, in characters
// (Unicode code points, not bytes). The vault's guess limit makes online
// guessing hopeless; the length (and the key stretching) protect against
// someone who steals the vault's secrets and tries passwords offline.
const MinPasswordLength = 8

// ErrWeakPassword: the password is shorter than MinPasswordLength.
var ErrWeakPassword = fmt.Errorf("the password must be at least %d characters", MinPasswordLength)

// ValidatePassword is the password rule, the one place it is written: a
// new password has at least MinPasswordLength characters, counted as
// Unicode code points (a byte that is not UTF-8 counts as one). It fails
// with ErrWeakPassword. Enroll applies it; callers apply it too, to refuse
// a password before doing anything else. A password being tried (Recover)
// is never held to it: it was set under whatever rule held then.
func ValidatePassword(password []byte) error {
	if utf8.RuneCount(password) < MinPasswordLength {
		return ErrWeakPassword
	}
	return nil
}

// ErrSettings: the vault settings are incomplete or inconsistent, so
// nothing was sent. Every error of Settings.Validate wraps it.
var ErrSettings = errors.New("vault settings")

// Settings say how to reach the vault fleet for one account. They are the
// one shape of the vault settings, from the command line or an app down to
// the Client: the coffer command fills them from its flags and the
// environment, package client re-exports them as client.VaultSettings, and
// New takes them.
//
// Validate is the one check of the settings; its messages name the coffer
// command's flags and environment variables, which the fields below map
// to. Load checks them and reads and verifies the fleet bundle, once: the
// Settings it returns carry the verified bundle, so that New, and every
// Client made from them, read nothing again.
type Settings struct {
	// Relay is the relay's base URL (--relay, COFFER_RELAY).
	Relay string
	// Account is the account id the token is for (--account,
	// COFFER_ACCOUNT).
	Account string
	// Token is the short-lived account token from the app's backend for
	// the relay's audience (--token, COFFER_TOKEN). The relay checks it and
	// rate-limits by its subject. A device never saves it.
	Token string
	// VaultToken is the short-lived account token from the app's backend
	// for the vault's audience (--vault-token, COFFER_VAULT_TOKEN). It
	// travels only inside the sealed request, so the relay never sees it;
	// the vault checks it itself, and a relay cannot act for an account.
	// A device never saves it.
	VaultToken string
	// Fleet is the path of the signed fleet bundle, the bundle.json that
	// 'coffer vault init' makes (--fleet, COFFER_FLEET).
	Fleet string
	// FleetRoot is the pinned fleet root public key, in its text form
	// coffer-fleet-root:… (--fleet-root, COFFER_FLEET_ROOT).
	FleetRoot string
	// Bundle is the fleet bundle, verified under the pinned root key. Load
	// sets it from Fleet and FleetRoot; once it is set, Fleet and FleetRoot
	// are not read again (and need not be given: a program that talks for
	// many accounts to one fleet verifies the bundle once, with
	// LoadBundle). It must come from LoadBundle (or bundle.Verify).
	Bundle *bundle.Bundle
	// InsecureDevKSF registers new records with pake.TestKSF, a key
	// stretching so cheap that a stolen vault record falls to an offline
	// search at once, and accepts profiles below PROTOCOL.md's floor from
	// the vault (--insecure-dev-ksf, COFFER_DEV_KSF=1). For tests, demos,
	// load generators and local development fleets only; never for a real
	// account. Off, new records use pake.DefaultKSF.
	InsecureDevKSF bool
	// HTTPClient talks to the relay (default: one with a 30 s timeout).
	HTTPClient *http.Client
}

// Validate checks that the settings can work, without reading or sending
// anything. It is the one place they are checked: every error says what is
// missing or wrong, why it matters and what to do, and wraps ErrSettings.
func (s Settings) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrSettings, fmt.Sprintf(format, a...))
	}
	switch {
	case s.Relay == "":
		return bad("no relay URL, so the vault cannot be reached: give the relay's URL with --relay or COFFER_RELAY")
	case !validRelayURL(s.Relay):
		return bad("the relay URL %q is malformed: give it as http://HOST:PORT or https://HOST[:PORT] with --relay or COFFER_RELAY", s.Relay)
	case s.Account == "":
		return bad("no account, so the vault cannot tell whose key it is: give the account id with --account or COFFER_ACCOUNT")
	case s.Token == "":
		return bad("no account token, so the relay would refuse every request: give the short-lived token from the app's backend with --token or COFFER_TOKEN ('coffer relay token' mints one for a development fleet)")
	}
	if sub, ok := tokenSubject(s.Token); ok && sub != s.Account {
		return bad("the account token is for account %q, not %q, so the relay would refuse it: check --account (COFFER_ACCOUNT) and --token (COFFER_TOKEN)", sub, s.Account)
	}
	if s.VaultToken == "" {
		return bad("no vault token, so the vault would refuse every request: give the short-lived token the app's backend mints for the vault with --vault-token or COFFER_VAULT_TOKEN ('coffer relay token --audience VAULT_AUDIENCE' mints one; 'coffer dev' sets both tokens in its env file)")
	}
	if sub, ok := tokenSubject(s.VaultToken); ok && sub != s.Account {
		return bad("the vault token is for account %q, not %q, so the vault would refuse it: check --account (COFFER_ACCOUNT) and --vault-token (COFFER_VAULT_TOKEN)", sub, s.Account)
	}
	if s.Bundle != nil {
		return nil
	}
	return checkFleet(s.Fleet, s.FleetRoot)
}

// validRelayURL reports whether u is an http or https URL with a host.
func validRelayURL(u string) bool {
	p, err := url.Parse(strings.TrimSpace(u))
	return err == nil && (p.Scheme == "http" || p.Scheme == "https") && p.Host != ""
}

// checkFleet is the part of Validate that names the fleet bundle, which
// LoadBundle checks too.
func checkFleet(path, root string) error {
	switch {
	case path == "":
		return fmt.Errorf("%w: no fleet bundle, so there is no fleet key to seal requests to: give the signed bundle.json made by 'coffer vault init' with --fleet FILE or COFFER_FLEET", ErrSettings)
	case strings.TrimSpace(root) == "":
		return fmt.Errorf("%w: no pinned fleet root key, so the fleet bundle cannot be verified: give the coffer-fleet-root:… key printed by 'coffer vault init' with --fleet-root or COFFER_FLEET_ROOT", ErrSettings)
	}
	return nil
}

// Load checks the settings (Validate) and, unless Bundle is set, reads the
// fleet bundle from Fleet and verifies it under FleetRoot (LoadBundle). The
// result carries the verified bundle: pass it on, and nothing reads or
// verifies the bundle again. A bundle that does not verify fails with
// ErrIntegrity.
func (s Settings) Load() (Settings, error) {
	if err := s.Validate(); err != nil {
		return s, err
	}
	if s.Bundle != nil {
		return s, nil
	}
	b, err := LoadBundle(s.Fleet, s.FleetRoot)
	if err != nil {
		return s, err
	}
	s.Bundle = b
	return s, nil
}

// Merge fills the settings left empty from a device's saved ones (v may
// be nil). Merge before Load: a loaded bundle stays what it is.
func (s Settings) Merge(v *devicestate.Vault) Settings {
	if v == nil {
		return s
	}
	if s.Relay == "" {
		s.Relay = v.Relay
	}
	if s.Account == "" {
		s.Account = v.Account
	}
	if s.Fleet == "" {
		s.Fleet = v.Fleet
	}
	if s.FleetRoot == "" {
		s.FleetRoot = v.FleetRoot
	}
	return s
}

// LoadBundle reads a signed fleet bundle file and verifies it under the
// pinned root public key (its text form, COFFER_FLEET_ROOT). A bundle that
// does not verify, or is outside its validity period, fails with
// ErrIntegrity.
func LoadBundle(path, root string) (*bundle.Bundle, error) {
	if err := checkFleet(path, root); err != nil {
		return nil, err
	}
	pub, err := bundle.ParseRootPublicKey(strings.TrimSpace(root))
	if err != nil {
		return nil, fmt.Errorf("%w: the pinned fleet root key (--fleet-root, COFFER_FLEET_ROOT) does not parse: %w", ErrSettings, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: reading the fleet bundle (--fleet, COFFER_FLEET): %w", ErrSettings, err)
	}
	bundle, err := bundle.Verify(b, pub, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%w: fleet bundle %s: %v", ErrIntegrity, path, err)
	}
	return bundle, nil
}

// tokenSubject reads the subject of an account token without verifying it
// (the relay does), to catch a token for another account before anything
// is sent. ok is false if the token cannot be read.
func tokenSubject(tok string) (sub string, ok bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", false
	}
	var c struct {
		Sub *string `json:"sub"`
	}
	if json.Unmarshal(payload, &c) != nil || c.Sub == nil {
		return "", false
	}
	return *c.Sub, true
}
