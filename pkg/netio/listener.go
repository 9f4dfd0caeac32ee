package netio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
)

// DefaultRecvBuffer is the receive buffer asked for on every socket: a boot
// storm sends thousands of SUBSCRIBEs within a second.
const DefaultRecvBuffer = 4 << 20

// maxDatagram is the largest UDP payload read.
const maxDatagram = 65535

// Linux socket options that package syscall does not name.
const (
	soRcvbufForce  = 33 // SO_RCVBUFFORCE: exceeds rmem_max with CAP_NET_ADMIN
	ipMulticastAll = 49 // IP_MULTICAST_ALL
)

// Config says what to listen on. The zero value of each optional field
// takes its documented default; Listen does not modify the Config.
type Config struct {
	Mode       Mode           // ModeBind (also for ""), ModeRaw or ModePacket
	Group      netip.AddrPort // required: an IPv4 multicast address and port
	Interfaces []Candidate    // required: from Choose
	Port       int            // unicast port on each interface; 0: kernel's choice
	RecvBuffer int            // bytes; 0: DefaultRecvBuffer
	Logger     *slog.Logger   // nil: discard
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
	mode   Mode
	group  netip.AddrPort
	gconn  *ipv4.PacketConn // bind: UDP on the group; raw: raw UDP
	pconns []*packetConn    // packet
	igmp   *igmpMember      // packet
	ifaces []*Iface
	byIdx  map[int]*Iface
	log    *slog.Logger

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
	l := &Listener{mode: mode, group: cfg.Group, byIdx: map[int]*Iface{}, log: log}
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
		setRecvBuffer(uc, rcvbuf)
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

// warnRecvBuffer says when the kernel granted less receive buffer than
// asked: without CAP_NET_ADMIN it caps it at net.core.rmem_max.
func (l *Listener) warnRecvBuffer(c any, asked int) {
	if got := recvBuffer(c); got > 0 && got < asked {
		l.log.Warn("receive buffer smaller than asked: a boot storm may overflow it",
			"asked", asked, "granted", got, "hint", "raise net.core.rmem_max, or grant CAP_NET_ADMIN")
	}
}

// listenBind binds the group address and joins the group on every
// interface.
func (l *Listener) listenBind(rcvbuf int) error {
	pc, err := bindGroup(l.group, rcvbuf)
	if err != nil {
		return err
	}
	l.warnRecvBuffer(pc, rcvbuf)
	l.gconn = ipv4.NewPacketConn(pc)
	if err := l.gconn.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true); err != nil {
		return fmt.Errorf("netio: IP_PKTINFO: %w", err)
	}
	for _, ifc := range l.ifaces {
		if err := joinOn(l.gconn, ifc, l.group.Addr()); err != nil {
			return err
		}
	}
	return nil
}

// listenRaw opens a raw UDP socket whose kernel filter passes only the
// group's datagrams, and joins the group on the unicast sockets (which are
// not on the group's port, so they never receive the group themselves).
func (l *Listener) listenRaw(rcvbuf int) error {
	filter, err := groupFilter(l.group, false, false)
	if err != nil {
		return err
	}
	c, err := net.ListenPacket("ip4:udp", "0.0.0.0")
	if err != nil {
		return fmt.Errorf("netio: raw UDP socket (needs CAP_NET_RAW): %w", err)
	}
	l.gconn = ipv4.NewPacketConn(c)
	if err := l.gconn.SetBPF(filter); err != nil {
		return fmt.Errorf("netio: attach filter: %w", err)
	}
	if sc, ok := c.(syscall.Conn); ok {
		setRecvBuffer(sc, rcvbuf)
	}
	l.warnRecvBuffer(c, rcvbuf)
	if err := l.gconn.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true); err != nil {
		return fmt.Errorf("netio: IP_PKTINFO: %w", err)
	}
	for _, ifc := range l.ifaces {
		if err := joinOn(ipv4.NewPacketConn(ifc.conn), ifc, l.group.Addr()); err != nil {
			return err
		}
	}
	return nil
}

// listenPacket opens a packet socket per interface and starts the IGMP
// membership: no socket joins the group, so the IP stack drops the group's
// datagrams and no other program on the host sees them.
func (l *Listener) listenPacket(rcvbuf int) error {
	for _, ifc := range l.ifaces {
		p, err := openPacket(ifc, l.group, rcvbuf)
		if err != nil {
			return err
		}
		l.pconns = append(l.pconns, p)
		l.warnRecvBuffer(p.f, rcvbuf)
	}
	m, err := newIGMP(l.group.Addr(), l.ifaces, l.log)
	if err != nil {
		return err
	}
	l.igmp = m
	m.join()
	return nil
}

func joinOn(c *ipv4.PacketConn, ifc *Iface, group netip.Addr) error {
	ifi, err := net.InterfaceByIndex(ifc.index)
	if err != nil {
		return fmt.Errorf("netio: interface %s: %w", ifc.name, err)
	}
	if err := c.JoinGroup(ifi, &net.UDPAddr{IP: group.AsSlice()}); err != nil {
		return fmt.Errorf("netio: join %s on %s: %w", group, ifc.name, err)
	}
	return nil
}

// bindGroup opens a UDP socket bound to the group address itself (not
// 0.0.0.0), so that it receives only datagrams sent to the group.
func bindGroup(group netip.AddrPort, rcvbuf int) (net.PacketConn, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, syscall.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("netio: socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "pnpd-group")
	defer f.Close() // FilePacketConn dups the descriptor
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return nil, fmt.Errorf("netio: SO_REUSEADDR: %w", err)
	}
	// Only the group this socket joins, not every group the host joined.
	_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_IP, ipMulticastAll, 0)
	if syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, soRcvbufForce, rcvbuf) != nil {
		_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
	}
	sa := &syscall.SockaddrInet4{Port: int(group.Port()), Addr: group.Addr().As4()}
	if err := syscall.Bind(fd, sa); err != nil {
		return nil, fmt.Errorf("netio: bind %s: %w", group, err)
	}
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("netio: group socket: %w", err)
	}
	return pc, nil
}

func setRecvBuffer(c syscall.Conn, n int) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, soRcvbufForce, n) != nil {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
		}
	})
}

// recvBuffer returns the receive buffer the kernel granted a socket (it
// reports twice the usable size), or 0 when it cannot tell.
func recvBuffer(c any) int {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = rc.Control(func(fd uintptr) {
		n, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	})
	return n / 2
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
	if l.gconn != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.readGroup(h)
		}()
	}
	for _, p := range l.pconns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.readPacket(p, h)
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

func (l *Listener) readGroup(h Handler) {
	buf := make([]byte, maxDatagram)
	for {
		n, cm, src, err := l.gconn.ReadFrom(buf)
		if err != nil {
			if l.closed(err) {
				return
			}
			l.log.Warn("group socket read", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		ifc, why := l.accept(cm)
		if why != "" {
			l.drop(why, src.String())
			continue
		}
		switch a := src.(type) {
		case *net.UDPAddr:
			h.HandleDatagram(Datagram{Data: buf[:n], Src: a.AddrPort(), Group: true, Iface: ifc})
		case *net.IPAddr: // raw: the payload is the whole UDP datagram
			sport, dport, data, why := parseUDP(buf[:n])
			if why == "" && dport != l.group.Port() {
				why = "another port"
			}
			ip, ok := netip.AddrFromSlice(a.IP)
			if why != "" || !ok {
				l.drop(why, src.String())
				continue
			}
			h.HandleDatagram(Datagram{Data: data, Src: netip.AddrPortFrom(ip.Unmap(), sport), Group: true, Iface: ifc})
		}
	}
}

func (l *Listener) drop(why, src string) {
	l.dropped.Add(1)
	l.log.Debug("dropped", "reason", why, "src", src)
}

// readPacket reads one interface's packet socket: the group's datagrams go
// to h, the IGMP queries to the membership.
func (l *Listener) readPacket(p *packetConn, h Handler) {
	buf := make([]byte, maxDatagram)
	for {
		n, err := p.read(buf)
		if err != nil {
			if l.closed(err) {
				return
			}
			l.log.Warn("packet socket read", "iface", p.ifc.name, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		pk, why := parseIPv4(buf[:n])
		if why != "" {
			l.drop(why, "")
			continue
		}
		switch {
		case pk.proto == protoIGMP:
			l.igmp.query(p.ifc.index, pk.payload)
		case pk.proto != protoUDP || pk.dst != l.group.Addr():
			l.drop("not UDP to the group", pk.src.String())
		default:
			sport, dport, data, why := parseUDP(pk.payload)
			if why == "" && dport != l.group.Port() {
				why = "another port"
			}
			if why != "" {
				l.drop(why, pk.src.String())
				continue
			}
			h.HandleDatagram(Datagram{Data: data, Src: netip.AddrPortFrom(pk.src, sport), Group: true, Iface: p.ifc})
		}
	}
}

// accept checks where a group datagram arrived: on a chosen interface, sent
// to the group. Linux hands a group's datagrams to a socket bound to it
// whatever interface they came in on, once the host joined the group there.
func (l *Listener) accept(cm *ipv4.ControlMessage) (*Iface, string) {
	if cm == nil {
		return nil, "no packet info"
	}
	ifc, ok := l.byIdx[cm.IfIndex]
	if !ok {
		return nil, "interface not chosen"
	}
	if dst, ok := netip.AddrFromSlice(cm.Dst); !ok || dst.Unmap() != l.group.Addr() {
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
		for _, p := range l.pconns {
			errs = append(errs, p.close())
		}
		if l.gconn != nil {
			errs = append(errs, l.gconn.Close())
		}
		for _, ifc := range l.ifaces {
			errs = append(errs, ifc.conn.Close())
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}
