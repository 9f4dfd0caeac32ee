package netio

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The neighbour check (policy neighbor_check) compares the MAC a phone
// claims with the one the kernel's ARP table holds for the phone's source
// address. The kernel makes that entry only when pnpd sends to the
// address (its 200), and it stays INCOMPLETE until the phone answers the
// ARP request, so the check runs before the NOTIFY and may have to wait:
// WaitNeighbor.

// Errors of the neighbour lookup.
var (
	// ErrNoNeighbor: the kernel has no entry for the address on the
	// interface (never sent to, expired, or removed after failing).
	ErrNoNeighbor = errors.New("netio: no neighbour entry")
	// ErrNeighborIncomplete: the entry exists but holds no link-layer
	// address yet (INCOMPLETE) or resolution failed (FAILED). Only
	// WaitNeighbor returns it, when its context ends.
	ErrNeighborIncomplete = errors.New("netio: neighbour entry incomplete")
)

// DefaultNeighborPoll is how often WaitNeighbor looks when poll <= 0.
const DefaultNeighborPoll = 10 * time.Millisecond

// atfCom is ATF_COM of <net/if_arp.h>: the entry holds a link-layer
// address (the kernel sets it for the states NUD_VALID covers: REACHABLE,
// STALE, DELAY, PROBE, PERMANENT). golang.org/x/sys/unix lacks it.
const atfCom = 0x02

// sockaddr is C's struct sockaddr: sa_family_t (unsigned short) and
// char sa_data[14]; 16 bytes.
type sockaddr struct {
	family uint16
	data   [14]byte
}

// arpreq is C's struct arpreq of <net/if_arp.h>, which golang.org/x/sys/unix
// lacks. On every Linux ABI it is 68 bytes, without padding:
//
//	struct arpreq {
//		struct sockaddr arp_pa;      // offset  0: protocol address (a sockaddr_in)
//		struct sockaddr arp_ha;      // offset 16: hardware address
//		int             arp_flags;   // offset 32
//		struct sockaddr arp_netmask; // offset 36
//		char            arp_dev[16]; // offset 52: interface name
//	};
type arpreq struct {
	pa      sockaddr
	ha      sockaddr
	flags   int32
	netmask sockaddr
	dev     [unix.IFNAMSIZ]byte
}

// Neighbor returns the kernel's neighbour (ARP) entry for the IPv4 address
// ip on interface ifname: its link-layer address and whether it is
// complete (the kernel holds an address it learnt: REACHABLE, STALE,
// DELAY, PROBE or PERMANENT). An entry that is INCOMPLETE or FAILED is
// returned with complete false, a nil error and no address. No entry is an
// error wrapping ErrNoNeighbor that names ip and ifname.
//
// ifname is checked first: a name that the calling thread's network
// namespace lacks wraps ErrNoInterface, an interface that is not Ethernet
// (loopback, tun, WireGuard: no ARP) wraps ErrNotEthernet. ip must be
// IPv4 (an IPv4-mapped IPv6 address is taken as its IPv4 address).
//
// The lookup is the SIOCGARP ioctl (no privilege needed) on a datagram
// socket opened and closed for each call: a socket answers for the
// namespace it was made in, so a cached one would give wrong answers to
// callers in another namespace. That costs a few microseconds, against a
// NOTIFY that is sent once per phone. The answer is for the calling
// thread's namespace: a caller outside the process's namespace must hold
// its OS thread (runtime.LockOSThread, as netns.NS.Do does).
func Neighbor(ifname string, ip netip.Addr) (mac net.HardwareAddr, complete bool, err error) {
	ip = ip.Unmap()
	if !ip.Is4() {
		return nil, false, fmt.Errorf("netio: neighbour of %v on %s: not an IPv4 address", ip, ifname)
	}
	if ifname == "" || len(ifname) >= unix.IFNAMSIZ || strings.IndexByte(ifname, 0) >= 0 {
		return nil, false, fmt.Errorf("%w: interface name %q: want 1 to %d bytes without NUL", ErrNoInterface, ifname, unix.IFNAMSIZ-1)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, false, fmt.Errorf("netio: neighbour of %s on %s: socket: %w", ip, ifname, err)
	}
	defer unix.Close(fd)

	// The interface up front, so that a wrong name is not taken for a
	// missing entry, and a link without ARP is said so instead of never
	// having entries.
	ifr, err := unix.NewIfreq(ifname)
	if err != nil {
		return nil, false, fmt.Errorf("%w: interface name %q: %w", ErrNoInterface, ifname, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFHWADDR, ifr); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return nil, false, fmt.Errorf("%w: interface %q not found in this network namespace: %w", ErrNoInterface, ifname, err)
		}
		return nil, false, fmt.Errorf("netio: interface %q: SIOCGIFHWADDR: %w", ifname, err)
	}
	if typ := ifr.Uint16(); typ != unix.ARPHRD_ETHER { // ifr_hwaddr.sa_family is the device type
		return nil, false, fmt.Errorf("netio: neighbour of %s on %s (link type %d): %w", ip, ifname, typ, ErrNotEthernet)
	}

	var req arpreq
	req.pa.family = unix.AF_INET
	a := ip.As4()
	copy(req.pa.data[2:6], a[:]) // sockaddr_in: sin_port (left 0), then sin_addr
	copy(req.dev[:], ifname)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCGARP, uintptr(unsafe.Pointer(&req))); errno != 0 {
		switch errno {
		case unix.ENXIO: // no entry (or a NOARP one, which holds no address either)
			return nil, false, fmt.Errorf("%w for %s on %s", ErrNoNeighbor, ip, ifname)
		case unix.ENODEV: // removed since SIOCGIFHWADDR
			return nil, false, fmt.Errorf("%w: interface %q not found in this network namespace: %w", ErrNoInterface, ifname, errno)
		}
		return nil, false, fmt.Errorf("netio: neighbour of %s on %s: SIOCGARP: %w", ip, ifname, errno)
	}
	if req.flags&atfCom == 0 {
		return nil, false, nil
	}
	// The kernel copies min(dev->addr_len, 14) bytes; Ethernet's is 6.
	return net.HardwareAddr(append([]byte(nil), req.ha.data[:6]...)), true, nil
}

// WaitNeighbor polls Neighbor every poll (DefaultNeighborPoll when
// poll <= 0) until the entry for ip on ifname is complete and returns its
// address. It looks once before it considers ctx, so an entry already
// complete is returned even under an ended context. When ctx ends first,
// the error names the last state seen, wrapping ErrNoNeighbor or
// ErrNeighborIncomplete, and wraps ctx.Err(). Any other error of Neighbor
// (bad address, missing or non-Ethernet interface) is returned at once.
//
// Like Neighbor it answers for the calling thread's network namespace;
// between polls the goroutine may move to another OS thread unless it
// holds its thread locked.
func WaitNeighbor(ctx context.Context, ifname string, ip netip.Addr, poll time.Duration) (net.HardwareAddr, error) {
	if poll <= 0 {
		poll = DefaultNeighborPoll
	}
	var timer *time.Timer
	for {
		mac, complete, err := Neighbor(ifname, ip)
		last := ErrNeighborIncomplete
		switch {
		case err == nil && complete:
			return mac, nil
		case errors.Is(err, ErrNoNeighbor):
			last = ErrNoNeighbor
		case err != nil:
			return nil, err
		}
		if timer == nil {
			timer = time.NewTimer(poll)
			defer timer.Stop()
		} else {
			timer.Reset(poll)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w for %s on %s when the wait ended: %w", last, ip.Unmap(), ifname, ctx.Err())
		case <-timer.C:
		}
	}
}
