package pnp

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gosip "github.com/jart/gosip/sip"

	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/resolve"
	"github.com/pnpd/pnpd/sip"
)

// fakePort records what the server sends.
type fakePort struct {
	addr netip.AddrPort
	mu   sync.Mutex
	sent []sent
	ch   chan sent
}

type sent struct {
	b   []byte
	dst netip.AddrPort
}

func newFakePort() *fakePort {
	return &fakePort{addr: netip.MustParseAddrPort("192.0.2.1:5062"), ch: make(chan sent, 1024)}
}

func (f *fakePort) Name() string         { return "test0" }
func (f *fakePort) Addr() netip.AddrPort { return f.addr }
func (f *fakePort) Send(b []byte, dst netip.AddrPort) error {
	s := sent{append([]byte(nil), b...), dst}
	f.mu.Lock()
	f.sent = append(f.sent, s)
	f.mu.Unlock()
	f.ch <- s
	return nil
}

func (f *fakePort) next(t *testing.T) sent {
	t.Helper()
	select {
	case s := <-f.ch:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("nothing sent")
		return sent{}
	}
}

// drain forgets what was sent so far: retransmissions that left before the
// phone's answer was handled are legitimate.
func (f *fakePort) drain() {
	for len(f.ch) > 0 {
		<-f.ch
	}
}

func (f *fakePort) none(t *testing.T, wait time.Duration) {
	t.Helper()
	select {
	case s := <-f.ch:
		t.Fatalf("unexpected datagram to %s:\n%s", s.dst, s.b)
	case <-time.After(wait):
	}
}

func newServer(t *testing.T, conf string, t1 time.Duration) *Server {
	t.Helper()
	c, err := config.Parse([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	return NewServer(Config{Resolver: resolve.NewStatic(c.Resolve), T1: t1, T2: 4 * t1,
		Allow: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}})
}

const everyone = `
[resolve]
default = "http://prov.example.com/{vendor}/{mac}"
`

func readPhone(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "sip", "testdata", "phones", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// parseBoth parses b with our parser and with gosip, the reference.
func parseBoth(t *testing.T, b []byte) (*sip.Message, *gosip.Msg) {
	t.Helper()
	m, err := sip.Parse(append([]byte(nil), b...))
	if err != nil {
		t.Fatalf("our parser refuses what we sent: %v\n%s", err, b)
	}
	g, err := gosip.ParseMsg(append([]byte(nil), b...))
	if err != nil {
		t.Fatalf("gosip refuses what we sent: %v\n%s", err, b)
	}
	return m, g
}

func TestExchangePerPhone(t *testing.T) {
	tests := []struct {
		file      string
		src       string // where the SUBSCRIBE came from
		okDst     string // where the 200 must go
		notifyDst string
		ruri      string
		url       string
	}{
		{"htek.sip", "192.168.1.89:60000", "192.168.1.89:60000", "192.168.1.89:60000", "sip:MAC001fc11b4e1c@192.168.1.89:60000", "http://prov.example.com/htek/001fc11b4e1c"},
		{"yealink.sip", "172.16.32.148:5059", "172.16.32.148:5059", "172.16.32.148:5059", "sip:MAC0015657322ff@172.16.32.148:5059", "http://prov.example.com/yealink/0015657322ff"},
		// No rport: the 200 goes to the source address and the Via port.
		{"yealink.sip", "172.16.32.148:40000", "172.16.32.148:5059", "172.16.32.148:5059", "sip:MAC0015657322ff@172.16.32.148:5059", "http://prov.example.com/yealink/0015657322ff"},
		{"snom.sip", "192.168.10.67:5060", "192.168.10.67:5060", "192.168.10.67:5060", "sip:192.168.10.67:5060", "http://prov.example.com/snom/00135e874b49"},
		{"grandstream.sip", "192.168.1.2:5080", "192.168.1.2:5080", "192.168.1.2:5080", "sip:192.168.1.2:5080", "http://prov.example.com/grandstream/c074ad112233"},
		// rport behind NAT: the 200 follows the source port.
		{"grandstream.sip", "192.168.1.2:31000", "192.168.1.2:31000", "192.168.1.2:5080", "sip:192.168.1.2:5080", "http://prov.example.com/grandstream/c074ad112233"},
		{"fanvil.sip", "192.168.1.179:5060", "192.168.1.179:5060", "192.168.1.179:5060", "sip:MAC=00304fa99948@192.168.1.179:5060", "http://prov.example.com/fanvil/00304fa99948"},
		{"audiocodes.sip", "10.20.30.40:5060", "10.20.30.40:5060", "10.20.30.40:5060", "sip:00000001@10.20.30.40:5060", "http://prov.example.com/audiocodes/{mac}"},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.src, func(t *testing.T) {
			srv := newServer(t, everyone, 50*time.Millisecond)
			port := newFakePort()
			sub := readPhone(t, tt.file)
			subMsg, err := sip.Parse(append([]byte(nil), sub...))
			if err != nil {
				t.Fatal(err)
			}
			src := netip.MustParseAddrPort(tt.src)
			srv.Handle(Packet{Data: sub, Src: src, Group: true, Port: port})

			ok := port.next(t)
			if ok.dst.String() != tt.okDst {
				t.Errorf("200 went to %s, want %s", ok.dst, tt.okDst)
			}
			m, g := parseBoth(t, ok.b)
			if m.StatusCode != 200 || g.Status != 200 {
				t.Fatalf("not a 200:\n%s", ok.b)
			}
			subVia, _ := subMsg.TopVia()
			via, err := m.TopVia()
			if err != nil || !bytes.Equal(via.Branch(), subVia.Branch()) {
				t.Errorf("200 Via %q, want branch %q", m.Get(sip.HdrVia), subVia.Branch())
			}
			if rec, _ := via.Params.Get("received"); string(via.Host) != src.Addr().String() && string(rec) != src.Addr().String() {
				t.Errorf("200 Via lacks received=%s: %q", src.Addr(), m.Get(sip.HdrVia))
			}
			if _, hasRport := subVia.Params.Get("rport"); hasRport {
				if rp, _ := via.Params.Get("rport"); string(rp) != itoa(int(src.Port())) {
					t.Errorf("200 Via rport %q, want %d", rp, src.Port())
				}
			}
			toTag := g.To.Param.Get("tag")
			if toTag == nil || toTag.Value == "" {
				t.Fatalf("200 To has no tag: %s", g.To)
			}
			if g.CallID != string(subMsg.Get(sip.HdrCallID)) || !bytes.Equal(m.Get(sip.HdrCSeq), subMsg.Get(sip.HdrCSeq)) {
				t.Errorf("200 Call-ID/CSeq differ")
			}

			n := port.next(t)
			if n.dst.String() != tt.notifyDst {
				t.Errorf("NOTIFY went to %s, want %s", n.dst, tt.notifyDst)
			}
			nm, ng := parseBoth(t, n.b)
			if string(nm.Method) != "NOTIFY" || string(nm.RequestURI) != tt.ruri {
				t.Errorf("NOTIFY request line %s %s, want NOTIFY %s", nm.Method, nm.RequestURI, tt.ruri)
			}
			if ng.CallID != g.CallID {
				t.Errorf("NOTIFY Call-ID %q", ng.CallID)
			}
			if ft := ng.From.Param.Get("tag"); ft == nil || ft.Value != toTag.Value {
				t.Errorf("NOTIFY From tag %v, want the 200's To tag %q", ft, toTag.Value)
			}
			subFrom, _ := sip.ParseAddr(subMsg.Get(sip.HdrFrom))
			notifyTo, _ := sip.ParseAddr(nm.Get(sip.HdrTo))
			if !bytes.Equal(notifyTo.Tag(), subFrom.Tag()) || !bytes.Equal(notifyTo.URI, subFrom.URI) {
				t.Errorf("NOTIFY To %q, want the SUBSCRIBE's From %q", nm.Get(sip.HdrTo), subMsg.Get(sip.HdrFrom))
			}
			if ng.CSeqMethod != "NOTIFY" {
				t.Errorf("NOTIFY CSeq method %q", ng.CSeqMethod)
			}
			ev := string(nm.Get(sip.HdrEvent))
			if !strings.HasPrefix(ev, "ua-profile") || !strings.HasSuffix(ev, ";effective-by=0") {
				t.Errorf("NOTIFY Event %q", ev)
			}
			if got := string(nm.Get(sip.HdrSubscriptionState)); got != "terminated;reason=timeout" {
				t.Errorf("Subscription-State %q", got)
			}
			if got := string(nm.Get(sip.HdrContentType)); got != "application/url" {
				t.Errorf("Content-Type %q", got)
			}
			if string(nm.Body) != tt.url {
				t.Errorf("body %q, want %q", nm.Body, tt.url)
			}
			if c := string(nm.Get(sip.HdrContact)); c != "<sip:192.0.2.1:5062>" {
				t.Errorf("Contact %q", c)
			}
			nvia, _ := nm.TopVia()
			if string(nvia.Host) != "192.0.2.1" || nvia.Port != 5062 || !bytes.HasPrefix(nvia.Branch(), []byte("z9hG4bK")) {
				t.Errorf("NOTIFY Via %q", nm.Get(sip.HdrVia))
			}

			// The phone's 200 ends the exchange: no retransmission after it.
			srv.Handle(Packet{Data: answer(t, n.b, 200), Src: n.dst, Port: port})
			port.drain()
			port.none(t, 300*time.Millisecond)
			if st := srv.Stats(); st.Outcomes["provisioned"] != 1 {
				t.Errorf("stats %+v", st)
			}
			if s, c := srv.Open(); s != 1 || c != 0 {
				t.Errorf("open transactions: %d server, %d client", s, c)
			}
		})
	}
}

// answer builds the phone's response to a NOTIFY.
func answer(t *testing.T, notify []byte, code int) []byte {
	t.Helper()
	m, err := sip.Parse(append([]byte(nil), notify...))
	if err != nil {
		t.Fatal(err)
	}
	var b sip.Builder
	b.Reset(nil)
	b.StatusLine(code, "Whatever")
	b.Header("Via", m.Get(sip.HdrVia))
	b.Header("From", m.Get(sip.HdrFrom))
	b.Header("To", m.Get(sip.HdrTo))
	b.Header("Call-ID", m.Get(sip.HdrCallID))
	b.Header("CSeq", m.Get(sip.HdrCSeq))
	return append([]byte(nil), b.Body("", nil)...)
}

func TestRetransmittedSubscribeGetsSame200AndOneNotify(t *testing.T) {
	srv := newServer(t, everyone, time.Second)
	port := newFakePort()
	sub := readPhone(t, "htek.sip")
	src := netip.MustParseAddrPort("192.168.1.89:60000")
	srv.Handle(Packet{Data: sub, Src: src, Group: true, Port: port})
	first := port.next(t)
	notify := port.next(t)
	for range 3 {
		srv.Handle(Packet{Data: append([]byte(nil), sub...), Src: src, Group: true, Port: port})
		again := port.next(t)
		if !bytes.Equal(again.b, first.b) || again.dst != first.dst {
			t.Fatalf("retransmission got a different 200:\n%s\nvs\n%s", again.b, first.b)
		}
	}
	srv.Handle(Packet{Data: answer(t, notify.b, 200), Src: notify.dst, Port: port})
	port.none(t, 200*time.Millisecond)
	if st := srv.Stats(); st.Retransmissions != 3 || st.Subscribes != 1 || st.Outcomes["provisioned"] != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestNewSubscribeInSameDialogGetsNoSecondNotify(t *testing.T) {
	srv := newServer(t, everyone, time.Second)
	port := newFakePort()
	sub := readPhone(t, "grandstream.sip")
	src := netip.MustParseAddrPort("192.168.1.2:5080")
	srv.Handle(Packet{Data: sub, Src: src, Group: true, Port: port})
	_, first := parseBoth(t, port.next(t).b)
	port.next(t) // NOTIFY
	again := bytes.Replace(sub, []byte("z9hG4bK1719471633"), []byte("z9hG4bK1719471634"), 1)
	again = bytes.Replace(again, []byte("CSeq: 20000"), []byte("CSeq: 20001"), 1)
	srv.Handle(Packet{Data: again, Src: src, Group: true, Port: port})
	ok := port.next(t)
	m, g := parseBoth(t, ok.b)
	if m.StatusCode != 200 {
		t.Fatalf("want a 200, got\n%s", ok.b)
	}
	if a, b := g.To.Param.Get("tag"), first.To.Param.Get("tag"); a == nil || b == nil || a.Value != b.Value {
		t.Errorf("second SUBSCRIBE of the dialog got To tag %v, the dialog's is %v", a, b)
	}
	port.none(t, 200*time.Millisecond)
}

func TestTimerE(t *testing.T) {
	const t1 = 20 * time.Millisecond
	srv := newServer(t, everyone, t1)
	port := newFakePort()
	srv.Handle(Packet{Data: readPhone(t, "yealink.sip"), Src: netip.MustParseAddrPort("172.16.32.148:5059"), Group: true, Port: port})
	port.next(t) // 200
	first := port.next(t)
	second := port.next(t)
	if !bytes.Equal(first.b, second.b) {
		t.Fatal("retransmitted NOTIFY differs")
	}
	// Silent phone: retransmissions until Timer F (64*T1), then timeout.
	deadline := time.Now().Add(10 * time.Second)
	for srv.Stats().Outcomes["timeout"] == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st := srv.Stats()
	if st.Outcomes["timeout"] != 1 {
		t.Fatalf("no timeout outcome: %+v", st)
	}
	if st.NotifyRetransmits < 3 {
		t.Errorf("only %d retransmissions before Timer F", st.NotifyRetransmits)
	}
	port.drain()
	port.none(t, 10*t1)
}

func TestTimerEStopsOnAnswer(t *testing.T) {
	const t1 = 30 * time.Millisecond
	srv := newServer(t, everyone, t1)
	port := newFakePort()
	srv.Handle(Packet{Data: readPhone(t, "snom.sip"), Src: netip.MustParseAddrPort("192.168.10.67:5060"), Group: true, Port: port})
	port.next(t)
	port.next(t)
	n := port.next(t) // the first retransmission
	srv.Handle(Packet{Data: answer(t, n.b, 200), Src: n.dst, Port: port})
	port.drain() // once Handle returned, nothing more may leave
	port.none(t, 10*t1)
	if st := srv.Stats(); st.Outcomes["provisioned"] != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestRejectedNotify(t *testing.T) {
	srv := newServer(t, everyone, time.Second)
	port := newFakePort()
	srv.Handle(Packet{Data: readPhone(t, "snom.sip"), Src: netip.MustParseAddrPort("192.168.10.67:5060"), Group: true, Port: port})
	port.next(t)
	n := port.next(t)
	srv.Handle(Packet{Data: answer(t, n.b, 481), Src: n.dst, Port: port})
	port.none(t, 100*time.Millisecond)
	if st := srv.Stats(); st.Outcomes["rejected"] != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestSilence(t *testing.T) {
	yealink := readPhone(t, "yealink.sip")
	tests := []struct {
		name   string
		data   []byte
		src    string
		group  bool
		reason string
	}{
		{"options", bytes.Replace(bytes.Replace(yealink, []byte("SUBSCRIBE sip:"), []byte("OPTIONS sip:"), 1), []byte("1 SUBSCRIBE"), []byte("1 OPTIONS"), 1), "172.16.32.148:5059", true, "not-subscribe"},
		{"other event", bytes.Replace(yealink, []byte("Event: ua-profile"), []byte("Event: presence"), 1), "172.16.32.148:5059", true, "not-ua-profile"},
		{"no event", bytes.Replace(yealink, []byte("Event: ua-profile"), []byte("X-Event: ua-profile"), 1), "172.16.32.148:5059", true, "not-ua-profile"},
		{"garbage", []byte("\x00\x01hello"), "172.16.32.148:5059", true, "malformed"},
		{"empty", nil, "172.16.32.148:5059", true, "malformed"},
		{"response to the group", []byte("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\nCall-ID: x\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n"), "172.16.32.148:5059", true, "unexpected-response"},
		{"no call-id", bytes.Replace(yealink, []byte("Call-ID:"), []byte("X-Call-ID:"), 1), "172.16.32.148:5059", true, "missing-headers"},
		{"no via", bytes.Replace(yealink, []byte("Via:"), []byte("X-Via:"), 1), "172.16.32.148:5059", true, "missing-headers"},
		{"unicast request", yealink, "172.16.32.148:5059", false, "unicast-request"},
		{"unmatched response", []byte("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\nCall-ID: x\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n"), "172.16.32.148:5059", false, "response-unmatched"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, everyone, time.Second)
			port := newFakePort()
			srv.Handle(Packet{Data: tt.data, Src: netip.MustParseAddrPort(tt.src), Group: tt.group, Port: port})
			port.none(t, 50*time.Millisecond)
			if got := srv.Stats().Dropped[tt.reason]; got != 1 {
				t.Errorf("dropped %v, want 1 %s", srv.Stats().Dropped, tt.reason)
			}
		})
	}
}

func TestNotAllowedAndObserved(t *testing.T) {
	c, _ := config.Parse([]byte(everyone))
	srv := NewServer(Config{Resolver: resolve.NewStatic(c.Resolve), Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	port := newFakePort()
	srv.Handle(Packet{Data: readPhone(t, "yealink.sip"), Src: netip.MustParseAddrPort("172.16.32.148:5059"), Group: true, Port: port})
	port.none(t, 50*time.Millisecond)
	if srv.Stats().Dropped["source-not-allowed"] != 1 {
		t.Errorf("stats %+v", srv.Stats())
	}

	obs := NewServer(Config{Resolver: resolve.NewStatic(config.Default().Resolve)})
	sub := readPhone(t, "yealink.sip")
	for range 2 {
		obs.Handle(Packet{Data: append([]byte(nil), sub...), Src: netip.MustParseAddrPort("172.16.32.148:5059"), Group: true, Port: port})
	}
	port.none(t, 50*time.Millisecond)
	if st := obs.Stats(); st.Outcomes["observed"] != 1 || st.Subscribes != 1 {
		t.Errorf("observe stats %+v", st)
	}
}

func TestTableBounded(t *testing.T) {
	c, _ := config.Parse([]byte(everyone))
	srv := NewServer(Config{Resolver: resolve.NewStatic(c.Resolve), MaxTransactions: 4})
	port := newFakePort()
	sub := readPhone(t, "yealink.sip")
	for i := range 10 {
		d := bytes.Replace(sub, []byte("z9hG4bK1263794541"), []byte("z9hG4bK126379454"+itoa(i)+"x"), 1)
		d = bytes.Replace(d, []byte("1092315383@"), []byte(itoa(i)+"-1092315383@"), 1)
		srv.Handle(Packet{Data: d, Src: netip.MustParseAddrPort("172.16.32.148:5059"), Group: true, Port: port})
	}
	if s, c := srv.Open(); s+c > 4 {
		t.Errorf("table holds %d+%d, bound 4", s, c)
	}
	if srv.Stats().Dropped["transaction-table-full"] == 0 {
		t.Errorf("stats %+v", srv.Stats())
	}
}

func TestShutdownWaitsForNotify(t *testing.T) {
	srv := newServer(t, everyone, time.Second)
	port := newFakePort()
	srv.Handle(Packet{Data: readPhone(t, "htek.sip"), Src: netip.MustParseAddrPort("192.168.1.89:60000"), Group: true, Port: port})
	port.next(t)
	n := port.next(t)
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a NOTIFY in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	srv.Handle(Packet{Data: answer(t, n.b, 200), Src: n.dst, Port: port})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// After shutdown, new phones are not answered.
	srv.Handle(Packet{Data: readPhone(t, "yealink.sip"), Src: netip.MustParseAddrPort("172.16.32.148:5059"), Group: true, Port: port})
	port.none(t, 50*time.Millisecond)

	srv2 := newServer(t, everyone, time.Second)
	srv2.Handle(Packet{Data: readPhone(t, "htek.sip"), Src: netip.MustParseAddrPort("192.168.1.89:60000"), Group: true, Port: port})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := srv2.Shutdown(ctx); err == nil {
		t.Error("Shutdown with an unanswered NOTIFY and an expired context returned nil")
	}
}

// The NOTIFY goes to the source address at the Contact's port, never to
// another host a SUBSCRIBE names (reflection).
func TestNotifyNeverLeavesTheSource(t *testing.T) {
	yealink := readPhone(t, "yealink.sip")
	for _, contact := range []string{"203.0.113.9:5059", "224.0.1.75:5059", "255.255.255.255:5059", "0.0.0.0:5059", "victim.example.com:5059"} {
		t.Run(contact, func(t *testing.T) {
			srv := newServer(t, everyone, time.Second)
			port := newFakePort()
			d := bytes.Replace(yealink, []byte("Contact: <sip:MAC0015657322ff@172.16.32.148:5059>"),
				[]byte("Contact: <sip:MAC0015657322ff@"+contact+">"), 1)
			srv.Handle(Packet{Data: d, Src: netip.MustParseAddrPort("172.16.32.148:5059"), Group: true, Port: port})
			port.next(t)
			n := port.next(t)
			if n.dst.String() != "172.16.32.148:5059" {
				t.Errorf("NOTIFY went to %s", n.dst)
			}
		})
	}
}

// Event parameters phones get wrong do not leave them unanswered.
func TestLenientEvent(t *testing.T) {
	yealink := readPhone(t, "yealink.sip")
	for name, ev := range map[string]string{
		"trailing semicolon": `Event: ua-profile;profile-type="device";vendor="Yealink";`,
		"unquoted space":     `Event: ua-profile;vendor=Yealink;model=SIP T21`,
		"stray quote":        `Event: UA-Profile ; vendor="Yea\"link`,
		"effective-by given": `Event: ua-profile;effective-by=3600`,
	} {
		t.Run(name, func(t *testing.T) {
			srv := newServer(t, everyone, time.Second)
			port := newFakePort()
			d := bytes.Replace(yealink, []byte(`Event: ua-profile;profile-type="device";vendor="Yealink";model="T21";version="34.72.0.1"`), []byte(ev), 1)
			srv.Handle(Packet{Data: d, Src: netip.MustParseAddrPort("172.16.32.148:5059"), Group: true, Port: port})
			port.next(t)
			nm, _ := parseBoth(t, port.next(t).b)
			got := string(nm.Get(sip.HdrEvent))
			if strings.Count(got, "effective-by") != 1 || strings.HasSuffix(got, ";;effective-by=0") {
				t.Errorf("NOTIFY Event %q", got)
			}
		})
	}
}

func TestResolveError(t *testing.T) {
	srv := NewServer(Config{Resolver: resolve.Func(func(context.Context, resolve.Request) (resolve.Decision, error) {
		return resolve.Decision{}, context.DeadlineExceeded
	})})
	port := newFakePort()
	srv.Handle(Packet{Data: readPhone(t, "htek.sip"), Src: netip.MustParseAddrPort("192.168.1.89:60000"), Group: true, Port: port})
	port.none(t, 50*time.Millisecond)
	if st := srv.Stats(); st.Outcomes["error"] != 1 || st.Dropped["resolve-error"] != 1 {
		t.Errorf("stats %+v", st)
	}
}
