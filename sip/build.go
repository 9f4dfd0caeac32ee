package sip

import "strconv"

// Builder writes a SIP message into a byte slice: a start line, header lines, then
// Body, which adds Content-Length and the body. Nothing is allocated while the
// slice has room. The zero value is usable (it starts from a nil slice); call Reset
// to reuse a buffer.
//
// The Builder does not check syntax: callers pass header names and values as they
// should appear. So that no field can end its line early, every control byte other
// than HTAB (CR and LF included) in a method, URI, reason, name or value is written
// as a space.
type Builder struct {
	buf []byte
}

// Reset starts a new message that is appended to dst[:0].
func (b *Builder) Reset(dst []byte) { b.buf = dst[:0] }

// RequestLine writes "METHOD SP uri SP SIP/2.0 CRLF".
func (b *Builder) RequestLine(method string, uri []byte) {
	b.buf = appendField(b.buf, method)
	b.buf = append(b.buf, ' ')
	b.buf = appendField(b.buf, uri)
	b.buf = append(b.buf, " SIP/2.0\r\n"...)
}

// StatusLine writes "SIP/2.0 SP code SP reason CRLF".
func (b *Builder) StatusLine(code int, reason string) {
	b.buf = append(b.buf, "SIP/2.0 "...)
	b.buf = strconv.AppendInt(b.buf, int64(code), 10)
	b.buf = append(b.buf, ' ')
	b.buf = appendField(b.buf, reason)
	b.buf = append(b.buf, "\r\n"...)
}

// Header writes "name: value CRLF". A Content-Length header (long or compact name)
// is dropped: Body writes the right one.
func (b *Builder) Header(name string, value []byte) {
	if isContentLength(name) {
		return
	}
	b.startHeader(name)
	b.buf = appendField(b.buf, value)
	b.buf = append(b.buf, "\r\n"...)
}

// HeaderString is Header with a string value.
func (b *Builder) HeaderString(name, value string) {
	if isContentLength(name) {
		return
	}
	b.startHeader(name)
	b.buf = appendField(b.buf, value)
	b.buf = append(b.buf, "\r\n"...)
}

// HeaderInt writes "name: v CRLF" with v in decimal, for Expires, Max-Forwards and
// the like. A Content-Length header is dropped, as in Header.
func (b *Builder) HeaderInt(name string, v int) {
	if isContentLength(name) {
		return
	}
	b.startHeader(name)
	b.buf = strconv.AppendInt(b.buf, int64(v), 10)
	b.buf = append(b.buf, "\r\n"...)
}

// HeaderCSeq writes "CSeq: seq method CRLF".
func (b *Builder) HeaderCSeq(seq uint32, method string) {
	b.buf = append(b.buf, "CSeq: "...)
	b.buf = strconv.AppendUint(b.buf, uint64(seq), 10)
	b.buf = append(b.buf, ' ')
	b.buf = appendField(b.buf, method)
	b.buf = append(b.buf, "\r\n"...)
}

// Body writes Content-Type (when contentType != ""), Content-Length, the blank line
// and the body, and returns the finished message. The result aliases the Builder's
// buffer: it stays valid until the next Reset with the same buffer.
func (b *Builder) Body(contentType string, body []byte) []byte {
	if contentType != "" {
		b.HeaderString("Content-Type", contentType)
	}
	b.buf = append(b.buf, "Content-Length: "...)
	b.buf = strconv.AppendInt(b.buf, int64(len(body)), 10)
	b.buf = append(b.buf, "\r\n\r\n"...)
	b.buf = append(b.buf, body...)
	return b.buf
}

func (b *Builder) startHeader(name string) {
	b.buf = appendField(b.buf, name)
	b.buf = append(b.buf, ": "...)
}

func isContentLength(name string) bool {
	return (len(name) == 1 || len(name) == len("Content-Length")) && lookupID(name) == HdrContentLength
}

// appendField appends s with every control byte but HTAB written as a space.
func appendField[T ~string | ~[]byte](dst []byte, s T) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		if charClass[s[i]]&cCtl != 0 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, ' ')
			start = i + 1
		}
	}
	return append(dst, s[start:]...)
}
