package netio

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv4"
)

// In packet mode the host's IP stack has not joined the group, so it sends
// no IGMP for it; snooping switches would then stop forwarding the group
// to this port. igmpMember sends the membership reports itself, as a host
// that joined would (RFC 2236, RFC 3376 host side, simplified: one group,
// no sources): an unsolicited report at the start and once more a second
// later, a report in answer to every general or group query within the
// query's maximum response time, in the querier's version, and a leave at
// the end.

// IGMP message types.
const (
	igmpQuery    = 0x11
	igmpV1Report = 0x12
	igmpV2Report = 0x16
	igmpV2Leave  = 0x17
	igmpV3Report = 0x22
)

// IGMPv3 group record types.
const (
	recModeIsExclude     = 2 // answer to a query: "I want all sources"
	recChangeToInclude   = 3 // leave
	recChangeToExclude   = 4 // join
	unsolicitedInterval  = time.Second
	olderQuerierTimeout  = 260 * time.Second // robustness 2 × query interval 125 s + 10 s
	defaultQueryResponse = 10 * time.Second
)

var (
	allRouters = netip.AddrFrom4([4]byte{224, 0, 0, 2})
	igmpV3Dst  = netip.AddrFrom4([4]byte{224, 0, 0, 22})
	// routerAlert is the IP option every IGMP message carries (RFC 2113).
	routerAlert = []byte{0x94, 0x04, 0x00, 0x00}
)

type igmpIface struct {
	index int
	name  string
	addr  netip.Addr
	// older is the version of an IGMPv1 or v2 querier heard, until
	// olderUntil; after that, v3.
	older      int
	olderUntil time.Time
	due        *time.Timer // the pending report, nil when none
	dueAt      time.Time
}

type igmpMember struct {
	group netip.Addr
	conn  *ipv4.RawConn
	log   *slog.Logger

	mu     sync.Mutex
	ifaces map[int]*igmpIface
	closed bool
	sent   int
}

// newIGMP opens the raw IGMP socket that sends the reports; it needs
// CAP_NET_RAW. add makes each interface a member.
func newIGMP(group netip.Addr, log *slog.Logger) (*igmpMember, error) {
	c, err := net.ListenPacket("ip4:2", "0.0.0.0")
	if err != nil {
		return nil, fmt.Errorf("netio: IGMP socket (needs CAP_NET_RAW): %w", err)
	}
	rc, err := ipv4.NewRawConn(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("netio: IGMP socket: %w", err)
	}
	// Our own reports must not come back to this host.
	_ = rc.SetMulticastLoopback(false)
	// The socket only sends: a raw IGMP socket would queue every IGMP
	// message the host receives (the queries reach pnpd on the packet
	// sockets).
	dropAll, err := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})
	if err == nil {
		err = rc.SetBPF(dropAll)
	}
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("netio: IGMP socket filter: %w", err)
	}
	return &igmpMember{group: group, conn: rc, log: log, ifaces: map[int]*igmpIface{}}, nil
}

// add makes the host a member on ifc's interface: it sends the
// unsolicited report now and once more after a second, as a joining host
// does. An interface of the same index held before is replaced (its
// address changed).
func (m *igmpMember) add(ifc *Iface) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	if old := m.ifaces[ifc.index]; old != nil && old.due != nil {
		old.due.Stop()
	}
	i := &igmpIface{index: ifc.index, name: ifc.name, addr: ifc.prefix.Addr()}
	m.ifaces[i.index] = i
	m.report(i, recChangeToExclude)
	m.schedule(i, unsolicitedInterval, recChangeToExclude)
}

// remove ends the membership on interface index; with leave it sends the
// leave first (pointless on an interface deleted or down).
func (m *igmpMember) remove(index int, leave bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.ifaces[index]
	if !ok || m.closed {
		return
	}
	if i.due != nil {
		i.due.Stop()
		i.due = nil
	}
	if leave {
		m.report(i, recChangeToInclude)
	}
	delete(m.ifaces, index)
}

// schedule arranges a report on i after d unless one is due sooner.
// Called with m.mu held.
func (m *igmpMember) schedule(i *igmpIface, d time.Duration, rec byte) {
	at := time.Now().Add(d)
	if i.due != nil {
		if !i.dueAt.After(at) {
			return
		}
		i.due.Stop()
	}
	i.dueAt = at
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		m.mu.Lock() // held by our caller until i.due is t
		defer m.mu.Unlock()
		if i.due == t {
			i.due = nil
		}
		// i may have been removed, or replaced, since.
		if !m.closed && m.ifaces[i.index] == i {
			m.report(i, rec)
		}
	})
	i.due = t
}

// query handles an IGMP message that arrived on interface index (the
// packet filter passes those sent to the group or to 224.0.0.1); only
// queries matter.
func (m *igmpMember) query(index int, b []byte) {
	if len(b) < 8 || b[0] != igmpQuery || checksum(b) != 0 {
		return
	}
	group := netip.AddrFrom4([4]byte(b[4:8]))
	if !group.IsUnspecified() && group != m.group {
		return
	}
	version, maxResp := 3, time.Duration(0)
	switch {
	case len(b) == 8 && b[1] == 0:
		version, maxResp = 1, defaultQueryResponse
	case len(b) == 8:
		version, maxResp = 2, time.Duration(b[1])*100*time.Millisecond
	case len(b) >= 12:
		maxResp = v3MaxResp(b[1])
	default:
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.ifaces[index]
	if !ok || m.closed {
		return
	}
	if version < 3 {
		i.older, i.olderUntil = version, time.Now().Add(olderQuerierTimeout)
	}
	var d time.Duration
	if maxResp > 0 {
		d = rand.N(maxResp)
	}
	m.log.Debug("igmp query", "iface", i.name, "version", version, "group", group.String(), "answer_in", d.String())
	m.schedule(i, d, recModeIsExclude)
}

// v3MaxResp decodes an IGMPv3 Max Resp Code (RFC 3376 4.1.1), in tenths
// of a second.
func v3MaxResp(code byte) time.Duration {
	tenths := int(code)
	if code >= 128 {
		mant, exp := int(code&0x0f), int(code>>4&0x07)
		tenths = (mant | 0x10) << (exp + 3)
	}
	return time.Duration(tenths) * 100 * time.Millisecond
}

// version is the IGMP version to speak on i. Called with m.mu held.
func (i *igmpIface) version() int {
	if i.older != 0 && time.Now().Before(i.olderUntil) {
		return i.older
	}
	return 3
}

// report sends one membership report (or, with recChangeToInclude, a
// leave) on i. Called with m.mu held.
func (m *igmpMember) report(i *igmpIface, rec byte) {
	var msg []byte
	dst := m.group
	g := m.group.As4()
	switch v := i.version(); {
	case v == 1 && rec == recChangeToInclude:
		return // IGMPv1 has no leave
	case v == 1:
		msg = []byte{igmpV1Report, 0, 0, 0, g[0], g[1], g[2], g[3]}
	case v == 2 && rec == recChangeToInclude:
		msg, dst = []byte{igmpV2Leave, 0, 0, 0, g[0], g[1], g[2], g[3]}, allRouters
	case v == 2:
		msg = []byte{igmpV2Report, 0, 0, 0, g[0], g[1], g[2], g[3]}
	default:
		msg = []byte{igmpV3Report, 0, 0, 0, 0, 0, 0, 1, rec, 0, 0, 0, g[0], g[1], g[2], g[3]}
		dst = igmpV3Dst
	}
	binary.BigEndian.PutUint16(msg[2:4], checksum(msg))
	h := &ipv4.Header{
		Version: ipv4.Version, Len: ipv4.HeaderLen + len(routerAlert), TOS: 0xc0,
		TotalLen: ipv4.HeaderLen + len(routerAlert) + len(msg), TTL: 1, Protocol: protoIGMP,
		Src: i.addr.AsSlice(), Dst: dst.AsSlice(), Options: routerAlert,
	}
	if err := m.conn.WriteTo(h, msg, &ipv4.ControlMessage{IfIndex: i.index}); err != nil {
		m.log.Warn("igmp report not sent", "iface", i.name, "err", err)
		return
	}
	m.sent++
	m.log.Debug("igmp report sent", "iface", i.name, "type", fmt.Sprintf("%#x", msg[0]), "to", dst.String())
}

// close sends the leave on every interface, stops the timers and closes
// the socket.
func (m *igmpMember) close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	for _, i := range m.ifaces {
		if i.due != nil {
			i.due.Stop()
		}
		m.report(i, recChangeToInclude)
	}
	m.closed = true
	return m.conn.Close()
}
