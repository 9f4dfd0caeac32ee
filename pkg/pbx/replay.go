package pbx

import (
	"sync"
	"time"

	"github.com/pnpd/pnpd/pkg/resolve"
)

// commitWindow is how long an AstDB write Asterisk has acknowledged may
// live only in its memory: Asterisk commits the database to disk at most
// once a second, so a crash (SIGKILL, a power cut) forgets what it
// acknowledged in its last second. Twice that, to be safe.
const commitWindow = 2 * time.Second

// recentWrites remembers the record writes (DBPut) Asterisk acknowledged
// within commitWindow of the last acknowledgement, so that they can be
// written again after the connection is lost: a crashed Asterisk may
// have forgotten them. A record with a newer write queued is superseded:
// replaying the older value would undo the newer one.
type recentWrites struct {
	mu      sync.Mutex
	byKey   map[string]*acked
	order   []*acked       // by time of acknowledgement
	waiting map[string]int // writes queued and not done, by record
	last    time.Time      // the latest acknowledgement
}

type acked struct {
	w          write
	at         time.Time
	superseded bool
}

func writeKey(w write) string { return w.key + w.ev.Identity.MAC }

// queued notes that w is about to be queued: an acknowledged write of its
// record is superseded by it.
func (r *recentWrites) queued(w write) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := writeKey(w)
	if r.waiting == nil {
		r.waiting = map[string]int{}
	}
	r.waiting[k]++
	if a := r.byKey[k]; a != nil {
		a.superseded = true
	}
}

// unqueued undoes queued for a write that did not fit in the queue.
func (r *recentWrites) unqueued(w write) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.release(writeKey(w))
}

func (r *recentWrites) release(k string) {
	if r.waiting[k]--; r.waiting[k] <= 0 {
		delete(r.waiting, k)
	}
}

// done notes that the writer is done with w, acknowledged by Asterisk
// (ok) at now or refused; an acknowledged write is kept for a replay
// unless a newer one of its record is still queued. What is older than
// commitWindow is forgotten.
func (r *recentWrites) done(w write, ok bool, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := writeKey(w)
	r.release(k)
	if !ok {
		return
	}
	r.last = now
	r.prune(now)
	if r.byKey == nil {
		r.byKey = map[string]*acked{}
	}
	a := &acked{w: w, at: now, superseded: r.waiting[k] > 0}
	if old := r.byKey[k]; old != nil {
		old.superseded = true
	}
	r.byKey[k] = a
	r.order = append(r.order, a)
}

// prune forgets the writes acknowledged more than commitWindow before
// ref.
func (r *recentWrites) prune(ref time.Time) {
	i := 0
	for i < len(r.order) && ref.Sub(r.order[i].at) > commitWindow {
		if a := r.order[i]; r.byKey[writeKey(a.w)] == a {
			delete(r.byKey, writeKey(a.w))
		}
		i++
	}
	if i > 0 {
		r.order = append(r.order[:0], r.order[i:]...)
	}
}

// take returns, oldest first, the writes acknowledged within commitWindow
// of the last acknowledgement and not superseded, and forgets them all.
// The window is measured from the last acknowledgement, not from now: a
// PBX that went silent (a power cut) is noticed late, and what it
// acknowledged last is what it may have forgotten.
func (r *recentWrites) take() []write {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.prune(r.last)
	var ws []write
	for _, a := range r.order {
		if !a.superseded {
			ws = append(ws, a.w)
		}
	}
	r.byKey, r.order = nil, nil
	return ws
}

// replay queues again the records Asterisk acknowledged just before the
// connection was lost; the writer does them after the next login. The
// pending and provisioned records go back into the overlay, so that the
// policy goes on seeing them until a snapshot has them again.
func (p *PBX) replay() {
	ws := p.recent.take()
	if len(ws) == 0 {
		return
	}
	queued := 0
	for _, w := range ws {
		w.replay = true
		overlaid := w.key == resolve.KeyPending || w.key == resolve.KeyProvisioned
		if overlaid {
			p.ov.queue(w.key, w.ev.Identity.MAC)
		}
		if p.enqueue(w) {
			queued++
		} else if overlaid {
			p.ov.finish(w.key, w.ev.Identity.MAC)
		}
	}
	p.replayed.Add(int64(queued))
	attrs := []any{"records", len(ws), "queued", queued}
	if lost := len(ws) - queued; lost > 0 {
		p.replayLost.Add(int64(lost))
		p.log.Warn("pbx: records Asterisk may have forgotten in a crash do not fit in the write queue: lost", append(attrs, "lost", lost)...)
		return
	}
	p.log.Info("pbx: the records written in the last seconds will be written again after the reconnect: a crashed Asterisk forgets what it acknowledged in its last second", attrs...)
}
