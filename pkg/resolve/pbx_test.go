package resolve

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakePBX is a PBX for unit tests: a snapshot, the keys "asked now", and
// lookup answers. The chain's tests against a real Asterisk are in
// pkg/pbx and cmd/pnpd.
type fakePBX struct {
	mu    sync.Mutex
	snap  *Snapshot
	live  bool
	keys  map[string]string
	vars  map[string]string
	fail  error
	asked []string
}

func (f *fakePBX) Snapshot() *Snapshot { return f.snap }
func (f *fakePBX) Live() bool          { return f.live }
func (f *fakePBX) Get(_ context.Context, key string) (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, key)
	if !f.live {
		return "", false, fmt.Errorf("get %s: %w", key, ErrPBXDown)
	}
	if f.fail != nil {
		return "", false, f.fail
	}
	v, ok := f.keys[key]
	return v, ok, nil
}
func (f *fakePBX) Eval(_ context.Context, expr string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, "eval "+expr)
	if !f.live {
		return "", ErrPBXDown
	}
	return f.vars[expr], nil
}

func snapshotOf(kv ...string) *Snapshot {
	s := NewSnapshot(len(kv) / 2)
	for i := 0; i+1 < len(kv); i += 2 {
		s.Add(kv[i], kv[i+1])
	}
	s.Taken = time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)
	return s
}

func TestChainOrder(t *testing.T) {
	cfg := mustConfig(t, `
[resolve]
default = "http://file-default/{vendor}/"

[[resolve.rule]]
vendor = "yealink"
url = "http://file-vendor/"

[[resolve.rule]]
mac = "001565000001"
url = "http://file-mac/"
`)
	snap := snapshotOf(
		"mac/001565000001", "acme", // a file mac rule beats it
		"mac/001565000002", "acme",
		"mac/00:04:13:00:00:03", "http://direct/{mac}.cfg", // any spelling of the MAC
		"mac/000413000004", "ghost", // a tenant without URL
		"tenant/acme/url", "http://acme/",
		"tenant/acme/url/snom", "http://acme-snom/",
		"default/url", "http://pbx-default/",
		"seen/000413000009", "brand=snom",
		"bogus", "x",
	)
	if snap.Entries != 9 || snap.Ignored != 1 || len(snap.MACs) != 4 {
		t.Fatalf("snapshot %+v", snap)
	}
	tests := []struct {
		name, mac, brand string
		url, source      string
		tenant           string
		err              error
	}{
		{"file mac rule first", "001565000001", "yealink", "http://file-mac/", "rule 2 (line 9)", "", nil},
		{"pbx mac before file vendor rule", "001565000002", "yealink", "http://acme/", "pbx snapshot", "acme", nil},
		{"tenant per-brand template", "001565000002", "snom", "http://acme-snom/", "pbx snapshot", "acme", nil},
		{"whole URL as the value", "000413000003", "snom", "http://direct/000413000003.cfg", "pbx snapshot", "", nil},
		{"tenant without URL fails", "000413000004", "snom", "", "pbx snapshot", "ghost", ErrNoTenantURL},
		{"file vendor rule before pbx default", "001565999999", "yealink", "http://file-vendor/", "rule 1 (line 5)", "", nil},
		{"pbx default before file default", "000413999999", "snom", "http://pbx-default/", "pbx default", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// PBX down: everything comes from the snapshot, in Decide and
			// Resolve alike.
			ch := NewChain(cfg.Resolve, &fakePBX{snap: snap}, "")
			req := Request{MAC: tt.mac, Brand: tt.brand}
			d, ok, err := ch.Decide(req)
			if !ok {
				t.Fatal("Decide: not decided with the PBX down")
			}
			check := func(how string, d Decision, err error) {
				t.Helper()
				if !errors.Is(err, tt.err) || d.URL != tt.url || d.Source != tt.source || d.Tenant != tt.tenant {
					t.Errorf("%s: got %q from %q tenant %q err %v; want %q from %q tenant %q err %v\ntrace: %s",
						how, d.URL, d.Source, d.Tenant, err, tt.url, tt.source, tt.tenant, tt.err, strings.Join(d.Trace, "; "))
				}
			}
			check("Decide", d, err)
			d, err = ch.Resolve(context.Background(), req)
			check("Resolve", d, err)
		})
	}

	t.Run("file default last", func(t *testing.T) {
		ch := NewChain(cfg.Resolve, &fakePBX{snap: snapshotOf("mac/000413000005", "acme")}, "")
		d, err := ch.Resolve(context.Background(), Request{MAC: "000413999999", Brand: "snom"})
		if err != nil || d.URL != "http://file-default/snom/" || d.Source != "default" {
			t.Errorf("got %+v, %v", d, err)
		}
	})
}

func TestChainAsksThePBX(t *testing.T) {
	cfg := mustConfig(t, "[resolve]\ndefault = \"http://file-default/\"\n")
	pbx := &fakePBX{live: true, snap: snapshotOf("tenant/acme/url", "http://acme/", "mac/000413000001", "acme"),
		keys: map[string]string{
			"mac/000413000002":    "beta", // assigned after the snapshot, to a new tenant
			"tenant/beta/url":     "http://beta/{mac}/",
			"mac/000413000003":    "gamma",
			"mac/000413000004":    "http://new/",
			"tenant/acme/url/fan": "unused",
		},
		vars: map[string]string{"ODBC_PNP(000413000005,snom,D%2C7)": "acme"},
	}
	ch := NewChain(cfg.Resolve, pbx, "ODBC_PNP({mac},{vendor},{model})")
	tests := []struct {
		name, mac, model string
		decided          bool
		url, source      string
		err              error
	}{
		{"in the snapshot: no question", "000413000001", "D7", true, "http://acme/", "pbx snapshot", nil},
		{"assigned since, new tenant", "000413000002", "D7", false, "http://beta/000413000002/", "pbx", nil},
		{"new tenant without URL", "000413000003", "D7", false, "", "pbx", ErrNoTenantURL},
		{"URL assigned since", "000413000004", "D7", false, "http://new/", "pbx", nil},
		{"lookup, escaped model", "000413000005", "D,7", false, "http://acme/", "lookup ODBC_PNP(000413000005,snom,D%2C7)", nil},
		{"nobody's phone", "000413000006", "D7", false, "http://file-default/", "default", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := Request{MAC: tt.mac, Brand: "snom", Model: tt.model, IP: netip.MustParseAddr("10.0.0.9")}
			pbx.asked = nil
			if _, ok, _ := ch.Decide(req); ok != tt.decided {
				t.Errorf("Decide: decided %v, want %v", ok, tt.decided)
			}
			if len(pbx.asked) != 0 {
				t.Errorf("Decide asked the PBX: %q", pbx.asked)
			}
			d, err := ch.Resolve(context.Background(), req)
			if !errors.Is(err, tt.err) || d.URL != tt.url || d.Source != tt.source {
				t.Errorf("got %q from %q err %v; want %q from %q err %v\ntrace: %s", d.URL, d.Source, err, tt.url, tt.source, tt.err, strings.Join(d.Trace, "; "))
			}
		})
	}

	t.Run("PBX error is no fall-through", func(t *testing.T) {
		pbx.fail = errors.New("ami: DBGet: Permission denied")
		defer func() { pbx.fail = nil }()
		d, err := ch.Resolve(context.Background(), Request{MAC: "000413000007"})
		if err == nil || d.URL != "" {
			t.Errorf("got %+v, %v; want an error and no URL", d, err)
		}
	})
	t.Run("no MAC: no question", func(t *testing.T) {
		pbx.asked = nil
		d, ok, err := ch.Decide(Request{Brand: "audiocodes"})
		if !ok || err != nil || d.URL != "http://file-default/" || len(pbx.asked) != 0 {
			t.Errorf("got %+v %v %v, asked %q", d, ok, err, pbx.asked)
		}
	})
}

func TestExpandLookupEscapes(t *testing.T) {
	req := Request{MAC: "001fc11b4e1c", Brand: "htek", Model: "UC9),SHELL(rm -rf /", Version: "2.0\"x"}
	got := ExpandLookup("ODBC_PNP({mac},{model},{version})", req)
	want := "ODBC_PNP(001fc11b4e1c,UC9%29%2CSHELL%28rm%20-rf%20%2F,2.0%22x)"
	if got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
}
