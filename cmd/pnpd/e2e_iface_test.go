package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/netns"
)

// TestInterfaceComesAndGoes: pnpd serve with the default interfaces (no
// [sip] interfaces), in each mode. After msg=ready a second veth is created
// in pnpd's namespace, to a second phone namespace: pnpd joins the group on
// it, a phone there is provisioned, and the NOTIFY comes from the new
// interface's address. The veth is then deleted and created again under
// the same name with another address (a new index: a plain down/up keeps
// the kernel's membership and proves nothing): the same again, from the
// new address. The phone on the first veth is still served at the end.
func TestInterfaceComesAndGoes(t *testing.T) {
	for _, mode := range []string{"bind", "raw", "packet"} {
		t.Run(mode, func(t *testing.T) { testInterfaceComesAndGoes(t, mode) })
	}
}

func testInterfaceComesAndGoes(t *testing.T, mode string) {
	l := newLab(t)
	const url = "http://198.18.0.1/{vendor}/{mac}/"
	cfg := fmt.Sprintf("[sip]\ngroup = \"224.0.1.75:5060\"\nmode = %q\n[resolve]\ndefault = %q\n", mode, url)
	path := filepath.Join(l.dir, "pnpd.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	l.run(cfg, "-config", path)
	ready := l.waitLog(t, map[string]string{"msg": "ready"})
	if !strings.Contains(ready["interfaces"], l.pbxIf+"=") {
		t.Fatalf("ready with interfaces=%q, want the lab's %s among them", ready["interfaces"], l.pbxIf)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	phone2, err := netns.New(ctx, netns.UniqueName(nsPrefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := phone2.Close(); err != nil {
			t.Errorf("removing namespace %s: %v", phone2.Name, err)
		}
	})
	const pbxIf, phoneIf = "pnnew0", "pnph0"
	ip := func(ns *netns.NS, args ...string) {
		t.Helper()
		if out, err := ns.IP(ctx, args...); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	// veth links pnpd's namespace to phone2 over 198.18.<n>.0/24, pnpd
	// on .1, the phone on .2.
	veth := func(n int) (pbxAddr, phoneAddr netip.Addr) {
		t.Helper()
		pbxAddr = netip.AddrFrom4([4]byte{198, 18, byte(n), 1})
		phoneAddr = netip.AddrFrom4([4]byte{198, 18, byte(n), 2})
		ip(l.pbx, "link", "add", pbxIf, "type", "veth", "peer", "name", phoneIf, "netns", phone2.Name)
		ip(l.pbx, "addr", "add", pbxAddr.String()+"/24", "dev", pbxIf)
		ip(phone2, "addr", "add", phoneAddr.String()+"/24", "dev", phoneIf)
		ip(phone2, "link", "set", phoneIf, "up")
		ip(l.pbx, "link", "set", pbxIf, "up")
		// pnpd may join as soon as the link is up, before the kernel has
		// started its queue (operational state UP), which drops what is
		// sent meanwhile; a phone would send again, simulate does not.
		for _, end := range []struct {
			ns   *netns.NS
			name string
		}{{l.pbx, pbxIf}, {phone2, phoneIf}} {
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				out, err := end.ns.IP(ctx, "-o", "link", "show", "dev", end.name)
				if err == nil && strings.Contains(string(out), "state UP") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s not operationally up within 10s: %s %v", end.name, out, err)
				}
			}
		}
		return pbxAddr, phoneAddr
	}
	// provision waits until pnpd joined pbxIf on pbxAddr and answers its
	// subnet, then plays a phone there and checks that the NOTIFY came
	// from pbxAddr.
	provision := func(step string, pbxAddr netip.Addr, mac string) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(context.Background(), logTimeout)
		defer wcancel()
		joined, err := l.log.waitLine(wctx, func(s string) bool {
			kv := logfmt(s)
			return kv["msg"] == "interface joined" && kv["iface"] == pbxIf && strings.HasPrefix(kv["addr"], pbxAddr.String()+":")
		})
		if err != nil {
			t.Fatalf("%s: no msg=\"interface joined\" iface=%s addr=%s:... in the serve log within %s", step, pbxIf, pbxAddr, logTimeout)
		}
		// The daemon's own line on the change (OnChange) names the new
		// subnet among those it answers; only then is the phone allowed.
		subnet := netip.PrefixFrom(pbxAddr, 24).Masked().String()
		after := slices.Index(completeLines(l.log.String()), joined) + 1
		if _, err := l.log.waitLineFrom(wctx, after, func(s string) bool { return strings.Contains(s, subnet) }); err != nil {
			t.Fatalf("%s: after joining %s, no serve log line names its subnet %s within %s (the daemon must answer it)", step, pbxIf, subnet, logTimeout)
		}
		r := runSimulate(t, phone2, l.bin, []string{"simulate", "-iface", phoneIf, "-vendor", "yealink", "-mac", mac,
			"-timeout", "30s", "-log-level", "info"})
		want := "http://198.18.0.1/yealink/" + mac + "/"
		if r.code != 0 || r.url != want {
			t.Fatalf("%s: want exit 0 and %q\n%s", step, want, r)
		}
		var froms []string
		for _, line := range completeLines(r.stderr) {
			if kv := logfmt(line); kv["msg"] == "NOTIFY answered" {
				froms = append(froms, kv["from"])
			}
		}
		if len(froms) == 0 {
			t.Fatalf("%s: simulate logged no NOTIFY answered\n%s", step, r)
		}
		for _, f := range froms {
			if ap, err := netip.ParseAddrPort(f); err != nil || ap.Addr() != pbxAddr {
				t.Errorf("%s: NOTIFY from %s, want from %s", step, f, pbxAddr)
			}
		}
	}

	pbxAddr, _ := veth(20)
	provision("created after start", pbxAddr, "001565000001")

	ip(l.pbx, "link", "del", pbxIf)
	if _, ok := l.findLog(0, map[string]string{"msg": "interface gone", "iface": pbxIf}); !ok {
		t.Fatalf("no msg=\"interface gone\" iface=%s in the serve log within %s", pbxIf, logTimeout)
	}
	pbxAddr, _ = veth(21)
	provision("deleted and created again", pbxAddr, "001565000002")

	// The first interface was never disturbed.
	r := l.simulate(t, "-vendor", "yealink", "-mac", "001565000003", "-timeout", "30s")
	if want := "http://198.18.0.1/yealink/001565000003/"; r.code != 0 || r.url != want {
		t.Errorf("phone on the lab's first link: want exit 0 and %q\n%s", want, r)
	}
}
