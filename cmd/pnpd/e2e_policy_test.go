package main

// End-to-end tests of [policy] (issue 6, "policy for a hostile LAN") with
// the real binary in the lab's namespaces: floods from one address (new
// transactions, retransmissions, a forged source that answers nothing), a
// MAC claimed from many, reflection through a forged Contact,
// max_transactions, the MAC lists, unknown = "observe", neighbor_check
// against the kernel's ARP table, {token} checked by `pnpd token verify`,
// and the policy's lines in `pnpd resolve`. The points that need the PBX's
// database (approve, window, once) are tested with Asterisk elsewhere.
//
// Every hostile test counts what it sent and, with a raw socket in the
// phone namespace, every UDP datagram pnpd sent back to any address there,
// and logs "HOSTILE test=NAME sent=N back=M" so that the totals can be
// added up from `go test -v`. The counts are taken after pnpd has stopped
// and a probe sent after it has reached the raw socket: nothing pnpd sent
// can still be on its way.
//
// The default rates are 10/10s, refilled at one token a second. The tests
// send their bursts within milliseconds, so exactly 10 get through; on a
// machine so slow that a burst took longer than a second, a token per
// second elapsed is accepted on top, and the test says so.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/pnpd/pnpd/pkg/pnp"
	"github.com/pnpd/pnpd/pkg/policy"
)

const (
	// polEvent is the Event of the tests' SUBSCRIBEs (a Yealink T21).
	polEvent = `ua-profile;profile-type="device";vendor="Yealink";model="T21";version="34.72.0.1"`
	// polResolve answers every phone with a URL naming its MAC.
	polResolve = "[resolve]\ndefault = \"http://198.18.0.1/{vendor}/{mac}/\"\n"
	// polBurst is the default source_rate's and mac_rate's burst (10/10s).
	polBurst = 10
	// polRefill is how long the default rates take to regain one token.
	polRefill = time.Second
	// polHold is how long a test listens for datagrams that must not come,
	// after the last it expects, before it stops pnpd.
	polHold = 2 * time.Second
	// polProbe is the payload of the datagram that marks the end of a
	// raw-socket count.
	polProbe = "pnpd-e2e-policy-probe"
)

var polGroup = netip.MustParseAddrPort("224.0.1.75:5060")

// polSubscribe is a valid PnP SUBSCRIBE from a phone at src claiming mac.
func polSubscribe(mac string, src netip.AddrPort, callID, branch string) []byte {
	return sipText(subscribeTemplate, mac, src, callID, branch, polEvent)
}

// polMAC returns the i-th of a series of distinct Yealink MACs.
func polMAC(i int) string { return fmt.Sprintf("001565%06x", i) }

// polAddrs adds the addresses 198.18.0.first to 198.18.0.(first+n-1) of the
// lab's subnet to the phone's veth and returns them.
func polAddrs(t *testing.T, l *lab, first, n int) []netip.Addr {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []netip.Addr
	for i := range n {
		a := netip.AddrFrom4([4]byte{198, 18, 0, byte(first + i)})
		if a == l.pbxIP || a == l.phoneIP {
			t.Fatalf("polAddrs: %s is taken by the lab", a)
		}
		if b, err := l.phone.IP(ctx, "addr", "add", a.String()+"/24", "dev", l.phoneIf); err != nil {
			t.Fatalf("adding %s to the phone's veth: %v\n%s", a, err, b)
		}
		out = append(out, a)
	}
	return out
}

// polSock is a phone's UDP socket in the phone namespace: it sends to the
// PnP group on the phone's veth, keeps every datagram it receives, and,
// when answer is set, answers each NOTIFY with a 200 as a phone does.
type polSock struct {
	c      *net.UDPConn
	addr   netip.AddrPort
	answer bool
	sent   int

	mu   sync.Mutex
	got  []datagram
	wake chan struct{} // closed and replaced on every datagram
	done chan struct{} // closed when the reader has returned
}

// openPolSock opens a polSock bound to a:port (0: any port); it is closed
// at the end of the test.
func openPolSock(t *testing.T, l *lab, a netip.Addr, port uint16, answer bool) *polSock {
	t.Helper()
	c := l.phoneConn(t, a, port)
	s := &polSock{c: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort(), answer: answer,
		wake: make(chan struct{}), done: make(chan struct{})}
	go s.read()
	t.Cleanup(func() {
		s.c.Close()
		<-s.done
	})
	return s
}

func (s *polSock) read() {
	defer close(s.done)
	buf := make([]byte, 65536)
	for {
		n, from, err := s.c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		d := datagram{from: netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), data: append([]byte(nil), buf[:n]...)}
		if s.answer {
			// The NOTIFY's Via carries rport: the 200 goes back to
			// where it came from.
			if m, err := parseSIP(d.data); err == nil && !m.IsResponse() && m.Method == "NOTIFY" {
				_, _ = s.c.WriteToUDPAddrPort(okFor(d.data), d.from)
			}
		}
		s.mu.Lock()
		s.got = append(s.got, d)
		close(s.wake)
		s.wake = make(chan struct{})
		s.mu.Unlock()
	}
}

// send sends b to the PnP group.
func (s *polSock) send(t *testing.T, b []byte) {
	t.Helper()
	if _, err := s.c.WriteToUDPAddrPort(b, polGroup); err != nil {
		t.Fatalf("sending from %s: %v", s.addr, err)
	}
	s.sent++
}

// received returns the number of datagrams received so far.
func (s *polSock) received() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

// polTally is what a polSock received, read as SIP.
type polTally struct {
	oks      int      // 200s to SUBSCRIBEs
	notifies int      // NOTIFY datagrams
	notifyTx int      // NOTIFY transactions (distinct branches)
	bodies   []string // the body of each NOTIFY transaction
	others   int      // anything else, unparseable datagrams included
}

func (tl polTally) String() string {
	return fmt.Sprintf("%d 200s, %d NOTIFYs in %d transactions, %d others", tl.oks, tl.notifies, tl.notifyTx, tl.others)
}

// tally reads what the socket received with the Call-ID callID ("" for
// all; unparseable datagrams count only then).
func (s *polSock) tally(callID string) polTally {
	s.mu.Lock()
	got := s.got
	s.mu.Unlock()
	var tl polTally
	branches := map[string]bool{}
	for _, d := range got {
		m, err := parseSIP(d.data)
		if err != nil {
			if callID == "" {
				tl.others++
			}
			continue
		}
		if callID != "" && m.CallID != callID {
			continue
		}
		switch {
		case m.IsResponse() && m.Status == 200 && m.CSeqMethod == "SUBSCRIBE":
			tl.oks++
		case !m.IsResponse() && m.Method == "NOTIFY":
			tl.notifies++
			branch := ""
			if m.Via != nil {
				branch = paramOf(m.Via.Param, "branch")
			}
			if !branches[branch] {
				branches[branch] = true
				tl.notifyTx++
				tl.bodies = append(tl.bodies, strings.TrimRight(bodyOf(m), "\r\n"))
			}
		default:
			tl.others++
		}
	}
	return tl
}

// wait waits (up to logTimeout) until the tally of callID satisfies ok,
// and returns it; the test fails when it never does.
func (s *polSock) wait(t *testing.T, what, callID string, ok func(polTally) bool) polTally {
	t.Helper()
	deadline := time.NewTimer(logTimeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		wake := s.wake
		s.mu.Unlock()
		tl := s.tally(callID)
		if ok(tl) {
			return tl
		}
		select {
		case <-wake:
		case <-deadline.C:
			t.Errorf("%s (Call-ID %q) at %s: never came; got %s", what, callID, s.addr, tl)
			return tl
		}
	}
}

// polTap keeps, with a raw socket in the phone namespace, every UDP
// datagram the pbx's address sends to any address of the namespace,
// whatever its port and whether or not a socket listens there.
type polTap struct {
	rc  *ipv4.RawConn
	pbx netip.Addr

	mu     sync.Mutex
	got    []tapped // probes left out
	probes int
	wake   chan struct{}
	done   chan struct{}
}

// tapped is one UDP datagram the pbx sent into the phone namespace.
type tapped struct {
	dst  netip.AddrPort
	data []byte
}

func openPolTap(t *testing.T, l *lab) *polTap {
	t.Helper()
	c, err := l.phone.ListenPacket("ip4:udp", "0.0.0.0")
	if err != nil {
		t.Fatal(err)
	}
	return newPolTap(t, l, c)
}

// newPolTap reads c, a raw UDP socket of the phone namespace, until the
// test ends.
func newPolTap(t *testing.T, l *lab, c net.PacketConn) *polTap {
	t.Helper()
	rc, err := ipv4.NewRawConn(c)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	p := &polTap{rc: rc, pbx: l.pbxIP, wake: make(chan struct{}), done: make(chan struct{})}
	go p.read()
	t.Cleanup(func() {
		p.rc.Close()
		<-p.done
	})
	return p
}

func (p *polTap) read() {
	defer close(p.done)
	buf := make([]byte, 65536)
	for {
		h, payload, _, err := p.rc.ReadFrom(buf)
		if err != nil {
			return
		}
		src, _ := netip.AddrFromSlice(h.Src)
		dst, _ := netip.AddrFromSlice(h.Dst)
		if src.Unmap() != p.pbx || len(payload) < 8 {
			continue
		}
		port := uint16(payload[2])<<8 | uint16(payload[3])
		p.mu.Lock()
		if string(payload[8:]) == polProbe {
			p.probes++
		} else {
			p.got = append(p.got, tapped{dst: netip.AddrPortFrom(dst.Unmap(), port), data: bytes.Clone(payload[8:])})
		}
		close(p.wake)
		p.wake = make(chan struct{})
		p.mu.Unlock()
	}
}

// settle counts what settleAll returns by destination address.
func (p *polTap) settle(t *testing.T, l *lab) map[netip.Addr]int {
	t.Helper()
	out := map[netip.Addr]int{}
	for _, d := range p.settleAll(t, l) {
		out[d.dst.Addr()]++
	}
	return out
}

// settleAll sends a probe from the pbx namespace to the phone's address
// and waits until the tap has seen it, then returns what it kept: run
// after pnpd has stopped, that is everything pnpd sent.
func (p *polTap) settleAll(t *testing.T, l *lab) []tapped {
	t.Helper()
	c, err := l.pbx.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(l.pbxIP, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p.mu.Lock()
	before := p.probes
	p.mu.Unlock()
	// A probe is sent again every half second in case one is lost.
	for range int(logTimeout / (500 * time.Millisecond)) {
		if _, err := c.WriteToUDPAddrPort([]byte(polProbe), netip.AddrPortFrom(l.phoneIP, 9)); err != nil {
			t.Fatal(err)
		}
		p.mu.Lock()
		wake := p.wake
		seen := p.probes > before
		p.mu.Unlock()
		if !seen {
			select {
			case <-wake:
			case <-time.After(500 * time.Millisecond):
			}
			p.mu.Lock()
			seen = p.probes > before
			p.mu.Unlock()
		}
		if seen {
			p.mu.Lock()
			defer p.mu.Unlock()
			return append([]tapped(nil), p.got...)
		}
	}
	t.Fatal("the raw socket never saw the probe from the pbx: its counts prove nothing")
	return nil
}

// polControl sends a valid SUBSCRIBE from c, a socket that sent nothing
// hostile, with a MAC no hostile datagram used, and waits for its 200 and
// NOTIFY. pnpd reads one interface's datagrams in order, so the hostile
// datagrams sent before it have been handled by then. It returns how many
// tokens a 10/10s bucket can have regained since start: how many more than
// the burst a slow machine may have let through.
func polControl(t *testing.T, c *polSock, mac string, start time.Time) (refill int) {
	t.Helper()
	callID := "control-" + mac + "@" + c.addr.Addr().String()
	c.send(t, polSubscribe(mac, c.addr, callID, "z9hG4bKcontrol"+mac))
	c.wait(t, "the control phone's 200", callID, func(tl polTally) bool { return tl.oks >= 1 })
	refill = int(time.Since(start) / polRefill)
	c.wait(t, "the control phone's NOTIFY", callID, func(tl polTally) bool { return tl.notifyTx >= 1 })
	if refill > 0 {
		t.Logf("the burst and the control took %s: up to %d more than the burst of %d may get through",
			time.Since(start).Round(time.Millisecond), refill, polBurst)
	}
	return refill
}

// polLines returns the serve log lines (as logfmt keys) that match.
func polLines(l *lab, match func(map[string]string) bool) []map[string]string {
	var out []map[string]string
	for _, line := range completeLines(l.log.String()) {
		if kv := logfmt(line); match(kv) {
			out = append(out, kv)
		}
	}
	return out
}

// polWaitLines waits (up to logTimeout) until at least n serve log lines
// match and returns them.
func polWaitLines(t *testing.T, l *lab, what string, n int, match func(map[string]string) bool) []map[string]string {
	t.Helper()
	return polWaitLinesFor(t, l, logTimeout, what, n, match)
}

// polWaitLinesFor is polWaitLines waiting up to timeout.
func polWaitLinesFor(t *testing.T, l *lab, timeout time.Duration, what string, n int, match func(map[string]string) bool) []map[string]string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		_, wake := l.log.snapshot()
		got := polLines(l, match)
		if len(got) >= n {
			return got
		}
		select {
		case <-wake:
		case <-deadline.C:
			t.Errorf("serve log: %d lines of %s, want at least %d", len(got), what, n)
			return got
		}
	}
}

// polExchange matches msg=exchange lines with the given keys.
func polExchange(want map[string]string) func(map[string]string) bool {
	return func(kv map[string]string) bool {
		if kv["msg"] != "exchange" {
			return false
		}
		for k, v := range want {
			if kv[k] != v {
				return false
			}
		}
		return true
	}
}

// polMsgPrefix matches the lines whose msg starts with prefix.
func polMsgPrefix(prefix string) func(map[string]string) bool {
	return func(kv map[string]string) bool { return strings.HasPrefix(kv["msg"], prefix) }
}

// polStopped stops pnpd serve and returns the dropped and refused counters
// of its msg=stopped line.
func polStopped(t *testing.T, l *lab) (dropped, refused map[string]int64) {
	t.Helper()
	l.stop()
	lines := l.logLines(map[string]string{"msg": "stopped"})
	if len(lines) != 1 {
		t.Fatalf("%d msg=stopped lines, want 1", len(lines))
	}
	var err error
	if dropped, err = polGoMap(lines[0]["dropped"]); err != nil {
		t.Fatalf("msg=stopped dropped=: %v", err)
	}
	if refused, err = polGoMap(lines[0]["refused"]); err != nil {
		t.Fatalf("msg=stopped refused=: %v", err)
	}
	return dropped, refused
}

// polGoMap reads a map[string]int64 as fmt prints it: "map[a:1 b:2]".
func polGoMap(s string) (map[string]int64, error) {
	inner, ok := between(s, "map[", "]")
	if !ok {
		return nil, fmt.Errorf("%q is not a printed map", s)
	}
	out := map[string]int64{}
	for _, f := range strings.Fields(inner) {
		i := strings.LastIndexByte(f, ':')
		if i < 0 {
			return nil, fmt.Errorf("%q in %q is not key:count", f, s)
		}
		n, err := strconv.ParseInt(f[i+1:], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q in %q: %w", f, s, err)
		}
		out[f[:i]] = n
	}
	return out, nil
}

// polCheckCounts fails for each key whose count in got differs from want
// (a key missing from want must be absent or 0).
func polCheckCounts(t *testing.T, what string, got, want map[string]int64) {
	t.Helper()
	for k, n := range want {
		if got[k] != n {
			t.Errorf("msg=stopped %s[%s] = %d, want %d (all: %v)", what, k, got[k], n, got)
		}
	}
	for k, n := range got {
		if _, ok := want[k]; !ok && n != 0 {
			t.Errorf("msg=stopped %s[%s] = %d, want none (all: %v)", what, k, n, got)
		}
	}
}

// polHostile logs the line the closing note adds up.
func polHostile(t *testing.T, name string, sent, back int) {
	t.Helper()
	t.Logf("HOSTILE test=%s sent=%d back=%d", name, sent, back)
}

// polBurstRange checks that got, the number let through, is the burst, or
// on a slow machine at most refill more.
func polBurstRange(t *testing.T, what string, got, refill int) {
	t.Helper()
	if got < polBurst || got > polBurst+refill {
		if refill == 0 {
			t.Errorf("%s: %d, want exactly %d (the default burst)", what, got, polBurst)
		} else {
			t.Errorf("%s: %d, want %d to %d (the default burst plus one a second elapsed)", what, got, polBurst, polBurst+refill)
		}
	}
}

// One address sends 500 valid SUBSCRIBEs, each a new transaction for a new
// MAC, as fast as it can: the default source_rate answers its burst of 10,
// 200 and NOTIFY each, and drops the rest, logging the flood once.
func TestE2EPolicySourceFlood(t *testing.T) {
	const n = 500
	l := newLab(t)
	l.start("", polResolve)
	ctlAddr := polAddrs(t, l, 3, 1)[0]
	tap := openPolTap(t, l)
	flood := openPolSock(t, l, l.phoneIP, 0, true)
	control := openPolSock(t, l, ctlAddr, 0, true)

	start := time.Now()
	for i := range n {
		flood.send(t, polSubscribe(polMAC(i), flood.addr, fmt.Sprintf("flood-%d@%s", i, l.phoneIP), fmt.Sprintf("z9hG4bKflood%d", i)))
	}
	refill := polControl(t, control, "000413000001", start)
	// The control's answer came through another socket: this one may
	// not have read all of its own yet.
	flood.wait(t, "the burst's 200s and NOTIFYs", "", func(tl polTally) bool { return tl.oks >= polBurst && tl.notifyTx >= polBurst })
	polWaitLines(t, l, "provisioned exchanges of the flooding address", polBurst,
		polExchange(map[string]string{"outcome": "provisioned", "src": flood.addr.String()}))
	time.Sleep(polHold)
	dropped, refused := polStopped(t, l)
	back := tap.settle(t, l)
	answered := n - int(dropped["rate-limited"])
	polBurstRange(t, "SUBSCRIBEs of the flooding address let through", answered, refill)

	tl := flood.tally("")
	if tl.oks != answered || tl.notifyTx != answered || tl.others != 0 {
		t.Errorf("the flooding address got %s; want %d 200s and %d NOTIFY transactions, nothing else", tl, answered, answered)
	}
	if tl.notifies != tl.notifyTx {
		// Not pnpd's fault: the test's socket answered a NOTIFY late.
		t.Logf("%d NOTIFYs retransmitted", tl.notifies-tl.notifyTx)
	}
	if back[l.phoneIP] != flood.received() {
		t.Errorf("%d datagrams reached %s, its socket got %d: some went to another port", back[l.phoneIP], l.phoneIP, flood.received())
	}
	if c := control.tally(""); back[ctlAddr] != control.received() || c.oks != 1 || c.notifyTx != 1 {
		t.Errorf("the control phone got %s (%d datagrams at its address), want one 200 and one NOTIFY", c, back[ctlAddr])
	}
	for a, k := range back {
		if a != l.phoneIP && a != ctlAddr {
			t.Errorf("%d datagrams went to %s, which sent nothing", k, a)
		}
	}
	if got := polLines(l, polExchange(map[string]string{"src": flood.addr.String()})); len(got) != answered {
		t.Errorf("%d msg=exchange lines for the flooding address, want %d", len(got), answered)
	}
	if got := polLines(l, polMsgPrefix("policy: source over its rate")); len(got) != 1 {
		t.Errorf("%d \"policy: source over its rate\" lines, want 1: %v", len(got), got)
	} else if got[0]["src"] != l.phoneIP.String() || got[0]["reason"] != "source-rate" || got[0]["source_rate"] != "10/10s" {
		t.Errorf("the rate line does not name the source, reason and rate: %v", got[0])
	}
	polCheckCounts(t, "dropped", dropped, map[string]int64{"rate-limited": int64(n - answered)})
	polCheckCounts(t, "refused", refused, map[string]int64{"source-rate": int64(n - answered)})
	polHostile(t, "source-flood", flood.sent, back[l.phoneIP])
}

// One SUBSCRIBE retransmitted 500 times (one branch): the burst of 10 gets
// the stored 200, the transaction one NOTIFY, the rest nothing.
func TestE2EPolicyRetransmissionFlood(t *testing.T) {
	const (
		n      = 500
		mac    = "0015657322ff"
		callID = "retransmitted@flood"
	)
	l := newLab(t)
	l.start("", polResolve)
	ctlAddr := polAddrs(t, l, 3, 1)[0]
	tap := openPolTap(t, l)
	flood := openPolSock(t, l, l.phoneIP, 0, true)
	control := openPolSock(t, l, ctlAddr, 0, true)

	sub := polSubscribe(mac, flood.addr, callID, "z9hG4bKsamebranch")
	start := time.Now()
	for range n {
		flood.send(t, sub)
	}
	refill := polControl(t, control, "000413000001", start)
	flood.wait(t, "the burst's 200s and the NOTIFY", callID, func(tl polTally) bool { return tl.oks >= polBurst && tl.notifyTx >= 1 })
	l.waitLog(t, map[string]string{"msg": "exchange", "mac": mac, "outcome": "provisioned"})
	time.Sleep(polHold)
	dropped, refused := polStopped(t, l)
	back := tap.settle(t, l)
	answered := n - int(dropped["rate-limited"])
	polBurstRange(t, "copies of the SUBSCRIBE let through", answered, refill)

	tl := flood.tally("")
	if tl.oks != answered || tl.notifyTx != 1 || tl.others != 0 {
		t.Errorf("the flooding address got %s; want %d 200s, one NOTIFY transaction, nothing else", tl, answered)
	}
	if back[l.phoneIP] != flood.received() {
		t.Errorf("%d datagrams reached %s, its socket got %d", back[l.phoneIP], l.phoneIP, flood.received())
	}
	if got := polLines(l, polExchange(map[string]string{"mac": mac})); len(got) != 1 {
		t.Errorf("%d msg=exchange lines for %s, want 1", len(got), mac)
	}
	if got := polLines(l, polMsgPrefix("policy: source over its rate")); len(got) != 1 {
		t.Errorf("%d \"policy: source over its rate\" lines, want 1", len(got))
	}
	polCheckCounts(t, "dropped", dropped, map[string]int64{"rate-limited": int64(n - answered)})
	polCheckCounts(t, "refused", refused, map[string]int64{"source-rate": int64(n - answered)})
	polHostile(t, "retransmission-flood", flood.sent, back[l.phoneIP])
}

// SUBSCRIBEs whose Contact names a victim (another address of the phone
// namespace, with a socket that would answer like a phone) or a host name
// try to aim pnpd's NOTIFY elsewhere. With contact_is_source (the default)
// they are refused: nothing reaches the victim, nothing comes back to the
// sender, one refusal is logged per transaction however often it is
// retransmitted. Without it the NOTIFY still goes to the sender only.
func TestE2EPolicyReflection(t *testing.T) {
	type attempt struct {
		name, mac  string
		viaVictim  bool   // the Via names the victim too
		contact    string // "" the victim's address:port
		sends      int    // the SUBSCRIBE and its retransmissions
		detailHost string // the Contact host the refusal names ("": the victim's)
	}
	attempts := []attempt{
		{name: "contact names the victim", mac: "001565000a01", sends: 4},
		{name: "via and contact name the victim", mac: "001565000a02", viaVictim: true, sends: 2},
		{name: "contact names a host name", mac: "001565000a03", contact: "victim.example:5060", sends: 2, detailHost: "victim.example"},
	}
	for _, check := range []bool{true, false} {
		t.Run(fmt.Sprintf("contact_is_source=%t", check), func(t *testing.T) {
			l := newLab(t)
			l.start("", polResolve+fmt.Sprintf("[policy]\ncontact_is_source = %t\n", check))
			addrs := polAddrs(t, l, 3, 2)
			victimAddr, ctlAddr := addrs[0], addrs[1]
			tap := openPolTap(t, l)
			// The attacker listens where the victim does, at 5060: a
			// NOTIFY sent to its address at the Contact's port is
			// counted by its socket too.
			attacker := openPolSock(t, l, l.phoneIP, 5060, true)
			victim := openPolSock(t, l, victimAddr, 5060, true)
			control := openPolSock(t, l, ctlAddr, 0, true)

			start := time.Now()
			sent := 0
			for i, a := range attempts {
				via := attacker.addr
				if a.viaVictim {
					via = victim.addr
				}
				contact := a.contact
				if contact == "" {
					contact = victim.addr.String()
				}
				sub := polSubscribe(a.mac, via, fmt.Sprintf("reflect-%d@%s", i, l.phoneIP), fmt.Sprintf("z9hG4bKreflect%d", i))
				was := []byte("Contact: <sip:MAC" + a.mac + "@" + via.String() + ">")
				if !bytes.Contains(sub, was) {
					t.Fatalf("no %q in the SUBSCRIBE template's output", was)
				}
				sub = bytes.Replace(sub, was, []byte("Contact: <sip:MAC"+a.mac+"@"+contact+">"), 1)
				for range a.sends {
					attacker.send(t, sub)
					sent++
				}
			}
			if sent > polBurst {
				t.Fatalf("the attempts send %d datagrams: more than source_rate's burst, the rate would interfere", sent)
			}
			polControl(t, control, "000413000001", start)
			if check {
				polWaitLines(t, l, "contact-not-source refusals", len(attempts),
					polExchange(map[string]string{"outcome": "refused", "reason": "contact-not-source"}))
			} else {
				attacker.wait(t, "a NOTIFY per attempt", "", func(tl polTally) bool { return tl.notifyTx >= len(attempts) })
				polWaitLines(t, l, "provisioned attempts", len(attempts),
					polExchange(map[string]string{"outcome": "provisioned", "src": attacker.addr.String()}))
			}
			time.Sleep(polHold)
			dropped, refused := polStopped(t, l)
			back := tap.settle(t, l)

			if back[victimAddr] != 0 || victim.received() != 0 {
				t.Errorf("%d datagrams reached the victim %s (its socket got %d), want none", back[victimAddr], victimAddr, victim.received())
			}
			for a, k := range back {
				if a != l.phoneIP && a != victimAddr && a != ctlAddr {
					t.Errorf("%d datagrams went to %s, which sent nothing", k, a)
				}
			}
			tl := attacker.tally("")
			if check {
				if back[l.phoneIP] != 0 {
					t.Errorf("%d datagrams came back to the attacker (%s), want none", back[l.phoneIP], tl)
				}
				for _, a := range attempts {
					got := polLines(l, polExchange(map[string]string{"mac": a.mac}))
					host := a.detailHost
					if host == "" {
						host = victimAddr.String()
					}
					switch {
					case len(got) != 1:
						t.Errorf("%s: %d msg=exchange lines for %s, want 1 (sent %d times)", a.name, len(got), a.mac, a.sends)
					case got[0]["outcome"] != "refused" || got[0]["reason"] != "contact-not-source" ||
						!strings.Contains(got[0]["detail"], host) || !strings.Contains(got[0]["detail"], "not the source address "+l.phoneIP.String()):
						t.Errorf("%s: want outcome=refused reason=contact-not-source with a detail naming %s and the source %s: %v",
							a.name, host, l.phoneIP, got[0])
					}
				}
				polCheckCounts(t, "refused", refused, map[string]int64{"contact-not-source": int64(len(attempts))})
			} else {
				// Every SUBSCRIBE datagram gets its 200 (at the source
				// address, the Via's port), each transaction one
				// NOTIFY (at the source address, the Contact's port).
				if tl.oks != sent || tl.notifyTx != len(attempts) || tl.others != 0 || back[l.phoneIP] != attacker.received() {
					t.Errorf("the attacker got %s (%d datagrams at its address), want %d 200s and %d NOTIFY transactions",
						tl, back[l.phoneIP], sent, len(attempts))
				}
				polCheckCounts(t, "refused", refused, nil)
			}
			if dropped["rate-limited"] != 0 {
				t.Errorf("dropped rate-limited=%d: the attempts were meant to stay within the rate", dropped["rate-limited"])
			}
			polHostile(t, fmt.Sprintf("reflection-contact_is_source=%t", check), sent, back[l.phoneIP]+back[victimAddr])
		})
	}
}

// One MAC claimed from 20 addresses (a SUBSCRIBE each, distinct Call-IDs):
// mac_rate answers 10 and drops the rest, logging the flood once.
func TestE2EPolicyMACFlood(t *testing.T) {
	const (
		n   = 20
		mac = "0015657322ff"
	)
	l := newLab(t)
	l.start("", polResolve)
	ctlAddr := polAddrs(t, l, 5, 1)[0]
	addrs := polAddrs(t, l, 10, n)
	tap := openPolTap(t, l)
	control := openPolSock(t, l, ctlAddr, 0, true)
	socks := make([]*polSock, n)
	for i, a := range addrs {
		socks[i] = openPolSock(t, l, a, 0, true)
	}

	start := time.Now()
	for i, s := range socks {
		s.send(t, polSubscribe(mac, s.addr, fmt.Sprintf("macflood-%d@%s", i, s.addr.Addr()), fmt.Sprintf("z9hG4bKmacflood%d", i)))
	}
	refill := polControl(t, control, "000413000001", start)
	polWaitLines(t, l, "provisioned exchanges of "+mac, polBurst,
		polExchange(map[string]string{"outcome": "provisioned", "mac": mac}))
	time.Sleep(polHold)
	dropped, refused := polStopped(t, l)
	back := tap.settle(t, l)
	answered := n - int(dropped["rate-limited"])
	polBurstRange(t, "SUBSCRIBEs claiming "+mac+" let through", answered, refill)

	sentAll, backAll, oks := 0, 0, 0
	for i, s := range socks {
		a := addrs[i]
		sentAll += s.sent
		backAll += back[a]
		tl := s.tally("")
		oks += tl.oks
		switch {
		case back[a] != s.received():
			t.Errorf("%d datagrams reached %s, its socket got %d", back[a], a, s.received())
		case tl.others != 0 || tl.oks > 1 || tl.notifyTx != tl.oks:
			t.Errorf("%s got %s; want nothing, or one 200 and one NOTIFY", a, tl)
		}
	}
	if oks != answered {
		t.Errorf("%d of the addresses got a 200, want %d", oks, answered)
	}
	if got := polLines(l, polExchange(map[string]string{"mac": mac})); len(got) != answered {
		t.Errorf("%d msg=exchange lines for %s, want %d", len(got), mac, answered)
	}
	if got := polLines(l, polMsgPrefix("policy: MAC over its rate")); len(got) != 1 {
		t.Errorf("%d \"policy: MAC over its rate\" lines, want 1: %v", len(got), got)
	} else if got[0]["mac"] != mac || got[0]["reason"] != "mac-rate" || got[0]["mac_rate"] != "10/10s" {
		t.Errorf("the rate line does not name the MAC, reason and rate: %v", got[0])
	}
	polCheckCounts(t, "dropped", dropped, map[string]int64{"rate-limited": int64(n - answered)})
	polCheckCounts(t, "refused", refused, map[string]int64{"mac-rate": int64(n - answered)})
	polHostile(t, "mac-flood", sentAll, backAll)
}

// A flood with a forged source address: 500 SUBSCRIBEs that name a victim
// as their source, Via and Contact (sent here from the victim's address,
// which on a LAN anyone can forge). The victim is no phone and answers
// nothing, so each transaction let through costs it a 200 and every
// NOTIFY retransmission: the bound of what pnpd can be made to send one
// address is the burst times (1 + pnp.DefaultMaxNotifies).
func TestE2EPolicySpoofedSourceFlood(t *testing.T) {
	const n = 500
	l := newLab(t)
	l.start("", polResolve)
	addrs := polAddrs(t, l, 3, 2)
	victimAddr, ctlAddr := addrs[0], addrs[1]
	tap := openPolTap(t, l)
	victim := openPolSock(t, l, victimAddr, 5060, false)
	control := openPolSock(t, l, ctlAddr, 0, true)

	start := time.Now()
	for i := range n {
		victim.send(t, polSubscribe(polMAC(i), victim.addr, fmt.Sprintf("spoofed-%d@%s", i, victimAddr), fmt.Sprintf("z9hG4bKspoofed%d", i)))
	}
	refill := polControl(t, control, "000413000001", start)
	// The NOTIFYs go unanswered until Timer F (64*T1) ends each exchange.
	polWaitLinesFor(t, l, 64*pnp.DefaultT1+logTimeout, "timed-out exchanges of the victim", polBurst,
		polExchange(map[string]string{"outcome": "timeout", "src": victim.addr.String()}))
	dropped, refused := polStopped(t, l)
	back := tap.settle(t, l)
	answered := n - int(dropped["rate-limited"])
	polBurstRange(t, "forged SUBSCRIBEs let through", answered, refill)

	tl := victim.tally("")
	if tl.oks != answered || tl.notifyTx != answered || tl.notifies != answered*pnp.DefaultMaxNotifies || tl.others != 0 {
		t.Errorf("the victim got %s; want %d 200s and %d NOTIFY transactions of %d transmissions each",
			tl, answered, answered, pnp.DefaultMaxNotifies)
	}
	if back[victimAddr] != victim.received() {
		t.Errorf("%d datagrams reached the victim, its socket got %d", back[victimAddr], victim.received())
	}
	for a, k := range back {
		if a != victimAddr && a != ctlAddr {
			t.Errorf("%d datagrams went to %s", k, a)
		}
	}
	for _, kv := range polLines(l, polExchange(map[string]string{"src": victim.addr.String()})) {
		if kv["outcome"] != "timeout" || kv["notifies"] != strconv.Itoa(pnp.DefaultMaxNotifies) {
			t.Errorf("want outcome=timeout notifies=%d: %v", pnp.DefaultMaxNotifies, kv)
		}
	}
	polCheckCounts(t, "dropped", dropped, map[string]int64{"rate-limited": int64(n - answered)})
	polCheckCounts(t, "refused", refused, map[string]int64{"source-rate": int64(n - answered)})
	polHostile(t, "spoofed-source-flood", victim.sent, back[victimAddr])
}

// max_transactions: refused SUBSCRIBEs do not fill the table (a flood of
// refusals must not lock the phones out), open exchanges do; a full table
// drops new SUBSCRIBEs and says so once, at a level an operator sees.
func TestE2EPolicyMaxTransactions(t *testing.T) {
	const (
		limit   = 5
		refused = 8 // from one address: within source_rate
		silent  = 6 // exchanges whose NOTIFYs nobody answers: they stay open
	)
	l := newLab(t)
	l.start("", polResolve+fmt.Sprintf("[policy]\nmax_transactions = %d\n", limit))
	addrs := polAddrs(t, l, 3, 2)
	tap := openPolTap(t, l)
	s := openPolSock(t, l, l.phoneIP, 0, true)
	phone := openPolSock(t, l, addrs[0], 0, true)
	mute := openPolSock(t, l, addrs[1], 0, false)

	for i := range refused {
		sub := polSubscribe(polMAC(i), s.addr, fmt.Sprintf("maxtx-%d@%s", i, l.phoneIP), fmt.Sprintf("z9hG4bKmaxtx%d", i))
		sub = bytes.Replace(sub, []byte("@"+s.addr.String()+">"), []byte("@elsewhere.example>"), 1)
		s.send(t, sub)
	}
	polWaitLines(t, l, "refusals", refused, polExchange(map[string]string{"outcome": "refused", "reason": "contact-not-source"}))
	// More refusals than the table holds, and a real phone still gets in.
	phone.send(t, polSubscribe("000413874b49", phone.addr, "maxtx-phone@"+addrs[0].String(), "z9hG4bKmaxtxphone"))
	polWaitLines(t, l, "the real phone's exchange", 1, polExchange(map[string]string{"mac": "000413874b49", "outcome": "provisioned"}))

	// Exchanges that stay open (their NOTIFYs unanswered) fill it: each
	// holds a server and a client transaction.
	for i := range silent {
		mute.send(t, polSubscribe(polMAC(100+i), mute.addr, fmt.Sprintf("maxtx-mute-%d@%s", i, addrs[1]), fmt.Sprintf("z9hG4bKmaxtxmute%d", i)))
	}
	polWaitLines(t, l, "a table-full drop", 1, func(kv map[string]string) bool {
		return kv["msg"] == "dropped" && kv["reason"] == "transaction-table-full"
	})
	time.Sleep(polHold)
	dropped, refusedBy := polStopped(t, l)
	back := tap.settle(t, l)

	if back[l.phoneIP] != 0 {
		t.Errorf("%d datagrams came back to the refused sender, want none", back[l.phoneIP])
	}
	if got := polLines(l, polExchange(map[string]string{"outcome": "refused", "reason": "contact-not-source"})); len(got) != refused {
		t.Errorf("%d refusals logged, want %d", len(got), refused)
	}
	polCheckCounts(t, "refused", refusedBy, map[string]int64{"contact-not-source": refused})
	// limit 5: the real phone's server transaction keeps its place
	// (Timer J), the 1st and 2nd silent exchanges take two each; the
	// other four are dropped.
	polCheckCounts(t, "dropped", dropped, map[string]int64{"transaction-table-full": silent - 2})
	if tl := mute.tally(""); tl.oks != 2 {
		t.Errorf("the silent phones got %s, want 2 200s", tl)
	}
	told := polLines(l, func(kv map[string]string) bool {
		if kv["level"] == "DEBUG" || kv["msg"] == "ready" || kv["msg"] == "stopped" {
			return false
		}
		for _, v := range kv {
			if strings.Contains(v, "max_transactions") || strings.Contains(v, "transaction-table-full") {
				return true
			}
		}
		return false
	})
	if len(told) != 1 {
		t.Errorf("%d lines above debug level say that max_transactions was reached, want 1: %v", len(told), told)
	}
	polHostile(t, "max-transactions", s.sent+mute.sent, back[l.phoneIP]+back[addrs[1]])
}

// polPhone is one phone of a policy table test and what pnpd must do with
// it.
type polPhone struct {
	mac     string
	outcome string // provisioned, refused or observed
	reason  string // refused: the reason
	detail  string // refused: a part of the detail
	url     string // provisioned: the NOTIFY's body
}

// The MAC lists and unknown = "observe": refused and observed phones get
// no datagram at all, the others their 200 and NOTIFY.
func TestE2EPolicyMACLists(t *testing.T) {
	const rule = "[[resolve.rule]]\nmac = \"0015657322ff\"\nurl = \"http://198.18.0.1/rule/{mac}/\"\n"
	tests := []struct {
		name, resolve, policy string
		phones                []polPhone
		refused               map[string]int64
	}{
		{"deny prefix", polResolve, "deny_macs = [\"00:15:65\"]\n", []polPhone{
			{mac: "0015657322ff", outcome: "refused", reason: "mac-denied", detail: "deny_macs entry 001565 matches 0015657322ff"},
			{mac: "000413874b49", outcome: "provisioned", url: "http://198.18.0.1/yealink/000413874b49/"},
		}, map[string]int64{"mac-denied": 1}},
		{"allow list", polResolve, "allow_macs = [\"0015657322ff\", \"00-04-13\"]\n", []polPhone{
			{mac: "0015657322ff", outcome: "provisioned", url: "http://198.18.0.1/yealink/0015657322ff/"},
			{mac: "000413874b49", outcome: "provisioned", url: "http://198.18.0.1/yealink/000413874b49/"},
			{mac: "001fc11b4e1c", outcome: "refused", reason: "mac-not-allowed", detail: "001fc11b4e1c matches no allow_macs entry"},
		}, map[string]int64{"mac-not-allowed": 1}},
		{"deny wins over allow", polResolve, "allow_macs = [\"001565\"]\ndeny_macs = [\"0015657322ff\"]\n", []polPhone{
			{mac: "0015657322ff", outcome: "refused", reason: "mac-denied", detail: "deny_macs entry 0015657322ff"},
			{mac: "001565000001", outcome: "provisioned", url: "http://198.18.0.1/yealink/001565000001/"},
		}, map[string]int64{"mac-denied": 1}},
		{"observe with only a default", polResolve, "unknown = \"observe\"\n", []polPhone{
			{mac: "0015657322ff", outcome: "observed"},
		}, nil},
		{"observe with a mac rule", polResolve + rule, "unknown = \"observe\"\n", []polPhone{
			{mac: "0015657322ff", outcome: "provisioned", url: "http://198.18.0.1/rule/0015657322ff/"},
			{mac: "000413874b49", outcome: "observed"},
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLab(t)
			l.start("", tt.resolve+"[policy]\n"+tt.policy)
			tap := openPolTap(t, l)
			s := openPolSock(t, l, l.phoneIP, 0, true)
			callID := func(p polPhone) string { return "lists-" + p.mac + "@" + l.phoneIP.String() }
			for _, p := range tt.phones {
				s.send(t, polSubscribe(p.mac, s.addr, callID(p), "z9hG4bKlists"+p.mac))
				l.waitLog(t, map[string]string{"msg": "exchange", "mac": p.mac, "outcome": p.outcome})
				if p.outcome == "provisioned" {
					s.wait(t, "the 200 and NOTIFY of "+p.mac, callID(p), func(tl polTally) bool { return tl.oks >= 1 && tl.notifyTx >= 1 })
				}
			}
			time.Sleep(polHold)
			_, refused := polStopped(t, l)
			back := tap.settle(t, l)

			sent, hostileBack := 0, 0
			for _, p := range tt.phones {
				tl := s.tally(callID(p))
				got := polLines(l, polExchange(map[string]string{"mac": p.mac}))
				if len(got) != 1 {
					t.Errorf("%s: %d msg=exchange lines, want 1: %v", p.mac, len(got), got)
					continue
				}
				kv := got[0]
				switch p.outcome {
				case "provisioned":
					if tl.oks != 1 || tl.notifyTx != 1 || len(tl.bodies) != 1 || tl.bodies[0] != p.url {
						t.Errorf("%s got %s with bodies %q, want one 200 and one NOTIFY with %s", p.mac, tl, tl.bodies, p.url)
					}
				default:
					sent++
					hostileBack += tl.oks + tl.notifies + tl.others
					if tl.oks+tl.notifies+tl.others != 0 {
						t.Errorf("%s (%s) got %s, want nothing", p.mac, p.outcome, tl)
					}
					if p.outcome == "refused" && (kv["reason"] != p.reason || !strings.Contains(kv["detail"], p.detail)) {
						t.Errorf("%s: want reason=%s and a detail with %q: %v", p.mac, p.reason, p.detail, kv)
					}
				}
			}
			if s.tally("").others != 0 || back[l.phoneIP] != s.received() || len(back) > 1 {
				t.Errorf("datagrams beyond the phones' exchanges: %v at the phone, its socket got %d (%s)", back, s.received(), s.tally(""))
			}
			polCheckCounts(t, "refused", refused, tt.refused)
			polHostile(t, "mac-lists/"+strings.ReplaceAll(tt.name, " ", "-"), sent, hostileBack)
		})
	}
}

// neighbor_check with the kernel's ARP table: a phone claiming a MAC that
// is not its veth's gets the 200 (which makes the kernel resolve it) and no
// NOTIFY; once its veth has that MAC and pnpd's stale entry is gone, it is
// provisioned.
func TestE2EPolicyNeighborCheck(t *testing.T) {
	const claimed = "0015657322ff"
	l := newLab(t)
	l.start("", polResolve+"[policy]\nneighbor_check = true\n")
	if ready := l.logLines(map[string]string{"msg": "ready"}); len(ready) != 1 || !strings.Contains(ready[0]["policy"], "neighbor_check") {
		t.Fatalf("the ready line does not show neighbor_check: %v", ready)
	}
	ifi, err := l.phone.InterfaceByName(l.phoneIf)
	if err != nil {
		t.Fatal(err)
	}
	vethMAC := ifi.HardwareAddr.String()
	if strings.ReplaceAll(vethMAC, ":", "") == claimed {
		t.Fatalf("the phone's veth already has the claimed MAC %s", vethMAC)
	}
	tap := openPolTap(t, l)
	s := openPolSock(t, l, l.phoneIP, 0, true)

	// A MAC the phone's veth does not have.
	const lie = "neighbor-lie@phone"
	s.send(t, polSubscribe(claimed, s.addr, lie, "z9hG4bKneighborlie"))
	kv := l.waitLog(t, map[string]string{"msg": "exchange", "mac": claimed, "outcome": "refused"})
	if kv != nil && (kv["reason"] != "neighbor-mismatch" || !strings.Contains(kv["detail"], vethMAC) || !strings.Contains(kv["detail"], claimed)) {
		t.Errorf("want reason=neighbor-mismatch with a detail naming %s and %s: %v", vethMAC, claimed, kv)
	}
	s.wait(t, "the 200 to the lying SUBSCRIBE", lie, func(tl polTally) bool { return tl.oks >= 1 })

	// The veth takes the claimed MAC; pnpd's namespace forgets the old one.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if b, err := l.phone.IP(ctx, "link", "set", "dev", l.phoneIf, "address", "00:15:65:73:22:ff"); err != nil {
		t.Fatalf("setting the phone veth's MAC: %v\n%s", err, b)
	}
	if b, err := l.pbx.IP(ctx, "neigh", "flush", "dev", l.pbxIf); err != nil {
		t.Fatalf("flushing the pbx's neighbour table: %v\n%s", err, b)
	}
	if b, err := l.pbx.IP(ctx, "neigh", "show", "dev", l.pbxIf); err != nil || strings.Contains(string(b), vethMAC) {
		t.Fatalf("the pbx's neighbour table still holds %s (%v):\n%s", vethMAC, err, b)
	}
	const truth = "neighbor-truth@phone"
	s.send(t, polSubscribe(claimed, s.addr, truth, "z9hG4bKneighbortruth"))
	l.waitLog(t, map[string]string{"msg": "exchange", "mac": claimed, "outcome": "provisioned"})
	time.Sleep(polHold)
	_, refused := polStopped(t, l)
	back := tap.settle(t, l)

	if tl := s.tally(lie); tl.oks != 1 || tl.notifies != 0 || tl.others != 0 {
		t.Errorf("the lying phone got %s, want its 200 and no NOTIFY", tl)
	}
	if tl := s.tally(truth); tl.oks != 1 || tl.notifyTx != 1 || len(tl.bodies) != 1 || tl.bodies[0] != "http://198.18.0.1/yealink/"+claimed+"/" {
		t.Errorf("the phone with the claimed MAC got %s (bodies %q), want a 200 and a NOTIFY with its URL", tl, tl.bodies)
	}
	if back[l.phoneIP] != s.received() || s.tally("").others != 0 {
		t.Errorf("%d datagrams reached the phone, its socket got %d (%s)", back[l.phoneIP], s.received(), s.tally(""))
	}
	polCheckCounts(t, "refused", refused, map[string]int64{"neighbor-mismatch": 1})
	polHostile(t, "neighbor-mismatch", 1, s.tally(lie).oks+s.tally(lie).notifies+s.tally(lie).others)
}

// polExec runs the built pnpd with args outside the namespaces and returns
// its exit code and output.
func polExec(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runPnpd(t, nil, pnpdBinary(t), args...)
}

// The NOTIFY's URL carries a {token} that `pnpd token verify` accepts for
// the phone's MAC, and for no other MAC or changed character.
func TestE2EPolicyToken(t *testing.T) {
	const mac = "0015657322ff"
	l := newLab(t)
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(l.dir, "token.secret")
	if err := os.WriteFile(secretFile, []byte(hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l.start("", fmt.Sprintf("[resolve]\ndefault = \"http://prov.example/p/{token}/\"\n[policy]\ntoken_secret_file = %q\n", secretFile))
	cfgPath := filepath.Join(l.dir, "pnpd.toml")
	s := openPolSock(t, l, l.phoneIP, 0, true)
	const callID = "token@phone"
	s.send(t, polSubscribe(mac, s.addr, callID, "z9hG4bKtoken"))
	tl := s.wait(t, "the NOTIFY", callID, func(tl polTally) bool { return tl.notifyTx >= 1 })
	l.waitLog(t, map[string]string{"msg": "exchange", "mac": mac, "outcome": "provisioned"})
	if len(tl.bodies) != 1 {
		t.Fatalf("got %s, want one NOTIFY", tl)
	}
	token, ok := between(tl.bodies[0], "http://prov.example/p/", "/")
	if !ok || len(token) != policy.TokenLen || strings.ContainsAny(token, "/?#%{}") {
		t.Fatalf("NOTIFY body %q: want http://prov.example/p/TOKEN/ with a %d-character token", tl.bodies[0], policy.TokenLen)
	}

	verify := func(mac, tok string) (int, string) {
		code, out, errs := polExec(t, "token", "verify", "-config", cfgPath, "-mac", mac, tok)
		return code, out + errs
	}
	if code, out := verify(mac, token); code != 0 || !strings.HasPrefix(out, "valid until ") {
		t.Errorf("token verify of the NOTIFY's token: exit %d, want 0 and \"valid until ...\":\n%s", code, out)
	}
	if code, out := verify("00:15:65:73:22:FF", token); code != 0 {
		t.Errorf("token verify with the MAC written 00:15:65:73:22:FF: exit %d, want 0:\n%s", code, out)
	}
	if code, out := verify("0015657322fe", token); code != 1 {
		t.Errorf("token verify with another MAC: exit %d, want 1:\n%s", code, out)
	}
	// Every single changed character, within the token's alphabet.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range len(token) {
		j := (strings.IndexByte(alphabet, token[i]) + 1) % len(alphabet)
		flipped := token[:i] + alphabet[j:j+1] + token[i+1:]
		if code, out := verify(mac, flipped); code != 1 {
			t.Errorf("token verify with character %d changed (%q): exit %d, want 1:\n%s", i, flipped, code, out)
		}
	}
}

// `pnpd resolve` shows the policy's checks in its trace and says what the
// policy decided.
func TestE2EPolicyResolve(t *testing.T) {
	const rule = "[[resolve.rule]]\nmac = \"0015657322ff\"\nurl = \"http://prov.example/rule/\"\n"
	const resolveDefault = "[resolve]\ndefault = \"http://prov.example/{mac}/\"\n"
	tests := []struct {
		name, config, mac string
		code              int
		stdout            string
		stderrHave        []string
	}{
		{"deny prefix", resolveDefault + "[policy]\ndeny_macs = [\"001565\"]\n", "00:15:65:73:22:ff", 1, "",
			[]string{"policy: deny_macs: 001565 matches: refused", "decided by: policy: refused (mac-denied: deny_macs entry 001565 matches 0015657322ff)"}},
		{"not on the allow list", resolveDefault + "[policy]\nallow_macs = [\"000413\"]\n", "0015657322ff", 1, "",
			[]string{"policy: allow_macs: no entry matches: refused", "mac-not-allowed"}},
		{"on the allow list", resolveDefault + "[policy]\nallow_macs = [\"001565\"]\ndeny_macs = [\"000413\"]\n", "0015657322ff", 0,
			"http://prov.example/0015657322ff/\n", []string{"policy: deny_macs: no entry matches", "policy: allow_macs: 001565 matches", "decided by: default"}},
		{"observe", resolveDefault + "[policy]\nunknown = \"observe\"\n", "0015657322ff", 1, "",
			[]string{"policy: unknown = observe", "decided by: policy (unknown = observe): this phone would be observed, not answered"}},
		{"observe with a rule", resolveDefault + rule + "[policy]\nunknown = \"observe\"\n", "0015657322ff", 0,
			"http://prov.example/rule/\n", []string{"decided by: rule 1"}},
		{"defaults", resolveDefault, "0015657322ff", 0, "http://prov.example/0015657322ff/\n",
			[]string{"policy: contact_is_source: checked on live SUBSCRIBEs", "policy: source_rate 10/10s, mac_rate 10/10s"}},
		{"neighbor_check", resolveDefault + "[policy]\nneighbor_check = true\n", "0015657322ff", 0, "http://prov.example/0015657322ff/\n",
			[]string{"policy: neighbor_check: the kernel's neighbour entry of the source must hold 0015657322ff"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := writeConfig(t, tt.config)
			code, out, errs := polExec(t, "resolve", "-config", cfg, "-mac", tt.mac)
			if code != tt.code || out != tt.stdout {
				t.Errorf("exit %d stdout %q, want %d %q\nstderr:\n%s", code, out, tt.code, tt.stdout, errs)
			}
			for _, s := range tt.stderrHave {
				if !strings.Contains(errs, s) {
					t.Errorf("stderr lacks %q:\n%s", s, errs)
				}
			}
		})
	}
}
