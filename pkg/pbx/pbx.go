package pbx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pnpd/pnpd/ami"
	"github.com/pnpd/pnpd/pkg/pnp"
	"github.com/pnpd/pnpd/pkg/resolve"
)

// Defaults of Config.
const (
	DefaultQueue       = 50000
	DefaultLoadTimeout = 60 * time.Second
	DefaultCallTimeout = 5 * time.Second
	DefaultMaxPending  = 10000
	// MaxSeen bounds the seen/<mac> records of phones the PBX does not
	// know (no mac/, pending/ or provisioned/ key): the MAC is whatever a
	// SUBSCRIBE claims, so without a bound forged SUBSCRIBEs with made-up
	// MACs would add a key each. Beyond it such a record is not written
	// (counted, logged once); phones the PBX knows are always recorded.
	MaxSeen = 100000
)

// Config configures a PBX. NewPBX does not modify it.
type Config struct {
	Client  *ami.Client // required; its Serve runs elsewhere
	Family  string      // AstDB family, default "pnp"
	Refresh time.Duration
	// Events sends the Pnp* UserEvents; seen records are written either way.
	Events bool
	// Queue bounds the writes (seen records, UserEvents) waiting for the
	// PBX; default 50000.
	Queue       int
	LoadTimeout time.Duration // bound on one DBGetTree; default 60 s
	CallTimeout time.Duration // bound on one write; default 5 s
	// Once writes provisioned/<mac> when a phone is provisioned
	// ([policy] once = true).
	Once bool
	// MaxPending bounds the phones waiting for approval (pending/<mac>,
	// the snapshot's and those written since): beyond it a new one is
	// not recorded, only counted and logged, so that a flood of made-up
	// MACs cannot fill the PBX database. Default 10000.
	MaxPending int
	Logger     *slog.Logger
}

// Stats are a PBX's counters.
type Stats struct {
	Snapshot   *resolve.Snapshot // nil before the first
	Loads      int64             // snapshots taken
	LoadErrors int64
	QueueDepth int
	Written    int64 // writes done (records and UserEvents)
	Overflows  int64 // writes that did not fit in the queue: lost, logged
	// LastOverflow is when the latest of them was; zero when none was.
	LastOverflow time.Time
	WriteErrors  int64 // writes Asterisk refused: lost, logged
	// PendingOverflows counts the phones not recorded as pending because
	// MaxPending were already.
	PendingOverflows int64
	// SeenOverflows counts the seen records of unknown phones not written
	// because MaxSeen were already.
	SeenOverflows int64
	// Replayed counts the records queued again after a lost connection:
	// those Asterisk acknowledged in the seconds before, which a crash
	// makes it forget. They are not counted in Written again; one that
	// does not fit in the queue is counted in ReplayLost, not in
	// Overflows.
	Replayed, ReplayLost int64
}

// PBX is pnpd's view of the PBX. It implements resolve.PBX and
// pnp.Observer, and answers the policy's questions (Window, Provisioned,
// Pending); all methods are safe for concurrent use.
type PBX struct {
	c      *ami.Client
	family string
	// What Configure changes while the PBX view runs.
	refresh    atomic.Int64 // time.Duration
	events     atomic.Bool
	markOnce   atomic.Bool // Config.Once
	maxPending int
	loadT      time.Duration
	callT      time.Duration
	log        *slog.Logger

	snap   atomic.Pointer[resolve.Snapshot] // stored by ov.publish only
	ov     *overlay
	queue  chan write
	reload chan struct{}
	heard  chan struct{} // a PnpReload was heard
	loaded chan struct{} // closed after the first snapshot
	once   sync.Once

	loads, loadErrors, written, writeErrors atomic.Int64
	pending                                 atomic.Int64 // writes queued or being done
	// Writes given up: the queue full, MaxPending reached, MaxSeen
	// reached.
	overflows, pendingOverflows, seenOverflows loss
	// lost counts the writes the full queue lost, by kind, and
	// lostReported what the last "drained" line accounted for (the
	// writer's alone): each episode of overflow ends with one line that
	// says how many of each were lost in it.
	lost         [lostKinds]atomic.Int64
	lostReported [lostKinds]int64

	recent               recentWrites // records acknowledged in the last seconds
	replayed, replayLost atomic.Int64

	seenMu  sync.Mutex
	seenNew map[string]struct{} // unknown phones' seen records queued since the snapshot
}

// loss counts writes given up for one reason, and has the first of each
// episode logged: the rest are only counted until rearm.
type loss struct {
	n      atomic.Int64
	last   atomic.Int64 // when the latest was, Unix nanoseconds
	logged atomic.Bool
}

// add counts one loss; first reports whether it is the episode's first.
func (l *loss) add() (n int64, first bool) {
	l.last.Store(time.Now().UnixNano())
	return l.n.Add(1), l.logged.CompareAndSwap(false, true)
}

// lastAt is when the latest loss was; zero when there was none.
func (l *loss) lastAt() time.Time {
	if ns := l.last.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// rearm ends the episode: the next loss is logged again. It reports
// whether an episode was on.
func (l *loss) rearm() bool { return l.logged.Swap(false) }

// Kinds of queued writes, for the count of those lost.
const (
	lostSeen   = iota // seen/<mac> records
	lostEvent         // UserEvents
	lostRecord        // pending/<mac> and provisioned/<mac> records
	lostKinds
)

// kind is w's kind for the count of lost writes.
func (w write) kind() int {
	switch {
	case w.event != "":
		return lostEvent
	case w.key == resolve.KeySeen:
		return lostSeen
	}
	return lostRecord
}

// write is one queued write: a UserEvent or a DBPut.
// What to send is built by the writer, off the receive path.
type write struct {
	event string // UserEvent name, "" for a DBPut
	key   string // the DBPut's key prefix: resolve.KeySeen, KeyPending or KeyProvisioned
	ev    pnp.Event
	// replay: written already, queued again after a lost connection
	// (not counted in Written again)
	replay bool
}

// New returns a PBX for cfg.
func New(cfg Config) *PBX {
	p := &PBX{c: cfg.Client, family: cfg.Family, maxPending: cfg.MaxPending, loadT: cfg.LoadTimeout, callT: cfg.CallTimeout, log: cfg.Logger,
		ov: newOverlay(), reload: make(chan struct{}, 1), heard: make(chan struct{}, 1), loaded: make(chan struct{})}
	if p.family == "" {
		p.family = "pnp"
	}
	if p.loadT <= 0 {
		p.loadT = DefaultLoadTimeout
	}
	if p.callT <= 0 {
		p.callT = DefaultCallTimeout
	}
	if p.maxPending <= 0 {
		p.maxPending = DefaultMaxPending
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	q := cfg.Queue
	if q <= 0 {
		q = DefaultQueue
	}
	p.queue = make(chan write, q)
	p.Configure(cfg.Refresh, cfg.Events, cfg.Once)
	return p
}

// Configure changes, while the view runs, the period of the snapshots
// (Config.Refresh), whether the UserEvents are sent (Events) and whether
// provisioned phones are marked (Once): what a reload of pnpd may change
// without a new view, so that the snapshot, the queued writes and the
// overlay carry on.
func (p *PBX) Configure(refresh time.Duration, events, once bool) {
	p.refresh.Store(int64(refresh))
	p.events.Store(events)
	p.markOnce.Store(once)
}

// Snapshot implements resolve.PBX.
func (p *PBX) Snapshot() *resolve.Snapshot { return p.snap.Load() }

// Live implements resolve.PBX: whether AMI is logged in now.
func (p *PBX) Live() bool { return p.c.Status().State == ami.Connected }

// Get implements resolve.PBX with a DBGet.
func (p *PBX) Get(ctx context.Context, key string) (string, bool, error) {
	v, err := p.c.DBGet(ctx, p.family, key)
	switch {
	case err == nil:
		return v, true, nil
	case errors.Is(err, ami.ErrNotFound):
		return "", false, nil
	case errors.Is(err, ami.ErrNotConnected), errors.Is(err, ami.ErrClosed):
		return "", false, fmt.Errorf("%w: %w", resolve.ErrPBXDown, err)
	}
	return "", false, err
}

// Eval implements resolve.PBX with a Getvar.
func (p *PBX) Eval(ctx context.Context, expr string) (string, error) {
	v, err := p.c.Getvar(ctx, expr)
	if errors.Is(err, ami.ErrNotConnected) || errors.Is(err, ami.ErrClosed) {
		return "", fmt.Errorf("%w: %w", resolve.ErrPBXDown, err)
	}
	return v, err
}

// Loaded returns a channel closed once the first snapshot is in.
func (p *PBX) Loaded() <-chan struct{} { return p.loaded }

// Reload asks Serve for a new snapshot now (as PnpReload does).
func (p *PBX) Reload() {
	select {
	case p.reload <- struct{}{}:
	default: // one is pending already
	}
}

// Stats returns the counters.
func (p *PBX) Stats() Stats {
	return Stats{Snapshot: p.snap.Load(), Loads: p.loads.Load(), LoadErrors: p.loadErrors.Load(),
		QueueDepth: int(p.pending.Load()), Written: p.written.Load(), Overflows: p.overflows.n.Load(),
		WriteErrors: p.writeErrors.Load(), PendingOverflows: p.pendingOverflows.n.Load(), SeenOverflows: p.seenOverflows.n.Load(),
		Replayed: p.replayed.Load(), ReplayLost: p.replayLost.Load(), LastOverflow: p.overflows.lastAt()}
}

// Window returns the end of the provisioning window of the snapshot (zero
// when closed); known is false before the first snapshot. Only "pnpd ctl"
// writes the window, and it sends PnpReload: the snapshot is enough.
func (p *PBX) Window() (until time.Time, known bool) {
	s := p.snap.Load()
	if s == nil {
		return time.Time{}, false
	}
	return s.Window, true
}

// Provisioned reports whether the phone is marked provisioned under once:
// in the snapshot, or by this pnpd since. known is false before the first
// snapshot, unless this pnpd marked the phone itself.
func (p *PBX) Provisioned(mac string) (done, known bool) {
	// The overlay first, then the snapshot: an entry leaves the overlay
	// only after a snapshot that holds the truth about it is stored.
	if p.ov.has(resolve.KeyProvisioned, mac) {
		return true, true
	}
	s := p.snap.Load()
	if s == nil {
		return false, false
	}
	_, done = s.Provisioned[mac]
	return done, true
}

// Pending reports whether the phone waits for approval: in the snapshot,
// or recorded by this pnpd since.
func (p *PBX) Pending(mac string) bool {
	if p.ov.has(resolve.KeyPending, mac) { // first: see Provisioned
		return true
	}
	s := p.snap.Load()
	if s == nil {
		return false
	}
	_, ok := s.Pending[mac]
	return ok
}

// Observe implements pnp.Observer: it queues the UserEvent and, for an
// outcome, the seen record, and for the outcomes "pending" and (with
// Config.Once) "provisioned" the key the policy reads. It never blocks.
func (p *PBX) Observe(ev pnp.Event) {
	switch ev.Kind {
	case pnp.EventSeen:
		if p.events.Load() {
			p.enqueue(write{event: EventSeen, ev: ev})
		}
	case pnp.EventDone:
		mac := ev.Identity.MAC
		// The key before the UserEvent: a script woken by the event
		// finds what it announces.
		switch ev.Outcome {
		case "provisioned":
			if p.markOnce.Load() && mac != "" {
				p.put(resolve.KeyProvisioned, ev)
			}
			if p.events.Load() {
				p.enqueue(write{event: EventProvisioned, ev: ev})
			}
		case "pending":
			if mac != "" {
				p.recordPending(ev)
			}
		case "observed":
		default: // refused by the policy among them: Reason says why
			if p.events.Load() {
				p.enqueue(write{event: EventFailed, ev: ev})
			}
		}
		if mac != "" && p.admitSeen(mac) {
			p.enqueue(write{key: resolve.KeySeen, ev: ev})
		}
	}
}

// admitSeen reports whether the seen record of mac may be written: always
// for a phone the snapshot knows, and for others while the family holds
// fewer than MaxSeen seen records (the snapshot's, and those of unknown
// phones queued since).
func (p *PBX) admitSeen(mac string) bool {
	snap := p.snap.Load()
	base := 0
	if snap != nil {
		if _, ok := snap.MACs[mac]; ok {
			return true
		}
		if _, ok := snap.Pending[mac]; ok {
			return true
		}
		if _, ok := snap.Provisioned[mac]; ok {
			return true
		}
		base = snap.Seen
	}
	p.seenMu.Lock()
	defer p.seenMu.Unlock()
	if _, ok := p.seenNew[mac]; ok {
		return true
	}
	if base+len(p.seenNew) >= MaxSeen {
		if n, first := p.seenOverflows.add(); first {
			p.log.Warn("pbx: the family holds the most seen records of unknown phones: new ones are not written",
				"max_seen", MaxSeen, "not_written", n, "mac", mac)
		}
		return false
	}
	if p.seenNew == nil {
		p.seenNew = map[string]struct{}{}
	}
	p.seenNew[mac] = struct{}{}
	return true
}

// seenPublished forgets the unknown phones counted since the last snapshot:
// the new one counts their records (those written before it was read).
func (p *PBX) seenPublished(s *resolve.Snapshot) {
	p.seenMu.Lock()
	p.seenNew = nil
	p.seenMu.Unlock()
	if s.Seen < MaxSeen {
		p.seenOverflows.rearm()
	}
}

// put queues the DBPut of a key the overlay keeps (pending/, provisioned/).
func (p *PBX) put(prefix string, ev pnp.Event) {
	if prefix != resolve.KeyPending { // addPending has done it
		p.ov.queue(prefix, ev.Identity.MAC)
	}
	if !p.enqueue(write{key: prefix, ev: ev}) {
		p.ov.finish(prefix, ev.Identity.MAC)
	}
}

// recordPending records a phone waiting for approval and announces it,
// once: a phone pending already keeps its first record (the seen record
// has the latest), and beyond MaxPending nothing is recorded.
func (p *PBX) recordPending(ev pnp.Event) {
	record, full := p.ov.addPending(&p.snap, ev.Identity.MAC, p.maxPending)
	if full {
		if n, first := p.pendingOverflows.add(); first {
			p.log.Warn("pbx: too many phones waiting for approval: new ones are not recorded",
				"max_pending", p.maxPending, "not_recorded", n, "mac", ev.Identity.MAC)
		}
		return
	}
	if !record {
		return
	}
	p.put(resolve.KeyPending, ev)
	if p.events.Load() {
		p.enqueue(write{event: EventPending, ev: ev})
	}
}

func toAMI(hs []header) []ami.Header {
	out := make([]ami.Header, len(hs))
	for i, h := range hs {
		out[i] = ami.Header{Key: h.Key, Value: h.Value}
	}
	return out
}

// enqueue queues w; false when the queue is full (counted and logged).
func (p *PBX) enqueue(w write) bool {
	record := w.event == ""
	if record {
		p.recent.queued(w)
	}
	p.pending.Add(1)
	select {
	case p.queue <- w:
		return true
	default:
		p.pending.Add(-1)
		if record {
			p.recent.unqueued(w)
		}
		if w.replay { // counted by replay: written once already
			return false
		}
		p.lost[w.kind()].Add(1)
		if n, first := p.overflows.add(); first {
			p.log.Warn("pbx write queue full: writes are being lost", "queue", cap(p.queue), "lost", n,
				"what", w.what())
		}
		return false
	}
}

func (w write) what() string {
	if w.event != "" {
		return "UserEvent " + w.event
	}
	return "DBPut " + w.key + w.ev.Identity.MAC
}

// Serve takes the snapshots and does the queued writes until ctx ends.
// Run the ami.Client's Serve beside it.
func (p *PBX) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(2)
	go func() {
		defer wg.Done()
		p.writer(ctx)
	}()
	go func() {
		defer wg.Done()
		p.listen(ctx)
	}()

	// The refresh ticker follows Configure.
	var tick <-chan time.Time
	var ticker *time.Ticker
	var period time.Duration
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	loaded := -1    // the login whose snapshot is in
	announced := -1 // the login already logged
	wasLive := false
	var retry time.Time // no new try at the login's snapshot before
	backoff := minRetry
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for {
		if r := time.Duration(p.refresh.Load()); r != period {
			if ticker != nil {
				ticker.Stop()
				ticker, tick = nil, nil
			}
			if period = r; r > 0 {
				ticker = time.NewTicker(r)
				tick = ticker.C
			}
		}
		st := p.c.Status()
		live := st.State == ami.Connected
		switch {
		case live && st.Logins != loaded && !time.Now().Before(retry):
			// A new login (the first, or after a reconnect): what
			// happened meanwhile is unknown, so read it all again;
			// until that works the snapshot is retried with backoff.
			if announced >= 0 && announced != st.Logins {
				p.log.Info("pbx connected again: taking a new snapshot", "logins", st.Logins)
			}
			announced = st.Logins
			if p.load(ctx, "login") {
				loaded, backoff = st.Logins, minRetry
			} else {
				retry, backoff = time.Now().Add(backoff), min(2*backoff, maxRetry)
			}
		case !live && wasLive:
			p.replay()
			snap := p.snap.Load()
			attrs := []any{"err", errString(st.Err)}
			if snap != nil {
				attrs = append(attrs, "snapshot_taken", snap.Taken.Format(time.RFC3339), "phones", len(snap.MACs))
			}
			p.log.Warn("pbx not connected: answering from the last snapshot until it is back", attrs...)
		}
		wasLive = live
		select {
		case <-ctx.Done():
			return nil
		case <-poll.C:
		case <-tick:
			if live {
				p.load(ctx, "refresh")
			}
		case <-p.reload:
			if live {
				p.load(ctx, "reload")
			}
		case <-p.heard:
			if !live {
				continue
			}
			// A burst of PnpReloads (a script assigning a hundred
			// phones) makes one snapshot, not a hundred.
			wait := time.NewTimer(reloadGap)
			select {
			case <-ctx.Done():
				wait.Stop()
				return nil
			case <-wait.C:
			}
			select {
			case <-p.heard:
			default:
			}
			p.load(ctx, EventReload)
		}
	}
}

// Bounds of the retries of a login's snapshot, and how long a PnpReload
// waits for the rest of its burst.
const (
	minRetry  = time.Second
	maxRetry  = 30 * time.Second
	reloadGap = 200 * time.Millisecond
)

// listen hears PnpReload on a goroutine of its own that only signals, so
// that no UserEvent (pnpd's own PnpSeen among them) waits behind a
// snapshot being taken. If the client had to drop events, one may have
// been a PnpReload: a snapshot is taken to be safe.
func (p *PBX) listen(ctx context.Context) {
	events, cancel := p.c.Subscribe("UserEvent", 1024)
	defer cancel()
	dropped := p.c.Dropped()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok { // the client shut down
				return
			}
			hear := strings.EqualFold(ev.Get("UserEvent"), EventReload)
			if d := p.c.Dropped(); d != dropped {
				p.log.Warn("pbx: AMI events were dropped: taking a new snapshot in case a PnpReload was among them", "dropped", d-dropped)
				dropped, hear = d, true
			}
			if hear {
				select {
				case p.heard <- struct{}{}:
				default: // one is pending already
				}
			}
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// load takes a snapshot of the whole family and publishes it; false when
// it could not.
func (p *PBX) load(ctx context.Context, why string) bool {
	start := time.Now()
	epoch := p.ov.begin()
	lctx, cancel := context.WithTimeout(ctx, p.loadT)
	entries, err := p.c.DBGetTree(lctx, p.family, "")
	cancel()
	if err != nil {
		p.loadErrors.Add(1)
		if ctx.Err() == nil {
			p.log.Warn("pbx snapshot failed: keeping the last one", "why", why, "err", err)
		}
		return false
	}
	s := SnapshotOf(entries)
	if pending := p.ov.publish(&p.snap, s, epoch); pending < p.maxPending {
		p.pendingOverflows.rearm()
	}
	p.seenPublished(s)
	p.loads.Add(1)
	p.once.Do(func() { close(p.loaded) })
	p.log.Info("pbx snapshot", "why", why, "family", p.family, "entries", s.Entries, "phones", len(s.MACs),
		"tenants", len(s.Tenants), "default", s.Default != "", "ignored", s.Ignored,
		"took", time.Since(start).Round(time.Millisecond).String())
	return true
}

// writer does the queued writes in order. A write that finds the PBX away,
// or gets no answer, waits for it and is tried again (a UserEvent may then
// arrive twice); one that Asterisk refuses is counted and logged.
func (p *PBX) writer(ctx context.Context) {
	for {
		var w write
		select {
		case <-ctx.Done():
			return
		case w = <-p.queue:
		}
		for {
			err := p.do(ctx, w)
			if err == nil {
				if !w.replay {
					p.written.Add(1)
				}
				if w.event == "" {
					p.recent.done(w, true, time.Now())
				}
				break
			}
			if ctx.Err() != nil || errors.Is(err, ami.ErrClosed) {
				return
			}
			var refused *ami.Error
			if errors.As(err, &refused) {
				if w.event == "" {
					p.recent.done(w, false, time.Now())
				}
				n := p.writeErrors.Add(1)
				p.log.Warn("pbx write refused", "what", w.what(), "err", err, "refused", n)
				break
			}
			// Away or silent: wait for a login, or a while, then again.
			wctx, cancel := context.WithTimeout(ctx, p.callT)
			werr := p.c.WaitConnected(wctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if werr == nil && p.Live() {
				select { // connected but silent: no tight loop
				case <-ctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
		if w.event == "" && w.key != resolve.KeySeen {
			p.ov.finish(w.key, w.ev.Identity.MAC)
		}
		if p.pending.Add(-1) == 0 && p.overflows.rearm() {
			p.reportLost()
		}
	}
}

// reportLost ends an episode of overflow, once the queue has drained: one
// line with what was lost in it, by kind, so that an operator (and a
// test) can account for every write. Only the writer calls it; an empty
// queue cannot overflow meanwhile.
func (p *PBX) reportLost() {
	var d [lostKinds]int64
	var sum int64
	for k := range d {
		n := p.lost[k].Load()
		d[k], p.lostReported[k] = n-p.lostReported[k], n
		sum += d[k]
	}
	p.log.Warn("pbx write queue drained: writes that did not fit while it was full are lost", "lost", sum,
		"seen_records", d[lostSeen], "user_events", d[lostEvent], "other_records", d[lostRecord],
		"lost_since_start", p.overflows.n.Load())
}

func (p *PBX) do(ctx context.Context, w write) error {
	cctx, cancel := context.WithTimeout(ctx, p.callT)
	defer cancel()
	if w.event != "" {
		return p.c.UserEvent(cctx, w.event, toAMI(eventHeaders(w.ev))...)
	}
	value := SeenRecord(w.ev) // seen/ and pending/
	if w.key == resolve.KeyProvisioned {
		value = ProvisionedValue(w.ev.Time)
	}
	return p.c.DBPut(cctx, p.family, w.key+w.ev.Identity.MAC, value)
}

// SnapshotOf reads the entries of one DBGetTree of the family.
func SnapshotOf(entries []ami.Entry) *resolve.Snapshot {
	s := resolve.NewSnapshot(len(entries))
	for _, e := range entries {
		s.Add(e.Key, e.Value)
	}
	s.Taken = time.Now()
	return s
}

// Flush waits until the queue is empty or ctx ends; for a clean shutdown.
func (p *PBX) Flush(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for p.pending.Load() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("pbx: flush: %d writes left: %w", p.pending.Load(), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}
