package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Targets of the measurement (docs/BENCHMARKS.md).
const (
	targetSingleRatio = 0.10 // pnpd's single 200 median ÷ Asterisk's 401 median, at most
	targetStormP99    = 2.0  // storm 200 p99 ÷ the minimal responder's, at most
	targetThroughput  = 0.5  // saturation rate ÷ the minimal responder's, at least
	targetParseRatio  = 5.0  // gosip ÷ ours, at least
	targetParseAllocs = 2    // our allocations per SUBSCRIBE, at most
	targetLoad100k    = 5 * time.Second
	targetRSS100k     = 100_000_000 // bytes (MB, not MiB)
)

// targetStormAll is how soon all phones of a storm offered within one
// second must be provisioned; it scales with Options.Offer.
func targetStormAll(offer time.Duration) time.Duration { return offer * 12 / 10 }

// Write prints the report as one Markdown table, then its notes.
func (rep *Report) Write(w io.Writer) {
	o := rep.Options
	fmt.Fprintf(w, "pnpd bench, %s, %d CPUs, Linux %s, took %s\n", rep.Start.UTC().Format("2006-01-02 15:04 MST"),
		rep.CPUs, rep.Kernel, rep.Took.Round(time.Second))
	fmt.Fprintf(w, "storm: %d phones (7 brands, distinct MACs and addresses) offered within %s; single: %d phones %s apart; saturation: %d phones, %d in flight; storm and saturation: medians of %d rounds each\n",
		o.Phones, o.Offer, o.Singles, o.Gap, o.Phones, o.Outstanding, rep.roundsRun())
	fmt.Fprintf(w, "pnpd serve (%s): bind mode, a default URL, no [policy] section: the default policy (source_rate and mac_rate 10/10s, contact_is_source)\n\n", o.Exe)
	t := &table{}
	t.row("#", "measure", "pnpd", "yardstick", "ratio", "target")
	rep.latencyRows(t)
	rep.stormRows(t)
	rep.saturationRows(t)
	rep.parseRows(t)
	rep.pbxRows(t)
	t.write(w)
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "\nnote: %s", n)
	}
	if len(rep.Notes) > 0 {
		fmt.Fprintln(w)
	}
	var rounds []*Round
	for _, who := range []string{"pnpd", "minimal", "spinning"} {
		rounds = append(rounds, rep.Single[who])
		rounds = append(rounds, rep.Storm[who]...)
		rounds = append(rounds, rep.Saturation[who]...)
	}
	for _, rd := range rounds {
		if rd != nil && len(rd.Warnings) > 0 {
			fmt.Fprintf(w, "\n%s logged warnings:\n  %s\n", rd.Who, strings.Join(rd.Warnings, "\n  "))
		}
	}
}

func (rep *Report) latencyRows(t *table) {
	p, m, a := rep.Single["pnpd"], rep.Single["minimal"], rep.Single["asterisk"]
	if p != nil {
		t.row("1", fmt.Sprintf("200 latency, single phones (%d): median / p99", p.Out.Phones),
			medP99(p.Out.Latencies)+codes(p.Out.Codes, 200), "", "", "")
		if m != nil {
			t.row("1", "200 latency, single phones: against the minimal responder", medP99(p.Out.Latencies),
				"minimal: "+medP99(m.Out.Latencies), ratioOf(median(p.Out.Latencies), median(m.Out.Latencies)), "")
		}
		if s := rep.Single["spinning"]; s != nil {
			yard := "spinning minimal: " + medP99(s.Out.Latencies)
			if a != nil && len(a.Out.Latencies) > 0 {
				yard += fmt.Sprintf(" (%.3f × Asterisk's 401)", float64(median(s.Out.Latencies))/float64(median(a.Out.Latencies)))
			}
			t.row("1", "200 latency, single phones: against a minimal responder that never sleeps (one core spinning)",
				medP99(p.Out.Latencies), yard, ratioOf(median(p.Out.Latencies), median(s.Out.Latencies)), "")
		}
	}
	sp, sm := summarize(rep.Storm["pnpd"]), summarize(rep.Storm["minimal"])
	if sp != nil && sm != nil && sm.p99 > 0 {
		r := float64(sp.p99) / float64(sm.p99)
		t.row("1", "200 latency under load (the storm): median / p99", sp.latency(),
			"minimal: "+sm.latency(), fmt.Sprintf("p99 %.2f", r),
			"p99 ≤ 2 × minimal's"+verdict(r <= targetStormP99))
	}
	if p != nil {
		yard, ratio, target := "not measured (no Asterisk)", "", "≤ 0.10"
		if a != nil && len(a.Out.Latencies) > 0 {
			yard = "Asterisk's 401: " + medP99(a.Out.Latencies) + codes(a.Out.Codes, 401)
			r := float64(median(p.Out.Latencies)) / float64(median(a.Out.Latencies))
			ratio = fmt.Sprintf("%.3f", r)
			target += verdict(r <= targetSingleRatio)
		}
		t.row("4", "the peer: Asterisk's 401 to the same single SUBSCRIBEs; pnpd's 200 median as a ratio of it",
			medP99(p.Out.Latencies), yard, ratio, target)
	}
}

func (rep *Report) stormRows(t *table) {
	p, m := summarize(rep.Storm["pnpd"]), summarize(rep.Storm["minimal"])
	if p == nil || m == nil {
		return
	}
	o := rep.Options
	allTarget := targetStormAll(o.Offer)
	t.row("2", "storm: every phone NOTIFYed and its 200 at the responder, after the first SUBSCRIBE",
		dur(p.allDone), "minimal: "+dur(m.allDone), ratioOf(p.allDone, m.allDone),
		"≤ "+dur(allTarget)+" in every round"+verdict(p.worstDone > 0 && p.worstDone <= allTarget && p.complete()))
	t.row("2", "storm: phones with a NOTIFY (with a URL) / whose 200 the responder logged, fewest in a round",
		fmt.Sprintf("%d (%d) / %d of %d", p.notified, p.withURL, p.confirmed, p.phones),
		fmt.Sprintf("minimal: %d / %d of %d", m.notified, m.confirmed, m.phones), "",
		"all"+verdict(p.complete()))
	t.row("2", "storm: exchanges/s over the whole storm", fmt.Sprintf("%.0f", p.stormRate),
		fmt.Sprintf("minimal: %.0f", m.stormRate), "", "")
	t.row("2", "storm: SUBSCRIBE retransmissions / NOTIFYs beyond one per phone / phones that gave up (Timer F), most in a round",
		fmt.Sprintf("%d / %d / %d", p.retrans, p.extraNotifies, p.gaveUp),
		fmt.Sprintf("minimal: %d / %d / %d", m.retrans, m.extraNotifies, m.gaveUp), "", "")
	t.row("2", "storm: kernel receive-buffer drops, responder / phones, all rounds",
		fmt.Sprintf("%d / %d", p.dropsResp, p.dropsPhones),
		fmt.Sprintf("minimal: %d / %d", m.dropsResp, m.dropsPhones), "", "")
	t.row("2", "storm: responder CPU per 1,000 exchanges (the phones' CPU for the storm)",
		fmt.Sprintf("%s (%s)", dur(p.cpu1000), dur(p.bench)),
		fmt.Sprintf("minimal: %s (%s)", dur(m.cpu1000), dur(m.bench)), ratioOf(p.cpu1000, m.cpu1000), "")
	t.row("2", "storm: responder RSS, peak (when ready)", fmt.Sprintf("%s (%s)", mb(p.hwm), mb(p.idle)),
		fmt.Sprintf("minimal: %s (%s)", mb(m.hwm), mb(m.idle)), "", "")
}

func (rep *Report) saturationRows(t *table) {
	p, m := summarize(rep.Saturation["pnpd"]), summarize(rep.Saturation["minimal"])
	if p == nil || m == nil || m.rate == 0 {
		return
	}
	r := p.rate / m.rate
	t.row("3", fmt.Sprintf("saturation: exchanges/s, %d in flight", rep.Options.Outstanding),
		fmt.Sprintf("%.0f", p.rate), fmt.Sprintf("minimal: %.0f", m.rate), fmt.Sprintf("%.2f", r),
		"≥ 0.5 × minimal's"+verdict(r >= targetThroughput))
	t.row("3", "saturation: 200 latency median / p99", p.latency(), "minimal: "+m.latency(), "", "")
	t.row("3", "saturation: receive-buffer drops, responder / phones, all rounds; CPU per 1,000",
		fmt.Sprintf("%d / %d; %s", p.dropsResp, p.dropsPhones, dur(p.cpu1000)),
		fmt.Sprintf("minimal: %d / %d; %s", m.dropsResp, m.dropsPhones, dur(m.cpu1000)), "", "")
}

// summary is one responder's rounds of a phase: the median of each
// figure, the worst of the counts.
type summary struct {
	rounds             int
	p50, p99           time.Duration
	allDone, worstDone time.Duration
	rate, stormRate    float64
	cpu1000, bench     time.Duration
	hwm, idle          int64
	phones, notified   int
	withURL, confirmed int
	retrans, gaveUp    int
	extraNotifies      int
	dropsResp          uint64
	dropsPhones        uint64
}

func summarize(rs []*Round) *summary {
	if len(rs) == 0 {
		return nil
	}
	s := &summary{rounds: len(rs), phones: rs[0].Out.Phones, notified: -1, withURL: -1, confirmed: -1}
	var p50, p99, all, cpu, bench []time.Duration
	var rate, stormRate []float64
	for _, r := range rs {
		p50 = append(p50, median(r.Out.Latencies))
		p99 = append(p99, percentile(r.Out.Latencies, 0.99))
		all = append(all, r.AllDone())
		s.worstDone = max(s.worstDone, r.AllDone())
		cpu = append(cpu, r.CPUPer1000())
		bench = append(bench, r.Bench)
		rate = append(rate, r.Rate())
		if d := r.AllDone(); d > 0 {
			stormRate = append(stormRate, float64(r.Out.Done)/d.Seconds())
		}
		s.hwm, s.idle = max(s.hwm, r.HWM), max(s.idle, r.IdleRSS)
		s.notified = minCount(s.notified, r.Out.Notified)
		s.withURL = minCount(s.withURL, r.Out.WithURL)
		s.confirmed = minCount(s.confirmed, r.Confirmed)
		s.retrans = max(s.retrans, r.Out.Retransmissions())
		s.gaveUp = max(s.gaveUp, r.Out.GaveUp)
		s.extraNotifies = max(s.extraNotifies, r.Out.Notifies-r.Out.Notified)
		s.dropsResp += r.Resp.RcvbufErrors
		s.dropsPhones += r.Phones.RcvbufErrors
	}
	s.p50, s.p99, s.allDone, s.cpu1000, s.bench = median(p50), median(p99), median(all), median(cpu), median(bench)
	s.rate, s.stormRate = medianFloat(rate), medianFloat(stormRate)
	return s
}

// complete: in every round every phone had its NOTIFY with a URL and the
// responder its 200.
func (s *summary) complete() bool {
	return s.notified == s.phones && s.withURL == s.phones && s.confirmed >= s.phones && s.gaveUp == 0
}

func (s *summary) latency() string {
	return dur(s.p50) + " / " + dur(s.p99)
}

func minCount(a, b int) int {
	if a < 0 {
		return b
	}
	return min(a, b)
}

func medianFloat(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	return s[len(s)/2]
}

func (rep *Report) parseRows(t *table) {
	var ratios []float64
	for _, r := range rep.Parse {
		ours := fmt.Sprintf("%.0f ns, %.0f B, %.0f allocs (sip.Parse: %.0f)", r.Ours.NsPerOp, r.Ours.BytesPerOp, r.Ours.AllocsPerOp, r.New.AllocsPerOp)
		if r.GosipErr != nil {
			t.row("5", "parse "+r.Packet, ours, r.GosipErr.Error(), "", "")
			continue
		}
		ratios = append(ratios, r.Ratio())
		ok := r.Ratio() >= targetParseRatio && r.New.AllocsPerOp <= targetParseAllocs
		t.row("5", "parse "+r.Packet, ours,
			fmt.Sprintf("gosip ParseMsg: %.0f ns, %.0f B, %.0f allocs", r.Gosip.NsPerOp, r.Gosip.BytesPerOp, r.Gosip.AllocsPerOp),
			fmt.Sprintf("%.1f×", r.Ratio()), "≥ 5×, ≤ 2 allocs"+verdict(ok))
	}
	if len(ratios) > 0 {
		slices.Sort(ratios)
		t.row("5", "parse: median ratio over the packets gosip takes", "", "", fmt.Sprintf("%.1f×", ratios[len(ratios)/2]), "")
	}
}

func (rep *Report) pbxRows(t *table) {
	x := rep.PBX
	if x == nil {
		return
	}
	for _, s := range x.Sizes {
		target := ""
		if s.Phones >= 100000 {
			target = "< 5 s" + verdict(s.Load() < targetLoad100k)
		}
		t.row("6", fmt.Sprintf("PBX: load %d phones (%d entries), DBGetTree + snapshot, median of %d", s.Phones, s.Entries, len(s.Loads)),
			dur(s.Load()), fmt.Sprintf("filled with DBPut in %s", dur(s.Fill)), "", target)
	}
	if len(x.Sizes) > 0 {
		biggest := x.Sizes[len(x.Sizes)-1]
		target := ""
		if biggest.Phones >= 100000 {
			target = "< 100 MB" + verdict(x.ServeRSS < targetRSS100k)
		}
		idle := ""
		if p := rep.Single["pnpd"]; p != nil {
			idle = "pnpd without PBX: " + mb(p.IdleRSS)
		}
		t.row("6", fmt.Sprintf("PBX: pnpd serve RSS holding %d entries (peak); its own load took", x.ServeEntries),
			fmt.Sprintf("%s (%s); %s", mb(x.ServeRSS), mb(x.ServeHWM), x.ServeTook), idle, "", target)
	}
	if len(x.Get) > 0 {
		t.row("6", fmt.Sprintf("PBX: DBGet round trip (%d): median / p99", len(x.Get)), medP99(x.Get), "", "", "")
	}
}

// roundsRun is the fewest rounds any responder ran of the storm and the
// saturation run (fewer than asked only when the run was cut short).
func (rep *Report) roundsRun() int {
	n := -1
	for _, set := range []map[string][]*Round{rep.Storm, rep.Saturation} {
		for _, who := range []string{"pnpd", "minimal"} {
			n = minCount(n, len(set[who]))
		}
	}
	return max(n, 0)
}

// verdict is appended to a target.
func verdict(ok bool) string {
	if ok {
		return ": met"
	}
	return ": MISSED"
}

func codes(c map[int]int, want int) string {
	var other []string
	for code, n := range c {
		if code != want {
			other = append(other, fmt.Sprintf("%d×%d", n, code))
		}
	}
	if len(other) == 0 {
		return ""
	}
	slices.Sort(other)
	return " (also " + strings.Join(other, ", ") + ")"
}

func medP99(d []time.Duration) string {
	if len(d) == 0 {
		return "none"
	}
	return dur(median(d)) + " / " + dur(percentile(d, 0.99))
}

func ratioOf(a, b time.Duration) string {
	if b == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f", float64(a)/float64(b))
}

// dur prints a duration with three significant digits or so.
func dur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// table is a Markdown table.
type table struct{ rows [][]string }

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) {
	for i, r := range t.rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
		if i == 0 {
			fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(r)))
		}
	}
}
