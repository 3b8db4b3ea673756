package vaultstate

// Sealer protects the values the machine stores. Seal is applied to every
// account value and every member directory value before it is written and
// Open to every value read back; key is the record id for an account, and
// "member:" followed by the member id for a member, which a sealing
// implementation binds as associated data so values cannot be moved between
// records, between members, or from one bucket to the other. (Member values
// are not secret, but sealed they cannot be altered on disk: a replica
// forwards requests to the URL they hold.)
//
// vault/replica plugs in an AEAD under the replica's own data key here.
// Sealed bytes need not be deterministic (random nonces are fine): only the
// opened values are part of the replicated state. Snapshots (version 2,
// snapshot.go) carry the opened values, and Restore seals them under the
// restoring machine's Sealer, so every replica may seal under a key of its
// own.
type Sealer interface {
	Seal(key, plaintext []byte) ([]byte, error)
	Open(key, sealed []byte) ([]byte, error)
}

// IdentitySealer stores values as they are. It is the default until sealed
// storage lands.
type IdentitySealer struct{}

// Seal returns plaintext.
func (IdentitySealer) Seal(_, plaintext []byte) ([]byte, error) { return plaintext, nil }

// Open returns sealed.
func (IdentitySealer) Open(_, sealed []byte) ([]byte, error) { return sealed, nil }
