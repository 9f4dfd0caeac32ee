package pnp

import (
	"bytes"
	"net/netip"
	"strconv"

	"github.com/pnpd/pnpd/sip"
)

// userAgent names pnpd in what it sends.
const userAgent = "pnpd"

func itoa(n int) string { return strconv.Itoa(n) }

// buildOK builds the 200 to a SUBSCRIBE and says where it goes, after
// RFC 3261 18.2.2 and RFC 3581: with rport to the source address and port,
// else to the source address and the Via's sent-by port (default 5060).
// tagged is the SUBSCRIBE's To with our tag.
func (s *Server) buildOK(m *sip.Message, via sip.Via, p Packet, tagged []byte) ([]byte, netip.AddrPort) {
	_, rport := via.Params.Get("rport")
	src := p.Src
	dst := src
	if !rport {
		port := via.Port
		if port == 0 {
			port = 5060
		}
		dst = netip.AddrPortFrom(src.Addr(), uint16(port))
	}
	var ipb [16]byte
	srcIP := src.Addr().AppendTo(ipb[:0])
	addReceived := rport || !bytes.Equal(via.Host, srcIP)

	// The 200 is kept for retransmitted SUBSCRIBEs: one allocation of
	// about its size (a few received/rport bytes spare), no regrowth.
	size := okFixed + len(m.Get(sip.HdrFrom)) + len(tagged) + len(m.Get(sip.HdrCallID)) + len(m.Get(sip.HdrCSeq))
	for i := range m.Headers {
		if m.Headers[i].ID == sip.HdrVia {
			size += len(m.Headers[i].Value) + 16
		}
	}
	var b sip.Builder
	b.Reset(make([]byte, 0, size))
	b.StatusLine(200, "OK")
	first := true
	var vbuf [256]byte
	for i := range m.Headers {
		h := &m.Headers[i]
		if h.ID != sip.HdrVia {
			continue
		}
		sip.SplitComma(h.Value, func(e []byte) bool {
			if first {
				first = false
				b.Header("Via", sip.AppendViaReceived(vbuf[:0], e, srcIP, int(src.Port()), addReceived))
			} else {
				b.Header("Via", e)
			}
			return true
		})
	}
	b.Header("From", m.Get(sip.HdrFrom))
	b.Header("To", tagged)
	b.Header("Call-ID", m.Get(sip.HdrCallID))
	b.Header("CSeq", m.Get(sip.HdrCSeq))
	var cbuf [32]byte
	b.Header("Contact", appendContact(cbuf[:0], p.Port.Addr()))
	b.HeaderString("Expires", "0")
	b.HeaderString("User-Agent", userAgent)
	return b.Body("", nil), dst
}

// Room for what the 200 and the NOTIFY write besides the headers they copy:
// start line, header names, Contact, Expires or Max-Forwards, User-Agent,
// Content-Type and Content-Length, with a margin.
const (
	okFixed     = 192
	notifyFixed = 320
)

// appendContact appends "<sip:addr>".
func appendContact(dst []byte, addr netip.AddrPort) []byte {
	return append(addr.AppendTo(append(dst, "<sip:"...)), '>')
}

// buildNotify builds the NOTIFY carrying url and says where it goes: the
// SUBSCRIBE's Contact, or its source when the Contact names no IPv4 host.
// tagged is the SUBSCRIBE's To with our tag.
func (s *Server) buildNotify(m *sip.Message, p Packet, branch string, tagged []byte, url string) ([]byte, netip.AddrPort) {
	local := p.Port.Addr()
	ruri, dst := notifyTarget(m, p.Src)

	// The SUBSCRIBE's Event, as the phone wrote it, with effective-by=0
	// (apply now) unless it says otherwise.
	event := bytes.TrimRight(m.Get(sip.HdrEvent), "; \t")
	var ebuf [256]byte
	if !containsFold(event, "effective-by") {
		event = append(append(ebuf[:0], event...), ";effective-by=0"...)
	}

	// The NOTIFY is kept for its retransmissions: one allocation of about
	// its size.
	size := notifyFixed + len(ruri) + len(branch) + len(tagged) + len(m.Get(sip.HdrFrom)) +
		len(m.Get(sip.HdrCallID)) + len(event) + len(url)
	var b sip.Builder
	b.Reset(make([]byte, 0, size))
	b.RequestLine("NOTIFY", ruri)
	var vbuf [128]byte
	via := append(local.AppendTo(append(vbuf[:0], "SIP/2.0/UDP "...)), ";branch="...)
	b.Header("Via", append(append(via, branch...), ";rport"...))
	b.HeaderString("Max-Forwards", "70")
	b.Header("From", tagged)
	b.Header("To", m.Get(sip.HdrFrom))
	b.Header("Call-ID", m.Get(sip.HdrCallID))
	b.HeaderString("CSeq", "1 NOTIFY")
	var cbuf [32]byte
	b.Header("Contact", appendContact(cbuf[:0], local))
	b.Header("Event", event)
	b.HeaderString("Subscription-State", "terminated;reason=timeout")
	b.HeaderString("User-Agent", userAgent)
	return b.Body("application/url", []byte(url)), dst
}

// containsFold reports whether b contains the lower-case ASCII word w,
// ignoring case.
func containsFold(b []byte, w string) bool {
	for i := 0; i+len(w) <= len(b); i++ {
		if bytes.EqualFold(b[i:i+len(w)], []byte(w)) {
			return true
		}
	}
	return false
}

// notifyTarget returns the NOTIFY's Request-URI, the SUBSCRIBE's first
// Contact URI, and its destination: the source address of the SUBSCRIBE at
// the Contact's port (default 5060). The NOTIFY never goes to another host
// named inside the packet: that would let one forged SUBSCRIBE aim a train of
// retransmitted NOTIFYs (and the URL's credentials) at any address. Without
// a usable Contact it goes back to the source address and port.
func notifyTarget(m *sip.Message, src netip.AddrPort) ([]byte, netip.AddrPort) {
	var contact []byte
	sip.SplitComma(m.Get(sip.HdrContact), func(e []byte) bool {
		contact = e
		return false
	})
	if a, err := sip.ParseAddr(contact); err == nil {
		if u, err := sip.ParseURI(a.URI); err == nil {
			port := u.Port
			if port == 0 {
				port = 5060
			}
			return a.URI, netip.AddrPortFrom(src.Addr(), uint16(port))
		}
	}
	return []byte("sip:" + src.String()), src
}
