package main

// pnpd status reads the daemon's own metrics listener ([metrics] listen),
// not AMI: it then works without a PBX, shows what the daemon counted
// rather than what the PBX holds, and needs no AMI secret.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/metrics"
)

const (
	// statusTimeout bounds the whole scrape.
	statusTimeout = 2 * time.Second
	// maxMetricsBody bounds what is read of an answer: pnpd's is tens of
	// kilobytes.
	maxMetricsBody = 16 << 20
	// staleFactor: a snapshot older than this many refresh periods means
	// the PBX has not answered for a while.
	staleFactor = 3
	// statusTopDrops is how many drop reasons are named.
	statusTopDrops = 4
	// statusMaxIfaces is how many interfaces are named on their line.
	statusMaxIfaces = 4
)

// Exit codes of pnpd status.
const (
	statusOK          = 0
	statusDegraded    = 1
	statusUnreachable = 2
)

func statusCmd(args []string, stdout, stderr io.Writer) (int, error) {
	fs := newFlagSet("status", stderr)
	cfgPath := fs.String("config", "", "configuration file whose [metrics] listen is read (default "+config.DefaultPath+" if it exists)")
	addr := fs.String("metrics", "", "host:port of pnpd's metrics listener (default: [metrics] listen, else "+config.DefaultMetricsListen+")")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	if err := parseFlags(fs, args); err != nil {
		return 0, err
	}
	target, hint, err := statusTarget(*cfgPath, *addr)
	if err != nil {
		fmt.Fprintf(stderr, "pnpd status: %v\n", err)
		return statusUnreachable, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	// Straight to pnpd: never through an http_proxy of the environment.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	fams, err := scrapeMetrics(ctx, client, target)
	if err != nil {
		fmt.Fprintf(stderr, "pnpd status: no pnpd metrics at %s: %s; %s\n", target, scrapeReason(err), hint)
		return statusUnreachable, nil
	}
	rep := newStatusReport(fams, time.Now())
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return 0, err
		}
	} else {
		rep.write(stdout)
	}
	if rep.Verdict != "OK" {
		return statusDegraded, nil
	}
	return statusOK, nil
}

// statusTarget returns the host:port to ask and a hint for when nothing
// answers there: -metrics, else [metrics] listen of the configuration
// (read alone: status needs no secret), else the default address.
func statusTarget(cfgPath, flagAddr string) (target, hint string, err error) {
	if flagAddr != "" {
		if _, _, err := net.SplitHostPort(flagAddr); err != nil {
			return "", "", fmt.Errorf("%w: -metrics %q is not host:port", errUsage, flagAddr)
		}
		return statusDialable(flagAddr), fmt.Sprintf("is pnpd running with [metrics] listen = %q?", flagAddr), nil
	}
	path := cfgPath
	if path == "" {
		path = config.DefaultPath
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return config.DefaultMetricsListen,
				fmt.Sprintf("there is no %s: is pnpd running with [metrics] listen = %q (else pass -config or -metrics)?", path, config.DefaultMetricsListen), nil
		}
	}
	m, err := config.LoadMetrics(path)
	if err != nil {
		return "", "", err
	}
	if m.Listen == "" {
		return "", "", fmt.Errorf("the metrics are off in %s: set [metrics] listen = %q there and restart pnpd (status reads them), or pass -metrics HOST:PORT",
			path, config.DefaultMetricsListen)
	}
	return statusDialable(m.Listen), fmt.Sprintf("is [metrics] listen set in %s and pnpd running?", path), nil
}

// statusDialable turns a listen address into one to connect to: a listener on
// every address is asked on loopback.
func statusDialable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch a, err := netip.ParseAddr(host); {
	case host == "":
		host = "127.0.0.1"
	case err == nil && a.IsUnspecified() && a.Is4():
		host = "127.0.0.1"
	case err == nil && a.IsUnspecified():
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// errNotPnpd is a metrics page without pnpd's metrics.
var errNotPnpd = errors.New("it serves metrics, but not pnpd's (no pnpd_info)")

// scrapeMetrics GETs http://target/metrics and parses the text format.
func scrapeMetrics(ctx context.Context, c *http.Client, target string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+target+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	// The plain text format, which the parser reads.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: HTTP %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, maxMetricsBody))
	if err != nil {
		return nil, fmt.Errorf("not the Prometheus text format: %w", err)
	}
	if _, ok := fams["pnpd_info"]; !ok {
		return nil, errNotPnpd
	}
	return fams, nil
}

// scrapeReason says in a few words why the scrape failed: "connection
// refused", not the whole chain of wrappers.
func scrapeReason(err error) string {
	var errno syscall.Errno
	var ue *url.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ue) && ue.Timeout():
		return "no answer within " + statusTimeout.String()
	case errors.As(err, &errno):
		return errno.Error()
	case errors.As(err, &ue):
		return ue.Err.Error()
	}
	return err.Error()
}

// statusReport is what pnpd status shows, read from the metrics.
type statusReport struct {
	Verdict       string        `json:"verdict"` // OK or DEGRADED
	Why           []string      `json:"why,omitempty"`
	Version       string        `json:"version"`
	Mode          string        `json:"mode"`
	Config        string        `json:"config"`
	Started       time.Time     `json:"started"`
	UptimeSeconds float64       `json:"uptime_seconds"`
	Interfaces    []statusIface `json:"interfaces"`
	PBX           *statusPBX    `json:"pbx,omitempty"` // nil: no [ami]
	// Datagrams counts the datagrams by outcome; ListenerDropped those
	// the listener dropped before.
	Datagrams       map[string]int64 `json:"datagrams"`
	ListenerDropped int64            `json:"listener_dropped"`
	Exchanges       map[string]int64 `json:"exchanges"`
	Provisioned     map[string]int64 `json:"provisioned_by_brand"`
	Refusals        map[string]int64 `json:"policy_refusals,omitempty"` // nil: no policy
	Reloads         int64            `json:"reloads"`
	ReloadFailures  int64            `json:"reload_failures"`
	LastReloadOK    bool             `json:"last_reload_ok"`
	ConfigLoaded    time.Time        `json:"config_loaded"`

	now time.Time
}

type statusIface struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
}

type statusPBX struct {
	State   string    `json:"state"`
	Since   time.Time `json:"since"`
	Logins  int64     `json:"logins"`
	HasView bool      `json:"-"` // the PBX view's metrics are there
	// SnapshotAgeSeconds is nil before the first snapshot.
	SnapshotAgeSeconds *float64  `json:"snapshot_age_seconds"`
	SnapshotPhones     int64     `json:"snapshot_phones"`
	SnapshotEntries    int64     `json:"snapshot_entries"`
	RefreshSeconds     float64   `json:"refresh_seconds"`
	Loads              int64     `json:"snapshot_loads"`
	LoadErrors         int64     `json:"snapshot_errors"`
	QueueDepth         int64     `json:"write_queue_depth"`
	Written            int64     `json:"writes"`
	Overflows          int64     `json:"write_overflows"`
	LastOverflow       time.Time `json:"last_write_overflow,omitzero"`
	WriteErrors        int64     `json:"write_errors"`
	PendingOverflows   int64     `json:"pending_overflows"`
	SeenOverflows      int64     `json:"seen_overflows"`
}

// metricSet holds the families of one scrape.
type metricSet map[string]*dto.MetricFamily

// get returns the value of the series of name whose labels include the
// "k=v" pairs given, and whether there is one.
func (f metricSet) get(name string, labels ...string) (float64, bool) {
	for _, s := range f.series(name) {
		if s.has(labels) {
			return s.v, true
		}
	}
	return 0, false
}

func (f metricSet) int(name string, labels ...string) int64 {
	v, _ := f.get(name, labels...)
	return int64(math.Round(v))
}

type statusSeries struct {
	labels map[string]string
	v      float64
}

func (s statusSeries) has(pairs []string) bool {
	for _, p := range pairs {
		k, v, _ := strings.Cut(p, "=")
		if s.labels[k] != v {
			return false
		}
	}
	return true
}

func (f metricSet) series(name string) []statusSeries {
	mf, ok := f[name]
	if !ok {
		return nil
	}
	var out []statusSeries
	for _, m := range mf.GetMetric() {
		s := statusSeries{labels: map[string]string{}}
		for _, lp := range m.GetLabel() {
			s.labels[lp.GetName()] = lp.GetValue()
		}
		switch {
		case m.Counter != nil:
			s.v = m.Counter.GetValue()
		case m.Gauge != nil:
			s.v = m.Gauge.GetValue()
		case m.Untyped != nil:
			s.v = m.Untyped.GetValue()
		default:
			continue
		}
		out = append(out, s)
	}
	return out
}

// byLabel sums the series of name by the value of label, keeping only
// those whose labels include the pairs given.
func (f metricSet) byLabel(name, label string, pairs ...string) map[string]int64 {
	out := map[string]int64{}
	for _, s := range f.series(name) {
		if s.has(pairs) {
			out[s.labels[label]] += int64(math.Round(s.v))
		}
	}
	return out
}

func statusFromUnix(v float64) time.Time {
	sec, frac := math.Modf(v)
	return time.Unix(int64(sec), int64(frac*1e9))
}

// newStatusReport reads the report out of one scrape made at now.
func newStatusReport(mfs map[string]*dto.MetricFamily, now time.Time) *statusReport {
	f := metricSet(mfs)
	r := &statusReport{now: now, Verdict: "OK"}
	for _, s := range f.series("pnpd_info") {
		r.Version, r.Mode, r.Config = s.labels["version"], s.labels["mode"], s.labels["config"]
	}
	if v, ok := f.get("pnpd_start_time_seconds"); ok {
		r.Started = statusFromUnix(v)
		r.UptimeSeconds = max(now.Sub(r.Started), 0).Seconds()
	}
	for _, s := range f.series("pnpd_interface_info") {
		r.Interfaces = append(r.Interfaces, statusIface{Name: s.labels["name"], Addr: s.labels["addr"]})
	}
	sort.Slice(r.Interfaces, func(i, j int) bool { return r.Interfaces[i].Name < r.Interfaces[j].Name })
	if _, ok := f.get("pnpd_ami_up"); ok {
		p := &statusPBX{Logins: f.int("pnpd_ami_logins_total")}
		for _, s := range f.series("pnpd_ami_state") {
			if s.v == 1 {
				p.State = s.labels["state"]
			}
		}
		if v, ok := f.get("pnpd_ami_state_since_timestamp_seconds"); ok {
			p.Since = statusFromUnix(v)
		}
		_, p.HasView = f.get("pnpd_pbx_snapshot_loads_total")
		if v, ok := f.get("pnpd_pbx_snapshot_age_seconds"); ok {
			p.SnapshotAgeSeconds = &v
		}
		p.SnapshotPhones = f.int("pnpd_pbx_snapshot_phones")
		p.SnapshotEntries = f.int("pnpd_pbx_snapshot_entries")
		p.RefreshSeconds, _ = f.get("pnpd_pbx_snapshot_refresh_seconds")
		p.Loads = f.int("pnpd_pbx_snapshot_loads_total")
		p.LoadErrors = f.int("pnpd_pbx_snapshot_errors_total")
		p.QueueDepth = f.int("pnpd_pbx_write_queue_depth")
		p.Written = f.int("pnpd_pbx_writes_total")
		p.Overflows = f.int("pnpd_pbx_write_overflows_total")
		if v, ok := f.get("pnpd_pbx_write_last_overflow_timestamp_seconds"); ok {
			p.LastOverflow = statusFromUnix(v)
		}
		p.WriteErrors = f.int("pnpd_pbx_write_errors_total")
		p.PendingOverflows = f.int("pnpd_pbx_pending_overflows_total")
		p.SeenOverflows = f.int("pnpd_pbx_seen_overflows_total")
		r.PBX = p
	}
	r.Datagrams = f.byLabel("pnpd_datagrams_total", "outcome")
	r.ListenerDropped = f.int("pnpd_listener_dropped_total")
	r.Exchanges = f.byLabel("pnpd_exchanges_total", "outcome")
	r.Provisioned = f.byLabel("pnpd_exchanges_total", "brand", "outcome=provisioned")
	if _, ok := f["pnpd_policy_refusals_total"]; ok {
		r.Refusals = f.byLabel("pnpd_policy_refusals_total", "reason")
	}
	r.Reloads = f.int("pnpd_config_reloads_total", "result=ok")
	r.ReloadFailures = f.int("pnpd_config_reloads_total", "result=failed")
	ok, found := f.get("pnpd_config_last_reload_successful")
	r.LastReloadOK = !found || ok == 1
	if v, ok := f.get("pnpd_config_last_reload_success_timestamp_seconds"); ok {
		r.ConfigLoaded = statusFromUnix(v)
	}
	r.judge()
	return r
}

// judge sets the verdict: DEGRADED, and why in a few words (the lines
// below it give the details), when pnpd answers less than it should or
// loses what it should record.
func (r *statusReport) judge() {
	if len(r.Interfaces) == 0 {
		r.Why = append(r.Why, "no interfaces")
	}
	if p := r.PBX; p != nil {
		if p.State != "connected" {
			r.Why = append(r.Why, "AMI down")
		}
		switch {
		case !p.HasView:
		case p.SnapshotAgeSeconds == nil:
			r.Why = append(r.Why, "no PBX snapshot")
		case p.RefreshSeconds > 0 && *p.SnapshotAgeSeconds > staleFactor*p.RefreshSeconds:
			r.Why = append(r.Why, "PBX snapshot "+statusAgo(statusSeconds(*p.SnapshotAgeSeconds))+" old")
		}
		// Lost writes degrade for an hour after the latest, so that a
		// check recovers once the PBX keeps up again; the counts stay
		// on the "PBX writes" line.
		if p.Overflows > 0 && (p.LastOverflow.IsZero() || r.now.Sub(p.LastOverflow) < lossMemory) {
			r.Why = append(r.Why, fmt.Sprintf("%d PBX writes lost", p.Overflows))
		}
	}
	if !r.LastReloadOK {
		r.Why = append(r.Why, "last reload failed")
	}
	if len(r.Why) > 0 {
		r.Verdict = "DEGRADED"
	}
}

// lossMemory is how long lost PBX writes keep the verdict DEGRADED.
const lossMemory = time.Hour

func statusOrUnknown(s string) string {
	if s == "" {
		return "state unknown"
	}
	return s
}

func statusSeconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// when writes t in now's zone, to the second.
func (r *statusReport) when(t time.Time) string {
	return t.In(r.now.Location()).Format("2006-01-02 15:04:05")
}

// since writes "since 2025-03-01 09:00:00 (1h0m ago)".
func (r *statusReport) since(t time.Time) string {
	if t.IsZero() {
		return "since an unknown time"
	}
	return "since " + r.when(t) + " (" + statusAgo(r.now.Sub(t)) + " ago)"
}

// ago writes a duration as people read an age: 12s, 4m10s, 3h4m, 3d4h.
func statusAgo(d time.Duration) string {
	d = max(d, 0).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// top writes the non-zero counts of m, largest first, at most n named and
// the rest summed: "provisioned 7, refused 2, +3 more (5)".
func statusTop(m map[string]int64, n int) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v > 0 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			if m[a] > m[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	var parts []string
	var rest int64
	for i, k := range keys {
		if i < n {
			parts = append(parts, k+" "+strconv.FormatInt(m[k], 10))
		} else {
			rest += m[k]
		}
	}
	if len(keys) > n {
		parts = append(parts, fmt.Sprintf("+%d more (%d)", len(keys)-n, rest))
	}
	return strings.Join(parts, ", ")
}

func statusSum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// write prints the report for people: the verdict, then one line per
// subject, 14 lines at most.
func (r *statusReport) write(w io.Writer) {
	if len(r.Why) > 0 {
		fmt.Fprintf(w, "%s: %s\n", r.Verdict, strings.Join(r.Why, ", "))
	} else {
		fmt.Fprintln(w, r.Verdict)
	}
	line := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%-12s%s\n", label, fmt.Sprintf(format, args...))
	}
	up := "unknown"
	if !r.Started.IsZero() {
		up = statusAgo(statusSeconds(r.UptimeSeconds)) + " (since " + r.when(r.Started) + ")"
	}
	line("pnpd", "%s, up %s, %s mode", statusOrUnknown(r.Version), up, statusOrUnknown(r.Mode))
	cfg := r.Config
	if cfg == "" {
		cfg = "no file (observe mode)"
	}
	if !r.ConfigLoaded.IsZero() {
		cfg += ", loaded " + r.when(r.ConfigLoaded)
	}
	line("config", "%s", cfg)
	ifs := make([]string, 0, len(r.Interfaces))
	for i, ifc := range r.Interfaces {
		if i == statusMaxIfaces {
			ifs = append(ifs, fmt.Sprintf("+%d more", len(r.Interfaces)-i))
			break
		}
		ifs = append(ifs, ifc.Name+" "+ifc.Addr)
	}
	if len(ifs) == 0 {
		ifs = append(ifs, "none")
	}
	line("interfaces", "%s", strings.Join(ifs, ", "))
	if p := r.PBX; p == nil {
		line("PBX", "none (no [ami])")
	} else {
		logins := "logins"
		if p.Logins == 1 {
			logins = "login"
		}
		line("PBX", "%s %s, %d %s", statusOrUnknown(p.State), r.since(p.Since), p.Logins, logins)
		if p.HasView {
			snap := "none yet"
			if p.SnapshotAgeSeconds != nil {
				refresh := "off"
				if p.RefreshSeconds > 0 {
					refresh = statusAgo(statusSeconds(p.RefreshSeconds))
				}
				snap = fmt.Sprintf("%s old (refresh %s), %d phones, %d keys", statusAgo(statusSeconds(*p.SnapshotAgeSeconds)), refresh, p.SnapshotPhones, p.SnapshotEntries)
			}
			line("snapshot", "%s; %d taken, %d failed", snap, p.Loads, p.LoadErrors)
			wr := fmt.Sprintf("%d queued, %d done, %d lost (queue full), %d refused by Asterisk", p.QueueDepth, p.Written, p.Overflows, p.WriteErrors)
			if p.PendingOverflows+p.SeenOverflows > 0 {
				wr += fmt.Sprintf("; over their limits: %d pending, %d seen", p.PendingOverflows, p.SeenOverflows)
			}
			line("PBX writes", "%s", wr)
		}
	}
	// Datagrams: what was answered or taken, then what was dropped.
	dropped := map[string]int64{}
	handled := map[string]int64{}
	for k, v := range r.Datagrams {
		switch k {
		case metrics.OutcomeSubscribe, metrics.OutcomeRetransmission, metrics.OutcomeResponse:
			handled[k] = v
		default:
			dropped[k] = v
		}
	}
	dg := fmt.Sprintf("%d", statusSum(r.Datagrams))
	if t := statusTop(handled, len(handled)); t != "" {
		dg += ": " + t
	}
	if n := statusSum(dropped); n > 0 {
		dg += fmt.Sprintf(", dropped %d", n)
	}
	line("datagrams", "%s", dg)
	var dr []string
	if t := statusTop(dropped, statusTopDrops); t != "" {
		dr = append(dr, t)
	}
	if r.ListenerDropped > 0 {
		dr = append(dr, fmt.Sprintf("by the listener %d", r.ListenerDropped))
	}
	if len(dr) > 0 {
		line("dropped", "%s", strings.Join(dr, "; "))
	}
	ex := fmt.Sprintf("%d", statusSum(r.Exchanges))
	if t := statusTop(r.Exchanges, len(r.Exchanges)); t != "" {
		ex += ": " + t
	}
	line("exchanges", "%s", ex)
	if t := statusTop(r.Provisioned, len(r.Provisioned)); t != "" {
		line("provisioned", "%s", t)
	}
	if r.Refusals != nil {
		ref := "refused none"
		if n := statusSum(r.Refusals); n > 0 {
			ref = fmt.Sprintf("refused %d: %s", n, statusTop(r.Refusals, len(r.Refusals)))
		}
		line("policy", "%s", ref)
	}
	rl := fmt.Sprintf("%d ok, %d failed", r.Reloads, r.ReloadFailures)
	if !r.LastReloadOK {
		rl += "; the latest failed and the config before it is in use: see the log"
	}
	line("reloads", "%s", rl)
}
