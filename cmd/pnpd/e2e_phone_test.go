package main

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jart/gosip/sip"
)

// e2eBrands are the brands `pnpd simulate` plays, each with a MAC under one
// of its OUIs; audiocodes sends no MAC.
var e2eBrands = []struct{ brand, mac string }{
	{"htek", "001fc11b4e1c"},
	{"yealink", "0015657322ff"},
	{"snom", "000413874b49"},
	{"grandstream", "c074ad112233"},
	{"fanvil", "00304fa99948"},
	{"gigaset", "7c2f8030d21e"},
	{"panasonic", "080023aabbcc"},
	{"audiocodes", ""},
}

// brandRules returns a [resolve] section with one rule per brand whose URL
// names the brand and, except for audiocodes (no MAC), the MAC, with
// credentials the log must mask.
func brandRules(pbx netip.Addr) string {
	var b strings.Builder
	b.WriteString("[resolve]\n")
	for _, e := range e2eBrands {
		fmt.Fprintf(&b, "[[resolve.rule]]\nvendor = %q\nurl = %q\n", e.brand, brandTemplate(pbx, e.brand))
	}
	return b.String()
}

func brandTemplate(pbx netip.Addr, brand string) string {
	if brand == "audiocodes" {
		return fmt.Sprintf("tftp://%s/audiocodes/", pbx)
	}
	return fmt.Sprintf("http://admin:pw-%s@%s/%s/{mac}/", brand, pbx, brand)
}

// brandURL is the URL the phone must receive, and logged the URL the serve
// log must show.
func brandURL(pbx netip.Addr, brand, mac string) (url, logged string) {
	if brand == "audiocodes" {
		u := brandTemplate(pbx, brand)
		return u, u
	}
	return fmt.Sprintf("http://admin:pw-%s@%s/%s/%s/", brand, pbx, brand, mac),
		fmt.Sprintf("http://***@%s/%s/%s/", pbx, brand, mac)
}

// runBrands plays every brand once against a lab started with brandRules.
func runBrands(t *testing.T, l *lab) {
	t.Helper()
	for _, e := range e2eBrands {
		t.Run(e.brand, func(t *testing.T) {
			args := []string{"-vendor", e.brand, "-timeout", "30s"}
			if e.mac != "" {
				args = append(args, "-mac", e.mac)
			}
			r := l.simulate(t, args...)
			want, logged := brandURL(l.pbxIP, e.brand, e.mac)
			if r.code != 0 || r.url != want || r.summary["ok"] != "true" {
				t.Fatalf("want exit 0, first stdout line %q and ok=true\n%s", want, r)
			}
			if r.notifies < 1 {
				t.Errorf("notifies=%d, want at least 1\n%s", r.notifies, r)
			}
			if len(r.responses) == 0 || r.responses[0] != "200" {
				t.Errorf("responses=%q, want the first to be 200\n%s", r.responses, r)
			}
			kv := l.waitLog(t, map[string]string{"msg": "exchange", "brand": e.brand, "mac": e.mac, "outcome": "provisioned"})
			if kv != nil && kv["url"] != logged {
				t.Errorf("exchange logged url=%q, want %q", kv["url"], logged)
			}
		})
	}
	// Each phone is provisioned exactly once, and no password is logged.
	for _, e := range e2eBrands {
		got := l.logLines(map[string]string{"msg": "exchange", "brand": e.brand, "mac": e.mac, "outcome": "provisioned"})
		if len(got) != 1 {
			t.Errorf("%d msg=exchange outcome=provisioned lines for %s %q, want 1", len(got), e.brand, e.mac)
		}
	}
	if log := l.log.String(); strings.Contains(log, "pw-") {
		for _, line := range completeLines(log) {
			if strings.Contains(line, "pw-") {
				t.Errorf("serve log shows a password: %s", line)
			}
		}
	}
}

func TestE2EBrands(t *testing.T) {
	l := newLab(t)
	l.start("", brandRules(l.pbxIP))
	runBrands(t, l)
}

// The phone ignores the first NOTIFY: pnpd retransmits it (Timer E) and stops
// once the phone answers the second.
func TestE2ENotifyRetransmission(t *testing.T) {
	l := newLab(t)
	l.start("", "[resolve]\ndefault = \"http://198.18.0.1/{vendor}/{mac}/\"\n")
	r := l.simulate(t, "-vendor", "yealink", "-mac", "0015657322ff", "-ignore-notifies", "1", "-linger", "3s")
	if r.code != 0 || r.url != "http://198.18.0.1/yealink/0015657322ff/" {
		t.Fatalf("want exit 0 and the URL\n%s", r)
	}
	if r.notifies != 2 {
		t.Errorf("notifies=%d, want 2 (one ignored, its retransmission answered, none after)\n%s", r.notifies, r)
	}
	if !slices.Equal(r.responses, []string{"200"}) {
		t.Errorf("responses=%q, want [200]\n%s", r.responses, r)
	}
	l.waitLog(t, map[string]string{"msg": "exchange", "mac": "0015657322ff", "outcome": "provisioned"})
}

// A SUBSCRIBE sent three times with one branch is one transaction: three
// 200s, one NOTIFY.
func TestE2ESubscribeRetransmission(t *testing.T) {
	l := newLab(t)
	l.start("", "[resolve]\ndefault = \"http://198.18.0.1/{vendor}/{mac}/\"\n")
	r := l.simulate(t, "-vendor", "htek", "-mac", "001fc11b4e1c", "-repeat", "2", "-linger", "2s")
	if r.code != 0 || r.url != "http://198.18.0.1/htek/001fc11b4e1c/" {
		t.Fatalf("want exit 0 and the URL\n%s", r)
	}
	if r.notifies != 1 {
		t.Errorf("notifies=%d, want 1\n%s", r.notifies, r)
	}
	if !slices.Equal(r.responses, []string{"200", "200", "200"}) {
		t.Errorf("responses=%q, want [200 200 200]\n%s", r.responses, r)
	}
	l.waitLog(t, map[string]string{"msg": "exchange", "mac": "001fc11b4e1c", "outcome": "provisioned"})
	if n := len(l.logLines(map[string]string{"msg": "exchange", "mac": "001fc11b4e1c"})); n != 1 {
		t.Errorf("%d msg=exchange lines for the phone, want 1", n)
	}
}

// A phone outside the allowed subnets gets no datagram at all.
func TestE2ESourceNotAllowed(t *testing.T) {
	l := newLab(t)
	l.start("allow = [\"198.19.0.0/24\"]\n", "[resolve]\ndefault = \"http://198.18.0.1/{vendor}/{mac}/\"\n")

	// A raw socket sees every UDP datagram to the phone's address, whatever
	// its port.
	raw, err := l.phone.ListenPacket("ip4:udp", l.phoneIP.String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var (
		mu  sync.Mutex
		got []datagram
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, addr, err := raw.ReadFrom(buf)
			if err != nil {
				return
			}
			ip, _ := netip.AddrFromSlice(addr.(*net.IPAddr).IP)
			mu.Lock()
			got = append(got, datagram{from: netip.AddrPortFrom(ip.Unmap(), 0), data: append([]byte(nil), buf[:n]...)})
			mu.Unlock()
		}
	}()

	r := l.simulate(t, "-vendor", "yealink", "-mac", "0015657322ff", "-timeout", "3s")
	if r.code != 1 || r.url != "" || r.summary["ok"] != "false" {
		t.Errorf("want exit 1, no URL and ok=false\n%s", r)
	}
	if r.notifies != 0 || len(r.responses) != 0 {
		t.Errorf("notifies=%d responses=%q, want none\n%s", r.notifies, r.responses, r)
	}

	// Check that the raw socket would have seen pnpd: a datagram from the
	// pbx address must show.
	probe, err := l.pbx.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(l.pbxIP, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	if _, err := probe.WriteToUDPAddrPort([]byte("probe"), netip.AddrPortFrom(l.phoneIP, 9)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		mu.Lock()
		seen := slices.ContainsFunc(got, isProbe)
		mu.Unlock()
		if seen {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	raw.Close()
	<-done
	probeSeen := false
	for _, d := range got {
		if isProbe(d) {
			probeSeen = true
			continue
		}
		if d.from.Addr() == l.pbxIP {
			t.Errorf("phone got a datagram from pnpd: %q", d.data)
		}
	}
	if !probeSeen {
		t.Fatal("the raw socket did not see the probe datagram: the check above proves nothing")
	}
	if lines := l.logLines(map[string]string{"outcome": "provisioned"}); len(lines) != 0 {
		t.Errorf("serve log has outcome=provisioned for a denied source: %v", lines)
	}
}

// isProbe reports whether d, read from a raw UDP socket (UDP header
// included), carries the probe.
func isProbe(d datagram) bool { return len(d.data) >= 8 && string(d.data[8:]) == "probe" }

// Datagrams that are no PnP SUBSCRIBE get no answer; a PnP SUBSCRIBE sent the
// same way afterwards gets the 200 and a NOTIFY as the protocol notes say.
func TestE2EIgnoresOtherMessages(t *testing.T) {
	l := newLab(t)
	l.start("", "[resolve]\ndefault = \"http://198.18.0.1/{vendor}/{mac}/\"\n")

	c := l.phoneConn(t, l.phoneIP, 0)
	defer c.Close()
	src := c.LocalAddr().(*net.UDPAddr).AddrPort()
	group := netip.MustParseAddrPort("224.0.1.75:5060")
	const mac = "0015657322ff"

	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"OPTIONS", sipText(optionsTemplate, src, src.Addr())},
		{"presence SUBSCRIBE", sipText(subscribeTemplate, mac, src, "presence-1@x", "z9hG4bKpres1", "presence")},
		{"garbage", []byte("\x00\x01\x02 not SIP at all \xff\r\n\r\n")},
	} {
		if _, err := c.WriteToUDPAddrPort(tc.data, group); err != nil {
			t.Fatalf("sending %s: %v", tc.name, err)
		}
	}
	got, err := readAll(c, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range got {
		t.Errorf("answer from %s to a message pnpd must ignore:\n%s", d.from, d.data)
	}

	// The control: the same socket and path with a real PnP SUBSCRIBE.
	const callID = "1092315383@control"
	sub := sipText(subscribeTemplate, mac, src, callID, "z9hG4bK1263794541",
		`ua-profile;profile-type="device";vendor="Yealink";model="T21";version="34.72.0.1"`)
	if _, err := c.WriteToUDPAddrPort(sub, group); err != nil {
		t.Fatal(err)
	}
	okD, ok, skipped, err := readSIP(c, 15*time.Second, (*sip.Msg).IsResponse)
	for _, d := range skipped {
		t.Errorf("unexpected datagram from %s before the 200:\n%s", d.from, d.data)
	}
	if err != nil {
		t.Fatalf("no response to the PnP SUBSCRIBE: %v", err)
	}
	toTag := tagOf(ok.To)
	okVia := cmp.Or(ok.Via, &sip.Via{})
	checkSIP(t, "200 to SUBSCRIBE", okD, []sipCheck{
		{ok.Status == 200, "status is 200"},
		{okD.from.Addr() == l.pbxIP, "sent from the pbx veth address " + l.pbxIP.String()},
		{ok.CallID == callID, "same Call-ID"},
		{ok.CSeq == 1 && ok.CSeqMethod == "SUBSCRIBE", "same CSeq"},
		{paramOf(okVia.Param, "branch") == "z9hG4bK1263794541", "Via branch echoed"},
		{tagOf(ok.From) == "1581287404", "From tag echoed"},
		{toTag != "", "To has pnpd's tag"},
		{ok.Via != nil && okVia.Next == nil, "exactly one Via"},
	})

	nD, notify, skipped, err := readSIP(c, 15*time.Second, func(m *sip.Msg) bool { return !m.IsResponse() })
	for _, d := range skipped {
		t.Errorf("unexpected datagram from %s before the NOTIFY:\n%s", d.from, d.data)
	}
	if err != nil {
		t.Fatalf("no NOTIFY: %v", err)
	}
	wantURL := "http://198.18.0.1/yealink/" + mac + "/"
	via := cmp.Or(notify.Via, &sip.Via{})
	checkSIP(t, "NOTIFY", nD, []sipCheck{
		{notify.Method == "NOTIFY", "method NOTIFY"},
		// As written: gosip %-decodes the user part.
		{startLine(nD.data) == "NOTIFY sip:MAC"+mac+"@"+src.String()+" SIP/2.0", "Request-URI = the SUBSCRIBE's Contact"},
		{nD.from.Addr() == l.pbxIP, "sent from the pbx veth address"},
		{notify.CallID == callID, "same Call-ID"},
		{tagOf(notify.To) == "1581287404", "To tag = the SUBSCRIBE's From tag"},
		{tagOf(notify.From) == toTag, "From tag = the To tag of pnpd's 200"},
		{notify.CSeqMethod == "NOTIFY", "CSeq method NOTIFY"},
		{strings.HasPrefix(notify.Event, "ua-profile") && strings.HasSuffix(notify.Event, ";effective-by=0"), "Event ua-profile...;effective-by=0"},
		{xHeader(notify, "Subscription-State") == "terminated;reason=timeout", "Subscription-State terminated;reason=timeout"},
		// As written: gosip keeps only type/subtype.
		{strings.EqualFold(rawHeader(nD.data, "Content-Type"), "application/url"), "Content-Type application/url"},
		{notify.Contact != nil, "a Contact"},
		{notify.Via != nil && via.Next == nil && via.Protocol == "SIP" && via.Version == "2.0" && via.Transport == "UDP", "one UDP Via"},
		{strings.HasPrefix(paramOf(via.Param, "branch"), "z9hG4bK"), "an RFC 3261 branch"},
		{via.Host == nD.from.Addr().String() && via.Port == nD.from.Port(), "Via sent-by = the address it came from"},
		// Raw: gosip reads a missing Max-Forwards as 0.
		{rawHeader(nD.data, "Max-Forwards") != "", "Max-Forwards"},
		{strings.TrimRight(bodyOf(notify), "\r\n") == wantURL, "body " + wantURL},
	})
	// Answer where the NOTIFY's Via says.
	to := nD.from
	if a, err := netip.ParseAddr(via.Host); err == nil && via.Port != 0 {
		to = netip.AddrPortFrom(a, via.Port)
	}
	if _, err := c.WriteToUDPAddrPort(okFor(nD.data), to); err != nil {
		t.Fatal(err)
	}
	l.waitLog(t, map[string]string{"msg": "exchange", "mac": mac, "outcome": "provisioned"})
	// Nothing more comes: the NOTIFY is not retransmitted after the 200.
	got, err = readAll(c, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range got {
		t.Errorf("datagram from %s after the NOTIFY was answered:\n%s", d.from, d.data)
	}
}

// sipCheck is one assertion on a SIP message.
type sipCheck struct {
	ok   bool
	what string
}

// checkSIP reports each check that fails, with the datagram as received.
func checkSIP(t *testing.T, name string, d datagram, checks []sipCheck) {
	t.Helper()
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: want %s:\n%s", name, c.what, d.data)
		}
	}
}

// simulate -fetch downloads the Htek files from an HTTP server in the pbx
// namespace, in the Htek order, stopping at the first that exists.
func TestE2EFetch(t *testing.T) {
	l := newLab(t)
	const mac = "001fc11b4e1c"
	ln, err := l.pbx.Listen("tcp4", netip.AddrPortFrom(l.pbxIP, 8080).String())
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		paths []string
	)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			paths = append(paths, r.URL.Path)
			mu.Unlock()
			if r.URL.Path != "/htek/cfg"+mac+".xml" {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/xml")
			fmt.Fprintf(w, "<?xml version=\"1.0\"?>\n<hl_provision version=\"1\"><config><P1>e2e-%s</P1></config></hl_provision>\n", mac)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	l.start("", "[resolve]\n[[resolve.rule]]\nvendor = \"htek\"\nurl = \"http://198.18.0.1:8080/htek/\"\n")
	r := l.simulate(t, "-vendor", "htek", "-mac", mac, "-fetch")
	if r.code != 0 || r.url != "http://198.18.0.1:8080/htek/" {
		t.Fatalf("want exit 0 and the URL\n%s", r)
	}
	if !strings.Contains(r.stderr, "cfg"+mac+".xml") {
		t.Errorf("stderr does not report the fetched cfg%s.xml\n%s", mac, r)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"/htek/factory0000.xml", "/htek/cfg0000.xml", "/htek/" + mac + ".cfg", "/htek/cfg" + mac, "/htek/cfg" + mac + ".xml"}
	if !slices.Equal(paths, want) {
		t.Errorf("HTTP requests %q, want the Htek order %q", paths, want)
	}
}

// Without a configuration file pnpd observes: every phone is logged with
// what it said it is, none is answered, and the log says how to configure.
func TestE2EObserveWithoutConfig(t *testing.T) {
	if _, err := os.Stat("/etc/pnpd/pnpd.toml"); err == nil {
		skipOrFail(t, "/etc/pnpd/pnpd.toml exists on this machine: serve would read it")
	}
	l := newLab(t)
	l.run("(none)")
	if !strings.Contains(l.log.String(), "observe mode") || !strings.Contains(l.log.String(), "/etc/pnpd/pnpd.toml") {
		t.Errorf("serve does not say it observes and how to configure it")
	}
	r := l.simulate(t, "-vendor", "yealink", "-mac", "0015657322ff", "-timeout", "2s")
	if r.code != 1 || r.url != "" || len(r.responses) != 0 || r.notifies != 0 {
		t.Errorf("an observed phone was answered\n%s", r)
	}
	kv := l.waitLog(t, map[string]string{"msg": "exchange", "outcome": "observed", "mac": "0015657322ff"})
	if kv != nil {
		if kv["brand"] != "yealink" || kv["model"] == "" || kv["firmware"] == "" || kv["iface"] != l.pbxIf ||
			!strings.HasPrefix(kv["src"], l.phoneIP.String()+":") {
			t.Errorf("observed line lacks what the phone said: %v", kv)
		}
	}
}
