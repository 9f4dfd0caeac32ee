package main

// pnpd ctl's approval, window and once commands against a real Asterisk
// (pkg/asterisk/asterisktest), with a pbx.PBX beside them as a serving
// pnpd would run it: what pnpd writes, ctl reads and changes, and the PBX
// sees after the PnpReload.

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pnpd/pnpd/ami"
	"github.com/pnpd/pnpd/pkg/asterisk/asterisktest"
	"github.com/pnpd/pnpd/pkg/pbx"
	"github.com/pnpd/pnpd/pkg/phone"
	"github.com/pnpd/pnpd/pkg/pnp"
)

// ctlRunner returns a func that runs "pnpd ctl -config path ARGS" and
// fails the test unless it exits with want.
func ctlRunner(t *testing.T, path string) func(want int, args ...string) (stdout, stderr string) {
	return func(want int, args ...string) (string, string) {
		t.Helper()
		code, out, errOut := runCLI(t, append([]string{"ctl", "-config", path}, args...)...)
		if code != want {
			t.Fatalf("pnpd ctl %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, out, errOut)
		}
		return out, errOut
	}
}

// servingPBX runs a pbx.PBX over a until the test ends, as pnpd serve
// does (events on, refresh off: only PnpReload brings a new snapshot).
func servingPBX(t *testing.T, a *asterisktest.Instance, once bool) *pbx.PBX {
	t.Helper()
	c := ami.New(ami.Config{Address: a.Addr, Username: a.Username, Secret: a.Secret})
	p := pbx.New(pbx.Config{Client: c, Events: true, Once: once})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = c.Serve(ctx) }()
	go func() { defer wg.Done(); _ = p.Serve(ctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = c.Shutdown(sctx)
		cancel()
		wg.Wait()
	})
	select {
	case <-p.Loaded():
	case <-time.After(logTimeout):
		t.Fatal("the PBX took no snapshot")
	}
	return p
}

// waitUntil polls cond until it holds, failing after logTimeout.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(logTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func phoneEvent(mac, outcome string) pnp.Event {
	return pnp.Event{Kind: pnp.EventDone, Identity: phone.Identity{MAC: mac, Brand: "snom", Model: "D785", Firmware: "10.1.54.13"},
		Src: netip.MustParseAddrPort("198.18.0.2:5060"), Interface: "eth1", Outcome: outcome,
		Time: time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)}
}

func TestCtlApprove(t *testing.T) {
	a := asterisktest.Start(t, asterisktest.Options{})
	path := writeConfig(t, pbxConf(a, "")+"[policy]\nunknown = \"approve\"\n")
	events := amiEvents(t, a)
	ctl := ctlRunner(t, path)
	p := servingPBX(t, a, false)

	out, errOut := ctl(0, "pending")
	if out != "" || !strings.Contains(errOut, "no phones are waiting for approval") {
		t.Errorf("pending with none: stdout %q, stderr %q", out, errOut)
	}

	// pnpd records two phones; a third is put by hand in another spelling.
	p.Observe(phoneEvent("000413aabb11", "pending"))
	p.Observe(phoneEvent("000413aabb10", "pending"))
	ev := events.wait(t, pbx.EventPending, func(ev map[string]string) bool { return ev["Mac"] == "000413aabb11" })
	if ev["Vendor"] != "snom" || ev["Ip"] != "198.18.0.2" || ev["Interface"] != "eth1" {
		t.Errorf("PnpPending %v", ev)
	}
	events.wait(t, pbx.EventPending, func(ev map[string]string) bool { return ev["Mac"] == "000413aabb10" })
	waitUntil(t, "pending/000413aabb10 written", func() bool {
		return strings.Contains(a.CLI(t, "database get pnp pending/000413aabb10"), "brand=snom")
	})
	cli(t, a, "database put pnp pending/00:04:13:AA:BB:12 brand=yealink&time=2026-11-26T03%3A00%3A00Z")
	if !p.Pending("000413aabb10") || !p.Pending("000413aabb11") {
		t.Error("the PBX does not see its own pending records")
	}

	out, _ = ctl(0, "pending")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "MAC") ||
		strings.Join(strings.Fields(lines[0]), " ") != "MAC SINCE BRAND MODEL FIRMWARE SOURCE INTERFACE" ||
		strings.Join(strings.Fields(lines[1]), " ") != "000413aabb10 2026-11-26T02:00:00Z snom D785 10.1.54.13 198.18.0.2:5060 eth1" ||
		!strings.HasPrefix(lines[2], "000413aabb11") ||
		strings.Join(strings.Fields(lines[3]), " ") != "000413aabb12 2026-11-26T03:00:00Z yealink - - - -" {
		t.Errorf("pending:\n%s", out)
	}
	out, _ = ctl(0, "list")
	if !strings.Contains(out, "000413aabb10  pending") || !strings.Contains(out, "000413aabb12  pending") {
		t.Errorf("list does not show the pending phones:\n%s", out)
	}

	// Approve: assigned (with the tenant-without-URL warning), cleared,
	// announced; the PBX takes a new snapshot.
	_, errOut = ctl(0, "approve", "00:04:13:AA:BB:10", "acme")
	if !strings.Contains(errOut, `tenant "acme" has no URL`) {
		t.Errorf("approve to a tenant without URL: no warning:\n%s", errOut)
	}
	events.wait(t, "PnpReload", func(map[string]string) bool { return true })
	if got := cli(t, a, "database get pnp mac/000413aabb10"); !strings.Contains(got, "Value: acme") {
		t.Errorf("mac/000413aabb10 after approve: %s", got)
	}
	if got := a.CLI(t, "database get pnp pending/000413aabb10"); strings.Contains(got, "Value:") {
		t.Errorf("pending/000413aabb10 left after approve: %s", got)
	}
	waitUntil(t, "the approval seen by the PBX", func() bool { return !p.Pending("000413aabb10") })
	if p.Snapshot().MACs["000413aabb10"] != "acme" || !p.Pending("000413aabb11") || !p.Pending("000413aabb12") {
		t.Errorf("snapshot after approve: MACs %v, pending %v", p.Snapshot().MACs, p.Snapshot().Pending)
	}
	out, _ = ctl(0, "pending")
	if strings.Contains(out, "000413aabb10") || !strings.Contains(out, "000413aabb11") {
		t.Errorf("pending after approve:\n%s", out)
	}

	// A phone that was not pending is assigned anyway, with a warning.
	_, errOut = ctl(0, "approve", "000413aabb99", "http://direct.example/{mac}")
	if !strings.Contains(errOut, "000413aabb99 was not pending; assigned anyway") {
		t.Errorf("approve of a phone not pending:\n%s", errOut)
	}
	events.wait(t, "PnpReload", func(map[string]string) bool { return true })
	if got := cli(t, a, "database get pnp mac/000413aabb99"); !strings.Contains(got, "http://direct.example/{mac}") {
		t.Errorf("mac/000413aabb99: %s", got)
	}
	if n := len(events.all("PnpReload")); n != 2 {
		t.Errorf("%d PnpReload events, want 2", n)
	}
}

func TestCtlWindow(t *testing.T) {
	a := asterisktest.Start(t, asterisktest.Options{})
	path := writeConfig(t, pbxConf(a, "")+"[policy]\nwindow = true\n")
	events := amiEvents(t, a)
	ctl := ctlRunner(t, path)
	p := servingPBX(t, a, false)
	if until, known := p.Window(); !known || !until.IsZero() {
		t.Fatalf("Window %v %v at the start", until, known)
	}

	out, errOut := ctl(0, "window")
	if strings.TrimSpace(out) != "provisioning window closed" || errOut != "" {
		t.Errorf("window: %q %q", out, errOut)
	}
	before := time.Now().Truncate(time.Second)
	out, _ = ctl(0, "window", "open", "2h")
	after := time.Now()
	events.wait(t, "PnpReload", func(map[string]string) bool { return true })
	v, ok := strings.CutPrefix(strings.TrimSpace(cli(t, a, "database get pnp window")), "Value: ")
	end, err := time.Parse(time.RFC3339, v)
	if !ok || err != nil || !strings.HasSuffix(v, "Z") || end.Before(before.Add(2*time.Hour)) || end.After(after.Add(2*time.Hour)) {
		t.Fatalf("window = %q (%v), want now+2h in RFC 3339 UTC", v, err)
	}
	if want := "provisioning window open until " + v + " (2h0m0s)"; strings.TrimSpace(out) != want {
		t.Errorf("window open: %q, want %q", out, want)
	}
	waitUntil(t, "the window seen by the PBX", func() bool { w, _ := p.Window(); return w.Equal(end) })
	for _, args := range [][]string{{"window"}, {"window", "status"}} {
		if out, _ := ctl(0, args...); !strings.HasPrefix(out, "provisioning window open until "+v+" (") {
			t.Errorf("%s while open: %q", strings.Join(args, " "), out)
		}
	}

	out, _ = ctl(0, "window", "close")
	if strings.TrimSpace(out) != "provisioning window closed" {
		t.Errorf("window close: %q", out)
	}
	events.wait(t, "PnpReload", func(map[string]string) bool { return true })
	waitUntil(t, "the close seen by the PBX", func() bool { w, _ := p.Window(); return w.IsZero() })
	out, _ = ctl(0, "window", "close")
	if strings.TrimSpace(out) != "the provisioning window was not open" {
		t.Errorf("window close when closed: %q", out)
	}

	cli(t, a, "database put pnp window 2020-01-01T00:00:00Z")
	if out, _ := ctl(0, "window"); strings.TrimSpace(out) != "provisioning window closed (it ended at 2020-01-01T00:00:00Z)" {
		t.Errorf("window after its end: %q", out)
	}
	cli(t, a, "database put pnp window tomorrow")
	if out, _ := ctl(0, "window"); !strings.Contains(out, `closed (pnp/window = "tomorrow" is not an RFC 3339 time)`) {
		t.Errorf("window with a bad value: %q", out)
	}

	// Without window = true in the file, ctl says the window changes nothing.
	off := writeConfig(t, pbxConf(a, ""))
	if _, errOut := ctlRunner(t, off)(0, "window"); !strings.Contains(errOut, "[policy] window is off") {
		t.Errorf("no note that the window is off: %q", errOut)
	}
	if n := len(events.all("PnpReload")); n != 2 {
		t.Errorf("%d PnpReload events, want 2 (open, close)", n)
	}
}

func TestCtlRearm(t *testing.T) {
	a := asterisktest.Start(t, asterisktest.Options{})
	path := writeConfig(t, pbxConf(a, "")+"[policy]\nonce = true\n")
	events := amiEvents(t, a)
	ctl := ctlRunner(t, path)
	p := servingPBX(t, a, true)

	// pnpd marks the phone it provisioned, and knows it at once.
	p.Observe(phoneEvent("000413aabb20", "provisioned"))
	if done, known := p.Provisioned("000413aabb20"); !done || !known {
		t.Errorf("Provisioned %v %v right after provisioning", done, known)
	}
	waitUntil(t, "provisioned/000413aabb20 written", func() bool {
		return strings.Contains(a.CLI(t, "database get pnp provisioned/000413aabb20"), "Value: 2026-11-26T02:00:00Z")
	})
	p.Reload()
	waitUntil(t, "the mark in the snapshot", func() bool { _, ok := p.Snapshot().Provisioned["000413aabb20"]; return ok })

	out, _ := ctl(0, "rearm", "00-04-13-AA-BB-20")
	if !strings.Contains(out, "000413aabb20 rearmed") {
		t.Errorf("rearm: %q", out)
	}
	events.wait(t, "PnpReload", func(map[string]string) bool { return true })
	if got := a.CLI(t, "database get pnp provisioned/000413aabb20"); strings.Contains(got, "Value:") {
		t.Errorf("provisioned/000413aabb20 left after rearm: %s", got)
	}
	waitUntil(t, "the rearm seen by the PBX", func() bool { done, _ := p.Provisioned("000413aabb20"); return !done })

	out, _ = ctl(0, "rearm", "000413aabb20")
	if strings.TrimSpace(out) != "000413aabb20 was not provisioned under once; nothing to rearm" {
		t.Errorf("rearm of a phone not provisioned: %q", out)
	}
	if n := len(events.all("PnpReload")); n != 1 {
		t.Errorf("%d PnpReload events, want 1", n)
	}
}

func TestCtlPolicyUsage(t *testing.T) {
	a := asterisktest.Start(t, asterisktest.Options{})
	ctl := ctlRunner(t, writeConfig(t, pbxConf(a, "")))
	tests := []struct {
		args []string
		want string // on stderr
	}{
		{[]string{"approve", "nonsense", "acme"}, `"nonsense" is not a MAC address`},
		{[]string{"approve", "000413aabb10"}, `"approve 000413aabb10" takes 2 argument(s), got 1`},
		{[]string{"approve"}, `"approve" takes 2 argument(s), got 0`},
		{[]string{"approve", "000413aabb10", "a/b"}, `"a/b" is not a tenant name`},
		{[]string{"rearm"}, `"rearm" takes 1 argument(s), got 0`},
		{[]string{"rearm", "00041"}, `"00041" is not a MAC address`},
		{[]string{"rearm", "000413aabb10", "x"}, "takes 1 argument(s), got 2"},
		{[]string{"pending", "x"}, `"pending x" takes 0 argument(s), got 1`},
		{[]string{"window", "open"}, "window open takes DURATION"},
		{[]string{"window", "open", "0s"}, "0s is out of range"},
		{[]string{"window", "open", "-1h"}, "-1h is out of range"},
		{[]string{"window", "open", "169h"}, "169h is out of range: more than 0, at most 168h (7 days)"},
		{[]string{"window", "open", "7d"}, `"7d" is not a duration`},
		{[]string{"window", "open", "2h", "x"}, "window open takes DURATION"},
		{[]string{"window", "close", "now"}, "window close takes no arguments"},
		{[]string{"window", "status", "x"}, "window status takes no arguments"},
		{[]string{"window", "shut"}, `window "shut": want open DURATION, close or status`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, errOut := ctl(2, tt.args...)
			if out != "" || !strings.Contains(errOut, tt.want) || !strings.Contains(errOut, "window open DURATION") {
				t.Errorf("stdout %q; stderr has no %q (or no usage):\n%s", out, tt.want, errOut)
			}
		})
	}
	// Nothing was sent: the family is as it was.
	if got := a.CLI(t, "database show pnp"); !strings.Contains(got, "0 results found") {
		t.Errorf("the family changed: %s", got)
	}
	// 7 days exactly is allowed.
	if out, _ := ctl(0, "window", "open", "168h"); !strings.Contains(out, "(168h0m0s)") {
		t.Errorf("window open 168h: %q", out)
	}
}
