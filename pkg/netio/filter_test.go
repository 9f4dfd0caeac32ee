package netio

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/bpf"
)

var testGroup = netip.MustParseAddrPort("224.0.1.75:5060")

// ipPacket builds an IPv4 packet with a correct header checksum.
func ipPacket(proto byte, src, dst netip.Addr, opts []byte, frag uint16, payload []byte) []byte {
	hl := 20 + len(opts)
	b := make([]byte, hl+len(payload))
	b[0] = 0x40 | byte(hl/4)
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	binary.BigEndian.PutUint16(b[6:8], frag)
	b[8] = 64
	b[9] = proto
	copy(b[12:16], src.AsSlice())
	copy(b[16:20], dst.AsSlice())
	copy(b[20:], opts)
	binary.BigEndian.PutUint16(b[10:12], checksum(b[:hl]))
	copy(b[hl:], payload)
	return b
}

func udpPacket(sport, dport uint16, data []byte) []byte {
	b := make([]byte, 8+len(data))
	binary.BigEndian.PutUint16(b[0:2], sport)
	binary.BigEndian.PutUint16(b[2:4], dport)
	binary.BigEndian.PutUint16(b[4:6], uint16(len(b)))
	copy(b[8:], data)
	return b
}

func TestGroupFilter(t *testing.T) {
	phone := netip.MustParseAddr("198.18.0.2")
	host := netip.MustParseAddr("198.18.0.1")
	sub := []byte("SUBSCRIBE sip:MAC%3a001fc11b4e1c@224.0.1.75 SIP/2.0\r\n\r\n")
	ra := []byte{0x94, 4, 0, 0}
	query := []byte{0x11, 100, 0xee, 0x9b, 0, 0, 0, 0}
	cases := []struct {
		name string
		pkt  []byte
		igmp bool
		pass bool
	}{
		{"SUBSCRIBE to the group", ipPacket(17, phone, testGroup.Addr(), nil, 0, udpPacket(5060, 5060, sub)), false, true},
		{"with IP options", ipPacket(17, phone, testGroup.Addr(), ra, 0, udpPacket(5060, 5060, sub)), false, true},
		{"don't-fragment bit", ipPacket(17, phone, testGroup.Addr(), nil, 0x4000, udpPacket(5060, 5060, sub)), false, true},
		{"RTP to the host", ipPacket(17, phone, host, nil, 0, udpPacket(10000, 10002, make([]byte, 172))), false, false},
		{"group, other port", ipPacket(17, phone, testGroup.Addr(), nil, 0, udpPacket(5060, 5061, sub)), false, false},
		{"unicast to 5060", ipPacket(17, phone, host, nil, 0, udpPacket(5060, 5060, sub)), false, false},
		{"first fragment", ipPacket(17, phone, testGroup.Addr(), nil, 0x2000, udpPacket(5060, 5060, sub)), false, false},
		{"later fragment", ipPacket(17, phone, testGroup.Addr(), nil, 0x0010, sub), false, false},
		{"TCP to the group", ipPacket(6, phone, testGroup.Addr(), nil, 0, udpPacket(5060, 5060, sub)), true, false},
		{"IPv6", append([]byte{0x60}, make([]byte, 60)...), true, false},
		{"IGMP query, raw filter", ipPacket(2, host, allHosts, ra, 0, query), false, false},
		{"IGMP general query", ipPacket(2, host, allHosts, ra, 0, query), true, true},
		{"IGMP to the group", ipPacket(2, host, testGroup.Addr(), ra, 0, query), true, true},
		{"IGMP to another group", ipPacket(2, host, netip.MustParseAddr("239.1.1.1"), ra, 0, query), true, false},
		{"SUBSCRIBE, packet filter", ipPacket(17, phone, testGroup.Addr(), nil, 0, udpPacket(5060, 5060, sub)), true, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The VM has no pkt_type, so the outgoing check is left out here;
			// the namespace tests run it in the kernel.
			raw, err := groupFilter(testGroup, c.igmp, false)
			if err != nil {
				t.Fatal(err)
			}
			ins, ok := bpf.Disassemble(raw)
			if !ok {
				t.Fatalf("disassemble: %v", ins)
			}
			vm, err := bpf.NewVM(ins)
			if err != nil {
				t.Fatal(err)
			}
			n, err := vm.Run(c.pkt)
			if err != nil {
				t.Fatal(err)
			}
			if got := n > 0; got != c.pass {
				t.Errorf("passed %d bytes, want pass=%t", n, c.pass)
			}
		})
	}
	if _, err := groupFilter(testGroup, true, true); err != nil {
		t.Errorf("packet filter: %v", err)
	}
}

func TestParseIPv4(t *testing.T) {
	phone := netip.MustParseAddr("198.18.0.2")
	good := ipPacket(17, phone, testGroup.Addr(), nil, 0, udpPacket(5059, 5060, []byte("hello")))
	badSum := append([]byte(nil), good...)
	badSum[8]--                                                // TTL changed, checksum not
	padded := append(append([]byte(nil), good...), 0, 0, 0, 0) // Ethernet padding
	cases := []struct {
		name string
		b    []byte
		why  string
	}{
		{"good", good, ""},
		{"padded", padded, ""},
		{"short", good[:19], "not IPv4"},
		{"truncated", good[:30], "bad IPv4 lengths"},
		{"bad checksum", badSum, "bad IPv4 header checksum"},
		{"fragment", ipPacket(17, phone, testGroup.Addr(), nil, 0x2000, nil), "IPv4 fragment"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, why := parseIPv4(c.b)
			if why != c.why {
				t.Fatalf("why %q, want %q", why, c.why)
			}
			if why != "" {
				return
			}
			sport, dport, data, why := parseUDP(p.payload)
			if why != "" || p.src != phone || p.dst != testGroup.Addr() || sport != 5059 || dport != 5060 || string(data) != "hello" {
				t.Errorf("got %v %d %d %q %q", p, sport, dport, data, why)
			}
		})
	}
	for _, b := range [][]byte{nil, {0, 1, 0, 2}, udpPacket(1, 2, nil)[:7], {0, 1, 0, 2, 0, 200, 0, 0}} {
		if _, _, _, why := parseUDP(b); why == "" {
			t.Errorf("parseUDP(% x) accepted", b)
		}
	}
}

func FuzzParseIPv4(f *testing.F) {
	phone := netip.MustParseAddr("198.18.0.2")
	f.Add(ipPacket(17, phone, testGroup.Addr(), nil, 0, udpPacket(5059, 5060, []byte("SUBSCRIBE"))))
	f.Add(ipPacket(2, phone, allHosts, []byte{0x94, 4, 0, 0}, 0, []byte{0x11, 100, 0, 0, 0, 0, 0, 0}))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, why := parseIPv4(b)
		if why != "" {
			return
		}
		if len(p.payload) > len(b)-20 {
			t.Fatalf("payload %d bytes from a %d-byte packet", len(p.payload), len(b))
		}
		if _, _, data, why := parseUDP(p.payload); why == "" && len(data) > len(p.payload)-8 {
			t.Fatalf("UDP data %d bytes from %d", len(data), len(p.payload))
		}
		m := &igmpMember{group: testGroup.Addr(), ifaces: map[int]*igmpIface{}}
		m.query(1, p.payload) // no interface 1: parsed, never sent
	})
}

func TestV3MaxResp(t *testing.T) {
	for code, want := range map[byte]time.Duration{
		0: 0, 100: 10 * time.Second, 127: 12700 * time.Millisecond,
		128:  12800 * time.Millisecond, // mant 0, exp 0: 16 << 3 tenths
		0xff: 3174400 * time.Millisecond,
	} {
		if got := v3MaxResp(code); got != want {
			t.Errorf("v3MaxResp(%d) = %s, want %s", code, got, want)
		}
	}
}

func TestGroupMAC(t *testing.T) {
	got := groupMAC(netip.MustParseAddr("224.0.1.75"))
	if want := [8]byte{0x01, 0x00, 0x5e, 0x00, 0x01, 0x4b}; got != want {
		t.Errorf("groupMAC = % x, want % x", got, want)
	}
	// The top bit of the second octet is not mapped.
	if got := groupMAC(netip.MustParseAddr("239.129.1.75")); got[3] != 0x01 {
		t.Errorf("groupMAC(239.129.1.75) = % x", got)
	}
}
