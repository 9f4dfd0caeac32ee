package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/pnpd/pnpd/pkg/netio"
	"github.com/pnpd/pnpd/pkg/netns"
	"github.com/pnpd/pnpd/pkg/phone"
	"github.com/pnpd/pnpd/pkg/simulate"
	"github.com/pnpd/pnpd/sip"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Timers of the phones' SUBSCRIBE client transactions (RFC 3261 17.1.2):
// retransmitted after T1, doubling up to T2, given up after Timer F.
const (
	t1     = 500 * time.Millisecond
	t2     = 4 * time.Second
	timerF = 64 * t1
	// tick is how often the driver looks for phones due to start or to
	// retransmit when nothing else wakes it.
	tick = time.Millisecond
	// phoneRecvBuffer is the phones' receive buffer: large, so that the
	// drops counted are the responder's.
	phoneRecvBuffer = 16 << 20
)

// brands are the brands a fleet cycles through: every brand whose SUBSCRIBE
// carries the phone's MAC (AudioCodes' carries none).
var brands = []string{
	phone.BrandYealink, phone.BrandGrandstream, phone.BrandSnom, phone.BrandGigaset,
	phone.BrandHtek, phone.BrandFanvil, phone.BrandPanasonic,
}

// member is one simulated phone and what happened to it. Times are
// nanoseconds since the fleet's epoch; 0 means "not yet".
type member struct {
	addr  netip.Addr
	oob   []byte // IP_PKTINFO: send from addr, out of the link
	pkt   simulate.Packet
	brand string

	sent     int64 // first SUBSCRIBE
	final    int64 // first final response to the SUBSCRIBE
	code     int   // its status
	notify   int64 // first NOTIFY
	answered int64 // our 200 to the first NOTIFY sent
	sends    int   // SUBSCRIBE transmissions
	notifies int   // NOTIFYs received, retransmissions included
	withURL  bool  // the first NOTIFY had a body
	done     bool
	gaveUp   bool // Timer F fired before a final response
}

// Fleet is a population of simulated phones in one network namespace, each
// with its own IPv4 address (the addresses must be local there, e.g. through
// a local route) and its brand's source port, all sent from and received on
// a few sockets. It is not a phone simulator for correctness
// (pkg/simulate is); it answers every NOTIFY with a 200 built from its
// headers and records when things happened.
type Fleet struct {
	ns      *netns.NS
	ifindex int
	conns   map[int]*net.UDPConn // by local port
	epoch   time.Time

	mu       sync.Mutex
	members  []member
	byCallID map[string]int32
	phase    *phaseState // the phase running, or nil
}

// NewFleet makes n phones with addresses from first on (consecutive) in ns,
// brands in turn, MACs distinct (the brand's block, then the phone's index),
// sending out of the interface ifname. The sockets are bound in ns.
func NewFleet(ns *netns.NS, ifname string, first netip.Addr, n int) (*Fleet, error) {
	if n <= 0 || n > 1<<20 {
		return nil, fmt.Errorf("bench: fleet of %d phones: want 1 to %d", n, 1<<20)
	}
	ifi, err := ns.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("bench: phones' interface: %w", err)
	}
	f := &Fleet{
		ns: ns, ifindex: ifi.Index, conns: map[int]*net.UDPConn{},
		members: make([]member, n), byCallID: make(map[string]int32, n),
		epoch: time.Now().Round(0),
	}
	addr := first
	for i := range f.members {
		if !addr.Is4() {
			f.Close()
			return nil, fmt.Errorf("bench: %d phones from %s run out of IPv4 addresses", n, first)
		}
		brand := brands[i%len(brands)]
		mac := fmt.Sprintf("%s%06x", simulate.OUI(brand), i)
		pkt, err := simulate.NewSubscribe(brand, addr, mac)
		if err != nil {
			f.Close()
			return nil, err
		}
		if _, dup := f.byCallID[pkt.CallID]; dup {
			// The brands' Call-IDs are random; a clash would mix up two
			// phones' results.
			f.Close()
			return nil, fmt.Errorf("bench: two phones drew Call-ID %q", pkt.CallID)
		}
		f.byCallID[pkt.CallID] = int32(i)
		f.members[i] = member{
			addr: addr, pkt: pkt, brand: brand,
			oob: (&ipv4.ControlMessage{Src: addr.AsSlice(), IfIndex: ifi.Index}).Marshal(),
		}
		if f.conns[pkt.Port] == nil {
			c, err := f.listen(pkt.Port)
			if err != nil {
				f.Close()
				return nil, err
			}
			f.conns[pkt.Port] = c
		}
		addr = addr.Next()
	}
	for _, c := range f.conns {
		go f.receive(c)
	}
	return f, nil
}

// listen opens the socket of one source port in the fleet's namespace.
func (f *Fleet) listen(port int) (*net.UDPConn, error) {
	c, err := f.ns.ListenUDP("udp4", &net.UDPAddr{Port: port})
	if err != nil {
		return nil, fmt.Errorf("bench: phones' socket on port %d: %w", port, err)
	}
	p := ipv4.NewPacketConn(c)
	_ = p.SetMulticastLoopback(false)
	_ = p.SetMulticastTTL(1)
	netio.SetRecvBuffer(c, phoneRecvBuffer)
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		// The kernel stamps each datagram as it reaches the socket: the
		// latencies are the responder's and the link's, not the time this
		// process takes to wake up and read.
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	})
	if err = errors.Join(err, serr); err != nil {
		c.Close()
		return nil, fmt.Errorf("bench: SO_TIMESTAMPNS on the phones' socket: %w", err)
	}
	return c, nil
}

// Close closes the sockets; the receivers end.
func (f *Fleet) Close() {
	for _, c := range f.conns {
		c.Close()
	}
}

// now is the time since the epoch on the wall clock, the clock of the
// kernel's arrival stamps (a monotonic reading would drift from them when
// the clock is slewed).
func (f *Fleet) now() int64 { return int64(time.Now().Round(0).Sub(f.epoch)) }

// arrival is when a datagram reached the socket, from its SCM_TIMESTAMPNS
// (the wall clock), or now when it has none.
func (f *Fleet) arrival(oob []byte) int64 {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err == nil {
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
				ts := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
				return int64(time.Unix(ts.Unix()).Sub(f.epoch))
			}
		}
	}
	return f.now()
}

// receive reads one socket until it is closed.
func (f *Fleet) receive(c *net.UDPConn) {
	buf := make([]byte, 65536)
	oob := make([]byte, 128)
	out := make([]byte, 0, 2048)
	var m sip.Message
	var b sip.Builder
	for {
		n, oobn, _, src, err := c.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		at := f.arrival(oob[:oobn])
		if m.Parse(buf[:n]) != nil {
			continue // not SIP: not for a phone of ours
		}
		f.mu.Lock()
		i, ok := f.byCallID[string(m.Get(sip.HdrCallID))]
		if !ok || f.phase == nil || int(i) < f.phase.first || int(i) >= f.phase.end {
			f.mu.Unlock()
			continue
		}
		ph := &f.members[i]
		if !m.IsRequest() {
			f.response(ph, &m, at)
			f.mu.Unlock()
			continue
		}
		if !bytes.Equal(m.Method, []byte("NOTIFY")) {
			f.mu.Unlock()
			continue
		}
		ph.notifies++
		if ph.notify == 0 {
			ph.notify = at
			ph.withURL = len(bytes.TrimSpace(m.Body)) > 0
		}
		oob, ps := ph.oob, f.phase
		f.mu.Unlock()

		out = notifyOK(&b, out, &m)
		_, _, err = c.WriteMsgUDPAddrPort(out, oob, src)
		if err == nil {
			f.mu.Lock()
			// The first 200 that left, in the phase that received the
			// NOTIFY (the driver may have moved on meanwhile).
			if ph.answered == 0 && f.phase == ps {
				ph.answered = f.now()
				f.check(ph)
			}
			f.mu.Unlock()
		}
	}
}

// response records a response to a phone's SUBSCRIBE. f.mu is held.
func (f *Fleet) response(ph *member, m *sip.Message, at int64) {
	_, method, err := sip.ParseCSeq(m.Get(sip.HdrCSeq))
	if err != nil || !bytes.Equal(method, []byte("SUBSCRIBE")) {
		return
	}
	if m.StatusCode < 200 || ph.final != 0 {
		return
	}
	ph.final, ph.code = at, m.StatusCode
	f.check(ph)
}

// check marks the phone done when the phase needs nothing more of it.
// f.mu is held.
func (f *Fleet) check(ph *member) {
	ps := f.phase
	if ph.done || ps == nil || ph.final == 0 {
		return
	}
	if ps.notify && ph.code < 300 && ph.answered == 0 {
		return
	}
	f.settle(ph)
}

// settle takes the phone out of the running phase: done, or given up.
// f.mu is held.
func (f *Fleet) settle(ph *member) {
	ps := f.phase
	if ph.done || ps == nil {
		return
	}
	ph.done = true
	ps.done++
	ps.lastDone = f.now()
	select {
	case ps.wake <- struct{}{}:
	default:
	}
}

// notifyOK builds the 200 to a NOTIFY from its Via, From, To, Call-ID and
// CSeq, into out.
func notifyOK(b *sip.Builder, out []byte, m *sip.Message) []byte {
	b.Reset(out)
	b.StatusLine(200, "OK")
	for _, h := range m.Headers {
		switch h.ID {
		case sip.HdrVia, sip.HdrFrom, sip.HdrTo, sip.HdrCallID, sip.HdrCSeq:
			b.Header(h.ID.String(), h.Value)
		}
	}
	return b.Body("", nil)
}

// Phase is one round of a fleet against a responder.
type Phase struct {
	// First and Count choose the phones: First to First+Count-1. A phone
	// sends the same SUBSCRIBE (same branch and Call-ID) in every phase, so
	// each phase needs a responder that has not seen it yet.
	First, Count int
	// Target is where the SUBSCRIBEs go (the group and port).
	Target netip.AddrPort
	// Offer spreads the first SUBSCRIBEs evenly over this long (an open
	// loop, as phones booting after a power cut). With Offer 0, Outstanding
	// phones at most are between their first SUBSCRIBE and done (a closed
	// loop, for saturation and for single phones).
	Offer       time.Duration
	Outstanding int
	// Gap is a pause after each phone is done, in a closed loop.
	Gap time.Duration
	// Notify: a phone is done when it has its final response and, unless
	// the response is an error, has answered its first NOTIFY. Without it,
	// the final response is enough (Asterisk's 401).
	Notify bool
	// Deadline bounds the phase.
	Deadline time.Duration
}

type phaseState struct {
	first, end int
	notify     bool
	done       int
	lastDone   int64
	wake       chan struct{}
}

// Outcome is what one phase saw, from the phones' side.
type Outcome struct {
	Phones    int
	Done      int             // phones done as the phase required
	Codes     map[int]int     // final responses to the SUBSCRIBEs by status
	Latencies []time.Duration // first SUBSCRIBE sent -> final response, sorted
	// Notified counts phones that received a NOTIFY; WithURL those whose
	// first NOTIFY had a body.
	Notified, WithURL int
	Sends             int // SUBSCRIBE transmissions (Phones of them were first ones)
	Notifies          int // NOTIFYs received, retransmissions included
	GaveUp            int // phones whose SUBSCRIBE Timer F fired
	// Start is when the first SUBSCRIBE left, End when the last phone was
	// done (or the phase stopped); LastNotified when the last phone sent
	// its 200 to the NOTIFY.
	Start, End, LastNotified time.Time
}

// Retransmissions is the number of repeated SUBSCRIBEs.
func (o Outcome) Retransmissions() int { return o.Sends - o.Phones }

// Run runs one phase and returns what the phones saw.
func (f *Fleet) Run(ctx context.Context, p Phase) (Outcome, error) {
	if p.Count <= 0 || p.First < 0 || p.First+p.Count > len(f.members) {
		return Outcome{}, fmt.Errorf("bench: phase of phones %d..%d: the fleet has %d", p.First, p.First+p.Count-1, len(f.members))
	}
	if p.Offer == 0 && p.Outstanding <= 0 {
		return Outcome{}, errors.New("bench: a phase needs Offer or Outstanding")
	}
	if p.Deadline <= 0 {
		return Outcome{}, errors.New("bench: a phase needs a Deadline")
	}
	ps := &phaseState{first: p.First, end: p.First + p.Count, notify: p.Notify, wake: make(chan struct{}, 1)}
	f.mu.Lock()
	if f.phase != nil {
		f.mu.Unlock()
		return Outcome{}, errors.New("bench: a phase runs already")
	}
	// A phone may take part in several phases, each against a responder
	// of its own: forget what it saw before.
	for i := ps.first; i < ps.end; i++ {
		ph := &f.members[i]
		*ph = member{addr: ph.addr, oob: ph.oob, pkt: ph.pkt, brand: ph.brand}
	}
	f.phase = ps
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.phase = nil
		f.mu.Unlock()
	}()

	ctx, cancel := context.WithTimeout(ctx, p.Deadline)
	defer cancel()
	dst := net.UDPAddrFromAddrPort(p.Target).AddrPort()
	// One FIFO per retransmission: the phones in it were queued in the
	// order they become due.
	var queues [][]int32
	next := p.First
	start := f.now()
	timer := time.NewTimer(tick)
	defer timer.Stop()
	var sendErr error
	for {
		now := f.now()
		f.mu.Lock()
		// Phones to start.
		for next < ps.end {
			if p.Offer > 0 {
				if start+int64(p.Offer)*int64(next-p.First)/int64(p.Count) > now {
					break
				}
			} else if next-p.First-ps.done >= p.Outstanding {
				break
			} else if p.Gap > 0 && ps.done > 0 && now < ps.lastDone+int64(p.Gap) {
				break
			}
			ph := &f.members[next]
			ph.sent, ph.sends = f.now(), 1
			if len(queues) == 0 {
				queues = append(queues, nil)
			}
			queues[0] = append(queues[0], int32(next))
			next++
			if err := f.send(ph, dst); err != nil && sendErr == nil {
				sendErr = err
			}
		}
		// Retransmissions.
		for k := 0; k < len(queues); k++ {
			q := queues[k]
			interval := min(t1<<k, t2)
			var n int
			for n = 0; n < len(q); n++ {
				ph := &f.members[q[n]]
				if ph.final != 0 {
					continue
				}
				if ph.sent+int64(timerF) <= now {
					// Timer F: the phone gives up, and frees its place
					// in a closed loop.
					ph.gaveUp = true
					f.settle(ph)
					continue
				}
				if lastSend(ph, k)+int64(interval) > now {
					break
				}
				ph.sends++
				if k+1 == len(queues) {
					queues = append(queues, nil)
				}
				queues[k+1] = append(queues[k+1], q[n])
				if err := f.send(ph, dst); err != nil && sendErr == nil {
					sendErr = err
				}
			}
			queues[k] = q[n:]
		}
		finished := ps.done == p.Count
		f.mu.Unlock()
		if finished {
			break
		}
		timer.Reset(tick)
		select {
		case <-ctx.Done():
			return f.outcome(ps, p), errors.Join(ctx.Err(), sendErr)
		case <-ps.wake:
		case <-timer.C:
		}
	}
	return f.outcome(ps, p), sendErr
}

// lastSend is when the phone's k-th retransmission schedule started: the
// SUBSCRIBE before the one due now was sent at sent + T1*(2^k - 1), capped
// like the intervals.
func lastSend(ph *member, k int) int64 {
	at := ph.sent
	for j := 0; j < k; j++ {
		at += int64(min(t1<<j, t2))
	}
	return at
}

// send sends the phone's SUBSCRIBE from its address and port. f.mu is held;
// sending under it keeps the order simple, and a send takes microseconds.
func (f *Fleet) send(ph *member, dst netip.AddrPort) error {
	_, _, err := f.conns[ph.pkt.Port].WriteMsgUDPAddrPort(ph.pkt.Raw, ph.oob, dst)
	if err != nil {
		return fmt.Errorf("bench: sending from %s: %w", ph.addr, err)
	}
	return nil
}

func (f *Fleet) outcome(ps *phaseState, p Phase) Outcome {
	f.mu.Lock()
	defer f.mu.Unlock()
	o := Outcome{Phones: p.Count, Codes: map[int]int{}}
	var first, last, lastNotified int64 = -1, 0, 0
	for i := ps.first; i < ps.end; i++ {
		ph := &f.members[i]
		o.Sends += ph.sends
		o.Notifies += ph.notifies
		if ph.gaveUp {
			o.GaveUp++
		} else if ph.done {
			o.Done++
		}
		if ph.sent != 0 && (first < 0 || ph.sent < first) {
			first = ph.sent
		}
		if ph.final != 0 {
			o.Codes[ph.code]++
			o.Latencies = append(o.Latencies, time.Duration(ph.final-ph.sent))
			last = max(last, ph.final)
		}
		if ph.notify != 0 {
			o.Notified++
			if ph.withURL {
				o.WithURL++
			}
		}
		if ph.answered != 0 {
			last = max(last, ph.answered)
			lastNotified = max(lastNotified, ph.answered)
		}
	}
	slices.Sort(o.Latencies)
	at := func(ns int64) time.Time { return f.epoch.Add(time.Duration(ns)) }
	if first >= 0 {
		o.Start = at(first)
	}
	o.End = at(last)
	if lastNotified > 0 {
		o.LastNotified = at(lastNotified)
	}
	return o
}
