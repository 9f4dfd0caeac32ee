package sip_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/pnpd/pnpd/sip"
)

func ev(profileType, vendor, model, version string) map[string]string {
	return map[string]string{"profile-type": profileType, "vendor": vendor, "model": model, "version": version}
}

// phoneWant holds the expected fields of each file in testdata/phones.
var phoneWant = map[string]fields{
	"audiocodes.sip": {
		Method: "SUBSCRIBE", RURI: "sip:224.0.1.75:5060", RHost: "224.0.1.75", RPort: 5060,
		ViaHost: "10.20.30.40", ViaPort: 5060, Branch: "z9hG4bKac1283719471", RPortFlag: true,
		FromURI: "sip:00000001@10.20.30.40", FromTag: "1c1874926021", ToURI: "sip:224.0.1.75:5060",
		CallID: "1874937211@10.20.30.40", CSeq: 1, CSeqMethod: "SUBSCRIBE",
		Contact:  "sip:00000001@10.20.30.40:5060",
		EventPkg: "ua-profile", EventParams: ev("application", "AudioCodes", "445HD", "3.4.4.1000.62"),
		Expires: "0", ContentLen: "0", UserAgent: "AudioCodes-Sip-Phone-445HD/3.4.4.1000.62",
	},
	"compact-folded.sip": {
		Method: "SUBSCRIBE", RURI: "sip:MAC001565aabbcc@224.0.1.75", RUser: "MAC001565aabbcc", RHost: "224.0.1.75",
		ViaHost: "10.9.8.7", ViaPort: 5059, Branch: "z9hG4bKcompact1",
		FromURI: "sip:MAC001565aabbcc@224.0.1.75", FromTag: "abc", ToURI: "sip:MAC001565aabbcc@224.0.1.75",
		CallID: "compact-1@10.9.8.7", CSeq: 7, CSeqMethod: "SUBSCRIBE",
		Contact:  "sip:MAC001565aabbcc@10.9.8.7:5059",
		EventPkg: "ua-profile", EventParams: ev("device", "Yealink", "T46S", "66.86.0.15"),
		// The CR LF of the fold became two spaces, before the continuation's own SP.
		Expires: "0", ContentLen: "0", UserAgent: "Yealink SIP-T46S   66.86.0.15",
	},
	"fanvil.sip": {
		Method: "SUBSCRIBE", RURI: "sip:MAC=00304fa99948@224.0.1.75", RUser: "MAC=00304fa99948", RHost: "224.0.1.75",
		ViaHost: "192.168.1.179", ViaPort: 5060, Branch: "z9hG4bK2846327041", RPortFlag: true,
		FromURI: "sip:MAC=00304fa99948@224.0.1.75", ToURI: "sip:MAC=00304fa99948@224.0.1.75",
		CallID: "0559302881@192.168.1.179", CSeq: 1, CSeqMethod: "SUBSCRIBE",
		Contact:  "sip:MAC=00304fa99948@192.168.1.179:5060",
		EventPkg: "ua-profile", EventParams: ev("device", "PLANET", "VOIP PHONE", "2.3.1.2570"),
		Expires: "0", ContentLen: "0", UserAgent: "PLANET VIP-1120PT 2.3.1.2570",
	},
	"gigaset.sip": {
		Method: "SUBSCRIBE", RURI: "sip:MAC%3A7C2F8030D21E@local", RUser: "MAC%3A7C2F8030D21E", RHost: "local",
		ViaHost: "192.168.178.34", ViaPort: 5060, Branch: "z9hG4bK5c2e1b9a4f", RPortFlag: true,
		FromURI: "sip:MAC%3A7C2F8030D21E@local", FromTag: "90f1e2d3", ToURI: "sip:MAC%3A7C2F8030D21E@local",
		CallID: "7c2f8030d21e-1700000000@192.168.178.34", CSeq: 1, CSeqMethod: "SUBSCRIBE",
		Contact:  "sip:MAC%3A7C2F8030D21E@192.168.178.34:5060",
		EventPkg: "ua-profile", EventParams: ev("device", "OEM", "OEM", "83.V2.39.0"),
		Expires: "0", ContentLen: "0", UserAgent: "Gigaset N670 IP PRO/83.V2.39.0+build.a546b76;7C2F8030D21E",
	},
	"grandstream.sip": {
		Method: "SUBSCRIBE", RURI: "sip:MAC%3AC074AD112233@224.0.1.75", RUser: "MAC%3AC074AD112233", RHost: "224.0.1.75",
		ViaHost: "192.168.1.2", ViaPort: 5080, Branch: "z9hG4bK1719471633", RPortFlag: true,
		FromURI: "sip:MAC%3AC074AD112233@224.0.1.75", FromTag: "1542937271", ToURI: "sip:MAC%3AC074AD112233@224.0.1.75",
		CallID: "1262439813-5080-1@BJC.BGI.B.C", CSeq: 20000, CSeqMethod: "SUBSCRIBE",
		Contact:  "sip:192.168.1.2:5080",
		EventPkg: "ua-profile", EventParams: ev("device", "Grandstream", "GXP2170", "1.0.11.3"),
		Expires: "0", ContentLen: "0", UserAgent: "Grandstream GXP2170 1.0.11.3",
	},
	"htek.sip": {
		Method: "SUBSCRIBE", RURI: "sip:MAC001fc11b4e1c@224.0.1.75", RUser: "MAC001fc11b4e1c", RHost: "224.0.1.75",
		ViaHost: "192.168.1.89", ViaPort: 60000, Branch: "z9hG4bK1430285318", RPortFlag: true,
		FromURI: "sip:MAC001fc11b4e1c@224.0.1.75", FromTag: "1976446358", ToURI: "sip:MAC001fc11b4e1c@224.0.1.75",
		CallID: "1355946526@192.168.1.89", CSeq: 1, CSeqMethod: "SUBSCRIBE",
		Contact:  "sip:MAC001fc11b4e1c@192.168.1.89:60000",
		EventPkg: "ua-profile", EventParams: ev("device", "Htek", "UC912G", "2.0.4.4.46"),
		Expires: "0", ContentLen: "0", UserAgent: "Htek UC912G 001fc1200b41",
	},
	"panasonic.sip": {
		Method: "SUBSCRIBE", RURI: "sip:MAC0080f0a1b2c3@224.0.1.75", RUser: "MAC0080f0a1b2c3", RHost: "224.0.1.75",
		ViaHost: "192.168.0.51", ViaPort: 5060, Branch: "z9hG4bK0f3c82d917", RPortFlag: true,
		FromURI: "sip:MAC0080f0a1b2c3@224.0.1.75", FromTag: "3a1c9e7f", ToURI: "sip:MAC0080f0a1b2c3@224.0.1.75",
		CallID: "11d0b9e2c4-0080f0a1b2c3@192.168.0.51", CSeq: 1, CSeqMethod: "SUBSCRIBE",
		Contact:  "sip:MAC0080f0a1b2c3@192.168.0.51:5060",
		EventPkg: "ua-profile",
		// Panasonic spells it "vender".
		EventParams: map[string]string{"profile-type": "device", "vender": "Panasonic", "model": "KX-HDV130", "version": "03.000"},
		Expires:     "0", ContentLen: "0", UserAgent: "Panasonic_KX-HDV130/03.000 (0080f0a1b2c3)",
	},
	"snom-m700.sip": {
		Method: "SUBSCRIBE", RURI: "sip:MAC%3a000413B50A1F@intern.snom.de", RUser: "MAC%3a000413B50A1F", RHost: "intern.snom.de",
		ViaHost: "10.0.0.90", ViaPort: 5060, Branch: "z9hG4bK-1d7f3a2b9c", RPortFlag: true,
		FromURI: "sip:512@10.0.0.90", FromTag: "8f2a61c0", ToURI: "sip:MAC%3a000413B50A1F@intern.snom.de",
		CallID: "5b2e9a41d7c3@10.0.0.90", CSeq: 1, CSeqMethod: "SUBSCRIBE",
		Contact:  "sip:10.0.0.90:5060",
		EventPkg: "ua-profile", EventParams: ev("device", "OEM", "OEM", "4.50"),
		Expires: "0", ContentLen: "0", UserAgent: "Snom-M700/4.50",
	},
	"snom.sip": {
		Method: "SUBSCRIBE", RURI: "sip:MAC%3a00135E874B49@intern.snom.de", RUser: "MAC%3a00135E874B49", RHost: "intern.snom.de",
		ViaHost: "192.168.10.67", ViaPort: 5060, Branch: "z9hG4bK-h3vlx9kbuu0r", RPortFlag: true,
		FromURI: "sip:MAC%3a00135E874B49@intern.snom.de", FromTag: "2pzu5y7dvd", ToURI: "sip:MAC%3a00135E874B49@intern.snom.de",
		CallID: "3c26700b8a5a-ozmrbmwoyzn9", CSeq: 1, CSeqMethod: "SUBSCRIBE",
		Contact:  "sip:192.168.10.67:5060",
		EventPkg: "ua-profile", EventParams: ev("device", "OEM", "OEM", "7.3.30"),
		Expires: "0", ContentLen: "0", UserAgent: "snom320/7.3.30",
	},
	"yealink.sip": {
		Method: "SUBSCRIBE", RURI: "sip:MAC0015657322ff@224.0.1.75", RUser: "MAC0015657322ff", RHost: "224.0.1.75",
		ViaHost: "172.16.32.148", ViaPort: 5059, Branch: "z9hG4bK1263794541",
		FromURI: "sip:MAC0015657322ff@224.0.1.75", FromTag: "1581287404", ToURI: "sip:MAC0015657322ff@224.0.1.75",
		CallID: "1092315383@172.16.32.148", CSeq: 1, CSeqMethod: "SUBSCRIBE",
		Contact:  "sip:MAC0015657322ff@172.16.32.148:5059",
		EventPkg: "ua-profile", EventParams: ev("device", "Yealink", "T21", "34.72.0.1"),
		Expires: "0", ContentLen: "0", UserAgent: "Yealink SIP-T21P 34.72.0.1",
	},
}

func TestParsePhones(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range readDir(t, "phones") {
		seen[p.name] = true
		t.Run(p.name, func(t *testing.T) {
			if !bytes.Contains(p.data, []byte("\r\n")) {
				t.Fatal("phone captures use CRLF")
			}
			m, err := sip.Parse(bytes.Clone(p.data))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got, err := extract(m)
			if err != nil {
				t.Fatalf("extract: %v", err)
			}
			want, ok := phoneWant[p.name]
			if !ok {
				// A file added without a table entry: check what every SUBSCRIBE has.
				if got.Method != "SUBSCRIBE" || got.Branch == "" || got.CallID == "" || got.EventPkg != "ua-profile" {
					t.Errorf("no table entry and incomplete SUBSCRIBE: %+v", got)
				}
				return
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("fields\n got %+v\nwant %+v", got, want)
			}
			if m.Body == nil || len(m.Body) != 0 {
				t.Errorf("Body = %q, want empty", m.Body)
			}
		})
	}
	for name := range phoneWant {
		if !seen[name] {
			t.Errorf("table entry %s has no file", name)
		}
	}
}

func TestParseCompactFolded(t *testing.T) {
	b, err := readFile("phones", "compact-folded.sip")
	if err != nil {
		t.Fatal(err)
	}
	m, err := sip.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Count(sip.HdrSupported); got != 2 {
		t.Errorf("Count(Supported) = %d, want 2", got)
	}
	var vias []string
	sip.SplitComma(m.Get(sip.HdrVia), func(e []byte) bool {
		vias = append(vias, string(e))
		return true
	})
	want := []string{"SIP/2.0/UDP 10.9.8.7:5059;branch=z9hG4bKcompact1", "SIP/2.0/UDP 10.9.8.1;branch=z9hG4bKouter"}
	if !reflect.DeepEqual(vias, want) {
		t.Errorf("Via elements %q, want %q", vias, want)
	}
	outer, err := sip.ParseVia([]byte(vias[1]))
	if err != nil || outer.Port != 0 || string(outer.Branch()) != "z9hG4bKouter" {
		t.Errorf("outer Via = %+v, %v", outer, err)
	}
	// Folding is replaced in place: no CR or LF is left inside any value.
	for _, h := range m.Headers {
		if bytes.ContainsAny(h.Value, "\r\n") {
			t.Errorf("%s value %q holds a line break", h.Name, h.Value)
		}
	}
	if got := string(m.Get(sip.HdrEvent)); got != "ua-profile;profile-type=\"device\";  \tvendor=\"Yealink\";model=\"T46S\";version=\"66.86.0.15\"" {
		t.Errorf("Event = %q", got)
	}
	// Names are kept as on the wire.
	names := []string{}
	for _, h := range m.Headers {
		names = append(names, string(h.Name))
	}
	if strings.Join(names, ",") != "v,f,t,i,CSeq,m,USER-AGENT,o,k,k,Expires,l" {
		t.Errorf("names %v", names)
	}
}

func readFile(dir, name string) ([]byte, error) {
	return os.ReadFile(filepath.Join("testdata", dir, name))
}

func TestParseValidEdgeCases(t *testing.T) {
	yealink := phoneWant["yealink.sip"]
	tests := []struct {
		file  string
		check func(t *testing.T, m *sip.Message, f fields)
	}{
		{"bare-lf.sip", func(t *testing.T, m *sip.Message, f fields) {
			if !reflect.DeepEqual(f, yealink) {
				t.Errorf("bare LF fields differ from the CRLF original\n got %+v\nwant %+v", f, yealink)
			}
		}},
		{"leading-crlf.sip", func(t *testing.T, m *sip.Message, f fields) {
			if !reflect.DeepEqual(f, yealink) {
				t.Errorf("fields differ from yealink.sip: %+v", f)
			}
		}},
		{"space-before-colon.sip", func(t *testing.T, m *sip.Message, f fields) {
			if f.CallID != yealink.CallID {
				t.Errorf("Call-ID = %q", f.CallID)
			}
		}},
		{"notify-body.sip", func(t *testing.T, m *sip.Message, f fields) {
			if f.Body != "http://prov.example.com/yealink/" {
				t.Errorf("Body = %q (trailing bytes must be ignored)", f.Body)
			}
			if f.EventParams["effective-by"] != "0" || f.ToTag != "1581287404" || f.FromTag != "ours1" {
				t.Errorf("fields %+v", f)
			}
			if got := string(m.GetName("subscription-state")); got != "terminated;reason=timeout" {
				t.Errorf("Subscription-State = %q", got)
			}
			if got := string(m.Get(sip.HdrContentType)); got != "application/url" {
				t.Errorf("Content-Type = %q", got)
			}
		}},
		{"no-content-length.sip", func(t *testing.T, m *sip.Message, f fields) {
			if f.Body != "http://prov.example.com/" || m.Get(sip.HdrContentLength) != nil {
				t.Errorf("Body = %q, Content-Length %q", f.Body, m.Get(sip.HdrContentLength))
			}
		}},
		{"ipv6.sip", func(t *testing.T, m *sip.Message, f fields) {
			if f.ViaHost != "[fe80::21f:c1ff:fe1b:4e1c]" || f.ViaPort != 5060 || f.RHost != "[ff02::1:ff00:1]" ||
				f.Contact != "sip:MAC001fc11b4e1c@[fe80::21f:c1ff:fe1b:4e1c]:5060" {
				t.Errorf("fields %+v", f)
			}
			from, _ := sip.ParseAddr(m.Get(sip.HdrFrom))
			if string(from.Display) != "Htek Phone" {
				t.Errorf("Display = %q", from.Display)
			}
		}},
	}
	files := map[string]bool{}
	for _, p := range readDir(t, "valid") {
		files[p.name] = true
	}
	for _, tc := range tests {
		delete(files, tc.file)
		t.Run(tc.file, func(t *testing.T) {
			b, err := readFile("valid", tc.file)
			if err != nil {
				t.Fatal(err)
			}
			m, err := sip.Parse(b)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			f, err := extract(m)
			if err != nil {
				t.Fatalf("extract: %v", err)
			}
			tc.check(t, m, f)
		})
	}
	for name := range files {
		t.Errorf("testdata/valid/%s has no table case", name)
	}
}

func TestParseResponses(t *testing.T) {
	tests := []struct {
		file     string
		code     int
		reason   string
		toTag    string
		received string
		rport    string
		other    map[string]string // GetName lookups
	}{
		{"200-ok.sip", 200, "OK", "pnpd4f2a", "192.168.1.89", "60000", map[string]string{"Expires": "0", "m": "<sip:192.168.0.240:5060>"}},
		{"asterisk-401.sip", 401, "Unauthorized", "z9hG4bK1430285318", "192.168.1.89", "60000", map[string]string{
			"www-authenticate": `Digest realm="asterisk",nonce="1700000000/6b5d1f0c2a9e8d7c",opaque="5c3a0e6f1b2d4a98",algorithm=md5,qop="auth"`,
			"SERVER":           "Asterisk PBX 20.5.0",
			"l":                "0",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			b, err := readFile("responses", tc.file)
			if err != nil {
				t.Fatal(err)
			}
			m, err := sip.Parse(b)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if m.IsRequest() || m.Method != nil || m.RequestURI != nil {
				t.Errorf("response parsed as request: %q %q", m.Method, m.RequestURI)
			}
			f, err := extract(m)
			if err != nil {
				t.Fatalf("extract: %v", err)
			}
			if f.Status != tc.code || f.Reason != tc.reason || f.ToTag != tc.toTag || f.CSeqMethod != "SUBSCRIBE" {
				t.Errorf("fields %+v", f)
			}
			via, _ := m.TopVia()
			if r, _ := via.Params.Get("received"); string(r) != tc.received {
				t.Errorf("received = %q", r)
			}
			if r, _ := via.Params.Get("rport"); string(r) != tc.rport {
				t.Errorf("rport = %q", r)
			}
			for name, want := range tc.other {
				if got := string(m.GetName(name)); got != want {
					t.Errorf("GetName(%q) = %q, want %q", name, got, want)
				}
			}
		})
	}
}

func TestParseStartLines(t *testing.T) {
	const hdrs = "Call-ID: x\r\n\r\n"
	tests := []struct {
		name, in         string
		method, uri      string
		code             int
		reason           string
		wantErrAtOffsets bool
	}{
		{name: "request", in: "SUBSCRIBE sip:a@b SIP/2.0\r\n", method: "SUBSCRIBE", uri: "sip:a@b"},
		{name: "odd spacing", in: "SUBSCRIBE \t sip:a@b   SIP/2.0  \r\n", method: "SUBSCRIBE", uri: "sip:a@b"},
		{name: "lower-case version", in: "NOTIFY sip:a@b sip/2.0\r\n", method: "NOTIFY", uri: "sip:a@b"},
		{name: "extension method", in: "X-FOO.bar! tel:+123 SIP/2.0\r\n", method: "X-FOO.bar!", uri: "tel:+123"},
		{name: "200", in: "SIP/2.0 200 OK\r\n", code: 200, reason: "OK"},
		{name: "reason with spaces", in: "SIP/2.0   486  Busy Here \r\n", code: 486, reason: "Busy Here"},
		{name: "empty reason", in: "SIP/2.0 200 \r\n", code: 200, reason: ""},
		{name: "no reason", in: "SIP/2.0 699\r\n", code: 699, reason: ""},
		{name: "utf-8 reason", in: "SIP/2.0 404 Nicht gefunden \xc3\xa4\r\n", code: 404, reason: "Nicht gefunden \xc3\xa4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := sip.Parse([]byte(tc.in + hdrs))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if string(m.Method) != tc.method || string(m.RequestURI) != tc.uri || m.StatusCode != tc.code || string(m.Reason) != tc.reason {
				t.Errorf("got %q %q %d %q", m.Method, m.RequestURI, m.StatusCode, m.Reason)
			}
			if m.IsRequest() != (tc.method != "") {
				t.Errorf("IsRequest = %v", m.IsRequest())
			}
		})
	}
}

// errRE is the whole shape of an error text: a fixed phrase and an offset, so no
// packet byte can be in it.
var errRE = regexp.MustCompile(`^sip: [a-zA-Z -]+( at byte [0-9]+)?$`)

func TestParseInvalid(t *testing.T) {
	wantErr := map[string]error{
		"oversize.sip":         sip.ErrTooLarge,
		"too-many-headers.sip": sip.ErrTooManyHeaders,
	}
	for _, p := range readDir(t, "invalid") {
		t.Run(p.name, func(t *testing.T) {
			want := wantErr[p.name]
			if want == nil {
				want = sip.ErrMalformed
			}
			var m sip.Message
			err := m.Parse(bytes.Clone(p.data))
			if strings.HasPrefix(p.name, "value-") {
				// The framing is fine; the field parsers must refuse the value.
				if err != nil {
					t.Fatalf("Parse: %v (want it to accept the framing)", err)
				}
				_, err = extract(&m)
			}
			if !errors.Is(err, want) {
				t.Fatalf("err = %v, want %v", err, want)
			}
			if !errRE.MatchString(err.Error()) {
				t.Errorf("error text %q does not have the fixed shape", err.Error())
			}
			if !strings.HasPrefix(p.name, "value-") && (m.Headers == nil || len(m.Headers) != 0 || m.Method != nil || m.Body != nil) {
				t.Errorf("failed Parse left state: %d headers, method %q", len(m.Headers), m.Method)
			}
		})
	}
}

func TestParseErrorType(t *testing.T) {
	_, err := sip.Parse([]byte("SUBSCRIBE sip:a@b SIP/3.0\r\n\r\n"))
	var pe *sip.ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("err %T %v is not a *ParseError", err, err)
	}
	if pe.Offset != 18 || pe.What != "SIP version" {
		t.Errorf("ParseError = %+v", *pe)
	}
	if got := pe.Error(); got != "sip: malformed SIP version at byte 18" {
		t.Errorf("Error() = %q", got)
	}
	if !errors.Is(err, sip.ErrMalformed) {
		t.Error("ParseError does not unwrap to ErrMalformed")
	}
}

func TestParseLimits(t *testing.T) {
	head := "SUBSCRIBE sip:a@b SIP/2.0\r\n"
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"exactly MaxHeaders", head + strings.Repeat("X: y\r\n", sip.MaxHeaders) + "\r\n", nil},
		{"MaxHeaders+1", head + strings.Repeat("X: y\r\n", sip.MaxHeaders+1) + "\r\n", sip.ErrTooManyHeaders},
		{"folded lines count once", head + "X: y\r\n" + strings.Repeat(" z\r\n", 100) + strings.Repeat("X: y\r\n", sip.MaxHeaders-1) + "\r\n", nil},
		{"exactly MaxMessageSize", head + "X: " + strings.Repeat("a", sip.MaxMessageSize-len(head)-7) + "\r\n\r\n", nil},
		{"MaxMessageSize+1", head + "X: " + strings.Repeat("a", sip.MaxMessageSize-len(head)-6) + "\r\n\r\n", sip.ErrTooLarge},
		{"Content-Length beyond limit", head + "l: 8193\r\n\r\n", sip.ErrMalformed},
		{"Content-Length equal twice", head + "l: 2\r\nContent-Length: 2\r\n\r\nab", nil},
		{"Content-Length with spaces", head + "Content-Length:   2  \r\n\r\nabc", nil},
		{"Content-Length plus", head + "Content-Length: +2\r\n\r\nab", sip.ErrMalformed},
		{"DEL in value", head + "X: a\x7fb\r\n\r\n", sip.ErrMalformed},
		{"HTAB in value", head + "X: a\tb\r\n\r\n", nil},
		{"empty value", head + "Subject:\r\n\r\n", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sip.Parse([]byte(tc.in))
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("len %d: err = %v, want %v", len(tc.in), err, tc.want)
			}
		})
	}
}

func TestGetNameAndIDs(t *testing.T) {
	in := "NOTIFY sip:a@b SIP/2.0\r\n" +
		"v: SIP/2.0/UDP h;branch=z9hG4bK1\r\n" +
		"Content-Type: application/url\r\n" +
		"r: <sip:refer@x>\r\n" +
		"X-Custom: one\r\n" +
		"x-custom: two\r\n" +
		"e: gzip\r\n" +
		"u: ua-profile\r\n" +
		"s: hello\r\n" +
		"\r\n"
	m, err := sip.Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, want string }{
		{"Via", "SIP/2.0/UDP h;branch=z9hG4bK1"},
		{"V", "SIP/2.0/UDP h;branch=z9hG4bK1"},
		{"c", "application/url"},
		{"refer-to", "<sip:refer@x>"},
		{"R", "<sip:refer@x>"},
		{"X-CUSTOM", "one"},
		{"Content-Encoding", "gzip"},
		{"Allow-Events", "ua-profile"},
		{"subject", "hello"},
		{"Missing", ""},
		{"q", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(m.GetName(tc.name)); got != tc.want {
				t.Errorf("GetName(%q) = %q, want %q", tc.name, got, tc.want)
			}
		})
	}
	if m.GetName("Missing") != nil || m.Get(sip.HdrFrom) != nil {
		t.Error("absent header is not nil")
	}
	if m.Count(sip.HdrOther) != 3 {
		t.Errorf("Count(HdrOther) = %d", m.Count(sip.HdrOther))
	}
	for id, name := range map[sip.HeaderID]string{sip.HdrCallID: "Call-ID", sip.HdrWWWAuthenticate: "WWW-Authenticate", sip.HdrOther: "", sip.HeaderID(250): ""} {
		if id.String() != name {
			t.Errorf("%d.String() = %q, want %q", id, id.String(), name)
		}
	}
	if _, err := (&sip.Message{}).TopVia(); !errors.Is(err, sip.ErrNoHeader) {
		t.Errorf("TopVia without Via: %v", err)
	}
}

func TestMessageReuse(t *testing.T) {
	var m sip.Message
	long, _ := readFile("phones", "grandstream.sip")
	if err := m.Parse(long); err != nil {
		t.Fatal(err)
	}
	short := []byte("SIP/2.0 200 OK\r\nCall-ID: y\r\n\r\n")
	if err := m.Parse(short); err != nil {
		t.Fatal(err)
	}
	if m.IsRequest() || len(m.Headers) != 1 || string(m.Get(sip.HdrCallID)) != "y" || m.Get(sip.HdrVia) != nil {
		t.Errorf("reused message holds old data: %d headers", len(m.Headers))
	}
}

func TestParseAllocs(t *testing.T) {
	for _, p := range validPackets(t) {
		t.Run(p.name, func(t *testing.T) {
			buf := make([]byte, len(p.data))
			var m sip.Message
			if n := testing.AllocsPerRun(100, func() {
				copy(buf, p.data)
				if err := m.Parse(buf); err != nil {
					t.Fatal(err)
				}
			}); n != 0 {
				t.Errorf("(*Message).Parse: %v allocs, want 0", n)
			}
			if n := testing.AllocsPerRun(100, func() {
				copy(buf, p.data)
				if _, err := sip.Parse(buf); err != nil {
					t.Fatal(err)
				}
			}); n != 1 {
				t.Errorf("Parse: %v allocs, want 1", n)
			}
			if !m.IsRequest() || m.Get(sip.HdrEvent) == nil {
				return
			}
			var v pnpView
			if n := testing.AllocsPerRun(100, func() {
				if err := extractView(&m, &v); err != nil {
					t.Fatal(err)
				}
			}); n != 0 {
				t.Errorf("PnP field parsers: %v allocs, want 0", n)
			}
		})
	}
}

func TestParseStartLineErrors(t *testing.T) {
	tests := []struct{ name, in string }{
		// Found by FuzzParse: a Request-URI that is only ':' was taken for a URI.
		{"fuzz: Request-URI is a bare colon", "0 : SIP/2.0\n\n"},
		{"fuzz: Request-URI with empty scheme-specific part", "0 A: SIP/2.0\n\n"},
		{"fuzz: Request-URI scheme starting with a digit", "0 000: SIP/2.0\n\n"},
		{"method then TAB only", "SUBSCRIBE\t\r\n\r\n"},
		{"version glued to URI", "SUBSCRIBE sip:a@bSIP/2.0\r\n\r\n"},
		{"HTTP", "GET / HTTP/1.1\r\n\r\n"},
		{"HTTP response", "HTTP/1.1 200 OK\r\n\r\n"},
		{"status code letters", "SIP/2.0 2OO OK\r\n\r\n"},
		{"status code glued to reason", "SIP/2.0 200OK\r\n\r\n"},
		{"version without SP", "SIP/2.0\r\n\r\n"},
		{"lone CR before start line", "\r SUBSCRIBE sip:a@b SIP/2.0\r\n\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := sip.Parse([]byte(tc.in)); !errors.Is(err, sip.ErrMalformed) {
				t.Errorf("err = %v, want ErrMalformed", err)
			}
		})
	}
}
