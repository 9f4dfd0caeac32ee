package pnp

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/resolve"
)

// slowResolver is a Fast resolver that cannot decide without I/O: every
// Resolve waits for release, so the test sees what leaves before.
type slowResolver struct {
	release chan struct{}
	urls    map[string]string // by MAC; absent = nobody's phone
	err     error
}

func (r *slowResolver) Decide(resolve.Request) (resolve.Decision, bool, error) {
	return resolve.Decision{}, false, nil
}

func (r *slowResolver) Resolve(ctx context.Context, req resolve.Request) (resolve.Decision, error) {
	select {
	case <-r.release:
	case <-ctx.Done():
		return resolve.Decision{}, ctx.Err()
	}
	return resolve.Decision{URL: r.urls[req.MAC], Source: "pbx", Tenant: "acme"}, r.err
}

type recorder struct {
	mu     sync.Mutex
	events []Event
	done   chan Event
}

func newRecorder() *recorder { return &recorder{done: make(chan Event, 16)} }

func (r *recorder) Observe(ev Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	if ev.Kind == EventDone {
		r.done <- ev
	}
}

func (r *recorder) wait(t *testing.T) Event {
	t.Helper()
	select {
	case ev := <-r.done:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no outcome")
		return Event{}
	}
}

func TestAskedAfterThe200(t *testing.T) {
	tests := []struct {
		name    string
		urls    map[string]string
		err     error
		outcome string
		notify  bool
	}{
		{"assigned in the PBX", map[string]string{"001fc11b4e1c": "http://acme/"}, nil, "provisioned", true},
		{"nobody's phone: 200, no NOTIFY", nil, nil, "observed", false},
		{"tenant without URL: 200, no NOTIFY", nil, resolve.ErrNoTenantURL, "error", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := &slowResolver{release: make(chan struct{}), urls: tt.urls, err: tt.err}
			rec := newRecorder()
			srv := NewServer(Config{Resolver: res, Observer: rec, T1: time.Second})
			port := newFakePort()
			src := netip.MustParseAddrPort("192.168.1.89:60000")
			srv.Handle(Packet{Data: readPhone(t, "htek.sip"), Src: src, Group: true, Port: port})
			// The 200 left while the question is still open.
			ok := port.next(t)
			if m, _ := parseBoth(t, ok.b); m.StatusCode != 200 {
				t.Fatalf("want the 200 first, got\n%s", ok.b)
			}
			port.none(t, 20*time.Millisecond)
			close(res.release)
			if tt.notify {
				n := port.next(t)
				m, _ := parseBoth(t, n.b)
				if string(m.Method) != "NOTIFY" || string(m.Body) != "http://acme/" {
					t.Fatalf("want the NOTIFY, got\n%s", n.b)
				}
				srv.Handle(Packet{Data: answer(t, n.b, 200), Src: n.dst, Port: port})
			}
			ev := rec.wait(t)
			if ev.Outcome != tt.outcome || ev.Identity.MAC != "001fc11b4e1c" || ev.Tenant != "acme" {
				t.Errorf("outcome event %+v", ev)
			}
			if !tt.notify {
				port.none(t, 50*time.Millisecond)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if len(rec.events) != 2 || rec.events[0].Kind != EventSeen {
				t.Errorf("events %+v; want one seen then one outcome", rec.events)
			}
			if servers, clients := srv.Open(); clients != 0 {
				t.Errorf("open transactions: %d servers, %d clients", servers, clients)
			}
		})
	}
}

func TestAskingIsBounded(t *testing.T) {
	res := &slowResolver{release: make(chan struct{}), urls: map[string]string{"001fc11b4e1c": "http://acme/", "0015657322ff": "http://acme/"}}
	srv := NewServer(Config{Resolver: res, MaxAsking: 1, T1: time.Second})
	port := newFakePort()
	gs := readPhone(t, "grandstream.sip")
	gsSrc := netip.MustParseAddrPort("192.168.1.2:5080")
	srv.Handle(Packet{Data: readPhone(t, "htek.sip"), Src: netip.MustParseAddrPort("192.168.1.89:60000"), Group: true, Port: port})
	port.next(t) // the htek's 200; its question holds the only slot

	// A new phone that needs a question: no slot, no answer.
	yl := readPhone(t, "yealink.sip")
	ylSrc := netip.MustParseAddrPort("192.168.1.90:5059")
	srv.Handle(Packet{Data: yl, Src: ylSrc, Group: true, Port: port})
	port.none(t, 20*time.Millisecond)
	if st := srv.Stats(); st.Dropped["busy"] != 1 {
		t.Errorf("stats %+v", st)
	}

	// Once the slot is free, the same SUBSCRIBE retransmitted is handled
	// anew: its 200, then its NOTIFY.
	close(res.release)
	port.next(t) // the htek's NOTIFY
	deadline := time.Now().Add(5 * time.Second)
	for len(srv.asking) != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	srv.Handle(Packet{Data: append([]byte(nil), yl...), Src: ylSrc, Group: true, Port: port})
	for _, want := range []string{"SIP/2.0 200", "NOTIFY"} {
		if got := port.next(t); !bytes.HasPrefix(got.b, []byte(want)) {
			t.Fatalf("want %s, got\n%s", want, got.b)
		}
	}

	// A later SUBSCRIBE of a dialog that has its exchange asks nothing:
	// it gets its 200 even when every slot is taken.
	res2 := &slowResolver{release: make(chan struct{})}
	srv2 := NewServer(Config{Resolver: res2, MaxAsking: 1, T1: time.Second})
	srv2.Handle(Packet{Data: gs, Src: gsSrc, Group: true, Port: port})
	port.next(t) // 200
	again := bytes.Replace(gs, []byte("z9hG4bK1719471633"), []byte("z9hG4bK1719471634"), 1)
	again = bytes.Replace(again, []byte("CSeq: 20000"), []byte("CSeq: 20001"), 1)
	srv2.Handle(Packet{Data: again, Src: gsSrc, Group: true, Port: port})
	if got := port.next(t); !bytes.HasPrefix(got.b, []byte("SIP/2.0 200")) {
		t.Fatalf("second SUBSCRIBE of the dialog: got\n%s", got.b)
	}
	close(res2.release)
	// The NOTIFYs are never answered: Shutdown gives up on them soon.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	for _, s := range []*Server{srv, srv2} {
		if err := s.Shutdown(ctx); err != nil && !errors.Is(err, ErrShutdown) {
			t.Fatal(err)
		}
	}
}

// TestShutdownCutsQuestionsShort: a Shutdown whose deadline passes while a
// question is open aborts the exchange, cancels the question and returns;
// nothing is sent after it.
func TestShutdownCutsQuestionsShort(t *testing.T) {
	res := &slowResolver{release: make(chan struct{}), urls: map[string]string{"001fc11b4e1c": "http://acme/"}}
	rec := newRecorder()
	srv := NewServer(Config{Resolver: res, Observer: rec, T1: time.Second})
	port := newFakePort()
	srv.Handle(Packet{Data: readPhone(t, "htek.sip"), Src: netip.MustParseAddrPort("192.168.1.89:60000"), Group: true, Port: port})
	port.next(t) // 200
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Shutdown: %v, want ErrShutdown", err)
	}
	if ev := rec.wait(t); ev.Outcome != "aborted" {
		t.Errorf("outcome %+v", ev)
	}
	close(res.release) // too late: the question was cancelled
	port.none(t, 50*time.Millisecond)
}
