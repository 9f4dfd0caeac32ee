package netio

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/pnpd/pnpd/pkg/netns"
	"github.com/pnpd/pnpd/pkg/netns/netnstest"
)

// neighSubnet is the veth pair's: A is .1, B is .2, nobody else.
var neighSubnet = netip.MustParsePrefix("198.18.8.0/24")

// Addresses in A's subnet that no host has.
var (
	neighAbsent    = netip.MustParseAddr("198.18.8.99")  // sent to: INCOMPLETE, then FAILED
	neighUntouched = netip.MustParseAddr("198.18.8.100") // never sent to: no entry
)

// TestArpreqLayout holds the Go struct to C's struct arpreq.
func TestArpreqLayout(t *testing.T) {
	var r arpreq
	for _, f := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof", unsafe.Sizeof(r), 68},
		{"arp_ha", unsafe.Offsetof(r.ha), 16},
		{"arp_flags", unsafe.Offsetof(r.flags), 32},
		{"arp_netmask", unsafe.Offsetof(r.netmask), 36},
		{"arp_dev", unsafe.Offsetof(r.dev), 52},
	} {
		if f.got != f.want {
			t.Errorf("%s = %d, want %d", f.name, f.got, f.want)
		}
	}
}

// TestNeighborBadAddress needs no namespace: the address is refused before
// any socket is opened.
func TestNeighborBadAddress(t *testing.T) {
	for _, tt := range []struct {
		name string
		ip   netip.Addr
	}{
		{"IPv6", netip.MustParseAddr("2001:db8::1")},
		{"IPv6 link-local", netip.MustParseAddr("fe80::1")},
		{"zero", netip.Addr{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mac, complete, err := Neighbor("lo", tt.ip)
			if err == nil || mac != nil || complete {
				t.Fatalf("Neighbor(lo, %v) = %v, %t, %v; want an error", tt.ip, mac, complete, err)
			}
			if !strings.Contains(err.Error(), "not an IPv4 address") {
				t.Errorf("error %q does not say why", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := WaitNeighbor(ctx, "lo", tt.ip, 0); err == nil || ctx.Err() != nil {
				t.Errorf("WaitNeighbor: %v (ctx %v); want the address error at once", err, ctx.Err())
			}
		})
	}
}

// neighLab is a veth pair in which A has resolved B: A sent B one UDP
// datagram and A's entry for B is complete. It returns B's MAC.
func neighLab(tb testing.TB) (*netns.Pair, net.HardwareAddr) {
	tb.Helper()
	p := netnstest.NewPair(tb, netns.Options{Prefix: "pnpdneigh", Subnet: neighSubnet, NoMulticastRoute: true})
	ifi, err := p.B.InterfaceByName(p.BIf)
	if err != nil {
		tb.Fatal(err)
	}
	if len(ifi.HardwareAddr) != 6 {
		tb.Fatalf("B's %s has hardware address %v", p.BIf, ifi.HardwareAddr)
	}
	var got net.HardwareAddr
	err = p.A.Do(func() error {
		if err := sendOne(p.BAddr.Addr()); err != nil {
			return err
		}
		// The kernel resolves in the background: bounded wait, no
		// assertion on how long it takes.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var err error
		got, err = WaitNeighbor(ctx, p.AIf, p.BAddr.Addr(), 0)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	if got.String() != ifi.HardwareAddr.String() {
		tb.Fatalf("WaitNeighbor = %s, want B's %s", got, ifi.HardwareAddr)
	}
	return p, ifi.HardwareAddr
}

// sendOne sends one UDP datagram to ip's discard port, from the calling
// thread's namespace; the kernel starts resolving ip before sendto returns.
func sendOne(ip netip.Addr) error {
	c, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.WriteToUDPAddrPort([]byte("neighbour"), netip.AddrPortFrom(ip, 9))
	return err
}

// inNS runs fn inside ns on a locked thread. t.Run would start another
// goroutine, outside the namespace, so subtests call inNS, not the reverse;
// fn reports with t.Errorf and returns what must stop the subtest.
func inNS(t *testing.T, ns *netns.NS, fn func() error) {
	t.Helper()
	if err := ns.Do(fn); err != nil {
		t.Fatal(err)
	}
}

func TestNeighbor(t *testing.T) {
	p, bMAC := neighLab(t)
	t.Run("complete", func(t *testing.T) {
		inNS(t, p.A, func() error {
			mac, complete, err := Neighbor(p.AIf, p.BAddr.Addr())
			if err != nil || !complete || mac.String() != bMAC.String() {
				t.Errorf("Neighbor(%s, %s) = %v, %t, %v; want %s, true", p.AIf, p.BAddr.Addr(), mac, complete, err, bMAC)
			}
			// The same through an IPv4-mapped IPv6 address.
			mapped := netip.AddrFrom16(p.BAddr.Addr().As16())
			if mac, complete, err := Neighbor(p.AIf, mapped); err != nil || !complete || mac.String() != bMAC.String() {
				t.Errorf("Neighbor(%s, %s) = %v, %t, %v; want %s, true", p.AIf, mapped, mac, complete, err, bMAC)
			}
			return nil
		})
	})
	t.Run("never contacted", func(t *testing.T) {
		inNS(t, p.A, func() error {
			mac, complete, err := Neighbor(p.AIf, neighUntouched)
			if !errors.Is(err, ErrNoNeighbor) || mac != nil || complete {
				return fmt.Errorf("Neighbor = %v, %t, %v; want ErrNoNeighbor", mac, complete, err)
			}
			if msg := err.Error(); !strings.Contains(msg, neighUntouched.String()) || !strings.Contains(msg, p.AIf) {
				t.Errorf("error %q names neither the address nor the interface", msg)
			}
			// An ended context still gets one look, and the last state.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, err = WaitNeighbor(ctx, p.AIf, neighUntouched, 0)
			if !errors.Is(err, ErrNoNeighbor) || !errors.Is(err, context.Canceled) {
				t.Errorf("WaitNeighbor under a cancelled context: %v; want ErrNoNeighbor and context.Canceled", err)
			}
			return nil
		})
	})
	t.Run("no answer", func(t *testing.T) {
		inNS(t, p.A, func() error {
			if err := sendOne(neighAbsent); err != nil {
				return err
			}
			// The entry is INCOMPLETE for the kernel's retransmissions
			// (3 probes a second apart by default), then FAILED, and may
			// then be removed: a stalled machine could see that already.
			mac, complete, err := Neighbor(p.AIf, neighAbsent)
			switch {
			case err == nil && !complete && mac == nil:
			case errors.Is(err, ErrNoNeighbor):
				t.Logf("entry gone already: %v", err)
			default:
				t.Errorf("Neighbor right after the send = %v, %t, %v; want incomplete", mac, complete, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			mac, err = WaitNeighbor(ctx, p.AIf, neighAbsent, 5*time.Millisecond)
			if !errors.Is(err, context.DeadlineExceeded) || mac != nil {
				return fmt.Errorf("WaitNeighbor = %v, %v; want context.DeadlineExceeded", mac, err)
			}
			if !errors.Is(err, ErrNeighborIncomplete) && !errors.Is(err, ErrNoNeighbor) {
				t.Errorf("WaitNeighbor error %q does not say the last state", err)
			}
			t.Logf("WaitNeighbor: %v", err)
			return nil
		})
	})
	t.Run("bad interface", func(t *testing.T) {
		inNS(t, p.A, func() error {
			for _, name := range []string{"pnpd-no-such0", "", "a-name-longer-than-15", "lo\x00x"} {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := WaitNeighbor(ctx, name, p.BAddr.Addr(), 0)
				if !errors.Is(err, ErrNoInterface) || ctx.Err() != nil {
					t.Errorf("WaitNeighbor(%q): %v (ctx %v); want ErrNoInterface at once", name, err, ctx.Err())
				}
				cancel()
				if _, _, err := Neighbor(name, p.BAddr.Addr()); !errors.Is(err, ErrNoInterface) || !strings.Contains(err.Error(), "interface") {
					t.Errorf("Neighbor(%q): %v; want ErrNoInterface", name, err)
				}
			}
			// Loopback has no ARP: said so, not taken for a missing entry.
			if _, _, err := Neighbor("lo", p.AAddr.Addr()); !errors.Is(err, ErrNotEthernet) {
				t.Errorf("Neighbor(lo): %v; want ErrNotEthernet", err)
			}
			return nil
		})
		// The link is not visible from the test's own namespace.
		if _, _, err := Neighbor(p.AIf, p.BAddr.Addr()); !errors.Is(err, ErrNoInterface) {
			t.Errorf("Neighbor outside the namespace: %v; want ErrNoInterface", err)
		}
	})
}

// BenchmarkNeighbor looks up a complete entry: socket, two ioctls, close.
func BenchmarkNeighbor(b *testing.B) {
	p, bMAC := neighLab(b)
	b.ReportAllocs()
	err := p.A.Do(func() error {
		for b.Loop() {
			mac, complete, err := Neighbor(p.AIf, p.BAddr.Addr())
			if err != nil || !complete || len(mac) != len(bMAC) {
				return errors.Join(err, errors.New("entry not complete"))
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}
