package pbx

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/phone"
	"github.com/pnpd/pnpd/pkg/pnp"
)

func TestURLHost(t *testing.T) {
	for in, want := range map[string]string{
		"http://admin:123456@192.168.0.25:88":        "192.168.0.25:88",
		"https://prov.example.com/{vendor}/x":        "prov.example.com",
		"https://prov.example.com/x?a=b@c":           "c", // ambiguous: hidden as Redact hides it
		"http://u:pa/ss@h.example/cfg":               "h.example",
		"tftp://10.0.0.1":                            "10.0.0.1",
		"no url":                                     "",
		"http://a:b@c@host/x?u=http://d:e@f/":        "host",
		"http://h/\r\nAction: Originate":             "h",
		"http://evil\r\nAction: Originate@h.example": "h.example",
	} {
		if got := URLHost(in); got != want {
			t.Errorf("URLHost(%q) = %q, want %q", in, got, want)
		}
	}
}

func event(outcome string) pnp.Event {
	return pnp.Event{Kind: pnp.EventDone,
		Identity: phone.Identity{MAC: "0015657322ff", Brand: "yealink", Model: "SIP-T21P", Firmware: "34.72.0.1"},
		Src:      netip.MustParseAddrPort("10.1.2.3:5059"), Interface: "eth0",
		URL: "http://admin:secret@prov.example.com:88/yealink/", Source: "pbx snapshot", Tenant: "acme",
		Outcome: outcome, Time: time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)}
}

func TestSeenRecord(t *testing.T) {
	rec := SeenRecord(event("provisioned"))
	want := "brand=yealink&firmware=34.72.0.1&host=prov.example.com%3A88&interface=eth0&model=SIP-T21P&outcome=provisioned&source=10.1.2.3%3A5059&tenant=acme&time=2026-11-26T02%3A00%3A00Z"
	if rec != want {
		t.Errorf("got  %s\nwant %s", rec, want)
	}
	if strings.Contains(rec, "secret") || strings.Contains(rec, "admin") {
		t.Errorf("credentials in the record: %s", rec)
	}
	v, err := ParseSeen(rec)
	if err != nil || v.Get("model") != "SIP-T21P" || v.Get("time") != "2026-11-26T02:00:00Z" {
		t.Errorf("ParseSeen: %v %v", v, err)
	}

	// A hostile phone: long and control-laden fields stay under 1 KB and
	// on one line.
	ev := event("observed")
	ev.Identity.Model = strings.Repeat("\r\nAction: Originate ", 400)
	ev.Identity.Firmware = strings.Repeat("é", 1000)
	ev.Interface = strings.Repeat("x", 2000)
	ev.Identity.Brand = strings.Repeat("\x01", 200)
	ev.Tenant = strings.Repeat("%", 300)
	ev.URL = "http://" + strings.Repeat("%", 300) + "/"
	rec = SeenRecord(ev)
	if len(rec) > MaxRecord || strings.ContainsAny(rec, "\r\n") {
		t.Errorf("record of %d bytes, or with a line break: %q", len(rec), rec)
	}
	v, err = ParseSeen(rec)
	if err != nil || v.Get("outcome") != "observed" || v.Get("time") == "" {
		t.Errorf("ParseSeen: %v %v", v, err)
	}
}

func TestEventHeaders(t *testing.T) {
	ev := event("rejected")
	ev.Reason = "NOTIFY rejected with 488 for http://admin:secret@prov.example.com/x"
	ev.Identity.Model = "T21\r\nAction: Originate"
	var got []string
	for _, h := range eventHeaders(ev) {
		got = append(got, h.Key+"="+h.Value)
	}
	want := []string{"Mac=0015657322ff", "Vendor=yealink", "Model=T21??Action: Originate", "Version=34.72.0.1",
		"Ip=10.1.2.3", "Interface=eth0", "Tenant=acme", "UrlHost=prov.example.com:88",
		"Reason=NOTIFY rejected with 488 for http://prov.example.com"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got  %q\nwant %q", got, want)
	}

	// Empty headers are left out.
	ev = pnp.Event{Kind: pnp.EventSeen, Identity: phone.Identity{Brand: "audiocodes"}}
	if hs := eventHeaders(ev); len(hs) != 1 || hs[0].Key != "Vendor" {
		t.Errorf("got %v", hs)
	}
}
