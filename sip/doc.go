// Package sip implements the small part of SIP (RFC 3261) that SIP Plug-and-Play
// provisioning (RFC 6080, event package ua-profile) needs: a zero-copy parser for
// one UDP datagram holding a request or a response, parsers for the header values
// PnP reads (Via, From/To/Contact addresses, SIP URIs, Event, CSeq, parameter lists),
// and a Builder that writes the 200 OK and the NOTIFY.
//
// Parsing a SUBSCRIBE and picking out what a PnP responder needs:
//
//	var m sip.Message // reuse it: (*Message).Parse does not allocate
//	if err := m.Parse(pkt); err != nil {
//		return err // ErrMalformed (a *ParseError), ErrTooLarge or ErrTooManyHeaders
//	}
//	if !m.IsRequest() || string(m.Method) != "SUBSCRIBE" {
//		return nil
//	}
//	via, err := m.TopVia() // via.Host, via.Port, via.Branch(), via.Params
//	...
//	from, err := sip.ParseAddr(m.Get(sip.HdrFrom)) // from.URI, from.Tag()
//	...
//	pkg, params, err := sip.ParseEvent(m.Get(sip.HdrEvent))
//	...
//	vendor, _ := params.Get("vendor") // quotes stripped
//
// Building the NOTIFY into a reused buffer:
//
//	var b sip.Builder
//	b.Reset(buf)
//	b.RequestLine("NOTIFY", contactURI)
//	b.Header("Via", via)
//	b.HeaderCSeq(1, "NOTIFY")
//	b.HeaderString("Subscription-State", "terminated;reason=timeout")
//	out := b.Body("application/url", []byte("http://prov.example.com/"))
//
// # Ownership
//
// Everything a parse function returns aliases its input; nothing is copied.
// (*Message).Parse also writes into its input: it replaces the line break before
// a folded continuation line with spaces. Keep the datagram buffer untouched while
// the Message or anything taken from it is in use.
//
// # Limits
//
// The multicast port is open to anyone on the link, so the parser is strict about
// size and never panics on any input:
//   - a datagram longer than MaxMessageSize (8192) bytes is refused with ErrTooLarge;
//   - more than MaxHeaders (64) header lines (after unfolding) are refused with
//     ErrTooManyHeaders;
//   - everything else that is wrong is a *ParseError, which gives the byte offset
//     and the element but never packet bytes, and unwraps to ErrMalformed.
//
// Parse checks the framing: start line (SIP/2.0 only; the method must be a token,
// the Request-URI must start with a scheme),
// header line syntax (control bytes other than HTAB are refused, names are tokens),
// the blank line, and Content-Length (digits only; more than is present is
// malformed; bytes after the body are ignored, as a datagram holds one message).
// Header values are parsed only when asked for, by TopVia and the Parse functions.
// Compact header forms (v f t i m l c o k s e u, RFC 3261 7.3.3) are recognised,
// header names are case-insensitive, and bare LF line ends are accepted.
//
// Not supported: SIP over TCP framing, multipart bodies, non-SIP URI schemes in
// ParseURI, decoding of %-escapes and quoted-pair escapes (values are returned raw).
package sip
