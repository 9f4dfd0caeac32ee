package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseGood(t *testing.T) {
	c, err := Parse([]byte(`
[sip]
interfaces = ["eth0", "vlan20"]
group = "224.0.1.75:5060"
allow = ["192.168.0.0/16", "10.1.2.3"]
port = 5070

[resolve]
default = "http://prov.example.com/{vendor}/"

[[resolve.rule]]
mac = "00:1F:C1:1B:4E:1C"
url = "http://admin:123456@192.168.0.25:88"

[[resolve.rule]]
vendor = "Grandstream"
model = "GXP*"
subnet = "192.168.1.0/24"
url = "http://gs.example.com/cfg"
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.SIP.Interfaces, ","); got != "eth0,vlan20" {
		t.Errorf("interfaces %q", got)
	}
	if c.SIP.Group != DefaultGroup || c.SIP.Port != 5070 {
		t.Errorf("group %v port %d", c.SIP.Group, c.SIP.Port)
	}
	want := []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("10.1.2.3/32")}
	if len(c.SIP.Allow) != 2 || c.SIP.Allow[0] != want[0] || c.SIP.Allow[1] != want[1] {
		t.Errorf("allow %v", c.SIP.Allow)
	}
	if len(c.Resolve.Rules) != 2 {
		t.Fatalf("rules %+v", c.Resolve.Rules)
	}
	r0, r1 := c.Resolve.Rules[0], c.Resolve.Rules[1]
	if r0.MAC != "001fc11b4e1c" || r0.Line != 11 || r0.Name() != "rule 1 (line 11)" {
		t.Errorf("rule 1 %+v", r0)
	}
	if r1.Vendor != "grandstream" || r1.Model != "gxp*" || r1.Subnet != netip.MustParsePrefix("192.168.1.0/24") {
		t.Errorf("rule 2 %+v", r1)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], `should end in "/"`) || !strings.Contains(c.Warnings[0], "line 19") {
		t.Errorf("warnings %q", c.Warnings)
	}
}

func TestParseBad(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"unknown top key", "[sip]\ngroup = \"224.0.1.75:5060\"\nbogus = 1\n", "line 3: sip.bogus: unknown key"},
		{"unknown table", "[nope]\nx = 1\n", "nope"},
		{"unknown rule key", "[[resolve.rule]]\nvendor = \"htek\"\nurl = \"http://x/\"\n\n[[resolve.rule]]\nmac = \"001fc11b4e1c\"\nurls = \"http://y/\"\n", "line 7: resolve.rule.urls"},
		{"bad group", "[sip]\ngroup = \"10.0.0.1:5060\"\n", "sip.group"},
		{"group without port", "[sip]\ngroup = \"224.0.1.75\"\n", "sip.group"},
		{"ipv6 allow", "[sip]\nallow = [\"fe80::/10\"]\n", "sip.allow"},
		{"bad allow", "[sip]\nallow = [\"192.168.0.0/33\"]\n", "sip.allow"},
		{"bad port", "[sip]\nport = 70000\n", "sip.port"},
		{"bad mode", "[sip]\nmode = \"multicast\"\n", `line 2: sip.mode: "multicast" is not a mode (want auto, bind, raw, packet)`},
		{"packet mode on 5060", "[sip]\nmode = \"packet\"\nport = 5060\n", "sip.port: 5060 is the group's port"},
		{"negative priority", "[sip]\nrealtime_priority = -1\n", "sip.realtime_priority: -1"},
		{"priority too high", "[sip]\nrealtime_priority = 100\n", "sip.realtime_priority: 100"},
		{"raw mode on 5060", "[sip]\nmode = \"raw\"\nport = 5060\n", "sip.port: 5060 is the group's port"},
		{"wrong type", "[sip]\ninterfaces = \"eth0\"\n", "line 2"},
		{"syntax", "[sip\n", "line "},
		{"bad mac", "[[resolve.rule]]\nmac = \"00:1f:c1\"\nurl = \"http://x/\"\n", "resolve.rule[1].mac"},
		{"bad prefix", "[[resolve.rule]]\nmac_prefix = \"00zz\"\nurl = \"http://x/\"\n", "resolve.rule[1].mac_prefix"},
		{"bad subnet", "[[resolve.rule]]\nsubnet = \"lan\"\nurl = \"http://x/\"\n", "resolve.rule[1].subnet"},
		{"no url", "[[resolve.rule]]\nvendor = \"snom\"\n", "resolve.rule[1].url"},
		{"no match keys", "[[resolve.rule]]\nurl = \"http://x/\"\n", "no match keys"},
		{"bad template", "[resolve]\ndefault = \"http://x/{mac\"\n", "resolve.default"},
		{"ami without user", "[ami]\nsecret = \"s\"\n", "line 1: ami: username missing"},
		{"ami without secret", "[ami]\nusername = \"pnpd\"\n", "ami: secret missing"},
		{"ami both secrets", "[ami]\nusername = \"pnpd\"\nsecret = \"s\"\nsecret_file = \"/nonexistent\"\n", "line 4: ami.secret_file: set secret or secret_file, not both"},
		{"ami secret file missing", "[ami]\nusername = \"pnpd\"\nsecret_file = \"/nonexistent/ami.secret\"\n", "line 3: ami.secret_file: open /nonexistent/ami.secret"},
		{"ami bad address", "[ami]\naddress = \"localhost\"\nusername = \"pnpd\"\nsecret = \"s\"\n", "line 2: ami.address"},
		{"ami bad family", "[ami]\nusername = \"pnpd\"\nsecret = \"s\"\nfamily = \"/pnp\"\n", "line 4: ami.family"},
		{"ami bad refresh", "[ami]\nusername = \"pnpd\"\nsecret = \"s\"\nrefresh = \"soon\"\n", "line 4: ami.refresh"},
		{"ami short refresh", "[ami]\nusername = \"pnpd\"\nsecret = \"s\"\nrefresh = \"10ms\"\n", "ami.refresh: 10ms"},
		{"ami write_queue zero", "[ami]\nusername = \"pnpd\"\nsecret = \"s\"\nwrite_queue = 0\n", "line 4: ami.write_queue: 0: must be 1 to"},
		{"ami injected secret", "[ami]\nusername = \"pnpd\"\nsecret = \"s\\r\\nAction: Originate\"\n", "ami.secret"},
		{"ami unknown key", "[ami]\nusername = \"pnpd\"\nsecret = \"s\"\nport = 5038\n", "line 4: ami.port: unknown key"},
		{"ami bad lookup", "[ami]\nusername = \"pnpd\"\nsecret = \"s\"\nlookup = \"ODBC({mac)\"\n", "ami.lookup"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.text))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "config: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestAMI(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ami.secret"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "pnpd.toml")
	text := "[ami]\nusername = \"pnpd\"\nsecret_file = \"ami.secret\"\nrefresh = \"0s\"\nevents = false\nlookup = \"ODBC_PNP_URL({mac})\"\nwrite_queue = 500\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := AMI{Enabled: true, Address: DefaultAMIAddress, Username: "pnpd", Secret: "s3cret",
		SecretFile: filepath.Join(dir, "ami.secret"), Family: "pnp", Refresh: 0, Events: false, Lookup: "ODBC_PNP_URL({mac})", WriteQueue: 500}
	if c.AMI != want {
		t.Errorf("got %+v\nwant %+v", c.AMI, want)
	}

	c, err = Parse([]byte("[ami]\naddress = \"10.0.0.5:5039\"\nusername = \"pnpd\"\nsecret = \"x\"\nfamily = \"site1/pnp\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.AMI.Enabled || c.AMI.Address != "10.0.0.5:5039" || c.AMI.Family != "site1/pnp" || c.AMI.Refresh != DefaultRefresh || !c.AMI.Events {
		t.Errorf("got %+v", c.AMI)
	}
	if c, err := Parse([]byte("[sip]\n")); err != nil || c.AMI.Enabled {
		t.Errorf("no [ami] section: got %+v, %v; want AMI off", c.AMI, err)
	}
}

func TestMode(t *testing.T) {
	for text, want := range map[string]string{
		"":                           "auto",
		"[sip]\nmode = \"bind\"\n":   "bind",
		"[sip]\nmode = \"raw\"\n":    "raw",
		"[sip]\nmode = \"packet\"\n": "packet",
		"[sip]\nmode = \"auto\"\n":   "auto",
		// bind on 5060 is allowed: the group's port is bind mode's own.
		"[sip]\nmode = \"bind\"\nport = 5060\n": "bind",
	} {
		c, err := Parse([]byte(text))
		if err != nil {
			t.Errorf("Parse(%q): %v", text, err)
		} else if c.SIP.Mode != want {
			t.Errorf("Parse(%q): mode %q, want %q", text, c.SIP.Mode, want)
		}
	}
	if Default().SIP.Mode != "auto" {
		t.Errorf("Default() mode %q", Default().SIP.Mode)
	}
	for text, want := range map[string]int{"": DefaultRealtimePriority, "[sip]\nrealtime_priority = 0\n": 0, "[sip]\nrealtime_priority = 50\n": 50} {
		if c, err := Parse([]byte(text)); err != nil || c.SIP.RealtimePriority != want {
			t.Errorf("Parse(%q): realtime_priority %v, %v; want %d", text, c, err, want)
		}
	}
}

func TestUnknownKeyNamesLine(t *testing.T) {
	_, err := Parse([]byte("[[resolve.rule]]\nvendor = \"htek\"\nurl = \"http://x/\"\n\n[[resolve.rule]]\nmac = \"001fc11b4e1c\"\nurls = \"http://y/\"\n"))
	var ke *KeyError
	if !errors.As(err, &ke) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("err %v (%T)", err, err)
	}
	if ke.Key != "resolve.rule.urls" || ke.Line != 7 {
		t.Errorf("key %q line %d", ke.Key, ke.Line)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "pnpd.toml")
	if err := os.WriteFile(p, []byte("[sip]\nallow = [\"nope\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p+":2: sip.allow") {
		t.Errorf("err %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestDefaultIsObserveOnly(t *testing.T) {
	c := Default()
	if c.Resolve.Default != "" || len(c.Resolve.Rules) != 0 || c.SIP.Group != DefaultGroup {
		t.Errorf("%+v", c)
	}
}

func TestGlob(t *testing.T) {
	for _, tt := range []struct {
		p, n string
		ok   bool
	}{
		{"*", "", true}, {"gxp*", "gxp2170", true}, {"gxp*", "grp2612", false},
		{"t2?p", "t21p", true}, {"*21*", "sip-t21p", true}, {"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false}, {"", "", true}, {"", "x", false}, {"voip phone", "voip phone", true},
	} {
		if got := Glob(tt.p, tt.n); got != tt.ok {
			t.Errorf("Glob(%q, %q) = %v", tt.p, tt.n, got)
		}
	}
}

func TestWarnings(t *testing.T) {
	for _, tt := range []struct {
		name, text string
		want       []string
	}{
		{"clean", "[resolve]\ndefault = \"http://p/{vendor}/\"\n[[resolve.rule]]\nvendor = \"grandstream\"\nurl = \"http://gs/\"\n", nil},
		{"default without slash", "[resolve]\ndefault = \"http://p/x.cfg\"\n", []string{"line 2: resolve.default: does not end"}},
		{"escene rule", "[[resolve.rule]]\nvendor = \"escene\"\nurl = \"http://user:secret@e/cfg\"\n", []string{"matches none of the brands", `escene phones append file names to the URL: it should end in "/"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.text))
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Warnings) != len(tt.want) {
				t.Fatalf("warnings %q, want %d", c.Warnings, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(c.Warnings[i], w) {
					t.Errorf("warning %q lacks %q", c.Warnings[i], w)
				}
				if strings.Contains(c.Warnings[i], "secret") {
					t.Errorf("warning %q shows a credential", c.Warnings[i])
				}
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	tests := []struct {
		name, text string
		listen     string // want
		err        string // want in the error; "" for none
		warn       string // want in the only warning; "" for none
	}{
		{"absent", "[sip]\n", "", "", ""},
		{"section without listen", "[metrics]\n", "", "", ""},
		{"empty is off", "[metrics]\nlisten = \"\"\n", "", "", ""},
		{"loopback", "[metrics]\nlisten = \"127.0.0.1:9560\"\n", "127.0.0.1:9560", "", ""},
		{"other loopback", "[metrics]\nlisten = \"127.0.0.53:9560\"\n", "127.0.0.53:9560", "", ""},
		{"localhost", "[metrics]\nlisten = \"localhost:9560\"\n", "localhost:9560", "", ""},
		{"ipv6 loopback", "[metrics]\nlisten = \"[::1]:9560\"\n", "[::1]:9560", "", ""},
		{"lan address", "[metrics]\nlisten = \"192.168.1.10:9560\"\n", "192.168.1.10:9560", "",
			`line 2: metrics.listen: "192.168.1.10:9560" is not a loopback address`},
		{"every address", "[metrics]\nlisten = \":9560\"\n", ":9560", "", "not a loopback address"},
		{"wildcard", "[metrics]\nlisten = \"0.0.0.0:9560\"\n", "0.0.0.0:9560", "", "operational data"},
		{"no port", "[metrics]\nlisten = \"127.0.0.1\"\n", "", `line 2: metrics.listen: "127.0.0.1" is not host:port`, ""},
		{"port 0", "[metrics]\nlisten = \"127.0.0.1:0\"\n", "", "metrics.listen: \"127.0.0.1:0\": the port must be 1 to 65535", ""},
		{"port name", "[metrics]\nlisten = \"127.0.0.1:http\"\n", "", "the port must be", ""},
		{"host name", "[metrics]\nlisten = \"metrics.example.com:9560\"\n", "", "the host must be an IP address or localhost", ""},
		{"unknown key", "[metrics]\nlisten = \"127.0.0.1:9560\"\npath = \"/m\"\n", "", "line 3: metrics.path: unknown key", ""},
		{"wrong type", "[metrics]\nlisten = 9560\n", "", "line 2", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.text))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("err %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Metrics.Listen != tt.listen {
				t.Errorf("listen %q, want %q", c.Metrics.Listen, tt.listen)
			}
			switch {
			case tt.warn == "" && len(c.Warnings) != 0:
				t.Errorf("warnings %q, want none", c.Warnings)
			case tt.warn != "" && (len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], tt.warn)):
				t.Errorf("warnings %q, want one containing %q", c.Warnings, tt.warn)
			}
		})
	}
	if Default().Metrics.Listen != "" {
		t.Errorf("Default() has metrics on: %q", Default().Metrics.Listen)
	}
}

func TestLoadMetrics(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// The rest of the file is not read: a secret file nobody can read and
	// a bad value elsewhere do not keep status from finding the listener.
	p := write("a.toml", "[sip]\nmode = \"multicast\"\n\n[ami]\nusername = \"pnpd\"\nsecret_file = \"/nonexistent/ami.secret\"\n\n[metrics]\nlisten = \"127.0.0.1:9561\"\n")
	if _, err := Load(p); err == nil {
		t.Fatal("Load took the bad file: the test proves nothing")
	}
	m, err := LoadMetrics(p)
	if err != nil || m.Listen != "127.0.0.1:9561" {
		t.Errorf("LoadMetrics = %+v, %v; want 127.0.0.1:9561", m, err)
	}
	if m, err := LoadMetrics(write("b.toml", "[sip]\n")); err != nil || m.Listen != "" {
		t.Errorf("no [metrics]: %+v, %v; want off", m, err)
	}
	p = write("c.toml", "[metrics]\nlisten = \"9561\"\n")
	if _, err := LoadMetrics(p); err == nil || !strings.Contains(err.Error(), p+":2: metrics.listen") {
		t.Errorf("bad listen: %v, want it named with file and line", err)
	}
	if _, err := LoadMetrics(write("d.toml", "[metrics\n")); err == nil {
		t.Error("syntax error accepted")
	}
	if _, err := LoadMetrics(filepath.Join(dir, "missing.toml")); err == nil {
		t.Error("missing file accepted")
	}
}
