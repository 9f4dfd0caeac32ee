package phone

import (
	"strings"
	"testing"
)

// FuzzIdentify checks that Identify never panics, that what it returns keeps
// its documented form, and that an Identity survives a round trip: a canonical
// SUBSCRIBE built from it identifies the same. The committed corpus is under
// testdata/fuzz/FuzzIdentify; the phone files are added as seeds too.
func FuzzIdentify(f *testing.F) {
	for _, p := range readPhones(f) {
		f.Add(p.RequestURI, p.From, p.To, p.Contact, p.UserAgent, p.Event)
	}
	f.Fuzz(func(t *testing.T, ruri, from, to, contact, ua, event []byte) {
		in := Fields{RequestURI: ruri, From: from, To: to, Contact: contact, UserAgent: ua, Event: event}
		id := Identify(in)
		checkIdentity(t, id)
		if again := Identify(in); again != id {
			t.Fatalf("Identify is not deterministic: %+v then %+v", id, again)
		}
		rebuilt := Identify(canonical(id))
		if rebuilt != id {
			t.Fatalf("round trip: %+v -> %+v", id, rebuilt)
		}
	})
}

// checkIdentity asserts the documented form of every Identity field.
func checkIdentity(t *testing.T, id Identity) {
	t.Helper()
	if id.MAC != "" {
		if n, ok := NormalizeMAC(id.MAC); !ok || n != id.MAC {
			t.Fatalf("MAC %q is not 12 lower-case hex digits", id.MAC)
		}
	}
	if id.Brand != "" && !IsBrand(id.Brand) {
		t.Fatalf("Brand %q is not in Brands", id.Brand)
	}
	if id.Model != "" && !okValue([]byte(id.Model), MaxModelSize) {
		t.Fatalf("Model %q breaks the documented charset or size", id.Model)
	}
	if id.Firmware != "" && !okValue([]byte(id.Firmware), MaxFirmwareSize) {
		t.Fatalf("Firmware %q breaks the documented charset or size", id.Firmware)
	}
	if strings.EqualFold(id.Model, "OEM") || strings.EqualFold(id.Firmware, "OEM") {
		t.Fatalf("OEM placeholder returned: %+v", id)
	}
	if len(id.Profile) > MaxProfileSize || !isToken([]byte(id.Profile)) {
		t.Fatalf("Profile %q is not a short token", id.Profile)
	}
}

// canonical builds the Fields of a SUBSCRIBE that states id plainly: the MAC
// in the Request-URI, everything else in Event parameters.
func canonical(id Identity) Fields {
	var f Fields
	if id.MAC != "" {
		f.RequestURI = []byte("sip:MAC" + id.MAC + "@224.0.1.75")
	}
	ev := "ua-profile"
	if id.Profile != "" {
		ev += `;profile-type="` + id.Profile + `"`
	}
	if id.Brand != "" {
		ev += `;vendor="` + id.Brand + `"`
	}
	if id.Model != "" {
		ev += `;model="` + id.Model + `"`
	}
	if id.Firmware != "" {
		ev += `;version="` + id.Firmware + `"`
	}
	f.Event = []byte(ev)
	return f
}
