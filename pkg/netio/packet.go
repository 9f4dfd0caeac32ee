package netio

import (
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Packet mode's socket on one interface is AF_PACKET, SOCK_DGRAM (the
// buffer starts at the IPv4 header), bound to the interface, with a
// link-layer membership for the group's Ethernet address and a kernel
// filter that passes only the group's datagrams and the IGMP queries.

// groupMAC is the Ethernet address of an IPv4 group (RFC 1112 6.4).
func groupMAC(g netip.Addr) [8]byte {
	a := g.As4()
	return [8]byte{0x01, 0x00, 0x5e, a[1] & 0x7f, a[2], a[3]}
}

// htons converts a 16-bit value to network byte order, as sockaddr_ll
// and socket(AF_PACKET) want the protocol.
func htons(v uint16) uint16 { return v<<8 | v>>8 }

func openPacket(ifc *Iface, group netip.AddrPort) (fd int, err error) {
	if err := ethernet(ifc.index, ifc.name); err != nil {
		return -1, err
	}
	filter, err := groupFilter(group, true, true)
	if err != nil {
		return -1, err
	}
	// Protocol 0: the socket receives nothing until it is bound, after the
	// filter is in place.
	fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("netio: packet socket (needs CAP_NET_RAW): %w", err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
			fd = -1
		}
	}()
	if err := attachFilter(fd, filter); err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifc.index}); err != nil {
		return -1, fmt.Errorf("netio: bind packet socket to %s: %w", ifc.name, err)
	}
	mreq := &unix.PacketMreq{Ifindex: int32(ifc.index), Type: unix.PACKET_MR_MULTICAST, Alen: 6, Address: groupMAC(group.Addr())}
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, mreq); err != nil {
		return -1, fmt.Errorf("netio: link-layer membership for %s on %s: %w", group.Addr(), ifc.name, err)
	}
	return fd, nil
}

// ethernet checks that interface index has an Ethernet address for the
// group's to map onto; packet mode needs one.
func ethernet(index int, name string) error {
	ifi, err := net.InterfaceByIndex(index)
	if err != nil {
		return fmt.Errorf("netio: interface %s: %w", name, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return fmt.Errorf("netio: packet mode on %s: %w", name, ErrNotEthernet)
	}
	return nil
}

// CheckSockets opens, and closes at once, the sockets Listen would open
// for mode raw (a raw UDP socket) or packet (an AF_PACKET socket that
// receives nothing, a raw IGMP socket, Ethernet interfaces), without
// binding, joining or sending, so that a running pnpd is not disturbed.
// Errors wrap the system's (EPERM without CAP_NET_RAW, EAFNOSUPPORT where
// the address family is not allowed) or ErrNotEthernet. Bind mode needs
// no privilege: it returns nil.
func CheckSockets(mode Mode, ifaces []Candidate) error {
	type kind struct {
		name                  string
		family, typ, protocol int
	}
	var kinds []kind
	switch mode {
	case ModeRaw:
		kinds = []kind{{"raw UDP", unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_UDP}}
	case ModePacket:
		for _, c := range ifaces {
			if err := ethernet(c.Index, c.Name); err != nil {
				return err
			}
		}
		kinds = []kind{{"AF_PACKET", unix.AF_PACKET, unix.SOCK_DGRAM, 0}, {"raw IGMP", unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_IGMP}}
	}
	for _, k := range kinds {
		fd, err := unix.Socket(k.family, k.typ|unix.SOCK_CLOEXEC, k.protocol)
		if err != nil {
			return fmt.Errorf("netio: %s socket: %w", k.name, err)
		}
		unix.Close(fd)
	}
	return nil
}

func attachFilter(fd int, prog []bpf.RawInstruction) error {
	fp := unix.SockFprog{Len: uint16(len(prog)), Filter: (*unix.SockFilter)(unsafe.Pointer(&prog[0]))}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp); err != nil {
		return fmt.Errorf("netio: attach filter: %w", err)
	}
	return nil
}
