package netio

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/net/bpf"
)

// Classic BPF programs for the raw and packet sockets. Both kinds of
// socket hand the filter a buffer that starts at the IPv4 header, so one
// program serves both. On a live PBX the host carries heavy RTP: the
// kernel must drop everything but the group's datagrams before user space
// sees it.

// Constants of the wire formats the filters and parsers read.
const (
	protoIGMP      = 2
	protoUDP       = 17
	packetOutgoing = 4 // PACKET_OUTGOING, skb->pkt_type of what this host sends
	acceptAll      = 0x40000
)

// allHosts is 224.0.0.1, where IGMP general queries go.
var allHosts = netip.AddrFrom4([4]byte{224, 0, 0, 1})

// groupFilter returns the program: pass UDP datagrams sent to group (its
// address and port) that are not fragments; with igmp, also pass IGMP
// messages sent to the group or to 224.0.0.1 (the queries). With outgoing
// it first drops what this host sends (packet sockets see both ways).
func groupFilter(group netip.AddrPort, igmp, outgoing bool) ([]bpf.RawInstruction, error) {
	var a asm
	if outgoing {
		a.op(bpf.LoadExtension{Num: bpf.ExtType})
		a.jump(bpf.JumpEqual, packetOutgoing, "drop", "")
	}
	ga := binary.BigEndian.Uint32(group.Addr().AsSlice())
	a.op(bpf.LoadAbsolute{Off: 0, Size: 1})
	a.op(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0})
	a.jump(bpf.JumpEqual, 0x40, "", "drop")
	a.op(bpf.LoadAbsolute{Off: 9, Size: 1})
	a.jump(bpf.JumpEqual, protoUDP, "", "igmp")
	a.op(bpf.LoadAbsolute{Off: 16, Size: 4})
	a.jump(bpf.JumpEqual, ga, "", "drop")
	a.op(bpf.LoadAbsolute{Off: 6, Size: 2})
	a.jump(bpf.JumpBitsSet, 0x3fff, "drop", "") // MF or a fragment offset
	a.op(bpf.LoadMemShift{Off: 0})
	a.op(bpf.LoadIndirect{Off: 2, Size: 2})
	a.jump(bpf.JumpEqual, uint32(group.Port()), "", "drop")
	a.op(bpf.RetConstant{Val: acceptAll})
	a.label("igmp")
	if igmp {
		a.jump(bpf.JumpEqual, protoIGMP, "", "drop")
		a.op(bpf.LoadAbsolute{Off: 16, Size: 4})
		a.jump(bpf.JumpEqual, ga, "accept", "")
		a.jump(bpf.JumpEqual, binary.BigEndian.Uint32(allHosts.AsSlice()), "accept", "drop")
		a.label("accept")
		a.op(bpf.RetConstant{Val: acceptAll})
	}
	a.label("drop")
	a.op(bpf.RetConstant{Val: 0})
	return a.assemble()
}

// asm is a tiny assembler with forward labels; "" as a jump target means
// the next instruction.
type asm struct {
	ins    []bpf.Instruction
	jumps  map[int][2]string
	labels map[string]int
}

func (a *asm) op(i bpf.Instruction) { a.ins = append(a.ins, i) }

func (a *asm) jump(cond bpf.JumpTest, val uint32, ifTrue, ifFalse string) {
	if a.jumps == nil {
		a.jumps = map[int][2]string{}
	}
	a.jumps[len(a.ins)] = [2]string{ifTrue, ifFalse}
	a.ins = append(a.ins, bpf.JumpIf{Cond: cond, Val: val})
}

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.ins)
}

func (a *asm) assemble() ([]bpf.RawInstruction, error) {
	for at, t := range a.jumps {
		j := a.ins[at].(bpf.JumpIf)
		for k, name := range t {
			skip := 0
			if name != "" {
				to, ok := a.labels[name]
				if !ok || to <= at || to-at-1 > 255 {
					return nil, fmt.Errorf("netio: filter: bad jump to %q", name)
				}
				skip = to - at - 1
			}
			if k == 0 {
				j.SkipTrue = uint8(skip)
			} else {
				j.SkipFalse = uint8(skip)
			}
		}
		a.ins[at] = j
	}
	return bpf.Assemble(a.ins)
}

// ipv4Packet is what parseIPv4 found in a buffer that starts at an IPv4
// header.
type ipv4Packet struct {
	src, dst netip.Addr
	proto    byte
	payload  []byte // after the header, up to the header's total length
}

// parseIPv4 checks an IPv4 header (version, lengths, checksum, not a
// fragment) and returns its fields. The packet socket hands over what the
// link carried, so nothing is trusted.
func parseIPv4(b []byte) (ipv4Packet, string) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return ipv4Packet{}, "not IPv4"
	}
	hl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if hl < 20 || total < hl || total > len(b) {
		return ipv4Packet{}, "bad IPv4 lengths"
	}
	if binary.BigEndian.Uint16(b[6:8])&0x3fff != 0 {
		return ipv4Packet{}, "IPv4 fragment"
	}
	if checksum(b[:hl]) != 0 {
		return ipv4Packet{}, "bad IPv4 header checksum"
	}
	return ipv4Packet{
		src:     netip.AddrFrom4([4]byte(b[12:16])),
		dst:     netip.AddrFrom4([4]byte(b[16:20])),
		proto:   b[9],
		payload: b[hl:total],
	}, ""
}

// parseUDP returns the source port, destination port and payload of a UDP
// datagram. The checksum is not checked: on virtual links the sender
// leaves it to an offload that never runs, and the link layer checked the
// frame.
func parseUDP(b []byte) (sport, dport uint16, payload []byte, why string) {
	if len(b) < 8 {
		return 0, 0, nil, "short UDP header"
	}
	n := int(binary.BigEndian.Uint16(b[4:6]))
	if n < 8 || n > len(b) {
		return 0, 0, nil, "bad UDP length"
	}
	return binary.BigEndian.Uint16(b[0:2]), binary.BigEndian.Uint16(b[2:4]), b[8:n], ""
}

// checksum is the Internet checksum (RFC 1071) of b; over a header that
// carries its own checksum it is 0 when the header is intact.
func checksum(b []byte) uint16 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
