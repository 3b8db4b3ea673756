package sealing

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cofferhq/coffer/internal/atomicfile"
)

// A wrapped data key is the envelope scheme for keys that must not leave
// their device (a PKCS#11 token): a 32-byte data key, sealed by the token's
// key (the key-encryption key, KEK), is stored in a small file beside the
// data; at start-up the token opens it once and the data key then seals
// everything in process memory (SoftKey). The token is needed to start a
// replica, and a copied disk holds only the wrapped data key.

const (
	wrappedKeyVersion = 1
	purposeWrappedKey = "coffer sealing v1 wrapped data key"
)

type wrappedKeyFile struct {
	Version   int    `json:"coffer_wrapped_data_key"`
	KeyID     string `json:"key_id"`
	WrappedBy string `json:"wrapped_by"`
	Wrapped   string `json:"wrapped"`
}

// WrapSecret seals a 32-byte data key under kek and returns the wrapped key
// file's contents (JSON). The data key's id (KeyID) is bound as associated
// data, so the file's key_id cannot be edited unnoticed.
func WrapSecret(kek Key, secret *[32]byte) ([]byte, error) {
	id := KeyID(secret)
	w, err := kek.Seal(AAD(purposeWrappedKey, []byte(id)), secret[:])
	if err != nil {
		return nil, fmt.Errorf("sealing: wrap data key with %s: %w", kek.Name(), err)
	}
	out, err := json.MarshalIndent(wrappedKeyFile{
		Version:   wrappedKeyVersion,
		KeyID:     id,
		WrappedBy: kek.Name(),
		Wrapped:   base64.StdEncoding.EncodeToString(w),
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// UnwrapSecret opens a wrapped key file's contents with kek.
func UnwrapSecret(kek Key, data []byte) (*[32]byte, error) {
	var f wrappedKeyFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("sealing: wrapped data key is damaged: %v", err)
	}
	if f.Version != wrappedKeyVersion {
		return nil, fmt.Errorf("sealing: wrapped data key has version %d; this Coffer reads version %d", f.Version, wrappedKeyVersion)
	}
	w, err := base64.StdEncoding.DecodeString(f.Wrapped)
	if err != nil {
		return nil, fmt.Errorf("sealing: wrapped data key is damaged: %v", err)
	}
	plain, err := kek.Open(AAD(purposeWrappedKey, []byte(f.KeyID)), w)
	if err != nil {
		return nil, fmt.Errorf("sealing: data key %s (wrapped by %s) does not open: %w", f.KeyID, f.WrappedBy, err)
	}
	defer clear(plain)
	if len(plain) != 32 {
		return nil, fmt.Errorf("sealing: wrapped data key: %w", ErrFormat)
	}
	var s [32]byte
	copy(s[:], plain)
	if KeyID(&s) != f.KeyID {
		return nil, fmt.Errorf("sealing: wrapped data key: %w", ErrFormat)
	}
	return &s, nil
}

// CreateWrappedKey writes a wrapped data key file at path (0600, refusing
// to overwrite one) and returns the data key. secret nil makes a random data
// key; pass the fleet's data key to give every replica the same one, each
// wrapped by its own token (README.md: why the fleet shares it).
func CreateWrappedKey(kek Key, path string, secret *[32]byte) (*SoftKey, error) {
	var s [32]byte
	if secret != nil {
		s = *secret
	} else {
		rand.Read(s[:])
	}
	defer clear(s[:])
	data, err := WrapSecret(kek, &s)
	if err != nil {
		return nil, err
	}
	if err := writeNewFile(path, data); err != nil {
		return nil, fmt.Errorf("sealing: write wrapped data key: %w", err)
	}
	return NewKey(&s, wrappedName(kek, path)), nil
}

// LoadWrappedKey reads a wrapped data key file and opens it with kek.
func LoadWrappedKey(kek Key, path string) (*SoftKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sealing: read wrapped data key: %w", err)
	}
	s, err := UnwrapSecret(kek, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer clear(s[:])
	return NewKey(s, wrappedName(kek, path)), nil
}

func wrappedName(kek Key, path string) string {
	return fmt.Sprintf("data key %s wrapped by %s", path, kek.Name())
}

// writeNewFile writes data to a new file at path (0600, O_EXCL), fsyncs it
// and its directory.
func writeNewFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.CreateExclusive(path, data, 0o600)
}
