package phone

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pnpd/pnpd/sip"
)

// phonesDir holds real phone-shaped SUBSCRIBEs (owned by the sip package).
const phonesDir = "../../sip/testdata/phones"

// splitSUBSCRIBE is a test-only header splitter, so that these tests do not
// depend on the sip package's message parser: it unfolds continuation lines,
// knows the compact names that matter (f t m o), and ignores everything else.
func splitSUBSCRIBE(t testing.TB, msg []byte) Fields {
	t.Helper()
	msg = bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
	head, _, _ := bytes.Cut(msg, []byte("\n\n"))
	lines := strings.Split(string(head), "\n")
	reqLine := strings.Fields(lines[0])
	if len(reqLine) != 3 {
		t.Fatalf("bad request line %q", lines[0])
	}
	var f Fields
	f.RequestURI = []byte(reqLine[1])
	var unfolded []string
	for _, l := range lines[1:] {
		if (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) && len(unfolded) > 0 {
			unfolded[len(unfolded)-1] += " " + strings.TrimSpace(l)
			continue
		}
		unfolded = append(unfolded, l)
	}
	for _, l := range unfolded {
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			t.Fatalf("bad header line %q", l)
		}
		v := []byte(strings.TrimSpace(value))
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "from", "f":
			f.From = v
		case "to", "t":
			f.To = v
		case "contact", "m":
			f.Contact = v
		case "user-agent":
			f.UserAgent = v
		case "event", "o":
			f.Event = v
		}
	}
	return f
}

func readPhones(t testing.TB) map[string]Fields {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(phonesDir, "*.sip"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no phone files in %s (err %v)", phonesDir, err)
	}
	out := map[string]Fields{}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(file), ".sip")] = splitSUBSCRIBE(t, b)
	}
	return out
}

func TestIdentifyPhones(t *testing.T) {
	want := map[string]Identity{
		"audiocodes":     {"", "audiocodes", "445HD", "3.4.4.1000.62", "application"},
		"compact-folded": {"001565aabbcc", "yealink", "T46S", "66.86.0.15", "device"},
		"fanvil":         {"00304fa99948", "fanvil", "VIP-1120PT", "2.3.1.2570", "device"},
		"gigaset":        {"7c2f8030d21e", "gigaset", "N670 IP PRO", "83.V2.39.0+build.a546b76", "device"},
		"grandstream":    {"c074ad112233", "grandstream", "GXP2170", "1.0.11.3", "device"},
		"htek":           {"001fc11b4e1c", "htek", "UC912G", "2.0.4.4.46", "device"},
		"panasonic":      {"0080f0a1b2c3", "panasonic", "KX-HDV130", "03.000", "device"},
		"snom":           {"00135e874b49", "snom", "snom320", "7.3.30", "device"},
		"snom-m700":      {"000413b50a1f", "snom", "M700", "4.50", "device"},
		"yealink":        {"0015657322ff", "yealink", "T21", "34.72.0.1", "device"},
	}
	for name, f := range readPhones(t) {
		t.Run(name, func(t *testing.T) {
			w, ok := want[name]
			if !ok {
				t.Fatalf("no expectation for %s.sip: add one", name)
			}
			if got := Identify(f); got != w {
				t.Errorf("Identify =\n %+v, want\n %+v", got, w)
			}
			if n := testing.AllocsPerRun(100, func() { Identify(f) }); n > 1 {
				t.Errorf("Identify allocates %v times, want <= 1", n)
			}
		})
	}
}

func TestIdentifyOdd(t *testing.T) {
	const ruri = "sip:MAC001fc11b4e1c@224.0.1.75"
	tests := []struct {
		name string
		f    Fields
		want Identity
	}{
		{"empty", Fields{}, Identity{}},
		{"MAC colon as URI password", Fields{RequestURI: []byte("sip:MAC:001122334455@10.0.0.1")},
			Identity{MAC: "001122334455"}},
		{"MAC colon-separated", Fields{RequestURI: []byte("sip:MAC:00:1F:C1:1B:4E:1C@h")},
			Identity{MAC: "001fc11b4e1c", Brand: "htek"}},
		{"MAC escaped upper", Fields{RequestURI: []byte("sip:MAC%3A001FC11B4E1C@h")},
			Identity{MAC: "001fc11b4e1c", Brand: "htek"}},
		{"MAC equals", Fields{RequestURI: []byte("sip:mac=001565AABBCC@h")},
			Identity{MAC: "001565aabbcc", Brand: "yealink"}},
		{"MAC equals colon-separated", Fields{RequestURI: []byte("sip:MAC=00:15:65:AA:BB:CC@h")},
			Identity{MAC: "001565aabbcc", Brand: "yealink"}},
		{"MAC escaped colon, colon-separated", Fields{RequestURI: []byte("sip:MAC%3a00:15:65:aa:bb:cc@h")},
			Identity{MAC: "001565aabbcc", Brand: "yealink"}},
		{"MAC colon-separated in To", Fields{To: []byte("<sip:MAC:00:1F:C1:1B:4E:1C@h>")},
			Identity{MAC: "001fc11b4e1c", Brand: "htek"}},
		{"MAC user params", Fields{RequestURI: []byte("sip:MAC001565aabbcc;user=phone@h")},
			Identity{MAC: "001565aabbcc", Brand: "yealink"}},
		{"MAC escaped twice is not a MAC", Fields{RequestURI: []byte("sip:MAC%3a%3a001565aabbcc@h")}, Identity{}},
		{"MAC too short", Fields{RequestURI: []byte("sip:MAC001565aabbc@h")}, Identity{}},
		{"bare 12 hex user is not a MAC", Fields{RequestURI: []byte("sip:004930123456@h")}, Identity{}},
		{"IP address host only", Fields{RequestURI: []byte("sip:192.168.1.2:5060"),
			Contact: []byte("<sip:192.168.1.2:5060>")}, Identity{}},
		{"tel URI", Fields{RequestURI: []byte("tel:MAC001565aabbcc@h")}, Identity{}},
		{"To wins over From", Fields{
			To:   []byte("<sip:MAC%3a000413B50A1F@intern.snom.de>"),
			From: []byte("<sip:MAC001565aabbcc@h>;tag=1")},
			Identity{MAC: "000413b50a1f", Brand: "snom"}},
		{"From addr-spec with tag", Fields{From: []byte("sip:MAC001565aabbcc@h;tag=1")},
			Identity{MAC: "001565aabbcc", Brand: "yealink"}},
		{"quoted display name with angle", Fields{From: []byte(`"a<b\"c" <sip:MAC001565aabbcc@h>;tag=1`)},
			Identity{MAC: "001565aabbcc", Brand: "yealink"}},
		{"Contact only", Fields{Contact: []byte("<sip:MAC=00304fa99948@192.168.1.179:5060>")},
			Identity{MAC: "00304fa99948", Brand: "fanvil"}},
		{"Contact list", Fields{Contact: []byte(`"a, b" <sip:MAC=00304fa99948@192.168.1.179:5060>, <sip:x@h>`)},
			Identity{MAC: "00304fa99948", Brand: "fanvil"}},
		{"URI beats User-Agent token", Fields{RequestURI: []byte(ruri), UserAgent: []byte("Htek UC912G 001fc1200b41")},
			Identity{MAC: "001fc11b4e1c", Brand: "htek", Model: "UC912G"}},
		{"User-Agent token", Fields{UserAgent: []byte("Htek UC912G 001fc1200b41")},
			Identity{MAC: "001fc1200b41", Brand: "htek", Model: "UC912G"}},
		{"User-Agent colon MAC", Fields{UserAgent: []byte("Foo 1.0 MAC:00:15:65:12:34:56")},
			Identity{MAC: "001565123456", Brand: "yealink"}},
		{"User-Agent MAC: prefix", Fields{UserAgent: []byte("Acme/1.0 MAC:00-04-13-12-34-56")},
			Identity{MAC: "000413123456", Brand: "snom"}},
		{"brand word then slash", Fields{UserAgent: []byte("snom/8.7.5")},
			Identity{Brand: "snom", Firmware: "8.7.5"}},
		{"User-Agent digits with known OUI", Fields{UserAgent: []byte("X (000413123456)")},
			Identity{MAC: "000413123456", Brand: "snom"}},
		{"User-Agent digits with unknown OUI", Fields{UserAgent: []byte("Acme 1.0 build 202301011230")}, Identity{}},
		{"User-Agent IPv6 and IPv4", Fields{UserAgent: []byte("Acme fe80::21f:c1ff:fe1b:4e1c 192.168.1.2")}, Identity{}},
		{"Yealink UA with MAC", Fields{UserAgent: []byte("Yealink SIP-T46S 66.86.0.15 805ec0123456")},
			Identity{MAC: "805ec0123456", Brand: "yealink", Model: "SIP-T46S", Firmware: "66.86.0.15"}},
		{"vendor OEM, UA unknown, OUI", Fields{RequestURI: []byte(ruri), UserAgent: []byte("Sangoma S500 1.2.3"),
			Event: []byte(`ua-profile;vendor="OEM";model="OEM";version="OEM"`)},
			Identity{MAC: "001fc11b4e1c", Brand: "htek"}},
		{"vendor unknown then OUI", Fields{RequestURI: []byte(ruri),
			Event: []byte(`ua-profile;vendor="Sangoma";model="S500";version="1.2.3"`)},
			Identity{MAC: "001fc11b4e1c", Brand: "htek", Model: "S500", Firmware: "1.2.3"}},
		{"vendor beats OUI", Fields{RequestURI: []byte(ruri), Event: []byte(`ua-profile;vendor="Yealink"`)},
			Identity{MAC: "001fc11b4e1c", Brand: "yealink"}},
		{"vendor planet lower-case", Fields{Event: []byte(`ua-profile;vendor=planet;model="VOIP PHONE";version="2.3"`)},
			Identity{Brand: "fanvil", Model: "VOIP PHONE", Firmware: "2.3"}},
		{"vender", Fields{Event: []byte(`ua-profile;vendor="OEM";vender="Panasonic";model="KX-UT670"`)},
			Identity{Brand: "panasonic", Model: "KX-UT670"}},
		{"unknown brands stay empty", Fields{UserAgent: []byte("Akuvox R48G 48.1.2.3"),
			Event: []byte(`ua-profile;vendor="Akuvox"`)}, Identity{}},
		{"Escene", Fields{UserAgent: []byte("Escene ES620 1.0"), RequestURI: []byte("sip:MAC00268b112233@h")},
			Identity{MAC: "00268b112233"}},
		{"Flyingvoice", Fields{UserAgent: []byte("Flyingvoice FIP10 1.0")}, Identity{}},
		{"Planetarium is not PLANET", Fields{UserAgent: []byte("Planetarium X1 1.0")}, Identity{}},
		{"UA model when Event has none", Fields{UserAgent: []byte("Yealink SIP-T21P 34.72.0.1")},
			Identity{Brand: "yealink", Model: "SIP-T21P", Firmware: "34.72.0.1"}},
		{"Event model, UA firmware", Fields{UserAgent: []byte("Grandstream GXP2170 1.0.11.3"),
			Event: []byte(`ua-profile;model="GXP2170"`)},
			Identity{Brand: "grandstream", Model: "GXP2170", Firmware: "1.0.11.3"}},
		{"UA model, Event firmware", Fields{UserAgent: []byte("snom320"),
			Event: []byte(`ua-profile;vendor="OEM";model="OEM";version="7.3.30"`)},
			Identity{Brand: "snom", Model: "snom320", Firmware: "7.3.30"}},
		{"VOIP PHONE kept without UA model", Fields{UserAgent: []byte("PLANET"),
			Event: []byte(`ua-profile;vendor="PLANET";model="VOIP PHONE";version="2.3.1.2570"`)},
			Identity{Brand: "fanvil", Model: "VOIP PHONE", Firmware: "2.3.1.2570"}},
		{"Fanvil UA", Fields{UserAgent: []byte("Fanvil X4 2.10.2.6887"),
			Event: []byte(`ua-profile;vendor="Fanvil";model="VOIP PHONE";version="2.10.2.6887"`)},
			Identity{Brand: "fanvil", Model: "X4", Firmware: "2.10.2.6887"}},
		{"AUDC-IPPhone with model in parens", Fields{UserAgent: []byte("AUDC-IPPhone/2.2.8.61 (440HDG-Rev0; 00908F602AAC)")},
			Identity{MAC: "00908f602aac", Brand: "audiocodes", Model: "440HDG", Firmware: "2.2.8.61"}},
		{"AUDC-IPPhone model_UC_version", Fields{UserAgent: []byte("AUDC-IPPhone-C450HD_UC_3.4.6.604/1")},
			Identity{Brand: "audiocodes", Model: "C450HD", Firmware: "3.4.6.604"}},
		{"escaped quote in model dropped", Fields{UserAgent: []byte("Yealink SIP-T21P 34.72.0.1"),
			Event: []byte(`ua-profile;vendor="Yealink";model="T2\"1";version="34"`)},
			Identity{Brand: "yealink", Model: "SIP-T21P", Firmware: "34.72.0.1"}},
		{"path in model dropped", Fields{Event: []byte(`ua-profile;model="../../etc/passwd";version=".."`)}, Identity{}},
		{"model too long dropped", Fields{Event: []byte(`ua-profile;model="` + strings.Repeat("A", MaxModelSize+1) + `"`)}, Identity{}},
		{"model at limit kept", Fields{Event: []byte(`ua-profile;model="` + strings.Repeat("A", MaxModelSize) + `"`)},
			Identity{Model: strings.Repeat("A", MaxModelSize)}},
		{"control character dropped", Fields{Event: []byte("ua-profile;model=\"T2\x001\";version=\"1\r\n\"")}, Identity{}},
		{"spaces around params", Fields{Event: []byte(`ua-profile ; Profile-Type = "user" ; VENDOR = "Snom" ; model = "D785"`)},
			Identity{Brand: "snom", Model: "D785", Profile: "user"}},
		{"quoted semicolon", Fields{Event: []byte(`ua-profile;model="a;vendor=yealink";vendor="Htek"`)},
			Identity{Brand: "htek"}},
		{"unterminated quote", Fields{Event: []byte(`ua-profile;profile-type="device`)}, Identity{Profile: "device"}},
		{"odd profile copied", Fields{Event: []byte(`ua-profile;profile-type=x-acme`)}, Identity{Profile: "x-acme"}},
		{"bad profile dropped", Fields{Event: []byte(`ua-profile;profile-type="a b"`)}, Identity{}},
		{"first vendor that names a brand wins", Fields{Event: []byte(`ua-profile;vendor="";vendor="Gigaset";vendor="Snom"`)},
			Identity{Brand: "gigaset"}},
		{"no params", Fields{Event: []byte("ua-profile")}, Identity{}},
		// Found by FuzzIdentify: OEM from the User-Agent is a placeholder too.
		{"User-Agent model OEM", Fields{UserAgent: []byte("PLANET OEM")}, Identity{Brand: "fanvil"}},
		{"User-Agent firmware OEM", Fields{UserAgent: []byte("snom320/OEM")}, Identity{Brand: "snom", Model: "snom320"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Identify(tt.f); got != tt.want {
				t.Errorf("Identify =\n %+v, want\n %+v", got, tt.want)
			}
			if n := testing.AllocsPerRun(100, func() { Identify(tt.f) }); n > 1 {
				t.Errorf("Identify allocates %v times, want <= 1", n)
			}
		})
	}
}

// TestIdentifyEventFallback covers Event values that sip.ParseEvent refuses:
// the parameters before the broken one count, and a quoted value without its
// closing quote runs to the end. sip's error costs one allocation.
func TestIdentifyEventFallback(t *testing.T) {
	tests := []struct {
		name  string
		event string
		want  Identity
	}{
		{"unterminated quote after others", `ua-profile;vendor="Snom";model = "D785`, Identity{Brand: "snom", Model: "D785"}},
		{"cut at MaxFieldSize", `ua-profile;vendor="Yealink";model="T2` + strings.Repeat("1", MaxFieldSize),
			Identity{Brand: "yealink"}}, // the model, cut, is too long
		{"trailing semicolon", `ua-profile;model="T21";version="1.2";`, Identity{Model: "T21", Firmware: "1.2"}},
		{"no package", `;profile-type="user";model="D785"`, Identity{Model: "D785", Profile: "user"}},
		{"broken parameter ends the list", `ua-profile;model="T21";;version="1.2"`, Identity{Model: "T21"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := Fields{Event: []byte(tt.event)}
			if _, _, err := sip.ParseEvent(clip(f.Event)); err == nil {
				t.Fatalf("sip.ParseEvent accepts %q: not a fallback case", tt.event)
			}
			if got := Identify(f); got != tt.want {
				t.Errorf("Identify =\n %+v, want\n %+v", got, tt.want)
			}
			if n := testing.AllocsPerRun(100, func() { Identify(f) }); n > 2 {
				t.Errorf("Identify allocates %v times, want <= 2", n)
			}
		})
	}
}

// TestIdentifyAllocsRefused checks the documented bound for values the sip
// package refuses: one allocation for the result and one per refused value.
func TestIdentifyAllocsRefused(t *testing.T) {
	f := Fields{
		RequestURI: []byte("sip:MAC001565aabbcc@h:99999"),
		From:       []byte("<sip:MAC001565aabbcc@h"),
		To:         []byte("sip:MAC001565aabbcc@h;tag=\"x"),
		Contact:    []byte("< sip:MAC001565aabbcc@h >"),
		UserAgent:  []byte("Yealink SIP-T21P 34.72.0.1"),
		Event:      []byte(`ua-profile;;vendor="Yealink"`),
	}
	want := Identity{Brand: "yealink", Model: "SIP-T21P", Firmware: "34.72.0.1"}
	if got := Identify(f); got != want {
		t.Errorf("Identify =\n %+v, want\n %+v", got, want)
	}
	if n := testing.AllocsPerRun(100, func() { Identify(f) }); n > 6 {
		t.Errorf("Identify allocates %v times, want <= 6", n)
	}
}

func TestIdentifyHugeInput(t *testing.T) {
	big := bytes.Repeat([]byte("a"), 1<<20)
	ua := append(append([]byte{}, big...), " 001565aabbcc"...)
	id := Identify(Fields{RequestURI: big, From: big, To: big, Contact: big, UserAgent: ua, Event: big})
	if id != (Identity{}) {
		t.Errorf("Identify(huge) = %+v, want zero (the MAC lies beyond MaxFieldSize)", id)
	}
}

func BenchmarkIdentify(b *testing.B) {
	f := readPhones(b)["gigaset"]
	b.ReportAllocs()
	for b.Loop() {
		Identify(f)
	}
}

// BenchmarkIdentifyPhones runs Identify on each phone file, one sub-benchmark
// a phone.
func BenchmarkIdentifyPhones(b *testing.B) {
	phones := readPhones(b)
	names := make([]string, 0, len(phones))
	for name := range phones {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		f := phones[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Identify(f)
			}
		})
	}
}
