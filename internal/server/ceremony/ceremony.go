// Package ceremony is the fleet's key ceremony ('coffer vault init'): it
// makes the fleet secrets, the offline root key and the first signed fleet
// bundle, and the fleet CA, in one directory, refusing to overwrite any of
// them. OPERATIONS.md says which files go to the replicas and which stay
// offline.
package ceremony

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cofferhq/coffer/internal/atomicfile"
	"github.com/cofferhq/coffer/internal/protocol/bundle"
	"github.com/cofferhq/coffer/internal/server/fleetca"
	"github.com/cofferhq/coffer/internal/server/vault"
)

// Files written by the key ceremony (Init), in the fleet directory.
const (
	SecretsFile = "secrets.json" // fleet secrets: copy to every replica, keep nowhere else
	RootKeyFile = "root.key"     // the fleet root private key: move offline
	RootPubFile = "root.pub"     // the root public key clients pin (COFFER_FLEET_ROOT)
	BundleFile  = "bundle.json"  // the signed fleet bundle clients load (COFFER_FLEET)
	// The fleet CA (package fleetca): CACertFile goes to every replica,
	// CAKeyFile offline with root.key.
	CACertFile = fleetca.CACertFile
	CAKeyFile  = fleetca.CAKeyFile
)

// DefaultBundleValidity is how long a bundle made by Init is valid.
const DefaultBundleValidity = 2 * 365 * 24 * time.Hour

// Ceremony is what Init made.
type Ceremony struct {
	Dir        string
	Secrets    *vault.Secrets
	Bundle     *bundle.Bundle
	RootPublic string // text form, for COFFER_FLEET_ROOT
}

// Init is the key ceremony: it creates the fleet secrets, the offline root
// key, the first signed fleet bundle and the fleet CA (for the replicas'
// mutual TLS) in dir, refusing to overwrite any of them.
func Init(dir string, validity time.Duration) (*Ceremony, error) {
	if validity <= 0 {
		validity = DefaultBundleValidity
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	for _, f := range []string{SecretsFile, RootKeyFile, RootPubFile, BundleFile, CACertFile, CAKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return nil, fmt.Errorf("%s already exists: a fleet was already made in %s; choose another directory", filepath.Join(dir, f), dir)
		}
	}
	s, err := vault.GenerateSecrets()
	if err != nil {
		return nil, err
	}
	rootPub, rootPriv, err := bundle.GenerateRoot()
	if err != nil {
		return nil, err
	}
	b := s.Bundle(time.Now(), validity)
	signed, err := bundle.Sign(b, rootPriv)
	if err != nil {
		return nil, err
	}
	if err := s.Save(filepath.Join(dir, SecretsFile)); err != nil {
		return nil, err
	}
	if err := atomicfile.CreateExclusive(filepath.Join(dir, RootKeyFile), []byte(bundle.FormatRootPrivateKey(rootPriv)+"\n"), 0o600); err != nil {
		return nil, err
	}
	clear(rootPriv)
	pubText := bundle.FormatRootPublicKey(rootPub)
	if err := atomicfile.CreateExclusive(filepath.Join(dir, RootPubFile), []byte(pubText+"\n"), 0o644); err != nil {
		return nil, err
	}
	if err := atomicfile.CreateExclusive(filepath.Join(dir, BundleFile), signed, 0o644); err != nil {
		return nil, err
	}
	if _, err := fleetca.Create(dir, fmt.Sprintf("%x", s.FleetID)); err != nil {
		return nil, err
	}
	return &Ceremony{Dir: dir, Secrets: s, Bundle: b, RootPublic: pubText}, nil
}
