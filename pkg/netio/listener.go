package netio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
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

// Iface is one chosen interface and its unicast socket.
type Iface struct {
	name   string
	index  int
	prefix netip.Prefix
	local  netip.AddrPort
	conn   *net.UDPConn
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
func (i *Iface) Send(b []byte, dst netip.AddrPort) error {
	if _, err := i.conn.WriteToUDPAddrPort(b, dst); err != nil {
		return fmt.Errorf("netio: send on %s to %s: %w", i.name, dst, err)
	}
	return nil
}

// Listener holds the group socket (or, in packet mode, one packet socket
// per interface) and the unicast sockets.
type Listener struct {
	mode    Mode
	group   netip.AddrPort
	sockets []groupSocket // bind and raw: one; packet: one per interface
	igmp    *igmpMember   // packet
	ifaces  []*Iface
	// priority is the readers' SCHED_RR priority, 0 for none.
	priority int
	byIdx    map[int]*Iface
	log      *slog.Logger

	dropped atomic.Int64

	closeOnce sync.Once
	closeErr  error
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
	l := &Listener{mode: mode, group: cfg.Group, byIdx: map[int]*Iface{}, log: log, priority: cfg.Priority}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	for _, c := range cfg.Interfaces {
		uc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.Prefix.Addr(), uint16(cfg.Port))))
		if err != nil {
			return nil, fmt.Errorf("netio: unicast socket on %s (%s port %d): %w", c.Name, c.Prefix.Addr(), cfg.Port, err)
		}
		SetRecvBuffer(uc, rcvbuf)
		ifc := &Iface{name: c.Name, index: c.Index, prefix: c.Prefix, conn: uc,
			local: netip.AddrPortFrom(c.Prefix.Addr(), uint16(uc.LocalAddr().(*net.UDPAddr).Port))}
		l.ifaces = append(l.ifaces, ifc)
		l.byIdx[c.Index] = ifc
	}
	switch mode {
	case ModeBind:
		err = l.listenBind(rcvbuf)
	case ModeRaw:
		err = l.listenRaw(rcvbuf)
	case ModePacket:
		err = l.listenPacket(rcvbuf)
	}
	if err != nil {
		return nil, err
	}
	for _, ifc := range l.ifaces {
		log.Info("receiving the group", "mode", string(mode), "iface", ifc.name, "group", cfg.Group.String(), "addr", ifc.local.String())
	}
	return l, nil
}

// groupSocket is a socket that receives the group: in packet mode bound
// to one interface (ifc), else for all of them.
type groupSocket struct {
	r   *sockReader
	ifc *Iface
}

func (l *Listener) addSocket(fd int, name string, ifc *Iface, rcvbuf int) error {
	setRecvBufferFD(fd, rcvbuf)
	if got := recvBufferFD(fd); got > 0 && got < rcvbuf {
		// Without CAP_NET_ADMIN the kernel caps it at net.core.rmem_max.
		l.log.Warn("receive buffer smaller than asked: a boot storm may overflow it",
			"socket", name, "asked", rcvbuf, "granted", got, "hint", "raise net.core.rmem_max, or grant CAP_NET_ADMIN")
	}
	r, err := newSockReader(fd, name, l.log)
	if err != nil {
		return err
	}
	r.priority, r.racing = l.priority, l.mode == ModeRaw
	l.sockets = append(l.sockets, groupSocket{r: r, ifc: ifc})
	return nil
}

// listenBind binds the group address and joins the group on every
// interface.
func (l *Listener) listenBind(rcvbuf int) error {
	fd, err := bindGroup(l.group)
	if err != nil {
		return err
	}
	for _, ifc := range l.ifaces {
		if err := join(fd, l.group.Addr(), ifc); err != nil {
			unix.Close(fd)
			return err
		}
	}
	return l.addSocket(fd, "group "+l.group.String(), nil, rcvbuf)
}

// listenRaw opens a raw UDP socket whose kernel filter passes only the
// group's datagrams, and joins the group on the unicast sockets (which are
// not on the group's port, so they never receive the group themselves).
func (l *Listener) listenRaw(rcvbuf int) error {
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
	if err := l.addSocket(fd, "raw udp", nil, rcvbuf); err != nil {
		return err
	}
	for _, ifc := range l.ifaces {
		rc, err := ifc.conn.SyscallConn()
		if err != nil {
			return fmt.Errorf("netio: unicast socket on %s: %w", ifc.name, err)
		}
		var jerr error
		if err := rc.Control(func(fd uintptr) { jerr = join(int(fd), l.group.Addr(), ifc) }); err != nil {
			return fmt.Errorf("netio: unicast socket on %s: %w", ifc.name, err)
		}
		if jerr != nil {
			return jerr
		}
	}
	return nil
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

// listenPacket opens a packet socket per interface and starts the IGMP
// membership: no socket joins the group, so the IP stack drops the group's
// datagrams and no other program on the host sees them.
func (l *Listener) listenPacket(rcvbuf int) error {
	for _, ifc := range l.ifaces {
		fd, err := openPacket(ifc, l.group)
		if err != nil {
			return err
		}
		if err := l.addSocket(fd, "packet "+ifc.name, ifc, rcvbuf); err != nil {
			return err
		}
	}
	m, err := newIGMP(l.group.Addr(), l.ifaces, l.log)
	if err != nil {
		return err
	}
	l.igmp = m
	m.join()
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

// Interfaces returns the chosen interfaces in the order of the Config.
func (l *Listener) Interfaces() []*Iface { return append([]*Iface(nil), l.ifaces...) }

// Iface returns the chosen interface with that index.
func (l *Listener) Iface(index int) (*Iface, bool) {
	i, ok := l.byIdx[index]
	return i, ok
}

// Mode is how the Listener receives the group.
func (l *Listener) Mode() Mode { return l.mode }

// Serve reads every socket and hands each datagram to h until ctx is done
// or Close is called; then it closes the sockets and returns nil.
func (l *Listener) Serve(ctx context.Context, h Handler) error {
	var wg sync.WaitGroup
	for _, gs := range l.sockets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf, oob := make([]byte, maxDatagram), make([]byte, 128)
			gs.r.serve(buf, oob, func(b, oob []byte, from unix.Sockaddr) { l.receive(h, gs, b, oob, from) })
		}()
	}
	wg.Add(len(l.ifaces))
	for _, ifc := range l.ifaces {
		go func() {
			defer wg.Done()
			l.readUnicast(ifc, h)
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-ctx.Done():
		l.Close()
		<-done
	case <-done:
	}
	return nil
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
	ifc, chosen := l.byIdx[ifindex]
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
			if l.closed(err) {
				return
			}
			l.log.Warn("unicast socket read", "iface", ifc.name, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		h.HandleDatagram(Datagram{Data: buf[:n], Src: netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), Iface: ifc})
	}
}

func (l *Listener) closed(err error) bool { return errors.Is(err, net.ErrClosed) }

// Close closes every socket; the group membership ends with it. It is safe
// to call more than once.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		var errs []error
		if l.igmp != nil {
			errs = append(errs, l.igmp.close()) // the leave goes out first
		}
		for _, gs := range l.sockets {
			errs = append(errs, gs.r.close())
		}
		for _, ifc := range l.ifaces {
			errs = append(errs, ifc.conn.Close())
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}
