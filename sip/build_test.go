package sip_test

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/pnpd/pnpd/sip"
)

// ourTag is the To tag of our 200 and the From tag of our NOTIFY.
const ourTag = "pnpd5eed"

// build200 writes the 200 OK to the SUBSCRIBE m, as a PnP responder does.
func build200(b *sip.Builder, m *sip.Message, srcIP string, srcPort int, scratch []byte) []byte {
	b.StatusLine(200, "OK")
	first := true
	for _, h := range m.Headers {
		if h.ID != sip.HdrVia {
			continue
		}
		sip.SplitComma(h.Value, func(e []byte) bool {
			if first {
				scratch = sip.AppendViaReceived(scratch[:0], e, srcIP, srcPort, true)
				b.Header("Via", scratch)
				first = false
			} else {
				b.Header("Via", e)
			}
			return true
		})
	}
	b.Header("From", m.Get(sip.HdrFrom))
	scratch = append(append(scratch[:0], m.Get(sip.HdrTo)...), ";tag="+ourTag...)
	b.Header("To", scratch)
	b.Header("Call-ID", m.Get(sip.HdrCallID))
	b.Header("CSeq", m.Get(sip.HdrCSeq))
	b.HeaderString("Contact", "<sip:192.168.0.240:5060>")
	b.HeaderInt("Expires", 0)
	return b.Body("", nil)
}

// buildNotify writes the NOTIFY for the SUBSCRIBE m.
func buildNotify(b *sip.Builder, m *sip.Message, contactURI []byte, url string, scratch []byte) []byte {
	b.RequestLine("NOTIFY", contactURI)
	b.HeaderString("Via", "SIP/2.0/UDP 192.168.0.240:5060;branch=z9hG4bKpnpd1;rport")
	b.HeaderInt("Max-Forwards", 70)
	scratch = append(append(scratch[:0], m.Get(sip.HdrTo)...), ";tag="+ourTag...)
	b.Header("From", scratch)
	b.Header("To", m.Get(sip.HdrFrom))
	b.Header("Call-ID", m.Get(sip.HdrCallID))
	b.HeaderCSeq(1, "NOTIFY")
	b.HeaderString("Contact", "<sip:192.168.0.240:5060>")
	scratch = append(append(scratch[:0], m.Get(sip.HdrEvent)...), ";effective-by=0"...)
	b.Header("Event", scratch)
	b.HeaderString("Subscription-State", "terminated;reason=timeout")
	return b.Body("application/url", []byte(url))
}

func TestBuildRoundTrip(t *testing.T) {
	const url = "http://prov.example.com/phones/"
	for _, p := range readDir(t, "phones") {
		t.Run(p.name, func(t *testing.T) {
			sub, err := sip.Parse(bytes.Clone(p.data))
			if err != nil {
				t.Fatal(err)
			}
			subF, err := extract(sub)
			if err != nil {
				t.Fatal(err)
			}
			contact, err := sip.ParseAddr(sub.Get(sip.HdrContact))
			if err != nil {
				t.Fatal(err)
			}
			var b sip.Builder
			b.Reset(make([]byte, 0, 2048))
			ok200 := bytes.Clone(build200(&b, sub, "10.1.2.3", 40000, make([]byte, 0, 256)))
			b.Reset(make([]byte, 0, 2048))
			notify := bytes.Clone(buildNotify(&b, sub, contact.URI, url, make([]byte, 0, 256)))

			t.Run("200", func(t *testing.T) {
				m, err := sip.Parse(bytes.Clone(ok200))
				if err != nil {
					t.Fatalf("Parse: %v\n%s", err, ok200)
				}
				f, err := extract(m)
				if err != nil {
					t.Fatal(err)
				}
				if f.Status != 200 || f.Reason != "OK" || f.CallID != subF.CallID || f.CSeq != subF.CSeq ||
					f.FromTag != subF.FromTag || f.ToTag != ourTag || f.Branch != subF.Branch ||
					f.ViaHost != subF.ViaHost || f.ViaPort != subF.ViaPort || f.ContentLen != "0" || f.Body != "" {
					t.Errorf("200 fields %+v", f)
				}
				via, _ := m.TopVia()
				if r, _ := via.Params.Get("received"); string(r) != "10.1.2.3" {
					t.Errorf("received = %q", r)
				}
				if r, ok := via.Params.Get("rport"); ok != subF.RPortFlag || ok && string(r) != "40000" {
					t.Errorf("rport = %q, %v", r, ok)
				}
				if m.Count(sip.HdrVia) != countVias(sub) {
					t.Errorf("%d Via headers, want %d", m.Count(sip.HdrVia), countVias(sub))
				}
				g := gosipParse(t, ok200)
				compareGosip(t, m, g)
			})
			t.Run("NOTIFY", func(t *testing.T) {
				m, err := sip.Parse(bytes.Clone(notify))
				if err != nil {
					t.Fatalf("Parse: %v\n%s", err, notify)
				}
				f, err := extract(m)
				if err != nil {
					t.Fatal(err)
				}
				if f.Method != "NOTIFY" || f.RURI != subF.Contact || f.CallID != subF.CallID || f.CSeq != 1 ||
					f.CSeqMethod != "NOTIFY" || f.ToTag != subF.FromTag || f.FromTag != ourTag || f.ToURI != subF.FromURI ||
					f.FromURI != subF.ToURI || f.Body != url || f.ContentLen != strconv.Itoa(len(url)) ||
					f.EventPkg != "ua-profile" || f.EventParams["effective-by"] != "0" {
					t.Errorf("NOTIFY fields %+v", f)
				}
				for k, v := range subF.EventParams {
					if f.EventParams[k] != v {
						t.Errorf("Event param %s = %q, want %q", k, f.EventParams[k], v)
					}
				}
				if string(m.Get(sip.HdrContentType)) != "application/url" || string(m.Get(sip.HdrSubscriptionState)) != "terminated;reason=timeout" {
					t.Errorf("Content-Type %q, Subscription-State %q", m.Get(sip.HdrContentType), m.Get(sip.HdrSubscriptionState))
				}
				g := gosipParse(t, notify)
				compareGosip(t, m, g)
				if string(g.Payload.Data()) != url || g.Payload.ContentType() != "application/url" {
					t.Errorf("gosip body %q type %q", g.Payload.Data(), g.Payload.ContentType())
				}
			})
		})
	}
}

func countVias(m *sip.Message) int {
	n := 0
	for _, h := range m.Headers {
		if h.ID == sip.HdrVia {
			sip.SplitComma(h.Value, func([]byte) bool { n++; return true })
		}
	}
	return n
}

func TestBuilder(t *testing.T) {
	var b sip.Builder // zero value
	b.RequestLine("NOTIFY", []byte("sip:a@b"))
	b.HeaderString("Content-Length", "99") // dropped: Body writes it
	b.Header("l", []byte("99"))            // dropped too
	b.HeaderString("X-Injected", "a\r\nVia: evil\x00")
	b.HeaderInt("Expires", 0)
	b.HeaderCSeq(4294967295, "NOTIFY")
	got := string(b.Body("application/url", []byte("http://x/")))
	want := "NOTIFY sip:a@b SIP/2.0\r\n" +
		"X-Injected: a  Via: evil \r\n" +
		"Expires: 0\r\n" +
		"CSeq: 4294967295 NOTIFY\r\n" +
		"Content-Type: application/url\r\n" +
		"Content-Length: 9\r\n\r\nhttp://x/"
	if got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	b.Reset(nil)
	b.StatusLine(401, "Unauthorized")
	if got := string(b.Body("", nil)); got != "SIP/2.0 401 Unauthorized\r\nContent-Length: 0\r\n\r\n" {
		t.Errorf("status: %q", got)
	}
	// Reset reuses the given buffer.
	buf := make([]byte, 0, 512)
	b.Reset(buf)
	out := b.Body("", nil)
	if &out[0] != &buf[:1][0] {
		t.Error("Builder did not write into the buffer given to Reset")
	}
}

func TestBuilderAllocs(t *testing.T) {
	sub, err := sip.Parse(mustRead(t, "phones", "htek.sip"))
	if err != nil {
		t.Fatal(err)
	}
	contact, _ := sip.ParseAddr(sub.Get(sip.HdrContact))
	var b sip.Builder
	buf := make([]byte, 0, 2048)
	scratch := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() {
		b.Reset(buf)
		build200(&b, sub, "192.168.1.89", 60000, scratch)
		b.Reset(buf)
		buildNotify(&b, sub, contact.URI, "http://prov/", scratch)
	}); n != 0 {
		t.Errorf("Builder: %v allocs, want 0", n)
	}
}

func mustRead(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := readFile(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAppendViaReceived(t *testing.T) {
	tests := []struct {
		name, via   string
		ip          string
		rport       int
		addReceived bool
		want        string
	}{
		{"rport flag filled, received added", "SIP/2.0/UDP 192.168.1.89:60000;branch=z9hG4bK1;rport", "192.168.1.89", 60000, true,
			"SIP/2.0/UDP 192.168.1.89:60000;branch=z9hG4bK1;rport=60000;received=192.168.1.89"},
		{"no rport, no received: unchanged", "SIP/2.0/UDP 172.16.32.148:5059;branch=z9hG4bK1263794541", "172.16.32.148", 5059, false,
			"SIP/2.0/UDP 172.16.32.148:5059;branch=z9hG4bK1263794541"},
		{"no rport: none added", "SIP/2.0/UDP 172.16.32.148:5059;branch=z9hG4bK1", "10.0.0.1", 5059, true,
			"SIP/2.0/UDP 172.16.32.148:5059;branch=z9hG4bK1;received=10.0.0.1"},
		{"rport value replaced", "SIP/2.0/UDP h;rport=1;branch=b", "1.2.3.4", 5060, false,
			"SIP/2.0/UDP h;rport=5060;branch=b"},
		{"received replaced in place", "SIP/2.0/UDP h;received=9.9.9.9;branch=b;RPORT", "1.2.3.4", 7, true,
			"SIP/2.0/UDP h;received=1.2.3.4;branch=b;rport=7"},
		{"rport 0 leaves the flag", "SIP/2.0/UDP h;rport", "1.2.3.4", 0, false,
			"SIP/2.0/UDP h;rport"},
		{"white space normalised around changed params", "  SIP/2.0/UDP h:5060 ; rport ; branch=x  ", "1.2.3.4", 5, true,
			"SIP/2.0/UDP h:5060;rport=5; branch=x;received=1.2.3.4"},
		{"quoted param kept", `SIP/2.0/UDP h;x="a;rport";rport`, "1.2.3.4", 5, false,
			`SIP/2.0/UDP h;x="a;rport";rport=5`},
		{"IPv6", "SIP/2.0/UDP [fe80::1]:5060;branch=b;rport", "fe80::1", 5060, true,
			"SIP/2.0/UDP [fe80::1]:5060;branch=b;rport=5060;received=fe80::1"},
		{"malformed appended unchanged", "SIP/2.0/UDP ;rport", "1.2.3.4", 5, true,
			"SIP/2.0/UDP ;rport"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := sip.AppendViaReceived([]byte("prefix|"), []byte(tc.via), tc.ip, tc.rport, tc.addReceived)
			if string(got) != "prefix|"+tc.want {
				t.Errorf("got  %q\nwant %q", got, "prefix|"+tc.want)
			}
		})
	}
	buf := make([]byte, 0, 256)
	v := []byte("SIP/2.0/UDP 192.168.1.89:60000;branch=z9hG4bK1;rport")
	if n := testing.AllocsPerRun(100, func() { buf = sip.AppendViaReceived(buf[:0], v, "192.168.1.89", 60000, true) }); n != 0 {
		t.Errorf("AppendViaReceived: %v allocs", n)
	}
}
