package resolve

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/pnpd/pnpd/pkg/config"
)

func mustConfig(t *testing.T, text string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return c
}

func TestStatic(t *testing.T) {
	cfg := mustConfig(t, `
[resolve]
default = "http://prov.example.com/{vendor}/"

[[resolve.rule]]
mac = "00:1F:C1:1B:4E:1C"
url = "http://admin:123456@192.168.0.25:88"

[[resolve.rule]]
vendor = "grandstream"
model = "gxp21*"
url = "http://gs.example.com/{MAC}/"

[[resolve.rule]]
mac_prefix = "001565"
subnet = "10.1.0.0/16"
url = "http://yl.example.com/{model}/{version}/{mac}.cfg"

[[resolve.rule]]
interface = "vlan20"
url = "http://vlan20.example.com/{ip}/$mac/{unknown}"
`)
	r := NewStatic(cfg.Resolve)
	tests := []struct {
		name   string
		req    Request
		url    string
		source string
	}{
		{"exact mac wins", Request{MAC: "001fc11b4e1c", Brand: "htek"}, "http://admin:123456@192.168.0.25:88", "rule 1 (line 5)"},
		{"vendor and model glob, case-insensitive", Request{MAC: "c074ad112233", Brand: "grandstream", Model: "GXP2170"}, "http://gs.example.com/C074AD112233/", "rule 2 (line 9)"},
		{"model glob mismatch falls to default", Request{MAC: "c074ad112233", Brand: "grandstream", Model: "GRP2612"}, "http://prov.example.com/grandstream/", "default"},
		{"prefix and subnet, escaped model", Request{MAC: "0015657322ff", Brand: "yealink", Model: "T21 P", Version: "34.72.0.1", IP: netip.MustParseAddr("10.1.2.3")}, "http://yl.example.com/T21%20P/34.72.0.1/0015657322ff.cfg", "rule 3 (line 14)"},
		{"prefix without subnet match", Request{MAC: "0015657322ff", Brand: "yealink", IP: netip.MustParseAddr("10.2.2.3")}, "http://prov.example.com/yealink/", "default"},
		{"interface, unknown placeholders kept", Request{Brand: "audiocodes", IP: netip.MustParseAddr("10.9.9.9"), Interface: "vlan20"}, "http://vlan20.example.com/10.9.9.9/$mac/{unknown}", "rule 4 (line 19)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := r.Resolve(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if d.URL != tt.url || d.Source != tt.source {
				t.Errorf("got %q from %q, want %q from %q\ntrace: %s", d.URL, d.Source, tt.url, tt.source, strings.Join(d.Trace, "; "))
			}
		})
	}
}

func TestStaticNoDefault(t *testing.T) {
	r := NewStatic(mustConfig(t, "[[resolve.rule]]\nvendor = \"snom\"\nurl = \"http://s/\"\n").Resolve)
	d, err := r.Resolve(context.Background(), Request{MAC: "000413b50a1f", Brand: "yealink"})
	if err != nil || d.URL != "" || d.Source != "" {
		t.Fatalf("got %+v, %v; want no URL", d, err)
	}
	if len(d.Trace) != 2 || !strings.Contains(d.Trace[0], "no (vendor)") {
		t.Errorf("trace %q", d.Trace)
	}
}

func TestExpandMissingValuesKept(t *testing.T) {
	got := Expand("http://x/{mac}/{ip}/{MAC", Request{})
	if got != "http://x/{mac}/{ip}/{MAC" {
		t.Errorf("got %q", got)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"http://admin:123456@192.168.0.25:88":   "http://***@192.168.0.25:88",
		"https://u@h/p@q":                       "https://***@h/p@q",
		"http://prov.example.com/a":             "http://prov.example.com/a",
		"http://prov.example.com/a@b":           "http://***@b", // ambiguous: hide
		"tftp://10.0.0.1/":                      "tftp://10.0.0.1/",
		"no scheme user:pw@host":                "no scheme user:pw@host",
		"http://a:b@c@host/x?u=http://d:e@f/":   "http://***@host/x?u=http://d:e@f/",
		"http://admin:pa#ss@h/x":                "http://***@h/x",
		"http://admin:pa/ss@h/x":                "http://***@h/x",
		"http://admin:pa?ss@h:88":               "http://***@h:88",
		"http://admin:p@ss@h/{mac}":             "http://***@h/{mac}",
		"default: http://admin:pa#ss@h/{mac}/ ": "default: http://***@h/{mac}/ ",
		"https://user@h/x?a=b@c":                "https://***@h/x?a=b@c",
		"http://u:%zz@h/bad-escape":             "http://***@h/bad-escape",
		"http://h":                              "http://h",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
