// Package fleet implements the fleet bundle of PROTOCOL.md section 3: the
// signed statement, made with the fleet's offline Ed25519 root key, of the
// public keys clients use to reach a vault fleet.
//
// A client pins the root public key (in its text form, see
// FormatRootPublicKey) and accepts a fleet's keys only from a bundle that
// Verify accepts under that key:
//
//	root, err := fleet.ParseRootPublicKey(os.Getenv("COFFER_FLEET_ROOT"))
//	b, err := fleet.Verify(signedBytes, root, time.Now())
//	// b.HPKEPublicKey, b.FleetID and b.OPAQUEServerPublicKey are now trusted.
//
// The key ceremony makes the root with GenerateRoot and signs bundles with
// Sign; the root's private key is then stored offline.
package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Version is the only bundle version this package reads and writes.
const Version = 1

// Sizes of the keys a version 1 bundle carries.
const (
	// HPKEPublicKeySize is the size of an MLKEM768X25519 public key.
	HPKEPublicKeySize = 1216
	// OPAQUEServerPublicKeySize is the size of a ristretto255 element.
	OPAQUEServerPublicKeySize = 32
)

// MaxSignedSize bounds the signed file Verify accepts. A version 1 bundle
// is about 2.3 KiB.
const MaxSignedSize = 64 << 10

// signatureContext is prepended to the bundle bytes before signing, so a
// root signature over a bundle can never be mistaken for anything else.
const signatureContext = "coffer fleet bundle v1\n"

// Text forms of the root key (see FormatRootPublicKey).
const (
	rootPublicPrefix  = "coffer-fleet-root:"
	rootPrivatePrefix = "coffer-fleet-root-secret:"
)

// Errors returned by Verify. Each is wrapped with details; test with
// errors.Is.
var (
	// ErrMalformed: the file is not a well-formed signed bundle.
	ErrMalformed = errors.New("fleet bundle is malformed")
	// ErrBadSignature: the signature does not verify under the pinned root
	// key (the bundle was altered, or was signed by another fleet's root).
	ErrBadSignature = errors.New("fleet bundle signature does not verify under the pinned fleet root key")
	// ErrUnknownVersion: the bundle is signed but has a version this
	// program does not know.
	ErrUnknownVersion = errors.New("fleet bundle version is not supported")
	// ErrNotYetValid: now is before the bundle's not_before.
	ErrNotYetValid = errors.New("fleet bundle is not yet valid")
	// ErrExpired: now is after the bundle's not_after.
	ErrExpired = errors.New("fleet bundle has expired")
)

// Bundle is the content of a fleet bundle.
type Bundle struct {
	// Version is the bundle format version; Version (1) is the only one.
	Version int
	// FleetID names the fleet; it is bound into every sealed request.
	FleetID [16]byte
	// HPKEPublicKey is the fleet's MLKEM768X25519 public key
	// (HPKEPublicKeySize bytes).
	HPKEPublicKey []byte
	// OPAQUEServerPublicKey is the fleet's OPAQUE server public key
	// (OPAQUEServerPublicKeySize bytes).
	OPAQUEServerPublicKey []byte
	// NotBefore and NotAfter bound the period in which clients accept the
	// bundle (both inclusive). They are kept to the second.
	NotBefore, NotAfter time.Time
}

// signedFile is the outer JSON object of the signed file.
type signedFile struct {
	Bundle    string `json:"bundle"`
	Signature string `json:"signature"`
}

// bundleJSON is the bundle's wire form.
type bundleJSON struct {
	Version               int    `json:"version"`
	FleetID               string `json:"fleet_id"`
	HPKEPublicKey         string `json:"hpke_public_key"`
	OPAQUEServerPublicKey string `json:"opaque_server_public_key"`
	NotBefore             string `json:"not_before"`
	NotAfter              string `json:"not_after"`
}

var b64 = base64.StdEncoding.Strict()

// GenerateRoot makes a new fleet root key pair. Keep the private key
// offline; publish the public key (FormatRootPublicKey) to clients.
func GenerateRoot() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: generating the root key: %w", err)
	}
	return pub, priv, nil
}

// check reports whether b is a valid version 1 bundle.
func (b *Bundle) check() error {
	if b.Version != Version {
		return fmt.Errorf("%w: version %d (this program reads version %d; upgrade it)", ErrUnknownVersion, b.Version, Version)
	}
	if b.FleetID == ([16]byte{}) {
		return fmt.Errorf("%w: fleet id is all zeros", ErrMalformed)
	}
	if len(b.HPKEPublicKey) != HPKEPublicKeySize {
		return fmt.Errorf("%w: HPKE public key is %d bytes, want %d", ErrMalformed, len(b.HPKEPublicKey), HPKEPublicKeySize)
	}
	if _, err := hpke.MLKEM768X25519().NewPublicKey(b.HPKEPublicKey); err != nil {
		return fmt.Errorf("%w: HPKE public key is not a valid MLKEM768X25519 key", ErrMalformed)
	}
	if len(b.OPAQUEServerPublicKey) != OPAQUEServerPublicKeySize {
		return fmt.Errorf("%w: OPAQUE server public key is %d bytes, want %d", ErrMalformed, len(b.OPAQUEServerPublicKey), OPAQUEServerPublicKeySize)
	}
	if b.NotBefore.IsZero() || b.NotAfter.IsZero() {
		return fmt.Errorf("%w: validity period not set", ErrMalformed)
	}
	if !b.NotAfter.After(b.NotBefore) {
		return fmt.Errorf("%w: not_after (%s) is not after not_before (%s)", ErrMalformed,
			b.NotAfter.UTC().Format(time.RFC3339), b.NotBefore.UTC().Format(time.RFC3339))
	}
	for _, t := range []time.Time{b.NotBefore, b.NotAfter} {
		if y := t.UTC().Year(); y < 1 || y > 9999 {
			return fmt.Errorf("%w: validity time outside years 1-9999", ErrMalformed)
		}
	}
	return nil
}

// Sign checks b, encodes it and signs it with the fleet root key, returning
// the signed file (JSON, PROTOCOL.md section 3). Times are written in UTC to
// the second.
func Sign(b *Bundle, root ed25519.PrivateKey) ([]byte, error) {
	if len(root) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("fleet: root private key is %d bytes, want %d", len(root), ed25519.PrivateKeySize)
	}
	if err := b.check(); err != nil {
		return nil, fmt.Errorf("fleet: cannot sign: %w", err)
	}
	inner, err := json.Marshal(bundleJSON{
		Version:               b.Version,
		FleetID:               hex.EncodeToString(b.FleetID[:]),
		HPKEPublicKey:         b64.EncodeToString(b.HPKEPublicKey),
		OPAQUEServerPublicKey: b64.EncodeToString(b.OPAQUEServerPublicKey),
		NotBefore:             b.NotBefore.UTC().Format(time.RFC3339),
		NotAfter:              b.NotAfter.UTC().Format(time.RFC3339),
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: encoding the bundle: %w", err)
	}
	sig := ed25519.Sign(root, signedMessage(inner))
	out, err := json.Marshal(signedFile{
		Bundle:    b64.EncodeToString(inner),
		Signature: b64.EncodeToString(sig),
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: encoding the signed bundle: %w", err)
	}
	return append(out, '\n'), nil
}

func signedMessage(inner []byte) []byte {
	m := make([]byte, 0, len(signatureContext)+len(inner))
	return append(append(m, signatureContext...), inner...)
}

// Verify checks a signed bundle file under the pinned root public key and
// returns its content if the signature verifies, the version is known, the
// content is well-formed and now is within the validity period.
//
// Errors wrap ErrMalformed, ErrBadSignature, ErrUnknownVersion,
// ErrNotYetValid or ErrExpired. Nothing inside the bundle is interpreted
// before its signature is verified.
func Verify(signed []byte, root ed25519.PublicKey, now time.Time) (*Bundle, error) {
	if len(root) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("fleet: pinned root public key is %d bytes, want %d", len(root), ed25519.PublicKeySize)
	}
	if len(signed) > MaxSignedSize {
		return nil, fmt.Errorf("fleet: %w: file is %d bytes, more than %d", ErrMalformed, len(signed), MaxSignedSize)
	}
	var f signedFile
	if err := decodeStrict(signed, &f); err != nil {
		return nil, fmt.Errorf("fleet: %w: %v", ErrMalformed, err)
	}
	inner, err := b64.DecodeString(f.Bundle)
	if err != nil || len(inner) == 0 {
		return nil, fmt.Errorf("fleet: %w: \"bundle\" is not non-empty base64", ErrMalformed)
	}
	sig, err := b64.DecodeString(f.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("fleet: %w: \"signature\" is not %d bytes of base64", ErrMalformed, ed25519.SignatureSize)
	}
	if !ed25519.Verify(root, signedMessage(inner), sig) {
		return nil, fmt.Errorf("fleet: %w (check COFFER_FLEET_ROOT or the bundle file)", ErrBadSignature)
	}

	// The version decides how to read the rest, so read it first.
	var v struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(inner, &v); err != nil || v.Version == nil {
		return nil, fmt.Errorf("fleet: %w: bundle has no version", ErrMalformed)
	}
	if *v.Version != Version {
		return nil, fmt.Errorf("fleet: %w: version %d (this program reads version %d; upgrade it)", ErrUnknownVersion, *v.Version, Version)
	}
	var j bundleJSON
	if err := decodeStrict(inner, &j); err != nil {
		return nil, fmt.Errorf("fleet: %w: %v", ErrMalformed, err)
	}
	b, err := j.decode()
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	if now.Before(b.NotBefore) {
		return nil, fmt.Errorf("fleet: %w: valid from %s, now is %s (check the clock)", ErrNotYetValid,
			b.NotBefore.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.After(b.NotAfter) {
		return nil, fmt.Errorf("fleet: %w: valid until %s, now is %s (get the fleet's current bundle)", ErrExpired,
			b.NotAfter.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return b, nil
}

func (j *bundleJSON) decode() (*Bundle, error) {
	b := &Bundle{Version: j.Version}
	id, err := hex.DecodeString(j.FleetID)
	if err != nil || len(id) != 16 || j.FleetID != strings.ToLower(j.FleetID) {
		return nil, fmt.Errorf("%w: fleet_id is not 32 lowercase hex digits", ErrMalformed)
	}
	b.FleetID = [16]byte(id)
	if b.HPKEPublicKey, err = b64.DecodeString(j.HPKEPublicKey); err != nil {
		return nil, fmt.Errorf("%w: hpke_public_key is not base64", ErrMalformed)
	}
	if b.OPAQUEServerPublicKey, err = b64.DecodeString(j.OPAQUEServerPublicKey); err != nil {
		return nil, fmt.Errorf("%w: opaque_server_public_key is not base64", ErrMalformed)
	}
	if b.NotBefore, err = time.Parse(time.RFC3339, j.NotBefore); err != nil {
		return nil, fmt.Errorf("%w: not_before is not an RFC 3339 time", ErrMalformed)
	}
	if b.NotAfter, err = time.Parse(time.RFC3339, j.NotAfter); err != nil {
		return nil, fmt.Errorf("%w: not_after is not an RFC 3339 time", ErrMalformed)
	}
	b.NotBefore, b.NotAfter = b.NotBefore.UTC(), b.NotAfter.UTC()
	if err := b.check(); err != nil {
		return nil, err
	}
	return b, nil
}

// decodeStrict decodes exactly one JSON object into v, refusing unknown
// fields, duplicate names and trailing data.
func decodeStrict(data []byte, v any) error {
	if err := checkNoDuplicates(data); err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// checkNoDuplicates refuses a top-level JSON object that names a member
// twice (encoding/json would silently keep the last one).
func checkNoDuplicates(data []byte) error {
	d := json.NewDecoder(bytes.NewReader(data))
	t, err := d.Token()
	if err != nil {
		return err
	}
	if t != json.Delim('{') {
		return errors.New("not a JSON object")
	}
	seen := map[string]bool{}
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return err
		}
		name, ok := t.(string)
		if !ok {
			return errors.New("bad JSON object")
		}
		if seen[name] {
			return fmt.Errorf("member %q appears twice", name)
		}
		seen[name] = true
		var skip json.RawMessage
		if err := d.Decode(&skip); err != nil {
			return err
		}
	}
	return nil
}

// FormatRootPublicKey returns the text form of a fleet root public key:
// "coffer-fleet-root:" followed by the 32 key bytes in unpadded base64url
// (RFC 4648 section 5), 61 characters in all, safe in environment
// variables, URLs and shell commands. This is the form of COFFER_FLEET_ROOT.
func FormatRootPublicKey(pub ed25519.PublicKey) string {
	return rootPublicPrefix + base64.RawURLEncoding.EncodeToString(pub)
}

// ParseRootPublicKey parses the text form made by FormatRootPublicKey.
// Surrounding white space is ignored.
func ParseRootPublicKey(s string) (ed25519.PublicKey, error) {
	b, err := parseText(s, rootPublicPrefix, ed25519.PublicKeySize)
	if err != nil {
		return nil, fmt.Errorf("fleet: bad fleet root public key: %w", err)
	}
	return ed25519.PublicKey(b), nil
}

// FormatRootPrivateKey returns the text form of a fleet root private key:
// "coffer-fleet-root-secret:" followed by its 32-byte seed in unpadded
// base64url. It is a secret: store it offline.
func FormatRootPrivateKey(priv ed25519.PrivateKey) string {
	return rootPrivatePrefix + base64.RawURLEncoding.EncodeToString(priv.Seed())
}

// ParseRootPrivateKey parses the text form made by FormatRootPrivateKey.
// Surrounding white space is ignored. Its errors never contain key material.
func ParseRootPrivateKey(s string) (ed25519.PrivateKey, error) {
	b, err := parseText(s, rootPrivatePrefix, ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("fleet: bad fleet root private key: %w", err)
	}
	return ed25519.NewKeyFromSeed(b), nil
}

func parseText(s, prefix string, size int) ([]byte, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return nil, fmt.Errorf("it does not start with %q", prefix)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(rest)
	if err != nil {
		return nil, errors.New("it is not unpadded base64url after the prefix")
	}
	if len(b) != size {
		return nil, fmt.Errorf("it holds %d bytes, want %d", len(b), size)
	}
	return b, nil
}
