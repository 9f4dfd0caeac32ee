package phone

import (
	"bytes"

	"github.com/pnpd/pnpd/sip"
)

// Limits on what Identify reads and returns.
const (
	// MaxFieldSize is how many bytes of each Fields value Identify looks at;
	// the rest is ignored.
	MaxFieldSize = 1024
	// MaxModelSize and MaxFirmwareSize bound Identity.Model and
	// Identity.Firmware; longer candidates are dropped, not cut.
	MaxModelSize    = 64
	MaxFirmwareSize = 64
	// MaxProfileSize bounds Identity.Profile.
	MaxProfileSize = 32
)

// Fields are raw header values of one SUBSCRIBE, as they appear after "Name:"
// (compact forms included), trimmed, with folded lines joined. RequestURI is the
// request line's URI. A missing header is nil. Identify does not keep the slices.
type Fields struct {
	RequestURI, From, To, Contact, UserAgent, Event []byte
}

// Identity is what a SUBSCRIBE says about the phone that sent it. Everything in
// it is self-asserted by the sender.
type Identity struct {
	MAC      string // 12 lower-case hex digits, "" when the phone sent none
	Brand    string // one of Brands, "" when unknown
	Model    string // e.g. "T21", "N670 IP PRO", "snom320"; "" when unknown
	Firmware string // e.g. "34.72.0.1"; "" when unknown
	Profile  string // Event profile-type ("device", "application", ...), "" when absent
}

// Identify reads the phone's identity from one SUBSCRIBE's header values.
//
// MAC: from the first of the Request-URI, To, From and Contact whose user part
// is "MAC" followed by a MAC (MAC001fc11b4e1c, MAC%3a00135E874B49, MAC%3A...,
// MAC:... (a URI parser sees user "MAC" and password "0011..."), MAC=...,
// MAC-...), else from the first MAC-looking token of the User-Agent (Gigaset
// "...;7C2F8030D21E", Panasonic "(0080f0a1b2c3)", "MAC:00-04-13-..."). A bare
// 12-digit User-Agent token counts only if it contains a hex letter or has a
// known brand's OUI, so that a build number is not taken for a MAC. URIs win
// over the User-Agent: Htek's User-Agent carries a 12-hex token that is not the
// Request-URI's MAC. Host parts (IP addresses) are never read as MACs. The URIs
// are read with the sip package (ParseURI; ParseAddr on From, To and the first
// element of Contact): a value it refuses gives no MAC, except that a MAC
// written with colons (MAC:00:1F:C1:1B:4E:1C), which RFC 3261 does not allow
// in a URI, is still read.
//
// Brand: from the Event vendor parameter (Panasonic spells it vender) unless it
// is "OEM", empty or not a known brand ("PLANET" is fanvil); else from the
// brand word the User-Agent starts with ("Yealink SIP-T21P", "snom320/7.3.30",
// "Snom-M700/4.50", "AUDC-IPPhone/..."); else from the MAC's OUI.
//
// Model and Firmware come as a pair from one source: the Event model and
// version parameters when the model is a real one, else what the User-Agent
// says ("Gigaset N670 IP PRO/83.V2.39.0+build.a546b76" gives "N670 IP PRO" and
// "83.V2.39.0+build.a546b76"); either falls back to the other source when its
// own value is missing. "OEM" (snom, Gigaset) means absent. Fanvil/PLANET send
// model "VOIP PHONE" for every phone: the User-Agent's model ("VIP-1120PT")
// is preferred, "VOIP PHONE" kept only when the User-Agent names none. A value
// is used only if it is at most MaxModelSize (MaxFirmwareSize) bytes of letters,
// digits, spaces and ._-+() and not only dots: no path separators, quotes or
// control characters reach file names, templates or logs.
//
// Profile is the Event profile-type parameter, quotes stripped, if it is a
// token of at most MaxProfileSize bytes.
//
// The Event is read with sip.ParseEvent. When it refuses the value, Identify
// uses the parameters before the one that breaks the syntax and, if that one
// is a quoted value without its closing quote, that value up to the end.
//
// Identify never panics. It allocates at most once (one string that MAC,
// Model, Firmware and Profile share) when the values it parses are valid SIP
// or in the spellings above; each value that the sip package refuses costs one
// small allocation more (sip's error), so at most six in all.
func Identify(f Fields) Identity {
	var id Identity

	mac, haveMAC := macFromURI(trimSpace(clip(f.RequestURI)))
	for _, v := range [...][]byte{f.To, f.From, f.Contact} {
		if haveMAC {
			break
		}
		mac, haveMAC = macFromAddr(clip(v))
	}
	ua := clip(f.UserAgent)
	if !haveMAC {
		mac, haveMAC = macFromUA(ua)
	}

	ev := parseEvent(clip(f.Event))
	uaBrand, uaModel, uaFirmware := parseUA(ua)

	id.Brand = ev.brand
	if id.Brand == "" {
		id.Brand = uaBrand
	}
	if id.Brand == "" && haveMAC {
		id.Brand = ouiBrand(mac)
	}

	model, firmware := pickModel(ev, uaModel, uaFirmware)

	profile, profileInterned := internProfile(ev.profile)

	// One allocation for all strings: MAC, model, firmware, profile.
	var buf [12 + MaxModelSize + MaxFirmwareSize + MaxProfileSize]byte
	n := 0
	if haveMAC {
		putMAC(buf[:], mac)
		n = 12
	}
	m0 := n
	n += copy(buf[n:], model)
	m1 := n
	n += copy(buf[n:], firmware)
	f1 := n
	if !profileInterned {
		n += copy(buf[n:], ev.profile)
	}
	s := string(buf[:n])
	if haveMAC {
		id.MAC = s[:12]
	}
	id.Model = s[m0:m1]
	id.Firmware = s[m1:f1]
	if profileInterned {
		id.Profile = profile
	} else {
		id.Profile = s[f1:n]
	}
	return id
}

// pickModel applies the pairing rule documented on Identify.
func pickModel(ev event, uaModel, uaFirmware []byte) (model, firmware []byte) {
	evModel := okValue(ev.model, MaxModelSize) && !equalFoldASCII(ev.model, "OEM")
	evFirmware := okValue(ev.version, MaxFirmwareSize) && !equalFoldASCII(ev.version, "OEM")
	uaModelOK := okValue(uaModel, MaxModelSize) && !equalFoldASCII(uaModel, "OEM")
	uaFirmwareOK := okValue(uaFirmware, MaxFirmwareSize) && !equalFoldASCII(uaFirmware, "OEM")
	generic := evModel && equalFoldASCII(ev.model, "VOIP PHONE")

	switch {
	case evModel && !(generic && uaModelOK):
		model = ev.model
		if evFirmware {
			firmware = ev.version
		} else if uaFirmwareOK {
			firmware = uaFirmware
		}
	case uaModelOK:
		model = uaModel
		if uaFirmwareOK {
			firmware = uaFirmware
		} else if evFirmware {
			firmware = ev.version
		}
	default:
		if evFirmware {
			firmware = ev.version
		} else if uaFirmwareOK {
			firmware = uaFirmware
		}
	}
	return model, firmware
}

// okValue reports whether v is usable as a Model or Firmware.
func okValue(v []byte, max int) bool {
	if len(v) == 0 || len(v) > max {
		return false
	}
	dots := 0
	for _, c := range v {
		switch {
		case isLetter(c), isDigit(c):
		case c == ' ', c == '_', c == '-', c == '+', c == '(', c == ')':
		case c == '.':
			dots++
		default:
			return false
		}
	}
	return dots < len(v)
}

var profiles = [...]string{"device", "user", "local-network", "application"}

// internProfile returns a constant for the common profile types, so that they
// cost no allocation. ok is false when p must be copied (or is unusable: then
// it is emptied by parseEvent already).
func internProfile(p []byte) (string, bool) {
	if len(p) == 0 {
		return "", true
	}
	for _, s := range profiles {
		if string(p) == s {
			return s, true
		}
	}
	return "", false
}

// clip bounds how much of a value Identify reads.
func clip(v []byte) []byte {
	if len(v) > MaxFieldSize {
		return v[:MaxFieldSize]
	}
	return v
}

// ---- MAC addresses ----

// macFromAddr reads a MAC from the URI of a From, To or Contact value (of a
// Contact list, the first element).
func macFromAddr(v []byte) ([6]byte, bool) {
	var first []byte
	sip.SplitComma(v, func(elem []byte) bool {
		first = elem
		return false
	})
	if first == nil { // absent or empty: no sip error to pay for
		return [6]byte{}, false
	}
	a, err := sip.ParseAddr(first)
	if err != nil {
		return [6]byte{}, false
	}
	return macFromURI(a.URI)
}

// macFromURI reads a MAC from the user part of a sip: or sips: URI: "MAC"
// (any case), an optional ':', '=', '-' or '_', then a MAC in a spelling
// NormalizeMAC accepts. User parameters (from ';') are ignored, %-escapes are
// decoded, and user and password count as one ("MAC:001122334455").
func macFromURI(uri []byte) ([6]byte, bool) {
	user, password, ok := colonUserinfo(uri)
	if !ok {
		if len(uri) == 0 {
			return [6]byte{}, false
		}
		u, err := sip.ParseURI(uri)
		if err != nil {
			return [6]byte{}, false
		}
		user, password = u.User, u.Password
	}
	if i := bytes.IndexByte(user, ';'); i >= 0 { // user parameters
		user, password = user[:i], nil
	}
	if i := bytes.IndexByte(password, ';'); i >= 0 { // only in a colonUserinfo
		password = password[:i]
	}
	var dec [32]byte // longer is too long to be "MAC" and a MAC
	n, ok := unescape(dec[:], 0, user)
	if ok && password != nil {
		if ok = n < len(dec); ok {
			dec[n] = ':'
			n, ok = unescape(dec[:], n+1, password)
		}
	}
	d := dec[:n]
	if !ok || len(d) < 3 || !equalFoldASCII(d[:3], "mac") {
		return [6]byte{}, false
	}
	return macAfterPrefix(d[3:])
}

// colonUserinfo is the fallback for a MAC written with colons after "MAC"
// (MAC:00:1F:C1:1B:4E:1C, MAC=00:1f:c1:1b:4e:1c, MAC%3a00:1F:...; see
// Identify): its userinfo has a second ':', which lands in the URI password,
// where RFC 3261 allows none, so sip.ParseURI refuses the URI. For a userinfo
// with more than one ':' colonUserinfo splits it as ParseURI would: the
// userinfo ends at the first '@', the password starts after the first ':'. It
// is tried before ParseURI so that this spelling does not cost ParseURI's error
// (an allocation) on top of Identify's one.
func colonUserinfo(uri []byte) (user, password []byte, ok bool) {
	s := bytes.IndexByte(uri, ':')
	if s < 0 || !equalFoldASCII(uri[:s], "sip") && !equalFoldASCII(uri[:s], "sips") {
		return nil, nil, false
	}
	ui := uri[s+1:]
	at := bytes.IndexByte(ui, '@')
	if at < 0 {
		return nil, nil, false
	}
	ui = ui[:at]
	c := bytes.IndexByte(ui, ':')
	if c < 0 || bytes.IndexByte(ui[c+1:], ':') < 0 {
		return nil, nil, false
	}
	return ui[:c], ui[c+1:], true
}

// unescape copies s to dst[n:] with %HH escapes decoded (a '%' without two hex
// digits stays as it is) and returns the new length; ok is false when dst is
// too small.
func unescape(dst []byte, n int, s []byte) (int, bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' && i+2 < len(s) {
			if b, ok := hexByte(s[i+1], s[i+2]); ok {
				c = b
				i += 2
			}
		}
		if n == len(dst) {
			return n, false
		}
		dst[n] = c
		n++
	}
	return n, true
}

// macAfterPrefix reads what follows "MAC": an optional ':', '=', '-' or '_'
// and a MAC in a spelling NormalizeMAC accepts.
func macAfterPrefix(d []byte) ([6]byte, bool) {
	if len(d) == 13 || len(d) == 15 || len(d) == 18 { // one separator before the MAC
		switch d[0] {
		case ':', '=', '-', '_':
			d = d[1:]
		}
	}
	return parseMAC(d)
}

// macFromUA returns the first MAC-looking token of a User-Agent value.
func macFromUA(ua []byte) ([6]byte, bool) {
	for i := 0; i < len(ua); {
		for i < len(ua) && !isMACTokenChar(ua[i]) {
			i++
		}
		j := i
		for j < len(ua) && isMACTokenChar(ua[j]) {
			j++
		}
		tok := ua[i:j]
		i = j
		if len(tok) > 3 && equalFoldASCII(tok[:3], "mac") { // MAC:00-08-5D-...
			if m, ok := macAfterPrefix(tok[3:]); ok {
				return m, true
			}
			continue
		}
		m, ok := parseMAC(tok)
		if !ok {
			continue
		}
		if len(tok) != 12 || hasHexLetter(tok) || ouiBrand(m) != "" {
			return m, true
		}
	}
	return [6]byte{}, false
}

func isMACTokenChar(c byte) bool {
	return isLetter(c) || isDigit(c) || c == ':' || c == '-'
}

func hasHexLetter(tok []byte) bool {
	for _, c := range tok {
		if c|0x20 >= 'a' && c|0x20 <= 'f' {
			return true
		}
	}
	return false
}

// ---- Event header ----

// event holds the ua-profile Event parameters Identify uses. The slices alias
// the input, quotes stripped.
type event struct {
	brand                   string // from vendor/vender, "" when OEM/unknown
	model, version, profile []byte
	haveModel, haveVersion  bool
}

// parseEvent reads `package;name=value;name="quoted value"...` with
// sip.ParseEvent. Parameter names compare case-insensitively; the first
// occurrence wins (of vendor/vender, the first that names a brand; of
// profile-type, the first usable one).
//
// Fallback: sip.ParseEvent refuses the whole value when one parameter breaks
// the syntax, as does a value cut at MaxFieldSize. Identify has always read
// what it could there, so then it takes the parameters before the broken one
// (sip.Params stops at it) and, when the broken one is a quoted value without
// its closing quote (`;profile-type="device`), that value up to the end.
func parseEvent(v []byte) event {
	var e event
	if len(v) == 0 {
		return e
	}
	_, params, err := sip.ParseEvent(v)
	var tailName, tailValue []byte
	if err != nil {
		semi := bytes.IndexByte(v, ';')
		if semi < 0 {
			return e
		}
		params = sip.Params(v[semi:])
		if pe, ok := err.(*sip.ParseError); ok {
			tailName, tailValue = unterminated(v, pe.Offset)
		}
	}
	params.Each(func(name, value []byte) bool {
		e.param(name, value)
		return true
	})
	if tailName != nil {
		e.param(tailName, tailValue)
	}
	return e
}

// param takes one Event parameter; value is nil for a flag parameter.
func (e *event) param(name, value []byte) {
	switch {
	case equalFoldASCII(name, "vendor"), equalFoldASCII(name, "vender"):
		if e.brand == "" {
			e.brand, _ = brandPrefix(trimSpace(value))
		}
	case equalFoldASCII(name, "model"):
		if !e.haveModel {
			e.model, e.haveModel = trimSpace(value), true
		}
	case equalFoldASCII(name, "version"):
		if !e.haveVersion {
			e.version, e.haveVersion = trimSpace(value), true
		}
	case equalFoldASCII(name, "profile-type"):
		if e.profile == nil && value != nil {
			pv := trimSpace(value)
			if len(pv) > 0 && len(pv) <= MaxProfileSize && isToken(pv) {
				e.profile = pv
			}
		}
	}
}

// unterminated returns the parameter `name="...` of v whose quoted value
// sip.ParseEvent found unterminated, given the offset of the quote at which it
// stopped; the value is the rest of v. nil when the error is another one.
func unterminated(v []byte, quote int) (name, value []byte) {
	if quote >= len(v) || v[quote] != '"' {
		return nil, nil
	}
	eq := len(bytes.TrimRight(v[:quote], " \t"))
	if eq == 0 || v[eq-1] != '=' {
		return nil, nil
	}
	end := len(bytes.TrimRight(v[:eq-1], " \t"))
	start := end
	for start > 0 && isToken(v[start-1:start]) {
		start--
	}
	if start == end {
		return nil, nil
	}
	return v[start:end], v[quote+1:]
}

// isToken reports whether v is an RFC 3261 token.
func isToken(v []byte) bool {
	for _, c := range v {
		if isLetter(c) || isDigit(c) {
			continue
		}
		switch c {
		case '-', '.', '!', '%', '*', '_', '+', '`', '\'', '~':
			continue
		}
		return false
	}
	return true
}

// ---- User-Agent ----

// parseUA returns the brand word a User-Agent starts with, and the model and
// firmware it names. Forms understood:
//
//	Brand Model Version [more]            Yealink SIP-T21P 34.72.0.1
//	Brand[-_ ]Model/Version [more]        Snom-M700/4.50, Panasonic_KX-HDV130/03.000 (mac)
//	BrandModel/Version                    snom320/7.3.30 (model keeps the brand word)
//	Brand Model With Spaces/Version;more  Gigaset N670 IP PRO/83.V2.39.0+build.a546b76;MAC
//
// and AudioCodes' AudioCodes-Sip-Phone-445HD/3.4.4, AUDC-IPPhone-445HD_UC_3.4.8/1.0
// and AUDC-IPPhone/2.2.8.61 (440HDG-Rev0; MAC). A User-Agent that starts with
// no known brand word gives nothing.
func parseUA(ua []byte) (brand string, model, firmware []byte) {
	ua = trimSpace(ua)
	brand, n := brandPrefix(ua)
	if brand == "" {
		return "", nil, nil
	}
	var rest []byte
	switch {
	case n == len(ua):
		return brand, nil, nil
	case ua[n] == ' ' || ua[n] == '-' || ua[n] == '_':
		rest = trimSpace(ua[n+1:])
	case isDigit(ua[n]): // snom320: the model keeps the brand word
		rest = ua
	default: // Brand/1.2.3: no model
		rest = ua[n:]
	}
	if brand == BrandAudioCodes {
		model, firmware = parseAudioCodesUA(rest)
		return brand, model, firmware
	}
	head := rest
	if i := bytes.IndexAny(head, "(;"); i >= 0 {
		head = head[:i]
	}
	if s := bytes.IndexByte(head, '/'); s >= 0 {
		model = trimSpace(head[:s])
		firmware, _ = nextField(head[s+1:])
		return brand, model, firmware
	}
	model, r := nextField(head)
	if v, _ := nextField(r); looksLikeVersion(v) {
		firmware = v
	}
	return brand, model, firmware
}

// parseAudioCodesUA reads what follows "AudioCodes-" or "AUDC-".
func parseAudioCodesUA(rest []byte) (model, firmware []byte) {
	for _, p := range [...]string{"Sip-Phone-", "IPPhone-", "IPPhone"} {
		if len(rest) >= len(p) && equalFoldASCII(rest[:len(p)], p) {
			rest = rest[len(p):]
			break
		}
	}
	head := rest
	if i := bytes.IndexAny(head, " (;"); i >= 0 {
		head = head[:i]
	}
	s := bytes.IndexByte(head, '/')
	if s < 0 {
		return nil, nil
	}
	model, firmware = head[:s], head[s+1:]
	if u := bytes.IndexByte(model, '_'); u >= 0 { // 445HD_UC_3.4.8/1.0
		if l := bytes.LastIndexByte(model, '_'); looksLikeVersion(model[l+1:]) {
			firmware = model[l+1:]
		}
		model = model[:u]
	}
	if len(model) == 0 { // IPPhone/2.2.8.61 (440HDG-Rev0; 00908F602AAC)
		if o := bytes.IndexByte(rest, '('); o >= 0 {
			p := rest[o+1:]
			if e := bytes.IndexAny(p, ";)"); e >= 0 {
				p = p[:e]
			}
			if r := bytes.IndexByte(p, '-'); r >= 0 {
				p = p[:r]
			}
			model = trimSpace(p)
		}
	}
	return model, firmware
}

// looksLikeVersion: starts with a digit (or v/V and a digit) and has a dot.
func looksLikeVersion(v []byte) bool {
	if len(v) == 0 {
		return false
	}
	start := v
	if (v[0] == 'v' || v[0] == 'V') && len(v) > 1 {
		start = v[1:]
	}
	return isDigit(start[0]) && bytes.IndexByte(v, '.') >= 0
}

// ---- small byte helpers (no allocation) ----

// trimSpace trims spaces and tabs (what SIP calls whitespace).
func trimSpace(v []byte) []byte { return bytes.Trim(v, " \t") }

// nextField returns the first space-separated field of v and what follows it.
func nextField(v []byte) (field, rest []byte) {
	v = trimSpace(v)
	if i := bytes.IndexAny(v, " \t"); i >= 0 {
		return v[:i], v[i:]
	}
	return v, nil
}
