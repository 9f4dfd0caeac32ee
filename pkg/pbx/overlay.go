package pbx

import (
	"sync"
	"sync/atomic"

	"github.com/pnpd/pnpd/pkg/resolve"
)

// overlay holds the pending/<mac> and provisioned/<mac> keys this pnpd
// queued or wrote since its snapshot, so that its own decisions see them
// before the next snapshot does: a phone provisioned under once is not
// answered again a second later because the snapshot is a minute old.
//
// An entry is dropped once a snapshot whose load started after the write
// had completed is published: from then on the snapshot is the truth, and
// "pnpd ctl rearm" (a DBDel, then PnpReload) really rearms. An entry whose
// write is still queued stays, whatever the snapshots say.
//
// Loads and completions are ordered by epochs taken under mu: begin
// (the start of a load) increments the epoch; a completion records the
// epoch current then. A load that began at epoch s started after a
// completion at epoch e < s.
type overlay struct {
	mu          sync.Mutex
	epoch       uint64
	pending     map[string]*mark
	provisioned map[string]*mark
	// extra counts the pending entries the current snapshot lacks: with
	// len(snapshot.Pending) it is the number MaxPending bounds.
	extra int
	// size is len(pending)+len(provisioned), read without mu so that
	// the common case (nothing written since the snapshot) takes no lock.
	size atomic.Int64
}

// mark is one key of the overlay.
type mark struct {
	queued int    // writes of the key queued or being done
	done   uint64 // the epoch current at the last completion
}

func newOverlay() *overlay {
	return &overlay{pending: map[string]*mark{}, provisioned: map[string]*mark{}}
}

// table returns the map that holds keys of prefix.
func (o *overlay) table(prefix string) map[string]*mark {
	if prefix == resolve.KeyPending {
		return o.pending
	}
	return o.provisioned
}

// queue records a write of prefix+mac being queued.
func (o *overlay) queue(prefix, mac string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.queueLocked(prefix, mac)
}

// addPending decides whether mac is to be recorded as pending, and if so
// records its write as queued. Not when the phone is pending already (in
// the snapshot, or written since: its first record is kept), nor when max
// phones are pending (full).
func (o *overlay) addPending(snap *atomic.Pointer[resolve.Snapshot], mac string, max int) (record, full bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := snap.Load() // consistent with extra: publish stores under mu
	var n int
	if s != nil {
		if _, ok := s.Pending[mac]; ok {
			return false, false
		}
		n = len(s.Pending)
	}
	if o.pending[mac] != nil {
		return false, false
	}
	if n+o.extra >= max {
		return false, true
	}
	o.queueLocked(resolve.KeyPending, mac)
	o.extra++
	return true, false
}

// queueLocked is queue with mu held.
func (o *overlay) queueLocked(prefix, mac string) {
	t := o.table(prefix)
	m := t[mac]
	if m == nil {
		m = &mark{}
		t[mac] = m
		o.size.Add(1)
	}
	m.queued++
}

// finish records a write of prefix+mac as over: done, refused, or lost
// to a full queue. Either way the next snapshot is the truth about it.
func (o *overlay) finish(prefix, mac string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if m := o.table(prefix)[mac]; m != nil && m.queued > 0 {
		m.queued--
		m.done = o.epoch
	}
}

// has reports whether prefix+mac was queued or written since the
// snapshot.
func (o *overlay) has(prefix, mac string) bool {
	if o.size.Load() == 0 {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.table(prefix)[mac] != nil
}

// begin is called as a load starts; it returns the load's epoch.
func (o *overlay) begin() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.epoch++
	return o.epoch
}

// publish stores s, read by a load that began at epoch, and drops the
// entries it makes redundant, atomically with respect to the other
// methods. It returns the number of phones pending after it.
func (o *overlay) publish(dst *atomic.Pointer[resolve.Snapshot], s *resolve.Snapshot, epoch uint64) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	dst.Store(s)
	o.drop(o.provisioned, epoch)
	o.drop(o.pending, epoch)
	o.extra = 0
	for mac := range o.pending {
		if _, ok := s.Pending[mac]; !ok {
			o.extra++
		}
	}
	return len(s.Pending) + o.extra
}

// drop deletes the entries of t whose writes completed before the load
// of epoch began; mu is held.
func (o *overlay) drop(t map[string]*mark, epoch uint64) {
	for mac, m := range t {
		if m.queued == 0 && m.done < epoch {
			delete(t, mac)
			o.size.Add(-1)
		}
	}
}
