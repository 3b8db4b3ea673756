package token

import (
	"crypto/sha256"
	"sync"
	"time"
)

// DefaultCacheSize is how many accepted tokens a Cache remembers when
// NewCache is given a size of zero: about 4 MB at most.
const DefaultCacheSize = 16384

// Cache is a Verifier that remembers the tokens it accepted, so that a token
// presented again — an app uses one token for every request of a session,
// and a recovery is two requests — costs a hash and a map lookup instead of
// an Ed25519 verification and a strict JSON parse (~100 µs).
//
// A remembered token is accepted exactly as long as Verify would accept it:
// until its expiry plus the verifier's leeway (the other checks, signature,
// issuer, audience, lifetime, not-before and issued-at, cannot turn false
// later with a clock that moves forward). Tokens are not revocable, so
// remembering one changes no answer. Refused tokens are never remembered:
// they are what an attacker can send in bulk, and caching them would only
// help the attacker fill the cache.
//
// The cache is keyed by the SHA-256 of the token, so it holds no bearer
// token. It is bounded: when full, it drops expired entries, then an
// arbitrary half. Safe for concurrent use.
type Cache struct {
	v   *Verifier
	max int

	mu sync.Mutex
	m  map[[sha256.Size]byte]*Claims
}

// NewCache returns a Cache over v that remembers at most size tokens (zero
// means DefaultCacheSize). v must not be changed afterwards.
func NewCache(v *Verifier, size int) *Cache {
	if size <= 0 {
		size = DefaultCacheSize
	}
	return &Cache{v: v, max: size, m: make(map[[sha256.Size]byte]*Claims)}
}

// Verify is Verifier.Verify, answered from the cache for a token it
// accepted before and that has not expired since.
func (c *Cache) Verify(tok string) (*Claims, error) {
	if len(tok) > MaxTokenSize {
		return c.v.Verify(tok) // refused, without hashing 4+ KB
	}
	key := sha256.Sum256([]byte(tok))
	now := c.v.now()
	c.mu.Lock()
	cl, ok := c.m[key]
	if ok && !now.Before(cl.Expiry.Add(c.v.Leeway)) {
		delete(c.m, key)
		ok = false
	}
	c.mu.Unlock()
	if ok {
		cp := *cl
		return &cp, nil
	}
	claims, err := c.v.Verify(tok)
	if err != nil {
		return nil, err
	}
	cp := *claims
	c.mu.Lock()
	if len(c.m) >= c.max {
		c.evict(now)
	}
	c.m[key] = &cp
	c.mu.Unlock()
	return claims, nil
}

// Len returns how many tokens the cache remembers.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// evict makes room: expired entries first, then (Go's map order being
// arbitrary) any half. Called with c.mu held.
func (c *Cache) evict(now time.Time) {
	for k, cl := range c.m {
		if !now.Before(cl.Expiry.Add(c.v.Leeway)) {
			delete(c.m, k)
		}
	}
	for k := range c.m {
		if len(c.m) < c.max/2+1 {
			break
		}
		delete(c.m, k)
	}
}
