package sip

// HeaderID names the headers PnP cares about. The long name and the compact form
// (RFC 3261 7.3.3, RFC 3265, RFC 6665) of a header map to the same ID; any other
// header is HdrOther.
type HeaderID uint8

// Header IDs. The comment gives the compact form where there is one.
const (
	HdrOther             HeaderID = iota
	HdrVia                        // v
	HdrFrom                       // f
	HdrTo                         // t
	HdrCallID                     // i
	HdrCSeq                       //
	HdrContact                    // m
	HdrContentLength              // l
	HdrContentType                // c
	HdrEvent                      // o
	HdrSubject                    // s
	HdrSupported                  // k
	HdrAllowEvents                // u
	HdrExpires                    //
	HdrUserAgent                  //
	HdrAccept                     //
	HdrMaxForwards                //
	HdrSubscriptionState          //
	HdrContentEncoding            // e
	HdrAllow                      //
	HdrServer                     //
	HdrWWWAuthenticate            //
	HdrRoute                      //
	HdrRecordRoute                //
	HdrRequire                    //

	numHeaderIDs
)

// headerNames holds the canonical long name of each ID.
var headerNames = [numHeaderIDs]string{
	HdrVia:               "Via",
	HdrFrom:              "From",
	HdrTo:                "To",
	HdrCallID:            "Call-ID",
	HdrCSeq:              "CSeq",
	HdrContact:           "Contact",
	HdrContentLength:     "Content-Length",
	HdrContentType:       "Content-Type",
	HdrEvent:             "Event",
	HdrSubject:           "Subject",
	HdrSupported:         "Supported",
	HdrAllowEvents:       "Allow-Events",
	HdrExpires:           "Expires",
	HdrUserAgent:         "User-Agent",
	HdrAccept:            "Accept",
	HdrMaxForwards:       "Max-Forwards",
	HdrSubscriptionState: "Subscription-State",
	HdrContentEncoding:   "Content-Encoding",
	HdrAllow:             "Allow",
	HdrServer:            "Server",
	HdrWWWAuthenticate:   "WWW-Authenticate",
	HdrRoute:             "Route",
	HdrRecordRoute:       "Record-Route",
	HdrRequire:           "Require",
}

// String returns the canonical long header name, e.g. "Call-ID", or "" for
// HdrOther and unknown values.
func (id HeaderID) String() string {
	if id < numHeaderIDs {
		return headerNames[id]
	}
	return ""
}

// compactNames maps each compact form 'a'..'z' to its long name (IANA SIP header
// registry); "" where the letter is unassigned.
var compactNames = [26]string{
	'a' - 'a': "Accept-Contact",
	'b' - 'a': "Referred-By",
	'c' - 'a': "Content-Type",
	'd' - 'a': "Request-Disposition",
	'e' - 'a': "Content-Encoding",
	'f' - 'a': "From",
	'i' - 'a': "Call-ID",
	'j' - 'a': "Reject-Contact",
	'k' - 'a': "Supported",
	'l' - 'a': "Content-Length",
	'm' - 'a': "Contact",
	'n' - 'a': "Identity-Info",
	'o' - 'a': "Event",
	'r' - 'a': "Refer-To",
	's' - 'a': "Subject",
	't' - 'a': "To",
	'u' - 'a': "Allow-Events",
	'v' - 'a': "Via",
	'x' - 'a': "Session-Expires",
	'y' - 'a': "Identity",
}

// Lookup tables derived from headerNames and compactNames.
var (
	idsByLen = func() (t [32][]HeaderID) {
		for id := HdrOther + 1; id < numHeaderIDs; id++ {
			n := headerNames[id]
			t[len(n)] = append(t[len(n)], id)
		}
		return t
	}()
	compactIDs = func() (t [26]HeaderID) {
		for c, long := range compactNames {
			t[c] = lookupLong(long)
		}
		return t
	}()
)

// lookupID returns the ID of a header name, long or compact, in any case.
func lookupID[T ~string | ~[]byte](name T) HeaderID {
	if len(name) == 1 {
		if c := lower(name[0]); 'a' <= c && c <= 'z' {
			return compactIDs[c-'a']
		}
		return HdrOther
	}
	return lookupLong(name)
}

// lookupLong returns the ID of a long header name in any case.
func lookupLong[T ~string | ~[]byte](name T) HeaderID {
	if len(name) >= len(idsByLen) {
		return HdrOther
	}
	for _, id := range idsByLen[len(name)] {
		if eqFold(name, headerNames[id]) {
			return id
		}
	}
	return HdrOther
}

// compactAlias returns the other spelling of a header that has a compact form: the
// long name for a compact letter, the letter for a long name; "" if there is none.
func compactAlias(name string) string {
	if len(name) == 1 {
		if c := lower(name[0]); 'a' <= c && c <= 'z' {
			return compactNames[c-'a']
		}
		return ""
	}
	for c, long := range compactNames {
		if long != "" && eqFold(name, long) {
			return "abcdefghijklmnopqrstuvwxyz"[c : c+1]
		}
	}
	return ""
}

// SplitComma splits a header value at the commas that are outside quoted strings
// and outside <...>, and calls fn with each element, SP/HTAB trimmed, until fn
// returns false. Empty elements are skipped. It suits Via, Contact, Supported,
// Allow-Events and the like; it does not check the elements' syntax.
func SplitComma(v []byte, fn func(elem []byte) bool) {
	for i := 0; i < len(v); {
		var elem []byte
		elem, i = nextElem(v, i)
		if elem == nil || !fn(elem) {
			return
		}
	}
}

// nextElem returns the first non-empty comma-separated element of v at or after i,
// and the index after its comma. elem is nil when there is none.
func nextElem(v []byte, i int) (elem []byte, next int) {
	for i < len(v) {
		s := i
		inQuote, inAngle := false, false
	scan:
		for ; i < len(v); i++ {
			c := v[i]
			switch {
			case inQuote:
				if c == '\\' {
					i++
				} else if c == '"' {
					inQuote = false
				}
			case inAngle:
				inAngle = c != '>'
			case c == '"':
				inQuote = true
			case c == '<':
				inAngle = true
			case c == ',':
				break scan
			}
		}
		e := trimWS(v[s:min(i, len(v))])
		i++ // past the comma
		if len(e) > 0 {
			return e, i
		}
	}
	return nil, len(v)
}

// ParseEvent parses an Event (or Allow-Events element) value:
// "ua-profile;profile-type=\"device\";vendor=\"Yealink\"" gives pkg "ua-profile" and
// the parameters from the first ';'.
func ParseEvent(b []byte) (pkg []byte, params Params, err error) {
	i := skipWS(b, 0)
	s := i
	i = scanToken(b, i)
	if i == s {
		return nil, nil, perr(i, "Event package")
	}
	pkg = b[s:i]
	rest := trimRightWS(b[i:])
	if err := checkParams(rest, i); err != nil {
		return nil, nil, err
	}
	return pkg, Params(rest), nil
}

// ParseCSeq parses a CSeq value, "1 SUBSCRIBE": a decimal sequence number that fits
// in 32 bits, white space, and a method token.
func ParseCSeq(b []byte) (seq uint32, method []byte, err error) {
	i := skipWS(b, 0)
	s := i
	var n uint64
	for i < len(b) && isDigit(b[i]) {
		n = n*10 + uint64(b[i]-'0')
		if n > 1<<32-1 {
			return 0, nil, perr(i, "CSeq number")
		}
		i++
	}
	if i == s {
		return 0, nil, perr(i, "CSeq number")
	}
	j := skipWS(b, i)
	if j == i {
		return 0, nil, perr(j, "CSeq")
	}
	s = j
	j = scanToken(b, j)
	if j == s {
		return 0, nil, perr(j, "CSeq method")
	}
	method = b[s:j]
	if k := skipWS(b, j); k != len(b) {
		return 0, nil, perr(k, "CSeq")
	}
	return uint32(n), method, nil
}
