// Package keyfile keeps a sealing key in a file: for development and for
// operators without an HSM. The file is JSON, mode 0600:
//
//	{
//	  "coffer_sealing_key": 1,
//	  "key_id": "3f1c0a9e5b7d2468",
//	  "key": "base64 of 32 random bytes"
//	}
//
// Whoever reads the file can open everything the replica sealed: keep it
// off the data disk (another volume, a secrets manager mount) so a copied
// data disk alone reveals nothing. Load refuses a file that others can read.
package keyfile

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cofferhq/coffer/internal/atomicfile"
	"github.com/cofferhq/coffer/internal/server/sealing"
)

const version = 1

type file struct {
	Version int    `json:"coffer_sealing_key"`
	KeyID   string `json:"key_id"`
	Key     string `json:"key"`
}

// ErrExists: Create found a file at path.
var ErrExists = errors.New("a sealing key file already exists")

// Create makes a new random key and writes it to path (0600; the directory
// is created 0700). It refuses to overwrite an existing file.
func Create(path string) (*sealing.SoftKey, error) {
	var secret [32]byte
	rand.Read(secret[:])
	defer clear(secret[:])
	data, err := json.MarshalIndent(file{
		Version: version,
		KeyID:   sealing.KeyID(&secret),
		Key:     base64.StdEncoding.EncodeToString(secret[:]),
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	data = append(data, '\n')
	defer clear(data)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("sealing key file: %w", err)
	}
	err = atomicfile.CreateExclusive(path, data, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("sealing key file %s: %w (a new key would not open what the old one sealed)", path, ErrExists)
	}
	if err != nil {
		return nil, fmt.Errorf("sealing key file: %w", err)
	}
	return sealing.NewKey(&secret, name(path)), nil
}

// Load reads the key at path. It refuses a file readable or writable by
// group or others (chmod 600 it).
func Load(path string) (*sealing.SoftKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("sealing key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("sealing key file %s has mode %v: others can read or change it; run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sealing key file: %w", err)
	}
	defer clear(data)
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("sealing key file %s is damaged: %v", path, err)
	}
	if f.Version != version {
		return nil, fmt.Errorf("sealing key file %s has version %d; this Coffer reads version %d", path, f.Version, version)
	}
	raw, err := base64.StdEncoding.DecodeString(f.Key)
	defer clear(raw)
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("sealing key file %s: the key is not 32 bytes of base64", path)
	}
	var secret [32]byte
	copy(secret[:], raw)
	defer clear(secret[:])
	if id := sealing.KeyID(&secret); id != f.KeyID {
		return nil, fmt.Errorf("sealing key file %s: key_id %s does not match the key (%s): the file was edited", path, f.KeyID, id)
	}
	return sealing.NewKey(&secret, name(path)), nil
}

func name(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return "key file " + path
}
