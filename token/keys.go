package token

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// GenerateKey makes a new Ed25519 key pair for an app backend.
func GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("token: generating a key: %w", err)
	}
	return pub, priv, nil
}

// MarshalPrivateKeyPEM encodes a private key as a PEM "PRIVATE KEY" block
// (PKCS#8, RFC 8410), the form JWT libraries and OpenSSL read.
func MarshalPrivateKeyPEM(priv ed25519.PrivateKey) ([]byte, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("token: private key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("token: encoding the private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// MarshalPublicKeyPEM encodes a public key as a PEM "PUBLIC KEY" block
// (PKIX SubjectPublicKeyInfo, RFC 8410).
func MarshalPublicKeyPEM(pub ed25519.PublicKey) ([]byte, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("token: public key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("token: encoding the public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePrivateKeyPEM reads an Ed25519 private key from a PEM "PRIVATE KEY"
// (PKCS#8) block, as written by MarshalPrivateKeyPEM or
// `openssl genpkey -algorithm ed25519`. Its errors never contain key
// material.
func ParsePrivateKeyPEM(data []byte) (ed25519.PrivateKey, error) {
	der, err := onePEM(data, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, errors.New("token: the PRIVATE KEY block is not PKCS#8")
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("token: the private key is %T, want an Ed25519 key", k)
	}
	return priv, nil
}

// ParsePublicKeyPEM reads an Ed25519 public key from a PEM "PUBLIC KEY"
// (PKIX) block, as written by MarshalPublicKeyPEM or `openssl pkey -pubout`.
func ParsePublicKeyPEM(data []byte) (ed25519.PublicKey, error) {
	der, err := onePEM(data, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, errors.New("token: the PUBLIC KEY block is not a PKIX public key")
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("token: the public key is %T, want an Ed25519 key", k)
	}
	return pub, nil
}

func onePEM(data []byte, typ string) ([]byte, error) {
	b, rest := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("token: no PEM %q block found", typ)
	}
	if b.Type != typ {
		return nil, fmt.Errorf("token: PEM block is %q, want %q", b.Type, typ)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("token: unexpected data after the PEM %q block", typ)
	}
	return b.Bytes, nil
}
