package metrics

import (
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pnpd/pnpd/ami"
	"github.com/pnpd/pnpd/pkg/pbx"
	"github.com/pnpd/pnpd/pkg/phone"
	"github.com/pnpd/pnpd/pkg/pnp"
	"github.com/pnpd/pnpd/pkg/policy"
)

// Sources are the functions the Collector reads at every scrape. Each may
// be nil (its metrics are left out), and each is called once per scrape,
// from the scraping goroutine: they must be safe for concurrent use and
// must not block.
type Sources struct {
	Server   func() pnp.Stats     // the responder's counters
	Listener func() ListenerStats // the group listener
	// Policy returns the policy's counters; nil when there is no policy.
	Policy func() policy.Stats
	// PBX returns the PBX view's counters; nil (or a nil result) when
	// there is no [ami].
	PBX func() *pbx.Stats
	// AMI returns the AMI link's state; false when there is no [ami].
	AMI  func() (ami.Status, bool)
	Info func() Info // the daemon's own facts
}

// ListenerStats describe the listener of the group.
type ListenerStats struct {
	Dropped    int64       // datagrams the listener dropped before the responder saw them
	Interfaces []Interface // the interfaces the group is received on
	Mode       string      // bind, raw or packet
}

// Interface is one interface the group is received on.
type Interface struct {
	Name string
	Addr string // the unicast address the answers leave from, e.g. "192.168.1.10:5062"
}

// Info holds the daemon's facts that are not counters of a part.
type Info struct {
	Version    string
	ConfigPath string // "" when serving without a file
	Started    time.Time
	// Reloads and ReloadFailures count the configuration reloads that
	// took and those that were refused (the old configuration stayed).
	Reloads, ReloadFailures int64
	// LastReload is when a configuration was last taken: at start, then
	// at each reload that took (zero: Started is used).
	LastReload time.Time
	// LastReloadError is why the latest reload was refused; "" when it
	// took, or when there was none.
	LastReloadError string
	// SnapshotRefresh is [ami] refresh: how often the PBX snapshot is
	// taken again (0: only at login and on PnpReload). Status judges the
	// snapshot's age by it.
	SnapshotRefresh time.Duration
}

// Label values known in advance, exported at zero before anything happens.
var (
	dropReasons = pnp.DropReasons()
	outcomes    = pnp.Outcomes()
	// brands are the brands exchanges are counted by.
	brands = append(phone.Brands(), pnp.BrandUnknown)
	// amiStates are the states of an AMI link.
	amiStates = []ami.State{ami.Disconnected, ami.Connecting, ami.Connected, ami.Closed}
)

// refusalReasons are the policy's reasons of a refusal.
func refusalReasons() []string {
	var out []string
	for r := policy.SourceRate; r <= policy.NeighborMismatch; r++ {
		out = append(out, r.String())
	}
	return out
}

// The outcome values of pnpd_datagrams_total that are not drop reasons.
const (
	OutcomeSubscribe      = "subscribe"      // a new SUBSCRIBE transaction
	OutcomeRetransmission = "retransmission" // a SUBSCRIBE answered again with its stored 200
	OutcomeResponse       = "response"       // a phone's response to a NOTIFY, matched
)

func newDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descDatagrams = newDesc("pnpd_datagrams_total",
		"Datagrams handed to the responder, by what became of them: subscribe (a new transaction), retransmission, response (to a NOTIFY), or the reason it was dropped.",
		"outcome")
	descListenerDropped = newDesc("pnpd_listener_dropped_total",
		"Datagrams the listener dropped before the responder saw them (not for the group, wrong interface, unreadable).")
	descExchanges = newDesc("pnpd_exchanges_total",
		"Exchanges with phones by outcome and brand (unknown: no vendor table named it).",
		"outcome", "brand")
	descNotifyRetrans = newDesc("pnpd_notify_retransmissions_total",
		"NOTIFYs sent again on Timer E because the phone had not answered.")
	descSubscribeRetrans = newDesc("pnpd_subscribe_retransmissions_total",
		"Retransmitted SUBSCRIBEs answered again with the stored 200.")
	descRefusals = newDesc("pnpd_policy_refusals_total",
		"Phones or datagrams the policy refused, by reason.", "reason")
	descAMIUp = newDesc("pnpd_ami_up",
		"1 when pnpd is logged in to the PBX's AMI, else 0.")
	descAMIState = newDesc("pnpd_ami_state",
		"The AMI link's state: 1 for the current one.", "state")
	descAMISince = newDesc("pnpd_ami_state_since_timestamp_seconds",
		"When the AMI link entered its current state, in seconds since the epoch.")
	descAMILogins = newDesc("pnpd_ami_logins_total",
		"Successful AMI logins; each after the first is a reconnect.")
	descSnapAge = newDesc("pnpd_pbx_snapshot_age_seconds",
		"Age of the PBX database snapshot phones are answered from; absent before the first.")
	descSnapEntries = newDesc("pnpd_pbx_snapshot_entries",
		"Keys read in the PBX database snapshot.")
	descSnapPhones = newDesc("pnpd_pbx_snapshot_phones",
		"Phones (mac/ keys) in the PBX database snapshot.")
	descSnapRefresh = newDesc("pnpd_pbx_snapshot_refresh_seconds",
		"How often the snapshot is taken again ([ami] refresh); 0: only at login and on PnpReload.")
	descSnapLoads = newDesc("pnpd_pbx_snapshot_loads_total",
		"PBX database snapshots taken.")
	descSnapErrors = newDesc("pnpd_pbx_snapshot_errors_total",
		"PBX database snapshots that failed.")
	descQueueDepth = newDesc("pnpd_pbx_write_queue_depth",
		"Writes to the PBX (records, UserEvents) waiting or being done.")
	descWrites = newDesc("pnpd_pbx_writes_total",
		"Writes to the PBX done.")
	descWriteOverflows = newDesc("pnpd_pbx_write_overflows_total",
		"Writes to the PBX lost because the queue ([ami] write_queue) was full.")
	descWriteErrors = newDesc("pnpd_pbx_write_errors_total",
		"Writes to the PBX that Asterisk refused: lost.")
	descLastOverflow = newDesc("pnpd_pbx_write_last_overflow_timestamp_seconds",
		"When the latest write to the PBX was lost to a full queue, in seconds since the epoch; absent when none was.")
	descReplayed = newDesc("pnpd_pbx_writes_replayed_total",
		"Records written again after a lost connection: those Asterisk acknowledged in the 2 s before, which a crash makes it forget.")
	descPendingOverflows = newDesc("pnpd_pbx_pending_overflows_total",
		"Unknown phones not recorded as pending because 10,000 were already.")
	descSeenOverflows = newDesc("pnpd_pbx_seen_overflows_total",
		"Seen records of unknown phones not written because the family held 100,000.")
	descInterfaces = newDesc("pnpd_interfaces",
		"Interfaces the group is received on.")
	descInterfaceInfo = newDesc("pnpd_interface_info",
		"One series per interface the group is received on, with the address answers leave from.",
		"name", "addr")
	descInfo = newDesc("pnpd_info",
		"pnpd's version, receive mode and configuration file; always 1.",
		"version", "mode", "config")
	descStart = newDesc("pnpd_start_time_seconds",
		"When pnpd started, in seconds since the epoch.")
	descReloads = newDesc("pnpd_config_reloads_total",
		"Configuration reloads, by result: ok (taken) or failed (refused, the old one stayed).",
		"result")
	descReloadOK = newDesc("pnpd_config_last_reload_successful",
		"1 unless the latest configuration reload was refused.")
	descReloadTime = newDesc("pnpd_config_last_reload_success_timestamp_seconds",
		"When the configuration in use was loaded (start or reload), in seconds since the epoch.")
)

var allDescs = []*prometheus.Desc{descDatagrams, descListenerDropped, descExchanges, descNotifyRetrans,
	descSubscribeRetrans, descRefusals, descAMIUp, descAMIState, descAMISince, descAMILogins,
	descSnapAge, descSnapEntries, descSnapPhones, descSnapRefresh, descSnapLoads, descSnapErrors,
	descQueueDepth, descWrites, descWriteOverflows, descWriteErrors, descLastOverflow, descReplayed, descPendingOverflows,
	descSeenOverflows, descInterfaces, descInterfaceInfo, descInfo, descStart, descReloads,
	descReloadOK, descReloadTime}

// Collector is a prometheus.Collector over Sources.
type Collector struct {
	src Sources
	now func() time.Time
}

// NewCollector returns a Collector that reads src at each scrape.
func NewCollector(src Sources) *Collector { return &Collector{src: src, now: time.Now} }

// NewRegistry returns a registry of pnpd's own holding a Collector over src
// and the Go runtime's and the process's collectors.
func NewRegistry(src Sources) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		NewCollector(src),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	return reg, nil
}

// Describe sends the descriptions of every metric the Collector may send.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect reads the sources and sends their metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	e := emitter{ch: ch}
	if c.src.Server != nil {
		e.server(c.src.Server())
	}
	var mode string
	if c.src.Listener != nil {
		ls := c.src.Listener()
		mode = ls.Mode
		e.listener(ls)
	}
	if c.src.Policy != nil {
		e.policy(c.src.Policy())
	}
	if c.src.AMI != nil {
		if st, ok := c.src.AMI(); ok {
			e.ami(st)
		}
	}
	var refresh time.Duration
	if c.src.Info != nil {
		in := c.src.Info()
		refresh = in.SnapshotRefresh
		e.info(in, mode)
	}
	if c.src.PBX != nil {
		if st := c.src.PBX(); st != nil {
			e.pbx(st, refresh, c.now())
		}
	}
}

// emitter sends const metrics, turning a construction error (a bug: a
// label count off) into an invalid metric that fails the scrape loudly
// rather than a panic.
type emitter struct{ ch chan<- prometheus.Metric }

func (e emitter) send(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	e.ch <- m
}

func (e emitter) counter(d *prometheus.Desc, v int64, labels ...string) {
	e.send(d, prometheus.CounterValue, float64(v), labels...)
}

func (e emitter) gauge(d *prometheus.Desc, v float64, labels ...string) {
	e.send(d, prometheus.GaugeValue, v, labels...)
}

// withKnown returns known followed by the keys of m it lacks, sorted: a
// value a newer part counts is exported too.
func withKnown[V any](known []string, m map[string]V) []string {
	out := slices.Clone(known)
	var extra []string
	for k := range m {
		if !slices.Contains(known, k) {
			extra = append(extra, k)
		}
	}
	slices.Sort(extra)
	return append(out, extra...)
}

func (e emitter) server(st pnp.Stats) {
	e.counter(descDatagrams, st.Subscribes, OutcomeSubscribe)
	e.counter(descDatagrams, st.Retransmissions, OutcomeRetransmission)
	e.counter(descDatagrams, st.Responses, OutcomeResponse)
	for _, r := range withKnown(dropReasons, st.Dropped) {
		e.counter(descDatagrams, st.Dropped[r], r)
	}
	e.counter(descSubscribeRetrans, st.Retransmissions)
	e.counter(descNotifyRetrans, st.NotifyRetransmits)
	for _, o := range withKnown(outcomes, st.Exchanges) {
		byBrand := st.Exchanges[o]
		for _, b := range withKnown(brands, byBrand) {
			e.counter(descExchanges, byBrand[b], o, b)
		}
	}
}

func (e emitter) listener(st ListenerStats) {
	e.counter(descListenerDropped, st.Dropped)
	e.gauge(descInterfaces, float64(len(st.Interfaces)))
	for _, i := range st.Interfaces {
		e.gauge(descInterfaceInfo, 1, i.Name, i.Addr)
	}
}

func (e emitter) policy(st policy.Stats) {
	for _, r := range withKnown(refusalReasons(), st.Refused) {
		e.counter(descRefusals, st.Refused[r], r)
	}
}

func (e emitter) ami(st ami.Status) {
	up := 0.0
	if st.State == ami.Connected {
		up = 1
	}
	e.gauge(descAMIUp, up)
	for _, s := range amiStates {
		v := 0.0
		if s == st.State {
			v = 1
		}
		e.gauge(descAMIState, v, s.String())
	}
	if !slices.Contains(amiStates, st.State) {
		e.gauge(descAMIState, 1, st.State.String())
	}
	if !st.Since.IsZero() {
		e.gauge(descAMISince, unixSeconds(st.Since))
	}
	e.counter(descAMILogins, int64(st.Logins))
}

func (e emitter) pbx(st *pbx.Stats, refresh time.Duration, now time.Time) {
	if s := st.Snapshot; s != nil {
		e.gauge(descSnapAge, max(now.Sub(s.Taken), 0).Seconds())
		e.gauge(descSnapEntries, float64(s.Entries))
		e.gauge(descSnapPhones, float64(len(s.MACs)))
	}
	e.gauge(descSnapRefresh, refresh.Seconds())
	e.counter(descSnapLoads, st.Loads)
	e.counter(descSnapErrors, st.LoadErrors)
	e.gauge(descQueueDepth, float64(st.QueueDepth))
	e.counter(descWrites, st.Written)
	e.counter(descWriteOverflows, st.Overflows)
	e.counter(descWriteErrors, st.WriteErrors)
	e.counter(descReplayed, st.Replayed)
	if !st.LastOverflow.IsZero() {
		e.gauge(descLastOverflow, float64(st.LastOverflow.UnixNano())/1e9)
	}
	e.counter(descPendingOverflows, st.PendingOverflows)
	e.counter(descSeenOverflows, st.SeenOverflows)
}

func (e emitter) info(in Info, mode string) {
	e.gauge(descInfo, 1, in.Version, mode, in.ConfigPath)
	if !in.Started.IsZero() {
		e.gauge(descStart, unixSeconds(in.Started))
	}
	e.counter(descReloads, in.Reloads, "ok")
	e.counter(descReloads, in.ReloadFailures, "failed")
	ok := 1.0
	if in.LastReloadError != "" {
		ok = 0
	}
	e.gauge(descReloadOK, ok)
	last := in.LastReload
	if last.IsZero() {
		last = in.Started
	}
	if !last.IsZero() {
		e.gauge(descReloadTime, unixSeconds(last))
	}
}

// unixSeconds is t in seconds since the epoch, with its fraction.
func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
