package main

// Faults of issue 7, each end to end with the pnpd binary and a real
// Asterisk in the namespace lab: Asterisk SIGKILLed and restarted during a
// storm of phones, a wrong AMI secret, and SIGTERM with NOTIFYs in flight.
// Phones here are sockets of the test (phonePeer): one per phone, each
// from an address of its own, answering NOTIFYs when the test lets them.
//
// As everywhere in the lab, durations are bounds that fail the test with a
// message, never expectations; the only durations compared are lower
// bounds that hold by construction (a retry never comes before its
// backoff).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/pnpd/pnpd/ami"
	"github.com/pnpd/pnpd/pkg/asterisk/asterisktest"
	"github.com/pnpd/pnpd/pkg/simulate"
	"github.com/pnpd/pnpd/sip"
)

// Log messages of pnpd that these tests read.
const (
	msgQueueFull    = "pbx write queue full: writes are being lost"
	msgQueueDrained = "pbx write queue drained: writes that did not fit while it was full are lost"
	msgAMILost      = "ami: connection lost"
	msgLoginRefused = "ami: login refused: check the username and secret"
)

// Phones' SUBSCRIBE client transaction timers (RFC 3261 17.1.2).
const (
	phoneT1     = 500 * time.Millisecond
	phoneT2     = 4 * time.Second
	phoneTimerF = 64 * phoneT1
)

// group is where phones send their SUBSCRIBEs.
var group = netip.MustParseAddrPort("224.0.1.75:5060")

// stormNet holds the storm's phones' addresses: local to the phone
// namespace (a local route), reached from the pbx namespace over the lab's
// link, so that each phone has an address, and a neighbour entry, of its
// own.
var stormNet = netip.MustParsePrefix("10.100.0.0/16")

// stormBrands are the brands a storm cycles through: those whose SUBSCRIBE
// carries the phone's MAC.
var stormBrands = []string{"yealink", "grandstream", "snom", "gigaset", "htek", "fanvil", "panasonic"}

// phonePeer is one phone: a socket in the phone namespace bound to the
// phone's address and its brand's port, sending the brand's SUBSCRIBE and
// answering NOTIFYs with a 200, unless held.
type phonePeer struct {
	mac, brand string
	addr       netip.Addr
	pkt        simulate.Packet
	conn       *net.UDPConn

	notified chan struct{} // closed at the first NOTIFY
	done     chan struct{} // closed at a final response and, unless it is an error, a NOTIFY answered
	onDone   func()        // called once, when done closes

	mu        sync.Mutex
	hold      bool   // count NOTIFYs, do not answer them
	held      []byte // the last NOTIFY held
	heldFrom  netip.AddrPort
	sends     int    // SUBSCRIBE transmissions
	final     int    // status of the first final response to the SUBSCRIBE
	url       string // body of the first NOTIFY
	notifies  int    // NOTIFYs received, retransmissions included
	answered  bool   // a 200 to a NOTIFY left
	closeOnce sync.Once
}

// newPhone opens the phone's socket in the lab's phone namespace, sending
// multicast out of the phone's link, and starts reading it until the test
// ends.
func newPhone(t *testing.T, l *lab, brand, mac string, addr netip.Addr) *phonePeer {
	t.Helper()
	pkt, err := simulate.NewSubscribe(brand, addr, mac)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := l.phone.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(pkt.Port))))
	if err != nil {
		t.Fatalf("phone %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	ifi, err := l.phone.InterfaceByName(l.phoneIf)
	if err != nil {
		t.Fatal(err)
	}
	p := ipv4.NewPacketConn(conn)
	if err := errors.Join(p.SetMulticastInterface(ifi), p.SetMulticastTTL(1), p.SetMulticastLoopback(false)); err != nil {
		t.Fatalf("phone %s: multicast options: %v", addr, err)
	}
	ph := &phonePeer{mac: pkt.MAC, brand: brand, addr: addr, pkt: pkt, conn: conn,
		notified: make(chan struct{}), done: make(chan struct{})}
	go ph.receive()
	return ph
}

// receive reads the phone's socket until it is closed.
func (ph *phonePeer) receive() {
	buf := make([]byte, 65536)
	for {
		n, src, err := ph.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		data := append([]byte(nil), buf[:n]...)
		var m sip.Message
		if m.Parse(data) != nil || string(m.Get(sip.HdrCallID)) != ph.pkt.CallID {
			continue
		}
		if !m.IsRequest() {
			_, method, err := sip.ParseCSeq(m.Get(sip.HdrCSeq))
			if err == nil && string(method) == "SUBSCRIBE" && m.StatusCode >= 200 {
				ph.mu.Lock()
				if ph.final == 0 {
					ph.final = m.StatusCode
				}
				ph.check()
				ph.mu.Unlock()
			}
			continue
		}
		if string(m.Method) != "NOTIFY" {
			continue
		}
		ph.mu.Lock()
		ph.notifies++
		if ph.notifies == 1 {
			ph.url = strings.TrimSpace(string(m.Body))
			close(ph.notified)
		}
		hold := ph.hold
		if hold {
			ph.held, ph.heldFrom = append([]byte(nil), buf[:n]...), src
		}
		ph.mu.Unlock()
		if !hold {
			ph.answer(&m, src)
		}
	}
}

// answer sends the 200 to the NOTIFY m.
func (ph *phonePeer) answer(m *sip.Message, to netip.AddrPort) {
	var b sip.Builder
	b.Reset(make([]byte, 0, 1024))
	b.StatusLine(200, "OK")
	for _, h := range m.Headers {
		switch h.ID {
		case sip.HdrVia, sip.HdrFrom, sip.HdrTo, sip.HdrCallID, sip.HdrCSeq:
			b.Header(h.ID.String(), h.Value)
		}
	}
	if _, err := ph.conn.WriteToUDPAddrPort(b.Body("", nil), to); err != nil {
		return
	}
	ph.mu.Lock()
	ph.answered = true
	ph.check()
	ph.mu.Unlock()
}

// release answers the NOTIFY held last and every later one.
func (ph *phonePeer) release() {
	ph.mu.Lock()
	ph.hold = false
	held, from := ph.held, ph.heldFrom
	ph.mu.Unlock()
	if held == nil {
		return
	}
	var m sip.Message
	if m.Parse(held) == nil {
		ph.answer(&m, from)
	}
}

// check closes done when the phone needs nothing more. ph.mu is held.
func (ph *phonePeer) check() {
	if ph.final == 0 || ph.final < 300 && !ph.answered {
		return
	}
	ph.closeOnce.Do(func() {
		close(ph.done)
		if ph.onDone != nil {
			ph.onDone()
		}
	})
}

// subscribe sends the SUBSCRIBE and retransmits it as a phone does (T1
// doubling to T2) until a final response, Timer F or ctx's end; it then
// returns, the socket still answering NOTIFYs.
func (ph *phonePeer) subscribe(ctx context.Context) {
	start := time.Now()
	interval := phoneT1
	for {
		ph.mu.Lock()
		ph.sends++
		ph.mu.Unlock()
		_, _ = ph.conn.WriteToUDPAddrPort(ph.pkt.Raw, group)
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
		case <-ph.done:
		case <-t.C:
		}
		t.Stop()
		ph.mu.Lock()
		final := ph.final
		ph.mu.Unlock()
		if ctx.Err() != nil || final != 0 || time.Since(start) >= phoneTimerF {
			return
		}
		interval = min(2*interval, phoneT2)
	}
}

// result is what the phone saw: status of the final response, the URL of
// its first NOTIFY, NOTIFYs received, and whether it answered one.
func (ph *phonePeer) result() (final int, url string, notifies int, answered bool) {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	return ph.final, ph.url, ph.notifies, ph.answered
}

// waitClosed waits up to d for ch; false when it did not close.
func waitClosed(ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// astdbPut writes the entries into the AstDB family over one plain AMI
// session, every DBPut sent before the first answer is read: one round
// trip for the lot, where the CLI takes a process per entry.
func astdbPut(t *testing.T, a *asterisktest.Instance, family string, entries [][2]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	conn, err := a.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(runTimeout))
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil { // banner
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "Action: Login\r\nUsername: %s\r\nSecret: %s\r\nEvents: off\r\n\r\n", a.Username, a.Secret)
	if m, err := readAMI(r); err != nil || m["Response"] != "Success" {
		t.Fatalf("AMI login: %v %v", m, err)
	}
	// Written while the answers are read, so that neither side's buffer
	// fills and stalls the other.
	werr := make(chan error, 1)
	go func() {
		w := bufio.NewWriter(conn)
		for i, e := range entries {
			fmt.Fprintf(w, "Action: DBPut\r\nActionID: put%d\r\nFamily: %s\r\nKey: %s\r\nVal: %s\r\n\r\n", i, family, e[0], e[1])
		}
		werr <- w.Flush()
	}()
	for ok := 0; ok < len(entries); {
		m, err := readAMI(r)
		if err != nil {
			t.Fatalf("AMI DBPut: %d of %d answered: %v", ok, len(entries), err)
		}
		if !strings.HasPrefix(m["ActionID"], "put") {
			continue
		}
		if m["Response"] != "Success" {
			t.Fatalf("AMI DBPut: %v", m)
		}
		ok++
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "Action: Logoff\r\n\r\n")
}

// astdbFamily reads the keys under prefix (say "seen/") of the family with
// the CLI: key (without the prefix) -> value.
func astdbFamily(t *testing.T, a *asterisktest.Instance, family, prefix string) map[string]string {
	t.Helper()
	out := a.CLI(t, "database show "+family+" "+strings.TrimSuffix(prefix, "/"))
	got := map[string]string{}
	head := "/" + family + "/" + prefix
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		k = strings.TrimSpace(k)
		if !ok || !strings.HasPrefix(k, head) {
			continue
		}
		got[strings.TrimPrefix(k, head)] = strings.TrimSpace(v)
	}
	return got
}

// logIndex returns the position of the first serve log line whose keys
// have the wanted values, or -1.
func logIndex(lines []map[string]string, want map[string]string) int {
	return slices.IndexFunc(lines, func(kv map[string]string) bool {
		for k, v := range want {
			if kv[k] != v {
				return false
			}
		}
		return true
	})
}

// serveLog returns every complete serve log line, parsed.
func (l *lab) serveLog() []map[string]string {
	var out []map[string]string
	for _, line := range completeLines(l.log.String()) {
		out = append(out, logfmt(line))
	}
	return out
}

// sumField adds up the integer field of the lines.
func sumField(t *testing.T, lines []map[string]string, field string) int {
	t.Helper()
	n := 0
	for _, kv := range lines {
		v, err := strconv.Atoi(kv[field])
		if err != nil {
			t.Fatalf("log line %v: %s=%q: %v", kv, field, kv[field], err)
		}
		n += v
	}
	return n
}

// TestFaultAsteriskKilledDuringStorm: a storm of phones, all assigned in
// the PBX; Asterisk is SIGKILLed a third of the way in and started again
// while the storm goes on. Every phone must get its NOTIFY with its own
// URL (from the snapshot while Asterisk is away); the writes queued
// meanwhile (write_queue is small on purpose) reach the AstDB after the
// reconnect; and every seen record is accounted for: written, lost to the
// full queue (counted and logged by kind in the line that ends the
// episode), or lost by Asterisk itself, which commits its AstDB at most
// once a second and so forgets what it acknowledged just before a SIGKILL.
func TestFaultAsteriskKilledDuringStorm(t *testing.T) {
	const (
		phones  = 300
		queue   = 100
		tenants = 3
		every   = 30 * time.Millisecond // between two phones' first SUBSCRIBEs
	)
	l := newLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := l.phone.IP(ctx, "route", "add", "local", stormNet.String(), "dev", "lo"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if out, err := l.pbx.IP(ctx, "route", "add", stormNet.String(), "dev", l.pbxIf); err != nil {
		t.Fatalf("%v %s", err, out)
	}

	a := asterisktest.Start(t, asterisktest.Options{NS: l.pbx})
	var entries [][2]string
	for k := range tenants {
		entries = append(entries, [2]string{fmt.Sprintf("tenant/t%d/url", k), fmt.Sprintf("http://t%d.example/{mac}.cfg", k)})
	}
	storm := make([]*phonePeer, phones)
	want := map[string]string{} // mac -> URL
	var done atomic.Int64
	addr := stormNet.Addr().Next()
	for i := range storm {
		brand := stormBrands[i%len(stormBrands)]
		mac := fmt.Sprintf("%s%06x", simulate.OUI(brand), i)
		ph := newPhone(t, l, brand, mac, addr)
		ph.onDone = func() { done.Add(1) }
		storm[i] = ph
		addr = addr.Next()
		entries = append(entries, [2]string{"mac/" + ph.mac, fmt.Sprintf("t%d", i%tenants)})
		want[ph.mac] = fmt.Sprintf("http://t%d.example/%s.cfg", i%tenants, ph.mac)
	}
	if len(want) != phones {
		t.Fatalf("%d distinct MACs for %d phones", len(want), phones)
	}
	astdbPut(t, a, "pnp", entries)
	a.WaitAstDBCommitted(t)

	l.start(`allow = ["198.18.0.0/24", "10.100.0.0/16"]`, pbxConf(a, fmt.Sprintf("refresh = \"1s\"\nwrite_queue = %d", queue)))
	l.waitLog(t, map[string]string{"msg": "pbx snapshot", "why": "login", "phones": strconv.Itoa(phones)})

	// The storm: one phone every `every`, each on its own goroutine.
	sctx, scancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer scancel()
	var started atomic.Int64
	var wg sync.WaitGroup
	wg.Add(len(storm))
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i, ph := range storm {
			started.Add(1)
			go func() {
				defer wg.Done()
				ph.subscribe(sctx)
			}()
			select {
			case <-sctx.Done():
				wg.Add(-(len(storm) - i - 1)) // never started
				return
			case <-tick.C:
			}
		}
	}()
	waitCount := func(what string, n *atomic.Int64, want int64) {
		t.Helper()
		deadline := time.Now().Add(runTimeout)
		for n.Load() < want {
			if time.Now().After(deadline) {
				t.Fatalf("storm: %d %s, waited for %d", n.Load(), what, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	waitCount("phones done", &done, phones/3)
	a.Kill(t)
	l.waitLog(t, map[string]string{"msg": "pbx not connected: answering from the last snapshot until it is back"})
	waitCount("phones started", &started, 2*phones/3)
	a.Start(t)
	l.waitLog(t, map[string]string{"msg": "pbx connected again: taking a new snapshot"})

	// Every phone: bounded by its own Timer F after the last started.
	waitCount("phones done", &done, phones)
	wg.Wait()
	if _, ok := l.findLog(0, map[string]string{"msg": msgQueueDrained}); !ok {
		t.Fatalf("no %q line: the writes queued while Asterisk was away were not flushed (or nothing overflowed: is write_queue = %d too large for this storm?)", msgQueueDrained, queue)
	}
	l.stop() // SIGTERM: what is still queued is flushed, exit status 0

	// The phones: each its NOTIFY, with its own URL.
	answered := 0
	for _, ph := range storm {
		final, url, notifies, ok := ph.result()
		if final == 200 && url == want[ph.mac] && ok {
			answered++
			continue
		}
		t.Errorf("phone %s (%s, %s): final %d, NOTIFY %q (%d received, answered %v), want %q",
			ph.mac, ph.brand, ph.addr, final, url, notifies, ok, want[ph.mac])
	}

	// pnpd's side: every exchange provisioned from the snapshot.
	lines := l.serveLog()
	lost := logIndex(lines, map[string]string{"msg": msgAMILost})
	if lost < 0 {
		t.Fatalf("no %q line", msgAMILost)
	}
	exchangeAt := map[string]int{} // mac -> position of its exchange line
	for i, kv := range lines {
		if kv["msg"] != "exchange" || want[kv["mac"]] == "" {
			continue
		}
		if _, dup := exchangeAt[kv["mac"]]; dup {
			t.Errorf("two exchange lines for %s", kv["mac"])
		}
		exchangeAt[kv["mac"]] = i
		if kv["outcome"] != "provisioned" || kv["decided_by"] != "pbx snapshot" {
			t.Errorf("exchange %v", kv)
		}
	}

	// The writes: one episode of overflow per outage, opened and closed by
	// one line each, none before Asterisk went.
	full := l.logLines(map[string]string{"msg": msgQueueFull})
	drained := l.logLines(map[string]string{"msg": msgQueueDrained})
	// Each episode is opened and closed by one line each; the outage
	// makes at least one (a slow machine may make another before it).
	if len(full) == 0 || len(full) != len(drained) {
		t.Errorf("%d %q lines and %d %q lines, want one of each per episode, at least one", len(full), msgQueueFull, len(drained), msgQueueDrained)
	}
	if i := logIndex(lines, map[string]string{"msg": msgQueueFull}); i >= 0 && i < lost {
		t.Logf("the queue overflowed before Asterisk went away (the writer did not keep up on this machine)")
	}
	overflows := sumField(t, drained, "lost")
	lostSeen := sumField(t, drained, "seen_records")
	lostEvents := sumField(t, drained, "user_events")
	if other := sumField(t, drained, "other_records"); other != 0 || overflows != lostSeen+lostEvents {
		t.Errorf("drained lines %v: lost is not seen_records + user_events", drained)
	}
	if n := len(l.logLines(map[string]string{"msg": "pbx write refused"})); n != 0 {
		t.Errorf("%d writes refused by Asterisk", n)
	}
	for _, kv := range lines {
		if kv["msg"] == "shutdown" && strings.Contains(kv["err"], "pbx: flush") {
			t.Errorf("writes left at exit: %v", kv)
		}
	}

	// Every write pnpd had to make (per phone PnpSeen, PnpProvisioned and
	// seen/<mac>) is in the stop line: done, lost (counted), or unsent.
	stopped := l.logLines(map[string]string{"msg": "stopped"})
	if len(stopped) != 1 {
		t.Fatalf("%d stopped lines", len(stopped))
	}
	written := sumField(t, stopped, "pbx_written")
	if pl, pu := sumField(t, stopped, "pbx_lost"), sumField(t, stopped, "pbx_unsent"); pl != overflows || pu != 0 || written+pl+pu != 3*phones {
		t.Errorf("stop line %v: %d writes done, %d lost, %d unsent; want %d lost as the drained lines say, none unsent, %d in all",
			stopped[0], written, pl, pu, overflows, 3*phones)
	}

	// The records: present, lost to the queue, or lost by Asterisk's
	// crash (acknowledged before the kill, so pnpd had no reason to write
	// them again). Anything else was lost silently.
	seen := astdbFamily(t, a, "pnp", "seen/")
	present, crashLost, absentAfter, crashSpan := 0, 0, 0, 0
	for mac := range want {
		if v, ok := seen[mac]; ok {
			present++
			if !strings.Contains(v, "outcome=provisioned") {
				t.Errorf("seen/%s = %q", mac, v)
			}
			continue
		}
		at, ok := exchangeAt[mac]
		switch {
		case !ok:
			t.Errorf("%s: no exchange line and no seen record", mac)
		case at < lost:
			crashLost++
			// How many phones finished between this one and the loss
			// of the connection: Asterisk forgets only its last second.
			n := 0
			for _, kv := range lines[at+1 : lost] {
				if kv["msg"] == "exchange" {
					n++
				}
			}
			crashSpan = max(crashSpan, n+1)
		default:
			absentAfter++
		}
	}
	// pnpd writes again what Asterisk acknowledged in the seconds before
	// the connection went (it commits to disk at most once a second), so
	// the crash loses none of them.
	replayed := sumField(t, stopped, "pbx_replayed")
	if crashLost != 0 {
		t.Errorf("%d seen records Asterisk acknowledged before the kill are missing (%d records written again after the reconnect)", crashLost, replayed)
	}
	unaccounted := phones - present - lostSeen - crashLost
	if absentAfter != lostSeen || unaccounted != 0 {
		t.Errorf("seen records: %d present, %d missing of phones done after Asterisk went, %d counted lost by pnpd, %d lost by Asterisk's crash: %d unaccounted",
			present, absentAfter, lostSeen, crashLost, unaccounted)
	}
	t.Logf("FAULT asterisk-killed phones=%d answered=%d seen_written=%d overflows=%d unaccounted=%d (overflows: %d seen records, %d UserEvents; writes done %d of %d; queue %d; records written again after the reconnect: %d; seen records lost to the SIGKILL: %d, among the last %d phones done before pnpd saw the connection go)",
		phones, answered, present, overflows, unaccounted, lostSeen, lostEvents, written, 3*phones, queue, replayed, crashLost, crashSpan)
}

// TestFaultWrongAMISecret: pnpd with a secret Asterisk refuses starts
// anyway, says so once and clearly, serves from the file's rules, retries
// with a growing delay, and is in as soon as manager.conf agrees.
func TestFaultWrongAMISecret(t *testing.T) {
	l := newLab(t)
	a := asterisktest.Start(t, asterisktest.Options{NS: l.pbx})
	cli(t, a, "database put pnp mac/001fc1000061 acme")
	cli(t, a, "database put pnp tenant/acme/url http://acme.example/")
	wrong := "not-" + a.Secret
	l.start("", fmt.Sprintf("[resolve]\ndefault = \"http://file.example/\"\n\n[ami]\naddress = %q\nusername = %q\nsecret = %q\n",
		a.Addr, a.Username, wrong))

	// Started, and it says why the PBX is not used, naming the user, the
	// address and where to look.
	refused := l.waitLog(t, map[string]string{"msg": msgLoginRefused, "level": "WARN"})
	if refused["user"] != a.Username || refused["address"] != a.Addr || !strings.Contains(refused["err"], "Authentication failed") ||
		!strings.Contains(refused["hint"], "manager.conf") || !strings.Contains(refused["hint"], "[ami]") {
		t.Errorf("login refused line %v", refused)
	}
	if strings.Contains(l.log.String(), a.Secret) || strings.Contains(l.log.String(), wrong) {
		t.Errorf("the log shows a secret")
	}
	noSnap := l.waitLog(t, map[string]string{"msg": "pbx: no snapshot yet: answering from the file's rules until the PBX answers"})
	if !strings.Contains(noSnap["err"], "Authentication failed") || !strings.Contains(noSnap["ami"], a.Addr) {
		t.Errorf("no-snapshot line %v", noSnap)
	}

	// Meanwhile a phone is provisioned from the file, even one the PBX
	// would give another URL.
	r := l.simulate(t, "-vendor", "htek", "-mac", "001fc1000061")
	if r.code != 0 || r.url != "http://file.example/" {
		t.Fatalf("with the PBX refusing pnpd: %s", r)
	}
	l.waitLog(t, map[string]string{"msg": "exchange", "outcome": "provisioned", "mac": "001fc1000061", "decided_by": "default"})

	// Retries: each one a refusal in Asterisk's log, each after the
	// client's backoff at least (100 ms doubling; Asterisk itself waits 1 s
	// before it refuses).
	const attempts = 6
	failures := func() int { return strings.Count(a.Log(), "failed to authenticate as '"+a.Username+"'") }
	deadline := time.Now().Add(2 * runTimeout)
	for failures() < attempts {
		if time.Now().After(deadline) {
			t.Fatalf("Asterisk saw %d refused logins, waited for %d", failures(), attempts)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var times []time.Time
	for _, kv := range l.logLines(map[string]string{"msg": "ami: connecting"}) {
		at, err := time.Parse(time.RFC3339Nano, kv["time"])
		if err != nil {
			t.Fatalf("ami: connecting line %v: %v", kv, err)
		}
		times = append(times, at)
	}
	if len(times) < attempts {
		t.Fatalf("%d \"ami: connecting\" lines for %d refusals", len(times), failures())
	}
	for k := 1; k < len(times); k++ {
		if gap, least := times[k].Sub(times[k-1]), min(ami.DefaultMinBackoff<<(k-1), ami.DefaultMaxLoginBackoff); gap < least {
			t.Errorf("attempt %d came %v after the one before, before its backoff %v", k+1, gap, least)
		}
	}
	if n := len(l.logLines(map[string]string{"msg": msgLoginRefused})); n != 1 {
		t.Errorf("%d %q lines for %d refusals, want one", n, msgLoginRefused, failures())
	}

	// The operator fixes manager.conf (to the secret pnpd has) and reloads:
	// a later retry gets in, within the backoff's cap.
	path := filepath.Join(a.Dir, "etc", "manager.conf")
	conf, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fixed := strings.Replace(string(conf), "secret = "+a.Secret+"\n", "secret = "+wrong+"\n", 1)
	if fixed == string(conf) {
		t.Fatalf("no \"secret = ...\" line for the user in %s", path)
	}
	a.WriteFile(t, "manager.conf", fixed)
	cli(t, a, "manager reload")
	before := failures()
	wait := ami.DefaultMaxLoginBackoff + logTimeout
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	line, err := l.log.waitLine(ctx, func(s string) bool { return logfmt(s)["msg"] == "ami: connected" })
	if err != nil {
		t.Fatalf("pnpd did not log in within %v of the fix", wait)
	}
	conn := logfmt(line)
	l.waitLog(t, map[string]string{"msg": "pbx snapshot", "why": "login", "phones": "1"})
	after := failures()
	if got, err := strconv.Atoi(conn["failed_attempts"]); err != nil || got != after {
		t.Errorf("connected after failed_attempts=%q; Asterisk refused %d logins", conn["failed_attempts"], after)
	}
	// Now the PBX decides.
	r = l.simulate(t, "-vendor", "htek", "-mac", "001fc1000061")
	if r.code != 0 || r.url != "http://acme.example/" {
		t.Fatalf("after the fix: %s", r)
	}
	t.Logf("FAULT wrong-secret refused_logins=%d (before the fix %d) login_refused_lines=1 then logged in", after, before)
}

// TestFaultSIGTERMInFlight: SIGTERM while a NOTIFY waits for the phone's
// answer. A phone that answers after "shutting down" is provisioned before
// pnpd exits 0; one that never answers is aborted at the deadline, and
// pnpd still exits 0. Either way the outcome is in the AstDB before the
// process is gone.
func TestFaultSIGTERMInFlight(t *testing.T) {
	l := newLab(t)
	a := asterisktest.Start(t, asterisktest.Options{NS: l.pbx})
	cli(t, a, "database put pnp tenant/acme/url http://acme.example/{mac}.cfg")

	for _, tc := range []struct {
		name    string
		mac     string
		answers bool
		outcome string
	}{
		{"answers after SIGTERM", "001fc1000071", true, "provisioned"},
		{"never answers", "001fc1000072", false, "aborted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l.t = t // this run's pnpd belongs to the subtest
			cli(t, a, "database put pnp mac/"+tc.mac+" acme")
			l.start("", pbxConf(a, ""))
			l.waitLog(t, map[string]string{"msg": "pbx snapshot", "why": "login"})

			ph := newPhone(t, l, "htek", tc.mac, l.phoneIP)
			ph.mu.Lock()
			ph.hold = true
			ph.mu.Unlock()
			sctx, scancel := context.WithTimeout(context.Background(), runTimeout)
			defer scancel()
			go ph.subscribe(sctx)
			if !waitClosed(ph.notified, logTimeout) {
				t.Fatalf("no NOTIFY within %v", logTimeout)
			}
			if err := l.serve.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			l.waitLog(t, map[string]string{"msg": "shutting down"})
			if tc.answers {
				ph.release()
			}
			select {
			case <-l.exited:
			case <-time.After(runTimeout):
				t.Fatalf("pnpd still runs %v after SIGTERM", runTimeout)
			}
			l.stop() // exited already: checks the exit status is 0

			lines := l.serveLog()
			down := logIndex(lines, map[string]string{"msg": "shutting down"})
			ex := logIndex(lines, map[string]string{"msg": "exchange", "mac": tc.mac})
			stopped := logIndex(lines, map[string]string{"msg": "stopped"})
			if ex < 0 || stopped < 0 || !(down < ex && ex < stopped) {
				t.Fatalf("log order: shutting down at %d, exchange at %d, stopped at %d", down, ex, stopped)
			}
			if got := lines[ex]["outcome"]; got != tc.outcome {
				t.Errorf("exchange %v, want outcome %s", lines[ex], tc.outcome)
			}
			final, url, notifies, _ := ph.result()
			if final != 200 || url != "http://acme.example/"+tc.mac+".cfg" {
				t.Errorf("phone: final %d, NOTIFY %q", final, url)
			}
			for _, kv := range lines {
				if kv["msg"] == "shutdown" && strings.Contains(kv["err"], "pbx: flush") {
					t.Errorf("writes left at exit: %v", kv)
				}
			}
			// pnpd is gone: what the AstDB holds, it wrote before exiting.
			if v := seenRecord(t, a, tc.mac); v.Get("outcome") != tc.outcome {
				t.Errorf("seen/%s = %v after exit, want outcome %s", tc.mac, v, tc.outcome)
			}
			t.Logf("FAULT sigterm-in-flight case=%q outcome=%s notifies=%d exit=0 seen_flushed=true", tc.name, lines[ex]["outcome"], notifies)
		})
	}
}
