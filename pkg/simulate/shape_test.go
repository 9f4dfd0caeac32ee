package simulate

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jart/gosip/sip"

	"github.com/pnpd/pnpd/pkg/phone"
)

const phonesDir = "../../sip/testdata/phones"

// fieldsOf extracts phone.Fields from a raw SUBSCRIBE.
func fieldsOf(m rawMessage) phone.Fields {
	get := func(name string) []byte {
		v, ok := m.get(name)
		if !ok {
			return nil
		}
		return []byte(v)
	}
	return phone.Fields{
		RequestURI: []byte(requestURI(m.start)),
		From:       get("From"), To: get("To"), Contact: get("Contact"),
		UserAgent: get("User-Agent"), Event: get("Event"),
	}
}

// TestSubscribeMatchesCapture rebuilds every brand's captured SUBSCRIBE from
// its random parts (branch, tag, Call-ID) and compares byte for byte.
func TestSubscribeMatchesCapture(t *testing.T) {
	for _, brand := range phone.Brands() {
		t.Run(brand, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(phonesDir, brand+".sip"))
			if err != nil {
				t.Fatal(err)
			}
			m := parseRaw(want)
			via, _ := m.get("Via")
			sentBy, params, _ := strings.Cut(strings.TrimPrefix(via, "SIP/2.0/UDP "), ";")
			hp := netip.MustParseAddrPort(sentBy)
			p := subParams{ip: hp.Addr(), port: int(hp.Port())}
			for _, kv := range strings.Split(params, ";") {
				if v, ok := strings.CutPrefix(kv, "branch="); ok {
					p.branch = v
				}
			}
			from, _ := m.get("From")
			if _, tag, ok := strings.Cut(from, ";tag="); ok {
				p.tag = tag
			}
			p.callID, _ = m.get("Call-ID")
			id := phone.Identify(fieldsOf(m))
			p.mac = id.MAC
			if brand == phone.BrandAudioCodes {
				p.mac = "00908f000001" // not in the packet at all
			}
			if brand == phone.BrandHtek {
				ua, _ := m.get("User-Agent")
				p.uaMAC = ua[strings.LastIndexByte(ua, ' ')+1:]
			}
			got := buildSubscribe(shapes[brand], p)
			if string(got.raw) != string(want) {
				t.Errorf("built:\n%s\nwant (%s.sip):\n%s", got.raw, brand, want)
			}
			if got.ua != string(fieldsOf(m).UserAgent) {
				t.Errorf("ua = %q, want %q", got.ua, fieldsOf(m).UserAgent)
			}
		})
	}
}

// TestSubscribeShapes builds fresh SUBSCRIBEs for every brand, parses them
// with gosip and with phone.Identify, and checks the per-brand facts.
func TestSubscribeShapes(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.10")
	wantPort := map[string]int{"htek": 60000, "yealink": 5059, "grandstream": 5080}
	for _, brand := range phone.Brands() {
		t.Run(brand, func(t *testing.T) {
			s := shapes[brand]
			if s == nil {
				t.Fatalf("no shape for %s", brand)
			}
			if w := wantPort[brand]; w != 0 && s.port != w || w == 0 && s.port != 5060 {
				t.Errorf("port %d", s.port)
			}
			if got := phone.OUIBrand(randMAC(s.oui)); got != brand {
				t.Errorf("default MAC block belongs to %q", got)
			}
			mac := randMAC(s.oui)
			p := s.newParams(ip, s.port, mac)
			sub := buildSubscribe(s, p)
			if again := buildSubscribe(s, s.newParams(ip, s.port, mac)); again.branch == sub.branch || again.callID == sub.callID {
				t.Error("branch and Call-ID are not fresh per run")
			}

			msg, err := sip.ParseMsg(sub.raw)
			if err != nil {
				t.Fatalf("gosip: %v\n%s", err, sub.raw)
			}
			if msg.Method != "SUBSCRIBE" || msg.CallID != sub.callID || msg.CSeq != sub.cseq || msg.CSeqMethod != "SUBSCRIBE" {
				t.Errorf("gosip read %s %q %d %s", msg.Method, msg.CallID, msg.CSeq, msg.CSeqMethod)
			}
			if msg.Via == nil || msg.Via.Host != ip.String() || int(msg.Via.Port) != s.port {
				t.Errorf("Via %+v", msg.Via)
			}
			if (msg.Via.Param.Get("rport") != nil) != s.rport || s.rport == (brand == phone.BrandYealink) {
				t.Errorf("rport: %v", msg.Via.Param.Get("rport") != nil)
			}
			if !strings.HasPrefix(paramValue(msg.Via.Param, "branch"), "z9hG4bK") {
				t.Errorf("branch %q", paramValue(msg.Via.Param, "branch"))
			}
			if got := paramValue(msg.From.Param, "tag"); (got == "") != (brand == phone.BrandFanvil) {
				t.Errorf("From tag %q", got)
			}
			if msg.Contact == nil || msg.Contact.Uri.Host != ip.String() || int(msg.Contact.Uri.Port) != s.port {
				t.Errorf("Contact %v", msg.Contact)
			}
			noUser := brand == phone.BrandSnom || brand == phone.BrandGrandstream
			if (msg.Contact.Uri.User == "") != noUser {
				t.Errorf("Contact user %q", msg.Contact.Uri.User)
			}
			if want := map[string]int{"grandstream": 20000}[brand]; want != 0 && msg.CSeq != want {
				t.Errorf("CSeq %d", msg.CSeq)
			}
			if !strings.HasPrefix(msg.Event, "ua-profile;") || msg.Expires != 0 || msg.Accept != "application/url" {
				t.Errorf("Event %q Expires %d Accept %q", msg.Event, msg.Expires, msg.Accept)
			}
			if brand == phone.BrandPanasonic && !strings.Contains(msg.Event, `vender="Panasonic"`) {
				t.Errorf("Panasonic Event %q", msg.Event)
			}

			id := phone.Identify(fieldsOf(parseRaw(sub.raw)))
			wantMAC := mac
			wantProfile := "device"
			if brand == phone.BrandAudioCodes {
				wantMAC, wantProfile = "", "application"
			}
			if id.Brand != brand || id.MAC != wantMAC || id.Profile != wantProfile || id.Model == "" || id.Firmware == "" {
				t.Errorf("Identify = %+v, want brand %s MAC %q profile %s", id, brand, wantMAC, wantProfile)
			}
			if strings.Contains(string(sub.raw), "224.0.1.75") != (brand != phone.BrandSnom && brand != phone.BrandGigaset) {
				t.Errorf("Request-URI host: %s", sub.raw[:60])
			}
		})
	}
}

func TestFanvilOwnOUI(t *testing.T) {
	s := shapes[phone.BrandFanvil]
	sub := buildSubscribe(s, s.newParams(netip.MustParseAddr("192.0.2.10"), 5060, "0c383e010203"))
	id := phone.Identify(fieldsOf(parseRaw(sub.raw)))
	if id.Brand != "fanvil" || id.MAC != "0c383e010203" || id.Model != "X4" || !strings.HasPrefix(sub.ua, "Fanvil X4 ") {
		t.Errorf("Identify = %+v, ua %q", id, sub.ua)
	}
	if !strings.Contains(string(sub.raw), `vendor="Fanvil"`) {
		t.Errorf("vendor not Fanvil:\n%s", sub.raw)
	}
	if got := phone.OUIBrand(s.own.oui + "010203"); got != phone.BrandFanvil {
		t.Errorf("Fanvil's own block belongs to %q", got)
	}
	// PLANET's other block, and a neighbour of Fanvil's, keep the PLANET shape.
	for _, mac := range []string{"a8f7e0010203", "0c383f010203"} {
		sub := buildSubscribe(s, s.newParams(netip.MustParseAddr("192.0.2.10"), 5060, mac))
		if !strings.HasPrefix(sub.ua, "PLANET VIP-1120PT ") || !strings.Contains(string(sub.raw), `vendor="PLANET"`) {
			t.Errorf("MAC %s: ua %q\n%s", mac, sub.ua, sub.raw)
		}
	}
}

func TestGrandstreamHost(t *testing.T) {
	for in, want := range map[string]string{"192.168.1.2": "BJC.BGI.B.C", "10.0.0.90": "BA.A.A.JA"} {
		if got := grandstreamHost(in); got != want {
			t.Errorf("grandstreamHost(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestRandMAC(t *testing.T) {
	for i := 0; i < 100; i++ {
		m := randMAC("c074ad")
		if n, ok := phone.NormalizeMAC(m); !ok || n != m || !strings.HasPrefix(m, "c074ad") {
			t.Fatalf("randMAC = %q", m)
		}
	}
}
