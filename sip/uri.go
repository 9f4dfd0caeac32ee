package sip

// URI is a parsed SIP or SIPS URI (RFC 3261 19.1.1). All fields alias the input.
type URI struct {
	Scheme   []byte // "sip" or "sips", as on the wire (compare case-insensitively)
	User     []byte // raw, still %-escaped; nil if there is no userinfo
	Password []byte // after the first ':' of the userinfo ("MAC:001122334455" puts the MAC here); nil if none
	Host     []byte // hostname, IPv4 address or [IPv6] reference (brackets kept)
	Port     int    // 0 when absent
	Params   Params // URI parameters, from the first ';' up to '?'
	Headers  []byte // raw URI headers after '?', without the '?'; nil if none
}

// ParseURI parses a sip: or sips: URI such as "sip:MAC%3a00135E874B49@intern.snom.de"
// or "sip:192.168.1.2:5080;transport=udp". Other schemes are refused. Escapes are
// checked (%HH) but not decoded.
func ParseURI(b []byte) (URI, error) {
	var u URI
	i := 0
	if i >= len(b) || !isAlpha(b[i]) {
		return URI{}, perr(i, "URI scheme")
	}
	for i < len(b) && charClass[b[i]]&cScheme != 0 {
		i++
	}
	if i >= len(b) || b[i] != ':' || !eqFold(b[:i], "sip") && !eqFold(b[:i], "sips") {
		return URI{}, perr(i, "URI scheme")
	}
	u.Scheme = b[:i]
	i++
	// The first '@' ends the userinfo: '@' may not appear unescaped in a host,
	// parameters or headers.
	if at := indexByte(b[i:], '@'); at >= 0 {
		ui := b[i : i+at]
		user := ui
		if c := indexByte(ui, ':'); c >= 0 {
			user = ui[:c]
			u.Password = ui[c+1:]
			if j := checkEscaped(u.Password, cPass); j >= 0 {
				return URI{}, perr(i+c+1+j, "URI password")
			}
		}
		if len(user) == 0 {
			return URI{}, perr(i, "URI user")
		}
		if j := checkEscaped(user, cUser); j >= 0 {
			return URI{}, perr(i+j, "URI user")
		}
		u.User = user
		i += at + 1
	}
	end, ok := scanHost(b, i)
	if !ok {
		return URI{}, perr(end, "URI host")
	}
	u.Host = b[i:end]
	i = end
	if i < len(b) && b[i] == ':' {
		port, end, ok := parsePort(b, i+1)
		if !ok {
			return URI{}, perr(end, "URI port")
		}
		u.Port = port
		i = end
	}
	if i < len(b) && b[i] == ';' {
		end := i + indexByte(b[i:], '?')
		if end < i {
			end = len(b)
		}
		p := b[i:end]
		// URI parameters have no white space and no quotes.
		for j, c := range p {
			if isWS(c) || c == '"' {
				return URI{}, perr(i+j, "URI parameter")
			}
		}
		if err := checkParams(p, i); err != nil {
			return URI{}, err
		}
		u.Params = Params(p)
		i = end
	}
	if i < len(b) && b[i] == '?' {
		h := b[i+1:]
		for j, c := range h {
			if c <= ' ' || c >= 0x7f || c == '<' || c == '>' || c == '"' {
				return URI{}, perr(i+1+j, "URI headers")
			}
		}
		u.Headers = h
		i = len(b)
	}
	if i != len(b) {
		return URI{}, perr(i, "URI")
	}
	return u, nil
}

// checkEscaped checks that every byte of s is in class or is a %HH escape, and
// returns the index of the first bad byte, or -1.
func checkEscaped(s []byte, class uint8) int {
	for j := 0; j < len(s); j++ {
		c := s[j]
		if charClass[c]&class != 0 {
			continue
		}
		if c == '%' && j+2 < len(s) && isHex(s[j+1]) && isHex(s[j+2]) {
			j += 2
			continue
		}
		return j
	}
	return -1
}

// scanHost scans a hostname, IPv4 address or bracketed IPv6 reference at b[i] and
// returns the index after it. ok is false when there is none.
func scanHost(b []byte, i int) (end int, ok bool) {
	if i < len(b) && b[i] == '[' {
		j := i + 1
		for j < len(b) && charClass[b[j]]&cIPv6 != 0 {
			j++
		}
		if j == i+1 || j >= len(b) || b[j] != ']' {
			return j, false
		}
		return j + 1, true
	}
	j := i
	for j < len(b) && charClass[b[j]]&cHost != 0 {
		j++
	}
	return j, j > i
}

// indexByte is bytes.IndexByte without the import.
func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
