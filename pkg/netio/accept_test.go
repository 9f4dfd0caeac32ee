package netio

import (
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/ipv4"
)

func TestAccept(t *testing.T) {
	eth := &Iface{name: "eth0", index: 2}
	l := &Listener{group: netip.MustParseAddrPort("224.0.1.75:5060"), byIdx: map[int]*Iface{2: eth}}
	for _, tt := range []struct {
		name string
		cm   *ipv4.ControlMessage
		ok   bool
	}{
		{"chosen, to the group", &ipv4.ControlMessage{IfIndex: 2, Dst: net.IPv4(224, 0, 1, 75)}, true},
		{"interface not chosen", &ipv4.ControlMessage{IfIndex: 3, Dst: net.IPv4(224, 0, 1, 75)}, false},
		{"another group", &ipv4.ControlMessage{IfIndex: 2, Dst: net.IPv4(224, 0, 1, 76)}, false},
		{"unicast", &ipv4.ControlMessage{IfIndex: 2, Dst: net.IPv4(198, 18, 0, 1)}, false},
		{"no destination", &ipv4.ControlMessage{IfIndex: 2}, false},
		{"no packet info", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ifc, why := l.accept(tt.cm)
			if tt.ok != (why == "") || tt.ok != (ifc == eth) {
				t.Errorf("accept = %v, %q", ifc, why)
			}
		})
	}
}
