package netio

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestChooseMode(t *testing.T) {
	wild := Holder{Local: netip.MustParseAddrPort("0.0.0.0:5060"), Process: "asterisk (pid 7)"}
	wild6 := Holder{Local: netip.MustParseAddrPort("[::]:5060")}
	uni := Holder{Local: netip.MustParseAddrPort("192.0.2.10:5060"), Process: "asterisk (pid 7)"}
	yes, no := true, false
	cases := []struct {
		name string
		h    Host
		want Mode
		err  string // part of the error, when one is wanted
	}{
		{"wildcard PBX, CAP_NET_RAW", Host{Holders: []Holder{wild}, CapNetRaw: true}, ModePacket, ""},
		{"IPv6 wildcard", Host{Holders: []Holder{wild6}, CapNetRaw: true}, ModePacket, ""},
		{"wildcard PBX, no capability", Host{Holders: []Holder{wild}}, "", "CAP_NET_RAW"},
		{"unicast PBX", Host{Holders: []Holder{uni}, Asterisk: true, PBXSIP: &yes}, ModeBind, ""},
		{"unicast and wildcard", Host{Holders: []Holder{uni, wild}, CapNetRaw: true}, ModePacket, ""},
		{"nothing here", Host{}, ModeBind, ""},
		{"Asterisk without SIP", Host{Asterisk: true, PBXSIP: &no}, ModeBind, ""},
		{"Asterisk, SIP unknown", Host{Asterisk: true, CapNetRaw: true}, ModePacket, ""},
		{"Asterisk with SIP, port free", Host{Asterisk: true, PBXSIP: &yes, CapNetRaw: true}, ModePacket, ""},
		{"Asterisk with SIP, no capability", Host{Asterisk: true, PBXSIP: &yes}, "", `mode = "bind"`},
		{"PBX configured here, not answering", Host{PBXHere: true, CapNetRaw: true}, ModePacket, ""},
		{"PBX configured here, no capability", Host{PBXHere: true}, "", "CAP_NET_RAW"},
		{"/proc unreadable", Host{Unknown: errors.New("open /proc/self/net/udp: permission denied"), CapNetRaw: true}, ModePacket, ""},
		{"/proc unreadable, no capability", Host{Unknown: errors.New("open /proc/self/net/udp: permission denied")}, "", "cannot tell who holds"},
		{"another responder on the group", Host{Holders: []Holder{{Local: netip.MustParseAddrPort("224.0.1.75:5060")}}, CapNetRaw: true}, "", "another responder"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.h.Port, c.h.Group = 5060, netip.MustParseAddr("224.0.1.75")
			got, err := ChooseMode(c.h)
			if c.err != "" {
				if !errors.Is(err, ErrNoSafeMode) || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want ErrNoSafeMode naming %q", err, c.err)
				}
				return
			}
			if err != nil || got.Mode != c.want || got.Why == "" {
				t.Fatalf("ChooseMode = %+v, %v; want %s with a reason", got, err, c.want)
			}
			if (got.Mode == ModeBind) != (got.Better == "") {
				t.Errorf("Better = %q for %s", got.Better, got.Mode)
			}
		})
	}
}

func TestParseMode(t *testing.T) {
	for _, m := range Modes() {
		if got, err := ParseMode(string(m)); err != nil || got != m {
			t.Errorf("ParseMode(%q) = %q, %v", m, got, err)
		}
	}
	if _, err := ParseMode("multicast"); err == nil {
		t.Error("ParseMode accepted an unknown mode")
	}
}

func TestParseProcAddr(t *testing.T) {
	cases := map[string]string{
		"00000000:13C4":                         "0.0.0.0:5060",
		"0A0012C6:13C4":                         "198.18.0.10:5060",
		"00000000000000000000000000000000:13C4": "[::]:5060",
		"0000000000000000FFFF00000A0012C6:13C4": "198.18.0.10:5060",
		"00000000000000000000000001000000:0035": "[::1]:53",
	}
	for in, want := range cases {
		got, ok := parseProcAddr(in)
		if !ok || got.String() != want {
			t.Errorf("parseProcAddr(%q) = %s, %t; want %s", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", "13C4", "0A0012C6", "zz0012C6:13C4", "0A0012C6:1FFFF"} {
		if _, ok := parseProcAddr(bad); ok {
			t.Errorf("parseProcAddr(%q) accepted", bad)
		}
	}
}

func TestProcessName(t *testing.T) {
	cases := []struct{ comm, cmdline, want string }{
		{"asterisk\n", "/usr/sbin/asterisk\x00-f\x00", "asterisk"},
		{"ld-linux-x86-64\n", "/r/ld-linux-x86-64.so.2\x00--library-path\x00/r/lib\x00/r/usr/sbin/asterisk\x00-f\x00-C\x00/x/asterisk.conf\x00", "asterisk"},
		{"ld-linux-x86-64\n", "", "ld-linux-x86-64"},
	}
	for _, c := range cases {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "comm"), []byte(c.comm), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cmdline"), []byte(c.cmdline), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := processName(dir); got != c.want {
			t.Errorf("processName(%q, %q) = %q, want %q", c.comm, c.cmdline, got, c.want)
		}
	}
}

// TestPortHolders binds a UDP port on loopback and finds it, with this
// process as its holder.
func TestPortHolders(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	port := c.LocalAddr().(*net.UDPAddr).Port
	hs, err := PortHolders(port)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 || hs[0].Local.String() != c.LocalAddr().String() || hs[0].Wildcard() {
		t.Fatalf("PortHolders(%d) = %v", port, hs)
	}
	if hs[0].PID != 0 && hs[0].PID != os.Getpid() {
		t.Errorf("holder pid %d, want ours (%d)", hs[0].PID, os.Getpid())
	}
	if of, err := PortHoldersOf(os.Getpid(), port); err != nil || len(of) != 1 || of[0] != hs[0] {
		t.Errorf("PortHoldersOf(self) = %v, %v; want %v", of, err, hs)
	}
	if hs[0].Process != "" && !strings.Contains(hs[0].Process, "(pid ") {
		t.Errorf("holder process %q", hs[0].Process)
	}
	if hs[0].PID == os.Getpid() {
		local := hs[0].Local
		for _, tt := range []struct {
			name string
			addr netip.AddrPort
			want bool
		}{
			{"its address", local, true},
			{"the wildcard on its port", netip.AddrPortFrom(netip.IPv4Unspecified(), local.Port()), false},
		} {
			t.Run("HeldBy "+tt.name, func(t *testing.T) {
				if held, _, err := HeldBy(os.Getpid(), tt.addr); err != nil || held != tt.want {
					t.Errorf("HeldBy(self, %s) = %v, %v; want %v", tt.addr, held, err, tt.want)
				}
			})
		}
	}
}

func TestParseProcIGMP(t *testing.T) {
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
			got := parseProcIGMP(tt.text, testGroup.Addr())
			if !slices.Equal(got, tt.want) {
				t.Errorf("joined on %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBindVerdict(t *testing.T) {
	yes := true
	cases := []struct {
		name string
		h    Host
		want Verdict
	}{
		{"nothing, nobody", Host{}, BindSafe},
		{"unicast holder", Host{Holders: []Holder{{Local: netip.MustParseAddrPort("192.0.2.10:5060")}}}, BindSafe},
		{"wildcard holder", Host{Holders: []Holder{{Local: netip.MustParseAddrPort("0.0.0.0:5060")}}}, BindBlocked},
		{"group holder", Host{Holders: []Holder{{Local: netip.MustParseAddrPort("224.0.1.75:5060")}}}, BindDuplicate},
		{"unreadable", Host{Unknown: errors.New("no /proc")}, BindBlocked},
		{"Asterisk here", Host{Asterisk: true}, BindRisky},
		{"PBX configured here", Host{PBXHere: true}, BindRisky},
		{"PBX with SIP", Host{Asterisk: true, PBXSIP: &yes}, BindRisky},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.h.Port, c.h.Group = 5060, netip.MustParseAddr("224.0.1.75")
			if got, why := BindVerdict(c.h); got != c.want || why == "" {
				t.Errorf("BindVerdict = %d %q, want %d", got, why, c.want)
			}
		})
	}
}

func TestCheckSockets(t *testing.T) {
	lo := []Candidate{{Name: "lo", Index: 1, Prefix: netip.MustParsePrefix("127.0.0.1/8")}}
	if err := CheckSockets(ModeBind, lo); err != nil {
		t.Errorf("bind: %v", err)
	}
	if err := CheckSockets(ModePacket, lo); !errors.Is(err, ErrNotEthernet) {
		t.Errorf("packet on lo: %v, want ErrNotEthernet", err)
	}
	err := CheckSockets(ModeRaw, lo)
	if HasCapNetRaw() != (err == nil) {
		t.Errorf("raw: %v with CAP_NET_RAW %t", err, HasCapNetRaw())
	}
}
