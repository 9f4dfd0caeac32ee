package main

// pnpd doctor beside a PBX on the same host (issue 4): unit tests of what
// doctor reads (/proc/net/igmp, fail2ban's jail files, a loader's command
// line) and of its findings on made-up hosts; the systemd unit's
// capabilities; `pnpd doctor` in the lab's pbx namespace beside a real
// PJSIP Asterisk; and `pnpd serve` run as an unprivileged user with exactly
// the unit's capabilities.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/asterisk/asterisktest"
	"github.com/pnpd/pnpd/pkg/netio"
)

// docGroup is the PnP group.
var docGroup = netip.MustParseAddr("224.0.1.75")

func TestDoctorIGMP(t *testing.T) {
	const head = "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n"
	tests := []struct {
		name, text string
		want       []string
	}{
		{"empty", "", nil},
		{"header only", head, nil},
		{"all-hosts only", head +
			"1\tlo        :     1      V3\n\t\t\t\t010000E0     1 0:00000000\t\t0\n" +
			"2\teth0      :     1      V3\n\t\t\t\t010000E0     1 0:00000000\t\t0\n", nil},
		{"joined on one", head +
			"1\tlo        :     1      V3\n\t\t\t\t010000E0     1 0:00000000\t\t0\n" +
			"2\teth0      :     2      V3\n\t\t\t\t4B0100E0     1 0:00000000\t\t0\n\t\t\t\t010000E0     1 0:00000000\t\t0\n" +
			"3\teth1      :     1      V3\n\t\t\t\t010000E0     1 0:00000000\t\t0\n", []string{"eth0"}},
		{"joined on two, lower case", head +
			"2\teth0      :     2      V2\n\t\t\t\t4b0100e0     2 0:00000000\t\t1\n" +
			"3\tbr-phones :     2      V3\n\t\t\t\t010000E0     1 0:00000000\t\t0\n\t\t\t\t4B0100E0     1 0:00000000\t\t0\n", []string{"eth0", "br-phones"}},
		{"long interface name", head +
			"7\tpnpde2e-a1b2c3d:     1      V3\n\t\t\t\t4B0100E0     1 0:00000000\t\t0\n", []string{"pnpde2e-a1b2c3d"}},
		{"big-endian spelling is another group", head +
			"2\teth0      :     1      V3\n\t\t\t\tE000014B     1 0:00000000\t\t0\n", nil},
		{"group line before any interface", head + "\t\t\t\t4B0100E0     1 0:00000000\t\t0\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if tt.text != "" {
				docWriteFiles(t, root, map[string]string{"proc/net/igmp": tt.text})
			}
			got, err := igmpJoined(root, docGroup)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("joined on %q, want %q", got, tt.want)
			}
		})
	}
}

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

// docStockJailConf is the part of fail2ban's stock jail.conf that matters.
const docStockJailConf = `#
# WARNING: heavily refactored in 0.9.0 release.
[INCLUDES]
before = paths-debian.conf

[DEFAULT]
ignoreip = 127.0.0.1/8 ::1
bantime  = 10m
enabled = false
filter = %(__name__)s[mode=%(mode)s]

[sshd]
port    = ssh
logpath = %(sshd_log)s

[asterisk]
port     = 5060,5061
action   = %(banaction)s[name=%(__name__)s-tcp, port="%(port)s", protocol="tcp"]
           %(banaction)s[name=%(__name__)s-udp, port="%(port)s", protocol="udp"]
           %(mta)s-whois[name=%(__name__)s, dest="%(destemail)s"]
logpath  = /var/log/asterisk/messages
maxretry = 10
`

func TestDoctorFail2ban(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string]string
		socket    string // a unix socket to create
		installed bool
		jails     []f2bJail
		running   string
	}{
		{name: "not installed"},
		{name: "stock, nothing enabled", installed: true,
			files: map[string]string{"etc/fail2ban/jail.conf": docStockJailConf}},
		{name: "debian default: sshd only", installed: true,
			files: map[string]string{"etc/fail2ban/jail.conf": docStockJailConf,
				"etc/fail2ban/jail.d/defaults-debian.conf": "[sshd]\nenabled = true\n"}},
		{name: "asterisk in jail.local", installed: true,
			files: map[string]string{"etc/fail2ban/jail.conf": docStockJailConf,
				"etc/fail2ban/jail.local": "[asterisk]\nenabled = true\n"},
			jails: []f2bJail{{Name: "asterisk", File: "/etc/fail2ban/jail.local", IgnoreIP: []string{"127.0.0.1/8", "::1"}}}},
		{name: "jail.local overrides jail.d/*.conf", installed: true,
			files: map[string]string{"etc/fail2ban/jail.conf": docStockJailConf,
				"etc/fail2ban/jail.d/pbx.conf": "[asterisk]\nenabled = yes\n",
				"etc/fail2ban/jail.local":      "[asterisk]\nenabled = false\n"}},
		{name: "jail.d/*.local overrides jail.local", installed: true,
			files: map[string]string{"etc/fail2ban/jail.conf": docStockJailConf,
				"etc/fail2ban/jail.local":       "[asterisk]\nenabled = false\n",
				"etc/fail2ban/jail.d/pbx.local": "[asterisk]\nenabled: on ; the PBX\nignoreip = 127.0.0.1/8,\n  192.168.10.0/24 # phones\n  10.0.0.7\n"},
			jails: []f2bJail{{Name: "asterisk", File: "/etc/fail2ban/jail.d/pbx.local", IgnoreIP: []string{"127.0.0.1/8", "192.168.10.0/24", "10.0.0.7"}}}},
		{name: "enabled by [DEFAULT]", installed: true,
			files: map[string]string{"etc/fail2ban/jail.conf": docStockJailConf,
				"etc/fail2ban/jail.local": "[DEFAULT]\nenabled = true\nignoreip = 127.0.0.1/8 198.18.0.0/16\n"},
			jails: []f2bJail{{Name: "asterisk", File: "/etc/fail2ban/jail.local", IgnoreIP: []string{"127.0.0.1/8", "198.18.0.0/16"}}}},
		{name: "another name, asterisk's filter", installed: true,
			files: map[string]string{"etc/fail2ban/jail.local": "[pbx-sip]\nfilter = asterisk[mode=normal]\nenabled = 1\n"},
			jails: []f2bJail{{Name: "pbx-sip", File: "/etc/fail2ban/jail.local"}}},
		{name: "old split jails", installed: true,
			files: map[string]string{"etc/fail2ban/jail.local": "[asterisk-udp]\nenabled = true\n[asterisk-tcp]\nenabled = true\n"},
			jails: []f2bJail{{Name: "asterisk-tcp", File: "/etc/fail2ban/jail.local"}, {Name: "asterisk-udp", File: "/etc/fail2ban/jail.local"}}},
		{name: "running", installed: true, socket: "run/fail2ban/fail2ban.sock", running: "/run/fail2ban/fail2ban.sock",
			files: map[string]string{"etc/fail2ban/jail.local": "[asterisk]\nenabled = true\n"},
			jails: []f2bJail{{Name: "asterisk", File: "/etc/fail2ban/jail.local"}}},
		{name: "running, old socket place", installed: true, socket: "var/run/fail2ban/fail2ban.sock", running: "/var/run/fail2ban/fail2ban.sock",
			files: map[string]string{"etc/fail2ban/jail.conf": docStockJailConf}},
		{name: "a stale file is no socket", installed: true,
			files: map[string]string{"etc/fail2ban/jail.conf": docStockJailConf, "run/fail2ban/fail2ban.sock": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			docWriteFiles(t, root, tt.files)
			if tt.socket != "" {
				p := filepath.Join(root, tt.socket)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				ln, err := net.Listen("unix", p)
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
			}
			st, err := readFail2ban(root)
			if err != nil {
				t.Fatal(err)
			}
			if st.Installed != tt.installed || st.Socket != tt.running {
				t.Errorf("installed %v, socket %q; want %v, %q", st.Installed, st.Socket, tt.installed, tt.running)
			}
			if fmt.Sprint(st.Jails) != fmt.Sprint(tt.jails) {
				t.Errorf("jails %+v\nwant %+v", st.Jails, tt.jails)
			}
		})
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

func TestDoctorLoadedProgram(t *testing.T) {
	tests := []struct{ name, cmdline, want string }{
		{"asterisktest", "/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2\x00--library-path\x00/root/usr/lib/x86_64-linux-gnu\x00/root/usr/sbin/asterisk\x00-C\x00/tmp/ast-1/etc/asterisk.conf\x00-f\x00", "asterisk"},
		{"plain", "/lib64/ld-linux-x86-64.so.2\x00/usr/sbin/kamailio\x00", "kamailio"},
		{"flags without value", "ld.so\x00--inhibit-cache\x00--argv0\x00x\x00/usr/bin/prog\x00", "prog"},
		{"loader alone", "/lib64/ld-linux-x86-64.so.2\x00--list\x00", ""},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := loadedProgram([]byte(tt.cmdline)); got != tt.want {
				t.Errorf("%q, want %q", got, tt.want)
			}
		})
	}
	root := t.TempDir()
	docWriteFiles(t, root, map[string]string{"proc/42/cmdline": "/x/ld-linux-x86-64.so.2\x00--library-path\x00/x\x00/x/usr/sbin/asterisk\x00-f\x00"})
	for _, c := range []struct{ in, want string }{
		{"ld-linux-x86-64 (pid 42)", "asterisk (pid 42)"},
		{"ld-linux-x86-64 (pid 43)", "ld-linux-x86-64 (pid 43)"},
		{"asterisk (pid 42)", "asterisk (pid 42)"},
		{"ld-linux-x86-64 (pid ../42)", "ld-linux-x86-64 (pid ../42)"},
		{"", ""},
	} {
		if got := holderProcess(root, c.in); got != c.want {
			t.Errorf("holderProcess(%q) = %q, want %q", c.in, got, c.want)
		}
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
			netio.ModeBind, true, "ok    sip mode: auto picks bind: nothing holds UDP 5060 and no Asterisk runs", nil},
		{"auto, nothing, PBX with SIP, no capability", "auto", netio.Host{Asterisk: true, PBXSIP: &yes},
			"", false, "FAIL  sip mode: auto finds no safe mode: no safe way to receive the group: nothing holds UDP 5060 now, but Asterisk runs here with its SIP stack loaded",
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

// docUnitFile is the example systemd unit.
var docUnitFile = filepath.Join("..", "..", "examples", "pnpd.service")

// docUnitDirectives returns the values of every assignment to key in the
// unit's [Service] section, comments left out.
func docUnitDirectives(t *testing.T, key string) []string {
	t.Helper()
	f, err := os.Open(docUnitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok && section == "[Service]" && strings.TrimSpace(k) == key {
			out = append(out, strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// docUnitCaps returns the unit's capabilities, checked to be exactly
// CAP_NET_RAW in both AmbientCapabilities and CapabilityBoundingSet, in
// setpriv's spelling ("net_raw").
func docUnitCaps(t *testing.T) []string {
	t.Helper()
	amb := docUnitDirectives(t, "AmbientCapabilities")
	bnd := docUnitDirectives(t, "CapabilityBoundingSet")
	if len(amb) != 1 || len(bnd) != 1 {
		t.Fatalf("%s: AmbientCapabilities %q and CapabilityBoundingSet %q: want one line each", docUnitFile, amb, bnd)
	}
	if amb[0] != "CAP_NET_RAW" || bnd[0] != amb[0] {
		t.Fatalf("%s: AmbientCapabilities=%s, CapabilityBoundingSet=%s: want CAP_NET_RAW in both", docUnitFile, amb[0], bnd[0])
	}
	var caps []string
	for _, c := range strings.Fields(amb[0]) {
		caps = append(caps, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	return caps
}

func TestUnitFile(t *testing.T) {
	docUnitCaps(t)
	fams := docUnitDirectives(t, "RestrictAddressFamilies")
	if len(fams) != 1 {
		t.Fatalf("RestrictAddressFamilies %q: want one line", fams)
	}
	for _, want := range []string{"AF_INET", "AF_PACKET", "AF_NETLINK"} {
		if !slices.Contains(strings.Fields(fams[0]), want) {
			t.Errorf("RestrictAddressFamilies=%s lacks %s", fams[0], want)
		}
	}
	for key, want := range map[string]string{"DynamicUser": "yes", "NoNewPrivileges": "yes"} {
		if got := docUnitDirectives(t, key); !slices.Equal(got, []string{want}) {
			t.Errorf("%s=%q, want %q", key, got, want)
		}
	}
	b, err := os.ReadFile(docUnitFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "After=network-online.target asterisk.service") {
		t.Errorf("the unit does not start after asterisk.service")
	}
}

// docPJSIP is a pjsip.conf whose UDP transport binds addr.
func docPJSIP(addr string) string {
	return "[transport-udp]\ntype=transport\nprotocol=udp\nbind=" + addr + "\n"
}

// nobodyID is the uid and gid the unprivileged runs take: it stands in for
// the unit's DynamicUser.
const nobodyID = "65534"

// docSetprivArgs are setpriv's arguments that run a program as nobodyID with
// exactly caps (setpriv's names: "net_raw") in its inheritable, ambient
// and bounding sets, and so in its effective set, as systemd does with the
// unit's AmbientCapabilities and CapabilityBoundingSet.
func docSetprivArgs(caps []string) []string {
	set := "-all"
	for _, c := range caps {
		set += ",+" + c
	}
	args := []string{"--reuid=" + nobodyID, "--regid=" + nobodyID, "--clear-groups", "--no-new-privs",
		"--inh-caps=" + set, "--bounding-set=" + set}
	if len(caps) > 0 {
		args = append(args, "--ambient-caps=+"+strings.Join(caps, ",+"))
	}
	return args
}

// nobodyDir returns a new directory that uid nobodyID can read:
// t.TempDir() and its parent are 0700 and root's.
func nobodyDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// nobodyBinary copies the pnpd binary where uid nobodyID can run it: its
// build directory is root's alone.
func nobodyBinary(t *testing.T, bin string) string {
	t.Helper()
	dst := filepath.Join(nobodyDir(t), "pnpd")
	src, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, src); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// nobodyConfig writes cfg where uid nobodyID can read it and returns its
// path.
func nobodyConfig(t *testing.T, cfg string) string {
	t.Helper()
	p := filepath.Join(nobodyDir(t), "pnpd.toml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// docRun runs `bin args...` in the lab's pbx namespace, through setpriv
// with priv when priv is not nil, to its end, and returns its exit status
// and its stdout and stderr together.
func docRun(t *testing.T, l *lab, priv []string, bin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	name, argv := bin, args
	if priv != nil {
		name, argv = "setpriv", append(append(slices.Clone(priv), bin), args...)
	}
	var out bytes.Buffer
	cmd := l.pbx.Command(ctx, name, argv...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &ee) && ee.Exited():
		return ee.ExitCode(), out.String()
	}
	t.Fatalf("%s %s: %v\n%s", name, strings.Join(argv, " "), err, out.String())
	return 0, ""
}

// TestDoctorBeside runs `pnpd doctor` in the lab's pbx namespace beside a
// real PJSIP Asterisk, its transport on 0.0.0.0:5060 or on the
// namespace's unicast address.
func TestDoctorBeside(t *testing.T) {
	type env struct {
		l   *lab
		pid int // Asterisk's
	}
	tests := []struct {
		name    string
		unicast bool                 // the transport on the pbx address, else 0.0.0.0
		mode    string               // [sip] mode; "" leaves it out (auto)
		nobody  bool                 // run doctor as nobody, without capabilities
		join    bool                 // join the group in the namespace first
		code    int                  // doctor's exit status
		want    func(e env) []string // substrings of doctor's output, in order
		wantNot []string             // must not appear
	}{
		{name: "wildcard, auto", code: 0,
			want: func(e env) []string {
				return []string{
					"ok    pbx sip: ModuleCheck: a SIP stack (res_pjsip.so or chan_sip.so) is loaded",
					fmt.Sprintf("ok    udp 5060: asterisk (pid %d) holds 0.0.0.0:5060 (IPv4 wildcard", e.pid),
					fmt.Sprintf("ok    sip mode: auto picks packet: asterisk (pid %d) on 0.0.0.0:5060 holds UDP 5060 on every address", e.pid),
					"ok    packet sockets:",
					"ok    pbx sees SUBSCRIBEs: no:",
					"0 failure(s)",
				}
			},
			wantNot: []string{"group join"}},
		{name: "wildcard, bind", mode: "bind", code: 1,
			want: func(e env) []string {
				return []string{
					fmt.Sprintf("FAIL  sip mode: bind, but asterisk (pid %d) on 0.0.0.0:5060 holds UDP 5060 on every address", e.pid),
					"warn  pbx sees SUBSCRIBEs: yes:", "No matching endpoint found",
					"1 failure(s)",
				}
			},
			wantNot: []string{"group join"}},
		{name: "wildcard, packet, group joined here", mode: "packet", join: true, code: 0,
			want: func(e env) []string {
				return []string{
					"ok    sip mode: packet:",
					fmt.Sprintf("warn  pbx sees SUBSCRIBEs: yes: asterisk (pid %d) on 0.0.0.0:5060 holds UDP 5060 on every address and this host has joined 224.0.1.75 on %s", e.pid, e.l.pbxIf),
					"401 Unauthorized", "fix: set [sip] mode = \"packet\"",
				}
			}},
		{name: "wildcard, auto, nobody without capabilities", nobody: true, code: 1,
			want: func(e env) []string {
				return []string{
					"ok    udp 5060: a process (run as root to see which) holds 0.0.0.0:5060",
					"FAIL  sip mode: auto finds no safe mode:", "without CAP_NET_RAW",
					"fix: grant pnpd CAP_NET_RAW",
				}
			}},
		{name: "unicast, auto", unicast: true, code: 0,
			want: func(e env) []string {
				return []string{
					fmt.Sprintf("ok    udp 5060: asterisk (pid %d) holds %s:5060 (IPv4 unicast", e.pid, e.l.pbxIP),
					fmt.Sprintf("ok    sip mode: auto picks bind: UDP 5060 is held on unicast addresses only (asterisk (pid %d) on %s:5060)", e.pid, e.l.pbxIP),
					"ok    group join: 224.0.1.75:5060 bound and joined on 1 interface(s)",
					"ok    pbx sees SUBSCRIBEs: no: nothing holds UDP 5060 on every address",
					"0 failure(s)",
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLab(t)
			bind := "0.0.0.0:5060"
			if tt.unicast {
				bind = l.pbxIP.String() + ":5060"
			}
			a := asterisktest.Start(t, asterisktest.Options{NS: l.pbx, PJSIP: docPJSIP(bind)})
			e := env{l: l, pid: a.PID()}
			docWaitHeld(t, e.pid, bind)
			if tt.join {
				c := joinGroup(t, l.pbx, l.pbxIf)
				defer c.Close()
			}
			cfg := fmt.Sprintf("[sip]\ninterfaces = [%q]\n", l.pbxIf)
			if tt.mode != "" {
				cfg += fmt.Sprintf("mode = %q\n", tt.mode)
			}
			cfg += "[resolve]\ndefault = \"http://prov.example/{vendor}/\"\n" + pbxConf(a, "")
			bin := l.bin
			var priv []string
			if tt.nobody {
				requireTool(t, "setpriv", "util-linux")
				bin, priv = nobodyBinary(t, l.bin), docSetprivArgs(nil)
			}
			code, out := docRun(t, l, priv, bin, "doctor", "-config", nobodyConfig(t, cfg))
			t.Logf("pnpd doctor (exit %d):\n%s", code, out)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			docInOrder(t, out, tt.want(e))
			for _, s := range tt.wantNot {
				if strings.Contains(out, s) {
					t.Errorf("output has %q", s)
				}
			}
			// Doctor took nothing from the PBX: its transport still holds
			// the port.
			docWaitHeld(t, e.pid, bind)
		})
	}
}

// docWaitHeld waits until Asterisk (pid) holds addr (UDP IPv4), as its
// transport does once it has started. It reads the table of Asterisk's
// network namespace, /proc/PID/net/udp: /proc/net is the namespace of the
// test process's main thread, whatever thread reads it.
func docWaitHeld(t *testing.T, pid int, addr string) {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	a := ap.Addr().As4()
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], ap.Port())
	deadline := time.Now().Add(logTimeout)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/udp", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if fs := strings.Fields(line); len(fs) > 1 && fs[1] == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Asterisk (pid %d) does not hold UDP %s:\n%s", pid, addr, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startSetpriv is lab.run for `pnpd serve` run through setpriv with priv:
// it starts bin in the pbx namespace and waits for msg=ready; at cleanup
// pnpd gets SIGTERM and must exit 0.
func (l *lab) startSetpriv(priv []string, bin, cfg string, args ...string) {
	t := l.t
	t.Helper()
	l.log = newSyncBuffer()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	argv := append(append(slices.Clone(priv), bin, "serve", "-log-level", "debug"), args...)
	cmd := l.pbx.Command(ctx, "setpriv", argv...)
	cmd.Stdout = l.log
	cmd.Stderr = l.log
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	l.serve = cmd
	l.exited = make(chan struct{})
	go func() {
		l.waitErr = cmd.Wait()
		close(l.exited)
	}()
	t.Cleanup(func() {
		defer cancel()
		l.stop()
		if t.Failed() {
			t.Logf("config:\n%s", cfg)
			t.Logf("setpriv %s\npnpd serve log:\n%s", strings.Join(argv, " "), l.log.String())
		}
	})
	rctx, rcancel := context.WithTimeout(context.Background(), startTimeout)
	defer rcancel()
	go func() {
		select {
		case <-l.exited:
			rcancel()
		case <-rctx.Done():
		}
	}()
	if _, err := l.log.waitLine(rctx, func(s string) bool { return logfmt(s)["msg"] == "ready" }); err != nil {
		select {
		case <-l.exited:
			t.Fatalf("pnpd serve exited before msg=ready: %v", l.waitErr)
		default:
			t.Fatalf("pnpd serve logged no msg=ready within %s", startTimeout)
		}
	}
}

// docProcStatus returns the fields of /proc/PID/status.
func docProcStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// TestUnprivileged runs `pnpd serve` as nobody beside a PJSIP Asterisk on
// 0.0.0.0:5060, with exactly the capabilities of examples/pnpd.service,
// and with none.
func TestUnprivileged(t *testing.T) {
	caps := docUnitCaps(t)
	tests := []struct {
		name string
		mode string
		caps []string
		ok   bool // serve starts and answers; else it must refuse to start
	}{
		{"packet with the unit's capabilities", "packet", caps, true},
		{"auto with the unit's capabilities", "auto", caps, true},
		{"auto without capabilities", "auto", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireTool(t, "setpriv", "util-linux")
			l := newLab(t)
			a := asterisktest.Start(t, asterisktest.Options{NS: l.pbx, PJSIP: docPJSIP("0.0.0.0:5060")})
			docWaitHeld(t, a.PID(), "0.0.0.0:5060")
			bin := nobodyBinary(t, l.bin)
			cfg := fmt.Sprintf("[sip]\ninterfaces = [%q]\nmode = %q\n[resolve]\ndefault = \"http://prov.example/{vendor}/{mac}/\"\n", l.pbxIf, tt.mode)
			path := nobodyConfig(t, cfg)
			priv := docSetprivArgs(tt.caps)
			if !tt.ok {
				code, out := docRun(t, l, priv, bin, "serve", "-config", path)
				t.Logf("pnpd serve as nobody (exit %d):\n%s", code, out)
				if code == 0 || !strings.Contains(out, "CAP_NET_RAW") {
					t.Errorf("pnpd serve as nobody without capabilities: exit %d, want non-zero and a message naming CAP_NET_RAW:\n%s", code, out)
				}
				return
			}
			l.startSetpriv(priv, bin, cfg, "-config", path)
			st := docProcStatus(t, l.serve.Process.Pid)
			if uid := strings.Fields(st["Uid"]); len(uid) == 0 || uid[0] != nobodyID || st["CapEff"] != "0000000000002000" || st["NoNewPrivs"] != "1" {
				t.Fatalf("pnpd serve runs with Uid %q, CapEff %q, NoNewPrivs %q; want %s, CAP_NET_RAW alone (0000000000002000), 1",
					st["Uid"], st["CapEff"], st["NoNewPrivs"], nobodyID)
			}
			kv := l.waitLog(t, map[string]string{"msg": "sip mode", "mode": "packet"})
			t.Logf("pnpd serve as nobody: sip mode=%s why=%q", kv["mode"], kv["why"])
			const mac = "001565000042"
			r := l.simulate(t, "-vendor", "yealink", "-mac", mac)
			if want := "http://prov.example/yealink/" + mac + "/"; r.code != 0 || r.url != want {
				t.Fatalf("want URL %s\n%s", want, r)
			}
			l.waitLog(t, map[string]string{"msg": "exchange", "mac": mac, "outcome": "provisioned"})
		})
	}
}
