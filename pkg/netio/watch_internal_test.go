package netio

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestDiffIfaces(t *testing.T) {
	eth0 := Candidate{"eth0", 2, netip.MustParsePrefix("198.18.0.1/24")}
	eth1 := Candidate{"eth1", 3, netip.MustParsePrefix("198.18.1.1/24")}
	ifc := func(c Candidate) *Iface { return &Iface{name: c.Name, index: c.Index, prefix: c.Prefix} }
	with := func(c Candidate, f func(*Candidate)) Candidate { f(&c); return c }
	newIndex := with(eth0, func(c *Candidate) { c.Index = 9 })
	newAddr := with(eth0, func(c *Candidate) { c.Prefix = netip.MustParsePrefix("198.18.5.1/24") })
	newMask := with(eth0, func(c *Candidate) { c.Prefix = netip.MustParsePrefix("198.18.0.1/16") })
	renamed := with(eth0, func(c *Candidate) { c.Name = "lan0" })
	for _, tt := range []struct {
		name      string
		held      []Candidate
		now       []Candidate
		deleted   []int
		wantGone  []Candidate
		wantAdded []Candidate
	}{
		{"nothing changed", []Candidate{eth0, eth1}, []Candidate{eth0, eth1}, nil, nil, nil},
		{"order of the listing changed", []Candidate{eth0, eth1}, []Candidate{eth1, eth0}, nil, nil, nil},
		{"created after start", []Candidate{eth0}, []Candidate{eth0, eth1}, nil, nil, []Candidate{eth1}},
		{"deleted", []Candidate{eth0, eth1}, []Candidate{eth1}, nil, []Candidate{eth0}, nil},
		{"deleted and created again: new index", []Candidate{eth0}, []Candidate{newIndex}, nil, []Candidate{eth0}, []Candidate{newIndex}},
		{"address changed", []Candidate{eth0, eth1}, []Candidate{newAddr, eth1}, nil, []Candidate{eth0}, []Candidate{newAddr}},
		{"prefix length changed", []Candidate{eth0}, []Candidate{newMask}, nil, []Candidate{eth0}, []Candidate{newMask}},
		{"renamed", []Candidate{eth0}, []Candidate{renamed}, nil, []Candidate{eth0}, []Candidate{renamed}},
		{"deleted and created again with the same index", []Candidate{eth0, eth1}, []Candidate{eth0, eth1}, []int{2}, []Candidate{eth0}, []Candidate{eth0}},
		{"deletion of a link not held", []Candidate{eth0}, []Candidate{eth0}, []int{7}, nil, nil},
		{"all gone", []Candidate{eth0, eth1}, nil, nil, []Candidate{eth0, eth1}, nil},
		{"first one after none", nil, []Candidate{eth1}, nil, nil, []Candidate{eth1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var held []*Iface
			for _, c := range tt.held {
				held = append(held, ifc(c))
			}
			deleted := map[int]bool{}
			for _, i := range tt.deleted {
				deleted[i] = true
			}
			gone, added := diffIfaces(held, tt.now, deleted)
			var goneC []Candidate
			for _, g := range gone {
				goneC = append(goneC, g.candidate())
			}
			if !slices.Equal(goneC, tt.wantGone) || !slices.Equal(added, tt.wantAdded) {
				t.Errorf("gone %v, added %v; want gone %v, added %v", goneC, added, tt.wantGone, tt.wantAdded)
			}
		})
	}
}

// nlmsg builds one netlink message as the kernel lays it out, padded to
// the alignment.
func nlmsg(typ uint16, body []byte) []byte {
	n := unix.NLMSG_HDRLEN + len(body)
	b := make([]byte, (n+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1))
	binary.NativeEndian.PutUint32(b[0:4], uint32(n))
	binary.NativeEndian.PutUint16(b[4:6], typ)
	copy(b[unix.NLMSG_HDRLEN:], body)
	return b
}

// ifinfo is a struct ifinfomsg with its family and index, and an
// attribute after it (the name, say) of extra bytes.
func ifinfo(family byte, index int32, extra int) []byte {
	b := make([]byte, unix.SizeofIfInfomsg+extra)
	b[0] = family
	binary.NativeEndian.PutUint32(b[4:8], uint32(index))
	return b
}

func TestDeletedLinks(t *testing.T) {
	del7 := nlmsg(unix.RTM_DELLINK, ifinfo(unix.AF_UNSPEC, 7, 9)) // 9: not aligned
	del8 := nlmsg(unix.RTM_DELLINK, ifinfo(unix.AF_UNSPEC, 8, 0))
	newLink := nlmsg(unix.RTM_NEWLINK, ifinfo(unix.AF_UNSPEC, 5, 12))
	newAddr := nlmsg(unix.RTM_NEWADDR, []byte{unix.AF_INET, 24, 0, 0, 6, 0, 0, 0})
	bridgePort := nlmsg(unix.RTM_DELLINK, ifinfo(unix.AF_BRIDGE, 4, 8))
	for _, tt := range []struct {
		name string
		b    []byte
		want []int
	}{
		{"one deletion", del7, []int{7}},
		{"among others", slices.Concat(newLink, del7, newAddr, del8), []int{7, 8}},
		{"link and address reports only", slices.Concat(newLink, newAddr), nil},
		{"a port leaving a bridge is no deletion", bridgePort, nil},
		{"empty", nil, nil},
		{"short header", del7[:unix.NLMSG_HDRLEN-1], nil},
		{"length beyond the buffer", del7[:unix.NLMSG_HDRLEN+4], nil},
		{"ifinfomsg cut short", nlmsg(unix.RTM_DELLINK, make([]byte, 6)), nil},
		{"length below the header", func() []byte {
			b := slices.Clone(del7)
			binary.NativeEndian.PutUint32(b[0:4], 3)
			return b
		}(), nil},
		{"last message unpadded", slices.Concat(del8, del7[:unix.NLMSG_HDRLEN+unix.SizeofIfInfomsg+9]), []int{8, 7}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := deletedLinks(tt.b); !slices.Equal(got, tt.want) {
				t.Errorf("deletedLinks = %v, want %v", got, tt.want)
			}
		})
	}
}

func FuzzDeletedLinks(f *testing.F) {
	f.Add(nlmsg(unix.RTM_DELLINK, ifinfo(unix.AF_UNSPEC, 7, 9)))
	f.Add(slices.Concat(nlmsg(unix.RTM_NEWLINK, ifinfo(0, 5, 12)), nlmsg(unix.RTM_DELLINK, ifinfo(0, 8, 0))))
	f.Fuzz(func(t *testing.T, b []byte) {
		if got := deletedLinks(b); len(got) > len(b)/(unix.NLMSG_HDRLEN+unix.SizeofIfInfomsg) {
			t.Fatalf("%d deletions from %d bytes", len(got), len(b))
		}
	})
}
