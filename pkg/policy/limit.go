package policy

import (
	"sync"
	"time"

	"github.com/pnpd/pnpd/pkg/config"
)

// maxBuckets bounds each limiter's table: an address or MAC that is not in
// it and finds it full is refused (a flood of forged identities must not
// grow pnpd without bound). Full buckets are swept, so only senders active
// within one period hold an entry.
const maxBuckets = 1 << 18

// limiter is a token bucket per key: rate.N tokens, refilled evenly over
// rate.Per. The zero time of a bucket is its creation.
type limiter[K comparable] struct {
	rate  config.Rate
	nsPer float64 // nanoseconds per token

	mu      sync.Mutex
	buckets map[K]bucket
	full    bool // refused a key for want of room since the last sweep that left room
}

type bucket struct {
	tokens  float64
	last    int64 // when tokens was computed, ns since the limiter's epoch
	limited bool  // refused since it was last full: the refusal was logged
}

func newLimiter[K comparable](r config.Rate) *limiter[K] {
	l := &limiter[K]{rate: r, buckets: map[K]bucket{}}
	if !r.Off() {
		l.nsPer = float64(r.Per) / float64(r.N)
	}
	return l
}

// verdict of one take.
type take int

const (
	taken        take = iota // within the rate
	refused                  // over it, and already refused before: logged
	refusedNew               // over it, the first refusal since the sweep last forgot the bucket (full)
	tableFull                // a new key, and no room for it, refused before
	tableFullNew             // the same, the first since the table last had room
)

// take spends one token of k at now (ns on the policy's clock).
func (l *limiter[K]) take(k K, now int64) take {
	if l.rate.Off() {
		return taken
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[k]
	switch {
	case !ok:
		if len(l.buckets) >= maxBuckets {
			if l.full {
				return tableFull
			}
			l.full = true
			return tableFullNew
		}
		b = bucket{tokens: float64(l.rate.N), last: now}
	default:
		b.tokens = min(float64(l.rate.N), b.tokens+float64(now-b.last)/l.nsPer)
		b.last = now
	}
	if b.tokens < 1 {
		v := refused
		if !b.limited {
			b.limited, v = true, refusedNew
		}
		l.buckets[k] = b
		return v
	}
	b.tokens--
	l.buckets[k] = b
	return taken
}

// sweep forgets the buckets that have refilled by now: a key without a
// bucket has a full one.
func (l *limiter[K]) sweep(now int64) (limitedEnded int) {
	if l.rate.Off() {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, b := range l.buckets {
		if b.tokens+float64(now-b.last)/l.nsPer >= float64(l.rate.N) {
			if b.limited {
				limitedEnded++
			}
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) < maxBuckets {
		l.full = false
	}
	return limitedEnded
}

// size is the number of keys tracked.
func (l *limiter[K]) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// since returns the policy clock: monotonic nanoseconds since epoch.
func since(epoch, t time.Time) int64 { return int64(t.Sub(epoch)) }
