package policy

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/config"
)

func (v take) String() string {
	switch v {
	case taken:
		return "taken"
	case refused:
		return "refused"
	case refusedNew:
		return "refusedNew"
	case tableFull:
		return "tableFull"
	case tableFullNew:
		return "tableFullNew"
	}
	return fmt.Sprintf("take(%d)", int(v))
}

// interval is Per/N rounded up to the nanosecond: the first instant at
// which one token is back after the bucket was emptied.
func interval(r config.Rate) int64 {
	return (int64(r.Per) + int64(r.N) - 1) / int64(r.N)
}

func TestLimiterBurstAndRefill(t *testing.T) {
	for _, r := range []config.Rate{
		{N: 10, Per: 10 * time.Second}, // the default
		{N: 1, Per: time.Second},
		{N: 600, Per: time.Minute},
		{N: 3, Per: 10 * time.Second}, // Per/N is not a whole number of ns
		{N: 7, Per: time.Millisecond},
	} {
		t.Run(r.String(), func(t *testing.T) {
			l := newLimiter[string](r)
			const t0 = int64(5 * time.Second) // the policy clock need not start at 0
			for i := range r.N {
				if v := l.take("a", t0); v != taken {
					t.Fatalf("take %d of a burst of %d: %v", i+1, r.N, v)
				}
			}
			if v := l.take("a", t0); v != refusedNew {
				t.Fatalf("take %d: %v, want refusedNew", r.N+1, v)
			}
			if v := l.take("a", t0); v != refused {
				t.Fatalf("take %d: %v, want refused (the episode was reported)", r.N+2, v)
			}
			// Another key has its own bucket.
			if v := l.take("b", t0); v != taken {
				t.Fatalf("another key: %v", v)
			}
			step := interval(r)
			if v := l.take("a", t0+step-1); v != refused {
				t.Errorf("1ns before Per/N: %v, want refused", v)
			}
			if v := l.take("a", t0+step); v != taken {
				t.Errorf("at Per/N: %v, want taken", v)
			}
			if v := l.take("a", t0+step); v != refused {
				t.Errorf("second take at Per/N: %v, want refused (one token came back)", v)
			}
			// A whole period later the bucket holds N again, not more.
			later := t0 + step + int64(r.Per)*3
			for i := range r.N {
				if v := l.take("a", later); v != taken {
					t.Fatalf("after three periods, take %d: %v", i+1, v)
				}
			}
			if v := l.take("a", later); v == taken {
				t.Errorf("after three periods, take %d: taken: the bucket held more than N", r.N+1)
			}
		})
	}
}

func TestLimiterEpisode(t *testing.T) {
	r := config.Rate{N: 2, Per: 2 * time.Second} // a token a second
	sec := int64(time.Second)
	tests := []struct {
		name string
		// steps: "t" takes, "s" sweeps; at is seconds on the policy clock.
		steps []struct {
			op   string
			at   int64
			want string // for t: the verdict; for s: limitedEnded and size
		}
	}{
		{"one episode while the sender stays over", []struct {
			op   string
			at   int64
			want string
		}{
			{"t", 0, "taken"}, {"t", 0, "taken"}, {"t", 0, "refusedNew"}, {"t", 0, "refused"},
			{"t", 1, "taken"}, {"t", 1, "refused"}, // the bucket never filled: same episode
			{"s", 2, "0 1"}, // half full: kept
			{"t", 2, "taken"}, {"t", 2, "refused"},
		}},
		{"a new episode after refill and sweep", []struct {
			op   string
			at   int64
			want string
		}{
			{"t", 0, "taken"}, {"t", 0, "taken"}, {"t", 0, "refusedNew"},
			{"s", 1, "0 1"}, // one token back of two: kept, still limited
			{"s", 2, "1 0"}, // full: forgotten, its episode ended
			{"t", 2, "taken"}, {"t", 2, "taken"}, {"t", 2, "refusedNew"}, {"t", 2, "refused"},
		}},
		{"a sweep before the refill changes nothing", []struct {
			op   string
			at   int64
			want string
		}{
			{"t", 0, "taken"}, {"t", 0, "taken"}, {"t", 0, "refusedNew"},
			{"s", 0, "0 1"}, {"t", 0, "refused"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLimiter[string](r)
			for i, s := range tt.steps {
				var got string
				if s.op == "t" {
					got = l.take("k", s.at*sec).String()
				} else {
					n := l.sweep(s.at * sec)
					got = fmt.Sprintf("%d %d", n, l.size())
				}
				if got != s.want {
					t.Fatalf("step %d (%s at %ds): %s, want %s", i+1, s.op, s.at, got, s.want)
				}
			}
		})
	}
}

func TestLimiterSweep(t *testing.T) {
	r := config.Rate{N: 10, Per: 10 * time.Second}
	sec := int64(time.Second)
	tests := []struct {
		name        string
		takes       int   // at 0
		sweepAt     int64 // seconds
		wantKept    bool
		wantLimited int // episodes ended
	}{
		{"one take, swept a token later", 1, 1, false, 0},
		{"one take, swept at once", 1, 0, true, 0},
		{"half spent, half refilled", 5, 4, true, 0},
		{"half spent, refilled", 5, 5, false, 0},
		{"emptied, almost refilled", 10, 9, true, 0},
		{"emptied, refilled", 10, 10, false, 0},
		{"limited, almost refilled", 12, 9, true, 0},
		{"limited, refilled", 12, 10, false, 1},
		{"limited, long gone", 12, 3600, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLimiter[string](r)
			for range tt.takes {
				l.take("k", 0)
			}
			n := l.sweep(tt.sweepAt * sec)
			if kept := l.size() == 1; kept != tt.wantKept {
				t.Errorf("kept %v, want %v", kept, tt.wantKept)
			}
			if n != tt.wantLimited {
				t.Errorf("sweep reports %d episodes ended, want %d", n, tt.wantLimited)
			}
		})
	}

	t.Run("full keys forgotten, partial ones kept", func(t *testing.T) {
		l := newLimiter[int](r)
		for k := range 100 {
			for range 1 + k%10 {
				l.take(k, 0)
			}
		}
		// At 5s, keys that spent 5 tokens or fewer have refilled.
		l.sweep(5 * sec)
		if got := l.size(); got != 50 {
			t.Errorf("after the sweep %d keys tracked, want 50", got)
		}
		// A key that was forgotten starts again from a full bucket.
		for i := range 10 {
			if v := l.take(0, 5*sec); v != taken {
				t.Fatalf("forgotten key, take %d: %v", i+1, v)
			}
		}
	})
}

func TestLimiterOff(t *testing.T) {
	for _, r := range []config.Rate{{}, {N: 0, Per: time.Second}, {N: -1, Per: time.Second}} {
		t.Run(fmt.Sprintf("N=%d,Per=%v", r.N, r.Per), func(t *testing.T) {
			l := newLimiter[int](r)
			for i := range 10000 {
				if v := l.take(i%3, 0); v != taken {
					t.Fatalf("take %d: %v", i+1, v)
				}
			}
			if n := l.size(); n != 0 {
				t.Errorf("an off rate tracks %d keys", n)
			}
			if n := l.sweep(int64(time.Hour)); n != 0 {
				t.Errorf("sweep of an off rate: %d", n)
			}
		})
	}
}

func TestLimiterTableFull(t *testing.T) {
	// Filling the table costs some 0.1 s (more under -race): worth it, the
	// bound is what keeps a flood of forged identities from growing pnpd.
	if testing.Short() {
		t.Skip("fills 1<<18 buckets")
	}
	r := config.Rate{N: 10, Per: 10 * time.Second}
	l := newLimiter[int](r)
	for k := range maxBuckets {
		if v := l.take(k, 0); v != taken {
			t.Fatalf("key %d of %d: %v", k+1, maxBuckets, v)
		}
	}
	if v := l.take(maxBuckets, 0); v != tableFullNew {
		t.Fatalf("a new key with %d tracked: %v, want tableFullNew", maxBuckets, v)
	}
	if v := l.take(maxBuckets+1, 0); v != tableFull {
		t.Fatalf("the next new key: %v, want tableFull", v)
	}
	if n := l.size(); n != maxBuckets {
		t.Errorf("tableFull grew the table to %d", n)
	}
	if v := l.take(7, 0); v != taken {
		t.Errorf("a key already tracked while full: %v, want taken", v)
	}
	// A token later, keys that spent one are full again and swept; key 7
	// spent two and stays.
	l.sweep(int64(time.Second))
	if n := l.size(); n != 1 {
		t.Errorf("after the sweep %d keys tracked, want 1", n)
	}
	if v := l.take(maxBuckets, int64(time.Second)); v != taken {
		t.Errorf("a new key after the sweep: %v", v)
	}
	if l.full {
		t.Error("the sweep left room but did not rearm the table-full report")
	}
}

// TestLimiterConcurrent: goroutines taking on shared keys, with clock
// readings that reach the lock out of order as they do in pnpd, never get
// more than N plus what refilled over the span of the readings.
func TestLimiterConcurrent(t *testing.T) {
	r := config.Rate{N: 10, Per: time.Second} // a token per 100ms
	l := newLimiter[int](r)
	const (
		workers = 8
		perKey  = 300 // takes per worker and key
		keys    = 3
		step    = int64(time.Millisecond)
	)
	var (
		clock   atomic.Int64
		got     [keys]atomic.Int64
		fresh   [keys]atomic.Int64
		wg      sync.WaitGroup
		attempt = workers * perKey
	)
	for w := range workers {
		wg.Go(func() {
			for i := range perKey * keys {
				k := (i + w) % keys
				switch l.take(k, clock.Add(step)) {
				case taken:
					got[k].Add(1)
				case refusedNew:
					fresh[k].Add(1)
				case tableFull:
					t.Errorf("tableFull with %d keys", keys)
				}
			}
		})
	}
	wg.Wait()
	span := clock.Load() // readings run from step to span
	bound := int64(r.N) + span/(int64(r.Per)/int64(r.N))
	for k := range keys {
		n := got[k].Load()
		if n > bound {
			t.Errorf("key %d: %d taken of %d, want at most %d (N + refill over %v)", k, n, attempt, bound, time.Duration(span))
		}
		if n < int64(r.N) {
			t.Errorf("key %d: only %d taken, want at least the burst of %d", k, n, r.N)
		}
		// Nothing swept, so one episode per key.
		if f := fresh[k].Load(); f != 1 {
			t.Errorf("key %d: refusedNew %d times, want 1", k, f)
		}
	}
}
