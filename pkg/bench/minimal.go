package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pnpd/pnpd/pkg/netio"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// MinimalStats is what the minimal responder counted.
type MinimalStats struct {
	Subscribes int       `json:"subscribes"` // datagrams starting "SUBSCRIBE "
	Others     int       `json:"others"`     // every other datagram: the phones' 200s
	SendErrors int       `json:"send_errors"`
	LastOther  time.Time `json:"last_other"` // when the last of Others arrived
}

// Minimal is the machine's limit for pnpd's packet pattern: it receives a
// datagram, and when it starts with "SUBSCRIBE " it sends two datagrams to
// its source, a "200 OK" and a "NOTIFY" made of a new start line and the
// SUBSCRIBE's own header lines; any other datagram (the phone's 200) is only
// counted. No parsing, no state, one goroutine, the group joined on one
// interface and read from a socket bound to the group's port, with pnpd's
// receive buffer. It is a yardstick, not a PnP responder.
type Minimal struct {
	// Iface is the interface to join Group on. Required.
	Iface string
	// Group and Port: default 224.0.1.75:5060.
	Group netip.Addr
	Port  int
	// Spin: never sleep; poll the socket without blocking, one core busy
	// all the time. It shows what the kernel's wake-up of a sleeping reader
	// costs on this machine, not a way to run.
	Spin bool
}

// Serve answers until ctx is done, then returns what it counted. ready, when
// not nil, is called once the socket listens.
func (m Minimal) Serve(ctx context.Context, ready func()) (MinimalStats, error) {
	var st MinimalStats
	group, port := m.Group, m.Port
	if !group.IsValid() {
		group = netip.AddrFrom4([4]byte{224, 0, 1, 75})
	}
	if port == 0 {
		port = 5060
	}
	ifi, err := net.InterfaceByName(m.Iface)
	if err != nil {
		return st, fmt.Errorf("minimal responder: %w", err)
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
	if err != nil {
		return st, fmt.Errorf("minimal responder: %w", err)
	}
	defer c.Close()
	if err := ipv4.NewPacketConn(c).JoinGroup(ifi, &net.UDPAddr{IP: group.AsSlice()}); err != nil {
		return st, fmt.Errorf("minimal responder: joining %s on %s: %w", group, m.Iface, err)
	}
	netio.SetRecvBuffer(c, netio.DefaultRecvBuffer)
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	defer stop()
	if ready != nil {
		ready()
	}
	buf := make([]byte, 65536)
	ok := make([]byte, 0, 2048)
	notify := make([]byte, 0, 2048)
	read := c.ReadFromUDPAddrPort
	if m.Spin {
		read = spinReader(ctx, c)
	}
	for {
		n, src, err := read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return st, nil
			}
			if errors.Is(err, net.ErrClosed) {
				return st, err
			}
			continue
		}
		d := buf[:n]
		if !bytes.HasPrefix(d, []byte("SUBSCRIBE ")) {
			st.Others++
			st.LastOther = time.Now()
			continue
		}
		st.Subscribes++
		headers := d
		if i := bytes.IndexByte(d, '\n'); i >= 0 {
			headers = d[i+1:]
		}
		ok = append(append(ok[:0], "SIP/2.0 200 OK\r\n"...), headers...)
		notify = append(notify[:0], "NOTIFY sip:"...)
		notify = src.Addr().AppendTo(notify)
		notify = append(append(notify, " SIP/2.0\r\n"...), headers...)
		if _, err := c.WriteToUDPAddrPort(ok, src); err != nil {
			st.SendErrors++
		}
		if _, err := c.WriteToUDPAddrPort(notify, src); err != nil {
			st.SendErrors++
		}
	}
}

// spinReader returns a read function that polls c without ever blocking
// until a datagram comes or ctx ends.
func spinReader(ctx context.Context, c *net.UDPConn) func([]byte) (int, netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	return func(b []byte) (int, netip.AddrPort, error) {
		if err != nil {
			return 0, netip.AddrPort{}, err
		}
		for {
			var n int
			var from unix.Sockaddr
			var rerr error
			if cerr := rc.Control(func(fd uintptr) {
				n, from, rerr = unix.Recvfrom(int(fd), b, unix.MSG_DONTWAIT)
			}); cerr != nil {
				return 0, netip.AddrPort{}, cerr
			}
			if rerr == nil {
				sa, ok := from.(*unix.SockaddrInet4)
				if !ok {
					continue
				}
				return n, netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), nil
			}
			if rerr != unix.EAGAIN && rerr != unix.EINTR {
				return 0, netip.AddrPort{}, rerr
			}
			if ctx.Err() != nil {
				return 0, netip.AddrPort{}, ctx.Err()
			}
		}
	}
}
