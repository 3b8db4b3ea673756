// Package state keeps what a device remembers about its backups: which
// repository it backs up to, its backup key, and the newest generation it has
// seen (to notice a storage provider rolling the repository back).
//
// The state lives in one directory (--state DIR, env COFFER_STATE, default
// $XDG_CONFIG_HOME/coffer or its platform equivalent). Files are 0600, the
// directory 0700, and every file is versioned so a later Coffer can migrate it.
package devicestate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cofferhq/coffer/internal/atomicfile"
	"github.com/cofferhq/coffer/internal/device/backupkey"
)

// Version of the files written by this package.
const Version = 1

const (
	configFile   = "config.json"
	keyFile      = "backup-key"
	keyHeader    = "coffer backup key v1"
	verifierFile = "password-verifier.json"
)

// ErrNotInitialized: the state directory holds no configuration yet.
var ErrNotInitialized = errors.New("this device has no Coffer set up")

// ErrNoPasswordVerifier: the device keeps no password verifier (password
// recovery was never turned on here, or was turned off).
var ErrNoPasswordVerifier = errors.New("this device keeps no password verifier")

// Config is the device's non-secret configuration.
type Config struct {
	Version int `json:"version"`
	// Repository is the repository's location in canonical form
	// (storage.Location's String: an absolute path, or s3://…).
	Repository string `json:"repository"`
	// RepositoryID is the repository's id, hex, as read from its config.
	RepositoryID string `json:"repository_id"`
	// KeyFingerprint identifies the key (backupkey.Key.Fingerprint).
	KeyFingerprint string `json:"key_fingerprint"`
	// LastGeneration is the newest generation this device has written or
	// seen; a repository whose newest generation is older has been rolled
	// back.
	LastGeneration uint64 `json:"last_generation"`
	// Vault holds the password-recovery settings, once password recovery
	// has been turned on (or off) on this device.
	Vault *Vault `json:"vault,omitempty"`
}

// Vault is how the device reaches the vault fleet for password recovery.
// The account token is not kept: tokens are short-lived and come from the
// app's backend (COFFER_TOKEN) each time.
type Vault struct {
	// Relay is the relay's base URL (COFFER_RELAY).
	Relay string `json:"relay"`
	// Account is the account id (COFFER_ACCOUNT).
	Account string `json:"account"`
	// Fleet is the path of the signed fleet bundle (COFFER_FLEET).
	Fleet string `json:"fleet"`
	// FleetRoot is the pinned fleet root public key, in its text form
	// (COFFER_FLEET_ROOT).
	FleetRoot string `json:"fleet_root"`
	// Enabled: the backup key is stored in the vault under a password. It
	// is false after the device turned password recovery off.
	Enabled bool `json:"enabled"`
	// Epoch and GuessLimit of the record the device last stored.
	Epoch      uint64 `json:"epoch,omitempty"`
	GuessLimit int    `json:"guess_limit,omitempty"`
	// Changed is when the device last stored or erased its vault record.
	Changed time.Time `json:"changed,omitzero"`
}

// PasswordVerifier lets a device check a password locally, spending no
// guess in the vault: an Argon2id hash of the password with a random salt,
// and the parameters used. It is kept in its own file (0600).
type PasswordVerifier struct {
	Version   int    `json:"version"`
	Algorithm string `json:"algorithm"` // "argon2id"
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
	Salt      []byte `json:"salt"`
	Hash      []byte `json:"hash"`
}

// Dir is a device state directory.
type Dir struct {
	Path string
}

// DefaultPath returns the default state directory.
func DefaultPath() (string, error) {
	if p := os.Getenv("COFFER_STATE"); p != "" {
		return p, nil
	}
	base, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("cannot find a configuration directory for Coffer's state (%v): set --state DIR or COFFER_STATE", err)
	}
	return filepath.Join(base, "coffer"), nil
}

// Open returns the state directory at path, creating it (0700) if needed.
func Open(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create state directory: %w", err)
	}
	return &Dir{Path: path}, nil
}

// ErrUnreadable: the state directory is there but cannot be read (its
// permissions, or it is not a directory), so whether the device is set up
// cannot be told.
var ErrUnreadable = errors.New("cannot read this device's state directory")

// Readable returns nil if the state directory can be read or does not
// exist (a device not set up), and an error wrapping ErrUnreadable if it
// exists but cannot be read: Exists would report such a device as not set
// up.
func (d *Dir) Readable() error {
	fi, err := os.Stat(d.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("%w %s: %v", ErrUnreadable, d.Path, err)
	case !fi.IsDir():
		return fmt.Errorf("%w %s: it is not a directory", ErrUnreadable, d.Path)
	}
	if _, err := os.Stat(filepath.Join(d.Path, configFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w %s: %v", ErrUnreadable, d.Path, err)
	}
	f, err := os.Open(d.Path)
	if err != nil {
		return fmt.Errorf("%w %s: %v", ErrUnreadable, d.Path, err)
	}
	defer f.Close()
	if _, err := f.Readdirnames(1); err != nil && err != io.EOF {
		return fmt.Errorf("%w %s: %v", ErrUnreadable, d.Path, err)
	}
	return nil
}

// Exists reports whether the device has been set up.
func (d *Dir) Exists() bool {
	_, err := os.Stat(filepath.Join(d.Path, configFile))
	return err == nil
}

// Load reads the configuration.
func (d *Dir) Load() (*Config, error) {
	b, err := os.ReadFile(filepath.Join(d.Path, configFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (no %s in %s): run 'coffer init' first, or pass --repo and the key", ErrNotInitialized, configFile, d.Path)
	}
	if err != nil {
		return nil, err
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("state file %s is damaged: %v", filepath.Join(d.Path, configFile), err)
	}
	if c.Version != Version {
		return nil, fmt.Errorf("state file %s has version %d; this Coffer understands version %d: upgrade Coffer", filepath.Join(d.Path, configFile), c.Version, Version)
	}
	return &c, nil
}

// Save writes the configuration atomically.
func (d *Dir) Save(c *Config) error {
	c.Version = Version
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Replace(filepath.Join(d.Path, configFile), append(b, '\n'), 0o600)
}

// SaveKey writes the backup key (0600). It refuses to replace a different
// key: losing a key loses its backups.
func (d *Dir) SaveKey(k *backupkey.Key) error {
	if old, err := d.LoadKey(); err == nil {
		defer old.Zero()
		if !old.Equal(k) {
			return fmt.Errorf("%s already holds a different backup key; refusing to overwrite it (use another --state directory)", d.Path)
		}
		return nil
	}
	return atomicfile.Replace(filepath.Join(d.Path, keyFile), []byte(keyHeader+"\n"+strings.ReplaceAll(k.Digits(), " ", "")+"\n"), 0o600)
}

// HasKey reports whether a key is stored.
func (d *Dir) HasKey() bool {
	_, err := os.Stat(filepath.Join(d.Path, keyFile))
	return err == nil
}

// LoadKey reads the stored backup key.
func (d *Dir) LoadKey() (*backupkey.Key, error) {
	p := filepath.Join(d.Path, keyFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (no key in %s)", ErrNotInitialized, d.Path)
	}
	if err != nil {
		return nil, err
	}
	defer clear(b)
	first, rest, ok := strings.Cut(string(b), "\n")
	if !ok || first != keyHeader {
		return nil, fmt.Errorf("key file %s is not a Coffer v1 key file", p)
	}
	k, err := backupkey.Parse(rest)
	if err != nil {
		return nil, fmt.Errorf("key file %s is damaged: %w", p, err)
	}
	return k, nil
}

// SavePasswordVerifier writes the password verifier (0600), replacing any
// earlier one.
func (d *Dir) SavePasswordVerifier(v *PasswordVerifier) error {
	v.Version = Version
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Replace(filepath.Join(d.Path, verifierFile), append(b, '\n'), 0o600)
}

// LoadPasswordVerifier reads the password verifier; ErrNoPasswordVerifier
// if there is none.
func (d *Dir) LoadPasswordVerifier() (*PasswordVerifier, error) {
	p := filepath.Join(d.Path, verifierFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (no %s in %s)", ErrNoPasswordVerifier, verifierFile, d.Path)
	}
	if err != nil {
		return nil, err
	}
	var v PasswordVerifier
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("password verifier %s is damaged: %v", p, err)
	}
	if v.Version != Version {
		return nil, fmt.Errorf("password verifier %s has version %d; this Coffer understands version %d: upgrade Coffer", p, v.Version, Version)
	}
	return &v, nil
}

// RemovePasswordVerifier deletes the password verifier, if any.
func (d *Dir) RemovePasswordVerifier() error {
	err := os.Remove(filepath.Join(d.Path, verifierFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
