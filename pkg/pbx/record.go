package pbx

import (
	"net/url"
	"strings"
	"time"

	"github.com/pnpd/pnpd/pkg/pnp"
	"github.com/pnpd/pnpd/pkg/resolve"
)

// UserEvent names, public: operators' scripts listen for them.
const (
	EventReload      = "PnpReload"
	EventSeen        = "PnpSeen"
	EventProvisioned = "PnpProvisioned"
	EventFailed      = "PnpFailed"
	EventPending     = "PnpPending" // a phone recorded as waiting for approval
)

// MaxRecord bounds a seen record's encoded length.
const MaxRecord = 1000

// maxField bounds one field of a record or a UserEvent header: the values
// come from the phone's packet.
const maxField = 128

// URLHost returns the host (and port) of a URL, without credentials, path
// or query: what may be published of a URL. "" when there is none.
func URLHost(u string) string {
	r := resolve.Redact(u) // the same reading of where the credentials end
	i := strings.Index(r, "://")
	if i < 0 {
		return ""
	}
	rest := strings.TrimPrefix(r[i+3:], "***@")
	if j := strings.IndexAny(rest, "/?#"); j >= 0 {
		rest = rest[:j]
	}
	return clean(rest)
}

// clean makes a value from a phone's packet safe for an AMI header and an
// AstDB value: control characters become '?', and it is cut at maxField
// bytes (on a character boundary).
func clean(s string) string {
	if len(s) > maxField {
		s = strings.ToValidUTF8(s[:maxField], "")
	}
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if isControl(r) {
			return '?'
		}
		return r
	}, s)
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// SeenRecord encodes what pnpd saw of a phone as the value of seen/<mac>:
// one line in URL query encoding, under MaxRecord bytes, e.g.
//
//	brand=yealink&model=SIP-T21P&firmware=34.72.0.1&source=10.1.2.3%3A5059&interface=eth0&time=2026-11-26T02%3A00%3A00Z&outcome=provisioned&host=prov.example.com&tenant=acme
//
// It never holds a URL's credentials, path or query: only its host.
func SeenRecord(ev pnp.Event) string {
	v := url.Values{}
	set := func(k, s string) {
		if s = clean(s); s != "" {
			v.Set(k, s)
		}
	}
	set("brand", ev.Identity.Brand)
	set("model", ev.Identity.Model)
	set("firmware", ev.Identity.Firmware)
	if ev.Src.IsValid() {
		set("source", ev.Src.String())
	}
	set("interface", ev.Interface)
	set("time", ev.Time.UTC().Format(time.RFC3339))
	set("outcome", ev.Outcome)
	set("host", URLHost(ev.URL))
	set("tenant", ev.Tenant)
	// Every field is cut to maxField bytes, but encoding can triple it:
	// the least useful go first until the record fits.
	s := v.Encode()
	for _, k := range []string{"firmware", "model", "tenant", "host", "interface", "brand"} {
		if len(s) <= MaxRecord {
			break
		}
		v.Del(k)
		s = v.Encode()
	}
	return s
}

// ProvisionedValue is the value of provisioned/<mac> for a phone
// provisioned at t (now when t is zero): RFC 3339 UTC.
func ProvisionedValue(t time.Time) string {
	if t.IsZero() {
		t = time.Now()
	}
	return t.UTC().Format(time.RFC3339)
}

// ParseSeen decodes a seen record; unknown keys are kept.
func ParseSeen(s string) (url.Values, error) { return url.ParseQuery(s) }

// eventHeaders are the headers of a Pnp* UserEvent for ev: Mac, Vendor,
// Model, Version, Ip, Interface, Tenant, UrlHost, Reason; empty ones left
// out, never a credential.
func eventHeaders(ev pnp.Event) []header {
	var h []header
	add := func(k, s string) {
		if s = clean(s); s != "" {
			h = append(h, header{k, s})
		}
	}
	add("Mac", ev.Identity.MAC)
	add("Vendor", ev.Identity.Brand)
	add("Model", ev.Identity.Model)
	add("Version", ev.Identity.Firmware)
	if ev.Src.IsValid() {
		add("Ip", ev.Src.Addr().String())
	}
	add("Interface", ev.Interface)
	add("Tenant", ev.Tenant)
	add("UrlHost", URLHost(ev.URL))
	add("Reason", redactReason(ev.Reason))
	return h
}

// redactReason keeps a URL's credentials out of a reason text.
func redactReason(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	var b strings.Builder
	for f := range strings.FieldsSeq(s) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		if strings.Contains(f, "://") {
			f = f[:strings.Index(f, "://")+3] + URLHost(f)
		}
		b.WriteString(f)
	}
	return b.String()
}

type header struct{ Key, Value string }
