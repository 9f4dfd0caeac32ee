package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// requireNetns skips the test when namespaces cannot be made here, except
// under CI=true, where a skip would hide that nothing ran.
func requireNetns(t *testing.T) {
	t.Helper()
	if err := Check(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %v", err)
		}
		t.Skip(err)
	}
}

func TestCmdErrorNamesCommandAndStderr(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("ip"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %v", err)
		}
		t.Skip(err)
	}
	_, err := ip(context.Background(), "link", "show", "dev", "pnpd-no-such-link")
	if err == nil {
		t.Fatal("ip link show of a missing link succeeded")
	}
	var ce *CmdError
	if !errors.As(err, &ce) {
		t.Fatalf("error %T %v is no *CmdError", err, err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "ip link show dev pnpd-no-such-link") || ce.Stderr == "" || !strings.Contains(msg, ce.Stderr) {
		t.Errorf("error %q does not name the command and its stderr %q", msg, ce.Stderr)
	}
}

func TestNewRejectsBadName(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"", "a/b", "..", "a b"} {
		if _, err := New(context.Background(), name); err == nil {
			t.Errorf("New(%q) succeeded", name)
		}
	}
}

func TestPairUDPAcross(t *testing.T) {
	requireNetns(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if _, err := RemoveStale(ctx, "pnpdtest"); err != nil {
		t.Logf("removing namespaces of killed runs: %v", err)
	}
	p, err := NewPair(ctx, Options{Prefix: "pnpdtest"})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			if err := p.Close(); err != nil {
				t.Error(err)
			}
		}
	})
	if got, want := p.AAddr, netip.MustParsePrefix("198.18.0.1/24"); got != want {
		t.Errorf("AAddr = %s, want %s", got, want)
	}
	if got, want := p.BAddr, netip.MustParsePrefix("198.18.0.2/24"); got != want {
		t.Errorf("BAddr = %s, want %s", got, want)
	}
	if len(p.AIf) > 15 || len(p.BIf) > 15 {
		t.Errorf("interface names %q %q longer than 15 bytes", p.AIf, p.BIf)
	}
	names, err := List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []*NS{p.A, p.B} {
		if !slices.Contains(names, ns.Name) {
			t.Fatalf("ip netns list %q lacks %s", names, ns.Name)
		}
	}
	// The link never shows in the caller's namespace.
	if _, err := net.InterfaceByName(p.AIf); err == nil {
		t.Errorf("interface %s is visible outside the namespaces", p.AIf)
	}
	ifi, err := p.B.InterfaceByName(p.BIf)
	if err != nil {
		t.Fatal(err)
	}
	if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagMulticast == 0 {
		t.Errorf("%s flags %v, want up and multicast", p.BIf, ifi.Flags)
	}
	out, err := p.B.IP(ctx, "route", "show", "224.0.0.0/4")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "dev "+p.BIf) {
		t.Errorf("no multicast route via %s in B: %q", p.BIf, out)
	}

	// A echoes what B sends, on the namespace addresses.
	a, err := p.A.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.AAddr.Addr(), 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := p.B.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.BAddr.Addr(), 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// From the caller's namespace the address of A is not reachable: a
	// socket bound to it cannot even be made here.
	if c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.AAddr.Addr(), 0))); err == nil {
		c.Close()
		t.Errorf("%s is bindable outside the namespace", p.AAddr.Addr())
	}
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := a.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = a.WriteToUDPAddrPort(append([]byte("echo "), buf[:n]...), from)
		}
	}()
	aAP := netip.AddrPortFrom(p.AAddr.Addr(), uint16(a.LocalAddr().(*net.UDPAddr).Port))
	buf := make([]byte, 64)
	got := false
	// UDP may lose the first datagram while neighbours are resolved: send
	// a few, bounded, and take the first echo.
	for i := 0; i < 20 && !got; i++ {
		if _, err := b.WriteToUDPAddrPort([]byte("ping"), aAP); err != nil {
			t.Fatal(err)
		}
		_ = b.SetReadDeadline(time.Now().Add(time.Second))
		n, from, err := b.ReadFromUDPAddrPort(buf)
		if err != nil {
			continue
		}
		if from != aAP || !bytes.Equal(buf[:n], []byte("echo ping")) {
			t.Fatalf("got %q from %s, want %q from %s", buf[:n], from, "echo ping", aAP)
		}
		got = true
	}
	if !got {
		t.Fatal("no echo from A")
	}

	// Commands run inside.
	out, err = p.A.Command(ctx, "ip", "-brief", "addr", "show", "dev", p.AIf).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(out), p.AAddr.String()) {
		t.Errorf("ip addr in A: %q lacks %s", out, p.AAddr)
	}

	a.Close()
	b.Close()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	names, err = List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []*NS{p.A, p.B} {
		if slices.Contains(names, ns.Name) {
			t.Errorf("ip netns list still has %s after Close", ns.Name)
		}
	}
	if err := p.A.Do(func() error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close: %v, want ErrClosed", err)
	}
}

func TestRemoveStale(t *testing.T) {
	requireNetns(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The prefix is ours alone, so that a concurrent run cannot interfere.
	prefix := fmt.Sprintf("pnpdstale%d", os.Getpid())
	// A pid that runs (this process's) is kept.
	live, err := New(ctx, fmt.Sprintf("%s-%d-0", prefix, os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = live.Close() })
	// pid_max is at most 2^22, so this one cannot run.
	dead, err := New(ctx, prefix+"-4999999-0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dead.Close() })
	removed, err := RemoveStale(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{dead.Name}) {
		t.Errorf("removed %q, want only %s", removed, dead.Name)
	}
	names, err := List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, live.Name) || slices.Contains(names, dead.Name) {
		t.Errorf("after RemoveStale: %q", names)
	}
}
