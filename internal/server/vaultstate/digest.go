package vaultstate

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sync"

	"go.etcd.io/bbolt"
)

// The state digest (Options.DigestKey): a keyed digest of everything the
// file holds outside the meta bucket, kept in the meta bucket with the
// applied index and checked when the file is opened and when a snapshot is
// restored.
//
// Why: sealed values are bound to their record (or member) id but not to a
// time, so someone holding a replica's disk, without its key, could copy a
// record's earlier sealed value back into state.db (a fresh guess budget;
// a destroyed record back), or an old state.db with the current applied
// index written over its own. Both change the state without changing the
// Raft log, which the rollback check (the high-water mark) looks at.
//
// Construction. Each (bucket, key, value) maps to
//
//	F(b, k, v) = HMAC-SHA-256(K, 0x01 | u16 len(b) | b | u32 len(k) | k | v)
//
// and the state's accumulator is the XOR of F over all its pairs: a put
// XORs out the old pair's F and in the new one's, a delete XORs out, so the
// digest follows every transaction at the cost of two HMACs per change.
// This is the XOR-MAC of Bellare, Guérin and Rogaway ("XOR MACs: new
// methods for message authentication using finite pseudorandom
// functions", CRYPTO '95) applied to a set, i.e. the incremental
// hashing of Bellare and Micciancio ("A new paradigm for collision-free
// hashing: incrementality at reduced cost", EUROCRYPT '97): with a secret
// PRF key it is a MAC of the set, as the pairs are distinct (a key occurs
// once per bucket). It must be keyed: with an unkeyed hash H, anyone with
// many old values to choose from can solve a linear system over GF(2) for
// a subset of substitutions whose XOR matches (Wagner's generalized
// birthday problem, and plain Gaussian elimination with 256 candidates
// or more), forging a matching digest.
//
// The file stores not the accumulator but
//
//	D = HMAC-SHA-256(K, 0x02 | index u64 | term u64 | newest i64 | acc)
//
// which binds the applied index, term and newest command time to the
// contents: moving the applied index of an old file forward (so Raft would
// not replay the entries it lacks) breaks D. D is also what a replica
// writes into its high-water mark (sealing.Mark.Digest).
//
// K is HKDF-SHA-256 of the replica's own data key (replica derives it), and
// F covers the values as stored (sealed under that key), so D is each
// replica's own: it says "this disk was written by this replica", not
// "these replicas agree". A snapshot (version 2) carries no D: Restore
// seals the values under its own key and computes its own D over them.
// Whether two replicas hold the same state is StateHash (snapshot.go), an
// unkeyed hash of the plaintext state. Without a key (no sealing) there is
// no digest.

// metaDigest is the meta key of D.
var metaDigest = []byte("digest")

// DigestSize is the length of a state digest.
const DigestSize = sha256.Size

// Digest is a state digest (D above): zero when the machine has no key.
type Digest [DigestSize]byte

// IsZero reports the zero Digest.
func (d Digest) IsZero() bool { return d == Digest{} }

// digester computes F and D under one key.
type digester struct {
	pool sync.Pool // hash.Hash (HMAC-SHA-256 under K)
}

func newDigester(key []byte) (*digester, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("vault state: digest key of %d bytes, want 32", len(key))
	}
	k := bytes.Clone(key)
	return &digester{pool: sync.Pool{New: func() any { return hmac.New(sha256.New, k) }}}, nil
}

func (d *digester) sum(fn func(h hash.Hash)) (out [DigestSize]byte) {
	h := d.pool.Get().(hash.Hash)
	h.Reset()
	fn(h)
	h.Sum(out[:0])
	d.pool.Put(h)
	return out
}

// item is F(bucket, key, value).
func (d *digester) item(bucket, key, value []byte) [DigestSize]byte {
	return d.sum(func(h hash.Hash) {
		var hdr [1 + 2]byte
		hdr[0] = 0x01
		binary.BigEndian.PutUint16(hdr[1:], uint16(len(bucket)))
		h.Write(hdr[:])
		h.Write(bucket)
		var kl [4]byte
		binary.BigEndian.PutUint32(kl[:], uint32(len(key)))
		h.Write(kl[:])
		h.Write(key)
		h.Write(value)
	})
}

// tag is D for meta.
func (d *digester) tag(meta *txMeta) Digest {
	return d.sum(func(h hash.Hash) {
		b := make([]byte, 0, 1+8+8+8+DigestSize)
		b = append(b, 0x02)
		b = binary.BigEndian.AppendUint64(b, meta.index)
		b = binary.BigEndian.AppendUint64(b, meta.term)
		b = binary.BigEndian.AppendUint64(b, uint64(meta.newest))
		b = append(b, meta.acc[:]...)
		h.Write(b)
	})
}

func xorInto(dst *[DigestSize]byte, x [DigestSize]byte) {
	for i := range dst {
		dst[i] ^= x[i]
	}
}

// get returns the value stored under key and whether there is one (an empty
// value is a value; a nested bucket is not).
func get(b *bbolt.Bucket, key []byte) ([]byte, bool) {
	k, v := b.Cursor().Seek(key)
	if k == nil || !bytes.Equal(k, key) || (v == nil && b.Bucket(key) != nil) {
		return nil, false
	}
	return v, true
}

// put stores key → value in bucket name of tx and updates meta's
// accumulator. Every write outside the meta bucket goes through put or
// del.
func (m *Machine) put(tx *bbolt.Tx, meta *txMeta, name, key, value []byte) error {
	b := tx.Bucket(name)
	if b == nil {
		return fmt.Errorf("no bucket %q", name)
	}
	if m.dig != nil {
		if old, ok := get(b, key); ok {
			xorInto(&meta.acc, m.dig.item(name, key, old))
		}
		xorInto(&meta.acc, m.dig.item(name, key, value))
	}
	return b.Put(key, value)
}

// del deletes key from bucket name of tx (if present) and updates meta's
// accumulator.
func (m *Machine) del(tx *bbolt.Tx, meta *txMeta, name, key []byte) error {
	b := tx.Bucket(name)
	if b == nil {
		return fmt.Errorf("no bucket %q", name)
	}
	if m.dig != nil {
		old, ok := get(b, key)
		if !ok {
			return nil
		}
		xorInto(&meta.acc, m.dig.item(name, key, old))
	}
	return b.Delete(key)
}

// accumulate computes the accumulator of tx from scratch: every pair of
// every bucket but meta. A nested bucket (never written by the machine)
// is an error.
func (d *digester) accumulate(tx *bbolt.Tx) (acc [DigestSize]byte, empty bool, err error) {
	empty = true
	err = tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
		if bytes.Equal(name, bucketMeta) {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if v == nil && b.Bucket(k) != nil {
				return fmt.Errorf("bucket %q holds a nested bucket %q", name, k)
			}
			empty = false
			xorInto(&acc, d.item(name, k, v))
			return nil
		})
	})
	return acc, empty, err
}

// verify recomputes the digest of tx (whose metadata meta was read from
// it) and compares it with the stored one. It returns meta with its
// accumulator and digest set. A file that has applied nothing must hold
// nothing outside meta, and needs no digest; adopt, for a snapshot without
// one (written before digests), reports missing instead of failing.
func (d *digester) verify(tx *bbolt.Tx, meta txMeta, adopt bool) (_ txMeta, missing bool, err error) {
	acc, empty, err := d.accumulate(tx)
	if err != nil {
		return meta, false, fmt.Errorf("%w: %w", ErrStateTampered, err)
	}
	meta.acc = acc
	meta.digest = d.tag(&meta)
	stored := tx.Bucket(bucketMeta).Get(metaDigest)
	switch {
	case stored == nil && meta.index == 0 && meta.newest == 0:
		if !empty {
			return meta, false, fmt.Errorf("%w: the file has applied no entry but holds records or request ids", ErrStateTampered)
		}
		return meta, false, nil
	case stored == nil && adopt:
		return meta, true, nil
	case stored == nil:
		return meta, false, fmt.Errorf("%w: the file has applied entries up to index %d but holds no digest "+
			"(written by a Coffer without state digests, or the digest was removed)", ErrStateTampered, meta.index)
	case len(stored) != DigestSize:
		return meta, false, fmt.Errorf("%w: bad digest length %d", ErrStateTampered, len(stored))
	case !hmac.Equal(stored, meta.digest[:]):
		return meta, false, fmt.Errorf("%w: the contents at index %d term %d do not match the stored digest "+
			"(values copied in from an older state, edited metadata, or another fleet's data key)", ErrStateTampered, meta.index, meta.term)
	}
	return meta, false, nil
}

// ErrStateTampered: with a digest key, the state file's contents do not
// match the keyed digest stored with its applied index: someone wrote to
// the file (an old value copied back in, the applied index moved, a value
// removed), or it was written under another data key.
var ErrStateTampered = errors.New("the vault state file does not match its keyed digest (altered on disk?)")
