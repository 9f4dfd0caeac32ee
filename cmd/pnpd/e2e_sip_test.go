package main

// SIP on the wire for the integration tests. What pnpd sends is read with
// github.com/jart/gosip, the reference parser of the tests (package sip is
// the code under test), plus checks on the raw bytes where gosip is lenient
// or lossy. What the tests send is written out as text.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/jart/gosip/sip"
)

// The datagrams the tests send, with LF line ends (a raw string cannot hold
// a CR): sipText makes them CRLF.
const (
	// subscribeTemplate is a Yealink-shaped PnP SUBSCRIBE as in
	// docs/pnp-protocol.md: %[1]s the MAC, %[2]s the phone's address:port,
	// %[3]s the Call-ID, %[4]s the Via branch, %[5]s the Event value.
	subscribeTemplate = `SUBSCRIBE sip:MAC%[1]s@224.0.1.75 SIP/2.0
Via: SIP/2.0/UDP %[2]s;branch=%[4]s
From: <sip:MAC%[1]s@224.0.1.75>;tag=1581287404
To: <sip:MAC%[1]s@224.0.1.75>
Call-ID: %[3]s
CSeq: 1 SUBSCRIBE
Contact: <sip:MAC%[1]s@%[2]s>
Accept: application/url
Max-Forwards: 70
User-Agent: Yealink SIP-T21P 34.72.0.1
Expires: 0
Event: %[5]s
Content-Length: 0

`
	// optionsTemplate is an OPTIONS to the PnP group: %[1]s the sender's
	// address:port, %[2]s its address.
	optionsTemplate = `OPTIONS sip:224.0.1.75 SIP/2.0
Via: SIP/2.0/UDP %[1]s;branch=z9hG4bKopt1
From: <sip:probe@%[2]s>;tag=o1
To: <sip:224.0.1.75>
Call-ID: options-1@%[2]s
CSeq: 1 OPTIONS
Contact: <sip:probe@%[1]s>
Max-Forwards: 70
Content-Length: 0

`
	// okTemplate is a 200 OK to a request whose Via, From, To, Call-ID
	// and CSeq values, as written, fill it in that order.
	okTemplate = `SIP/2.0 200 OK
Via: %s
From: %s
To: %s
Call-ID: %s
CSeq: %s
Content-Length: 0

`
)

// sipText fills template and makes its line ends CRLF.
func sipText(template string, args ...any) []byte {
	return []byte(fmt.Sprintf(strings.ReplaceAll(template, "\n", "\r\n"), args...))
}

// okFor returns the 200 OK answering the request b.
func okFor(b []byte) []byte {
	return sipText(okTemplate, rawHeader(b, "Via"), rawHeader(b, "From"), rawHeader(b, "To"),
		rawHeader(b, "Call-ID"), rawHeader(b, "CSeq"))
}

// parseSIP reads b with gosip after checking, on the raw bytes, the framing
// pnpd must produce and gosip does not insist on: CRLF line ends, the blank
// line, and a Content-Length that matches the body (gosip checks only a
// non-zero one, and none if the header is missing).
func parseSIP(b []byte) (msg *sip.Msg, err error) {
	head, body, ok := strings.Cut(string(b), "\r\n\r\n")
	if !ok {
		return nil, errors.New("no CRLF CRLF after the headers")
	}
	for _, line := range strings.Split(head, "\r\n") {
		if strings.ContainsAny(line, "\r\n") {
			return nil, fmt.Errorf("bare CR or LF in header line %q", line)
		}
	}
	cl := rawHeader(b, "Content-Length")
	if n, err := strconv.Atoi(cl); err != nil || n != len(body) {
		return nil, fmt.Errorf("Content-Length %q but body has %d bytes", cl, len(body))
	}
	defer func() {
		if p := recover(); p != nil {
			msg, err = nil, fmt.Errorf("gosip panicked: %v", p)
		}
	}()
	if msg, err = sip.ParseMsg(b); err != nil {
		return nil, err
	}
	if msg.VersionMajor != 2 || msg.VersionMinor != 0 {
		return nil, fmt.Errorf("SIP version %d.%d", msg.VersionMajor, msg.VersionMinor)
	}
	return msg, nil
}

// compactNames are the compact forms of the headers rawHeader looks up.
var compactNames = map[string]string{
	"via": "v", "from": "f", "to": "t", "call-id": "i", "content-type": "c", "content-length": "l",
}

// rawHeader returns the value of the first header of b named name (or its
// compact form), as written but trimmed and unfolded; "" if there is none.
func rawHeader(b []byte, name string) string {
	head, _, _ := strings.Cut(string(b), "\r\n\r\n")
	compact := compactNames[strings.ToLower(name)]
	var value string
	found := false
	for _, line := range strings.Split(head, "\r\n")[1:] {
		if found {
			if line == "" || (line[0] != ' ' && line[0] != '\t') {
				break
			}
			value += " " + strings.TrimSpace(line)
			continue
		}
		n, v, ok := strings.Cut(line, ":")
		n = strings.TrimSpace(n)
		if ok && (strings.EqualFold(n, name) || compact != "" && strings.EqualFold(n, compact)) {
			value, found = strings.TrimSpace(v), true
		}
	}
	return value
}

// startLine returns the first line of b, as written.
func startLine(b []byte) string {
	line, _, _ := strings.Cut(string(b), "\r\n")
	return line
}

// paramOf returns the value of the parameter name in ps, "" if absent.
func paramOf(ps *sip.Param, name string) string {
	if p := ps.Get(name); p != nil {
		return p.Value
	}
	return ""
}

// tagOf returns the tag of a From or To, "" if it or the header is missing.
func tagOf(a *sip.Addr) string {
	if a == nil {
		return ""
	}
	return paramOf(a.Param, "tag")
}

// xHeader returns the value of a header gosip has no field for.
func xHeader(m *sip.Msg, name string) string {
	if h := m.XHeader.Get(name); h != nil {
		return string(h.Value)
	}
	return ""
}

// bodyOf returns the body of m.
func bodyOf(m *sip.Msg) string {
	if m.Payload == nil {
		return ""
	}
	return string(m.Payload.Data())
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
// match accepts, or until timeout, and returns it both as received and as
// gosip read it; datagrams it skips are returned too.
func readSIP(c net.PacketConn, timeout time.Duration, match func(*sip.Msg) bool) (datagram, *sip.Msg, []datagram, error) {
	deadline := time.Now().Add(timeout)
	var skipped []datagram
	buf := make([]byte, 65536)
	for {
		if err := c.SetReadDeadline(deadline); err != nil {
			return datagram{}, nil, skipped, err
		}
		n, addr, err := c.ReadFrom(buf)
		if err != nil {
			return datagram{}, nil, skipped, err
		}
		// A copy: gosip's values for unknown headers point into it.
		d := datagram{from: addr.(*net.UDPAddr).AddrPort(), data: append([]byte(nil), buf[:n]...)}
		m, perr := parseSIP(d.data)
		if perr == nil && match(m) {
			return d, m, skipped, nil
		}
		skipped = append(skipped, d)
		if perr != nil {
			return datagram{}, nil, skipped, fmt.Errorf("datagram from %s is no valid SIP: %w\n%q", d.from, perr, d.data)
		}
	}
}
