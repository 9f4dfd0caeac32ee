package netio

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestAccept(t *testing.T) {
	eth := &Iface{name: "eth0", index: 2}
	l := &Listener{group: netip.MustParseAddrPort("224.0.1.75:5060")}
	l.set.Store(newIfaceSet([]*Iface{eth}))
	group := netip.MustParseAddr("224.0.1.75")
	for _, tt := range []struct {
		name    string
		ifindex int
		dst     netip.Addr
		info    bool
		ok      bool
	}{
		{"chosen, to the group", 2, group, true, true},
		{"interface not chosen", 3, group, true, false},
		{"another group", 2, netip.MustParseAddr("224.0.1.76"), true, false},
		{"unicast", 2, netip.MustParseAddr("198.18.0.1"), true, false},
		{"no packet info", 2, group, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ifc, why := l.accept(tt.ifindex, tt.dst, tt.info)
			if tt.ok != (why == "") || tt.ok != (ifc == eth) {
				t.Errorf("accept = %v, %q", ifc, why)
			}
		})
	}
}

// cmsg builds one control message as the kernel lays it out.
func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

func TestPktinfo(t *testing.T) {
	info := make([]byte, unix.SizeofInet4Pktinfo)
	binary.NativeEndian.PutUint32(info[0:4], 7)
	copy(info[4:8], []byte{198, 18, 0, 1})  // ipi_spec_dst
	copy(info[8:12], []byte{224, 0, 1, 75}) // ipi_addr: where it was sent
	ttl := cmsg(unix.IPPROTO_IP, unix.IP_TTL, []byte{1, 0, 0, 0})
	for _, tt := range []struct {
		name    string
		oob     []byte
		ok      bool
		ifindex int
	}{
		{"alone", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, info), true, 7},
		{"after another", append(ttl, cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, info)...), true, 7},
		{"none", ttl, false, 0},
		{"empty", nil, false, 0},
		{"truncated", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, info)[:unix.CmsgLen(4)], false, 0},
		{"short data", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, info[:4]), false, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ifindex, dst, ok := pktinfo(tt.oob)
			if ok != tt.ok || ifindex != tt.ifindex || (ok && netip.AddrFrom4(dst).String() != "224.0.1.75") {
				t.Errorf("pktinfo = %d, %v, %t", ifindex, dst, ok)
			}
		})
	}
}

// BenchmarkAccept is the group reader's per-datagram check of the arrival
// interface: with Config.Watch the interfaces may change under it, and it
// must still cost one atomic load and a map lookup, no lock.
func BenchmarkAccept(b *testing.B) {
	group := netip.MustParseAddrPort("224.0.1.75:5060")
	var list []*Iface
	for i := 2; i < 6; i++ {
		list = append(list, &Iface{name: "eth", index: i})
	}
	l := &Listener{group: group}
	l.set.Store(newIfaceSet(list))
	b.ReportAllocs()
	for b.Loop() {
		if _, why := l.accept(3, group.Addr(), true); why != "" {
			b.Fatal(why)
		}
	}
}
