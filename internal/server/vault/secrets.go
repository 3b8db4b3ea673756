package vault

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cofferhq/coffer/internal/atomicfile"
	"github.com/cofferhq/coffer/internal/protocol/bundle"
	"github.com/cofferhq/coffer/internal/protocol/channel"
	"github.com/cofferhq/coffer/internal/protocol/pake"
	"github.com/cofferhq/coffer/internal/server/sealing"
)

// Secrets are a fleet's secrets, made once at the key ceremony and shared
// by every replica: the HPKE key requests are sealed to, the OPAQUE server
// keys, and the key that turns account ids into record ids.
type Secrets struct {
	FleetID     [16]byte
	HPKE        *channel.PrivateKey
	OPAQUE      *pake.ServerKeys
	RecordIDKey [32]byte
}

// GenerateSecrets makes fresh fleet secrets.
func GenerateSecrets() (*Secrets, error) {
	s := &Secrets{}
	rand.Read(s.FleetID[:])
	rand.Read(s.RecordIDKey[:])
	var err error
	if s.HPKE, err = channel.GenerateKey(); err != nil {
		return nil, err
	}
	if s.OPAQUE, err = pake.GenerateServerKeys(); err != nil {
		return nil, err
	}
	return s, nil
}

// Bundle returns the fleet bundle publishing the secrets' public keys,
// valid from now for validity.
func (s *Secrets) Bundle(now time.Time, validity time.Duration) *bundle.Bundle {
	return &bundle.Bundle{
		Version:               1,
		FleetID:               s.FleetID,
		HPKEPublicKey:         s.HPKE.PublicKey().Bytes(),
		OPAQUEServerPublicKey: append([]byte(nil), s.OPAQUE.PublicKey...),
		NotBefore:             now.UTC().Truncate(time.Second),
		NotAfter:              now.Add(validity).UTC().Truncate(time.Second),
	}
}

const secretsVersion = 1

type secretsFile struct {
	Version       int    `json:"coffer_fleet_secrets"`
	FleetID       string `json:"fleet_id"`
	HPKESeed      string `json:"hpke_seed"`
	OPRFSeed      string `json:"opaque_oprf_seed"`
	OPAQUEPrivate string `json:"opaque_private_key"`
	OPAQUEPublic  string `json:"opaque_public_key"`
	RecordIDKey   string `json:"record_id_key"`
}

// StorageKey returns the fleet-wide **legacy** storage key: derived from
// the record-id key with HKDF-SHA-256, it sealed every replica's disk before
// per-replica data keys (replica.DataKey), so any replica's secrets opened
// any replica's disk. It is used only to keep such a directory running
// until it is moved (OPERATIONS.md, "Per-replica storage keys") and to
// re-seal version 1 snapshots; never to seal a new directory.
func (s *Secrets) StorageKey() *sealing.SoftKey {
	k, err := hkdf.Key(sha256.New, s.RecordIDKey[:], s.FleetID[:], "coffer fleet storage key v1", 32)
	if err != nil {
		panic(err)
	}
	var secret [32]byte
	copy(secret[:], k)
	clear(k)
	return sealing.NewKey(&secret, fmt.Sprintf("fleet storage key of fleet %x", s.FleetID))
}

// SaveSealed writes the secrets to path sealed under kek (a replica's key
// file or PKCS#11 token key: sealing.WriteWrappedFile), refusing to
// overwrite a file. LoadSecretsSealed reads it.
func (s *Secrets) SaveSealed(path string, kek sealing.Key) error {
	data := s.marshal()
	defer clear(data)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("writing fleet secrets: %s already exists", path)
	}
	return sealing.WriteWrappedFile(kek, path, sealing.PurposeFleetSecrets, data)
}

func (s *Secrets) marshal() []byte {
	b64 := base64.StdEncoding.EncodeToString
	f := secretsFile{
		Version:       secretsVersion,
		FleetID:       hex.EncodeToString(s.FleetID[:]),
		HPKESeed:      b64(s.HPKE.Bytes()),
		OPRFSeed:      b64(s.OPAQUE.OPRFSeed),
		OPAQUEPrivate: b64(s.OPAQUE.PrivateKey),
		OPAQUEPublic:  b64(s.OPAQUE.PublicKey),
		RecordIDKey:   b64(s.RecordIDKey[:]),
	}
	data, _ := json.MarshalIndent(f, "", "  ")
	return data
}

// Save writes the secrets to path (0600), refusing to overwrite a file.
func (s *Secrets) Save(path string) error {
	data := s.marshal()
	defer clear(data)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := atomicfile.CreateExclusive(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing fleet secrets: %w", err)
	}
	return nil
}

// LoadSecrets reads secrets written by Save (plaintext). A sealed file is
// refused with a message naming the fix (LoadSecretsSealed).
func LoadSecrets(path string) (*Secrets, error) { return LoadSecretsSealed(path, nil) }

// ErrSecretsSealed: the fleet secrets file is sealed and no key was given.
var ErrSecretsSealed = errors.New("the fleet secrets are sealed: configure this replica's sealing key file or PKCS#11 token")

// LoadSecretsSealed reads secrets written by SaveSealed under kek, or by
// Save (plaintext: development fleets, and the copy the key ceremony
// makes). kek may be nil for plaintext files.
func LoadSecretsSealed(path string, kek sealing.Key) (*Secrets, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading fleet secrets: %w", err)
	}
	if sealing.IsWrappedFile(data) {
		if kek == nil {
			return nil, fmt.Errorf("fleet secrets %s: %w", path, ErrSecretsSealed)
		}
		plain, err := sealing.UnwrapFile(kek, sealing.PurposeFleetSecrets, data)
		if err != nil {
			return nil, fmt.Errorf("fleet secrets %s do not open with %s: %w", path, kek.Name(), err)
		}
		data = plain
	}
	defer clear(data)
	var f secretsFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("fleet secrets %s are damaged: %v", path, err)
	}
	if f.Version != secretsVersion {
		return nil, fmt.Errorf("fleet secrets %s have version %d; this Coffer reads version %d", path, f.Version, secretsVersion)
	}
	bad := func(what string) error { return fmt.Errorf("fleet secrets %s: bad %s", path, what) }
	s := &Secrets{OPAQUE: &pake.ServerKeys{}}
	id, err := hex.DecodeString(f.FleetID)
	if err != nil || len(id) != 16 {
		return nil, bad("fleet_id")
	}
	copy(s.FleetID[:], id)
	dec := base64.StdEncoding.DecodeString
	seed, err := dec(f.HPKESeed)
	if err != nil {
		return nil, bad("hpke_seed")
	}
	if s.HPKE, err = channel.NewPrivateKey(seed); err != nil {
		return nil, bad("hpke_seed")
	}
	clear(seed)
	if s.OPAQUE.OPRFSeed, err = dec(f.OPRFSeed); err != nil {
		return nil, bad("opaque_oprf_seed")
	}
	if len(s.OPAQUE.OPRFSeed) == 0 {
		s.OPAQUE.OPRFSeed = nil // a threshold fleet: the replicas' OPRF shares evaluate
	}
	if s.OPAQUE.PrivateKey, err = dec(f.OPAQUEPrivate); err != nil {
		return nil, bad("opaque_private_key")
	}
	if s.OPAQUE.PublicKey, err = dec(f.OPAQUEPublic); err != nil {
		return nil, bad("opaque_public_key")
	}
	if _, err := pake.NewServer(s.OPAQUE); err != nil {
		return nil, fmt.Errorf("fleet secrets %s: %w", path, err)
	}
	rk, err := dec(f.RecordIDKey)
	if err != nil || len(rk) != 32 {
		return nil, bad("record_id_key")
	}
	copy(s.RecordIDKey[:], rk)
	clear(rk)
	return s, nil
}
