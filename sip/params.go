package sip

// Params is a raw parameter list as on the wire, from the first ';' on (or empty):
// ";branch=z9hG4bK1;rport;received=1.2.3.4". Parameter names compare
// case-insensitively. SP/HTAB is allowed around ';' and '='. A value is a token-like
// run (IPv6 references and URI parameter characters allowed) or a quoted string.
//
// The methods stop at the first syntax error, so on a Params that did not come
// from one of the Parse functions they see only the well-formed prefix.
type Params []byte

// Get returns the value of the first parameter called name. A quoted value comes
// without its quotes; backslash escapes inside are left as they are. A parameter
// without '=' (a flag such as "rport" or "lr") gives (nil, true); an absent one
// gives (nil, false).
func (p Params) Get(name string) (value []byte, ok bool) {
	for i := 0; ; {
		n, v, next, res := nextParam(p, i)
		if res != paramOK {
			return nil, false
		}
		if eqFold(n, name) {
			return v, true
		}
		i = next
	}
}

// Each calls fn with the name and the value (as Get returns it) of each parameter,
// in order, until fn returns false.
func (p Params) Each(fn func(name, value []byte) bool) {
	for i := 0; ; {
		n, v, next, res := nextParam(p, i)
		if res != paramOK || !fn(n, v) {
			return
		}
		i = next
	}
}

const (
	paramEnd = iota
	paramOK
	paramBad
)

// nextParam parses the parameter that starts at p[i]: SWS ";" SWS name
// [SWS "=" SWS value]. It returns paramEnd when only white space is left and
// paramBad (with next at the bad byte) on a syntax error. A flag parameter has a nil
// value, "name=" an empty non-nil one, and a quoted value comes without its quotes.
func nextParam(p []byte, i int) (name, value []byte, next, res int) {
	i = skipWS(p, i)
	if i >= len(p) {
		return nil, nil, i, paramEnd
	}
	if p[i] != ';' {
		return nil, nil, i, paramBad
	}
	i = skipWS(p, i+1)
	s := i
	i = scanToken(p, i)
	if i == s {
		return nil, nil, i, paramBad
	}
	name = p[s:i]
	j := skipWS(p, i)
	if j >= len(p) || p[j] != '=' {
		return name, nil, i, paramOK
	}
	i = skipWS(p, j+1)
	if i < len(p) && p[i] == '"' {
		end, ok := scanQuoted(p, i)
		if !ok {
			return nil, nil, i, paramBad
		}
		return name, p[i+1 : end-1], end, paramOK
	}
	s = i
	for i < len(p) && charClass[p[i]]&cPValue != 0 {
		i++
	}
	return name, p[s:i], i, paramOK
}

// checkParams checks that p is a well-formed parameter list; base is the offset of
// p in the caller's input, for the error.
func checkParams(p []byte, base int) error {
	for i := 0; ; {
		_, _, next, res := nextParam(p, i)
		switch res {
		case paramEnd:
			return nil
		case paramBad:
			return perr(base+next, "parameter")
		}
		i = next
	}
}
