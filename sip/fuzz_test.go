package sip_test

import (
	"bytes"
	"errors"
	"strconv"
	"testing"

	"github.com/pnpd/pnpd/sip"
)

// addSeeds adds every testdata packet (valid and invalid) to the corpus.
func addSeeds(f *testing.F) {
	for _, dir := range []string{"phones", "responses", "valid", "invalid", "rfc4475/valid", "rfc4475/invalid"} {
		for _, p := range readDir(f, dir) {
			f.Add(p.data)
		}
	}
}

func FuzzParse(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParse(t, data)
	})
}

// checkParse is the body of FuzzParse: parsing never panics, errors are one of the
// three sentinels, and an accepted message survives build -> parse unchanged.
func checkParse(t *testing.T, data []byte) {
	var m sip.Message
	err := m.Parse(bytes.Clone(data))
	if err != nil {
		if !errors.Is(err, sip.ErrMalformed) && !errors.Is(err, sip.ErrTooLarge) && !errors.Is(err, sip.ErrTooManyHeaders) {
			t.Fatalf("unexpected error type %T: %v", err, err)
		}
		if !errRE.MatchString(err.Error()) {
			t.Fatalf("error text %q does not have the fixed shape", err.Error())
		}
		return
	}
	exercise(&m)

	// Rebuild from the parsed parts. Header drops Content-Length and Body writes
	// the right one, so Content-Length headers are left out of the comparison.
	var b sip.Builder
	if m.IsRequest() {
		b.RequestLine(string(m.Method), m.RequestURI)
	} else {
		b.StatusLine(m.StatusCode, string(m.Reason))
	}
	for _, h := range m.Headers {
		b.Header(string(h.Name), h.Value)
	}
	out := b.Body("", m.Body)
	if len(out) > sip.MaxMessageSize {
		return // "name:v" became "name: v", or Content-Length was added
	}
	var m2 sip.Message
	if err := m2.Parse(out); err != nil {
		if errors.Is(err, sip.ErrTooManyHeaders) && m.Get(sip.HdrContentLength) == nil {
			return // the added Content-Length was one header too many
		}
		t.Fatalf("rebuilt message does not parse: %v\n%q", err, out)
	}
	if !bytes.Equal(m.Method, m2.Method) || !bytes.Equal(m.RequestURI, m2.RequestURI) ||
		m.StatusCode != m2.StatusCode || !bytes.Equal(m.Reason, m2.Reason) {
		t.Fatalf("start line changed: %q %q %d %q -> %q %q %d %q",
			m.Method, m.RequestURI, m.StatusCode, m.Reason, m2.Method, m2.RequestURI, m2.StatusCode, m2.Reason)
	}
	h1, h2 := withoutContentLength(m.Headers), withoutContentLength(m2.Headers)
	if len(h1) != len(h2) {
		t.Fatalf("%d headers became %d", len(h1), len(h2))
	}
	for i := range h1 {
		if !bytes.Equal(h1[i].Name, h2[i].Name) || !bytes.Equal(h1[i].Value, h2[i].Value) || h1[i].ID != h2[i].ID {
			t.Fatalf("header %d changed: %q: %q -> %q: %q", i, h1[i].Name, h1[i].Value, h2[i].Name, h2[i].Value)
		}
	}
	if !bytes.Equal(m.Body, m2.Body) {
		t.Fatalf("body changed: %q -> %q", m.Body, m2.Body)
	}
}

func withoutContentLength(hs []sip.Header) []sip.Header {
	var out []sip.Header
	for _, h := range hs {
		if h.ID != sip.HdrContentLength {
			out = append(out, h)
		}
	}
	return out
}

// exercise runs every value parser on the message, to find panics.
func exercise(m *sip.Message) {
	_, _ = sip.ParseURI(m.RequestURI)
	_, _ = m.TopVia()
	for _, h := range m.Headers {
		sip.SplitComma(h.Value, func(e []byte) bool {
			switch h.ID {
			case sip.HdrVia:
				if v, err := sip.ParseVia(e); err == nil {
					_ = v.Branch()
					_ = sip.AppendViaReceived(nil, e, "192.0.2.1", 5060, true)
				}
			case sip.HdrFrom, sip.HdrTo, sip.HdrContact:
				if a, err := sip.ParseAddr(e); err == nil {
					_ = a.Tag()
					_, _ = sip.ParseURI(a.URI)
				}
			}
			return true
		})
		switch h.ID {
		case sip.HdrEvent:
			if _, p, err := sip.ParseEvent(h.Value); err == nil {
				p.Each(func(n, v []byte) bool { return true })
			}
		case sip.HdrCSeq:
			_, _, _ = sip.ParseCSeq(h.Value)
		}
	}
	_ = m.GetName("X-Unknown")
	_ = m.GetName("r")
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"sip:MAC0015657322ff@224.0.1.75", "sip:224.0.1.75:5060", "sips:MAC%3a00135E874B49@intern.snom.de",
		"sip:MAC:001122334455@local", "sip:u@[fe80::1]:5080;transport=udp;lr?Subject=x&h=y", "sip:a:@h",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		u, err := sip.ParseURI(data)
		if err != nil {
			if !errors.Is(err, sip.ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		var b []byte
		b = append(append(b, u.Scheme...), ':')
		if u.User != nil {
			b = append(b, u.User...)
			if u.Password != nil {
				b = append(append(b, ':'), u.Password...)
			}
			b = append(b, '@')
		}
		b = append(b, u.Host...)
		if u.Port != 0 {
			b = strconv.AppendInt(append(b, ':'), int64(u.Port), 10)
		}
		b = append(b, u.Params...)
		if u.Headers != nil {
			b = append(append(b, '?'), u.Headers...)
		}
		u2, err := sip.ParseURI(b)
		if err != nil {
			t.Fatalf("rebuilt %q: %v", b, err)
		}
		if !bytes.Equal(u.Scheme, u2.Scheme) || !bytes.Equal(u.User, u2.User) || !bytes.Equal(u.Password, u2.Password) ||
			!bytes.Equal(u.Host, u2.Host) || u.Port != u2.Port || !bytes.Equal(u.Params, u2.Params) || !bytes.Equal(u.Headers, u2.Headers) {
			t.Fatalf("%q -> %q: %+v != %+v", data, b, u, u2)
		}
	})
}

func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{
		"<sip:MAC001fc11b4e1c@224.0.1.75>;tag=1976446358", `"Bob \"the\" Phone" <sip:bob@h>;tag=x;foo`,
		"Bob Smith <sip:bob@h> ; tag = t1 ", "sip:a@b;tag=7", "<sip:a@b;lr>;expires=0",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := sip.ParseAddr(data)
		if err != nil {
			if !errors.Is(err, sip.ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		var b []byte
		if a.Display != nil {
			b = append(append(append(b, '"'), a.Display...), `" `...)
		}
		b = append(append(append(b, '<'), a.URI...), '>')
		b = append(b, a.Params...)
		a2, err := sip.ParseAddr(b)
		if err != nil {
			t.Fatalf("rebuilt %q: %v", b, err)
		}
		if !bytes.Equal(a.Display, a2.Display) || !bytes.Equal(a.URI, a2.URI) || !bytes.Equal(a.Params, a2.Params) ||
			!bytes.Equal(a.Tag(), a2.Tag()) {
			t.Fatalf("%q -> %q: %+v != %+v", data, b, a, a2)
		}
	})
}

func FuzzParseVia(f *testing.F) {
	for _, s := range []string{
		"SIP/2.0/UDP 192.168.1.89:60000;branch=z9hG4bK1430285318;rport",
		" SIP / 2.0 / TCP  host.example : 5061 ; branch = b1 ; received=1.2.3.4 ",
		"SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKv6;rport=1;received=2001:db8::1",
		`SIP/2.0/UDP h;x="a;rport";rport`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := sip.ParseVia(data)
		if err != nil {
			if !errors.Is(err, sip.ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			// Refused input is appended unchanged (trimmed).
			if got := sip.AppendViaReceived(nil, data, "192.0.2.1", 5060, true); !bytes.Equal(got, bytes.Trim(data, " \t")) {
				t.Fatalf("AppendViaReceived changed a refused Via: %q -> %q", data, got)
			}
			return
		}
		b := append([]byte("SIP/2.0/"), v.Transport...)
		b = append(append(b, ' '), v.Host...)
		if v.Port != 0 {
			b = strconv.AppendInt(append(b, ':'), int64(v.Port), 10)
		}
		b = append(b, v.Params...)
		v2, err := sip.ParseVia(b)
		if err != nil {
			t.Fatalf("rebuilt %q: %v", b, err)
		}
		if !bytes.Equal(v.Transport, v2.Transport) || !bytes.Equal(v.Host, v2.Host) || v.Port != v2.Port || !bytes.Equal(v.Params, v2.Params) {
			t.Fatalf("%q -> %q: %+v != %+v", data, b, v, v2)
		}

		// AppendViaReceived keeps the Via valid and sets what it was asked to.
		out := sip.AppendViaReceived(nil, data, "192.0.2.1", 40000, true)
		v3, err := sip.ParseVia(out)
		if err != nil {
			t.Fatalf("AppendViaReceived(%q) = %q: %v", data, out, err)
		}
		if r, _ := v3.Params.Get("received"); string(r) != "192.0.2.1" {
			t.Fatalf("AppendViaReceived(%q) = %q: received %q", data, out, r)
		}
		_, had := v.Params.Get("rport")
		if r, ok := v3.Params.Get("rport"); ok != had || ok && string(r) != "40000" {
			t.Fatalf("AppendViaReceived(%q) = %q: rport %q %v", data, out, r, ok)
		}
		if !bytes.Equal(v.Branch(), v3.Branch()) || !bytes.Equal(v.Host, v3.Host) || v.Port != v3.Port {
			t.Fatalf("AppendViaReceived(%q) = %q changed branch or sent-by", data, out)
		}
	})
}
