package netio

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Errors returned by this package.
var (
	ErrNoInterface = errors.New("netio: no usable interface")
	ErrClosed      = errors.New("netio: listener closed")
	// ErrNotEthernet: packet mode needs an interface with an Ethernet
	// address to map the group onto.
	ErrNotEthernet = errors.New("not an Ethernet interface")
)

// Candidate is an interface that can carry the group, with its first IPv4
// address.
type Candidate struct {
	Name   string
	Index  int
	Prefix netip.Prefix // the interface's address and subnet
}

// Choose returns the interfaces to join the group on. With names empty it
// takes every up, multicast-capable, non-loopback interface that has an
// IPv4 address; a named interface that is missing, down, not multicast
// capable or without an IPv4 address is an error that says which.
// skipped lists interfaces passed over by the default choice, and why.
func Choose(names []string) (chosen []Candidate, skipped []string, err error) {
	if len(names) == 0 {
		all, err := net.Interfaces()
		if err != nil {
			return nil, nil, fmt.Errorf("netio: list interfaces: %w", err)
		}
		for _, ifi := range all {
			if ifi.Flags&net.FlagLoopback != 0 {
				continue
			}
			c, why := candidate(ifi)
			if why != "" {
				skipped = append(skipped, ifi.Name+": "+why)
				continue
			}
			chosen = append(chosen, c)
		}
		if len(chosen) == 0 {
			return nil, skipped, fmt.Errorf("%w: no up, multicast-capable interface with an IPv4 address (passed over: %s)",
				ErrNoInterface, strings.Join(skipped, "; "))
		}
		return chosen, skipped, nil
	}
	seen := map[string]bool{}
	for _, name := range names {
		if seen[name] {
			continue
		}
		seen[name] = true
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: interface %q: %w", ErrNoInterface, name, err)
		}
		c, why := candidate(*ifi)
		if why != "" {
			return nil, nil, fmt.Errorf("%w: interface %q: %s", ErrNoInterface, name, why)
		}
		chosen = append(chosen, c)
	}
	return chosen, nil, nil
}

func candidate(ifi net.Interface) (Candidate, string) {
	if ifi.Flags&net.FlagUp == 0 {
		return Candidate{}, "down"
	}
	if ifi.Flags&net.FlagMulticast == 0 {
		return Candidate{}, "not multicast-capable"
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return Candidate{}, "addresses: " + err.Error()
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if !ip.Is4() {
			continue
		}
		ones, _ := ipn.Mask.Size()
		return Candidate{Name: ifi.Name, Index: ifi.Index, Prefix: netip.PrefixFrom(ip, ones)}, ""
	}
	return Candidate{}, "no IPv4 address"
}
