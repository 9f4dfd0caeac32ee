package netio

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// packetConn is packet mode's socket on one interface: AF_PACKET,
// SOCK_DGRAM (the buffer starts at the IPv4 header), bound to the
// interface, with a link-layer membership for the group's Ethernet address
// and a kernel filter that passes only the group's datagrams and the IGMP
// queries.
type packetConn struct {
	ifc *Iface
	f   *os.File
	rc  syscall.RawConn
	// shut is set by close: a read of a closed file fails with an error
	// that is neither os.ErrClosed nor net.ErrClosed.
	shut atomic.Bool
}

// groupMAC is the Ethernet address of an IPv4 group (RFC 1112 6.4).
func groupMAC(g netip.Addr) [8]byte {
	a := g.As4()
	return [8]byte{0x01, 0x00, 0x5e, a[1] & 0x7f, a[2], a[3]}
}

// htons converts a 16-bit value to network byte order, as sockaddr_ll
// and socket(AF_PACKET) want the protocol.
func htons(v uint16) uint16 { return v<<8 | v>>8 }

func openPacket(ifc *Iface, group netip.AddrPort, rcvbuf int) (_ *packetConn, err error) {
	ifi, err := net.InterfaceByIndex(ifc.index)
	if err != nil {
		return nil, fmt.Errorf("netio: interface %s: %w", ifc.name, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("netio: packet mode on %s: %w", ifc.name, ErrNotEthernet)
	}
	filter, err := groupFilter(group, true, true)
	if err != nil {
		return nil, err
	}
	// Protocol 0: the socket receives nothing until it is bound, after the
	// filter is in place.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("netio: packet socket (needs CAP_NET_RAW): %w", err)
	}
	defer func() {
		if err != nil && fd >= 0 {
			unix.Close(fd)
		}
	}()
	if err := attachFilter(fd, filter); err != nil {
		return nil, err
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifc.index}); err != nil {
		return nil, fmt.Errorf("netio: bind packet socket to %s: %w", ifc.name, err)
	}
	mreq := &unix.PacketMreq{Ifindex: int32(ifc.index), Type: unix.PACKET_MR_MULTICAST, Alen: 6, Address: groupMAC(group.Addr())}
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, mreq); err != nil {
		return nil, fmt.Errorf("netio: link-layer membership for %s on %s: %w", group.Addr(), ifc.name, err)
	}
	// A non-blocking descriptor goes to the runtime's poller; closing the
	// file wakes a blocked read. The membership ends with the socket.
	f := os.NewFile(uintptr(fd), "pnpd-packet-"+ifc.name)
	fd = -1 // f owns it now
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("netio: packet socket: %w", err)
	}
	return &packetConn{ifc: ifc, f: f, rc: rc}, nil
}

func attachFilter(fd int, prog []bpf.RawInstruction) error {
	fp := unix.SockFprog{Len: uint16(len(prog)), Filter: (*unix.SockFilter)(unsafe.Pointer(&prog[0]))}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp); err != nil {
		return fmt.Errorf("netio: attach filter: %w", err)
	}
	return nil
}

// read reads one packet into b; it returns net.ErrClosed once the socket
// is closed.
func (p *packetConn) read(b []byte) (int, error) {
	var n int
	var rerr error
	err := p.rc.Read(func(fd uintptr) bool {
		n, rerr = unix.Read(int(fd), b)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		if p.shut.Load() || errors.Is(err, os.ErrClosed) {
			return 0, net.ErrClosed
		}
		return 0, err
	}
	return n, rerr
}

func (p *packetConn) close() error {
	p.shut.Store(true)
	return p.f.Close()
}
