package netio_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/pnpd/pnpd/pkg/netio"
	"github.com/pnpd/pnpd/pkg/netns"
	"github.com/pnpd/pnpd/pkg/netns/netnstest"
)

func lab(t *testing.T) *netns.Pair {
	t.Helper()
	return netnstest.NewPair(t, netns.Options{Subnet: netip.MustParsePrefix("198.18.7.0/24")})
}

func TestChooseNamed(t *testing.T) {
	if _, _, err := netio.Choose([]string{"pnpd-no-such0"}); err == nil {
		t.Fatal("a missing interface was accepted")
	}
}

// TestListen receives the group in namespace A, in each mode, and sends
// from B: a multicast to the group arrives as a group datagram with the
// sender's address, a unicast to the interface's unicast socket as a
// unicast one, and neither a unicast to the group's port nor a stream of
// RTP-like datagrams reaches the handler. In raw and packet mode a PBX
// socket holds 0.0.0.0:5060 beside pnpd: in raw mode it sees the group's
// datagram too, in packet mode never.
func TestListen(t *testing.T) {
	for _, mode := range []netio.Mode{netio.ModeBind, netio.ModeRaw, netio.ModePacket} {
		t.Run(string(mode), func(t *testing.T) { testListen(t, mode) })
	}
}

func testListen(t *testing.T, mode netio.Mode) {
	p := lab(t)
	var l *netio.Listener
	var pbx *net.UDPConn
	err := p.A.Do(func() error {
		if mode != netio.ModeBind {
			var err error
			if pbx, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 5060}); err != nil {
				return err
			}
		}
		chosen, _, err := netio.Choose([]string{p.AIf})
		if err != nil {
			return err
		}
		l, err = netio.Listen(netio.Config{Mode: mode, Group: netip.MustParseAddrPort("224.0.1.75:5060"), Interfaces: chosen})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if pbx != nil {
		defer pbx.Close()
	}
	if l.Mode() != mode {
		t.Errorf("Mode() = %s", l.Mode())
	}
	ifs := l.Interfaces()
	if len(ifs) != 1 || ifs[0].Name() != p.AIf || ifs[0].Addr().Addr() != p.AAddr.Addr() || ifs[0].Addr().Port() == 0 {
		t.Fatalf("interfaces %v", ifs)
	}
	got := make(chan netio.Datagram, 16)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- l.Serve(ctx, netio.HandlerFunc(func(d netio.Datagram) {
			d.Data = append([]byte(nil), d.Data...)
			got <- d
		}))
	}()

	phone, err := p.B.ListenUDP("udp4", &net.UDPAddr{IP: p.BAddr.Addr().AsSlice(), Port: 5059})
	if err != nil {
		t.Fatal(err)
	}
	defer phone.Close()
	pc := ipv4.NewPacketConn(phone)
	ifi, err := p.B.InterfaceByName(p.BIf)
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.SetMulticastInterface(ifi); err != nil {
		t.Fatal(err)
	}
	// RTP-like unicast to another port first: the kernel filter must keep
	// it from user space, so Dropped stays 0.
	for i := range 50 {
		if _, err := phone.WriteToUDPAddrPort([]byte("rtp "+itoa(i)), netip.AddrPortFrom(p.AAddr.Addr(), 10000)); err != nil {
			t.Fatal(err)
		}
	}
	group := &net.UDPAddr{IP: net.IPv4(224, 0, 1, 75), Port: 5060}
	if _, err := phone.WriteTo([]byte("to the group"), group); err != nil {
		t.Fatal(err)
	}
	d := wait(t, got)
	if !d.Group || string(d.Data) != "to the group" || d.Src.String() != p.BAddr.Addr().String()+":5059" || d.Iface.Name() != p.AIf {
		t.Errorf("group datagram %+v", d)
	}
	if n := l.Dropped(); n != 0 {
		t.Errorf("%d datagrams reached user space and were dropped there; the kernel filter should have", n)
	}
	if pbx != nil {
		buf := make([]byte, 100)
		pbx.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, _, err := pbx.ReadFromUDPAddrPort(buf)
		switch {
		case mode == netio.ModeRaw && (err != nil || string(buf[:n]) != "to the group"):
			t.Errorf("raw mode joins the group, so the PBX socket should see it: %q, %v", buf[:n], err)
		case mode == netio.ModePacket && err == nil:
			t.Errorf("packet mode: the PBX socket saw %q", buf[:n])
		}
	}
	// A reply leaves from the interface's unicast socket. It is sent
	// again if it does not come (the first may wait on ARP, and a busy
	// machine may lose it): what is tested is where it comes from.
	buf := make([]byte, 100)
	var n int
	var from netip.AddrPort
	for try := 1; ; try++ {
		if err := d.Iface.Send([]byte("reply"), d.Src); err != nil {
			t.Fatal(err)
		}
		phone.SetReadDeadline(time.Now().Add(time.Second))
		n, from, err = phone.ReadFromUDPAddrPort(buf)
		if err == nil || try == 10 {
			break
		}
	}
	if err != nil || string(buf[:n]) != "reply" || from != ifs[0].Addr() {
		t.Fatalf("reply %q from %v, %v; want from %v", buf[:n], from, err, ifs[0].Addr())
	}
	if _, err := phone.WriteToUDPAddrPort([]byte("unicast answer"), ifs[0].Addr()); err != nil {
		t.Fatal(err)
	}
	d = wait(t, got)
	if d.Group || string(d.Data) != "unicast answer" {
		t.Errorf("unicast datagram %+v", d)
	}
	// Unicast to port 5060 of the interface address must not reach the
	// handler (in bind mode nobody listens there).
	if _, err := phone.WriteToUDPAddrPort([]byte("stray"), netip.AddrPortFrom(p.AAddr.Addr(), 5060)); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		t.Errorf("stray unicast reached the handler: %+v", d)
	case <-time.After(300 * time.Millisecond):
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestHoldsNoGroupPort: raw and packet mode refuse a unicast port equal
// to the group's.
func TestHoldsNoGroupPort(t *testing.T) {
	for _, mode := range []netio.Mode{netio.ModeRaw, netio.ModePacket} {
		_, err := netio.Listen(netio.Config{Mode: mode, Group: netip.MustParseAddrPort("224.0.1.75:5060"), Port: 5060,
			Interfaces: []netio.Candidate{{Name: "lo", Index: 1, Prefix: netip.MustParsePrefix("127.0.0.1/8")}}})
		if err == nil {
			t.Errorf("%s mode took unicast port 5060", mode)
		}
	}
}

func wait(t *testing.T, ch chan netio.Datagram) netio.Datagram {
	t.Helper()
	select {
	case d := <-ch:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("no datagram")
		return netio.Datagram{}
	}
}

// TestOtherInterfaceDropped: Linux hands a group's datagrams to a socket
// bound to the group whatever interface they arrive on, once anything on the
// host joined the group there. A datagram arriving on an interface pnpd did
// not choose must not reach the handler.
func TestOtherInterfaceDropped(t *testing.T) {
	for _, mode := range []netio.Mode{netio.ModeBind, netio.ModeRaw, netio.ModePacket} {
		t.Run(string(mode), func(t *testing.T) { testOtherInterfaceDropped(t, mode) })
	}
}

func testOtherInterfaceDropped(t *testing.T, mode netio.Mode) {
	p := lab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A third namespace C, linked to A over a second veth that pnpd does
	// not choose.
	c, err := netns.New(ctx, netns.UniqueName(netns.DefaultPrefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	aOther, cIf := "pnx"+itoa(os.Getpid()%100000)+"a", "pnx"+itoa(os.Getpid()%100000)+"c"
	steps := [][]string{
		{"link", "add", aOther, "type", "veth", "peer", "name", cIf, "netns", c.Name},
		{"addr", "add", "198.18.8.1/24", "dev", aOther},
		{"link", "set", aOther, "up"},
	}
	for _, s := range steps {
		if _, err := p.A.IP(ctx, s...); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range [][]string{{"addr", "add", "198.18.8.2/24", "dev", cIf}, {"link", "set", cIf, "up"}} {
		if _, err := c.IP(ctx, s...); err != nil {
			t.Fatal(err)
		}
	}

	var l *netio.Listener
	var other *net.UDPConn
	err = p.A.Do(func() error {
		chosen, _, err := netio.Choose([]string{p.AIf})
		if err != nil {
			return err
		}
		l, err = netio.Listen(netio.Config{Mode: mode, Group: netip.MustParseAddrPort("224.0.1.75:5060"), Interfaces: chosen})
		if err != nil {
			return err
		}
		// Something else on the host joins the group on the other link.
		other, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(198, 18, 8, 1), Port: 0})
		if err != nil {
			return err
		}
		ifi, err := net.InterfaceByName(aOther)
		if err != nil {
			return err
		}
		return ipv4.NewPacketConn(other).JoinGroup(ifi, &net.UDPAddr{IP: net.IPv4(224, 0, 1, 75)})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	defer l.Close()
	got := make(chan netio.Datagram, 16)
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	go l.Serve(sctx, netio.HandlerFunc(func(d netio.Datagram) {
		d.Data = append([]byte(nil), d.Data...)
		got <- d
	}))

	send := func(ns *netns.NS, ifname string, src netip.Addr, payload string) {
		t.Helper()
		conn, err := ns.ListenUDP("udp4", &net.UDPAddr{IP: src.AsSlice()})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ifi, err := ns.InterfaceByName(ifname)
		if err != nil {
			t.Fatal(err)
		}
		if err := ipv4.NewPacketConn(conn).SetMulticastInterface(ifi); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.WriteTo([]byte(payload), &net.UDPAddr{IP: net.IPv4(224, 0, 1, 75), Port: 5060}); err != nil {
			t.Fatal(err)
		}
	}
	send(c, cIf, netip.MustParseAddr("198.18.8.2"), "from the other link")
	// Two guards keep that datagram from the handler: the socket's
	// IP_MULTICAST_ALL=0 and the listener's arrival-interface check
	// (TestAccept tests the latter alone). Send on the chosen link
	// afterwards and expect only that one to reach the handler.
	time.Sleep(200 * time.Millisecond)
	send(p.B, p.BIf, p.BAddr.Addr(), "from the chosen link")
	d := wait(t, got)
	if string(d.Data) != "from the chosen link" {
		t.Errorf("handler got %q from %v on %s", d.Data, d.Src, d.Iface.Name())
	}
	select {
	case d := <-got:
		t.Errorf("another datagram reached the handler: %q", d.Data)
	case <-time.After(200 * time.Millisecond):
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestPacketOnSnoopingBridge: a PBX host whose LAN interface is a Linux
// bridge with IGMP snooping and a querier (a hypervisor host, say), with
// another member of the group on the bridge. In packet mode the IP stack
// never joins, so the host is a member only through pnpd's own IGMP
// report: the bridge must list the host for the group (with the reports
// disabled it does not), and the phone's SUBSCRIBE must reach pnpd
// through the bridge.
func TestPacketOnSnoopingBridge(t *testing.T) {
	p := lab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	member, err := netns.New(ctx, netns.UniqueName(netns.DefaultPrefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { member.Close() })
	id := itoa(os.Getpid() % 100000)
	br, mA, mB := "pbr"+id, "pbm"+id+"a", "pbm"+id+"b"
	run := func(ns *netns.NS, steps ...[]string) {
		t.Helper()
		for _, s := range steps {
			if out, err := ns.IP(ctx, s...); err != nil {
				t.Fatalf("ip %v: %v %s", s, err, out)
			}
		}
	}
	run(p.A,
		[]string{"link", "add", br, "type", "bridge", "mcast_snooping", "1", "mcast_querier", "1", "mcast_router", "0"},
		[]string{"addr", "del", p.AAddr.String(), "dev", p.AIf},
		[]string{"link", "set", p.AIf, "master", br},
		[]string{"addr", "add", p.AAddr.String(), "dev", br},
		[]string{"link", "set", br, "up"},
		[]string{"route", "replace", "224.0.0.0/4", "dev", br},
		[]string{"link", "add", mA, "type", "veth", "peer", "name", mB, "netns", member.Name},
		[]string{"link", "set", mA, "master", br},
		[]string{"link", "set", mA, "up"},
	)
	run(member,
		[]string{"addr", "add", "198.18.7.3/24", "dev", mB},
		[]string{"link", "set", mB, "up"},
		[]string{"route", "add", "224.0.0.0/4", "dev", mB},
	)
	// The other member joins: its report puts the group in the bridge's
	// database for its port.
	var joined *net.UDPConn
	if err := member.Do(func() error {
		ifi, err := net.InterfaceByName(mB)
		if err != nil {
			return err
		}
		joined, err = net.ListenMulticastUDP("udp4", ifi, &net.UDPAddr{IP: net.IPv4(224, 0, 1, 75), Port: 5060})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer joined.Close()
	mdb := func() string {
		out, _ := p.A.Command(ctx, "bridge", "mdb", "show", "dev", br).CombinedOutput()
		return string(out)
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s; bridge mdb:\n%s", what, mdb())
			}
		}
	}
	waitFor("the other member's join never reached the bridge", func() bool { return strings.Contains(mdb(), "port "+mA+" grp 224.0.1.75") })

	var l *netio.Listener
	if err := p.A.Do(func() error {
		chosen, _, err := netio.Choose([]string{br})
		if err != nil {
			return err
		}
		l, err = netio.Listen(netio.Config{Mode: netio.ModePacket, Group: netip.MustParseAddrPort("224.0.1.75:5060"), Interfaces: chosen})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	waitFor("pnpd's report did not make the host a member on the bridge", func() bool { return strings.Contains(mdb(), "port "+br+" grp 224.0.1.75") })
	got := make(chan netio.Datagram, 16)
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	go l.Serve(sctx, netio.HandlerFunc(func(d netio.Datagram) {
		d.Data = append([]byte(nil), d.Data...)
		got <- d
	}))
	phone, err := p.B.ListenUDP("udp4", &net.UDPAddr{IP: p.BAddr.Addr().AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	defer phone.Close()
	ifi, err := p.B.InterfaceByName(p.BIf)
	if err != nil {
		t.Fatal(err)
	}
	if err := ipv4.NewPacketConn(phone).SetMulticastInterface(ifi); err != nil {
		t.Fatal(err)
	}
	if _, err := phone.WriteTo([]byte("through the bridge"), &net.UDPAddr{IP: net.IPv4(224, 0, 1, 75), Port: 5060}); err != nil {
		t.Fatal(err)
	}
	if d := wait(t, got); string(d.Data) != "through the bridge" || d.Iface.Name() != br {
		t.Errorf("got %q on %s", d.Data, d.Iface.Name())
	}
}
