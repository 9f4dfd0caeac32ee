package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pnpd/pnpd/ami"
	"github.com/pnpd/pnpd/pkg/pbx"
)

// Tenants in the benchmark's PBX families: every phone is assigned to one
// of them, each has a URL.
const benchTenants = 50

// fillWorkers is how many DBPuts are in flight while filling a family.
const fillWorkers = 16

// loadRuns is how many times each family is loaded; the median counts.
const loadRuns = 3

// PBXSize is one family of the PBX database and how long it took.
type PBXSize struct {
	Phones  int           // mac/<mac> entries
	Entries int           // all entries, the tenants' URLs included
	Fill    time.Duration // DBPut of every entry, fillWorkers at a time
	Loads   []time.Duration
}

// Load is the median of Loads.
func (s PBXSize) Load() time.Duration { return median(s.Loads) }

// familyOf names the family of n phones.
func familyOf(n int) string { return fmt.Sprintf("pnpbench%d", n) }

// fillFamily puts n phones and benchTenants tenants into family over AMI.
func fillFamily(ctx context.Context, c *ami.Client, family string, n int) (time.Duration, error) {
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, fillWorkers)
	total := int64(n + benchTenants)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range fillWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= total || ctx.Err() != nil {
					return
				}
				var key, val string
				if i < int64(n) {
					key, val = fmt.Sprintf("mac/0015%08x", i), fmt.Sprintf("tenant%d", i%benchTenants)
				} else {
					t := i - int64(n)
					key, val = fmt.Sprintf("tenant/tenant%d/url", t), fmt.Sprintf("http://prov.example/%d/{mac}.cfg", t)
				}
				if err := c.DBPut(ctx, family, key, val); err != nil {
					errs <- fmt.Errorf("bench: DBPut %s/%s: %w", family, key, err)
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// loadFamily times taking a snapshot of family as pnpd does: DBGetTree,
// then the snapshot built from the entries.
func loadFamily(ctx context.Context, c *ami.Client, family string) (time.Duration, int, error) {
	start := time.Now()
	entries, err := c.DBGetTree(ctx, family, "")
	if err != nil {
		return 0, 0, fmt.Errorf("bench: DBGetTree %s: %w", family, err)
	}
	s := pbx.SnapshotOf(entries)
	took := time.Since(start)
	return took, s.Entries, nil
}

// dbGetRTT times n DBGets of one key, one after the other, sorted.
func dbGetRTT(ctx context.Context, c *ami.Client, family string, n int) ([]time.Duration, error) {
	rtts := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if _, err := c.DBGet(ctx, family, "mac/0015"+fmt.Sprintf("%08x", 1)); err != nil {
			return nil, fmt.Errorf("bench: DBGet: %w", err)
		}
		rtts = append(rtts, time.Since(start))
	}
	slices.Sort(rtts)
	return rtts, nil
}

// median of a slice (sorted or not; it is not changed).
func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(d))
	return s[len(s)/2]
}

// percentile of a sorted slice: the smallest value that p of the values do
// not exceed (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
