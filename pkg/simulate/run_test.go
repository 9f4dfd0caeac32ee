package simulate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jart/gosip/sip"
	"golang.org/x/net/ipv4"

	"github.com/pnpd/pnpd/pkg/phone"
)

// responder is a tiny fake PnP server on 127.0.0.1: it answers a SUBSCRIBE
// with the configured statuses and a NOTIFY, retransmits the NOTIFY until it
// is answered, and answers a retransmitted SUBSCRIBE (same branch) with the
// same responses and no new NOTIFY.
type responder struct {
	t    *testing.T
	conn *net.UDPConn
	cfg  responderConfig
	done chan struct{}

	mu         sync.Mutex
	subscribes [][]byte // SUBSCRIBEs received
	notifyOKs  [][]byte // 200s to our NOTIFY
	notifies   int      // NOTIFYs sent
}

type responderConfig struct {
	url         string
	statuses    []int         // responses to a SUBSCRIBE, in order (default 200)
	noNotify    bool          // send no NOTIFY
	notifyFirst bool          // NOTIFY before the responses (50 ms earlier)
	retransmit  time.Duration // NOTIFY Timer E for the test (default 50 ms)
	badToTag    bool          // 200 and NOTIFY carry different tags
	ignoreOK    bool          // keep retransmitting the NOTIFY although it was answered
	editNotify  func(head string) string
}

func newResponder(t *testing.T, cfg responderConfig) *responder {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.statuses == nil {
		cfg.statuses = []int{200}
	}
	if cfg.retransmit == 0 {
		cfg.retransmit = 50 * time.Millisecond
	}
	r := &responder{t: t, conn: conn, cfg: cfg, done: make(chan struct{})}
	go r.serve()
	t.Cleanup(func() {
		conn.Close()
		<-r.done // no goroutine left behind
	})
	return r
}

func (r *responder) addr() netip.AddrPort {
	return netip.MustParseAddrPort(r.conn.LocalAddr().String())
}

type pending struct {
	to      netip.AddrPort
	notify  []byte
	next    time.Time
	tries   int
	acked   bool
	answers [][]byte // responses, for retransmitted SUBSCRIBEs
}

func (r *responder) serve() {
	defer close(r.done)
	buf := make([]byte, 65535)
	byBranch := map[string]*pending{}
	var current *pending
	for {
		wake := time.Now().Add(time.Second)
		if current != nil && !current.acked && current.notify != nil {
			wake = current.next
		}
		r.conn.SetReadDeadline(wake)
		n, src, err := r.conn.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil { // deadline: retransmit the NOTIFY (Timer E)
			if current != nil && !current.acked && current.notify != nil && current.tries < 10 {
				r.send(current.notify, current.to)
				current.tries++
				current.next = time.Now().Add(r.cfg.retransmit)
			}
			continue
		}
		b := append([]byte(nil), buf[:n]...)
		msg, err := sip.ParseMsg(b)
		if err != nil {
			r.t.Errorf("responder: gosip cannot parse what the phone sent: %v", err)
			continue
		}
		if msg.IsResponse() {
			if msg.CSeqMethod == "NOTIFY" && current != nil {
				current.acked = !r.cfg.ignoreOK
				r.mu.Lock()
				r.notifyOKs = append(r.notifyOKs, b)
				r.mu.Unlock()
			}
			continue
		}
		r.mu.Lock()
		r.subscribes = append(r.subscribes, b)
		r.mu.Unlock()
		branch := paramValue(msg.Via.Param, "branch")
		if p := byBranch[branch]; p != nil { // retransmission: same answers, no NOTIFY
			for _, a := range p.answers {
				r.send(a, src)
			}
			continue
		}
		p := r.answer(b, src)
		byBranch[branch] = p
		current = p
	}
}

func (r *responder) send(b []byte, to netip.AddrPort) {
	if _, err := r.conn.WriteToUDPAddrPort(b, to); err != nil && !errors.Is(err, net.ErrClosed) {
		r.t.Errorf("responder send: %v", err)
	}
	if strings.HasPrefix(string(b), "NOTIFY") {
		r.mu.Lock()
		r.notifies++
		r.mu.Unlock()
	}
}

func (r *responder) answer(b []byte, src netip.AddrPort) *pending {
	m := parseRaw(b)
	via, _ := m.get("Via")
	from, _ := m.get("From")
	to, _ := m.get("To")
	callID, _ := m.get("Call-ID")
	cseq, _ := m.get("CSeq")
	contact, _ := m.get("Contact")
	contact = strings.TrimSuffix(strings.TrimPrefix(contact, "<"), ">")
	if strings.Contains(via, ";rport") && !strings.Contains(via, "rport=") {
		via = strings.Replace(via, ";rport", ";rport="+strconv.Itoa(int(src.Port()))+";received="+src.Addr().String(), 1)
	}
	me := r.addr().String()
	tag := "resp" + randHex(6)
	p := &pending{to: src}
	for _, st := range r.cfg.statuses {
		toTag := tag
		if st != 200 {
			toTag = "other" + randHex(4) // another SIP stack
		}
		p.answers = append(p.answers, []byte(fmt.Sprintf(
			"SIP/2.0 %d Status\r\nVia: %s\r\nFrom: %s\r\nTo: %s;tag=%s\r\nCall-ID: %s\r\nCSeq: %s\r\nContact: <sip:%s>\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n",
			st, via, from, to, toTag, callID, cseq, me)))
	}
	if !r.cfg.noNotify {
		notifyTag := tag
		if r.cfg.badToTag {
			notifyTag = "different"
		}
		head := fmt.Sprintf("NOTIFY %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKresp%s\r\nFrom: %s;tag=%s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: 1 NOTIFY\r\nContact: <sip:%s>\r\nEvent: ua-profile;effective-by=0\r\nSubscription-State: terminated;reason=timeout\r\nContent-Type: application/url\r\nMax-Forwards: 70\r\n",
			contact, me, randHex(8), to, notifyTag, from, callID, me)
		if r.cfg.editNotify != nil {
			head = r.cfg.editNotify(head)
		}
		body := r.cfg.url
		if body == "-" {
			body = ""
		}
		p.notify = []byte(fmt.Sprintf("%sContent-Length: %d\r\n\r\n%s", head, len(body), body))
	}
	if r.cfg.notifyFirst && p.notify != nil {
		r.send(p.notify, src)
		time.Sleep(50 * time.Millisecond)
	}
	for _, a := range p.answers {
		r.send(a, src)
	}
	if !r.cfg.notifyFirst && p.notify != nil {
		r.send(p.notify, src)
	}
	p.next = time.Now().Add(r.cfg.retransmit)
	return p
}

func (r *responder) counts() (subscribes, notifies, oks int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.subscribes), r.notifies, len(r.notifyOKs)
}

// loopOptions runs a phone on lo against the responder.
func loopOptions(t *testing.T, brand string, r *responder) Options {
	return Options{
		Vendor: brand, Iface: "lo", Target: r.addr(), LocalPort: -1, Timeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func TestRunEachBrand(t *testing.T) {
	const url = "http://admin:123456@192.168.0.25:88"
	for _, brand := range phone.Brands() {
		t.Run(brand, func(t *testing.T) {
			resp := newResponder(t, responderConfig{url: url + "\r\n"})
			res, err := Run(context.Background(), loopOptions(t, brand, resp))
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if res.URL != url || !res.GotOK || res.OKLatency <= 0 || res.Notifies != 1 ||
				!slices.Equal(res.Responses, []int{200}) || res.Malformed != 0 || res.NotifyFrom != resp.addr() {
				t.Errorf("Result = %+v", res)
			}
			waitFor(t, func() bool { _, _, oks := resp.counts(); return oks == 1 })

			resp.mu.Lock()
			sub, ok200 := resp.subscribes[0], resp.notifyOKs[0]
			resp.mu.Unlock()
			id := phone.Identify(fieldsOf(parseRaw(sub)))
			if id.Brand != brand || (brand != phone.BrandAudioCodes && id.MAC != res.MAC) {
				t.Errorf("Identify(sent SUBSCRIBE) = %+v, MAC used %s", id, res.MAC)
			}
			msg, err := sip.ParseMsg(ok200)
			if err != nil {
				t.Fatalf("gosip cannot parse our 200 to the NOTIFY: %v", err)
			}
			if msg.Status != 200 || msg.CSeqMethod != "NOTIFY" || msg.CSeq != 1 || msg.CallID == "" ||
				paramValue(msg.To.Param, "tag") == "" || !strings.HasPrefix(paramValue(msg.Via.Param, "branch"), "z9hG4bKresp") {
				t.Errorf("200 to NOTIFY:\n%s", ok200)
			}
			if brand != phone.BrandFanvil {
				if got := paramValue(msg.To.Param, "tag"); !strings.Contains(string(sub), ";tag="+got) {
					t.Errorf("200 To tag %q is not our From tag", got)
				}
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met in 5s")
}

func TestRunIgnoreNotifies(t *testing.T) {
	resp := newResponder(t, responderConfig{url: "http://prov.example/y/"})
	o := loopOptions(t, phone.BrandYealink, resp)
	o.IgnoreNotifies = 2
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Notifies != 3 || res.URL != "http://prov.example/y/" {
		t.Errorf("Result = %+v, want 3 NOTIFYs (two ignored, the third retransmission answered)", res)
	}
	waitFor(t, func() bool { _, n, oks := resp.counts(); return oks == 1 && n == 3 })
}

func TestRunRepeat(t *testing.T) {
	resp := newResponder(t, responderConfig{url: "http://prov.example/gs/"})
	o := loopOptions(t, phone.BrandGrandstream, resp)
	o.Repeat = 3
	o.Linger = 200 * time.Millisecond
	start := time.Now()
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 3*repeatInterval {
		t.Errorf("Run returned after %v, before the retransmissions were sent", time.Since(start))
	}
	if !slices.Equal(res.Responses, []int{200, 200, 200, 200}) || res.Notifies != 1 {
		t.Errorf("Result = %+v, want four 200s and one NOTIFY", res)
	}
	if subs, notifies, _ := resp.counts(); subs != 4 || notifies != 1 {
		t.Errorf("responder saw %d SUBSCRIBEs, sent %d NOTIFYs", subs, notifies)
	}
	resp.mu.Lock()
	defer resp.mu.Unlock()
	for i, s := range resp.subscribes[1:] {
		if string(s) != string(resp.subscribes[0]) {
			t.Errorf("retransmission %d differs from the first SUBSCRIBE", i+1)
		}
	}
}

func TestRunLingerCountsRetransmittedNotifies(t *testing.T) {
	// A responder that does not see our 200 keeps retransmitting: during
	// Linger every copy is counted and answered again.
	resp := newResponder(t, responderConfig{url: "http://x/", retransmit: 30 * time.Millisecond, ignoreOK: true})
	o := loopOptions(t, phone.BrandHtek, resp)
	o.Linger = 300 * time.Millisecond
	res, err := Run(context.Background(), o)
	if err != nil || res.Notifies < 3 {
		t.Fatalf("Run = %+v, %v; want several NOTIFYs counted", res, err)
	}
	waitFor(t, func() bool { _, _, oks := resp.counts(); return oks >= res.Notifies })
}

func TestRunNoNotify(t *testing.T) {
	resp := newResponder(t, responderConfig{statuses: []int{401}, noNotify: true})
	o := loopOptions(t, phone.BrandSnom, resp)
	o.Timeout = 300 * time.Millisecond
	start := time.Now()
	res, err := Run(context.Background(), o)
	if !errors.Is(err, ErrNoNotify) || !strings.Contains(err.Error(), "responses [401]") {
		t.Fatalf("err = %v, want ErrNoNotify naming the 401", err)
	}
	if d := time.Since(start); d < o.Timeout || d > o.Timeout+5*time.Second {
		t.Errorf("Run took %v with Timeout %v", d, o.Timeout)
	}
	if res.GotOK || !slices.Equal(res.Responses, []int{401}) || res.URL != "" {
		t.Errorf("Result = %+v", res)
	}
}

func TestRunNotifyBeforeOK(t *testing.T) {
	resp := newResponder(t, responderConfig{url: "http://x/", notifyFirst: true})
	res, err := Run(context.Background(), loopOptions(t, phone.BrandPanasonic, resp))
	if err != nil {
		t.Fatal(err)
	}
	if !res.GotOK || res.URL != "http://x/" || !slices.Equal(res.Responses, []int{200}) {
		t.Errorf("Result = %+v, want the late 200 counted", res)
	}
}

func TestRunOtherStackAnswersFirst(t *testing.T) {
	resp := newResponder(t, responderConfig{url: "http://x/", statuses: []int{401, 200}})
	res, err := Run(context.Background(), loopOptions(t, phone.BrandHtek, resp))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Responses, []int{401, 200}) || !res.GotOK {
		t.Errorf("Result = %+v", res)
	}
}

func TestRunBadNotify(t *testing.T) {
	tests := []struct {
		name  string
		cfg   responderConfig
		brand string
		want  string
	}{
		{"wrong Request-URI", responderConfig{editNotify: func(h string) string {
			return strings.Replace(h, "NOTIFY sip:", "NOTIFY sip:x", 1)
		}}, phone.BrandYealink, "Request-URI"},
		{"Request-URI without port", responderConfig{editNotify: func(h string) string {
			first, rest, _ := strings.Cut(h, "\r\n")
			return first[:strings.LastIndexByte(first[:len(first)-8], ':')] + " SIP/2.0\r\n" + rest
		}}, phone.BrandSnom, "Request-URI"},
		{"wrong Event", responderConfig{editNotify: func(h string) string {
			return strings.Replace(h, "Event: ua-profile", "Event: presence", 1)
		}}, phone.BrandHtek, "Event"},
		{"no Subscription-State", responderConfig{editNotify: func(h string) string {
			return strings.Replace(h, "Subscription-State: terminated;reason=timeout\r\n", "", 1)
		}}, phone.BrandGigaset, "Subscription-State"},
		{"wrong Content-Type", responderConfig{editNotify: func(h string) string {
			return strings.Replace(h, "application/url", "text/plain", 1)
		}}, phone.BrandGrandstream, "Content-Type"},
		{"To tag lost", responderConfig{editNotify: func(h string) string {
			i := strings.Index(h, "\r\nTo: ")
			j := strings.Index(h[i+2:], "\r\n") + i + 2
			return h[:i] + "\r\nTo: " + strings.Split(h[i+6:j], ";tag=")[0] + h[j:]
		}}, phone.BrandPanasonic, "To tag"},
		{"no From tag", responderConfig{editNotify: func(h string) string {
			i := strings.Index(h, ";tag=resp")
			return h[:i] + h[i+len(";tag=resp")+6:]
		}}, phone.BrandAudioCodes, "From has no tag"},
		{"no Contact", responderConfig{editNotify: func(h string) string {
			i := strings.Index(h, "\r\nContact: ")
			j := strings.Index(h[i+2:], "\r\n") + i + 2
			return h[:i] + h[j:]
		}}, phone.BrandHtek, "no Contact"},
		{"wrong To URI", responderConfig{editNotify: func(h string) string {
			return strings.Replace(h, "\r\nTo: <sip:", "\r\nTo: <sip:x", 1)
		}}, phone.BrandGrandstream, "To URI"},
		{"CSeq method", responderConfig{editNotify: func(h string) string {
			return strings.Replace(h, "CSeq: 1 NOTIFY", "CSeq: 1 INFO", 1)
		}}, phone.BrandYealink, "CSeq"},
		{"NOTIFY From tag is not the 200's To tag", responderConfig{badToTag: true}, phone.BrandYealink, "differs"},
		// Not " ": gosip reads CRLF SP after the header block as folding and
		// fails on a body that starts with whitespace.
		{"blank body", responderConfig{url: "\r\n"}, phone.BrandFanvil, "empty body"},
		{"no body", responderConfig{url: "-"}, phone.BrandFanvil, "empty body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg.url == "" {
				tt.cfg.url = "http://x/"
			}
			resp := newResponder(t, tt.cfg)
			_, err := Run(context.Background(), loopOptions(t, tt.brand, resp))
			if !errors.Is(err, ErrBadNotify) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want ErrBadNotify mentioning %q", err, tt.want)
			}
		})
	}
}

func TestRunMalformed(t *testing.T) {
	// A peer that answers garbage: counted, then the timeout says so.
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() {
		buf := make([]byte, 65535)
		_, src, err := conn.ReadFromUDPAddrPort(buf)
		if err == nil {
			conn.WriteToUDPAddrPort([]byte("SIP/2.0 200 OK\r\nVia: ???\r\n\r\n"), src)
		}
	}()
	res, err := Run(context.Background(), Options{Vendor: "htek", Iface: "lo", LocalPort: -1,
		Target: netip.MustParseAddrPort(conn.LocalAddr().String()), Timeout: 300 * time.Millisecond})
	if !errors.Is(err, ErrNoNotify) || res.Malformed != 1 || !strings.Contains(err.Error(), "gosip") {
		t.Errorf("Run = %+v, %v", res, err)
	}
}

func TestRunBadResponse(t *testing.T) {
	tests := []struct {
		name, brand, via, want string
	}{
		{"rport not filled", phone.BrandSnom, ";rport", "rport"},
		{"branch changed", phone.BrandYealink, "", "branch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			go func() {
				buf := make([]byte, 65535)
				n, src, err := conn.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				m := parseRaw(buf[:n])
				via, _ := m.get("Via")
				if tt.via == "" {
					via = strings.Replace(via, "branch=z9hG4bK", "branch=z9hG4bKx", 1)
				}
				from, _ := m.get("From")
				to, _ := m.get("To")
				callID, _ := m.get("Call-ID")
				cseq, _ := m.get("CSeq")
				conn.WriteToUDPAddrPort([]byte(fmt.Sprintf("SIP/2.0 200 OK\r\nVia: %s\r\nFrom: %s\r\nTo: %s;tag=a\r\nCall-ID: %s\r\nCSeq: %s\r\nContent-Length: 0\r\n\r\n",
					via, from, to, callID, cseq)), src)
			}()
			_, err = Run(context.Background(), Options{Vendor: tt.brand, Iface: "lo", LocalPort: -1,
				Target: netip.MustParseAddrPort(conn.LocalAddr().String()), Timeout: time.Second})
			if !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want ErrBadResponse about %s", err, tt.want)
			}
		})
	}
}

func TestRunIgnoreAllNotifies(t *testing.T) {
	resp := newResponder(t, responderConfig{url: "http://x/", retransmit: 20 * time.Millisecond})
	o := loopOptions(t, phone.BrandYealink, resp)
	o.IgnoreNotifies, o.Timeout = 1000, 300*time.Millisecond
	res, err := Run(context.Background(), o)
	if !errors.Is(err, ErrNoNotify) || res.Notifies < 2 || !strings.Contains(err.Error(), "unanswered as asked") {
		t.Errorf("Run = %+v, %v", res, err)
	}
}

func TestRunContextCancel(t *testing.T) {
	resp := newResponder(t, responderConfig{noNotify: true})
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	o := loopOptions(t, phone.BrandGigaset, resp)
	o.Timeout = 10 * time.Second
	start := time.Now()
	_, err := Run(ctx, o)
	if !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second {
		t.Errorf("Run = %v after %v, want context.Canceled soon", err, time.Since(start))
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
}

func TestRunBrandPort(t *testing.T) {
	// The brand's own port (Htek 60000) on loopback, unless something holds it.
	resp := newResponder(t, responderConfig{url: "http://x/"})
	o := loopOptions(t, phone.BrandHtek, resp)
	o.LocalPort = 0
	if c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 60000}); err != nil {
		t.Skipf("127.0.0.1:60000 busy: %v", err)
	} else {
		c.Close()
	}
	if _, err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	resp.mu.Lock()
	defer resp.mu.Unlock()
	if !strings.Contains(string(resp.subscribes[0]), "Via: SIP/2.0/UDP 127.0.0.1:60000;") {
		t.Errorf("SUBSCRIBE not from port 60000:\n%s", resp.subscribes[0])
	}
}

func TestOptions(t *testing.T) {
	good := Options{Vendor: "Yealink", Iface: "lo"}
	c, err := good.resolve()
	if err != nil {
		t.Fatal(err)
	}
	if c.target != defaultTarget || !c.multicast || c.timeout != DefaultTimeout || c.port != 5059 ||
		c.ip != netip.MustParseAddr("127.0.0.1") || phone.OUIBrand(c.mac) != "yealink" || c.log == nil || c.stderr == nil {
		t.Errorf("defaults: %+v", c)
	}
	if good.Timeout != 0 || good.Logger != nil {
		t.Error("resolve changed the caller's Options")
	}
	if c, err := (&Options{Vendor: "snom", Iface: "lo", MAC: "00:04:13:AA:BB:CC", LocalPort: 5070,
		Target: netip.MustParseAddrPort("[::ffff:127.0.0.1]:5060")}).resolve(); err != nil ||
		c.mac != "000413aabbcc" || c.port != 5070 || c.multicast || !c.target.Addr().Is4() {
		t.Errorf("resolve = %+v, %v", c, err)
	}

	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"no vendor", Options{Iface: "lo"}, "Vendor"},
		{"unknown vendor", Options{Vendor: "cisco", Iface: "lo"}, "Vendor"},
		{"no iface", Options{Vendor: "htek"}, "Iface"},
		{"missing iface", Options{Vendor: "htek", Iface: "nosuch0"}, "Iface"},
		{"bad MAC", Options{Vendor: "htek", Iface: "lo", MAC: "00:1f"}, "MAC"},
		{"IPv6 target", Options{Vendor: "htek", Iface: "lo", Target: netip.MustParseAddrPort("[ff02::1]:5060")}, "Target"},
		{"port 0 target", Options{Vendor: "htek", Iface: "lo", Target: netip.MustParseAddrPort("127.0.0.1:0")}, "Target"},
		{"negative timeout", Options{Vendor: "htek", Iface: "lo", Timeout: -1}, "Timeout"},
		{"negative ignore", Options{Vendor: "htek", Iface: "lo", IgnoreNotifies: -1}, "IgnoreNotifies"},
		{"negative repeat", Options{Vendor: "htek", Iface: "lo", Repeat: -1}, "Repeat"},
		{"negative linger", Options{Vendor: "htek", Iface: "lo", Linger: -1}, "Linger"},
		{"bad local port", Options{Vendor: "htek", Iface: "lo", LocalPort: 70000}, "LocalPort"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Run(context.Background(), tt.o)
			if !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want ErrOptions naming %s", err, tt.want)
			}
		})
	}
}

// TestOpenSocketMulticast sets the multicast socket options on lo and reads
// them back; nothing is sent.
func TestOpenSocketMulticast(t *testing.T) {
	c, err := (&Options{Vendor: "htek", Iface: "lo", LocalPort: -1}).resolve()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := openSocket(c)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// IP_MULTICAST_IF cannot be read back: Linux returns only the address of
	// an ip_mreqn set by interface index (0.0.0.0). openSocket checked the set.
	p := ipv4.NewPacketConn(conn)
	if ttl, err := p.MulticastTTL(); err != nil || ttl != 1 {
		t.Errorf("TTL = %d, %v", ttl, err)
	}
	if loop, err := p.MulticastLoopback(); err != nil || loop {
		t.Errorf("loopback = %v, %v", loop, err)
	}
	if a := netip.MustParseAddrPort(conn.LocalAddr().String()); a.Addr() != c.ip {
		t.Errorf("bound %s, want %s", a, c.ip)
	}
}
