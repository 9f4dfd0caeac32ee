package simulate

import (
	"bytes"
	"strings"
)

// maxRawHeaders bounds how many header lines rawMessage keeps.
const maxRawHeaders = 100

// rawMessage is a datagram split into lines, headers unfolded, as written: the
// 200 to a NOTIFY copies Via, From, To, Call-ID and CSeq from it verbatim
// (gosip keeps only the last of repeated headers and rewrites Via on output).
type rawMessage struct {
	start   string
	headers []rawHeader
	body    []byte
}

type rawHeader struct {
	name  string // canonical long form for the compact names (v -> Via)
	value string // trimmed, continuation lines joined with one space
}

var compactNames = map[string]string{
	"v": "Via", "f": "From", "t": "To", "i": "Call-ID", "m": "Contact",
	"l": "Content-Length", "c": "Content-Type", "o": "Event", "k": "Supported",
	"u": "Allow-Events", "s": "Subject", "e": "Content-Encoding",
}

// parseRaw splits b at the first empty line; it accepts CRLF or bare LF.
func parseRaw(b []byte) rawMessage {
	var m rawMessage
	head := b
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		head, m.body = b[:i], b[i+4:]
	} else if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
		head, m.body = b[:i], b[i+2:]
	}
	lines := strings.Split(strings.ReplaceAll(string(head), "\r\n", "\n"), "\n")
	m.start = strings.TrimSpace(lines[0])
	for _, l := range lines[1:] {
		if l == "" {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && len(m.headers) > 0 {
			h := &m.headers[len(m.headers)-1]
			h.value += " " + strings.TrimSpace(l)
			continue
		}
		if len(m.headers) == maxRawHeaders {
			break
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		if long, ok := compactNames[strings.ToLower(name)]; ok {
			name = long
		}
		m.headers = append(m.headers, rawHeader{name: name, value: strings.TrimSpace(value)})
	}
	return m
}

// get returns the first value of the named header (long name,
// case-insensitive) and whether it is present.
func (m rawMessage) get(name string) (string, bool) {
	for _, h := range m.headers {
		if strings.EqualFold(h.name, name) {
			return h.value, true
		}
	}
	return "", false
}

// all returns every value of the named header, in order.
func (m rawMessage) all(name string) []string {
	var out []string
	for _, h := range m.headers {
		if strings.EqualFold(h.name, name) {
			out = append(out, h.value)
		}
	}
	return out
}
