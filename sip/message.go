package sip

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
)

// Limits on what Parse accepts. The multicast port is open to anyone on the link, so
// the parser refuses anything larger instead of growing.
const (
	// MaxMessageSize is the largest datagram Parse accepts, in bytes; a larger one is
	// refused with ErrTooLarge.
	MaxMessageSize = 8192
	// MaxHeaders is the largest number of header lines (after unfolding) Parse
	// accepts; one more is refused with ErrTooManyHeaders. A header line holding
	// several comma-separated values counts once.
	MaxHeaders = 64
)

// Errors returned by this package.
var (
	// ErrTooLarge: the datagram is longer than MaxMessageSize.
	ErrTooLarge = errors.New("sip: message too large")
	// ErrTooManyHeaders: the message has more than MaxHeaders header lines.
	ErrTooManyHeaders = errors.New("sip: too many headers")
	// ErrMalformed: the input breaks the syntax; every *ParseError unwraps to it.
	ErrMalformed = errors.New("sip: malformed message")
	// ErrNoHeader: a header that was asked for (the Via of TopVia) is absent.
	ErrNoHeader = errors.New("sip: header not present")
)

// ParseError reports where and in which element parsing stopped. It never holds
// bytes of the packet, so it is safe to log. It unwraps to ErrMalformed.
type ParseError struct {
	Offset int    // byte offset in the input given to the parse function
	What   string // the element being parsed, e.g. "start line", "header name", "Content-Length"
}

// Error returns e.g. "sip: malformed start line at byte 12".
func (e *ParseError) Error() string {
	return "sip: malformed " + e.What + " at byte " + strconv.Itoa(e.Offset)
}

// Unwrap returns ErrMalformed.
func (e *ParseError) Unwrap() error { return ErrMalformed }

func perr(off int, what string) error { return &ParseError{Offset: off, What: what} }

// Header is one header line of a Message.
type Header struct {
	ID    HeaderID // HdrOther for headers without an ID
	Name  []byte   // as on the wire, e.g. "v" or "VIA"
	Value []byte   // SP/HTAB trimmed at both ends; folded lines already joined by spaces
}

// Message is a parsed SIP request or response.
//
// All []byte fields alias the buffer given to Parse, which Parse modifies in place to
// unfold folded header lines (the CR LF before a continuation line becomes two
// spaces), even when it then fails. The caller must not modify or reuse that buffer
// while the Message is in use.
//
// Headers is backed by an array inside the Message, so a copy of a Message shares
// its headers with the original until the original is parsed again; use a
// *Message and do not copy it.
type Message struct {
	Method     []byte   // request: the method token; nil for a response
	RequestURI []byte   // request only: the Request-URI as on the wire
	StatusCode int      // response only: 100..699
	Reason     []byte   // response only: the reason phrase, may be empty
	Headers    []Header // in wire order
	Body       []byte   // exactly Content-Length bytes; without Content-Length, the rest of the datagram

	hdrs [MaxHeaders]Header // storage for Headers
}

// Parse parses one datagram into a new Message. It allocates only the Message.
// See (*Message).Parse for what is checked and how b is used.
func Parse(b []byte) (*Message, error) {
	m := new(Message)
	if err := m.Parse(b); err != nil {
		return nil, err
	}
	return m, nil
}

// Parse parses one datagram into m, replacing its contents, without allocating.
//
// It checks the framing only: the start line (request "METHOD SP Request-URI SP
// SIP/2.0" or status "SIP/2.0 SP code SP reason", any run of SP/HTAB between the
// parts; the method is a token, the Request-URI any "scheme:..." without white
// space, the code 100..699), the header lines ("name *WSP : value", long, compact and unknown names,
// folded continuation lines, CRLF or bare LF line ends), the blank line, and
// Content-Length: the body is exactly that many bytes, bytes after it are ignored,
// and a Content-Length larger than what is left is malformed. Header values are left
// as bytes; parse them on demand with TopVia, ParseAddr, ParseURI, ParseEvent,
// ParseCSeq and Params. Empty lines before the start line are skipped.
//
// Errors: ErrTooLarge for more than MaxMessageSize bytes, ErrTooManyHeaders for
// more than MaxHeaders header lines, a *ParseError (ErrMalformed) for anything
// else. On error m holds no message.
func (m *Message) Parse(b []byte) error {
	used := min(len(m.Headers), MaxHeaders)
	m.Method, m.RequestURI, m.StatusCode, m.Reason, m.Body = nil, nil, 0, nil, nil
	m.Headers = m.hdrs[:0]
	err := m.parse(b)
	if err != nil {
		m.Method, m.RequestURI, m.StatusCode, m.Reason, m.Body = nil, nil, 0, nil, nil
		m.Headers = m.hdrs[:0]
	}
	// Drop references to a previous buffer from entries no longer in use.
	if n := len(m.Headers); used > n {
		clear(m.hdrs[n:used])
	}
	return err
}

func (m *Message) parse(b []byte) error {
	if len(b) > MaxMessageSize {
		return ErrTooLarge
	}
	i := 0
	for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
		i++
	}
	if i == len(b) {
		return perr(i, "start line")
	}
	end, next, err := scanLine(b, i)
	if err != nil {
		return err
	}
	if err := m.parseStartLine(b, i, end); err != nil {
		return err
	}
	i = next

	contentLength := -1
headers:
	for {
		if i >= len(b) {
			return perr(i, "end of headers")
		}
		switch b[i] {
		case '\n':
			i++
			break headers
		case '\r':
			if i+1 < len(b) && b[i+1] == '\n' {
				i += 2
				break headers
			}
			return perr(i, "end of headers")
		case ' ', '\t':
			// A continuation line with no header before it.
			return perr(i, "header name")
		}
		if len(m.Headers) == MaxHeaders {
			return ErrTooManyHeaders
		}
		ns := i
		i = scanToken(b, i)
		if i == ns {
			return perr(i, "header name")
		}
		name := b[ns:i]
		i = skipWS(b, i)
		if i >= len(b) || b[i] != ':' {
			return perr(i, "header name")
		}
		i++
		vs := i
		for {
			end, next, err := scanLine(b, i)
			if err != nil {
				return err
			}
			i = next
			if next < len(b) && isWS(b[next]) {
				// Folded: the line break becomes spaces and the value goes on.
				for k := end; k < next; k++ {
					b[k] = ' '
				}
				continue
			}
			value := trimWS(b[vs:end])
			id := lookupID(name)
			if id == HdrContentLength {
				n, ok := parseContentLength(value)
				if !ok || contentLength >= 0 && n != contentLength {
					return perr(vs, "Content-Length")
				}
				contentLength = n
			}
			m.Headers = append(m.Headers, Header{ID: id, Name: name, Value: value})
			break
		}
	}
	rest := b[i:]
	if contentLength >= 0 {
		if contentLength > len(rest) {
			return perr(i, "Content-Length")
		}
		rest = rest[:contentLength]
	}
	m.Body = rest
	return nil
}

// scanLine finds the end of the line that starts at b[i]: end is the index of its CR
// LF or LF, next the index of the following line. A control character other than
// HTAB, a CR not followed by LF, or a missing line end is an error.
func scanLine(b []byte, i int) (end, next int, err error) {
	nl := bytes.IndexByte(b[i:], '\n')
	if nl < 0 {
		if j := findCtl(b, i, len(b)); j >= 0 {
			return 0, 0, perr(j, "control character")
		}
		return 0, 0, perr(len(b), "line end")
	}
	next = i + nl + 1
	end = next - 1
	if end > i && b[end-1] == '\r' {
		end--
	}
	if j := findCtl(b, i, end); j >= 0 {
		return 0, 0, perr(j, "control character")
	}
	return end, next, nil
}

// findCtl returns the index of the first control byte (CTL other than HTAB, or
// DEL) in b[i:end], or -1. It tests eight bytes at a time: a word with no byte below
// 0x20 and none equal to 0x7f is skipped whole, any other word is looked at byte by
// byte (so an HTAB costs one slow word).
func findCtl(b []byte, i, end int) int {
	const (
		ones = 0x0101010101010101
		high = 0x8080808080808080
	)
	for ; i+8 <= end; i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		del := x ^ 0x7f*ones
		// (x - n*ones) &^ x & high is non-zero exactly when some byte of x is below
		// n (n <= 0x80); with n = 1 on x^0x7f.. it finds a byte equal to 0x7f.
		if ((x-0x20*ones)&^x|(del-ones)&^del)&high == 0 {
			continue
		}
		for j := i; j < i+8; j++ {
			if charClass[b[j]]&cCtl != 0 {
				return j
			}
		}
	}
	for ; i < end; i++ {
		if charClass[b[i]]&cCtl != 0 {
			return i
		}
	}
	return -1
}

const sipVersion = "SIP/2.0"

// parseStartLine parses b[i:end], a request line or a status line.
func (m *Message) parseStartLine(b []byte, i, end int) error {
	line := b[:end] // indices stay relative to b for error offsets
	if end-i >= 4 && eqFold(line[i:i+4], "SIP/") {
		// Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
		if end-i < len(sipVersion) || !eqFold(line[i:i+len(sipVersion)], sipVersion) {
			return perr(i, "SIP version")
		}
		i += len(sipVersion)
		j := skipWS(line, i)
		if j == i {
			return perr(j, "status line")
		}
		i = j
		if end-i < 3 || !isDigit(line[i]) || !isDigit(line[i+1]) || !isDigit(line[i+2]) {
			return perr(i, "status code")
		}
		code := int(line[i]-'0')*100 + int(line[i+1]-'0')*10 + int(line[i+2]-'0')
		if code < 100 || code > 699 {
			return perr(i, "status code")
		}
		i += 3
		if i < end && !isWS(line[i]) {
			return perr(i, "status code")
		}
		m.StatusCode = code
		m.Reason = trimWS(line[i:end])
		return nil
	}
	// Request-Line = Method SP Request-URI SP SIP-Version
	s := i
	i = scanToken(line, i)
	if i == s {
		return perr(i, "method")
	}
	method := line[s:i]
	j := skipWS(line, i)
	if j == i {
		if i < end {
			return perr(i, "method") // a byte that is neither token nor white space
		}
		return perr(j, "request line")
	}
	s = j
	for j < end && !isWS(line[j]) {
		j++
	}
	uri := line[s:j]
	if !hasScheme(uri) {
		return perr(s, "Request-URI")
	}
	i = skipWS(line, j)
	if i == j {
		return perr(i, "request line")
	}
	if !eqFold(trimRightWS(line[i:end]), sipVersion) {
		return perr(i, "SIP version")
	}
	m.Method, m.RequestURI = method, uri
	return nil
}

// parseContentLength parses a Content-Length value: 1*DIGIT, at most MaxMessageSize.
func parseContentLength(v []byte) (int, bool) {
	if len(v) == 0 {
		return 0, false
	}
	n := 0
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int(c-'0')
		if n > MaxMessageSize {
			return 0, false
		}
	}
	return n, true
}

// IsRequest reports whether m is a request (it has a method).
func (m *Message) IsRequest() bool { return m.Method != nil }

// Get returns the value of the first header with the given ID, or nil if there is
// none. A header that is present with an empty value gives a non-nil empty slice.
// Get(HdrOther) returns the first header without an ID; use GetName for those.
func (m *Message) Get(id HeaderID) []byte {
	for i := range m.Headers {
		if m.Headers[i].ID == id {
			return m.Headers[i].Value
		}
	}
	return nil
}

// GetName returns the value of the first header called name, or nil if there is
// none. Names compare case-insensitively, and a compact form matches its long form
// ("v" finds "Via" and "Via" finds "v"), also for compact forms without a HeaderID
// such as "r" (Refer-To).
func (m *Message) GetName(name string) []byte {
	if id := lookupID(name); id != HdrOther {
		return m.Get(id)
	}
	alias := compactAlias(name)
	for i := range m.Headers {
		h := &m.Headers[i]
		if h.ID == HdrOther && (eqFold(h.Name, name) || alias != "" && eqFold(h.Name, alias)) {
			return h.Value
		}
	}
	return nil
}

// Count returns the number of header lines with the given ID.
func (m *Message) Count(id HeaderID) int {
	n := 0
	for i := range m.Headers {
		if m.Headers[i].ID == id {
			n++
		}
	}
	return n
}

// TopVia parses the first element of the first Via header. It returns ErrNoHeader
// when there is no Via header.
func (m *Message) TopVia() (Via, error) {
	v := m.Get(HdrVia)
	if v == nil {
		return Via{}, ErrNoHeader
	}
	elem, _ := nextElem(v, 0)
	return ParseVia(elem)
}
