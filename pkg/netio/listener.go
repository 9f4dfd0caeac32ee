package netio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultRecvBuffer is the receive buffer asked for on every socket: a boot
// storm sends thousands of SUBSCRIBEs within a second.
const DefaultRecvBuffer = 4 << 20

// maxDatagram is the largest UDP payload read.
const maxDatagram = 65535

// Config says what to listen on. The zero value of each optional field
// takes its documented default; Listen does not modify the Config.
type Config struct {
	Mode       Mode           // ModeBind (also for ""), ModeRaw or ModePacket
	Group      netip.AddrPort // required: an IPv4 multicast address and port
	Interfaces []Candidate    // required: from Choose
	Port       int            // unicast port on each interface; 0: kernel's choice
	RecvBuffer int            // bytes; 0: DefaultRecvBuffer
	// Priority, when above 0, is the SCHED_RR priority of the threads that
	// read the group and send the 200 (1 to 99; see recv.go). It needs
	// CAP_SYS_NICE or an RLIMIT_RTPRIO of at least Priority; without
	// either the threads keep the normal policy (a warning in raw mode,
	// where it matters). A reader whose queue stays full yields to the
	// normal policy until it drains (overloadAfter in recv.go).
	Priority int
	// Watch makes the Listener follow the interfaces while it serves: when
	// the kernel reports a link or IPv4 address change (and every
	// recheckEvery in case a report was lost), it applies the rule of
	// Choose(Names) again, joins the group on interfaces that became
	// usable (created after start, deleted and created again, up again, a
	// new address) and lets go of those that are no longer (deleted, down,
	// address removed or changed). None left is not an error: the
	// Listener waits for one. Without Watch the interfaces stay as Listen
	// found them; a deleted one is never joined again.
	Watch bool
	// Names are the configured interface names Interfaces was chosen
	// with (empty: Choose's default), for Watch to apply the same rule. A
	// named interface that vanishes is dropped, with a warning, and taken
	// again when it is back.
	Names []string
	// OnChange, when not nil, is called after each change Watch made,
	// with the full new list (possibly empty), e.g. to update the subnets
	// answered. Calls come one at a time from the watching goroutine; it
	// must not block long, as the next change waits for it, and it must
	// not call Close and then wait for Serve to return.
	OnChange func(ifaces []*Iface)
	Logger   *slog.Logger // nil: discard
}

// Datagram is one received datagram. Data is valid only during the
// handler call; a handler that keeps any of it must copy it.
type Datagram struct {
	Data  []byte
	Src   netip.AddrPort
	Group bool   // sent to the group (else: unicast to Iface's address)
	Iface *Iface // where it arrived; answers leave from it
}

// Handler receives datagrams. HandleDatagram is called from one goroutine
// per socket; it must not block for long, or the socket's buffer fills.
type Handler interface {
	HandleDatagram(d Datagram)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(d Datagram)

// HandleDatagram calls f.
func (f HandlerFunc) HandleDatagram(d Datagram) { f(d) }

// Iface is one chosen interface and its unicast socket. The Listener
// closes an Iface when the interface goes away (Config.Watch) or at Close;
// its Send then fails with ErrIfaceGone, so a transaction that still holds
// it gets an error, never a panic.
type Iface struct {
	name   string
	index  int
	prefix netip.Prefix
	local  netip.AddrPort
	conn   *net.UDPConn
	// pkt is packet mode's group socket on this interface; nil in the
	// other modes.
	pkt  *sockReader
	gone atomic.Bool
}

// Name is the interface's name.
func (i *Iface) Name() string { return i.name }

// Index is the interface's index.
func (i *Iface) Index() int { return i.index }

// Prefix is the interface's IPv4 address and subnet.
func (i *Iface) Prefix() netip.Prefix { return i.prefix }

// Addr is the unicast socket's address: answers leave from it, and the
// Via and Contact of what pnpd sends name it.
func (i *Iface) Addr() netip.AddrPort { return i.local }

// Send writes one datagram to dst from the interface's unicast socket.
// On an interface the Listener let go of, it returns an error wrapping
// ErrIfaceGone.
func (i *Iface) Send(b []byte, dst netip.AddrPort) error {
	if _, err := i.conn.WriteToUDPAddrPort(b, dst); err != nil {
		// Looked at only after a failure: nothing added to a send that
		// works.
		if i.gone.Load() {
			return fmt.Errorf("netio: send on %s to %s: %w", i.name, dst, ErrIfaceGone)
		}
		return fmt.Errorf("netio: send on %s to %s: %w", i.name, dst, err)
	}
	return nil
}

// candidate is the Candidate i was opened for.
func (i *Iface) candidate() Candidate {
	return Candidate{Name: i.name, Index: i.index, Prefix: i.prefix}
}

// close marks i gone and closes its sockets; packet mode's group socket
// is closed by its reader, within readPoll.
func (i *Iface) close() error {
	i.gone.Store(true)
	if i.pkt != nil {
		i.pkt.close()
	}
	return i.conn.Close()
}

// ifaceSet is the interfaces held at one time. It is never modified:
// a change stores a new one, so that the group readers look an arrival
// interface up with one atomic load and no lock.
type ifaceSet struct {
	list  []*Iface // in the order of the choice
	byIdx map[int]*Iface
}

func newIfaceSet(list []*Iface) *ifaceSet {
	s := &ifaceSet{list: list, byIdx: make(map[int]*Iface, len(list))}
	for _, i := range list {
		s.byIdx[i.index] = i
	}
	return s
}

// Listener holds the group socket (or, in packet mode, one packet socket
// per interface) and the unicast sockets.
type Listener struct {
	mode  Mode
	group netip.AddrPort
	port  int // unicast port, 0: kernel's choice
	// rcvbuf is the receive buffer asked for on every socket.
	rcvbuf int
	// priority is the readers' SCHED_RR priority, 0 for none.
	priority int
	log      *slog.Logger

	// set is what the readers look interfaces up in; replaced, never
	// modified, under mu.
	set atomic.Pointer[ifaceSet]

	mu sync.Mutex // guards what follows, and replacing set
	// shared is the group socket of bind and raw mode; nil in packet
	// mode.
	shared  *sockReader
	igmp    *igmpMember // packet
	h       Handler     // Serve's; nil before Serve
	closed  bool
	closing chan struct{} // closed by Close
	// wg counts Serve's goroutines. The watcher is one of them while it
	// runs, and it alone adds readers, so the count never comes back to
	// zero and goes up again.
	wg       sync.WaitGroup
	closeErr error

	w *watcher // nil without Config.Watch

	dropped atomic.Int64
}

// Listen opens the unicast socket of every interface of cfg and receives
// the group in cfg.Mode: it binds the group address and joins the group
// (bind), or opens a filtered raw UDP socket and joins the group on the
// unicast sockets (raw), or opens a packet socket per interface with a
// link-layer membership and sends the IGMP reports itself (packet). Raw
// and packet need CAP_NET_RAW.
func Listen(cfg Config) (_ *Listener, err error) {
	if !cfg.Group.Addr().Is4() || !cfg.Group.Addr().IsMulticast() {
		return nil, fmt.Errorf("netio: group %s is not an IPv4 multicast address", cfg.Group)
	}
	if len(cfg.Interfaces) == 0 {
		return nil, ErrNoInterface
	}
	mode := cfg.Mode
	switch mode {
	case "":
		mode = ModeBind
	case ModeBind:
	case ModeRaw, ModePacket:
		if cfg.Port == int(cfg.Group.Port()) {
			return nil, fmt.Errorf("netio: %s mode must not hold the group's port %d: use another unicast port, or 0", mode, cfg.Port)
		}
	default:
		return nil, fmt.Errorf("netio: mode %q: want bind, raw or packet (ChooseMode resolves auto)", mode)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rcvbuf := cfg.RecvBuffer
	if rcvbuf <= 0 {
		rcvbuf = DefaultRecvBuffer
	}
	if cfg.Priority < 0 || cfg.Priority > 99 {
		return nil, fmt.Errorf("netio: priority %d: want 0 (none) or 1 to 99", cfg.Priority)
	}
	l := &Listener{mode: mode, group: cfg.Group, port: cfg.Port, rcvbuf: rcvbuf, log: log, priority: cfg.Priority,
		closing: make(chan struct{})}
	l.set.Store(newIfaceSet(nil))
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	var ifaces []*Iface
	for _, c := range cfg.Interfaces {
		ifc, err := l.openIface(c)
		if err != nil {
			return nil, err
		}
		ifaces = append(ifaces, ifc)
		l.set.Store(newIfaceSet(ifaces))
	}
	switch mode {
	case ModeBind:
		err = l.listenBind()
	case ModeRaw:
		err = l.listenRaw()
	case ModePacket:
		err = l.listenPacket()
	}
	if err != nil {
		return nil, err
	}
	for _, ifc := range ifaces {
		if err := l.joinIface(ifc); err != nil {
			return nil, err
		}
	}
	if cfg.Watch {
		l.w = newWatcher(cfg.Names, cfg.OnChange, log)
	}
	for _, ifc := range ifaces {
		log.Info("receiving the group", "mode", string(mode), "iface", ifc.name, "group", cfg.Group.String(), "addr", ifc.local.String())
	}
	return l, nil
}

// openIface opens the unicast socket on c's address.
func (l *Listener) openIface(c Candidate) (*Iface, error) {
	uc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.Prefix.Addr(), uint16(l.port))))
	if err != nil {
		return nil, fmt.Errorf("netio: unicast socket on %s (%s port %d): %w", c.Name, c.Prefix.Addr(), l.port, err)
	}
	SetRecvBuffer(uc, l.rcvbuf)
	return &Iface{name: c.Name, index: c.Index, prefix: c.Prefix, conn: uc,
		local: netip.AddrPortFrom(c.Prefix.Addr(), uint16(uc.LocalAddr().(*net.UDPAddr).Port))}, nil
}

// joinIface starts receiving the group on ifc, the mode's way: a
// membership on the group socket (bind) or on ifc's unicast socket (raw),
// or a packet socket of its own and the IGMP reports (packet).
func (l *Listener) joinIface(ifc *Iface) error {
	switch l.mode {
	case ModeBind:
		return join(l.shared.fd, l.group.Addr(), ifc)
	case ModeRaw:
		rc, err := ifc.conn.SyscallConn()
		if err != nil {
			return fmt.Errorf("netio: unicast socket on %s: %w", ifc.name, err)
		}
		var jerr error
		if err := rc.Control(func(fd uintptr) { jerr = join(int(fd), l.group.Addr(), ifc) }); err != nil {
			return fmt.Errorf("netio: unicast socket on %s: %w", ifc.name, err)
		}
		return jerr
	case ModePacket:
		fd, err := openPacket(ifc, l.group)
		if err != nil {
			return err
		}
		r, err := l.groupReader(fd, "packet "+ifc.name)
		if err != nil {
			return err
		}
		ifc.pkt = r
		l.igmp.add(ifc)
	}
	return nil
}

// leaveIface stops receiving the group on ifc and closes its sockets.
// leave says whether to tell the network (packet mode's IGMP leave):
// not on an interface that is deleted, down, or joined again at once.
func (l *Listener) leaveIface(ifc *Iface, leave bool) {
	switch l.mode {
	case ModeBind:
		// The socket's membership outlives a deleted interface, and a
		// socket may hold only igmp_max_memberships of them.
		if err := dropMembership(l.shared.fd, l.group.Addr(), ifc.index); err != nil {
			l.log.Debug("group membership not dropped", "iface", ifc.name, "index", ifc.index, "err", err)
		}
	case ModePacket:
		l.igmp.remove(ifc.index, leave)
	}
	// Raw mode's membership is on the unicast socket and ends with it.
	ifc.close()
}

// groupSocket is a socket that receives the group: in packet mode bound
// to one interface (ifc), else for all of them.
type groupSocket struct {
	r   *sockReader
	ifc *Iface
}

// groupReader takes fd (closed on error) as a group socket read by its
// own thread.
func (l *Listener) groupReader(fd int, name string) (*sockReader, error) {
	setRecvBufferFD(fd, l.rcvbuf)
	if got := recvBufferFD(fd); got > 0 && got < l.rcvbuf {
		// Without CAP_NET_ADMIN the kernel caps it at net.core.rmem_max.
		l.log.Warn("receive buffer smaller than asked: a boot storm may overflow it",
			"socket", name, "asked", l.rcvbuf, "granted", got, "hint", "raise net.core.rmem_max, or grant CAP_NET_ADMIN")
	}
	r, err := newSockReader(fd, name, l.log)
	if err != nil {
		return nil, err
	}
	r.priority, r.racing = l.priority, l.mode == ModeRaw
	return r, nil
}

// listenBind binds the group address; joinIface joins it on each
// interface.
func (l *Listener) listenBind() error {
	fd, err := bindGroup(l.group)
	if err != nil {
		return err
	}
	l.shared, err = l.groupReader(fd, "group "+l.group.String())
	return err
}

// listenRaw opens a raw UDP socket whose kernel filter passes only the
// group's datagrams; joinIface joins the group on the unicast sockets
// (which are not on the group's port, so they never receive the group
// themselves).
func (l *Listener) listenRaw() error {
	filter, err := groupFilter(l.group, false, false)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_UDP)
	if err != nil {
		return fmt.Errorf("netio: raw UDP socket (needs CAP_NET_RAW): %w", err)
	}
	if err := attachFilter(fd, filter); err != nil {
		unix.Close(fd)
		return err
	}
	// What arrived before the filter was attached.
	drain(fd)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1); err != nil {
		unix.Close(fd)
		return fmt.Errorf("netio: IP_PKTINFO: %w", err)
	}
	l.shared, err = l.groupReader(fd, "raw udp")
	return err
}

// drain reads and discards what a non-blocking socket holds.
func drain(fd int) {
	buf := make([]byte, maxDatagram)
	for {
		if _, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT); err != nil {
			return
		}
	}
}

// listenPacket opens the socket that sends the IGMP reports; joinIface
// opens a packet socket per interface. No socket joins the group, so the
// IP stack drops the group's datagrams and no other program on the host
// sees them.
func (l *Listener) listenPacket() error {
	m, err := newIGMP(l.group.Addr(), l.log)
	if err != nil {
		return err
	}
	l.igmp = m
	return nil
}

// join joins group on ifc's interface with socket fd (IP_ADD_MEMBERSHIP).
func join(fd int, group netip.Addr, ifc *Iface) error {
	mreq := &unix.IPMreqn{Multiaddr: group.As4(), Ifindex: int32(ifc.index)}
	if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreq); err != nil {
		return fmt.Errorf("netio: join %s on %s: %w", group, ifc.name, err)
	}
	return nil
}

// dropMembership ends socket fd's membership of group on interface index
// (IP_DROP_MEMBERSHIP); Linux finds it by index even when the interface
// was deleted.
func dropMembership(fd int, group netip.Addr, index int) error {
	mreq := &unix.IPMreqn{Multiaddr: group.As4(), Ifindex: int32(index)}
	if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_DROP_MEMBERSHIP, mreq); err != nil {
		return fmt.Errorf("netio: leave %s on interface %d: %w", group, index, err)
	}
	return nil
}

// bindGroup opens a UDP socket bound to the group address itself (not
// 0.0.0.0), so that it receives only datagrams sent to the group, with
// IP_PKTINFO on.
func bindGroup(group netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("netio: socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("netio: SO_REUSEADDR: %w", err)
	}
	// Only the group this socket joins, not every group the host joined.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("netio: IP_PKTINFO: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(group.Port()), Addr: group.Addr().As4()}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("netio: bind %s: %w", group, err)
	}
	return fd, nil
}

// SetRecvBuffer asks for n bytes of receive buffer on c, beyond
// net.core.rmem_max when the process may (CAP_NET_ADMIN), as pnpd's own
// sockets do.
func SetRecvBuffer(c *net.UDPConn, n int) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) { setRecvBufferFD(int(fd), n) })
}

// Interfaces returns the interfaces held now: at start those of the
// Config, in its order; with Config.Watch, in the order of the choice
// that made the last change.
func (l *Listener) Interfaces() []*Iface { return slices.Clone(l.set.Load().list) }

// Iface returns the interface held now with that index.
func (l *Listener) Iface(index int) (*Iface, bool) {
	i, ok := l.set.Load().byIdx[index]
	return i, ok
}

// Mode is how the Listener receives the group.
func (l *Listener) Mode() Mode { return l.mode }

// Serve reads every socket and hands each datagram to h until ctx is done
// or Close is called; then it closes the sockets and returns nil. With
// Config.Watch it also follows the interfaces. Serve may be called once.
func (l *Listener) Serve(ctx context.Context, h Handler) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	if l.h != nil {
		l.mu.Unlock()
		return errors.New("netio: Serve called twice")
	}
	l.h = h
	if l.shared != nil {
		l.startGroupReader(groupSocket{r: l.shared})
	}
	for _, ifc := range l.set.Load().list {
		l.startReaders(ifc)
	}
	if l.w != nil {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.watch()
		}()
	}
	l.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-l.closing:
	}
	l.Close()
	l.wg.Wait()
	return nil
}

// startReaders starts the goroutines that read ifc's sockets. Called with
// l.mu held, after Serve began and before Close.
func (l *Listener) startReaders(ifc *Iface) {
	if ifc.pkt != nil {
		l.startGroupReader(groupSocket{r: ifc.pkt, ifc: ifc})
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.readUnicast(ifc, l.h)
	}()
}

// startGroupReader starts the goroutine that reads gs. Called with l.mu
// held.
func (l *Listener) startGroupReader(gs groupSocket) {
	h := l.h
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		buf, oob := make([]byte, maxDatagram), make([]byte, 128)
		gs.r.serve(buf, oob, func(b, oob []byte, from unix.Sockaddr) { l.receive(h, gs, b, oob, from) })
	}()
}

// receive checks one datagram from a group socket and hands it to h.
func (l *Listener) receive(h Handler, gs groupSocket, b, oob []byte, from unix.Sockaddr) {
	switch l.mode {
	case ModeBind:
		sa, ok := from.(*unix.SockaddrInet4)
		if !ok {
			l.drop("not IPv4", "")
			return
		}
		src := netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
		ifindex, dst, ok := pktinfo(oob)
		ifc, why := l.accept(ifindex, netip.AddrFrom4(dst), ok)
		if why != "" {
			l.drop(why, src.String())
			return
		}
		h.HandleDatagram(Datagram{Data: b, Src: src, Group: true, Iface: ifc})
	case ModeRaw:
		// A raw IPv4 socket hands over the IP header too.
		pk, why := parseIPv4(b)
		if why != "" {
			l.drop(why, "")
			return
		}
		ifindex, _, ok := pktinfo(oob)
		ifc, why := l.accept(ifindex, pk.dst, ok)
		if why == "" && pk.proto != protoUDP {
			why = "not UDP"
		}
		l.deliver(h, ifc, pk, why)
	case ModePacket:
		if gs.ifc.gone.Load() {
			// The socket was let go of and its reader has not noticed yet
			// (up to readPoll). After a down/up the kernel hands it the
			// link's datagrams again, which the socket that replaced it
			// gets too: answered from here, an exchange would hold an
			// Iface that can no longer send.
			return
		}
		pk, why := parseIPv4(b)
		switch {
		case why != "":
		case pk.proto == protoIGMP:
			l.igmp.query(gs.ifc.index, pk.payload)
			return
		case pk.proto != protoUDP || pk.dst != l.group.Addr():
			why = "not UDP to the group"
		}
		l.deliver(h, gs.ifc, pk, why)
	}
}

// deliver hands a UDP datagram that passed the checks (why "") to h.
func (l *Listener) deliver(h Handler, ifc *Iface, pk ipv4Packet, why string) {
	if why != "" {
		l.drop(why, pk.src.String())
		return
	}
	sport, dport, data, why := parseUDP(pk.payload)
	if why == "" && dport != l.group.Port() {
		why = "another port"
	}
	if why != "" {
		l.drop(why, pk.src.String())
		return
	}
	h.HandleDatagram(Datagram{Data: data, Src: netip.AddrPortFrom(pk.src, sport), Group: true, Iface: ifc})
}

func (l *Listener) drop(why, src string) {
	l.dropped.Add(1)
	l.log.Debug("dropped", "reason", why, "src", src)
}

// accept checks where a group datagram arrived (IP_PKTINFO, ok false when
// there was none): on a chosen interface, sent to the group. Linux hands a
// group's datagrams to a socket bound to it whatever interface they came
// in on, once the host joined the group there.
func (l *Listener) accept(ifindex int, dst netip.Addr, ok bool) (*Iface, string) {
	if !ok {
		return nil, "no packet info"
	}
	ifc, chosen := l.set.Load().byIdx[ifindex]
	if !chosen {
		return nil, "interface not chosen"
	}
	if dst != l.group.Addr() {
		return nil, "not sent to the group"
	}
	return ifc, ""
}

// Dropped counts the datagrams that reached pnpd's group receiver and were
// refused there: arrived on an interface not chosen, not sent to the group
// and port, or (raw and packet) with a malformed IP or UDP header. The
// kernel filters of raw and packet mode keep the host's other traffic from
// reaching it at all.
func (l *Listener) Dropped() int64 { return l.dropped.Load() }

func (l *Listener) readUnicast(ifc *Iface, h Handler) {
	buf := make([]byte, maxDatagram)
	for {
		n, src, err := ifc.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.log.Warn("unicast socket read", "iface", ifc.name, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		h.HandleDatagram(Datagram{Data: buf[:n], Src: netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), Iface: ifc})
	}
}

// Close closes every socket; the group membership ends with it. It is safe
// to call more than once.
func (l *Listener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return l.closeErr
	}
	l.closed = true
	close(l.closing)
	var errs []error
	if l.igmp != nil {
		errs = append(errs, l.igmp.close()) // the leave goes out first
	}
	if l.shared != nil {
		errs = append(errs, l.shared.close())
	}
	for _, ifc := range l.set.Load().list {
		errs = append(errs, ifc.close())
	}
	if l.w != nil {
		errs = append(errs, l.w.close())
	}
	l.closeErr = errors.Join(errs...)
	return l.closeErr
}
