package pbx

import (
	"sync"
	"time"
)

// commitWindow is how long an AstDB write Asterisk has acknowledged may
// live only in its memory: Asterisk commits the database to disk at most
// once a second, so a crash (SIGKILL, a power cut) forgets what it
// acknowledged in its last second. Twice that, for the time pnpd takes to
// see the connection go.
const commitWindow = 2 * time.Second

// recentWrites remembers the record writes (DBPut) Asterisk acknowledged
// within commitWindow, so that they can be written again after the
// connection is lost: a crashed Asterisk may have forgotten them. A
// record written again later (queued after it) supersedes it: replaying
// the older value would undo the newer one.
type recentWrites struct {
	mu    sync.Mutex
	byKey map[string]*acked
	order []*acked // by time of acknowledgement
}

type acked struct {
	w          write
	at         time.Time
	superseded bool
}

func writeKey(w write) string { return w.key + w.ev.Identity.MAC }

// acked records that w was acknowledged at now, and forgets what is
// older than commitWindow.
func (r *recentWrites) acked(w write, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.prune(now)
	if r.byKey == nil {
		r.byKey = map[string]*acked{}
	}
	a := &acked{w: w, at: now}
	if old := r.byKey[writeKey(w)]; old != nil {
		old.superseded = true
	}
	r.byKey[writeKey(w)] = a
	r.order = append(r.order, a)
}

// queued marks the acknowledged write of w's record, if any, as
// superseded by w.
func (r *recentWrites) queued(w write) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a := r.byKey[writeKey(w)]; a != nil {
		a.superseded = true
	}
}

// prune forgets the writes acknowledged before now-commitWindow.
func (r *recentWrites) prune(now time.Time) {
	i := 0
	for i < len(r.order) && now.Sub(r.order[i].at) > commitWindow {
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
// of now and not superseded, and forgets them all.
func (r *recentWrites) take(now time.Time) []write {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.prune(now)
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
// connection was lost; the writer does them after the next login.
func (p *PBX) replay(now time.Time) {
	ws := p.recent.take(now)
	if len(ws) == 0 {
		return
	}
	queued := 0
	for _, w := range ws {
		w.replay = true
		if p.enqueue(w) {
			queued++
		}
	}
	p.replayed.Add(int64(queued))
	p.log.Info("pbx: the records written in the last seconds will be written again after the reconnect: a crashed Asterisk forgets what it acknowledged in its last second",
		"records", len(ws), "queued", queued)
}
