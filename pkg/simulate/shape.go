package simulate

import (
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pnpd/pnpd/pkg/phone"
)

// shape is how one brand's phone speaks PnP: its source port, the OUI its
// default MAC comes from, the model it claims and the files it fetches. The
// SUBSCRIBE itself is written by buildSubscribe, one case per brand, following
// sip/testdata/phones/<brand>.sip line by line.
type shape struct {
	brand string
	port  int     // source port = Via = Contact port
	oui   [3]byte // block of the default random MAC
	rport bool    // Via carries ;rport
	model string  // for {MODEL} in Panasonic URLs and file names
	fw    string  // for {fwver}
	ua    string  // User-Agent, also sent on HTTP fetches (%s = MAC where the brand puts it)
	fetch fetchPlan
}

var shapes = map[string]*shape{
	phone.BrandHtek: {
		brand: phone.BrandHtek, port: 60000, oui: [3]byte{0x00, 0x1f, 0xc1}, rport: true,
		model: "UC912G", fw: "2.0.4.4.46", ua: "Htek UC912G %s",
		fetch: fetchPlan{files: []string{"factory0000.xml", "cfg0000.xml", "{mac}.cfg", "cfg{mac}", "cfg{mac}.xml"}},
	},
	phone.BrandYealink: {
		brand: phone.BrandYealink, port: 5059, oui: [3]byte{0x00, 0x15, 0x65},
		model: "T21", fw: "34.72.0.1", ua: "Yealink SIP-T21P 34.72.0.1",
		fetch: fetchPlan{files: []string{"y000000000000.cfg", "{mac}.cfg"}, all: true},
	},
	phone.BrandSnom: {
		brand: phone.BrandSnom, port: 5060, oui: [3]byte{0x00, 0x04, 0x13}, rport: true,
		model: "snom320", fw: "7.3.30", ua: "snom320/7.3.30",
		fetch: fetchPlan{macros: []macro{{"{mac}", "{MAC}"}}},
	},
	phone.BrandGigaset: {
		brand: phone.BrandGigaset, port: 5060, oui: [3]byte{0x7c, 0x2f, 0x80}, rport: true,
		model: "N670 IP PRO", fw: "83.V2.39.0", ua: "Gigaset N670 IP PRO/83.V2.39.0+build.a546b76;%s",
		fetch: fetchPlan{macros: []macro{{"%MACD", "{MAC}"}}},
	},
	phone.BrandGrandstream: {
		brand: phone.BrandGrandstream, port: 5080, oui: [3]byte{0xc0, 0x74, 0xad}, rport: true,
		model: "GXP2170", fw: "1.0.11.3", ua: "Grandstream GXP2170 1.0.11.3",
		fetch: fetchPlan{files: []string{"cfg{mac}", "cfg{mac}.xml", "cfg.xml"}},
	},
	phone.BrandFanvil: {
		brand: phone.BrandFanvil, port: 5060, oui: [3]byte{0x00, 0x30, 0x4f}, rport: true,
		model: "VIP-1120PT", fw: "2.3.1.2570", ua: "PLANET VIP-1120PT 2.3.1.2570",
		fetch: fetchPlan{files: []string{"{mac}.cfg"}, keepFile: true, macros: []macro{{"$mac", "{mac}"}}},
	},
	phone.BrandPanasonic: {
		brand: phone.BrandPanasonic, port: 5060, oui: [3]byte{0x00, 0x80, 0xf0}, rport: true,
		model: "KX-HDV130", fw: "03.000", ua: "Panasonic_KX-HDV130/03.000 (%s)",
		fetch: fetchPlan{files: []string{"{MODEL}.cfg"}, keepFile: true,
			macros: []macro{{"{mac}", "{mac}"}, {"{MAC}", "{MAC}"}, {"{MODEL}", "{MODEL}"}, {"{fwver}", "{fwver}"}}},
	},
	phone.BrandAudioCodes: {
		brand: phone.BrandAudioCodes, port: 5060, oui: [3]byte{0x00, 0x90, 0x8f}, rport: true,
		model: "445HD", fw: "3.4.4.1000.62", ua: "AudioCodes-Sip-Phone-445HD/3.4.4.1000.62",
		fetch: fetchPlan{files: []string{"{mac}.cfg"}, keepFile: true},
	},
}

// fanvilOUI: a MAC from Fanvil's own block makes the simulated phone a Fanvil
// (User-Agent "Fanvil X4", vendor "Fanvil") instead of the PLANET rebrand that
// the capture shows.
var fanvilOUI = [3]byte{0x0c, 0x38, 0x3e}

// subParams are the values of one SUBSCRIBE. Everything random is chosen by
// newParams in the brand's style and can be fixed by tests to rebuild a
// captured packet byte for byte.
type subParams struct {
	ip     netip.Addr
	port   int
	mac    string // 12 lower-case hex digits
	branch string // whole Via branch value, z9hG4bK...
	tag    string // From tag ("" for Fanvil, which sends none)
	callID string
	uaMAC  string // Htek: the second MAC in its User-Agent
}

// newParams picks fresh branch, tag and Call-ID in the brand's style.
func (s *shape) newParams(ip netip.Addr, port int, mac string) subParams {
	p := subParams{ip: ip, port: port, mac: mac}
	ipStr := ip.String()
	switch s.brand {
	case phone.BrandHtek:
		p.branch, p.tag, p.callID = "z9hG4bK"+randDigits(10), randDigits(10), randDigits(10)+"@"+ipStr
		p.uaMAC = randMAC(s.oui)
	case phone.BrandYealink:
		p.branch, p.tag, p.callID = "z9hG4bK"+randDigits(10), randDigits(10), randDigits(10)+"@"+ipStr
	case phone.BrandSnom:
		p.branch, p.tag, p.callID = "z9hG4bK-"+randAlnum(12), randAlnum(10), randHex(12)+"-"+randAlnum(12)
	case phone.BrandGigaset:
		p.branch, p.tag = "z9hG4bK"+randHex(10), randHex(8)
		p.callID = mac + "-" + randDigits(10) + "@" + ipStr
	case phone.BrandGrandstream:
		p.branch, p.tag = "z9hG4bK"+randDigits(10), randDigits(10)
		p.callID = randDigits(10) + "-" + strconv.Itoa(port) + "-1@" + grandstreamHost(ipStr)
	case phone.BrandFanvil:
		p.branch, p.callID = "z9hG4bK"+randDigits(10), randDigits(10)+"@"+ipStr
	case phone.BrandPanasonic:
		p.branch, p.tag, p.callID = "z9hG4bK"+randHex(10), randHex(8), randHex(10)+"-"+mac+"@"+ipStr
	case phone.BrandAudioCodes:
		p.branch, p.tag, p.callID = "z9hG4bKac"+randDigits(10), randHex(12), randDigits(10)+"@"+ipStr
	}
	return p
}

// subscribe is one built SUBSCRIBE and what the receive side matches on.
type subscribe struct {
	raw     []byte
	callID  string
	cseq    int
	branch  string
	tag     string // our From tag, "" if none
	from    string // From URI (inside <>)
	contact string // Contact URI (inside <>)
	rport   bool
	ua      string
}

// buildSubscribe writes the brand's SUBSCRIBE, header for header in the order
// and spelling of the captured phone.
func buildSubscribe(s *shape, p subParams) subscribe {
	mac, MAC := p.mac, strings.ToUpper(p.mac)
	hostport := p.ip.String() + ":" + strconv.Itoa(p.port)
	ua := s.ua
	vendor, model, version := s.brand, s.model, s.fw
	sub := subscribe{callID: p.callID, cseq: 1, branch: p.branch, tag: p.tag, rport: s.rport}

	var b msgWriter
	via := "SIP/2.0/UDP " + hostport + ";branch=" + p.branch
	if s.rport {
		via += ";rport"
	}
	from := func(uri string) string {
		sub.from = uri
		if p.tag == "" {
			return "<" + uri + ">"
		}
		return "<" + uri + ">;tag=" + p.tag
	}
	contact := func(uri string) string { sub.contact = uri; return "<" + uri + ">" }
	const accept, maxfwd, expires, eventPkg = "application/url", "70", "0", `ua-profile;profile-type="device"`

	switch s.brand {
	case phone.BrandHtek, phone.BrandYealink:
		uri := "sip:MAC" + mac + "@224.0.1.75"
		if s.brand == phone.BrandHtek {
			ua = strings.Replace(ua, "%s", p.uaMAC, 1)
			vendor = "Htek"
		} else {
			vendor = "Yealink"
		}
		b.line("SUBSCRIBE " + uri + " SIP/2.0")
		b.header("Via", via)
		b.header("From", from(uri))
		b.header("To", "<"+uri+">")
		b.header("Call-ID", p.callID)
		b.header("CSeq", "1 SUBSCRIBE")
		b.header("Contact", contact("sip:MAC"+mac+"@"+hostport))
		b.header("Accept", accept)
		b.header("Max-Forwards", maxfwd)
		b.header("User-Agent", ua)
		b.header("Expires", expires)
		b.header("Event", eventParams(eventPkg, "vendor", vendor, model, version))

	case phone.BrandSnom:
		uri := "sip:MAC%3a" + MAC + "@intern.snom.de"
		b.line("SUBSCRIBE " + uri + " SIP/2.0")
		b.header("Via", via)
		b.header("From", from(uri))
		b.header("To", "<"+uri+">")
		b.header("Call-ID", p.callID)
		b.header("CSeq", "1 SUBSCRIBE")
		b.header("Max-Forwards", maxfwd)
		b.header("Contact", contact("sip:"+hostport))
		b.header("Event", eventParams(eventPkg, "vendor", "OEM", "OEM", version))
		b.header("Expires", expires)
		b.header("Accept", accept)
		b.header("User-Agent", ua)

	case phone.BrandGigaset:
		uri := "sip:MAC%3A" + MAC + "@local"
		ua = strings.Replace(ua, "%s", MAC, 1)
		b.line("SUBSCRIBE " + uri + " SIP/2.0")
		b.header("Via", via)
		b.header("From", from(uri))
		b.header("To", "<"+uri+">")
		b.header("Call-ID", p.callID)
		b.header("CSeq", "1 SUBSCRIBE")
		b.header("Contact", contact("sip:MAC%3A"+MAC+"@"+hostport))
		b.header("Max-Forwards", maxfwd)
		b.header("User-Agent", ua)
		b.header("Event", eventParams(eventPkg, "vendor", "OEM", "OEM", version))
		b.header("Expires", expires)
		b.header("Accept", accept)

	case phone.BrandGrandstream:
		uri := "sip:MAC%3A" + MAC + "@224.0.1.75"
		sub.cseq = 20000
		b.line("SUBSCRIBE " + uri + " SIP/2.0")
		b.header("Via", via)
		b.header("From", from(uri))
		b.header("To", "<"+uri+">")
		b.header("Call-ID", p.callID)
		b.header("CSeq", "20000 SUBSCRIBE")
		b.header("Contact", contact("sip:"+hostport))
		b.header("Max-Forwards", maxfwd)
		b.header("User-Agent", ua)
		b.header("Supported", "replaces, path, timer")
		b.header("Event", eventParams(eventPkg, "vendor", "Grandstream", model, version))
		b.header("Accept", accept)
		b.header("Allow-Events", "ua-profile")
		b.header("Expires", expires)

	case phone.BrandFanvil:
		uri := "sip:MAC=" + mac + "@224.0.1.75"
		vendor, model = "PLANET", "VOIP PHONE"
		if m, ok := parseMAC(mac); ok && [3]byte(m[:3]) == fanvilOUI {
			vendor, ua = "Fanvil", "Fanvil X4 "+version
		}
		b.line("SUBSCRIBE " + uri + " SIP/2.0")
		b.header("Via", via)
		b.header("From", from(uri))
		b.header("To", "<"+uri+">")
		b.header("Call-ID", p.callID)
		b.header("CSeq", "1 SUBSCRIBE")
		b.header("Contact", contact("sip:MAC="+mac+"@"+hostport))
		b.header("Accept", accept)
		b.header("Max-Forwards", maxfwd)
		b.header("User-Agent", ua)
		b.header("Expires", expires)
		b.header("Event", eventParams(eventPkg, "vendor", vendor, model, version))

	case phone.BrandPanasonic:
		uri := "sip:MAC" + mac + "@224.0.1.75"
		ua = strings.Replace(ua, "%s", mac, 1)
		b.line("SUBSCRIBE " + uri + " SIP/2.0")
		b.header("Via", via)
		b.header("From", from(uri))
		b.header("To", "<"+uri+">")
		b.header("Call-ID", p.callID)
		b.header("CSeq", "1 SUBSCRIBE")
		b.header("Contact", contact("sip:MAC"+mac+"@"+hostport))
		b.header("Max-Forwards", maxfwd)
		b.header("User-Agent", ua)
		b.header("Event", eventParams(eventPkg, "vender", "Panasonic", model, version))
		b.header("Expires", expires)
		b.header("Accept", accept)

	case phone.BrandAudioCodes:
		const uri = "sip:224.0.1.75:5060"
		b.line("SUBSCRIBE " + uri + " SIP/2.0")
		b.header("Via", via)
		b.header("From", from("sip:00000001@"+p.ip.String()))
		b.header("To", "<"+uri+">")
		b.header("Call-ID", p.callID)
		b.header("CSeq", "1 SUBSCRIBE")
		b.header("Contact", contact("sip:00000001@"+hostport))
		b.header("Max-Forwards", maxfwd)
		b.header("User-Agent", ua)
		b.header("Event", eventParams(`ua-profile;profile-type="application"`, "vendor", "AudioCodes", model, version))
		b.header("Accept", accept)
		b.header("Expires", expires)
	}
	b.header("Content-Length", "0")
	b.line("")
	sub.raw = b.buf
	sub.ua = ua
	return sub
}

func eventParams(pkg, vendorParam, vendor, model, version string) string {
	return pkg + ";" + vendorParam + `="` + vendor + `";model="` + model + `";version="` + version + `"`
}

// msgWriter appends CRLF-terminated lines.
type msgWriter struct{ buf []byte }

func (w *msgWriter) line(s string) { w.buf = append(append(w.buf, s...), "\r\n"...) }
func (w *msgWriter) header(name, value string) {
	w.buf = append(append(append(w.buf, name...), ": "...), value...)
	w.buf = append(w.buf, "\r\n"...)
}

// grandstreamHost writes an IPv4 address the way Grandstream's Call-IDs do,
// each digit d as the letter 'A'+d: 192.168.1.2 -> BJC.BGI.B.C.
func grandstreamHost(ip string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return 'A' + r - '0'
		}
		return r
	}, ip)
}

const (
	digits   = "0123456789"
	hexChars = "0123456789abcdef"
	alnum    = "abcdefghijklmnopqrstuvwxyz0123456789"
)

func randFrom(set string, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = set[rand.IntN(len(set))]
	}
	return string(b)
}

func randDigits(n int) string { return randFrom(digits, n) }
func randHex(n int) string    { return randFrom(hexChars, n) }
func randAlnum(n int) string  { return randFrom(alnum, n) }

// randMAC returns a random MAC (12 lower-case hex digits) in the block oui.
func randMAC(oui [3]byte) string {
	b := []byte{oui[0], oui[1], oui[2], byte(rand.IntN(256)), byte(rand.IntN(256)), byte(rand.IntN(256))}
	out := make([]byte, 0, 12)
	for _, o := range b {
		out = append(out, hexChars[o>>4], hexChars[o&0xf])
	}
	return string(out)
}

// parseMAC reads 12 hex digits.
func parseMAC(s string) ([6]byte, bool) {
	var m [6]byte
	if len(s) != 12 {
		return m, false
	}
	for i := 0; i < 6; i++ {
		v, err := strconv.ParseUint(s[2*i:2*i+2], 16, 8)
		if err != nil {
			return m, false
		}
		m[i] = byte(v)
	}
	return m, true
}
