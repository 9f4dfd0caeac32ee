package sip

import "strconv"

// Via is one parsed via-parm: "SIP/2.0/UDP 192.168.1.89:60000;branch=z9hG4bK1;rport".
// All fields alias the input.
type Via struct {
	Transport []byte // "UDP", as on the wire
	Host      []byte // IPv4 address, hostname or [IPv6] reference (brackets kept)
	Port      int    // 0 when absent
	Params    Params // from the first ';' on: branch, rport, received, maddr, ttl ...
}

// ParseVia parses one via-parm (one element of a Via header: split the header with
// SplitComma first, or use (*Message).TopVia). White space is allowed around the
// '/' of the protocol, around the ':' of sent-by and around the parameters; the
// protocol name and version are checked to be tokens but not compared to SIP/2.0.
func ParseVia(b []byte) (Via, error) {
	var v Via
	i := skipWS(b, 0)
	// sent-protocol = protocol-name SLASH protocol-version SLASH transport
	for k := 0; k < 3; k++ {
		s := i
		i = scanToken(b, i)
		if i == s {
			return Via{}, perr(i, "Via protocol")
		}
		if k == 2 {
			v.Transport = b[s:i]
			break
		}
		i = skipWS(b, i)
		if i >= len(b) || b[i] != '/' {
			return Via{}, perr(i, "Via protocol")
		}
		i = skipWS(b, i+1)
	}
	j := skipWS(b, i)
	if j == i {
		return Via{}, perr(j, "Via")
	}
	end, ok := scanHost(b, j)
	if !ok {
		return Via{}, perr(end, "Via host")
	}
	v.Host = b[j:end]
	i = end
	if j := skipWS(b, i); j < len(b) && b[j] == ':' {
		port, end, ok := parsePort(b, skipWS(b, j+1))
		if !ok {
			return Via{}, perr(end, "Via port")
		}
		v.Port = port
		i = end
	}
	rest := trimRightWS(b[i:])
	if err := checkParams(rest, i); err != nil {
		return Via{}, err
	}
	if len(rest) > 0 {
		v.Params = Params(rest)
	}
	return v, nil
}

// Branch returns the branch parameter, or nil if there is none.
func (v Via) Branch() []byte {
	b, _ := v.Params.Get("branch")
	return b
}

// AppendViaReceived appends the via-parm v to dst with the RFC 3581 / RFC 3261
// 18.2.1 parameters of a server filled in, and returns the extended slice:
//   - if v has an rport parameter and rport > 0, it becomes "rport=<rport>" (an
//     existing value is replaced); without rport in v none is added;
//   - if addReceived is true, "received=<ip>" replaces an existing received value,
//     or is appended at the end.
//
// Other parameters keep their order and spelling. ip is written as given (RFC 3261
// wants an IPv6 address without brackets here). RFC 3581 section 4 wants received
// whenever rport is filled in, so callers that fill rport should pass addReceived =
// true. A v that ParseVia refuses is appended unchanged.
func AppendViaReceived[S ~string | ~[]byte](dst []byte, v []byte, ip S, rport int, addReceived bool) []byte {
	v = trimWS(v)
	via, err := ParseVia(v)
	if err != nil {
		return append(dst, v...)
	}
	p := via.Params
	dst = append(dst, trimRightWS(v[:len(v)-len(p)])...)
	hadReceived := false
	for i := 0; ; {
		name, _, next, res := nextParam(p, i)
		if res != paramOK {
			break
		}
		switch {
		case rport > 0 && eqFold(name, "rport"):
			dst = append(dst, ";rport="...)
			dst = strconv.AppendInt(dst, int64(rport), 10)
		case addReceived && eqFold(name, "received"):
			hadReceived = true
			dst = append(dst, ";received="...)
			dst = appendField(dst, ip)
		default:
			dst = append(dst, trimWS(p[i:next])...)
		}
		i = next
	}
	if addReceived && !hadReceived {
		dst = append(dst, ";received="...)
		dst = appendField(dst, ip)
	}
	return dst
}
