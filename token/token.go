// Package token implements the account tokens of PROTOCOL.md section 4: a
// short-lived JWT (JWS compact serialization, RFC 7515/7519) signed with
// Ed25519 ("alg":"EdDSA", RFC 8037) by the integrating app's backend, and
// verified by the relay with the backend's public key.
//
// The backend may use any JWT library that signs EdDSA with an Ed25519 key;
// MarshalPrivateKeyPEM and MarshalPublicKeyPEM write the standard PKCS#8
// and PKIX PEM forms such libraries read. A token looks like
//
//	header  {"alg":"EdDSA","typ":"JWT"}
//	claims  {"iss":"https://app.example","sub":"user-42","aud":"coffer-relay","exp":1767229200,"iat":1767225600}
//
// Verify is strict: it accepts only EdDSA (or its RFC 9864 name Ed25519),
// never "none" or any other algorithm, only exactly three unpadded base64url
// segments, no duplicate JSON members, no token longer than MaxTokenSize.
package token

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// Limits and defaults.
const (
	// MaxTokenSize bounds the tokens Verify reads.
	MaxTokenSize = 4096
	// MaxSubjectSize is the longest account id.
	MaxSubjectSize = 128
	// DefaultMaxLifetime is the longest exp − iat a Verifier accepts when
	// its MaxLifetime is zero.
	DefaultMaxLifetime = time.Hour
	// DefaultLeeway is a sensible clock-skew allowance for Verifier.Leeway.
	DefaultLeeway = 30 * time.Second
)

// Errors returned by Verify, wrapped with details that never include the
// token. Test with errors.Is.
var (
	ErrMalformed   = errors.New("token is malformed")
	ErrAlgorithm   = errors.New("token algorithm is not accepted (only EdDSA)")
	ErrSignature   = errors.New("token signature does not verify (wrong key, or altered)")
	ErrExpired     = errors.New("token has expired")
	ErrNotYetValid = errors.New("token is not yet valid")
	ErrLifetime    = errors.New("token lives longer than the relay allows")
	ErrIssuer      = errors.New("token is from another issuer")
	ErrAudience    = errors.New("token is for another audience")
	ErrSubject     = errors.New("token subject is not a valid account id")
)

// Claims are the claims of an account token.
type Claims struct {
	// Issuer ("iss") names the app backend that signed the token.
	Issuer string
	// Subject ("sub") is the account id: 1–128 bytes of printable ASCII
	// without spaces (0x21–0x7E).
	Subject string
	// Audience ("aud") names the relay deployment the token is for.
	Audience string
	// Expiry ("exp"), IssuedAt ("iat") and the optional NotBefore ("nbf").
	// They are encoded as whole seconds.
	Expiry, IssuedAt, NotBefore time.Time
}

var b64 = base64.RawURLEncoding.Strict()

// header is the only header Mint writes.
const header = `{"alg":"EdDSA","typ":"JWT"}`

type claimsJSON struct {
	Iss string `json:"iss"`
	Sub string `json:"sub"`
	Aud string `json:"aud"`
	Exp int64  `json:"exp"`
	Iat int64  `json:"iat"`
	Nbf int64  `json:"nbf,omitempty"`
}

// ValidSubject reports whether s is a valid account id: 1 to 128 bytes,
// each a printable ASCII character other than space (0x21–0x7E).
func ValidSubject(s string) error {
	if len(s) == 0 || len(s) > MaxSubjectSize {
		return fmt.Errorf("%w: it is %d bytes, want 1 to %d", ErrSubject, len(s), MaxSubjectSize)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return fmt.Errorf("%w: byte %d is 0x%02x, not printable ASCII without space", ErrSubject, i, s[i])
		}
	}
	return nil
}

// Mint signs a token with the backend's private key. IssuedAt defaults to
// now; Expiry must be set and after IssuedAt; NotBefore is optional.
// Times are truncated to whole seconds.
func Mint(priv ed25519.PrivateKey, c Claims) (string, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return "", fmt.Errorf("token: private key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	if err := ValidSubject(c.Subject); err != nil {
		return "", fmt.Errorf("token: cannot mint: %w", err)
	}
	if c.Issuer == "" || c.Audience == "" {
		return "", errors.New("token: cannot mint: issuer and audience must be set")
	}
	if c.IssuedAt.IsZero() {
		c.IssuedAt = time.Now()
	}
	if c.Expiry.IsZero() {
		return "", errors.New("token: cannot mint: expiry must be set")
	}
	j := claimsJSON{Iss: c.Issuer, Sub: c.Subject, Aud: c.Audience, Exp: c.Expiry.Unix(), Iat: c.IssuedAt.Unix()}
	if j.Exp <= j.Iat {
		return "", errors.New("token: cannot mint: expiry must be after the issue time")
	}
	if !c.NotBefore.IsZero() {
		if j.Nbf = c.NotBefore.Unix(); j.Nbf <= 0 {
			return "", errors.New("token: cannot mint: not-before must be after 1970")
		}
	}
	if j.Iat <= 0 {
		return "", errors.New("token: cannot mint: issue time must be after 1970")
	}
	payload, err := json.Marshal(j)
	if err != nil {
		return "", fmt.Errorf("token: encoding claims: %w", err)
	}
	signing := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString(payload)
	if len(signing)+1+86 > MaxTokenSize {
		return "", fmt.Errorf("token: cannot mint: the token would be longer than %d bytes", MaxTokenSize)
	}
	sig := ed25519.Sign(priv, []byte(signing))
	return signing + "." + b64.EncodeToString(sig), nil
}

// Verifier checks account tokens. Key, Issuer and Audience are required.
type Verifier struct {
	// Key is the app backend's public key.
	Key ed25519.PublicKey
	// Issuer and Audience are the exact "iss" and "aud" to accept (a token
	// may also carry "aud" as an array that contains Audience).
	Issuer, Audience string
	// MaxLifetime bounds exp − iat; zero means DefaultMaxLifetime.
	MaxLifetime time.Duration
	// Leeway is the clock skew allowed on exp, nbf and iat; zero means
	// none (DefaultLeeway is a sensible value).
	Leeway time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Verify checks a token and returns its claims. Errors wrap ErrMalformed,
// ErrAlgorithm, ErrSignature, ErrExpired, ErrNotYetValid, ErrLifetime,
// ErrIssuer, ErrAudience or ErrSubject, and never contain the token. Nothing
// in the claims is looked at before the signature verifies.
func (v *Verifier) Verify(tok string) (*Claims, error) {
	if len(v.Key) != ed25519.PublicKeySize || v.Issuer == "" || v.Audience == "" {
		return nil, errors.New("token: verifier is not configured (key, issuer and audience are required)")
	}
	if tok == "" {
		return nil, fmt.Errorf("token: %w: empty", ErrMalformed)
	}
	if len(tok) > MaxTokenSize {
		return nil, fmt.Errorf("token: %w: %d bytes, more than %d", ErrMalformed, len(tok), MaxTokenSize)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("token: %w: %d segments, want 3 (header.payload.signature)", ErrMalformed, len(parts))
	}
	hdr, err := b64.DecodeString(parts[0])
	if err != nil || len(hdr) == 0 {
		return nil, fmt.Errorf("token: %w: header is not unpadded base64url", ErrMalformed)
	}
	if err := checkHeader(hdr); err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("token: %w: signature is not %d bytes of unpadded base64url", ErrMalformed, ed25519.SignatureSize)
	}
	if !ed25519.Verify(v.Key, []byte(tok[:len(parts[0])+1+len(parts[1])]), sig) {
		return nil, fmt.Errorf("token: %w", ErrSignature)
	}
	payload, err := b64.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("token: %w: payload is not unpadded base64url", ErrMalformed)
	}
	c, err := v.check(payload)
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	return c, nil
}

func checkHeader(hdr []byte) error {
	members, err := decodeObject(hdr)
	if err != nil {
		return fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	var alg string
	for name, raw := range members {
		switch name {
		case "alg":
			if err := json.Unmarshal(raw, &alg); err != nil {
				return fmt.Errorf("%w: header \"alg\" is not a string", ErrMalformed)
			}
		case "typ":
			var typ string
			if err := json.Unmarshal(raw, &typ); err != nil || !strings.EqualFold(typ, "JWT") {
				return fmt.Errorf("%w: header \"typ\" is not \"JWT\"", ErrMalformed)
			}
		case "kid":
			var kid string
			if err := json.Unmarshal(raw, &kid); err != nil {
				return fmt.Errorf("%w: header \"kid\" is not a string", ErrMalformed)
			}
		default:
			// Including "crit", "jwk", "jku", "x5u": the key is configured,
			// and no extension is understood.
			return fmt.Errorf("%w: header parameter %q is not supported", ErrMalformed, truncate(name))
		}
	}
	switch alg {
	case "EdDSA", "Ed25519":
		return nil
	case "":
		return fmt.Errorf("%w: header has no \"alg\"", ErrMalformed)
	default:
		return fmt.Errorf("%w: got %q", ErrAlgorithm, truncate(alg))
	}
}

func (v *Verifier) check(payload []byte) (*Claims, error) {
	members, err := decodeObject(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	c := &Claims{}
	str := func(name string, dst *string) error {
		raw, ok := members[name]
		if !ok {
			return fmt.Errorf("%w: no %q claim", ErrMalformed, name)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return fmt.Errorf("%w: %q claim is not a string", ErrMalformed, name)
		}
		return nil
	}
	date := func(name string, dst *time.Time, required bool) error {
		raw, ok := members[name]
		if !ok {
			if required {
				return fmt.Errorf("%w: no %q claim", ErrMalformed, name)
			}
			return nil
		}
		t, err := numericDate(raw)
		if err != nil {
			return fmt.Errorf("%w: %q claim: %v", ErrMalformed, name, err)
		}
		*dst = t
		return nil
	}
	if err := str("iss", &c.Issuer); err != nil {
		return nil, err
	}
	if err := str("sub", &c.Subject); err != nil {
		return nil, err
	}
	if err := date("exp", &c.Expiry, true); err != nil {
		return nil, err
	}
	if err := date("iat", &c.IssuedAt, true); err != nil {
		return nil, err
	}
	if err := date("nbf", &c.NotBefore, false); err != nil {
		return nil, err
	}
	aud, ok := members["aud"]
	if !ok {
		return nil, fmt.Errorf("%w: no \"aud\" claim", ErrMalformed)
	}
	var auds []string
	var one string
	if json.Unmarshal(aud, &one) == nil {
		auds = []string{one}
	} else if err := json.Unmarshal(aud, &auds); err != nil {
		return nil, fmt.Errorf("%w: \"aud\" claim is neither a string nor an array of strings", ErrMalformed)
	}

	if c.Issuer != v.Issuer {
		return nil, fmt.Errorf("%w: iss is %q, the relay accepts %q", ErrIssuer, truncate(c.Issuer), v.Issuer)
	}
	found := false
	for _, a := range auds {
		found = found || a == v.Audience
	}
	if !found {
		return nil, fmt.Errorf("%w: the relay's audience is %q", ErrAudience, v.Audience)
	}
	c.Audience = v.Audience
	if err := ValidSubject(c.Subject); err != nil {
		return nil, err
	}

	now := v.now()
	maxLife := v.MaxLifetime
	if maxLife <= 0 {
		maxLife = DefaultMaxLifetime
	}
	if !c.Expiry.After(c.IssuedAt) {
		return nil, fmt.Errorf("%w: exp is not after iat", ErrMalformed)
	}
	if life := c.Expiry.Sub(c.IssuedAt); life > maxLife {
		return nil, fmt.Errorf("%w: exp − iat is %s, the maximum is %s (mint shorter-lived tokens)", ErrLifetime, life, maxLife)
	}
	if !now.Before(c.Expiry.Add(v.Leeway)) {
		return nil, fmt.Errorf("%w: at %s (get a new token; check the clock)", ErrExpired, c.Expiry.Format(time.RFC3339))
	}
	if !c.NotBefore.IsZero() && now.Add(v.Leeway).Before(c.NotBefore) {
		return nil, fmt.Errorf("%w: valid from %s (check the clock)", ErrNotYetValid, c.NotBefore.Format(time.RFC3339))
	}
	if now.Add(v.Leeway).Before(c.IssuedAt) {
		return nil, fmt.Errorf("%w: issued in the future, at %s (check the clocks)", ErrNotYetValid, c.IssuedAt.Format(time.RFC3339))
	}
	return c, nil
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// maxDate is 9999-12-31T23:59:59Z.
const maxDate = 253402300799

// numericDate parses an RFC 7519 NumericDate: seconds since the epoch,
// possibly with a fraction.
func numericDate(raw json.RawMessage) (time.Time, error) {
	s := string(raw)
	if s == "" || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) {
		return time.Time{}, errors.New("not a number")
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > maxDate {
		return time.Time{}, errors.New("not a date between 1970 and 9999")
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}

// decodeObject decodes one JSON object into its members, refusing
// duplicate names and trailing data.
func decodeObject(data []byte) (map[string]json.RawMessage, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	t, err := d.Token()
	if err != nil || t != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	m := map[string]json.RawMessage{}
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return nil, errors.New("not a JSON object")
		}
		name, ok := t.(string)
		if !ok {
			return nil, errors.New("not a JSON object")
		}
		if _, dup := m[name]; dup {
			return nil, fmt.Errorf("member %q appears twice", truncate(name))
		}
		var raw json.RawMessage
		if err := d.Decode(&raw); err != nil {
			return nil, errors.New("not a JSON object")
		}
		m[name] = raw
	}
	if _, err := d.Token(); err != nil {
		return nil, errors.New("not a JSON object")
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON object")
	}
	return m, nil
}

// truncate keeps attacker-chosen strings in error messages short.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
