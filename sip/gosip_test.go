package sip_test

import (
	"bytes"
	"net/url"
	"strconv"
	"testing"

	gosip "github.com/jart/gosip/sip"

	"github.com/pnpd/pnpd/sip"
)

// Differential test against github.com/jart/gosip/sip.ParseMsg.
//
// Known gosip quirks, and what the comparison does about them:
//   - it refuses more than one SP between the parts of the start line (RFC 3261
//     wants one, phones send more): gosipInput collapses them;
//   - it refuses bare LF line ends: gosipInput turns the header part's LFs into CRLF;
//   - it refuses empty lines before the start line (RFC 3261 7.5 says to skip them):
//     gosipInput drops them;
//   - it refuses a datagram with bytes after the Content-Length body instead of
//     ignoring them (RFC 3261 18.3): gosipInput cuts them off;
//   - it keeps the CR LF of a folded line inside string values (Event, User-Agent):
//     unfold turns it into the two spaces our parser writes in place;
//   - it %-decodes the user part of URIs ("MAC%3a..." comes back as "MAC:..."): we
//     decode ours for the comparison;
//   - it drops the brackets of an IPv6 Via host: hostOf strips ours;
//   - parameters are linked lists in reverse wire order: looked up by name;
//   - without Content-Length it drops the body (Payload nil), where RFC 3261 18.3
//     lets a datagram's body run to its end: the body is compared only when gosip
//     has one;
//   - a repeated header keeps only its last value (Supported in compact-folded.sip);
//     none of the compared fields is repeated;
//   - its errors embed the whole packet; we never print them with the packet.
func TestGosipDifferential(t *testing.T) {
	for _, p := range validPackets(t) {
		t.Run(p.name, func(t *testing.T) {
			m, err := sip.Parse(bytes.Clone(p.data))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			g := gosipParse(t, gosipInput(m, p.data))
			compareGosip(t, m, g)
		})
	}
}

// gosipInput rewrites a packet our parser accepted into the stricter form gosip
// takes (see the quirks above): one SP between start-line parts, CRLF line ends, no
// leading empty lines, nothing after the body.
func gosipInput(m *sip.Message, pkt []byte) []byte {
	head, body, _ := bytes.Cut(bytes.ReplaceAll(bytes.TrimLeft(pkt, "\r\n"), []byte("\r\n"), []byte("\n")), []byte("\n\n"))
	if m.Get(sip.HdrContentLength) != nil {
		body = body[:len(m.Body)]
	}
	start, rest, _ := bytes.Cut(head, []byte("\n"))
	var out []byte
	out = append(out, bytes.Join(bytes.Fields(start), []byte(" "))...)
	out = append(out, "\r\n"...)
	out = append(out, bytes.ReplaceAll(rest, []byte("\n"), []byte("\r\n"))...)
	out = append(out, "\r\n\r\n"...)
	return append(out, body...)
}

func gosipParse(t *testing.T, pkt []byte) *gosip.Msg {
	t.Helper()
	g, err := gosip.ParseMsg(pkt)
	if err != nil {
		// gosip's error text holds the packet; that is fine in a test log.
		t.Fatalf("gosip.ParseMsg: %v", err)
	}
	return g
}

// unfold turns the CR LF gosip leaves in folded values into our two spaces.
func unfold(s string) string {
	return string(bytes.ReplaceAll([]byte(s), []byte("\r\n"), []byte("  ")))
}

// unescape %-decodes a URI user part as gosip does.
func unescape(t *testing.T, b []byte) string {
	s, err := url.PathUnescape(string(b))
	if err != nil {
		t.Errorf("unescape %q: %v", b, err)
	}
	return s
}

// hostOf drops IPv6 brackets.
func hostOf(b []byte) string {
	return string(bytes.TrimSuffix(bytes.TrimPrefix(b, []byte("[")), []byte("]")))
}

func gosipParam(p *gosip.Param, name string) string {
	if p = p.Get(name); p == nil {
		return ""
	}
	return p.Value
}

// compareGosip checks that our parse of a message and gosip's agree on the fields
// PnP uses.
func compareGosip(t *testing.T, m *sip.Message, g *gosip.Msg) {
	t.Helper()
	eq := func(field string, ours, theirs any) {
		t.Helper()
		if ours != theirs {
			t.Errorf("%s: ours %q, gosip %q", field, ours, theirs)
		}
	}
	f, err := extract(m)
	if err != nil {
		t.Fatalf("extract: %v", err)
	}
	if m.IsRequest() {
		eq("method", f.Method, g.Method)
		u, _ := sip.ParseURI(m.RequestURI)
		eq("Request-URI user", unescape(t, u.User), g.Request.User)
		eq("Request-URI host", hostOf(u.Host), hostOf([]byte(g.Request.Host)))
		eq("Request-URI port", u.Port, int(g.Request.Port))
	} else {
		eq("status", f.Status, g.Status)
		eq("reason", f.Reason, g.Phrase)
	}
	eq("Call-ID", f.CallID, g.CallID)
	eq("CSeq", int(f.CSeq), g.CSeq)
	eq("CSeq method", f.CSeqMethod, g.CSeqMethod)
	eq("From tag", f.FromTag, gosipParam(g.From.Param, "tag"))
	eq("To tag", f.ToTag, gosipParam(g.To.Param, "tag"))
	from, _ := sip.ParseURI(mustAddr(t, m.Get(sip.HdrFrom)).URI)
	eq("From user", unescape(t, from.User), g.From.Uri.User)
	eq("From host", hostOf(from.Host), hostOf([]byte(g.From.Uri.Host)))

	via, _ := m.TopVia()
	eq("Via host", hostOf(via.Host), g.Via.Host)
	eq("Via port", via.Port, int(g.Via.Port))
	eq("Via transport", string(via.Transport), g.Via.Transport)
	eq("Via branch", string(via.Branch()), gosipParam(g.Via.Param, "branch"))
	eq("Via received", paramOf(via.Params, "received"), gosipParam(g.Via.Param, "received"))
	eq("Via count", countVias(m), gosipViaCount(g.Via))

	if c := m.Get(sip.HdrContact); c != nil {
		if g.Contact == nil {
			t.Fatal("gosip has no Contact")
		}
		cu, _ := sip.ParseURI(mustAddr(t, c).URI)
		eq("Contact user", unescape(t, cu.User), g.Contact.Uri.User)
		eq("Contact host", hostOf(cu.Host), hostOf([]byte(g.Contact.Uri.Host)))
		eq("Contact port", cu.Port, int(g.Contact.Uri.Port))
	} else if g.Contact != nil {
		t.Error("gosip found a Contact we did not")
	}
	eq("Event", string(m.Get(sip.HdrEvent)), unfold(g.Event))
	eq("User-Agent", string(m.Get(sip.HdrUserAgent)), unfold(g.UserAgent))
	if e := m.Get(sip.HdrExpires); e != nil {
		n, _ := strconv.Atoi(string(e))
		eq("Expires", n, g.Expires)
	}
	if g.Payload != nil {
		eq("body", string(m.Body), string(g.Payload.Data()))
	}
}

func paramOf(p sip.Params, name string) string {
	v, _ := p.Get(name)
	return string(v)
}

func gosipViaCount(v *gosip.Via) int {
	n := 0
	for ; v != nil; v = v.Next {
		n++
	}
	return n
}

func mustAddr(t *testing.T, b []byte) sip.Addr {
	t.Helper()
	a, err := sip.ParseAddr(b)
	if err != nil {
		t.Fatalf("ParseAddr: %v", err)
	}
	return a
}
