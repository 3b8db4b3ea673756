package sealing

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
)

// Sealed files: a small secret file (the fleet secrets) sealed whole under
// a Key, as JSON:
//
//	{"coffer_sealed_file": 1, "purpose": "fleet secrets", "sealed_by": "…", "sealed": "base64"}
//
// purpose is bound as associated data: a file sealed for one purpose does
// not open as another. sealed_by is informational (for error messages).

const (
	sealedFileVersion = 1
	purposeFile       = "coffer sealed file v1"
)

// PurposeFleetSecrets is the purpose of a vault's sealed fleet secrets file
// (vault.Secrets).
const PurposeFleetSecrets = "coffer fleet secrets"

// PurposeOPRFShare is the purpose of a replica's sealed OPRF share file
// (vault.LoadShareFileSealed).
const PurposeOPRFShare = "coffer oprf share"

type sealedFile struct {
	Version  int    `json:"coffer_sealed_file"`
	Purpose  string `json:"purpose"`
	SealedBy string `json:"sealed_by"`
	Sealed   string `json:"sealed"`
}

// WrapFile seals plaintext (a whole file's contents) under key for purpose
// and returns the sealed file's contents.
func WrapFile(key Key, purpose string, plaintext []byte) ([]byte, error) {
	s, err := key.Seal(AAD(purposeFile, []byte(purpose)), plaintext)
	if err != nil {
		return nil, fmt.Errorf("sealing: seal %s with %s: %w", purpose, key.Name(), err)
	}
	out, err := json.MarshalIndent(sealedFile{
		Version:  sealedFileVersion,
		Purpose:  purpose,
		SealedBy: key.Name(),
		Sealed:   base64.StdEncoding.EncodeToString(s),
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// IsWrappedFile reports whether data looks like a file made by WrapFile
// (so a loader can tell a sealed file from a plaintext one).
func IsWrappedFile(data []byte) bool {
	if !bytes.Contains(data, []byte(`"coffer_sealed_file"`)) {
		return false
	}
	var f sealedFile
	return json.Unmarshal(data, &f) == nil && f.Version != 0
}

// UnwrapFile opens a file made by WrapFile with the same key and purpose.
func UnwrapFile(key Key, purpose string, data []byte) ([]byte, error) {
	var f sealedFile
	if err := json.Unmarshal(data, &f); err != nil || f.Version == 0 {
		return nil, fmt.Errorf("sealing: not a sealed file: %w", ErrFormat)
	}
	if f.Version != sealedFileVersion {
		return nil, fmt.Errorf("sealing: sealed file has version %d; this Coffer reads version %d: %w", f.Version, sealedFileVersion, ErrUnsupportedVersion)
	}
	if f.Purpose != purpose {
		return nil, fmt.Errorf("sealing: sealed file holds %q, expected %q: %w", f.Purpose, purpose, ErrFormat)
	}
	s, err := base64.StdEncoding.DecodeString(f.Sealed)
	if err != nil {
		return nil, fmt.Errorf("sealing: sealed file is damaged: %w", ErrFormat)
	}
	plain, err := key.Open(AAD(purposeFile, []byte(purpose)), s)
	if err != nil {
		return nil, fmt.Errorf("sealing: %s (sealed by %s) does not open: %w", purpose, f.SealedBy, err)
	}
	return plain, nil
}

// WriteWrappedFile seals plaintext and writes it to a new file at path
// (0600, refusing to overwrite; fsynced).
func WriteWrappedFile(key Key, path, purpose string, plaintext []byte) error {
	data, err := WrapFile(key, purpose, plaintext)
	if err != nil {
		return err
	}
	if err := writeNewFile(path, data); err != nil {
		return fmt.Errorf("sealing: write %s: %w", path, err)
	}
	return nil
}

// ReadWrappedFile reads and opens a file written by WriteWrappedFile.
func ReadWrappedFile(key Key, path, purpose string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sealing: %w", err)
	}
	plain, err := UnwrapFile(key, purpose, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return plain, nil
}
