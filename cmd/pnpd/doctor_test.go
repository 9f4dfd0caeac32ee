package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pnpd/pnpd/pkg/netio"
)

// docGroup is the PnP group.
var docGroup = netip.MustParseAddr("224.0.1.75")

// docStockJailConf is the part of fail2ban's stock jail.conf that matters.
var docStockJailConf = func() string {
	b, err := os.ReadFile(filepath.Join("..", "..", "pkg", "fail2ban", "testdata", "jail.conf"))
	if err != nil {
		panic(err)
	}
	return string(b)
}()

// docWriteFiles writes name -> content under root, making directories.
func docWriteFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDoctorFail2banFinding checks what doctor says for fail2ban, given
// whether the PBX sees the SUBSCRIBEs.
func TestDoctorFail2banFinding(t *testing.T) {
	phones := []netip.Prefix{netip.MustParsePrefix("192.168.10.0/24")}
	tests := []struct {
		name  string
		files map[string]string
		sees  bool
		want  []string // substrings, in order
	}{
		{"not installed", nil, true, []string{"ok    fail2ban: not installed"}},
		{"no asterisk jail", map[string]string{"etc/fail2ban/jail.conf": docStockJailConf}, true,
			[]string{"ok    fail2ban: installed, not running now", "no Asterisk jail enabled"}},
		{"jail, but the PBX sees nothing", map[string]string{"etc/fail2ban/jail.local": "[asterisk]\nenabled = true\n"}, false,
			[]string{"ok    fail2ban:", "jail [asterisk] (enabled in /etc/fail2ban/jail.local)", "does not see"}},
		{"jail and 401s", map[string]string{"etc/fail2ban/jail.local": "[asterisk]\nenabled = true\nignoreip = 127.0.0.1/8 ::1\n"}, true,
			[]string{"warn  fail2ban:", "No matching endpoint found", "fix: set [sip] mode = \"packet\"",
				"[asterisk] ignoreip = 127.0.0.1/8 ::1 192.168.10.0/24 in /etc/fail2ban/jail.local"}},
		{"jail and 401s, phones ignored", map[string]string{"etc/fail2ban/jail.local": "[asterisk]\nenabled = true\nignoreip = 127.0.0.1/8 192.168.0.0/16\n"}, true,
			[]string{"ok    fail2ban:", "ignoreip covers their subnets"}},
		{"jail and 401s, one host ignored only", map[string]string{"etc/fail2ban/jail.local": "[asterisk]\nenabled = true\nignoreip = 192.168.10.5\n"}, true,
			[]string{"warn  fail2ban:", "ignoreip = 192.168.10.5 192.168.10.0/24"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			docWriteFiles(t, root, tt.files)
			var out bytes.Buffer
			d := &doctor{out: &out}
			d.checkFail2ban(root, tt.sees, phones)
			docInOrder(t, out.String(), tt.want)
			if d.fails != 0 {
				t.Errorf("%d failures: fail2ban is never a failure", d.fails)
			}
		})
	}
}

// docInOrder fails unless every want occurs in text, in order.
func docInOrder(t *testing.T, text string, want []string) {
	t.Helper()
	rest := text
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Errorf("no %q (in order) in:\n%s", w, text)
			return
		}
		rest = rest[i+len(w):]
	}
}

// TestDoctorMode checks the "sip mode" finding on made-up hosts.
func TestDoctorMode(t *testing.T) {
	ast := func(addr string) netio.Holder {
		return netio.Holder{Local: netip.MustParseAddrPort(addr), Process: "asterisk (pid 7)"}
	}
	yes, no := true, false
	tests := []struct {
		name   string
		mode   string
		host   netio.Host
		want   netio.Mode
		usable bool
		line   string // the finding's start
		more   []string
	}{
		{"auto, wildcard, CAP_NET_RAW", "auto", netio.Host{Holders: []netio.Holder{ast("0.0.0.0:5060")}, Asterisk: true, CapNetRaw: true},
			netio.ModePacket, true, "ok    sip mode: auto picks packet: asterisk (pid 7) on 0.0.0.0:5060 holds UDP 5060 on every address", []string{"pnpd serve needs CAP_NET_RAW"}},
		{"auto, IPv6 wildcard, CAP_NET_RAW", "auto", netio.Host{Holders: []netio.Holder{ast("[::]:5060")}, Asterisk: true, CapNetRaw: true},
			netio.ModePacket, true, "ok    sip mode: auto picks packet", nil},
		{"auto, wildcard, no capability", "auto", netio.Host{Holders: []netio.Holder{ast("0.0.0.0:5060")}, Asterisk: true},
			"", false, "FAIL  sip mode: auto finds no safe mode: no safe way to receive the group: asterisk (pid 7) on 0.0.0.0:5060",
			[]string{"fix: grant pnpd CAP_NET_RAW", "bind=ADDR:5060", "doctor judges by its own capabilities"}},
		{"auto, unicast", "auto", netio.Host{Holders: []netio.Holder{ast("192.0.2.10:5060")}, Asterisk: true},
			netio.ModeBind, true, "ok    sip mode: auto picks bind: UDP 5060 is held on unicast addresses only (asterisk (pid 7) on 192.0.2.10:5060)", nil},
		{"auto, nothing, PBX without SIP", "auto", netio.Host{Asterisk: true, PBXSIP: &no},
			netio.ModeBind, true, "ok    sip mode: auto picks bind: nothing holds UDP 5060 and the PBX says it has no SIP stack loaded", nil},
		{"auto, nothing, no Asterisk", "auto", netio.Host{},
			netio.ModeBind, true, "ok    sip mode: auto picks bind: nothing holds UDP 5060, no Asterisk runs", nil},
		{"auto, nothing, PBX with SIP, no capability", "auto", netio.Host{Asterisk: true, PBXSIP: &yes},
			"", false, "FAIL  sip mode: auto finds no safe mode: no safe way to receive the group: nothing holds UDP 5060 now, but the PBX here has its SIP stack loaded",
			[]string{"set [sip] mode = \"bind\""}},
		{"bind, wildcard", "bind", netio.Host{Holders: []netio.Holder{ast("0.0.0.0:5060")}, Asterisk: true, CapNetRaw: true},
			netio.ModeBind, false, "FAIL  sip mode: bind, but asterisk (pid 7) on 0.0.0.0:5060 holds UDP 5060 on every address",
			[]string{"next start or reload", "fix: set [sip] mode = \"auto\""}},
		{"bind, unicast", "bind", netio.Host{Holders: []netio.Holder{ast("192.0.2.10:5060")}, Asterisk: true},
			netio.ModeBind, true, "ok    sip mode: bind: UDP 5060 is held on unicast addresses only", nil},
		{"bind, nothing yet, Asterisk here", "bind", netio.Host{Asterisk: true},
			netio.ModeBind, true, "warn  sip mode: bind: nothing holds UDP 5060 now, but Asterisk runs here", []string{"fix: bind the PBX's SIP transport"}},
		{"raw without capability", "raw", netio.Host{},
			netio.ModeRaw, false, "FAIL  sip mode: raw needs CAP_NET_RAW", []string{"fix: grant pnpd serve CAP_NET_RAW"}},
		{"packet without capability", "packet", netio.Host{Holders: []netio.Holder{ast("0.0.0.0:5060")}},
			netio.ModePacket, false, "FAIL  sip mode: packet needs CAP_NET_RAW", nil},
		{"packet", "packet", netio.Host{Holders: []netio.Holder{ast("0.0.0.0:5060")}, CapNetRaw: true},
			netio.ModePacket, true, "ok    sip mode: packet: the link layer", nil},
		{"raw", "raw", netio.Host{CapNetRaw: true},
			netio.ModeRaw, true, "ok    sip mode: raw:", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.host.Port = 5060
			var out bytes.Buffer
			d := &doctor{out: &out}
			m, usable := d.checkMode(tt.mode, tt.host)
			if m != tt.want || usable != tt.usable {
				t.Errorf("mode %q usable %v, want %q %v", m, usable, tt.want, tt.usable)
			}
			if !strings.HasPrefix(out.String(), tt.line) {
				t.Errorf("finding:\n%s\nwant it to start %q", out.String(), tt.line)
			}
			docInOrder(t, out.String(), tt.more)
		})
	}
}

// TestDoctorPBXSees checks when doctor says the PBX receives the phones'
// SUBSCRIBEs.
func TestDoctorPBXSees(t *testing.T) {
	wild := []netio.Holder{{Local: netip.MustParseAddrPort("0.0.0.0:5060"), Process: "asterisk (pid 7)"}}
	uni := []netio.Holder{{Local: netip.MustParseAddrPort("192.0.2.10:5060"), Process: "asterisk (pid 7)"}}
	group := netip.AddrPortFrom(docGroup, 5060)
	tests := []struct {
		name    string
		holders []netio.Holder
		mode    netio.Mode
		joined  []string
		sees    bool
		line    string
	}{
		{"unicast transport, joined", uni, netio.ModeBind, []string{"eth0"}, false, "ok    pbx sees SUBSCRIBEs: no: nothing holds UDP 5060 on every address"},
		{"wildcard, packet", wild, netio.ModePacket, nil, false, "ok    pbx sees SUBSCRIBEs: no: asterisk (pid 7) on 0.0.0.0:5060 holds UDP 5060 on every address, but nothing here has joined 224.0.1.75, and packet mode"},
		{"wildcard, packet, joined by another", wild, netio.ModePacket, []string{"eth0"}, true, "warn  pbx sees SUBSCRIBEs: yes: asterisk (pid 7) on 0.0.0.0:5060 holds UDP 5060 on every address and this host has joined 224.0.1.75 on eth0: "},
		{"wildcard, raw", wild, netio.ModeRaw, nil, true, "warn  pbx sees SUBSCRIBEs: yes: asterisk (pid 7) on 0.0.0.0:5060 holds UDP 5060 on every address and raw mode joins the group: "},
		{"wildcard, bind", wild, netio.ModeBind, nil, true, "warn  pbx sees SUBSCRIBEs: yes:"},
		{"wildcard, no mode, not joined", wild, "", nil, false, "ok    pbx sees SUBSCRIBEs: no:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			d := &doctor{out: &out}
			if got := d.checkPBXSees(group, tt.holders, tt.mode, tt.joined); got != tt.sees {
				t.Errorf("sees %v, want %v", got, tt.sees)
			}
			if !strings.HasPrefix(out.String(), tt.line) {
				t.Errorf("finding:\n%s\nwant it to start %q", out.String(), tt.line)
			}
			if tt.sees && (!strings.Contains(out.String(), "401") || !strings.Contains(out.String(), "No matching endpoint found") ||
				!strings.Contains(out.String(), "fix: set [sip] mode = \"packet\"") || !strings.Contains(out.String(), "bind=ADDR:5060")) {
				t.Errorf("the warning lacks the 401 or a remedy:\n%s", out.String())
			}
		})
	}
}

func TestPBXOnThisHost(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:5038": true, "[::1]:5038": true, "localhost:5038": true,
		"192.0.2.77:5038": false, "pbx.example:5038": false, "nonsense": false,
	} {
		if got := pbxOnThisHost(addr); got != want {
			t.Errorf("pbxOnThisHost(%q) = %t, want %t", addr, got, want)
		}
	}
}
