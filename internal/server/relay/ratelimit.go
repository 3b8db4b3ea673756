package relay

import (
	"math"
	"sync"
	"time"
)

// Limit is a token bucket: Rate requests per second on average, bursts of
// up to Burst requests.
type Limit struct {
	Rate  float64
	Burst int
}

// Unlimited disables a rate limit.
var Unlimited = Limit{Rate: math.Inf(1)}

// Default limits, used for a zero Limit in Config.
var (
	// DefaultPerAccount allows bursts of 20 requests per account (a
	// registration or a login is two or three), then one every 2 seconds.
	DefaultPerAccount = Limit{Rate: 0.5, Burst: 20}
	// DefaultPerSource allows bursts of 100 requests per source address
	// (or IPv6 /64), then 20 per second: generous for carrier NATs.
	DefaultPerSource = Limit{Rate: 20, Burst: 100}
)

func (l Limit) unlimited() bool { return math.IsInf(l.Rate, 1) }

// maxBuckets bounds a limiter's memory (about 100 bytes a bucket).
const maxBuckets = 1 << 20

// limiter keeps one token bucket per key. Buckets that have refilled are
// dropped, so memory follows the number of recently active keys.
type limiter struct {
	limit Limit

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
	// resets counts how often the table was dropped for being full.
	resets int
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(l Limit) *limiter {
	return &limiter{limit: l, buckets: map[string]*bucket{}}
}

// allow takes one token from key's bucket. If none is left it returns
// false and how long until one is.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	if l.limit.unlimited() {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > time.Minute || len(l.buckets) >= maxBuckets {
		l.sweep(now)
	}
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: float64(l.limit.Burst), last: now}
		l.buckets[key] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(float64(l.limit.Burst), b.tokens+el*l.limit.Rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	if l.limit.Rate <= 0 {
		return false, time.Hour
	}
	wait := time.Duration((1 - b.tokens) / l.limit.Rate * float64(time.Second))
	return false, wait
}

// sweep drops the buckets that are full again (their keys have been idle
// long enough to be indistinguishable from new ones). If the table is still
// full, it drops everything: memory stays bounded, at the price of one
// fresh burst for every key.
func (l *limiter) sweep(now time.Time) {
	l.lastSweep = now
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.limit.Rate >= float64(l.limit.Burst) {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= maxBuckets {
		l.buckets = map[string]*bucket{}
		l.resets++
	}
}

func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
