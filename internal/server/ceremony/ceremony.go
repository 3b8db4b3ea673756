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
	// SharesDir holds a threshold fleet's OPRF share files,
	// share-<index>.json: each goes to one replica only.
	SharesDir = "oprf-shares"
)

// DefaultBundleValidity is how long a bundle made by Init is valid.
const DefaultBundleValidity = 2 * 365 * 24 * time.Hour

// Ceremony is what Init made.
type Ceremony struct {
	Dir        string
	Secrets    *vault.Secrets
	Bundle     *bundle.Bundle
	RootPublic string // text form, for COFFER_FLEET_ROOT
	// Shares are the paths of the OPRF share files of a threshold fleet
	// (InitThreshold), by replica index from 1.
	Shares []string
}

// InitThreshold is Init for a threshold fleet of n replicas (PROTOCOL.md
// §7): the secrets hold no OPRF seed, and SharesDir holds one OPRF share
// file per replica, dealt here — the ceremony is the only dealer, and no
// serving replica ever holds an account's whole OPRF key.
func InitThreshold(dir string, validity time.Duration, n int) (*Ceremony, error) {
	if n < 1 {
		return nil, fmt.Errorf("a threshold fleet needs at least one replica, not %d", n)
	}
	if _, err := os.Stat(filepath.Join(dir, SharesDir)); err == nil {
		return nil, fmt.Errorf("%s already exists: a fleet was already made in %s; choose another directory", filepath.Join(dir, SharesDir), dir)
	}
	return initFleet(dir, validity, n)
}

// Init is the key ceremony: it creates the fleet secrets, the offline root
// key, the first signed fleet bundle and the fleet CA (for the replicas'
// mutual TLS) in dir, refusing to overwrite any of them.
func Init(dir string, validity time.Duration) (*Ceremony, error) {
	return initFleet(dir, validity, 0)
}

func initFleet(dir string, validity time.Duration, shares int) (*Ceremony, error) {
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
	if shares > 0 {
		clear(s.OPAQUE.OPRFSeed)
		s.OPAQUE.OPRFSeed = nil
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
	c := &Ceremony{Dir: dir, Secrets: s, Bundle: b, RootPublic: pubText}
	if shares > 0 {
		if c.Shares, err = vault.DealShares(filepath.Join(dir, SharesDir), shares); err != nil {
			return nil, err
		}
	}
	return c, nil
}
