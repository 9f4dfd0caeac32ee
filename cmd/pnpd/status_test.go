package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pnpd/pnpd/pkg/config"
)

// statusNow is when the canned scrapes of testdata/status_*.prom were made
// (they were written by pkg/metrics' Collector over fake sources).
var statusNow = time.Date(2025, 3, 3, 10, 30, 0, 0, time.UTC)

func readCanned(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStatusReport(t *testing.T) {
	tests := []struct {
		file    string
		verdict string
		want    string
	}{
		{"status_ok.prom", "OK", `OK
pnpd        1.4.0, up 2d2h (since 2025-03-01 08:00:00), packet mode
config      /etc/pnpd/pnpd.toml, loaded 2025-03-02 10:00:00
interfaces  eth0 192.168.1.10:5062, vlan20 10.20.0.1:5062
PBX         connected since 2025-03-01 08:02:00 (2d2h ago), 2 logins
snapshot    42s old (refresh 1m0s), 1733 phones, 5712 keys; 3062 taken, 1 failed
PBX writes  0 queued, 7391 done, 0 lost (queue full), 0 refused by Asterisk
datagrams   3820: subscribe 1843, response 1790, retransmission 112, dropped 75
dropped     source-not-allowed 37, rate-limited 21, not-subscribe 12, malformed 3, +1 more (2); by the listener 5
exchanges   1843: provisioned 1788, refused 49, observed 4, timeout 2
provisioned yealink 1201, grandstream 402, snom 150, fanvil 35
policy      refused 70: contact-not-source 40, source-rate 21, mac-denied 9
reloads     3 ok, 0 failed
`},
		{"status_degraded.prom", "DEGRADED", `DEGRADED: AMI down, PBX snapshot 6m40s old, 1204 PBX writes lost, last reload failed
pnpd        1.4.0, up 2d2h (since 2025-03-01 08:00:00), packet mode
config      /etc/pnpd/pnpd.toml, loaded 2025-03-02 10:00:00
interfaces  eth0 192.168.1.10:5062, vlan20 10.20.0.1:5062
PBX         connecting since 2025-03-03 10:23:20 (6m40s ago), 2 logins
snapshot    6m40s old (refresh 1m0s), 1733 phones, 5712 keys; 3062 taken, 7 failed
PBX writes  50000 queued, 7391 done, 1204 lost (queue full), 3 refused by Asterisk
datagrams   3820: subscribe 1843, response 1790, retransmission 112, dropped 75
dropped     source-not-allowed 37, rate-limited 21, not-subscribe 12, malformed 3, +1 more (2); by the listener 5
exchanges   1843: provisioned 1788, refused 49, observed 4, timeout 2
provisioned yealink 1201, grandstream 402, snom 150, fanvil 35
policy      refused 70: contact-not-source 40, source-rate 21, mac-denied 9
reloads     3 ok, 1 failed; the latest failed and the config before it is in use: see the log
`},
		{"status_nopbx.prom", "OK", `OK
pnpd        dev, up 12s (since 2025-03-03 10:29:48), bind mode
config      no file (observe mode), loaded 2025-03-03 10:29:48
interfaces  eth0 192.168.1.10:40112
PBX         none (no [ami])
datagrams   0
exchanges   0
policy      refused none
reloads     0 ok, 0 failed
`},
		{"status_nosnapshot.prom", "DEGRADED", `DEGRADED: no interfaces, AMI down, no PBX snapshot
pnpd        1.4.0, up 12s (since 2025-03-03 10:29:48), raw mode
config      /etc/pnpd/pnpd.toml, loaded 2025-03-03 10:29:48
interfaces  none
PBX         disconnected since 2025-03-03 10:29:50 (10s ago), 0 logins
snapshot    none yet; 0 taken, 0 failed
PBX writes  0 queued, 0 done, 0 lost (queue full), 0 refused by Asterisk
datagrams   0
exchanges   0
policy      refused none
reloads     0 ok, 0 failed
`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			p := expfmt.NewTextParser(model.UTF8Validation)
			mfs, err := p.TextToMetricFamilies(bytes.NewReader(readCanned(t, tt.file)))
			if err != nil {
				t.Fatal(err)
			}
			r := newStatusReport(mfs, statusNow)
			if r.Verdict != tt.verdict {
				t.Errorf("verdict %q, want %q (why %q)", r.Verdict, tt.verdict, r.Why)
			}
			var b bytes.Buffer
			r.write(&b)
			if got := b.String(); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
			if n := strings.Count(b.String(), "\n"); n >= 24 {
				t.Errorf("%d lines: not one screen", n)
			}
		})
	}
}

// TestStatusSnapshotRefreshOff: with refresh off, an old snapshot is no
// reason for DEGRADED.
func TestStatusSnapshotRefreshOff(t *testing.T) {
	text := strings.Replace(string(readCanned(t, "status_ok.prom")), "pnpd_pbx_snapshot_refresh_seconds 60", "pnpd_pbx_snapshot_refresh_seconds 0", 1)
	text = strings.Replace(text, "pnpd_pbx_snapshot_age_seconds 42.3", "pnpd_pbx_snapshot_age_seconds 86400", 1)
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	r := newStatusReport(mfs, statusNow)
	if r.Verdict != "OK" {
		t.Errorf("verdict %q %q, want OK", r.Verdict, r.Why)
	}
	var b bytes.Buffer
	r.write(&b)
	if !strings.Contains(b.String(), "snapshot    1d0h old (refresh off)") {
		t.Errorf("no snapshot line with refresh off:\n%s", b.String())
	}
}

// serveCanned serves a canned scrape on loopback and returns its address.
func serveCanned(t *testing.T, name string) string {
	t.Helper()
	body := readCanned(t, name)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func TestStatusCmd(t *testing.T) {
	okAddr := serveCanned(t, "status_ok.prom")
	badAddr := serveCanned(t, "status_degraded.prom")
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("# TYPE node_load1 gauge\nnode_load1 0.5\n"))
	}))
	defer other.Close()
	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()
	// A port nobody listens on: bound, then closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	dir := t.TempDir()
	cfgOff := filepath.Join(dir, "off.toml")
	if err := os.WriteFile(cfgOff, []byte("[sip]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgClosed := filepath.Join(dir, "closed.toml")
	if err := os.WriteFile(cfgClosed, []byte("[metrics]\nlisten = \""+closed+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgOK := filepath.Join(dir, "ok.toml")
	if err := os.WriteFile(cfgOK, []byte("[ami]\nusername = \"pnpd\"\nsecret_file = \"/nonexistent\"\n[metrics]\nlisten = \""+okAddr+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     []string // each must be in stdout
		stderr     string   // must be in stderr
		wantStderr bool
	}{
		{"ok", []string{"-metrics", okAddr}, 0, []string{"OK\n", "provisioned yealink 1201"}, "", false},
		{"ok from the config", []string{"-config", cfgOK}, 0, []string{"OK\n"}, "", false},
		{"degraded", []string{"-metrics", badAddr}, 1, []string{"DEGRADED: AMI down, PBX snapshot 6m40s old, 1204 PBX writes lost, last reload failed\n"}, "", false},
		{"refused", []string{"-metrics", closed}, 2, nil,
			"pnpd status: no pnpd metrics at " + closed + ": connection refused; is pnpd running with [metrics] listen = \"" + closed + "\"?\n", true},
		{"refused from the config", []string{"-config", cfgClosed}, 2, nil,
			"pnpd status: no pnpd metrics at " + closed + ": connection refused; is [metrics] listen set in " + cfgClosed + " and pnpd running?\n", true},
		{"metrics off", []string{"-config", cfgOff}, 2, nil, "the metrics are off in " + cfgOff + ": set [metrics] listen = \"127.0.0.1:9560\"", true},
		{"not pnpd", []string{"-metrics", other.Listener.Addr().String()}, 2, nil, "it serves metrics, but not pnpd's", true},
		{"404", []string{"-metrics", notFound.Listener.Addr().String()}, 2, nil, "HTTP 404 Not Found", true},
		{"missing config", []string{"-config", filepath.Join(dir, "nope.toml")}, 2, nil, "nope.toml: no such file", true},
		{"bad flag value", []string{"-metrics", "9560"}, 2, nil, "-metrics \"9560\" is not host:port", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"status"}, tt.args...), &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, stdout.String(), stderr.String())
			}
			for _, want := range tt.stdout {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
				}
			}
			if tt.wantStderr && !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tt.stderr)
			}
			if !tt.wantStderr && stderr.Len() > 0 {
				t.Errorf("stderr: %s", stderr.String())
			}
		})
	}
}

func TestStatusJSON(t *testing.T) {
	addr := serveCanned(t, "status_degraded.prom")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"status", "-json", "-metrics", addr}, &stdout, &stderr); code != 1 {
		t.Fatalf("exit %d, want 1; stderr %s", code, stderr.String())
	}
	var got struct {
		Verdict     string           `json:"verdict"`
		Why         []string         `json:"why"`
		Version     string           `json:"version"`
		Provisioned map[string]int64 `json:"provisioned_by_brand"`
		PBX         struct {
			State          string   `json:"state"`
			SnapshotAge    *float64 `json:"snapshot_age_seconds"`
			WriteOverflows int64    `json:"write_overflows"`
		} `json:"pbx"`
		LastReloadOK bool `json:"last_reload_ok"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	if got.Verdict != "DEGRADED" || len(got.Why) != 4 || got.Version != "1.4.0" || got.Provisioned["yealink"] != 1201 ||
		got.PBX.State != "connecting" || got.PBX.SnapshotAge == nil || *got.PBX.SnapshotAge != 400.2 ||
		got.PBX.WriteOverflows != 1204 || got.LastReloadOK {
		t.Errorf("got %+v\n%s", got, stdout.String())
	}
}

func TestStatusTarget(t *testing.T) {
	tests := []struct{ listen, want string }{
		{"127.0.0.1:9560", "127.0.0.1:9560"},
		{":9560", "127.0.0.1:9560"},
		{"0.0.0.0:9560", "127.0.0.1:9560"},
		{"[::]:9560", "[::1]:9560"},
		{"192.168.1.10:9560", "192.168.1.10:9560"},
		{"localhost:9560", "localhost:9560"},
	}
	for _, tt := range tests {
		if got := statusDialable(tt.listen); got != tt.want {
			t.Errorf("statusDialable(%q) = %q, want %q", tt.listen, got, tt.want)
		}
	}
	if _, err := os.Stat(config.DefaultPath); err == nil {
		t.Skipf("%s exists on this machine: the default cannot be tested", config.DefaultPath)
	}
	target, hint, err := statusTarget("", "")
	if err != nil || target != config.DefaultMetricsListen || !strings.Contains(hint, "there is no "+config.DefaultPath) {
		t.Errorf("no config: %q %q %v", target, hint, err)
	}
}

func TestStatusAgo(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", -time.Second: "0s", 12 * time.Second: "12s", 4*time.Minute + 10*time.Second: "4m10s",
		time.Hour: "1h0m", 3*time.Hour + 4*time.Minute + 59*time.Second: "3h4m", 76 * time.Hour: "3d4h",
	} {
		if got := statusAgo(d); got != want {
			t.Errorf("statusAgo(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestStatusLostWrites degrades for an hour after the latest lost write,
// then reads OK again with the count kept on its line.
func TestStatusLostWrites(t *testing.T) {
	tests := []struct {
		name, last, want string
	}{
		{"no time known", "", "DEGRADED"},
		{"a minute ago", strconv.FormatInt(statusNow.Add(-time.Minute).Unix(), 10), "DEGRADED"},
		{"two hours ago", strconv.FormatInt(statusNow.Add(-2*time.Hour).Unix(), 10), "OK"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			text := strings.Replace(string(readCanned(t, "status_ok.prom")), "pnpd_pbx_write_overflows_total 0", "pnpd_pbx_write_overflows_total 12", 1)
			if tc.last != "" {
				text += "# TYPE pnpd_pbx_write_last_overflow_timestamp_seconds gauge\npnpd_pbx_write_last_overflow_timestamp_seconds " + tc.last + "\n"
			}
			p := expfmt.NewTextParser(model.UTF8Validation)
			mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
			if err != nil {
				t.Fatal(err)
			}
			r := newStatusReport(mfs, statusNow)
			if r.Verdict != tc.want {
				t.Errorf("verdict %q %q, want %s", r.Verdict, r.Why, tc.want)
			}
			var b bytes.Buffer
			r.write(&b)
			if !strings.Contains(b.String(), "12 lost (queue full)") {
				t.Errorf("the count is not on its line:\n%s", b.String())
			}
		})
	}
}
