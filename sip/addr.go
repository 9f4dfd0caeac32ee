package sip

// Addr is a name-addr ("Display" <URI>;params) or an addr-spec (URI;params) with its
// header parameters, as in From, To and Contact. All fields alias the input.
type Addr struct {
	Display []byte // display name without its quotes (escapes left as they are); nil if none
	URI     []byte // inside <...>, or the bare addr-spec
	Params  Params // header parameters after '>' (or after the bare URI): ";tag=..."
}

// ParseAddr parses one From, To or Contact value (one element: split a Contact list
// with SplitComma first). The URI is only checked for a scheme and the absence of
// white space and control characters; parse it with ParseURI. In the addr-spec
// form the URI ends at the first ';' (RFC 3261 20.10: what follows are header
// parameters).
func ParseAddr(b []byte) (Addr, error) {
	var a Addr
	i := skipWS(b, 0)
	if i < len(b) && b[i] == '"' {
		end, ok := scanQuoted(b, i)
		if !ok {
			return Addr{}, perr(i, "display name")
		}
		a.Display = b[i+1 : end-1]
		i = skipWS(b, end)
		if i >= len(b) || b[i] != '<' {
			return Addr{}, perr(i, "name-addr")
		}
	} else if lt := indexByte(b[i:], '<'); lt >= 0 {
		d := trimRightWS(b[i : i+lt])
		for j, c := range d {
			if !isToken(c) && !isWS(c) && c < 0x80 {
				return Addr{}, perr(i+j, "display name")
			}
		}
		if len(d) > 0 {
			a.Display = d
		}
		i += lt
	}
	if i < len(b) && b[i] == '<' {
		gt := indexByte(b[i+1:], '>')
		if gt < 0 {
			return Addr{}, perr(i, "name-addr")
		}
		a.URI = b[i+1 : i+1+gt]
		if j := checkAddrURI(a.URI); j >= 0 {
			return Addr{}, perr(i+1+j, "URI")
		}
		i += gt + 2
	} else {
		s := i
		for i < len(b) && b[i] != ';' && b[i] != ',' && b[i] > ' ' && b[i] != 0x7f {
			i++
		}
		a.URI = b[s:i]
		if j := checkAddrURI(a.URI); j >= 0 {
			return Addr{}, perr(s+j, "URI")
		}
	}
	rest := trimRightWS(b[i:])
	if err := checkParams(rest, i); err != nil {
		return Addr{}, err
	}
	if len(rest) > 0 {
		a.Params = Params(rest)
	}
	return a, nil
}

// schemeEnd returns the index after the "scheme:" that u starts with, or -1 when u
// does not start with a scheme, a ':' and at least one more byte.
func schemeEnd(u []byte) int {
	if len(u) == 0 || !isAlpha(u[0]) {
		return -1
	}
	i := 1
	for i < len(u) && charClass[u[i]]&cScheme != 0 {
		i++
	}
	if i+1 >= len(u) || u[i] != ':' {
		return -1
	}
	return i + 1
}

// hasScheme reports whether u starts with "scheme:" followed by something.
func hasScheme(u []byte) bool { return schemeEnd(u) >= 0 }

// checkAddrURI checks that u starts with a scheme and ':' and has no white space,
// control characters, quotes or angle brackets. It returns the index of the first
// bad byte, or -1.
func checkAddrURI(u []byte) int {
	i := schemeEnd(u)
	if i < 0 {
		return 0
	}
	for ; i < len(u); i++ {
		if c := u[i]; c <= ' ' || c == 0x7f || c == '"' || c == '<' || c == '>' {
			return i
		}
	}
	return -1
}

// Tag returns the tag parameter, or nil if there is none.
func (a Addr) Tag() []byte {
	t, _ := a.Params.Get("tag")
	return t
}
