package sip

// Character classes, as 256-entry tables so that the hot loops do one load per byte.
const (
	cToken  = 1 << iota // RFC 3261 token: alphanum and -.!%*_+`'~
	cCtl                // bytes that may not appear in a header line: CTL except HTAB, and DEL
	cHost               // hostname or IPv4 characters: alphanum - . _
	cIPv6               // inside [...]: hex digits, ':', '.'
	cPValue             // unquoted parameter value: token plus : [ ] / ? & $ @
	cUser               // SIP URI user: unreserved, user-unreserved (escapes checked apart)
	cPass               // SIP URI password: unreserved and & = + $ , (escapes checked apart)
	cScheme             // URI scheme after the first letter: alphanum + - .
)

var charClass = func() (t [256]uint8) {
	set := func(class uint8, chars string) {
		for i := 0; i < len(chars); i++ {
			t[chars[i]] |= class
		}
	}
	const (
		alpha    = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		digit    = "0123456789"
		alnum    = alpha + digit
		mark     = "-_.!~*'()"
		tokenSym = "-.!%*_+`'~"
	)
	set(cToken, alnum+tokenSym)
	for c := 0; c < 0x20; c++ {
		if c != '\t' {
			t[c] |= cCtl
		}
	}
	t[0x7f] |= cCtl
	set(cHost, alnum+"-._")
	set(cIPv6, digit+"abcdefABCDEF:.")
	set(cPValue, alnum+tokenSym+":[]/?&$@")
	set(cUser, alnum+mark+"&=+$,;?/")
	set(cPass, alnum+mark+"&=+$,")
	set(cScheme, alnum+"+-.")
	return t
}()

func isToken(c byte) bool { return charClass[c]&cToken != 0 }

func isWS(c byte) bool { return c == ' ' || c == '\t' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isAlpha(c byte) bool { return 'a' <= c|0x20 && c|0x20 <= 'z' }

func isHex(c byte) bool { return isDigit(c) || 'a' <= c|0x20 && c|0x20 <= 'f' }

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// eqFold reports whether a and b are equal under ASCII case folding.
func eqFold[A, B ~string | ~[]byte](a A, b B) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if a[i] != b[i] && lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

// skipWS returns the index of the first byte at or after i that is not SP or HTAB.
func skipWS(b []byte, i int) int {
	for i < len(b) && isWS(b[i]) {
		i++
	}
	return i
}

// trimWS trims SP and HTAB at both ends of b.
func trimWS(b []byte) []byte {
	i, j := 0, len(b)
	for i < j && isWS(b[i]) {
		i++
	}
	for j > i && isWS(b[j-1]) {
		j--
	}
	return b[i:j]
}

// trimRightWS trims SP and HTAB at the end of b.
func trimRightWS(b []byte) []byte {
	j := len(b)
	for j > 0 && isWS(b[j-1]) {
		j--
	}
	return b[:j]
}

// scanToken returns the index after the run of token characters that starts at i.
func scanToken(b []byte, i int) int {
	for i < len(b) && isToken(b[i]) {
		i++
	}
	return i
}

// scanQuoted scans the quoted-string whose opening quote is at b[i] and returns the
// index just after the closing quote. A backslash escapes the next byte. ok is false
// when the string is not terminated.
func scanQuoted(b []byte, i int) (end int, ok bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++ // skip the escaped byte; the loop bound check covers a trailing '\'
		case '"':
			return j + 1, true
		}
	}
	return len(b), false
}

// parsePort parses 1 to 5 decimal digits at b[i:] as a port number (0..65535) and
// returns it with the index after the digits. ok is false when there is no digit,
// more than 5 digits, or the value exceeds 65535.
func parsePort(b []byte, i int) (port, end int, ok bool) {
	s := i
	for i < len(b) && isDigit(b[i]) {
		if i-s == 5 {
			return 0, i, false
		}
		port = port*10 + int(b[i]-'0')
		i++
	}
	if i == s || port > 65535 {
		return 0, i, false
	}
	return port, i, true
}
