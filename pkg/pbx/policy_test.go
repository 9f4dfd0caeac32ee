package pbx

// The policy's keys (pending/, provisioned/, window) over a scripted AMI
// server (ami/amitest): what Observe writes, the local overlay, MaxPending.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pnpd/pnpd/ami"
	"github.com/pnpd/pnpd/ami/amitest"
	"github.com/pnpd/pnpd/pkg/phone"
	"github.com/pnpd/pnpd/pkg/pnp"
	"github.com/pnpd/pnpd/pkg/resolve"
)

// startFake runs a PBX over a fresh amitest server until the test ends.
func startFake(t *testing.T, cfg Config) (*PBX, *ami.Client, *amitest.Server) {
	t.Helper()
	srv := amitest.New(t, amitest.Options{})
	p, c := start(t, srv.Addr(), srv.Username(), srv.Secret(), cfg)
	return p, c, srv
}

// waitFor polls cond until it holds; bounded, never a timed assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// reload takes a new snapshot and waits until it is published.
func reload(t *testing.T, p *PBX) {
	t.Helper()
	before := p.Stats().Loads
	p.Reload()
	waitFor(t, "reloaded", func() bool { return p.Stats().Loads > before })
}

func flush(t *testing.T, p *PBX) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// recorder records, in order, the DBPuts ("DBPut key=value") and
// UserEvents ("UserEvent name") a server answers.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) install(srv *amitest.Server) {
	srv.Handle("DBPut", func(ss *amitest.Session, req amitest.Message) {
		r.add("DBPut " + req.Get("Key") + "=" + req.Get("Val"))
		srv.Builtin(ss, req)
	})
	srv.Handle("UserEvent", func(ss *amitest.Session, req amitest.Message) {
		r.add("UserEvent " + req.Get("UserEvent") + " " + req.Get("Mac"))
		srv.Builtin(ss, req)
	})
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, s)
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func TestObservePolicyOutcomes(t *testing.T) {
	const mac = "001fc11b4e1c"
	at := time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)
	ev := func(outcome, reason string) pnp.Event {
		e := doneEvent(mac)
		e.Outcome, e.Reason, e.Time = outcome, reason, at
		return e
	}
	seen := func(e pnp.Event) string { return "DBPut seen/" + mac + "=" + SeenRecord(e) }
	tests := []struct {
		name string
		once bool
		ev   pnp.Event
		want []string // in order
	}{
		{"pending", false, ev("pending", ""), []string{
			"DBPut pending/" + mac + "=" + SeenRecord(ev("pending", "")),
			"UserEvent PnpPending " + mac,
			seen(ev("pending", ""))}},
		{"refused", false, ev("refused", "mac denied"), []string{
			"UserEvent PnpFailed " + mac,
			seen(ev("refused", "mac denied"))}},
		{"provisioned with once", true, ev("provisioned", ""), []string{
			"DBPut provisioned/" + mac + "=2026-11-26T02:00:00Z",
			"UserEvent PnpProvisioned " + mac,
			seen(ev("provisioned", ""))}},
		{"provisioned without once", false, ev("provisioned", ""), []string{
			"UserEvent PnpProvisioned " + mac,
			seen(ev("provisioned", ""))}},
		{"pending under once", true, ev("pending", ""), []string{
			"DBPut pending/" + mac + "=" + SeenRecord(ev("pending", "")),
			"UserEvent PnpPending " + mac,
			seen(ev("pending", ""))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := amitest.New(t, amitest.Options{})
			var rec recorder
			rec.install(srv)
			p, _ := start(t, srv.Addr(), srv.Username(), srv.Secret(), Config{Events: true, Once: tt.once})
			waitLoaded(t, p)
			p.Observe(tt.ev)
			flush(t, p)
			if got := rec.list(); strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("writes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestRefusedReasonInPnpFailed(t *testing.T) {
	srv := amitest.New(t, amitest.Options{})
	var mu sync.Mutex
	var reason string
	srv.Handle("UserEvent", func(ss *amitest.Session, req amitest.Message) {
		mu.Lock()
		reason = req.Get("Reason")
		mu.Unlock()
		srv.Builtin(ss, req)
	})
	p, _ := start(t, srv.Addr(), srv.Username(), srv.Secret(), Config{Events: true})
	waitLoaded(t, p)
	ev := doneEvent("001fc11b4e1c")
	ev.Outcome, ev.Reason = "refused", "mac 001fc11b4e1c is in deny_macs"
	p.Observe(ev)
	flush(t, p)
	mu.Lock()
	defer mu.Unlock()
	if reason != ev.Reason {
		t.Errorf("PnpFailed Reason %q", reason)
	}
	if v, _ := srv.DBGet("pnp", "seen/001fc11b4e1c"); !strings.Contains(v, "outcome=refused") {
		t.Errorf("seen record %q", v)
	}
}

func TestPolicyKeysBeforeTheFirstSnapshot(t *testing.T) {
	// Nothing listens there: no snapshot ever comes, writes wait.
	c := ami.New(ami.Config{Address: "127.0.0.1:1", Username: "x", Secret: "y"})
	p := New(Config{Client: c, Once: true})
	if until, known := p.Window(); known || !until.IsZero() {
		t.Errorf("Window %v %v before any snapshot", until, known)
	}
	if done, known := p.Provisioned("001fc11b4e1c"); done || known {
		t.Errorf("Provisioned %v %v before any snapshot", done, known)
	}
	if p.Pending("001fc11b4e1c") {
		t.Error("Pending before any snapshot")
	}
	// This pnpd's own writes count before any snapshot.
	p.Observe(doneEvent("001fc11b4e1c"))
	pend := doneEvent("000413000001")
	pend.Outcome = "pending"
	p.Observe(pend)
	if done, known := p.Provisioned("001fc11b4e1c"); !done || !known {
		t.Errorf("Provisioned %v %v after provisioning it", done, known)
	}
	if !p.Pending("000413000001") || p.Pending("001fc11b4e1c") {
		t.Error("Pending does not see the pending phone (or sees another)")
	}
}

func TestWindowFromSnapshot(t *testing.T) {
	p, c, srv := startFake(t, Config{})
	srv.DBPut("pnp", "window", "2026-11-26T06:00:00Z")
	reload(t, p)
	if until, known := p.Window(); !known || !until.Equal(time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC)) {
		t.Errorf("Window %v %v", until, known)
	}
	if err := c.DBDel(context.Background(), "pnp", "window"); err != nil {
		t.Fatal(err)
	}
	reload(t, p)
	if until, known := p.Window(); !known || !until.IsZero() {
		t.Errorf("Window %v %v after the close", until, known)
	}
}

// TestOverlayLifetime follows provisioned/<mac> writes over AMI: seen at
// once while queued, kept through a snapshot that began before the write
// completed (and so lacks it), dropped by the next one, so that a rearm
// (the key deleted, then PnpReload) rearms.
func TestOverlayLifetime(t *testing.T) {
	const mac = "001fc11b4e1c"
	srv := amitest.New(t, amitest.Options{})
	// DBPuts of provisioned/ are answered, not stored: the family then
	// looks as if rearmed right after the write.
	arrived, release := make(chan struct{}, 10), make(chan struct{})
	srv.Handle("DBPut", func(ss *amitest.Session, req amitest.Message) {
		if !strings.HasPrefix(req.Get("Key"), resolve.KeyProvisioned) {
			srv.Builtin(ss, req)
			return
		}
		arrived <- struct{}{}
		<-release
		_ = ss.Send(amitest.Success(req, "Updated database successfully"))
	})
	p, _ := start(t, srv.Addr(), srv.Username(), srv.Secret(), Config{Once: true})
	waitLoaded(t, p)
	if done, known := p.Provisioned(mac); done || !known {
		t.Fatalf("Provisioned %v %v at the start", done, known)
	}

	// Queued and being done: seen at once.
	p.Observe(doneEvent(mac))
	if done, known := p.Provisioned(mac); !done || !known {
		t.Errorf("Provisioned %v %v with the write queued", done, known)
	}
	<-arrived
	if done, _ := p.Provisioned(mac); !done {
		t.Error("Provisioned false with the write being done")
	}
	close(release)
	waitFor(t, "written", func() bool { return p.Stats().QueueDepth == 0 })
	if done, _ := p.Provisioned(mac); !done {
		t.Error("Provisioned false after the write, before a new snapshot")
	}
	reload(t, p)
	if done, known := p.Provisioned(mac); done || !known {
		t.Errorf("Provisioned %v %v after a snapshot begun after the write (the family lacks the key)", done, known)
	}

	// A snapshot begins; the write is queued and completes; then the
	// snapshot (read before the write) is published: the entry stays.
	// Holding the list after its first answer leaves the connection
	// free for the DBPut.
	type held struct {
		ss  *amitest.Session
		req amitest.Message
	}
	trees := make(chan held, 1)
	srv.Handle("DBGetTree", func(ss *amitest.Session, req amitest.Message) {
		_ = ss.Send(amitest.ListStart(req))
		trees <- held{ss, req}
	})
	before := p.Stats().Loads
	p.Reload()
	tree := <-trees
	p.Observe(doneEvent(mac))
	<-arrived
	waitFor(t, "written", func() bool { return p.Stats().QueueDepth == 0 })
	if err := tree.ss.Send(amitest.ListComplete(tree.req, "DBGetTreeComplete", 0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reloaded", func() bool { return p.Stats().Loads > before })
	if _, ok := p.Snapshot().Provisioned[mac]; ok {
		t.Fatal("the snapshot holds the key: the test is wrong")
	}
	if done, known := p.Provisioned(mac); !done || !known {
		t.Errorf("Provisioned %v %v after a snapshot begun before the write completed", done, known)
	}
	srv.Handle("DBGetTree", nil)
	reload(t, p)
	if done, known := p.Provisioned(mac); done || !known {
		t.Errorf("Provisioned %v %v after the next snapshot", done, known)
	}
	if n := p.ov.size.Load(); n != 0 {
		t.Errorf("overlay holds %d entries", n)
	}

	// The usual way: written, then the snapshot has it.
	srv.Handle("DBPut", nil)
	p.Observe(doneEvent(mac))
	flush(t, p)
	reload(t, p)
	if _, ok := p.Snapshot().Provisioned[mac]; !ok {
		t.Error("the snapshot lacks provisioned/" + mac)
	}
	if done, _ := p.Provisioned(mac); !done || p.ov.size.Load() != 0 {
		t.Errorf("Provisioned %v, overlay %d", done, p.ov.size.Load())
	}
}

// TestOverlaySequences drives the overlay alone through the orders in
// which writes and loads can interleave.
func TestOverlaySequences(t *testing.T) {
	const mac = "001fc11b4e1c"
	tests := []struct {
		name  string
		steps string // q: queue, f: finish, b: begin a load, p: publish the last begun
		want  bool   // the entry is still there at the end
	}{
		{"queued, no load", "q", true},
		{"queued through a load", "qbp", true},
		{"done before the load began", "qfbp", false},
		{"done after the load began", "qbfp", true},
		{"done after the load began, then the next load", "qbfpbp", false},
		{"queued after the load began", "bqfp", true},
		{"two writes, one done", "qqfbp", true},
		{"two writes, both done", "qqffbp", false},
		{"done, a load begins, written again", "qfbqfp", true},
		{"finish without queue is ignored", "fbp", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newOverlay()
			var dst atomic.Pointer[resolve.Snapshot]
			var epoch uint64
			for _, step := range tt.steps {
				switch step {
				case 'q':
					o.queue(resolve.KeyProvisioned, mac)
				case 'f':
					o.finish(resolve.KeyProvisioned, mac)
				case 'b':
					epoch = o.begin()
				case 'p':
					o.publish(&dst, resolve.NewSnapshot(0), epoch)
				}
			}
			if got := o.has(resolve.KeyProvisioned, mac); got != tt.want {
				t.Errorf("has = %v, want %v", got, tt.want)
			}
			if o.has(resolve.KeyPending, mac) {
				t.Error("a provisioned mark shows as pending")
			}
			if n := o.size.Load(); (n == 1) != tt.want {
				t.Errorf("size %d", n)
			}
		})
	}
}

func TestOverlayPendingCount(t *testing.T) {
	o := newOverlay()
	var dst atomic.Pointer[resolve.Snapshot]
	s := resolve.NewSnapshot(1)
	s.Add("pending/000413000001", "brand=snom")
	o.publish(&dst, s, o.begin())
	for _, tt := range []struct {
		mac          string
		record, full bool
	}{
		{"000413000001", false, false}, // in the snapshot
		{"000413000002", true, false},
		{"000413000002", false, false}, // written since
		{"000413000003", true, false},
		{"000413000004", false, true},
	} {
		if record, full := o.addPending(&dst, tt.mac, 3); record != tt.record || full != tt.full {
			t.Errorf("addPending(%s) = %v %v, want %v %v", tt.mac, record, full, tt.record, tt.full)
		}
	}
	// Both written; a snapshot that holds one of them, begun after.
	o.finish(resolve.KeyPending, "000413000002")
	o.finish(resolve.KeyPending, "000413000003")
	e := o.begin()
	s2 := resolve.NewSnapshot(2)
	s2.Add("pending/000413000002", "brand=snom")
	if n := o.publish(&dst, s2, e); n != 1 {
		t.Errorf("%d pending after the snapshot, want 1", n)
	}
	// Queued but not written: counted once whether or not the snapshot
	// holds it.
	o.addPending(&dst, "000413000005", 3)
	s3 := resolve.NewSnapshot(2)
	s3.Add("pending/000413000002", "")
	s3.Add("pending/000413000005", "")
	if n := o.publish(&dst, s3, o.begin()); n != 2 {
		t.Errorf("%d pending, want 2", n)
	}
	if n := o.publish(&dst, resolve.NewSnapshot(0), o.begin()); n != 1 {
		t.Errorf("%d pending with the queued one only, want 1", n)
	}
}

func TestMaxPending(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))
	srv := amitest.New(t, amitest.Options{})
	old := "brand=snom&time=2026-11-26T01%3A00%3A00Z"
	srv.DBPut("pnp", "pending/000413000001", old)
	p, c := start(t, srv.Addr(), srv.Username(), srv.Secret(), Config{Events: true, MaxPending: 2, Logger: log})
	waitLoaded(t, p)
	pending := func(mac string) pnp.Event {
		ev := doneEvent(mac)
		ev.Outcome = "pending"
		return ev
	}
	countLog := func() int {
		mu.Lock()
		defer mu.Unlock()
		return strings.Count(logs.String(), "too many phones waiting for approval")
	}

	p.Observe(pending("000413000002")) // the second: recorded
	p.Observe(pending("000413000003")) // full
	p.Observe(pending("000413000004")) // full
	p.Observe(pending("000413000001")) // pending already: first record kept
	p.Observe(pending("000413000002")) // pending already (written since)
	flush(t, p)
	if st := p.Stats(); st.PendingOverflows != 2 {
		t.Errorf("PendingOverflows %d, want 2", st.PendingOverflows)
	}
	if n := countLog(); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}
	if v, _ := srv.DBGet("pnp", "pending/000413000001"); v != old {
		t.Errorf("pending/000413000001 rewritten: %q", v)
	}
	if _, ok := srv.DBGet("pnp", "pending/000413000002"); !ok {
		t.Error("pending/000413000002 not written")
	}
	for _, m := range []string{"000413000003", "000413000004"} {
		if _, ok := srv.DBGet("pnp", "pending/"+m); ok {
			t.Errorf("pending/%s written beyond MaxPending", m)
		}
		if _, ok := srv.DBGet("pnp", "seen/"+m); !ok {
			t.Errorf("seen/%s not written", m)
		}
		if p.Pending(m) {
			t.Errorf("Pending(%s) beyond MaxPending", m)
		}
	}
	if n := srv.Received("UserEvent"); n != 1 {
		t.Errorf("%d UserEvents, want one PnpPending", n)
	}
	for _, m := range []string{"000413000001", "000413000002"} {
		if !p.Pending(m) {
			t.Errorf("Pending(%s) false", m)
		}
	}

	// One approved (its key deleted): room for one more, and a new
	// overflow is logged again.
	if err := c.DBDel(context.Background(), "pnp", "pending/000413000001"); err != nil {
		t.Fatal(err)
	}
	reload(t, p)
	if p.Pending("000413000001") {
		t.Error("Pending after the key was deleted and a new snapshot taken")
	}
	p.Observe(pending("000413000003"))
	p.Observe(pending("000413000004"))
	flush(t, p)
	if _, ok := srv.DBGet("pnp", "pending/000413000003"); !ok {
		t.Error("pending/000413000003 not written after room was made")
	}
	if st := p.Stats(); st.PendingOverflows != 3 {
		t.Errorf("PendingOverflows %d, want 3", st.PendingOverflows)
	}
	if n := countLog(); n != 2 {
		t.Errorf("logged %d times, want twice (once per episode)", n)
	}
}

// TestOverlayConcurrent runs Observe, the policy's questions and snapshots
// at once (for -race), then checks that no mark was lost.
func TestOverlayConcurrent(t *testing.T) {
	p, _, _ := startFake(t, Config{Once: true, MaxPending: 1000})
	waitLoaded(t, p)
	const workers, per = 4, 50
	mac := func(w, i int) string { return fmt.Sprintf("0015%04x%04x", w, i) }
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				ev := doneEvent(mac(w, i))
				if i%2 == 1 {
					ev.Outcome = "pending"
				}
				p.Observe(ev)
				if i%2 == 0 {
					if done, _ := p.Provisioned(mac(w, i)); !done {
						t.Errorf("Provisioned(%s) false just after its Observe", mac(w, i))
					}
				} else if !p.Pending(mac(w, i)) {
					t.Errorf("Pending(%s) false just after its Observe", mac(w, i))
				}
				p.Window()
				if i%10 == 0 {
					p.Reload()
				}
			}
		}()
	}
	wg.Wait()
	flush(t, p)
	reload(t, p)
	for w := range workers {
		for i := range per {
			if i%2 == 0 {
				if done, known := p.Provisioned(mac(w, i)); !done || !known {
					t.Errorf("Provisioned(%s) %v %v", mac(w, i), done, known)
				}
			} else if !p.Pending(mac(w, i)) {
				t.Errorf("Pending(%s) false", mac(w, i))
			}
		}
	}
	if s := p.Snapshot(); len(s.Provisioned) != workers*per/2 || len(s.Pending) != workers*per/2 {
		t.Errorf("snapshot: %d provisioned, %d pending", len(s.Provisioned), len(s.Pending))
	}
}

// Forged SUBSCRIBEs with made-up MACs cannot grow the family without
// bound: beyond MaxSeen seen records, unknown phones' are not written;
// known phones' always are.
func TestSeenBounded(t *testing.T) {
	p := New(Config{Queue: 16})
	s := resolve.NewSnapshot(2)
	s.Add(resolve.MACKey("0015657322ff"), "acme")
	s.Seen = MaxSeen - 2
	p.snap.Store(s)
	done := func(mac string) pnp.Event {
		return pnp.Event{Kind: pnp.EventDone, Outcome: "refused", Identity: phone.Identity{MAC: mac}}
	}
	for _, mac := range []string{"020000000001", "020000000002", "020000000003", "020000000001", "0015657322ff"} {
		p.Observe(done(mac))
	}
	var seen []string
	for len(p.queue) > 0 {
		if w := <-p.queue; w.key == resolve.KeySeen {
			seen = append(seen, w.ev.Identity.MAC)
		}
	}
	want := []string{"020000000001", "020000000002", "020000000001", "0015657322ff"}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("seen records written for %v, want %v", seen, want)
	}
	if st := p.Stats(); st.SeenOverflows != 1 {
		t.Errorf("SeenOverflows %d, want 1", st.SeenOverflows)
	}
	// A new snapshot with room: unknown phones are recorded again.
	s2 := resolve.NewSnapshot(0)
	p.snap.Store(s2)
	p.seenPublished(s2)
	p.Observe(done("020000000003"))
	if w := <-p.queue; w.key != resolve.KeySeen || w.ev.Identity.MAC != "020000000003" {
		t.Errorf("after a snapshot with room: %+v", w)
	}
}
