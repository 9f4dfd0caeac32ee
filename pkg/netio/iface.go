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
	// ErrIfaceGone: Send on an interface the Listener no longer holds
	// (deleted, down, its address changed, or the Listener closed).
	ErrIfaceGone = errors.New("netio: interface gone")
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
			c, why, err := candidate(ifi)
			if err != nil {
				why = err.Error()
			}
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
		c, why, err := candidate(*ifi)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: interface %q: %w", ErrNoInterface, name, err)
		}
		if why != "" {
			return nil, nil, fmt.Errorf("%w: interface %q: %s", ErrNoInterface, name, why)
		}
		chosen = append(chosen, c)
	}
	return chosen, nil, nil
}

// current applies Choose's rule again while the Listener serves, without
// its errors: a named interface that is missing or unusable is left out
// (it is taken again when it is back), and none at all is no error. An
// error says the interfaces could not be read at all; the caller must
// then keep what it has rather than take it for "all gone".
func current(names []string) ([]Candidate, error) {
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("netio: list interfaces: %w", err)
	}
	var chosen []Candidate
	consider := func(ifi net.Interface) error {
		c, why, err := candidate(ifi)
		if err != nil {
			return fmt.Errorf("netio: interface %s: %w", ifi.Name, err)
		}
		if why == "" {
			chosen = append(chosen, c)
		}
		return nil
	}
	if len(names) == 0 {
		for _, ifi := range all {
			if ifi.Flags&net.FlagLoopback != 0 {
				continue
			}
			if err := consider(ifi); err != nil {
				return nil, err
			}
		}
		return chosen, nil
	}
	seen := map[string]bool{}
	for _, name := range names {
		if seen[name] {
			continue
		}
		seen[name] = true
		if ifi, ok := byName(all, name); ok {
			if err := consider(ifi); err != nil {
				return nil, err
			}
		}
	}
	return chosen, nil
}

func byName(all []net.Interface, name string) (net.Interface, bool) {
	for _, ifi := range all {
		if ifi.Name == name {
			return ifi, true
		}
	}
	return net.Interface{}, false
}

// candidate says whether ifi can carry the group: why is "" when it can,
// else the reason it cannot; err means its addresses could not be read.
func candidate(ifi net.Interface) (c Candidate, why string, err error) {
	if ifi.Flags&net.FlagUp == 0 {
		return Candidate{}, "down", nil
	}
	if ifi.Flags&net.FlagMulticast == 0 {
		return Candidate{}, "not multicast-capable", nil
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return Candidate{}, "", fmt.Errorf("addresses: %w", err)
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
		return Candidate{Name: ifi.Name, Index: ifi.Index, Prefix: netip.PrefixFrom(ip, ones)}, "", nil
	}
	return Candidate{}, "no IPv4 address", nil
}

// unusable says why the interface with that index is no candidate any
// more: "deleted", or candidate's reason; "" when it still is one.
func unusable(index int) (why string, up bool) {
	ifi, err := net.InterfaceByIndex(index)
	if err != nil {
		return "deleted", false
	}
	up = ifi.Flags&net.FlagUp != 0
	if _, why, err := candidate(*ifi); err != nil || why != "" {
		if err != nil {
			why = err.Error()
		}
		return why, up
	}
	return "", up
}
