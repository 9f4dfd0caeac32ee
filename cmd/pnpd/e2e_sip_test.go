package main

// A deliberately small SIP reader and writer for the integration tests, kept
// apart from package sip so that the tests check pnpd's packets against an
// independent reading of RFC 3261.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// sipMsg is a parsed SIP message.
type sipMsg struct {
	start   string // request line or status line
	headers [][2]string
	body    string
}

// compactNames maps RFC 3261 compact header names to the long ones.
var compactNames = map[string]string{
	"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
	"l": "content-length", "c": "content-type", "o": "event", "k": "supported",
	"u": "allow-events", "s": "subject", "e": "content-encoding",
}

// parseSIPMsg parses one datagram; it is strict about the framing pnpd
// must produce: CRLF line ends, a blank line, and a Content-Length that
// matches the body.
func parseSIPMsg(b []byte) (*sipMsg, error) {
	s := string(b)
	head, body, ok := strings.Cut(s, "\r\n\r\n")
	if !ok {
		return nil, errors.New("no CRLF CRLF after the headers")
	}
	lines := strings.Split(head, "\r\n")
	m := &sipMsg{start: lines[0], body: body}
	if !strings.HasPrefix(m.start, "SIP/2.0 ") && !strings.HasSuffix(m.start, " SIP/2.0") {
		return nil, fmt.Errorf("start line %q", m.start)
	}
	for _, line := range lines[1:] {
		if strings.ContainsAny(line, "\r\n") {
			return nil, fmt.Errorf("bare CR or LF in header line %q", line)
		}
		if line != "" && (line[0] == ' ' || line[0] == '\t') && len(m.headers) > 0 {
			m.headers[len(m.headers)-1][1] += " " + strings.TrimSpace(line)
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("header line %q has no colon", line)
		}
		name = strings.ToLower(strings.TrimSpace(name))
		if long, ok := compactNames[name]; ok {
			name = long
		}
		m.headers = append(m.headers, [2]string{name, strings.TrimSpace(value)})
	}
	cl := m.get("content-length")
	if cl == "" {
		return nil, errors.New("no Content-Length (required over UDP by pnpd's own rules)")
	}
	n, err := strconv.Atoi(cl)
	if err != nil || n != len(m.body) {
		return nil, fmt.Errorf("Content-Length %q but body has %d bytes", cl, len(m.body))
	}
	return m, nil
}

// get returns the first value of the header named (long form, any case).
func (m *sipMsg) get(name string) string {
	name = strings.ToLower(name)
	for _, h := range m.headers {
		if h[0] == name {
			return h[1]
		}
	}
	return ""
}

// count returns how many header lines have the name.
func (m *sipMsg) count(name string) int {
	name = strings.ToLower(name)
	n := 0
	for _, h := range m.headers {
		if h[0] == name {
			n++
		}
	}
	return n
}

// isRequest reports whether m is a request with the method.
func (m *sipMsg) isRequest(method string) bool {
	return strings.HasPrefix(m.start, method+" ") && strings.HasSuffix(m.start, " SIP/2.0")
}

// status returns the status code of a response, 0 for a request.
func (m *sipMsg) status() int {
	rest, ok := strings.CutPrefix(m.start, "SIP/2.0 ")
	if !ok {
		return 0
	}
	code, _, _ := strings.Cut(rest, " ")
	n, _ := strconv.Atoi(code)
	return n
}

// requestURI returns the Request-URI of a request.
func (m *sipMsg) requestURI() string {
	f := strings.Fields(m.start)
	if len(f) != 3 {
		return ""
	}
	return f[1]
}

// param returns the value of ";name=value" in a header value ("" if absent).
func param(value, name string) string {
	// Parameters after the closing '>' of a name-addr, or after the
	// sent-by of a Via.
	if i := strings.LastIndexByte(value, '>'); i >= 0 {
		value = value[i+1:]
	}
	for _, p := range strings.Split(value, ";")[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(k, name) {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// uriOf returns the URI inside <...> of a name-addr, or the value before any
// ';' otherwise.
func uriOf(value string) string {
	if i := strings.IndexByte(value, '<'); i >= 0 {
		if j := strings.IndexByte(value[i:], '>'); j > 0 {
			return value[i+1 : i+j]
		}
	}
	v, _, _ := strings.Cut(value, ";")
	return strings.TrimSpace(v)
}

// viaSentBy returns the host:port of a Via value ("SIP/2.0/UDP h:p;...").
func viaSentBy(value string) string {
	f := strings.Fields(value)
	if len(f) < 2 {
		return ""
	}
	sb, _, _ := strings.Cut(f[1], ";")
	return sb
}

// yealinkSubscribe returns a Yealink-shaped PnP SUBSCRIBE from src with the
// given event header value, as in docs/pnp-protocol.md.
func yealinkSubscribe(mac string, src netip.AddrPort, callID, branch, event string) []byte {
	return []byte("SUBSCRIBE sip:MAC" + mac + "@224.0.1.75 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + src.String() + ";branch=" + branch + "\r\n" +
		"From: <sip:MAC" + mac + "@224.0.1.75>;tag=1581287404\r\n" +
		"To: <sip:MAC" + mac + "@224.0.1.75>\r\n" +
		"Call-ID: " + callID + "\r\n" +
		"CSeq: 1 SUBSCRIBE\r\n" +
		"Contact: <sip:MAC" + mac + "@" + src.String() + ">\r\n" +
		"Accept: application/url\r\n" +
		"Max-Forwards: 70\r\n" +
		"User-Agent: Yealink SIP-T21P 34.72.0.1\r\n" +
		"Expires: 0\r\n" +
		"Event: " + event + "\r\n" +
		"Content-Length: 0\r\n\r\n")
}

// okFor returns a 200 OK answering request m.
func okFor(m *sipMsg) []byte {
	var b strings.Builder
	b.WriteString("SIP/2.0 200 OK\r\n")
	for _, h := range m.headers {
		switch h[0] {
		case "via", "from", "to", "call-id", "cseq":
			b.WriteString(h[0] + ": " + h[1] + "\r\n")
		}
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return []byte(b.String())
}

// datagram is one received UDP payload with its source.
type datagram struct {
	from netip.AddrPort
	data []byte
}

// readAll reads datagrams from c until d has passed since the call (the read
// deadline ends it) and returns them. It is for asserting that nothing came.
func readAll(c net.PacketConn, d time.Duration) ([]datagram, error) {
	var out []datagram
	if err := c.SetReadDeadline(time.Now().Add(d)); err != nil {
		return nil, err
	}
	buf := make([]byte, 65536)
	for {
		n, addr, err := c.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return out, nil
			}
			return out, err
		}
		var from netip.AddrPort
		switch a := addr.(type) {
		case *net.UDPAddr:
			from = a.AddrPort()
		case *net.IPAddr:
			ip, _ := netip.AddrFromSlice(a.IP)
			from = netip.AddrPortFrom(ip.Unmap(), 0)
		}
		out = append(out, datagram{from: from, data: append([]byte(nil), buf[:n]...)})
	}
}

// readSIP reads datagrams from c until one parses as a SIP message that
// match accepts, or until timeout; datagrams it skips are returned too.
func readSIP(c net.PacketConn, timeout time.Duration, match func(*sipMsg) bool) (*sipMsg, netip.AddrPort, []datagram, error) {
	deadline := time.Now().Add(timeout)
	var skipped []datagram
	buf := make([]byte, 65536)
	for {
		if err := c.SetReadDeadline(deadline); err != nil {
			return nil, netip.AddrPort{}, skipped, err
		}
		n, addr, err := c.ReadFrom(buf)
		if err != nil {
			return nil, netip.AddrPort{}, skipped, err
		}
		from := addr.(*net.UDPAddr).AddrPort()
		m, perr := parseSIPMsg(buf[:n])
		if perr == nil && match(m) {
			return m, from, skipped, nil
		}
		skipped = append(skipped, datagram{from: from, data: append([]byte(nil), buf[:n]...)})
		if perr != nil {
			return nil, from, skipped, fmt.Errorf("datagram from %s is no valid SIP: %w\n%q", from, perr, buf[:n])
		}
	}
}
