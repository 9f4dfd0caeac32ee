package resolve

import (
	"fmt"
	"maps"
	"testing"
	"time"
)

func TestSnapshotPolicyKeys(t *testing.T) {
	at := time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC)
	tests := []struct {
		name        string
		kv          []string
		pending     map[string]string
		window      time.Time
		provisioned map[string]time.Time
		ignored     int
	}{
		{name: "none"},
		{name: "pending in any spelling",
			kv:      []string{"pending/00:1F:C1:1B:4E:1C", "brand=htek&time=2026-11-26T02%3A00%3A00Z", "pending/000413000001", ""},
			pending: map[string]string{"001fc11b4e1c": "brand=htek&time=2026-11-26T02%3A00%3A00Z", "000413000001": ""}},
		{name: "pending with a bad MAC", kv: []string{"pending/nonsense", "brand=htek", "pending/", "x"}, ignored: 2},
		{name: "window", kv: []string{"window", "2026-11-26T06:00:00Z"}, window: at},
		{name: "window with an offset is read as UTC", kv: []string{"window", "2026-11-26T07:00:00+01:00"}, window: at},
		{name: "window not a time", kv: []string{"window", "tomorrow"}, ignored: 1},
		{name: "window empty", kv: []string{"window", ""}, ignored: 1},
		{name: "a bad window replaces a good one", kv: []string{"window", "2026-11-26T06:00:00Z", "window", "x"}, ignored: 1},
		{name: "window below is not the window", kv: []string{"window/x", "2026-11-26T06:00:00Z", "windows", "2026-11-26T06:00:00Z"}, ignored: 2},
		{name: "provisioned",
			kv:          []string{"provisioned/001FC11B4E1C", "2026-11-26T06:00:00Z"},
			provisioned: map[string]time.Time{"001fc11b4e1c": at}},
		{name: "provisioned with a damaged time still counts",
			kv:          []string{"provisioned/001fc11b4e1c", "yesterday", "provisioned/000413000001", ""},
			provisioned: map[string]time.Time{"001fc11b4e1c": {}, "000413000001": {}}},
		{name: "provisioned with a bad MAC", kv: []string{"provisioned/001fc11b4e1", "2026-11-26T06:00:00Z"}, ignored: 1},
		{name: "seen is neither counted nor kept", kv: []string{"seen/001fc11b4e1c", "brand=htek"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := snapshotOf(tt.kv...)
			if !maps.Equal(s.Pending, tt.pending) {
				t.Errorf("Pending %v, want %v", s.Pending, tt.pending)
			}
			if !s.Window.Equal(tt.window) || s.Window.Location() != time.UTC {
				t.Errorf("Window %v, want %v", s.Window, tt.window)
			}
			if !maps.EqualFunc(s.Provisioned, tt.provisioned, time.Time.Equal) {
				t.Errorf("Provisioned %v, want %v", s.Provisioned, tt.provisioned)
			}
			if s.Ignored != tt.ignored || s.Entries != len(tt.kv)/2 || len(s.MACs) != 0 {
				t.Errorf("Ignored %d, Entries %d, MACs %v; want %d, %d, none", s.Ignored, s.Entries, s.MACs, tt.ignored, len(tt.kv)/2)
			}
		})
	}
}

func TestSnapshotPolicyKeysLazy(t *testing.T) {
	s := snapshotOf("mac/001fc11b4e1c", "acme", "tenant/acme/url", "http://acme/")
	if s.Pending != nil || s.Provisioned != nil || !s.Window.IsZero() {
		t.Errorf("a family without policy keys made %v %v %v", s.Pending, s.Provisioned, s.Window)
	}
}

func TestKeyHelpers(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{PendingKey("001fc11b4e1c"), "pending/001fc11b4e1c"},
		{ProvisionedKey("001fc11b4e1c"), "provisioned/001fc11b4e1c"},
		{KeyWindow, "window"},
	} {
		if tt.got != tt.want {
			t.Errorf("%q, want %q", tt.got, tt.want)
		}
	}
}

// BenchmarkSnapshotAdd100k builds a snapshot of 100,000 assignments: the
// policy keys must add nothing per mac/ key.
func BenchmarkSnapshotAdd100k(b *testing.B) {
	const n = 100000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("mac/0015%08x", i)
	}
	b.ReportAllocs()
	for b.Loop() {
		s := NewSnapshot(n)
		for _, k := range keys {
			s.Add(k, "acme")
		}
	}
}
