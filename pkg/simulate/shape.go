package simulate

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pnpd/pnpd/pkg/phone"
)

// shape is how one brand's phone speaks PnP: its source port, the block its
// default MAC comes from, the model it claims, its SUBSCRIBE and the files it
// fetches.
type shape struct {
	brand string
	port  int    // source port = Via = Contact port
	oui   string // block of the default random MAC, 6 hex digits: the captured phone's
	rport bool   // Via carries ;rport
	model string // for {model}, and {MODEL} in Panasonic URLs and file names
	fw    string // for {fw}, and {fwver} in Panasonic URLs
	ua    string // for {ua}, also sent on HTTP fetches; may hold {mac}, {MAC} and {uamac}
	// vendor is for {vendor}, unless the MAC is in own's block: then own's
	// User-Agent and vendor replace ua and vendor.
	vendor    string
	own       *variant
	subscribe string // the SUBSCRIBE template (see buildSubscribe)
	fetch     fetchPlan
}

// variant is the phone a shape speaks as when its MAC is in the block oui.
type variant struct{ oui, ua, vendor string }

// The SUBSCRIBE of each brand, line for line as sip/testdata/phones/<brand>.sip
// shows it, without the Content-Length that ends them all. buildSubscribe fills
// in the placeholders: {mac} and {MAC} (the MAC in lower and upper case), {ip}
// and {port} (the phone's address), {via}, {tag} (";tag=..." or nothing),
// {call-id}, {ua}, {vendor}, {model} and {fw}.
const (
	// Htek and Yealink.
	subscribeYealink = `SUBSCRIBE sip:MAC{mac}@224.0.1.75 SIP/2.0
Via: {via}
From: <sip:MAC{mac}@224.0.1.75>{tag}
To: <sip:MAC{mac}@224.0.1.75>
Call-ID: {call-id}
CSeq: 1 SUBSCRIBE
Contact: <sip:MAC{mac}@{ip}:{port}>
Accept: application/url
Max-Forwards: 70
User-Agent: {ua}
Expires: 0
Event: ua-profile;profile-type="device";vendor="{vendor}";model="{model}";version="{fw}"
`
	subscribeSnom = `SUBSCRIBE sip:MAC%3a{MAC}@intern.snom.de SIP/2.0
Via: {via}
From: <sip:MAC%3a{MAC}@intern.snom.de>{tag}
To: <sip:MAC%3a{MAC}@intern.snom.de>
Call-ID: {call-id}
CSeq: 1 SUBSCRIBE
Max-Forwards: 70
Contact: <sip:{ip}:{port}>
Event: ua-profile;profile-type="device";vendor="{vendor}";model="OEM";version="{fw}"
Expires: 0
Accept: application/url
User-Agent: {ua}
`
	subscribeGigaset = `SUBSCRIBE sip:MAC%3A{MAC}@local SIP/2.0
Via: {via}
From: <sip:MAC%3A{MAC}@local>{tag}
To: <sip:MAC%3A{MAC}@local>
Call-ID: {call-id}
CSeq: 1 SUBSCRIBE
Contact: <sip:MAC%3A{MAC}@{ip}:{port}>
Max-Forwards: 70
User-Agent: {ua}
Event: ua-profile;profile-type="device";vendor="{vendor}";model="OEM";version="{fw}"
Expires: 0
Accept: application/url
`
	subscribeGrandstream = `SUBSCRIBE sip:MAC%3A{MAC}@224.0.1.75 SIP/2.0
Via: {via}
From: <sip:MAC%3A{MAC}@224.0.1.75>{tag}
To: <sip:MAC%3A{MAC}@224.0.1.75>
Call-ID: {call-id}
CSeq: 20000 SUBSCRIBE
Contact: <sip:{ip}:{port}>
Max-Forwards: 70
User-Agent: {ua}
Supported: replaces, path, timer
Event: ua-profile;profile-type="device";vendor="{vendor}";model="{model}";version="{fw}"
Accept: application/url
Allow-Events: ua-profile
Expires: 0
`
	// Fanvil and PLANET phones send model "VOIP PHONE" whatever they are.
	subscribeFanvil = `SUBSCRIBE sip:MAC={mac}@224.0.1.75 SIP/2.0
Via: {via}
From: <sip:MAC={mac}@224.0.1.75>{tag}
To: <sip:MAC={mac}@224.0.1.75>
Call-ID: {call-id}
CSeq: 1 SUBSCRIBE
Contact: <sip:MAC={mac}@{ip}:{port}>
Accept: application/url
Max-Forwards: 70
User-Agent: {ua}
Expires: 0
Event: ua-profile;profile-type="device";vendor="{vendor}";model="VOIP PHONE";version="{fw}"
`
	// Panasonic spells the vendor parameter "vender".
	subscribePanasonic = `SUBSCRIBE sip:MAC{mac}@224.0.1.75 SIP/2.0
Via: {via}
From: <sip:MAC{mac}@224.0.1.75>{tag}
To: <sip:MAC{mac}@224.0.1.75>
Call-ID: {call-id}
CSeq: 1 SUBSCRIBE
Contact: <sip:MAC{mac}@{ip}:{port}>
Max-Forwards: 70
User-Agent: {ua}
Event: ua-profile;profile-type="device";vender="{vendor}";model="{model}";version="{fw}"
Expires: 0
Accept: application/url
`
	// AudioCodes sends no MAC at all.
	subscribeAudioCodes = `SUBSCRIBE sip:224.0.1.75:5060 SIP/2.0
Via: {via}
From: <sip:00000001@{ip}>{tag}
To: <sip:224.0.1.75:5060>
Call-ID: {call-id}
CSeq: 1 SUBSCRIBE
Contact: <sip:00000001@{ip}:{port}>
Max-Forwards: 70
User-Agent: {ua}
Event: ua-profile;profile-type="application";vendor="{vendor}";model="{model}";version="{fw}"
Accept: application/url
Expires: 0
`
)

var shapes = map[string]*shape{
	phone.BrandHtek: {
		brand: phone.BrandHtek, port: 60000, oui: "001fc1", rport: true,
		model: "UC912G", fw: "2.0.4.4.46", ua: "Htek UC912G {uamac}",
		vendor: "Htek", subscribe: subscribeYealink,
		fetch: fetchPlan{files: []string{"factory0000.xml", "cfg0000.xml", "{mac}.cfg", "cfg{mac}", "cfg{mac}.xml"}},
	},
	phone.BrandYealink: {
		brand: phone.BrandYealink, port: 5059, oui: "001565",
		model: "T21", fw: "34.72.0.1", ua: "Yealink SIP-T21P 34.72.0.1",
		vendor: "Yealink", subscribe: subscribeYealink,
		fetch: fetchPlan{files: []string{"y000000000000.cfg", "{mac}.cfg"}, all: true},
	},
	phone.BrandSnom: {
		brand: phone.BrandSnom, port: 5060, oui: "000413", rport: true,
		model: "snom320", fw: "7.3.30", ua: "snom320/7.3.30",
		vendor: "OEM", subscribe: subscribeSnom,
		fetch: fetchPlan{macros: []macro{{"{mac}", "{MAC}"}}},
	},
	phone.BrandGigaset: {
		brand: phone.BrandGigaset, port: 5060, oui: "7c2f80", rport: true,
		model: "N670 IP PRO", fw: "83.V2.39.0", ua: "Gigaset N670 IP PRO/83.V2.39.0+build.a546b76;{MAC}",
		vendor: "OEM", subscribe: subscribeGigaset,
		fetch: fetchPlan{macros: []macro{{"%MACD", "{MAC}"}}},
	},
	phone.BrandGrandstream: {
		brand: phone.BrandGrandstream, port: 5080, oui: "c074ad", rport: true,
		model: "GXP2170", fw: "1.0.11.3", ua: "Grandstream GXP2170 1.0.11.3",
		vendor: "Grandstream", subscribe: subscribeGrandstream,
		fetch: fetchPlan{files: []string{"cfg{mac}", "cfg{mac}.xml", "cfg.xml"}},
	},
	phone.BrandFanvil: {
		brand: phone.BrandFanvil, port: 5060, oui: "00304f", rport: true,
		model: "VIP-1120PT", fw: "2.3.1.2570", ua: "PLANET VIP-1120PT 2.3.1.2570",
		// A MAC from Fanvil's own block makes the phone a Fanvil instead of
		// the PLANET rebrand that the capture shows.
		vendor: "PLANET", own: &variant{oui: "0c383e", ua: "Fanvil X4 2.3.1.2570", vendor: "Fanvil"},
		subscribe: subscribeFanvil,
		fetch:     fetchPlan{files: []string{"{mac}.cfg"}, keepFile: true, macros: []macro{{"$mac", "{mac}"}}},
	},
	phone.BrandPanasonic: {
		brand: phone.BrandPanasonic, port: 5060, oui: "0080f0", rport: true,
		model: "KX-HDV130", fw: "03.000", ua: "Panasonic_KX-HDV130/03.000 ({mac})",
		vendor: "Panasonic", subscribe: subscribePanasonic,
		fetch: fetchPlan{files: []string{"{MODEL}.cfg"}, keepFile: true,
			macros: []macro{{"{mac}", "{mac}"}, {"{MAC}", "{MAC}"}, {"{MODEL}", "{MODEL}"}, {"{fwver}", "{fwver}"}}},
	},
	phone.BrandAudioCodes: {
		brand: phone.BrandAudioCodes, port: 5060, oui: "00908f", rport: true,
		model: "445HD", fw: "3.4.4.1000.62", ua: "AudioCodes-Sip-Phone-445HD/3.4.4.1000.62",
		vendor: "AudioCodes", subscribe: subscribeAudioCodes,
		fetch: fetchPlan{files: []string{"{mac}.cfg"}, keepFile: true},
	},
}

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

// buildSubscribe renders the brand's SUBSCRIBE template with p, and reads the
// CSeq number and the From and Contact URIs back from it.
func buildSubscribe(s *shape, p subParams) subscribe {
	ua, vendor := s.ua, s.vendor
	if s.own != nil && strings.HasPrefix(p.mac, s.own.oui) {
		ua, vendor = s.own.ua, s.own.vendor
	}
	ip, port := p.ip.String(), strconv.Itoa(p.port)
	via := "SIP/2.0/UDP " + ip + ":" + port + ";branch=" + p.branch
	if s.rport {
		via += ";rport"
	}
	tag := ""
	if p.tag != "" {
		tag = ";tag=" + p.tag
	}
	vars := []string{
		"{mac}", p.mac, "{MAC}", strings.ToUpper(p.mac), "{uamac}", p.uaMAC, "{ip}", ip, "{port}", port,
		"{via}", via, "{tag}", tag, "{call-id}", p.callID, "{vendor}", vendor, "{model}", s.model, "{fw}", s.fw,
	}
	ua = strings.NewReplacer(vars...).Replace(ua)
	// One pass: the template's line ends become CRLF, the values stay as they are.
	raw := []byte(strings.NewReplacer(append(vars, "{ua}", ua, "\n", "\r\n")...).Replace(s.subscribe) +
		"Content-Length: 0\r\n\r\n")

	m := parseRaw(raw)
	from, _ := m.get("From")
	contact, _ := m.get("Contact")
	cseq, _ := m.get("CSeq")
	seq, _, _ := strings.Cut(cseq, " ")
	n, _ := strconv.Atoi(seq)
	return subscribe{
		raw: raw, callID: p.callID, cseq: n, branch: p.branch, tag: p.tag,
		from: angleURI(from), contact: angleURI(contact), rport: s.rport, ua: ua,
	}
}

// angleURI returns the URI between '<' and '>' of a From or Contact value.
func angleURI(v string) string {
	_, uri, _ := strings.Cut(v, "<")
	uri, _, _ = strings.Cut(uri, ">")
	return uri
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

// randMAC returns a random MAC (12 lower-case hex digits) in the block oui
// (6 lower-case hex digits).
func randMAC(oui string) string { return oui + randHex(6) }

// Packet is one phone's SUBSCRIBE as NewSubscribe built it, for load
// generators that send many phones from one socket.
type Packet struct {
	Raw    []byte // the whole datagram
	CallID string
	MAC    string // 12 lower-case hex digits
	Port   int    // the brand's source port, also in Via and Contact
}

// NewSubscribe builds the SUBSCRIBE that a phone of the brand vendor (one of
// phone.Brands()) with the given MAC (any spelling phone.NormalizeMAC takes;
// empty: a random one in the brand's block) sends from ip, in the brand's
// shape and from the brand's port, with fresh branch, tag and Call-ID, as Run
// sends it.
func NewSubscribe(vendor string, ip netip.Addr, mac string) (Packet, error) {
	s := shapes[strings.ToLower(strings.TrimSpace(vendor))]
	if s == nil {
		return Packet{}, fmt.Errorf("%w: Vendor %q is not one of %s", ErrOptions, vendor, strings.Join(phone.Brands(), ", "))
	}
	if !ip.Is4() {
		return Packet{}, fmt.Errorf("%w: %s is not an IPv4 address", ErrOptions, ip)
	}
	if mac == "" {
		mac = randMAC(s.oui)
	} else {
		n, ok := phone.NormalizeMAC(mac)
		if !ok {
			return Packet{}, fmt.Errorf("%w: MAC %q is not a MAC", ErrOptions, mac)
		}
		mac = n
	}
	sub := buildSubscribe(s, s.newParams(ip, s.port, mac))
	return Packet{Raw: sub.raw, CallID: sub.callID, MAC: mac, Port: s.port}, nil
}

// OUI returns the block (6 lower-case hex digits) that the brand's captured
// phone has its MAC from, or "" for an unknown brand.
func OUI(vendor string) string {
	if s := shapes[strings.ToLower(strings.TrimSpace(vendor))]; s != nil {
		return s.oui
	}
	return ""
}
