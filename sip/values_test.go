package sip_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/pnpd/pnpd/sip"
)

// str turns a nil slice into "<nil>" so that nil and empty can be told apart.
func str(b []byte) string {
	if b == nil {
		return "<nil>"
	}
	return string(b)
}

func TestParseURI(t *testing.T) {
	tests := []struct {
		in                               string
		scheme, user, pass, host, params string
		port                             int
		headers                          string
		bad                              bool
	}{
		{in: "sip:MAC0015657322ff@224.0.1.75", scheme: "sip", user: "MAC0015657322ff", pass: "<nil>", host: "224.0.1.75", params: "<nil>", headers: "<nil>"},
		{in: "sip:224.0.1.75:5060", scheme: "sip", user: "<nil>", pass: "<nil>", host: "224.0.1.75", port: 5060, params: "<nil>", headers: "<nil>"},
		{in: "SIPS:MAC%3a00135E874B49@intern.snom.de", scheme: "SIPS", user: "MAC%3a00135E874B49", pass: "<nil>", host: "intern.snom.de", params: "<nil>", headers: "<nil>"},
		{in: "sip:MAC:001122334455@local", scheme: "sip", user: "MAC", pass: "001122334455", host: "local", params: "<nil>", headers: "<nil>"},
		{in: "sip:MAC=00304fa99948@224.0.1.75", scheme: "sip", user: "MAC=00304fa99948", pass: "<nil>", host: "224.0.1.75", params: "<nil>", headers: "<nil>"},
		{in: "sip:u@[fe80::1]:5080;transport=udp;lr?Subject=x&h=y", scheme: "sip", user: "u", pass: "<nil>", host: "[fe80::1]", port: 5080, params: ";transport=udp;lr", headers: "Subject=x&h=y"},
		{in: "sip:host_name.example", scheme: "sip", user: "<nil>", pass: "<nil>", host: "host_name.example", params: "<nil>", headers: "<nil>"},
		{in: "sip:a:@h", scheme: "sip", user: "a", pass: "", host: "h", params: "<nil>", headers: "<nil>"},
		{in: "", bad: true},
		{in: "sip:", bad: true},
		{in: "tel:+12345", bad: true},
		{in: "http://x/", bad: true},
		{in: "sip:@host", bad: true},
		{in: "sip:u@", bad: true},
		{in: "sip:u@h:", bad: true},
		{in: "sip:u@h:65536", bad: true},
		{in: "sip:u@h:123456", bad: true},
		{in: "sip:u%3@h", bad: true},
		{in: "sip:u%zz@h", bad: true},
		{in: "sip:u@h x", bad: true},
		{in: "sip:u@h;a b", bad: true},
		{in: "sip:u@h;a=\"q\"", bad: true},
		{in: "sip:u@[fe80::1", bad: true},
		{in: "sip:u@[]", bad: true},
		{in: "sip:u<@h", bad: true},
		{in: "sip:u@h?a b", bad: true},
		{in: "1sip:u@h", bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			u, err := sip.ParseURI([]byte(tc.in))
			if tc.bad {
				if !errors.Is(err, sip.ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed (%+v)", err, u)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := []any{str(u.Scheme), str(u.User), str(u.Password), str(u.Host), u.Port, str(u.Params), str(u.Headers)}
			want := []any{tc.scheme, tc.user, tc.pass, tc.host, tc.port, tc.params, tc.headers}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %q\nwant %q", got, want)
			}
		})
	}
}

func TestParseAddr(t *testing.T) {
	tests := []struct {
		in                   string
		display, uri, params string
		tag                  string
		bad                  bool
	}{
		{in: "<sip:MAC001fc11b4e1c@224.0.1.75>;tag=1976446358", display: "<nil>", uri: "sip:MAC001fc11b4e1c@224.0.1.75", params: ";tag=1976446358", tag: "1976446358"},
		{in: "  <sip:a@b>  ", display: "<nil>", uri: "sip:a@b", params: "<nil>"},
		{in: `"Bob \"the\" Phone" <sip:bob@h>;tag=x;foo`, display: `Bob \"the\" Phone`, uri: "sip:bob@h", params: ";tag=x;foo", tag: "x"},
		{in: `""<sip:a@b>`, display: "", uri: "sip:a@b", params: "<nil>"},
		{in: "Bob  Smith <sip:bob@h> ; tag = t1 ", display: "Bob  Smith", uri: "sip:bob@h", params: " ; tag = t1", tag: "t1"},
		{in: "sip:a@b;tag=7", display: "<nil>", uri: "sip:a@b", params: ";tag=7", tag: "7"},
		{in: "sip:a@b", display: "<nil>", uri: "sip:a@b", params: "<nil>"},
		{in: "<sip:a@b;lr;transport=udp>;expires=0", display: "<nil>", uri: "sip:a@b;lr;transport=udp", params: ";expires=0"},
		{in: "<sip:a@b>;tag=\"quoted tag\"", display: "<nil>", uri: "sip:a@b", params: ";tag=\"quoted tag\"", tag: "quoted tag"},
		{in: "", bad: true},
		{in: "<>", bad: true},
		{in: "<sip:a@b", bad: true},
		{in: "<sip:a b>", bad: true},
		{in: "<a@b>", bad: true},
		{in: `"unterminated <sip:a@b>`, bad: true},
		{in: `"Bob" sip:a@b`, bad: true},
		{in: `Bob@x <sip:a@b>`, bad: true},
		{in: "<sip:a@b> junk", bad: true},
		{in: "<sip:a@b>;tag=\"x", bad: true},
		{in: "<sip:a@b>;=x", bad: true},
		{in: "sip:a@b, sip:c@d", bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			a, err := sip.ParseAddr([]byte(tc.in))
			if tc.bad {
				if !errors.Is(err, sip.ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed (%+v)", err, a)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := []string{str(a.Display), str(a.URI), str(a.Params), string(a.Tag())}
			want := []string{tc.display, tc.uri, tc.params, tc.tag}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %q\nwant %q", got, want)
			}
		})
	}
}

func TestParseVia(t *testing.T) {
	tests := []struct {
		in                      string
		transport, host, params string
		port                    int
		branch                  string
		bad                     bool
	}{
		{in: "SIP/2.0/UDP 192.168.1.89:60000;branch=z9hG4bK1430285318;rport", transport: "UDP", host: "192.168.1.89", port: 60000, params: ";branch=z9hG4bK1430285318;rport", branch: "z9hG4bK1430285318"},
		{in: "SIP/2.0/UDP 10.9.8.1;branch=z9hG4bKouter", transport: "UDP", host: "10.9.8.1", params: ";branch=z9hG4bKouter", branch: "z9hG4bKouter"},
		{in: " SIP / 2.0 / TCP  host.example : 5061 ; branch = b1 ; received=1.2.3.4 ", transport: "TCP", host: "host.example", port: 5061, params: " ; branch = b1 ; received=1.2.3.4", branch: "b1"},
		{in: "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKv6;received=2001:db8::1", transport: "UDP", host: "[2001:db8::1]", port: 5060, params: ";branch=z9hG4bKv6;received=2001:db8::1", branch: "z9hG4bKv6"},
		{in: "SIP/2.0/UDP h", transport: "UDP", host: "h", params: "<nil>"},
		{in: "", bad: true},
		{in: "SIP/2.0", bad: true},
		{in: "SIP/2.0/UDP", bad: true},
		{in: "SIP/2.0/UDP ", bad: true},
		{in: "SIP/2.0/UDP h:", bad: true},
		{in: "SIP/2.0/UDP h:70000", bad: true},
		{in: "SIP/2.0/UDP h;branch=\"x", bad: true},
		{in: "SIP/2.0/UDP h branch", bad: true},
		{in: "SIP/2.0/UDP h;branch=a, SIP/2.0/UDP g", bad: true},
		{in: "SIP/2.0/UDP [::1", bad: true},
		{in: "SIP/2.0UDP h", bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			v, err := sip.ParseVia([]byte(tc.in))
			if tc.bad {
				if !errors.Is(err, sip.ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed (%+v)", err, v)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := []any{string(v.Transport), string(v.Host), v.Port, str(v.Params), string(v.Branch())}
			want := []any{tc.transport, tc.host, tc.port, tc.params, tc.branch}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %q\nwant %q", got, want)
			}
		})
	}
}

func TestParams(t *testing.T) {
	p := sip.Params(`;Branch=z9hG4bK1;rport;received=1.2.3.4;vendor="Yea;link";empty=;q="a\"b"`)
	tests := []struct {
		name, value string
		ok          bool
	}{
		{"branch", "z9hG4bK1", true},
		{"BRANCH", "z9hG4bK1", true},
		{"rport", "<nil>", true},
		{"received", "1.2.3.4", true},
		{"vendor", "Yea;link", true},
		{"empty", "", true},
		{"q", `a\"b`, true},
		{"missing", "<nil>", false},
		{"", "<nil>", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, ok := p.Get(tc.name)
			if str(v) != tc.value || ok != tc.ok {
				t.Errorf("Get(%q) = %q, %v; want %q, %v", tc.name, str(v), ok, tc.value, tc.ok)
			}
		})
	}
	var names []string
	p.Each(func(n, v []byte) bool {
		names = append(names, string(n))
		return len(names) < 4
	})
	if !reflect.DeepEqual(names, []string{"Branch", "rport", "received", "vendor"}) {
		t.Errorf("Each stopped wrong: %q", names)
	}
	// Broken lists give the well-formed prefix and never panic.
	for _, bad := range []string{";a=1;b=\"x", ";a=1 junk;b=2", "a=1", ";", ";=", `;a="\`} {
		t.Run("broken "+bad, func(t *testing.T) {
			sip.Params(bad).Each(func(n, v []byte) bool { return true })
			if _, ok := sip.Params(bad).Get("b"); ok {
				t.Errorf("Get(b) found a parameter past the error in %q", bad)
			}
		})
	}
}

func TestSplitComma(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"a, b ,c", []string{"a", "b", "c"}},
		{"replaces, path, timer", []string{"replaces", "path", "timer"}},
		{`"Doe, John" <sip:j@h>, <sip:x@y;a=1,2>;q=1`, []string{`"Doe, John" <sip:j@h>`, "<sip:x@y;a=1,2>;q=1"}},
		{`"a\",b", c`, []string{`"a\",b"`, "c"}},
		{" , ,a,, ", []string{"a"}},
		{"", nil},
		{`"unterminated, x`, []string{`"unterminated, x`}},
		{`"ends in backslash\`, []string{`"ends in backslash\`}},
		{"<open, x", []string{"<open, x"}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			var got []string
			sip.SplitComma([]byte(tc.in), func(e []byte) bool {
				got = append(got, string(e))
				return true
			})
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	n := 0
	sip.SplitComma([]byte("a,b,c"), func([]byte) bool { n++; return false })
	if n != 1 {
		t.Errorf("SplitComma went on after false: %d calls", n)
	}
}

func TestParseCSeq(t *testing.T) {
	tests := []struct {
		in     string
		seq    uint32
		method string
		bad    bool
	}{
		{in: "1 SUBSCRIBE", seq: 1, method: "SUBSCRIBE"},
		{in: "   7    SUBSCRIBE ", seq: 7, method: "SUBSCRIBE"},
		{in: "4294967295 NOTIFY", seq: 4294967295, method: "NOTIFY"},
		{in: "20000\tSUBSCRIBE", seq: 20000, method: "SUBSCRIBE"},
		{in: "4294967296 NOTIFY", bad: true},
		{in: "1SUBSCRIBE", bad: true},
		{in: "1", bad: true},
		{in: "1 ", bad: true},
		{in: "-1 NOTIFY", bad: true},
		{in: "1 NOTIFY x", bad: true},
		{in: "", bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			seq, m, err := sip.ParseCSeq([]byte(tc.in))
			if tc.bad {
				if !errors.Is(err, sip.ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil || seq != tc.seq || string(m) != tc.method {
				t.Errorf("got %d %q %v", seq, m, err)
			}
		})
	}
}

func TestParseEvent(t *testing.T) {
	tests := []struct {
		in, pkg, vendor string
		bad             bool
	}{
		{in: `ua-profile;profile-type="device";vendor="Yealink";model="T21";version="34.72.0.1"`, pkg: "ua-profile", vendor: "Yealink"},
		{in: "ua-profile", pkg: "ua-profile", vendor: "<nil>"},
		{in: " ua-profile ; vendor = snom ", pkg: "ua-profile", vendor: "snom"},
		{in: "presence.winfo;id=1", pkg: "presence.winfo", vendor: "<nil>"},
		{in: "", bad: true},
		{in: ";vendor=x", bad: true},
		{in: `ua-profile;vendor="x`, bad: true},
		{in: "ua-profile vendor", bad: true},
		{in: `ua-profile;model=VOIP PHONE`, bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			pkg, params, err := sip.ParseEvent([]byte(tc.in))
			if tc.bad {
				if !errors.Is(err, sip.ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
				return
			}
			v, _ := params.Get("vendor")
			if err != nil || string(pkg) != tc.pkg || str(v) != tc.vendor {
				t.Errorf("got %q vendor %q, %v", pkg, str(v), err)
			}
		})
	}
}
