package main

// The metrics listener and `pnpd status` against the real binary in the
// lab: pnpd's [metrics] listen is on the loopback of its own namespace, so
// the scrapes and `pnpd status` run in that namespace too.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pnpd/pnpd/pkg/asterisk/asterisktest"
	"github.com/pnpd/pnpd/pkg/netns"
)

// e2eMetricsListen is [metrics] listen in the lab: the pbx namespace's own
// loopback, which nothing outside it reaches.
const e2eMetricsListen = "127.0.0.1:9560"

// e2eScrape GETs /metrics inside ns and parses it.
func e2eScrape(ns *netns.NS, addr string) (map[string]*dto.MetricFamily, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:       ns.DialContext,
		DisableKeepAlives: true,
	}}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("HTTP %s: %s", resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// e2eValue is the value of the series of name with exactly these labels
// ("k=v"), and whether there is one.
func e2eValue(mfs map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	for _, s := range metricSet(mfs).series(name) {
		if s.has(labels) && len(s.labels) == len(labels) {
			return s.v, true
		}
	}
	return 0, false
}

// e2eStatus runs `pnpd status args...` in ns.
func e2eStatus(t *testing.T, ns *netns.NS, bin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runPnpd(t, ns, bin, append([]string{"status"}, args...)...)
}

func TestE2EMetricsAndStatus(t *testing.T) {
	l := newLab(t)
	l.start("", "[resolve]\ndefault = \"http://198.18.0.1/{vendor}/{mac}/\"\n\n[metrics]\nlisten = \""+e2eMetricsListen+"\"\n")
	if _, ok := l.findLog(0, map[string]string{"msg": "metrics", "listen": e2eMetricsListen}); !ok {
		t.Fatalf("serve log has no msg=metrics listen=%s: is [metrics] wired into serve (startMetrics)?", e2eMetricsListen)
	}

	// Before any phone: the known series are there at zero.
	mfs, err := e2eScrape(l.pbx, e2eMetricsListen)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	if v, ok := e2eValue(mfs, "pnpd_exchanges_total", "outcome=provisioned", "brand=yealink"); !ok || v != 0 {
		t.Errorf("before any phone: provisioned yealink %v (present %v), want 0", v, ok)
	}
	if v, ok := e2eValue(mfs, "pnpd_interfaces"); !ok || v != 1 {
		t.Errorf("pnpd_interfaces %v (present %v), want 1", v, ok)
	}
	var ifaceAddr string
	for _, s := range metricSet(mfs).series("pnpd_interface_info") {
		if s.labels["name"] == l.pbxIf {
			ifaceAddr = s.labels["addr"]
		}
	}
	if !strings.HasPrefix(ifaceAddr, l.pbxIP.String()+":") {
		t.Errorf("pnpd_interface_info{name=%q} addr %q, want %s:PORT", l.pbxIf, ifaceAddr, l.pbxIP)
	}
	if _, ok := mfs["pnpd_ami_up"]; ok {
		t.Error("pnpd_ami_up exported without [ami]")
	}
	for _, n := range []string{"pnpd_info", "pnpd_start_time_seconds", "go_goroutines", "process_start_time_seconds"} {
		if _, ok := mfs[n]; !ok {
			t.Errorf("%s missing", n)
		}
	}

	// Three datagrams pnpd must drop, each for its own reason, then one
	// phone provisioned.
	c := l.phoneConn(t, l.phoneIP, 0)
	defer c.Close()
	src := c.LocalAddr().(*net.UDPAddr).AddrPort()
	group := netip.MustParseAddrPort("224.0.1.75:5060")
	for _, d := range [][]byte{
		sipText(optionsTemplate, src, src.Addr()),
		sipText(subscribeTemplate, "0015657322aa", src, "presence-1@x", "z9hG4bKpres1", "presence"),
		[]byte("\x00\x01\x02 not SIP at all \xff\r\n\r\n"),
	} {
		if _, err := c.WriteToUDPAddrPort(d, group); err != nil {
			t.Fatal(err)
		}
	}
	r := l.simulate(t, "-vendor", "yealink", "-mac", "0015657322ff", "-timeout", "30s")
	if r.code != 0 || r.summary["ok"] != "true" {
		t.Fatalf("simulate: want exit 0 and ok=true\n%s", r)
	}
	l.waitLog(t, map[string]string{"msg": "exchange", "outcome": "provisioned", "mac": "0015657322ff"})

	// The drops are counted when pnpd reads them: wait (bounded) until
	// they are in, then check every count.
	want := map[string]float64{"malformed": 1, "not-subscribe": 1, "not-ua-profile": 1}
	deadline := time.Now().Add(logTimeout)
	for i := 0; ; i++ {
		if mfs, err = e2eScrape(l.pbx, e2eMetricsListen); err != nil {
			t.Fatalf("scrape: %v", err)
		}
		in := true
		for o, n := range want {
			if v, _ := e2eValue(mfs, "pnpd_datagrams_total", "outcome="+o); v < n {
				in = false
			}
		}
		if in || time.Now().After(deadline) || i > 100 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v, ok := e2eValue(mfs, "pnpd_exchanges_total", "outcome=provisioned", "brand=yealink"); v != 1 {
		t.Errorf(`pnpd_exchanges_total{outcome="provisioned",brand="yealink"} = %v (present %v), want 1`, v, ok)
	}
	var total float64
	for _, s := range metricSet(mfs).series("pnpd_datagrams_total") {
		o := s.labels["outcome"]
		total += s.v
		switch o {
		case "subscribe":
			// One SUBSCRIBE from simulate.
			if s.v != 1 {
				t.Errorf("datagrams %s = %v, want 1", o, s.v)
			}
		case "response":
			// The phone's 200 to each NOTIFY it got.
			if s.v < 1 {
				t.Errorf("datagrams %s = %v, want at least 1", o, s.v)
			}
		case "retransmission":
			// A slow machine may have made simulate retransmit.
		default:
			if s.v != want[o] {
				t.Errorf("datagrams %s = %v, want %v", o, s.v, want[o])
			}
		}
	}
	t.Logf("pnpd_datagrams_total sums to %v", total)

	// pnpd status, in pnpd's namespace, by the address and by the file.
	code, stdout, stderr := e2eStatus(t, l.pbx, l.bin, "-metrics", e2eMetricsListen)
	t.Logf("pnpd status -metrics %s:\n%s", e2eMetricsListen, stdout)
	if code != 0 || !strings.HasPrefix(stdout, "OK\n") {
		t.Errorf("status: exit %d, want 0 and OK first\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"interfaces  " + l.pbxIf + " " + l.pbxIP.String() + ":",
		"PBX         none (no [ami])",
		"provisioned yealink 1\n",
		"exchanges   1: provisioned 1\n",
		"dropped     malformed 1, not-subscribe 1, not-ua-profile 1",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, stdout)
		}
	}
	if n := strings.Count(stdout, "\n"); n >= 24 {
		t.Errorf("status has %d lines: not one screen\n%s", n, stdout)
	}
	cfgPath := filepath.Join(l.dir, "pnpd.toml")
	code, stdout, stderr = e2eStatus(t, l.pbx, l.bin, "-config", cfgPath, "-json")
	var rep struct {
		Verdict string `json:"verdict"`
		Config  string `json:"config"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != 0 || rep.Verdict != "OK" || rep.Config != cfgPath {
		t.Errorf("status -config -json: exit %d, %+v, %v; want 0, OK and config %s\nstdout:\n%s\nstderr:\n%s", code, rep, err, cfgPath, stdout, stderr)
	}

	// Outside pnpd's namespace nothing listens there.
	code, _, stderr = e2eStatus(t, l.phone, l.bin, "-metrics", e2eMetricsListen)
	if code != 2 || !strings.Contains(stderr, "no pnpd metrics at "+e2eMetricsListen+": connection refused") {
		t.Errorf("status where nothing listens: exit %d, stderr %q; want 2 and connection refused", code, stderr)
	}

	// Stopped, pnpd gives the port back.
	l.stop()
	code, _, stderr = e2eStatus(t, l.pbx, l.bin, "-metrics", e2eMetricsListen)
	if code != 2 || !strings.Contains(stderr, "connection refused") {
		t.Errorf("status after pnpd stopped: exit %d, stderr %q; want 2 and connection refused", code, stderr)
	}
}

// TestE2EMetricsPortTaken: a [metrics] listen address that is taken
// stops pnpd at start with an error naming the key.
func TestE2EMetricsPortTaken(t *testing.T) {
	l := newLab(t)
	ln, err := l.pbx.Listen("tcp", e2eMetricsListen)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := fmt.Sprintf("[sip]\ninterfaces = [%q]\n[resolve]\ndefault = \"http://198.18.0.1/\"\n[metrics]\nlisten = %q\n", l.pbxIf, e2eMetricsListen)
	cfgPath := filepath.Join(l.dir, "pnpd.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	stderr := newSyncBuffer()
	cmd := l.pbx.Command(ctx, l.bin, "serve", "-config", cfgPath)
	cmd.Stderr = stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// A pnpd that gets as far as msg=ready did not stop for the port: end
	// it at once rather than wait for the deadline.
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	go func() {
		if _, err := stderr.waitLine(rctx, func(s string) bool { return logfmt(s)["msg"] == "ready" }); err == nil {
			_ = cmd.Process.Kill()
		}
	}()
	err = <-exited
	rcancel()
	t.Logf("pnpd serve with the port taken: %v\n%s", err, stderr.String())
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("pnpd serve with the metrics port taken: %v, want exit 1 before msg=ready", err)
	}
	if want := `[metrics] listen = "` + e2eMetricsListen + `"`; !strings.Contains(stderr.String(), want) ||
		!strings.Contains(stderr.String(), "address already in use") {
		t.Errorf("stderr lacks %q and \"address already in use\":\n%s", want, stderr.String())
	}
}

// e2eWaitStatus runs `pnpd status` in ns until it exits with code, within
// logTimeout, and returns its last output.
func e2eWaitStatus(t *testing.T, l *lab, code int) (stdout string) {
	t.Helper()
	deadline := time.Now().Add(logTimeout)
	for i := 0; ; i++ {
		got, stdout, stderr := e2eStatus(t, l.pbx, l.bin, "-metrics", e2eMetricsListen)
		if got == code {
			return stdout
		}
		if time.Now().After(deadline) || i > 100 {
			t.Fatalf("pnpd status: exit %d, want %d within %s\nstdout:\n%s\nstderr:\n%s", got, code, logTimeout, stdout, stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestE2EMetricsPBX: the AMI link and the snapshot in the metrics, and
// pnpd status DEGRADED while Asterisk is down, OK once it is back.
func TestE2EMetricsPBX(t *testing.T) {
	l := newLab(t)
	a := asterisktest.Start(t, asterisktest.Options{NS: l.pbx})
	for _, m := range []string{"001fc1000031", "001fc1000032"} {
		cli(t, a, "database put pnp mac/"+m+" acme")
	}
	cli(t, a, "database put pnp tenant/acme/url http://acme.example/")
	a.WaitAstDBCommitted(t)
	// A refresh of 10 s: status calls the snapshot stale after 30 s, far
	// beyond what a busy machine delays a refresh.
	l.start("", pbxConf(a, `refresh = "10s"`)+"\n[metrics]\nlisten = \""+e2eMetricsListen+"\"\n")
	l.waitLog(t, map[string]string{"msg": "pbx snapshot", "why": "login", "phones": "2"})
	if _, ok := l.findLog(0, map[string]string{"msg": "metrics", "listen": e2eMetricsListen}); !ok {
		t.Fatalf("serve log has no msg=metrics listen=%s: is [metrics] wired into serve (startMetrics)?", e2eMetricsListen)
	}

	mfs, err := e2eScrape(l.pbx, e2eMetricsListen)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"pnpd_ami_up", nil, 1},
		{"pnpd_ami_state", []string{"state=connected"}, 1},
		{"pnpd_ami_state", []string{"state=connecting"}, 0},
		{"pnpd_ami_logins_total", nil, 1},
		{"pnpd_pbx_snapshot_phones", nil, 2},
		{"pnpd_pbx_snapshot_refresh_seconds", nil, 10},
		{"pnpd_pbx_write_overflows_total", nil, 0},
	} {
		if v, ok := e2eValue(mfs, c.name, c.labels...); !ok || v != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	if v, ok := e2eValue(mfs, "pnpd_pbx_snapshot_age_seconds"); !ok || v < 0 {
		t.Errorf("pnpd_pbx_snapshot_age_seconds = %v (present %v)", v, ok)
	}
	if v, _ := e2eValue(mfs, "pnpd_pbx_snapshot_loads_total"); v < 1 {
		t.Errorf("pnpd_pbx_snapshot_loads_total = %v, want at least 1", v)
	}
	out := e2eWaitStatus(t, l, 0)
	if !strings.HasPrefix(out, "OK\n") || !strings.Contains(out, "PBX         connected since") || !strings.Contains(out, "2 phones") {
		t.Errorf("status with the PBX up:\n%s", out)
	}

	a.Kill(t)
	l.waitLog(t, map[string]string{"msg": "pbx not connected: answering from the last snapshot until it is back"})
	out = e2eWaitStatus(t, l, 1)
	t.Logf("pnpd status with Asterisk killed:\n%s", out)
	if !strings.HasPrefix(out, "DEGRADED: AMI down") {
		t.Errorf("status with Asterisk killed: first line is not DEGRADED: AMI down\n%s", out)
	}
	if mfs, err = e2eScrape(l.pbx, e2eMetricsListen); err != nil {
		t.Fatalf("scrape: %v", err)
	}
	if v, ok := e2eValue(mfs, "pnpd_ami_up"); !ok || v != 0 {
		t.Errorf("pnpd_ami_up = %v (present %v) with Asterisk killed, want 0", v, ok)
	}

	a.Start(t)
	l.waitLog(t, map[string]string{"msg": "pbx connected again: taking a new snapshot"})
	out = e2eWaitStatus(t, l, 0)
	if !strings.HasPrefix(out, "OK\n") || !strings.Contains(out, ", 2 logins") {
		t.Errorf("status with Asterisk back:\n%s", out)
	}
}
