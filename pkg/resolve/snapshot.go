package resolve

import (
	"strings"
	"time"

	"github.com/pnpd/pnpd/pkg/phone"
)

// Keys of the PBX's family (default "pnp"), relative to the family:
//
//	mac/<mac>                  a tenant name, or a whole URL when it holds "://"
//	tenant/<tenant>/url        the tenant's URL template
//	tenant/<tenant>/url/<brand> the tenant's template for one brand
//	default/url                the template for phones nobody assigned
//	seen/<mac>                 written by pnpd: what it last saw of the phone
//	pending/<mac>              written by pnpd ([policy] unknown = "approve"): a phone
//	                           waiting for approval, encoded as seen/<mac>; "pnpd ctl
//	                           approve" assigns the phone and deletes the key
//	window                     the end of the open provisioning window ([policy]
//	                           window = true), RFC 3339 UTC ("2026-11-26T06:00:00Z");
//	                           absent: closed. Written by "pnpd ctl window open"
//	provisioned/<mac>          written by pnpd ([policy] once = true) when the phone
//	                           is provisioned: the time, RFC 3339 UTC; "pnpd ctl rearm"
//	                           deletes it
//
// These names are a public contract: operators' scripts read and write them.
const (
	KeyMAC         = "mac/"
	KeyTenant      = "tenant/"
	KeyDefault     = "default/url"
	KeySeen        = "seen/"
	KeyPending     = "pending/"
	KeyWindow      = "window"
	KeyProvisioned = "provisioned/"
)

// MACKey returns the key of a phone's assignment: "mac/001fc11b4e1c".
func MACKey(mac string) string { return KeyMAC + mac }

// PendingKey returns the key of a phone waiting for approval:
// "pending/001fc11b4e1c".
func PendingKey(mac string) string { return KeyPending + mac }

// ProvisionedKey returns the key that marks a phone provisioned under
// [policy] once: "provisioned/001fc11b4e1c".
func ProvisionedKey(mac string) string { return KeyProvisioned + mac }

// TenantKey returns the key of a tenant's URL template, or of its template
// for one brand when brand is not "".
func TenantKey(tenant, brand string) string {
	if brand == "" {
		return KeyTenant + tenant + "/url"
	}
	return KeyTenant + tenant + "/url/" + brand
}

// Snapshot is the PBX's data at one moment: one read of the whole family.
// It is never modified once published.
type Snapshot struct {
	MACs    map[string]string // MAC (12 lower-case hex digits) -> tenant or URL
	Tenants map[string]*Tenant
	Default string // default/url, "" when absent
	// Pending holds the phones waiting for approval: MAC -> the record
	// (pbx.SeenRecord's encoding). nil when there are none.
	Pending map[string]string
	// Window is the end of the provisioning window; zero when the key is
	// absent or is not an RFC 3339 time (then counted in Ignored): closed.
	Window time.Time
	// Provisioned holds the phones marked provisioned under once: MAC ->
	// when. A value that is not an RFC 3339 time still marks the phone,
	// with the zero time: a damaged mark must not rearm a phone. nil when
	// there are none.
	Provisioned map[string]time.Time
	Taken       time.Time // when the read finished
	Entries     int       // keys read
	Seen        int       // seen/ keys read
	Ignored     int       // keys that are none of the above (seen/ not counted)
}

// Tenant is one tenant's URL templates.
type Tenant struct {
	URL    string            // tenant/<name>/url
	Brands map[string]string // tenant/<name>/url/<brand>, brand lower-case
}

// URLFor returns the tenant's template for brand: the brand's own, else
// the tenant's.
func (t *Tenant) URLFor(brand string) string {
	if t == nil {
		return ""
	}
	if u, ok := t.Brands[brand]; ok && brand != "" && u != "" {
		return u
	}
	return t.URL
}

// NewSnapshot returns an empty snapshot with room for n keys. Pending and
// Provisioned are made by Add when their first key comes: most families
// have none, and a snapshot is taken often.
func NewSnapshot(n int) *Snapshot {
	return &Snapshot{MACs: make(map[string]string, n), Tenants: map[string]*Tenant{}}
}

// Add takes one key (relative to the family) and its value. MAC keys are
// read in any spelling NormalizeMAC accepts; other keys are ignored and
// counted.
func (s *Snapshot) Add(key, value string) {
	s.Entries++
	value = strings.TrimSpace(value)
	switch {
	case strings.HasPrefix(key, KeyMAC):
		mac, ok := phone.NormalizeMAC(key[len(KeyMAC):])
		if !ok || value == "" {
			s.Ignored++
			return
		}
		s.MACs[mac] = value
	case strings.HasPrefix(key, KeyTenant):
		rest := key[len(KeyTenant):]
		name, tail, ok := strings.Cut(rest, "/")
		if !ok || name == "" {
			s.Ignored++
			return
		}
		t := s.Tenants[name]
		if t == nil {
			t = &Tenant{}
			s.Tenants[name] = t
		}
		switch {
		case tail == "url":
			t.URL = value
		case strings.HasPrefix(tail, "url/") && len(tail) > len("url/"):
			if t.Brands == nil {
				t.Brands = map[string]string{}
			}
			t.Brands[strings.ToLower(tail[len("url/"):])] = value
		default:
			s.Ignored++
		}
	case key == KeyDefault:
		s.Default = value
	case strings.HasPrefix(key, KeySeen):
		s.Seen++
	case strings.HasPrefix(key, KeyPending):
		mac, ok := phone.NormalizeMAC(key[len(KeyPending):])
		if !ok {
			s.Ignored++
			return
		}
		if s.Pending == nil {
			s.Pending = map[string]string{}
		}
		s.Pending[mac] = value
	case key == KeyWindow:
		t, err := time.Parse(time.RFC3339, value)
		if err != nil {
			s.Window = time.Time{}
			s.Ignored++
			return
		}
		s.Window = t.UTC()
	case strings.HasPrefix(key, KeyProvisioned):
		mac, ok := phone.NormalizeMAC(key[len(KeyProvisioned):])
		if !ok {
			s.Ignored++
			return
		}
		t, err := time.Parse(time.RFC3339, value)
		if err != nil {
			t = time.Time{}
		}
		if s.Provisioned == nil {
			s.Provisioned = map[string]time.Time{}
		}
		s.Provisioned[mac] = t.UTC()
	default:
		s.Ignored++
	}
}
