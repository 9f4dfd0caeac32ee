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
//	pending/<mac>              reserved for approval of unknown phones
const (
	KeyMAC     = "mac/"
	KeyTenant  = "tenant/"
	KeyDefault = "default/url"
	KeySeen    = "seen/"
)

// MACKey returns the key of a phone's assignment: "mac/001fc11b4e1c".
func MACKey(mac string) string { return KeyMAC + mac }

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
	Default string    // default/url, "" when absent
	Taken   time.Time // when the read finished
	Entries int       // keys read
	Ignored int       // keys that are none of the above (seen/ not counted)
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

// NewSnapshot returns an empty snapshot with room for n keys.
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
	case strings.HasPrefix(key, KeySeen), strings.HasPrefix(key, "pending/"):
	default:
		s.Ignored++
	}
}
