package pnp

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	gosip "github.com/jart/gosip/sip"

	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/policy"
	"github.com/pnpd/pnpd/pkg/resolve"
	"github.com/pnpd/pnpd/sip"
)

// The whole receive path under the fuzzer: one datagram to the group, its
// retransmission, the phone's answer to our NOTIFY, then Shutdown. Every
// phone gets a URL from the file's default, and the policy refuses two
// ways: contact_is_source, and deny_macs for Yealink's OUI. Sources outside
// fuzzAllow are not answered.
const fuzzConf = `
[resolve]
default = "http://prov.example.com/{vendor}/{mac}"
[policy]
contact_is_source = true
deny_macs = ["001565"]
`

var (
	fuzzAllow = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16")}
	fuzzDeny = []string{"001565"}
	// fuzzSrc is the source of a datagram whose top Via names no IPv4
	// host (a phone sends from the address its Via names).
	fuzzSrc = netip.MustParseAddrPort("192.168.1.89:60000")
)

func FuzzHandle(f *testing.F) {
	for _, dir := range []string{"phones", "valid", "invalid", "responses", "rfc4475/valid", "rfc4475/invalid"} {
		files, err := filepath.Glob(filepath.Join("..", "..", "sip", "testdata", dir, "*.sip"))
		if err != nil || len(files) == 0 {
			f.Fatalf("no seeds in sip/testdata/%s: %v", dir, err)
		}
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	// Ours: the refusals and the near misses, each one edit from an answer.
	yealink := readPhone(f, "yealink.sip")
	htek := readPhone(f, "htek.sip")
	for _, b := range [][]byte{
		withContact(yealink, "203.0.113.9:5059"),
		bytes.Replace(htek, []byte("Event: ua-profile"), []byte("Event: presence"), 1),
		bytes.Replace(htek, []byte("SUBSCRIBE sip:"), []byte("subscribe sip:"), 1),
		bytes.Replace(htek, []byte("Call-ID:"), []byte("X-Call-ID:"), 1),
		bytes.Replace(htek, []byte("192.168.1.89:60000;"), []byte("8.8.8.8:60000;"), 1),
		bytes.Replace(htek, []byte("From: "), []byte("From: <"), 1),
	} {
		f.Add(b)
	}

	c, err := config.Parse([]byte(fuzzConf))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		srv := fuzzServer(t, c)
		port := newFakePort()
		src := fuzzSource(data)
		checkHandle(t, srv, port, data, src)
	})
}

// checkHandle is the body of FuzzHandle.
func checkHandle(t *testing.T, srv *Server, port *fakePort, data []byte, src netip.AddrPort) {
	answered, why := fuzzVerdict(data, src)

	srv.Handle(Packet{Data: bytes.Clone(data), Src: src, Group: true, Port: port})
	out := taken(port)
	if !answered {
		if len(out) != 0 {
			t.Fatalf("refused (%s), yet %d datagrams left, the first to %s:\n%s", why, len(out), out[0].dst, out[0].b)
		}
	} else if len(out) != 2 {
		t.Fatalf("a ua-profile SUBSCRIBE got %d datagrams, want a 200 and a NOTIFY", len(out))
	}

	// Its retransmission: the same 200, or nothing.
	srv.Handle(Packet{Data: bytes.Clone(data), Src: src, Group: true, Port: port})
	again := taken(port)
	switch {
	case !answered && len(again) != 0:
		t.Fatalf("refused (%s), yet its retransmission got %d datagrams:\n%s", why, len(again), again[0].b)
	case answered && (len(again) != 1 || !bytes.Equal(again[0].b, out[0].b) || again[0].dst != out[0].dst):
		t.Fatalf("the retransmission got %d datagrams, want the first 200 again", len(again))
	}

	if answered {
		req, err := sip.Parse(bytes.Clone(data))
		if err != nil {
			t.Fatal(err)
		}
		okTo := checkOK(t, req, data, out[0], src)
		checkNotify(t, req, data, out[1], src, okTo)
		// The phone's 200 ends the exchange and nothing is sent for it.
		srv.Handle(Packet{Data: answer(t, out[1].b, 200), Src: out[1].dst, Port: port})
		if n := len(port.ch); n != 0 {
			t.Fatalf("%d datagrams sent for the phone's 200 to the NOTIFY", n)
		}
	}

	// Nothing in flight is left over, and nothing leaves after.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := len(port.ch); n != 0 {
		s := <-port.ch
		t.Fatalf("%d datagrams left after the exchange ended, the first to %s:\n%s", n, s.dst, s.b)
	}
}

// taken empties the port's queue.
func taken(p *fakePort) []sent {
	var out []sent
	for {
		select {
		case s := <-p.ch:
			out = append(out, s)
		default:
			return out
		}
	}
}

// fuzzSource is where the datagram comes from: the address and port of its
// top Via when that names an IPv4 host (as a phone's does), else fuzzSrc.
func fuzzSource(data []byte) netip.AddrPort {
	m, err := sip.Parse(bytes.Clone(data))
	if err != nil {
		return fuzzSrc
	}
	v, err := m.TopVia()
	if err != nil {
		return fuzzSrc
	}
	a, err := netip.ParseAddr(string(v.Host))
	if err != nil || !a.Is4() {
		return fuzzSrc
	}
	port := v.Port
	if port == 0 {
		port = 5060
	}
	return netip.AddrPortFrom(a, uint16(port))
}

// fuzzVerdict says, from our parser's reading, whether the datagram is a
// ua-profile SUBSCRIBE the server must answer, or why not. It is written
// from the rules (doc.go, the policy's keys), not from the server's code.
func fuzzVerdict(data []byte, src netip.AddrPort) (bool, string) {
	allowed := false
	for _, p := range fuzzAllow {
		allowed = allowed || p.Contains(src.Addr())
	}
	if !allowed {
		return false, "source not allowed"
	}
	m, err := sip.Parse(bytes.Clone(data))
	switch {
	case err != nil:
		return false, "malformed: " + err.Error()
	case !m.IsRequest():
		return false, "a response"
	case string(m.Method) != "SUBSCRIBE":
		return false, "not SUBSCRIBE"
	}
	pkg, _, _ := bytes.Cut(m.Get(sip.HdrEvent), []byte(";"))
	if !bytes.EqualFold(bytes.TrimSpace(pkg), []byte("ua-profile")) {
		return false, "not ua-profile"
	}
	if _, err := m.TopVia(); err != nil {
		return false, "no top Via"
	}
	for _, h := range []sip.HeaderID{sip.HdrCallID, sip.HdrFrom, sip.HdrTo, sip.HdrCSeq} {
		if len(m.Get(h)) == 0 {
			return false, "no " + h.String()
		}
	}
	if _, err := sip.ParseAddr(m.Get(sip.HdrFrom)); err != nil {
		return false, "From"
	}
	if _, err := sip.ParseAddr(m.Get(sip.HdrTo)); err != nil {
		return false, "To"
	}
	if _, method, err := sip.ParseCSeq(m.Get(sip.HdrCSeq)); err != nil || string(method) != "SUBSCRIBE" {
		return false, "CSeq"
	}
	// contact_is_source: the first Contact's host is the source address.
	var first []byte
	sip.SplitComma(m.Get(sip.HdrContact), func(e []byte) bool { first = e; return false })
	a, err := sip.ParseAddr(first)
	if err != nil {
		return false, "contact-not-source: no Contact"
	}
	u, err := sip.ParseURI(a.URI)
	if err != nil || string(u.Host) != src.Addr().String() {
		return false, "contact-not-source"
	}
	if mac := identify(m).MAC; mac != "" {
		for _, d := range fuzzDeny {
			if len(mac) >= len(d) && mac[:len(d)] == d {
				return false, "mac-denied"
			}
		}
	}
	return true, ""
}

// checkOK checks the 200 to req: it parses with our parser and with gosip,
// repeats the request's Call-ID, CSeq, From and top Via branch, tags the To,
// goes back to the source address, and survives parse -> build -> parse.
// It returns the 200's To.
func checkOK(t *testing.T, req *sip.Message, raw []byte, s sent, src netip.AddrPort) []byte {
	t.Helper()
	m, g := parseBothFuzz(t, s.b, gosipReads(req, raw))
	if m.StatusCode != 200 || g != nil && g.Status != 200 {
		t.Fatalf("first datagram out is not a 200:\n%s", s.b)
	}
	if s.dst.Addr() != src.Addr() {
		t.Fatalf("200 went to %s, the SUBSCRIBE came from %s", s.dst, src)
	}
	for _, h := range []sip.HeaderID{sip.HdrCallID, sip.HdrCSeq, sip.HdrFrom} {
		if !bytes.Equal(m.Get(h), req.Get(h)) {
			t.Fatalf("200 %s %q, the SUBSCRIBE's %q", h, m.Get(h), req.Get(h))
		}
	}
	rv, _ := req.TopVia()
	v, err := m.TopVia()
	if err != nil || !bytes.Equal(v.Branch(), rv.Branch()) {
		t.Fatalf("200 top Via %q (%v), want branch %q", m.Get(sip.HdrVia), err, rv.Branch())
	}
	if to, err := sip.ParseAddr(m.Get(sip.HdrTo)); err != nil || len(to.Tag()) == 0 {
		t.Fatalf("200 To %q has no tag (%v)", m.Get(sip.HdrTo), err)
	}
	if g != nil {
		if p := g.To.Param.Get("tag"); p == nil || p.Value == "" {
			t.Fatalf("gosip reads no tag in the 200's To %q", m.Get(sip.HdrTo))
		}
	}
	checkRebuild(t, s.b)
	return m.Get(sip.HdrTo)
}

// checkNotify checks the NOTIFY for req: it parses with both parsers, goes
// to the source address, is in the 200's dialog (Call-ID, From tag = the
// 200's To, To = the SUBSCRIBE's From), carries a URL, and survives
// parse -> build -> parse.
func checkNotify(t *testing.T, req *sip.Message, raw []byte, s sent, src netip.AddrPort, okTo []byte) {
	t.Helper()
	m, g := parseBothFuzz(t, s.b, gosipReads(req, raw))
	if string(m.Method) != "NOTIFY" || g != nil && g.Method != "NOTIFY" {
		t.Fatalf("second datagram out is not a NOTIFY:\n%s", s.b)
	}
	if s.dst.Addr() != src.Addr() {
		t.Fatalf("NOTIFY went to %s, the SUBSCRIBE came from %s", s.dst, src)
	}
	if !bytes.Equal(m.Get(sip.HdrCallID), req.Get(sip.HdrCallID)) || !bytes.Equal(m.Get(sip.HdrTo), req.Get(sip.HdrFrom)) {
		t.Fatalf("NOTIFY Call-ID %q To %q, the SUBSCRIBE's Call-ID %q From %q",
			m.Get(sip.HdrCallID), m.Get(sip.HdrTo), req.Get(sip.HdrCallID), req.Get(sip.HdrFrom))
	}
	if !bytes.Equal(m.Get(sip.HdrFrom), okTo) {
		t.Fatalf("NOTIFY From %q, want the 200's To %q", m.Get(sip.HdrFrom), okTo)
	}
	if !bytes.HasPrefix(m.Body, []byte("http://prov.example.com/")) {
		t.Fatalf("NOTIFY body %q", m.Body)
	}
	checkRebuild(t, s.b)
}

// parseBothFuzz parses what we sent with our parser and, when gosip
// reads the SUBSCRIBE it answers (withGosip), with gosip too; else g is
// nil. What we send repeats the SUBSCRIBE's Via, From, To, Call-ID and
// CSeq as they are, so gosip can only be asked to read what it read in
// the SUBSCRIBE: it is stricter than RFC 3261 in places ("<A:!>" is an
// absoluteURI it refuses).
func parseBothFuzz(t *testing.T, b []byte, withGosip bool) (*sip.Message, *gosip.Msg) {
	t.Helper()
	m, err := sip.Parse(bytes.Clone(b))
	if err != nil {
		t.Fatalf("our parser refuses what we sent: %v\n%q", err, b)
	}
	if !withGosip {
		return m, nil
	}
	g, err := gosip.ParseMsg(bytes.Clone(b))
	if err != nil {
		t.Fatalf("gosip refuses what we sent: %v\n%q", err, b)
	}
	return m, g
}

// gosipReads reports whether gosip parses the SUBSCRIBE raw (req, as our
// parser read it), after the normalisations of sip/gosip_test.go for
// gosip's known quirks: one SP between the parts of the start line, CRLF
// line ends, no empty lines before it, nothing after the Content-Length
// body. A panic in gosip is a refusal.
func gosipReads(req *sip.Message, raw []byte) (ok bool) {
	head, body, _ := bytes.Cut(bytes.ReplaceAll(bytes.TrimLeft(raw, "\r\n"), []byte("\r\n"), []byte("\n")), []byte("\n\n"))
	if req.Get(sip.HdrContentLength) != nil && len(body) >= len(req.Body) {
		body = body[:len(req.Body)]
	}
	start, rest, _ := bytes.Cut(head, []byte("\n"))
	in := append(bytes.Join(bytes.Fields(start), []byte(" ")), "\r\n"...)
	in = append(in, bytes.ReplaceAll(rest, []byte("\n"), []byte("\r\n"))...)
	in = append(append(in, "\r\n\r\n"...), body...)
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	_, err := gosip.ParseMsg(in)
	return err == nil
}

// checkRebuild parses b, builds it again from the parsed parts with
// sip.Builder and checks that the result parses to the same message.
func checkRebuild(t *testing.T, b []byte) {
	t.Helper()
	m, err := sip.Parse(bytes.Clone(b))
	if err != nil {
		t.Fatal(err)
	}
	var bl sip.Builder
	if m.IsRequest() {
		bl.RequestLine(string(m.Method), m.RequestURI)
	} else {
		bl.StatusLine(m.StatusCode, string(m.Reason))
	}
	for _, h := range m.Headers {
		bl.Header(string(h.Name), h.Value) // drops Content-Length, which Body writes last, as we do
	}
	again := bl.Body("", m.Body)
	m2, err := sip.Parse(bytes.Clone(again))
	if err != nil {
		t.Fatalf("rebuilt message does not parse: %v\n%q", err, again)
	}
	if !bytes.Equal(m.Method, m2.Method) || !bytes.Equal(m.RequestURI, m2.RequestURI) || m.StatusCode != m2.StatusCode ||
		!bytes.Equal(m.Reason, m2.Reason) || !bytes.Equal(m.Body, m2.Body) {
		t.Fatalf("rebuilt message differs:\n%q\n%q", b, again)
	}
	if len(m.Headers) != len(m2.Headers) {
		t.Fatalf("%d headers became %d:\n%q\n%q", len(m.Headers), len(m2.Headers), b, again)
	}
	for i := range m.Headers {
		h1, h2 := m.Headers[i], m2.Headers[i]
		if h1.ID != h2.ID || !bytes.Equal(h1.Value, h2.Value) {
			t.Fatalf("header %d %q: %q became %q: %q", i, h1.Name, h1.Value, h2.Name, h2.Value)
		}
	}
}

// fuzzServer is a fresh responder for one input of the fuzzer or of the
// seed tests: fuzzConf's rules and policy, fuzzAllow, and a T1 of an hour
// so that no Timer E fires while the input is checked (what leaves is what
// Handle sent).
func fuzzServer(t testing.TB, c *config.Config) *Server {
	t.Helper()
	pol, err := policy.New(policy.Config{Policy: c.Policy})
	if err != nil {
		t.Fatal(err)
	}
	return NewServer(Config{Resolver: pol.Resolver(resolve.NewStatic(c.Resolve)), Policy: pol,
		Allow: fuzzAllow, T1: time.Hour, T2: time.Hour})
}

// Every seed, once, as a plain test: the same checks as the fuzzer's, so
// that a regression shows in go test without -fuzz. The seeds that are
// answered are counted, so that a change that silences every phone fails.
func TestHandleSeeds(t *testing.T) {
	c, err := config.Parse([]byte(fuzzConf))
	if err != nil {
		t.Fatal(err)
	}
	answered, withGosip := 0, 0
	for _, dir := range []string{"phones", "valid", "invalid", "responses", "rfc4475/valid", "rfc4475/invalid"} {
		files, _ := filepath.Glob(filepath.Join("..", "..", "sip", "testdata", dir, "*.sip"))
		for _, file := range files {
			t.Run(dir+"/"+filepath.Base(file), func(t *testing.T) {
				data, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				srv := fuzzServer(t, c)
				src := fuzzSource(data)
				if ok, _ := fuzzVerdict(data, src); ok {
					answered++
					if m, err := sip.Parse(bytes.Clone(data)); err == nil && gosipReads(m, data) {
						withGosip++
					}
				}
				checkHandle(t, srv, newFakePort(), data, src)
			})
		}
	}
	// Every phone of sip/testdata/phones but the Yealink (deny_macs) and
	// those whose Contact is not their Via host.
	if answered < 5 || withGosip < 5 {
		t.Errorf("only %d seeds answered, %d of them checked with gosip too", answered, withGosip)
	}
	t.Logf("%d seeds answered, %d of them checked with gosip too", answered, withGosip)
}

// What the fuzzer found, fixed: each is dropped as malformed, silently.
func TestFuzzFindings(t *testing.T) {
	tests := []struct{ name, data string }{
		// FuzzHandle/849ada04570b3671: a To that is no address came back
		// as "To: 0;tag=...", which is not SIP.
		{"to-not-address", "SUBSCRIBE A:0 SIP/2.0\nV:0/0/0 10.20.30.40\nF:<A:0>\nT:0\nCAll-ID:0\nCSeq:0 0\n" +
			"ContACt:<sip:10.20.30.40>\nEvent:uA-profile \n\n"},
		// RFC 4475 mismatch01's shape: the CSeq names another method.
		{"cseq-method", "SUBSCRIBE A:0 SIP/2.0\nV:0/0/0 10.20.30.40\nF:<A:0>\nT:<A:0>\nCAll-ID:0\nCSeq:0 SUBSCRIcE\n" +
			"ContACt:<sip:10.20.30.40>\nEvent:uA-profile \n\n"},
	}
	c, err := config.Parse([]byte(fuzzConf))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := fuzzServer(t, c)
			port := newFakePort()
			data := []byte(tc.data)
			if ok, why := fuzzVerdict(data, fuzzSource(data)); ok {
				t.Fatalf("fuzzVerdict answers it (%s)", why)
			}
			srv.Handle(Packet{Data: bytes.Clone(data), Src: fuzzSource(data), Group: true, Port: port})
			if out := taken(port); len(out) != 0 {
				t.Fatalf("%d datagrams sent, want none:\n%s", len(out), out[0].b)
			}
			if n := srv.Stats().Dropped["malformed"]; n != 1 {
				t.Errorf("stats %+v", srv.Stats())
			}
		})
	}
}
