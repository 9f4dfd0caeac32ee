package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/pnpd/pnpd/pkg/netns"
)

// Addresses of the lab. The responder's end of the link has 10.64.0.1/10,
// the phones' end 10.64.0.2/10, and the phones' namespace treats all of
// PhoneNet as its own (a local route), so that each phone has an address of
// its own that the responder reaches on the link, resolving it with ARP as
// on a real LAN.
var (
	linkNet  = netip.MustParsePrefix("10.64.0.0/10")
	PhoneNet = netip.MustParsePrefix("10.100.0.0/16")
)

// NSPrefix starts the names of the lab's namespaces; `pnpd bench` removes
// those a killed run left behind.
const NSPrefix = "pnpbench"

// neighSysctl is the neighbour table's garbage-collection thresholds. The
// table is one for all namespaces, so these are the machine's.
const neighSysctl = "/proc/sys/net/ipv4/neigh/default/"

// Lab is two namespaces joined by a veth link: the responder's and the
// phones'.
type Lab struct {
	Pair          *netns.Pair
	Resp, Phones  *netns.NS
	RespIf, PhIf  string
	RespAddr      netip.Addr
	log           *slog.Logger
	restoreNeighs func() error
}

// NewLab makes the namespaces and sizes the neighbour table for phones
// addresses (raising the machine's thresholds until Close when they are
// lower).
func NewLab(ctx context.Context, phones int, log *slog.Logger) (l *Lab, err error) {
	if err := netns.Check(); err != nil {
		return nil, err
	}
	if _, err := netns.RemoveStale(ctx, NSPrefix); err != nil {
		log.Warn("removing namespaces of an earlier run", "err", err)
	}
	p, err := netns.NewPair(ctx, netns.Options{Prefix: NSPrefix, Subnet: linkNet})
	if err != nil {
		return nil, err
	}
	l = &Lab{Pair: p, Resp: p.A, Phones: p.B, RespIf: p.AIf, PhIf: p.BIf, RespAddr: p.AAddr.Addr(), log: log}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
			l = nil
		}
	}()
	if _, err := l.Phones.IP(ctx, "route", "add", "local", PhoneNet.String(), "dev", "lo"); err != nil {
		return l, err
	}
	l.restoreNeighs, err = sizeNeighbours(phones+1024, log)
	return l, err
}

// Close removes the namespaces and puts the neighbour thresholds back.
func (l *Lab) Close() error {
	var errs []error
	if l.Pair != nil {
		errs = append(errs, l.Pair.Close())
	}
	if l.restoreNeighs != nil {
		errs = append(errs, l.restoreNeighs())
	}
	return errors.Join(errs...)
}

// FlushNeighbours forgets the responder's neighbours, so that each
// responder resolves the phones' addresses itself.
func (l *Lab) FlushNeighbours(ctx context.Context) error {
	_, err := l.Resp.IP(ctx, "neigh", "flush", "dev", l.RespIf)
	return err
}

// sizeNeighbours raises gc_thresh2 and gc_thresh3 to at least n and returns
// what puts the old values back.
func sizeNeighbours(n int, log *slog.Logger) (func() error, error) {
	var restore []func() error
	undo := func() error {
		var errs []error
		// gc_thresh2 must stay at most gc_thresh3: lower it first.
		for i := len(restore) - 1; i >= 0; i-- {
			errs = append(errs, restore[i]())
		}
		return errors.Join(errs...)
	}
	for _, name := range []string{"gc_thresh3", "gc_thresh2"} {
		path := neighSysctl + name
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("bench: reading %s: %w", path, err), undo())
		}
		old, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, errors.Join(fmt.Errorf("bench: %s: %w", path, err), undo())
		}
		if old >= n {
			continue
		}
		if err := os.WriteFile(path, []byte(strconv.Itoa(n)), 0o644); err != nil {
			return nil, errors.Join(fmt.Errorf("bench: raising %s to %d for the phones' addresses: %w", path, n, err), undo())
		}
		log.Info("neighbour table raised until the bench ends", "sysctl", path, "from", old, "to", n)
		restore = append(restore, func() error { return os.WriteFile(path, []byte(strconv.Itoa(old)), 0o644) })
	}
	return undo, nil
}

// UDPCounters are a namespace's UDP counters (/proc/net/snmp).
type UDPCounters struct {
	InDatagrams, NoPorts, InErrors, OutDatagrams, RcvbufErrors, SndbufErrors uint64
}

// Sub returns c - o.
func (c UDPCounters) Sub(o UDPCounters) UDPCounters {
	return UDPCounters{
		c.InDatagrams - o.InDatagrams, c.NoPorts - o.NoPorts, c.InErrors - o.InErrors,
		c.OutDatagrams - o.OutDatagrams, c.RcvbufErrors - o.RcvbufErrors, c.SndbufErrors - o.SndbufErrors,
	}
}

// ReadUDPCounters reads ns's UDP counters.
func ReadUDPCounters(ns *netns.NS) (UDPCounters, error) {
	var b []byte
	err := ns.Do(func() (err error) {
		b, err = os.ReadFile("/proc/thread-self/net/snmp")
		return err
	})
	if err != nil {
		return UDPCounters{}, err
	}
	return parseSNMP(b)
}

// parseSNMP reads the Udp lines of /proc/net/snmp: a line of names, then a
// line of values.
func parseSNMP(b []byte) (UDPCounters, error) {
	var names []string
	var c UDPCounters
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f[1:]
			continue
		}
		fields := map[string]*uint64{
			"InDatagrams": &c.InDatagrams, "NoPorts": &c.NoPorts, "InErrors": &c.InErrors,
			"OutDatagrams": &c.OutDatagrams, "RcvbufErrors": &c.RcvbufErrors, "SndbufErrors": &c.SndbufErrors,
		}
		for i, v := range f[1:] {
			if i < len(names) && fields[names[i]] != nil {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					return c, fmt.Errorf("bench: /proc/net/snmp %s: %w", names[i], err)
				}
				*fields[names[i]] = n
			}
		}
		return c, nil
	}
	return c, errors.New("bench: no Udp counters in /proc/net/snmp")
}

// forward accepts connections on l and joins each to a new connection made
// by dial, until l is closed: the bench's own AMI client, in the machine's
// namespace, reaches an Asterisk inside the lab through it (both ends on
// loopback).
func forward(l net.Listener, dial func() (net.Conn, error)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			up, err := dial()
			if err != nil {
				return
			}
			defer up.Close()
			var wg sync.WaitGroup
			wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer wg.Done()
				_, _ = io.Copy(dst, src)
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			go pipe(up, c)
			go pipe(c, up)
			wg.Wait()
		}()
	}
}
