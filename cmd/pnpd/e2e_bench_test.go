package main

// `pnpd bench` end to end: the built binary makes its own namespaces, runs
// every part small (60 phones, 5 singles, two tiny PBX families, 5 ms per
// parser and packet) and must print every row of its table with the counts
// the options imply, then leave no namespace and the machine's neighbour
// table thresholds as it found them. No figure it measured is asserted.

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/asterisk/asterisktest"
)

// benchRow is one row of the report's table.
type benchRow struct{ part, measure, pnpd, yard, ratio, target string }

// benchTable reads the rows of the Markdown table in the report, after its
// header and separator; ok is false when the header is missing.
func benchTable(out string) (rows []benchRow, ok bool) {
	const header = "| # | measure | pnpd | yardstick | ratio | target |"
	lines := strings.Split(out, "\n")
	for i, line := range lines {
		if line != header {
			continue
		}
		if i+1 >= len(lines) || lines[i+1] != "|---|---|---|---|---|---|" {
			return nil, false
		}
		for _, l := range lines[i+2:] {
			if !strings.HasPrefix(l, "| ") || !strings.HasSuffix(l, " |") {
				break
			}
			c := strings.Split(strings.TrimSuffix(strings.TrimPrefix(l, "| "), " |"), " | ")
			for len(c) < 6 {
				c = append(c, "")
			}
			rows = append(rows, benchRow{c[0], c[1], c[2], c[3], c[4], c[5]})
		}
		return rows, true
	}
	return nil, false
}

// neighThresholds reads the machine's neighbour table thresholds that the
// bench raises while it runs.
func neighThresholds(t *testing.T) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, name := range []string{"gc_thresh2", "gc_thresh3"} {
		b, err := os.ReadFile("/proc/sys/net/ipv4/neigh/default/" + name)
		if err != nil {
			t.Fatal(err)
		}
		m[name] = strings.TrimSpace(string(b))
	}
	return m
}

func TestBenchTiny(t *testing.T) {
	requireLab(t)
	asterisktest.Root(t)
	bin := pnpdBinary(t)
	packets, err := filepath.Abs(filepath.Join("..", "..", "sip", "testdata", "phones"))
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(packets, "*.sip"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no packets in %s: %v", packets, err)
	}
	thresholds := neighThresholds(t)

	// -timeout 5m bounds the run; the context is a backstop above it.
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "bench", "-phones", "60", "-singles", "5", "-outstanding", "8",
		"-offer", "200ms", "-pbx", "100,300", "-parse-time", "5ms", "-packets", packets,
		"-asterisk", "required", "-phase-limit", "30s", "-timeout", "5m")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	runErr := cmd.Run()
	out := stdout.String()
	t.Logf("pnpd bench:\n%s", out)
	if runErr != nil {
		t.Fatalf("pnpd bench: %v\nstderr:\n%s", runErr, stderr.String())
	}

	t.Run("table", func(t *testing.T) {
		rows, ok := benchTable(out)
		if !ok {
			t.Fatalf("no table header row in the report")
		}
		find := func(part, measure string) *benchRow {
			for i := range rows {
				if rows[i].part == part && rows[i].measure == measure {
					return &rows[i]
				}
			}
			return nil
		}
		// Every row the options call for, by part (# in the table) and
		// measure text; Report.Write numbers its parts 1 to 6.
		want := []struct{ part, measure string }{
			{"1", "200 latency, single phones (5): median / p99"},
			{"1", "200 latency, single phones: against the minimal responder"},
			{"1", "200 latency, single phones: against a minimal responder that never sleeps (one core spinning)"},
			{"1", "200 latency under load (the storm): median / p99"},
			{"4", "the peer: Asterisk's 401 to the same single SUBSCRIBEs; pnpd's 200 median as a ratio of it"},
			{"2", "storm: every phone NOTIFYed and its 200 at the responder, after the first SUBSCRIBE"},
			{"2", "storm: phones with a NOTIFY (with a URL) / whose 200 the responder logged, fewest in a round"},
			{"2", "storm: exchanges/s over the whole storm"},
			{"2", "storm: SUBSCRIBE retransmissions / NOTIFYs beyond one per phone / phones that gave up (Timer F), most in a round"},
			{"2", "storm: kernel receive-buffer drops, responder / phones, all rounds"},
			{"2", "storm: responder CPU per 1,000 exchanges (the phones' CPU for the storm)"},
			{"2", "storm: responder RSS, peak (when ready)"},
			{"3", "saturation: exchanges/s, 8 in flight"},
			{"3", "saturation: 200 latency median / p99"},
			{"3", "saturation: receive-buffer drops, responder / phones, all rounds; CPU per 1,000"},
			{"5", "parse: median ratio over the packets gosip takes"},
			{"6", "PBX: load 100 phones (150 entries), DBGetTree + snapshot, median of 3"},
			{"6", "PBX: load 300 phones (350 entries), DBGetTree + snapshot, median of 3"},
			{"6", "PBX: pnpd serve RSS holding 350 entries (peak); its own load took"},
			{"6", "PBX: DBGet round trip (200): median / p99"},
		}
		for _, f := range files {
			want = append(want, struct{ part, measure string }{"5", "parse " + strings.TrimSuffix(filepath.Base(f), ".sip")})
		}
		for _, w := range want {
			if find(w.part, w.measure) == nil {
				t.Errorf("no row # %s %q", w.part, w.measure)
			}
		}
		seen := map[string]bool{}
		for _, r := range rows {
			if r.part < "1" || r.part > "6" || len(r.part) != 1 {
				t.Errorf("row of no part 1 to 6: %+v", r)
			}
			if seen[r.measure] {
				t.Errorf("row twice: %+v", r)
			}
			seen[r.measure] = true
		}

		for _, tt := range []struct {
			name, part, measure string
			check               func(r *benchRow) bool
		}{
			{"Asterisk's 401 measured", "4", "the peer: Asterisk's 401 to the same single SUBSCRIBEs; pnpd's 200 median as a ratio of it",
				func(r *benchRow) bool {
					return strings.HasPrefix(r.yard, "Asterisk's 401: ") && !strings.Contains(r.yard, "not measured") &&
						!strings.Contains(r.yard, "also") && !strings.Contains(r.pnpd, "also")
				}},
			{"every phone of the storm NOTIFYed with a URL and confirmed", "2",
				"storm: phones with a NOTIFY (with a URL) / whose 200 the responder logged, fewest in a round",
				func(r *benchRow) bool { return r.pnpd == "60 (60) / 60 of 60" && r.yard == "minimal: 60 / 60 of 60" }},
			{"pnpd serve holds 300 phones and 50 tenants", "6",
				"PBX: pnpd serve RSS holding 350 entries (peak); its own load took",
				func(r *benchRow) bool { return !strings.HasSuffix(r.pnpd, "; ") }},
		} {
			t.Run(tt.name, func(t *testing.T) {
				r := find(tt.part, tt.measure)
				if r == nil {
					t.Fatalf("no row # %s %q", tt.part, tt.measure)
				}
				if !tt.check(r) {
					t.Errorf("row # %s %q: %+v", tt.part, tt.measure, *r)
				}
			})
		}
	})

	t.Run("nothing left out", func(t *testing.T) {
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "note:") {
				t.Errorf("the report has a note: %s", line)
			}
		}
	})

	t.Run("namespaces removed", func(t *testing.T) {
		lctx, lcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer lcancel()
		list, err := exec.CommandContext(lctx, "ip", "netns", "list").CombinedOutput()
		if err != nil {
			t.Fatalf("ip netns list: %v\n%s", err, list)
		}
		for _, line := range strings.Split(string(list), "\n") {
			if strings.HasPrefix(line, "pnpbench") {
				t.Errorf("namespace left behind: %s", line)
			}
		}
	})

	t.Run("neighbour thresholds restored", func(t *testing.T) {
		after := neighThresholds(t)
		for name, v := range thresholds {
			if after[name] != v {
				t.Errorf("%s is %s after the bench, was %s", name, after[name], v)
			}
		}
	})
}

// TestBenchUsage: words of the caller that are off end `pnpd bench` with
// exit 2 and a message naming the flag, before anything is measured. A
// -timeout of 1 ns bounds the run should a case be let through.
func TestBenchUsage(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no phones", []string{"-timeout", "1ns", "-phones", "0"}, "-phones"},
		{"more phones than addresses", []string{"-timeout", "1ns", "-phones", "70000"}, "-phones"},
		{"unknown asterisk mode", []string{"-timeout", "1ns", "-asterisk", "maybe"}, "-asterisk"},
		{"pbx not a number", []string{"-timeout", "1ns", "-pbx", "x"}, "-pbx"},
		{"responder without iface", []string{"responder"}, "-iface"},
		{"unexpected argument", []string{"-timeout", "1ns", "-phones", "5", "extra"}, `unexpected argument "extra"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := runCLI(t, append([]string{"bench"}, tt.args...)...)
			if code != 2 || !strings.Contains(errs, tt.want) || out != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want 2 and %q", code, out, errs, tt.want)
			}
		})
	}
}
