package metrics

import (
	"errors"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/pnpd/pnpd/ami"
	"github.com/pnpd/pnpd/pkg/pbx"
	"github.com/pnpd/pnpd/pkg/pnp"
	"github.com/pnpd/pnpd/pkg/policy"
	"github.com/pnpd/pnpd/pkg/resolve"
)

var (
	t0      = time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
	scraped = t0.Add(2 * time.Hour)
)

// fakeSources are the Sources of a busy site with a PBX.
func fakeSources() Sources {
	return Sources{
		Server: func() pnp.Stats {
			return pnp.Stats{
				Datagrams:         40,
				Dropped:           map[string]int64{"malformed": 3, "rate-limited": 5, "some-new-reason": 1},
				Subscribes:        20,
				Retransmissions:   4,
				NotifyRetransmits: 6,
				Responses:         7,
				Outcomes:          map[string]int64{"provisioned": 7, "refused": 2},
				Exchanges: map[string]map[string]int64{
					"provisioned": {"yealink": 5, "snom": 2},
					"refused":     {pnp.BrandUnknown: 2},
				},
			}
		},
		Listener: func() ListenerStats {
			return ListenerStats{Dropped: 9, Mode: "packet",
				Interfaces: []Interface{{"eth0", "192.168.1.10:5062"}, {"vlan20", "10.20.0.1:5062"}}}
		},
		Policy: func() policy.Stats {
			return policy.Stats{Refused: map[string]int64{"source-rate": 5, "mac-denied": 2}}
		},
		PBX: func() *pbx.Stats {
			return &pbx.Stats{
				Snapshot: &resolve.Snapshot{Taken: scraped.Add(-90 * time.Second), Entries: 31,
					MACs: map[string]string{"001565000001": "a", "001565000002": "a", "001565000003": "b"}},
				Loads: 12, LoadErrors: 1, QueueDepth: 3, Written: 50, Overflows: 2, WriteErrors: 1,
				PendingOverflows: 4, SeenOverflows: 5,
			}
		},
		AMI: func() (ami.Status, bool) {
			return ami.Status{State: ami.Connecting, Err: errors.New("dial tcp: connection refused"),
				Since: t0.Add(time.Hour), Logins: 3}, true
		},
		Info: func() Info {
			return Info{Version: "1.2.3", ConfigPath: "/etc/pnpd/pnpd.toml", Started: t0,
				Reloads: 2, ReloadFailures: 1, LastReload: t0.Add(30 * time.Minute),
				LastReloadError: "config: line 3: sip.mode: bad", SnapshotRefresh: time.Minute}
		},
	}
}

// gather collects src at the fixed time scraped.
func gather(t *testing.T, src Sources) map[string]*dto.MetricFamily {
	t.Helper()
	c := NewCollector(src)
	c.now = func() time.Time { return scraped }
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// value returns the value of the series of name whose labels are exactly
// labels ("k=v" pairs).
func value(mfs map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
	w := append([]string(nil), labels...)
	sort.Strings(w)
	for _, m := range mf.GetMetric() {
		var got []string
		for _, lp := range m.GetLabel() {
			got = append(got, lp.GetName()+"="+lp.GetValue())
		}
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(w, ",") {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

func TestCollectValues(t *testing.T) {
	mfs := gather(t, fakeSources())
	tests := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"pnpd_datagrams_total", []string{"outcome=subscribe"}, 20},
		{"pnpd_datagrams_total", []string{"outcome=retransmission"}, 4},
		{"pnpd_datagrams_total", []string{"outcome=response"}, 7},
		{"pnpd_datagrams_total", []string{"outcome=malformed"}, 3},
		{"pnpd_datagrams_total", []string{"outcome=rate-limited"}, 5},
		{"pnpd_datagrams_total", []string{"outcome=busy"}, 0}, // known, at zero
		{"pnpd_datagrams_total", []string{"outcome=some-new-reason"}, 1},
		{"pnpd_listener_dropped_total", nil, 9},
		{"pnpd_exchanges_total", []string{"outcome=provisioned", "brand=yealink"}, 5},
		{"pnpd_exchanges_total", []string{"outcome=provisioned", "brand=snom"}, 2},
		{"pnpd_exchanges_total", []string{"outcome=provisioned", "brand=htek"}, 0},
		{"pnpd_exchanges_total", []string{"outcome=refused", "brand=unknown"}, 2},
		{"pnpd_exchanges_total", []string{"outcome=timeout", "brand=gigaset"}, 0},
		{"pnpd_notify_retransmissions_total", nil, 6},
		{"pnpd_subscribe_retransmissions_total", nil, 4},
		{"pnpd_policy_refusals_total", []string{"reason=source-rate"}, 5},
		{"pnpd_policy_refusals_total", []string{"reason=mac-denied"}, 2},
		{"pnpd_policy_refusals_total", []string{"reason=neighbor-mismatch"}, 0},
		{"pnpd_ami_up", nil, 0},
		{"pnpd_ami_state", []string{"state=connecting"}, 1},
		{"pnpd_ami_state", []string{"state=connected"}, 0},
		{"pnpd_ami_state", []string{"state=disconnected"}, 0},
		{"pnpd_ami_state", []string{"state=closed"}, 0},
		{"pnpd_ami_state_since_timestamp_seconds", nil, float64(t0.Add(time.Hour).Unix())},
		{"pnpd_ami_logins_total", nil, 3},
		{"pnpd_pbx_snapshot_age_seconds", nil, 90},
		{"pnpd_pbx_snapshot_entries", nil, 31},
		{"pnpd_pbx_snapshot_phones", nil, 3},
		{"pnpd_pbx_snapshot_refresh_seconds", nil, 60},
		{"pnpd_pbx_snapshot_loads_total", nil, 12},
		{"pnpd_pbx_snapshot_errors_total", nil, 1},
		{"pnpd_pbx_write_queue_depth", nil, 3},
		{"pnpd_pbx_writes_total", nil, 50},
		{"pnpd_pbx_write_overflows_total", nil, 2},
		{"pnpd_pbx_write_errors_total", nil, 1},
		{"pnpd_pbx_pending_overflows_total", nil, 4},
		{"pnpd_pbx_seen_overflows_total", nil, 5},
		{"pnpd_interfaces", nil, 2},
		{"pnpd_interface_info", []string{"name=eth0", "addr=192.168.1.10:5062"}, 1},
		{"pnpd_interface_info", []string{"name=vlan20", "addr=10.20.0.1:5062"}, 1},
		{"pnpd_info", []string{"version=1.2.3", "mode=packet", "config=/etc/pnpd/pnpd.toml"}, 1},
		{"pnpd_start_time_seconds", nil, float64(t0.Unix())},
		{"pnpd_config_reloads_total", []string{"result=ok"}, 2},
		{"pnpd_config_reloads_total", []string{"result=failed"}, 1},
		{"pnpd_config_last_reload_successful", nil, 0},
		{"pnpd_config_last_reload_success_timestamp_seconds", nil, float64(t0.Add(30 * time.Minute).Unix())},
	}
	for _, tt := range tests {
		t.Run(tt.name+"{"+strings.Join(tt.labels, ",")+"}", func(t *testing.T) {
			got, ok := value(mfs, tt.name, tt.labels...)
			if !ok {
				t.Fatalf("no series")
			}
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	// Every series of the exchanges: 9 outcomes by 9 brands, at zero too.
	if n := len(mfs["pnpd_exchanges_total"].GetMetric()); n != len(outcomes)*len(brands) {
		t.Errorf("pnpd_exchanges_total has %d series, want %d", n, len(outcomes)*len(brands))
	}
}

// TestDatagramsAddUp checks that the outcomes of pnpd_datagrams_total sum
// to the datagrams the responder was handed when its counters do.
func TestDatagramsAddUp(t *testing.T) {
	src := fakeSources()
	mfs := gather(t, src)
	var sum float64
	for _, m := range mfs["pnpd_datagrams_total"].GetMetric() {
		sum += m.GetCounter().GetValue()
	}
	if want := float64(src.Server().Datagrams); sum != want {
		t.Errorf("outcomes sum to %v, want Datagrams %v", sum, want)
	}
}

// TestLint runs promlint's naming and help checks over every metric.
func TestLint(t *testing.T) {
	problems, err := testutil.CollectAndLint(NewCollector(fakeSources()))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// TestAbsentParts: a part that is off sends nothing, and the rest still
// come.
func TestAbsentParts(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*Sources)
		absent  []string
		present []string
	}{
		{"nothing", func(s *Sources) { *s = Sources{} }, []string{"pnpd_datagrams_total", "pnpd_info", "pnpd_ami_up"}, nil},
		{"no ami", func(s *Sources) { s.AMI, s.PBX = nil, nil },
			[]string{"pnpd_ami_up", "pnpd_ami_state", "pnpd_pbx_snapshot_age_seconds", "pnpd_pbx_write_queue_depth"},
			[]string{"pnpd_datagrams_total", "pnpd_info", "pnpd_policy_refusals_total"}},
		{"ami false, pbx nil result", func(s *Sources) {
			s.AMI = func() (ami.Status, bool) { return ami.Status{}, false }
			s.PBX = func() *pbx.Stats { return nil }
		}, []string{"pnpd_ami_up", "pnpd_pbx_writes_total"}, []string{"pnpd_interfaces"}},
		{"no snapshot yet", func(s *Sources) { s.PBX = func() *pbx.Stats { return &pbx.Stats{} } },
			[]string{"pnpd_pbx_snapshot_age_seconds", "pnpd_pbx_snapshot_phones", "pnpd_pbx_snapshot_entries"},
			[]string{"pnpd_pbx_snapshot_loads_total", "pnpd_pbx_write_overflows_total"}},
		{"no policy", func(s *Sources) { s.Policy = nil }, []string{"pnpd_policy_refusals_total"}, []string{"pnpd_exchanges_total"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := fakeSources()
			tt.change(&src)
			mfs := gather(t, src)
			for _, n := range tt.absent {
				if _, ok := mfs[n]; ok {
					t.Errorf("%s present", n)
				}
			}
			for _, n := range tt.present {
				if _, ok := mfs[n]; !ok {
					t.Errorf("%s absent", n)
				}
			}
		})
	}
}

// TestZeroAtStart: before anything happened, the series of the known label
// values are there at zero, so that rate() has a starting point.
func TestZeroAtStart(t *testing.T) {
	src := Sources{
		Server:   func() pnp.Stats { return pnp.Stats{} },
		Listener: func() ListenerStats { return ListenerStats{Mode: "bind"} },
		Policy:   func() policy.Stats { return policy.Stats{} },
		Info:     func() Info { return Info{Version: "dev", Started: t0} },
	}
	mfs := gather(t, src)
	counts := map[string]int{
		"pnpd_datagrams_total":       3 + len(dropReasons),
		"pnpd_exchanges_total":       len(outcomes) * len(brands),
		"pnpd_policy_refusals_total": 8,
		"pnpd_config_reloads_total":  2,
	}
	for name, want := range counts {
		if got := len(mfs[name].GetMetric()); got != want {
			t.Errorf("%s: %d series, want %d", name, got, want)
		}
	}
	if v, ok := value(mfs, "pnpd_config_last_reload_success_timestamp_seconds"); !ok || v != float64(t0.Unix()) {
		t.Errorf("last reload success %v %v, want the start %d", v, ok, t0.Unix())
	}
	if v, ok := value(mfs, "pnpd_config_last_reload_successful"); !ok || v != 1 {
		t.Errorf("last reload successful %v %v, want 1", v, ok)
	}
}

func TestNewRegistry(t *testing.T) {
	reg, err := NewRegistry(fakeSources())
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		seen[mf.GetName()] = true
	}
	for _, n := range []string{"pnpd_datagrams_total", "go_goroutines", "process_start_time_seconds"} {
		if !seen[n] {
			t.Errorf("%s missing from the registry", n)
		}
	}
}
