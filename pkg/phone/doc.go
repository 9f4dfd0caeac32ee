// Package phone tells who a SIP Plug-and-Play SUBSCRIBE says it is: the phone's
// MAC address, brand, model, firmware and the requested profile type.
//
// Phones put these facts in different places (see docs/pnp-protocol.md): the
// MAC in the Request-URI user as MAC001fc11b4e1c, MAC%3a00135E874B49,
// MAC:..., MAC=..., only in the User-Agent, or nowhere; the brand in the Event
// header's vendor (or Panasonic's vender) parameter, in the User-Agent, or only
// in the MAC's OUI. Identify reads raw header values and never fails: what it
// cannot find stays empty.
//
//	id := phone.Identify(phone.Fields{
//		RequestURI: []byte("sip:MAC0015657322ff@224.0.1.75"),
//		UserAgent:  []byte("Yealink SIP-T21P 34.72.0.1"),
//		Event:      []byte(`ua-profile;profile-type="device";vendor="Yealink";model="T21";version="34.72.0.1"`),
//	})
//	// id.MAC == "0015657322ff", id.Brand == "yealink", id.Model == "T21"
//
// Identify runs once per SUBSCRIBE on a port anyone can reach: it does not
// panic on any input, reads only bounded prefixes of the values it is given,
// and allocates at most once per call (one string that MAC, Model, Firmware and
// Profile share) when those values are valid SIP; it parses them with the sip
// package, whose errors for values it refuses cost one small allocation each.
//
// The OUI table (oui_table.go) is generated from the IEEE MA-L registry by
// internal/ouigen; run `go generate ./pkg/phone` with Debian's ieee-data
// package installed to refresh it.
package phone
