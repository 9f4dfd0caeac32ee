package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/resolve"
)

const (
	yealinkMAC = "001565aabbcc"
	otherMAC   = "0004f2000001"
	// Log messages counted by the tests.
	msgSourceOver = "policy: source over its rate"
	msgMACOver    = "policy: MAC over its rate"
	msgBackUnder  = "policy: senders back under their rate"
	msgTableFull  = "policy: too many senders tracked at once"
)

var phoneSrc = netip.MustParseAddr("192.168.1.10")

// fakeState is the PBX's database as the policy reads it.
type fakeState struct {
	until       time.Time
	windowKnown bool
	done        map[string]bool
	provKnown   bool
}

func (s *fakeState) Window() (time.Time, bool) { return s.until, s.windowKnown }

func (s *fakeState) Provisioned(mac string) (bool, bool) { return s.done[mac], s.provKnown }

// syncBuffer is a log sink the tests read while the policy may write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// count returns how many lines hold substr.
func (s *syncBuffer) count(substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for l := range strings.Lines(s.b.String()) {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newTestPolicy returns the policy of cfg with cfg.Policy defaulted to
// config.Default's when zero, logging into the returned buffer.
func newTestPolicy(t testing.TB, cfg Config) (*Policy, *syncBuffer) {
	t.Helper()
	log := new(syncBuffer)
	cfg.Logger = slog.New(slog.NewTextHandler(log, nil))
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p, log
}

// defaults returns the [policy] of a configuration that has none.
func defaults() config.Policy { return config.Default().Policy }

func TestReason(t *testing.T) {
	seen := map[string]bool{}
	for r := Admitted; r < numReasons; r++ {
		s := r.String()
		if s == "" || seen[s] || strings.ContainsAny(s, " _") {
			t.Errorf("Reason(%d) = %q: want a unique name in kebab-case", int(r), s)
		}
		seen[s] = true
	}
	tests := []struct {
		r       Refusal
		refused bool
		err     string
	}{
		{Refusal{}, false, "admitted"},
		{Refusal{Reason: MACRate}, true, "mac-rate"},
		{Refusal{Reason: MACDenied, Detail: "deny_macs entry 001565 matches 001565aabbcc"}, true, "mac-denied: deny_macs entry 001565 matches 001565aabbcc"},
	}
	for _, tt := range tests {
		t.Run(tt.err, func(t *testing.T) {
			if tt.r.Refused() != tt.refused {
				t.Errorf("Refused() = %v", tt.r.Refused())
			}
			if tt.r.Error() != tt.err {
				t.Errorf("Error() = %q, want %q", tt.r.Error(), tt.err)
			}
			var err error = tt.r // a Refusal is an error for the exchange's outcome
			var got Refusal
			if !errors.As(err, &got) || got != tt.r {
				t.Errorf("errors.As: %+v", got)
			}
		})
	}
}

func TestNew(t *testing.T) {
	neighbor := func(context.Context, string, netip.Addr) (net.HardwareAddr, error) { return nil, nil }
	with := func(f func(*config.Policy)) config.Policy {
		p := defaults()
		f(&p)
		return p
	}
	tests := []struct {
		name string
		cfg  Config
		want string // in the error; "" for none
	}{
		{"defaults", Config{Policy: defaults()}, ""},
		{"zero config", Config{}, ""},
		{"window without state", Config{Policy: with(func(p *config.Policy) { p.Window = true })}, "PBX's database"},
		{"once without state", Config{Policy: with(func(p *config.Policy) { p.Once = true })}, "PBX's database"},
		{"approve without state", Config{Policy: with(func(p *config.Policy) { p.Unknown = "approve" })}, "PBX's database"},
		{"neighbor_check without lookup", Config{Policy: with(func(p *config.Policy) { p.NeighborCheck = true })}, "neighbor_check needs a neighbour lookup"},
		{"window with state", Config{Policy: with(func(p *config.Policy) { p.Window = true }), State: &fakeState{}}, ""},
		{"once and approve with state", Config{Policy: with(func(p *config.Policy) { p.Once, p.Unknown = true, "approve" }), State: &fakeState{}}, ""},
		{"neighbor_check with lookup", Config{Policy: with(func(p *config.Policy) { p.NeighborCheck = true }), Neighbor: neighbor}, ""},
		{"observe without state", Config{Policy: with(func(p *config.Policy) { p.Unknown = "observe" })}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.cfg)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tt.want != "" && err == nil:
				t.Fatal("New accepted it")
			case tt.want != "" && (!strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "policy: ")):
				t.Fatalf("New: %q, want the package prefix and %q", err, tt.want)
			case tt.want != "" && p != nil:
				t.Errorf("New returned a policy with its error")
			}
		})
	}
	t.Run("zero unknown is default", func(t *testing.T) {
		p, err := New(Config{})
		if err != nil {
			t.Fatal(err)
		}
		if u := p.Config().Unknown; u != "default" {
			t.Errorf("Unknown %q", u)
		}
		// A zero Policy limits nothing: both rates are off.
		for i := range 100 {
			if !p.Source(phoneSrc, time.Now()) {
				t.Fatalf("datagram %d refused by a zero policy", i+1)
			}
		}
	})
}

func TestSourceRate(t *testing.T) {
	p, log := newTestPolicy(t, Config{Policy: defaults()})
	at := func(d time.Duration) time.Time { return p.epoch.Add(d) }
	other := netip.MustParseAddr("192.168.1.11")

	for i := range 10 {
		if !p.Source(phoneSrc, at(0)) {
			t.Fatalf("datagram %d of 10 refused", i+1)
		}
	}
	for i := range 5 {
		if p.Source(phoneSrc, at(0)) {
			t.Fatalf("datagram %d over the rate taken", 11+i)
		}
	}
	if !p.Source(other, at(0)) {
		t.Error("another address refused")
	}
	st := p.Stats()
	if st.Refused["source-rate"] != 5 || len(st.Refused) != 1 {
		t.Errorf("Refused %v, want source-rate 5", st.Refused)
	}
	if st.Sources != 2 || st.MACs != 0 {
		t.Errorf("tracked %d sources %d MACs, want 2 and 0", st.Sources, st.MACs)
	}
	if n := log.count(msgSourceOver); n != 1 {
		t.Fatalf("%d warnings for one flood, want 1:\n%s", n, log)
	}
	for _, w := range []string{"level=WARN", "reason=source-rate", "src=192.168.1.10", "source_rate=10/10s"} {
		if !strings.Contains(log.String(), w) {
			t.Errorf("the warning lacks %q:\n%s", w, log)
		}
	}

	// A second later one token is back: one datagram passes, the flood
	// goes on as the same episode.
	if !p.Source(phoneSrc, at(time.Second)) {
		t.Error("a datagram a second later refused")
	}
	if p.Source(phoneSrc, at(time.Second)) {
		t.Error("a second datagram a second later taken")
	}
	if n := log.count(msgSourceOver); n != 1 {
		t.Errorf("%d warnings within one episode, want 1", n)
	}

	// Quiet for a period: the sweep forgets the address and says so; its
	// next flood is a new episode, warned about again.
	p.sweep(at(11 * time.Second))
	if n := log.count(msgBackUnder); n != 1 {
		t.Errorf("%d %q lines after the sweep, want 1:\n%s", n, msgBackUnder, log)
	}
	if st := p.Stats(); st.Sources != 0 {
		t.Errorf("%d sources tracked after the sweep", st.Sources)
	}
	for i := range 10 {
		if !p.Source(phoneSrc, at(11*time.Second)) {
			t.Fatalf("after the sweep, datagram %d refused", i+1)
		}
	}
	if p.Source(phoneSrc, at(11*time.Second)) {
		t.Fatal("after the sweep, datagram 11 taken")
	}
	if n := log.count(msgSourceOver); n != 2 {
		t.Errorf("%d warnings for two floods, want 2:\n%s", n, log)
	}
}

// TestSourceStorm: the default rates let real phones through, however many
// boot at once, and stop the one that floods.
func TestSourceStorm(t *testing.T) {
	// A UDP SUBSCRIBE nobody answers is sent again after T1, 2*T1, 4*T1,
	// then every T2 until Timer F (RFC 3261 17.1.2.2).
	var timerE []time.Duration
	for at, gap := time.Duration(0), 500*time.Millisecond; at < 32*time.Second; at, gap = at+gap, min(2*gap, 4*time.Second) {
		timerE = append(timerE, at)
	}
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	mac := func(i int) string { return fmt.Sprintf("0015650%05x", i) }

	t.Run("10000 phones in a second, each sending 3", func(t *testing.T) {
		p, log := newTestPolicy(t, Config{Policy: defaults()})
		const phones = 10000
		for i := range phones {
			start := p.epoch.Add(time.Duration(i) * time.Second / phones)
			for j, d := range timerE[:3] {
				if !p.Source(addr(i), start.Add(d)) {
					t.Fatalf("phone %d, datagram %d refused", i, j+1)
				}
			}
			// One new transaction per phone reaches Admit; the
			// transaction layer absorbs its retransmissions.
			ph := Phone{MAC: mac(i), Src: addr(i), Interface: "eth0", ContactIsSource: true}
			if r := p.Admit(ph, start); r.Refused() {
				t.Fatalf("phone %d: %v", i, r)
			}
		}
		st := p.Stats()
		if len(st.Refused) != 0 || st.Sources != phones || st.MACs != phones {
			t.Errorf("stats %+v", st)
		}
		if log.String() != "" {
			t.Errorf("logged during a boot storm:\n%.500s", log)
		}
	})

	t.Run("an unanswered phone retransmits until Timer F", func(t *testing.T) {
		p, _ := newTestPolicy(t, Config{Policy: defaults()})
		if len(timerE) != 11 {
			t.Fatalf("Timer E schedule %v", timerE)
		}
		for j, d := range timerE {
			if !p.Source(phoneSrc, p.epoch.Add(d)) {
				t.Fatalf("datagram %d at %v refused", j+1, d)
			}
			ph := Phone{MAC: yealinkMAC, Src: phoneSrc, ContactIsSource: true}
			if r := p.Admit(ph, p.epoch.Add(d)); r.Refused() {
				t.Fatalf("datagram %d at %v: %v", j+1, d, r)
			}
		}
	})

	t.Run("one address floods during the storm", func(t *testing.T) {
		p, log := newTestPolicy(t, Config{Policy: defaults()})
		flooder := netip.MustParseAddr("192.168.99.99")
		taken := 0
		for i := range 10000 {
			now := p.epoch.Add(time.Duration(i) * time.Second / 10000)
			if p.Source(flooder, now) {
				taken++
			}
			if !p.Source(addr(i), now) {
				t.Fatalf("phone %d refused", i)
			}
		}
		// 10 at once, then one a second for the second it lasted.
		if taken > 11 {
			t.Errorf("the flooder got %d datagrams through in a second, want at most 11", taken)
		}
		if n := p.Stats().Refused["source-rate"]; n != int64(10000-taken) {
			t.Errorf("source-rate refusals %d, want %d", n, 10000-taken)
		}
		if n := log.count(msgSourceOver); n != 1 {
			t.Errorf("%d warnings, want 1", n)
		}
	})
}

func TestSourceTableFull(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 1<<18 buckets")
	}
	p, log := newTestPolicy(t, Config{Policy: defaults()})
	now := p.epoch
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	for i := range maxBuckets {
		if !p.Source(addr(i), now) {
			t.Fatalf("address %d refused", i)
		}
	}
	for i := range 3 {
		if p.Source(addr(maxBuckets+i), now) {
			t.Fatalf("new address %d taken with the table full", i+1)
		}
	}
	if !p.Source(addr(0), now) {
		t.Error("a tracked address refused while the table is full")
	}
	if n := log.count(msgTableFull); n != 1 {
		t.Errorf("%d table-full warnings, want 1:\n%s", n, log)
	}
	if !strings.Contains(log.String(), "limit=source_rate") {
		t.Errorf("the warning does not name source_rate:\n%s", log)
	}
	if n := p.Stats().Refused["source-rate"]; n != 3 {
		t.Errorf("source-rate refusals %d, want 3", n)
	}
	// A second on, every address that sent once is full again.
	p.sweep(now.Add(time.Second))
	if st := p.Stats(); st.Sources != 1 {
		t.Errorf("after the sweep %d sources tracked, want 1", st.Sources)
	}
	if !p.Source(addr(maxBuckets), now.Add(time.Second)) {
		t.Error("a new address refused after the sweep")
	}
	if p.sources.full {
		t.Error("the sweep did not rearm the table-full warning")
	}
}

func TestMACRate(t *testing.T) {
	ph := Phone{MAC: yealinkMAC, Src: phoneSrc, Interface: "eth0", ContactIsSource: true}
	t.Run("default", func(t *testing.T) {
		p, log := newTestPolicy(t, Config{Policy: defaults()})
		for i := range 10 {
			if r := p.Admit(ph, p.epoch); r.Refused() {
				t.Fatalf("SUBSCRIBE %d: %v", i+1, r)
			}
		}
		// The same MAC from other addresses is the same MAC.
		for i := range 3 {
			ph := ph
			ph.Src = netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
			r := p.Admit(ph, p.epoch)
			if r.Reason != MACRate || r.Error() != "mac-rate" {
				t.Fatalf("SUBSCRIBE %d: %+v (%q), want mac-rate", 11+i, r, r.Error())
			}
		}
		other := ph
		other.MAC = otherMAC
		if r := p.Admit(other, p.epoch); r.Refused() {
			t.Errorf("another MAC: %v", r)
		}
		if st := p.Stats(); st.Refused["mac-rate"] != 3 || st.MACs != 2 {
			t.Errorf("stats %+v", st)
		}
		if n := log.count(msgMACOver); n != 1 {
			t.Errorf("%d warnings, want 1:\n%s", n, log)
		}
		if !strings.Contains(log.String(), "mac="+yealinkMAC) {
			t.Errorf("the warning does not name the MAC:\n%s", log)
		}
		if r := p.Admit(ph, p.epoch.Add(time.Second)); r.Refused() {
			t.Errorf("a second later: %v", r)
		}
	})
	t.Run("no MAC is not tracked", func(t *testing.T) {
		p, _ := newTestPolicy(t, Config{Policy: defaults()})
		ph := ph
		ph.MAC = ""
		for i := range 50 {
			if r := p.Admit(ph, p.epoch); r.Refused() {
				t.Fatalf("SUBSCRIBE %d: %v", i+1, r)
			}
		}
		if st := p.Stats(); st.MACs != 0 {
			t.Errorf("%d MACs tracked", st.MACs)
		}
	})
	t.Run("off", func(t *testing.T) {
		c := defaults()
		c.MACRate = config.Rate{}
		p, _ := newTestPolicy(t, Config{Policy: c})
		for i := range 100 {
			if r := p.Admit(ph, p.epoch); r.Refused() {
				t.Fatalf("SUBSCRIBE %d: %v", i+1, r)
			}
		}
	})
}

func TestMACTableFull(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 1<<18 buckets")
	}
	p, log := newTestPolicy(t, Config{Policy: defaults()})
	// Fill the table directly: the MACs of a forged flood.
	for i := range maxBuckets {
		if v := p.macs.take("02"+strconv.Itoa(i), 0); v != taken {
			t.Fatalf("MAC %d: %v", i, v)
		}
	}
	ph := Phone{MAC: yealinkMAC, Src: phoneSrc, ContactIsSource: true}
	for i := range 3 {
		r := p.Admit(ph, p.epoch)
		if r.Reason != MACRate || !strings.Contains(r.Error(), "too many MACs tracked") {
			t.Fatalf("Admit %d with the table full: %q", i+1, r.Error())
		}
	}
	if n := log.count(msgTableFull); n != 1 || !strings.Contains(log.String(), "limit=mac_rate") {
		t.Errorf("%d table-full warnings, want 1 naming mac_rate:\n%s", n, log)
	}
	if n := p.Stats().Refused["mac-rate"]; n != 3 {
		t.Errorf("mac-rate refusals %d, want 3", n)
	}
	p.sweep(p.epoch.Add(time.Second))
	if p.macs.full {
		t.Error("the sweep did not rearm the table-full warning")
	}
	if r := p.Admit(ph, p.epoch.Add(time.Second)); r.Refused() {
		t.Errorf("after the sweep: %q", r.Error())
	}
}

// admitCase is a phone under a [policy], with what Admit says of it and,
// unless live, what Explain traces.
type admitCase struct {
	name   string
	policy func(*config.Policy)
	state  *fakeState
	phone  Phone
	want   Reason
	detail []string // in Error()
	live   bool     // a check Explain cannot make (Contact)
	trace  []string // lines Explain writes, each "policy: " + this
}

func admitCases(now time.Time) []admitCase {
	ph := func(mac string) Phone {
		return Phone{MAC: mac, Src: phoneSrc, Interface: "eth0", ContactIsSource: true}
	}
	contact := func(c string) Phone {
		p := ph(yealinkMAC)
		p.ContactIsSource, p.Contact = false, c
		return p
	}
	deny := func(l ...string) func(*config.Policy) { return func(p *config.Policy) { p.DenyMACs = l } }
	allow := func(l ...string) func(*config.Policy) { return func(p *config.Policy) { p.AllowMACs = l } }
	window := func(p *config.Policy) { p.Window = true }
	once := func(p *config.Policy) { p.Once = true }
	stamp := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	past, future := now.Add(-time.Minute), now.Add(time.Minute)
	return []admitCase{
		{name: "defaults admit", phone: ph(yealinkMAC)},
		{name: "defaults admit without MAC", phone: ph("")},

		{name: "contact elsewhere", phone: contact("10.9.9.9"), want: ContactNotSource, live: true,
			detail: []string{"contact-not-source: contact host 10.9.9.9 is not the source address 192.168.1.10"}},
		{name: "no contact", phone: contact(""), want: ContactNotSource, live: true, detail: []string{"contact host none is not"}},
		{name: "long contact clipped", phone: contact(strings.Repeat("a", 300)), want: ContactNotSource, live: true,
			detail: []string{"contact host " + strings.Repeat("a", 64) + "... is not"}},
		{name: "contact_is_source off", policy: func(p *config.Policy) { p.ContactIsSource = false }, phone: contact("10.9.9.9"), live: true},

		{name: "deny exact", policy: deny(yealinkMAC), phone: ph(yealinkMAC), want: MACDenied,
			detail: []string{"mac-denied: deny_macs entry 001565aabbcc matches 001565aabbcc"}, trace: []string{"deny_macs: 001565aabbcc matches: refused"}},
		{name: "deny prefix", policy: deny("0004f2", "001565"), phone: ph(yealinkMAC), want: MACDenied,
			detail: []string{"deny_macs entry 001565 matches 001565aabbcc"}, trace: []string{"deny_macs: 001565 matches: refused"}},
		{name: "deny odd-length prefix", policy: deny("00156"), phone: ph(yealinkMAC), want: MACDenied, detail: []string{"entry 00156 matches"}},
		{name: "deny no match", policy: deny("0004f2"), phone: ph(yealinkMAC), trace: []string{"deny_macs: no entry matches"}},
		{name: "deny not a suffix", policy: deny("aabbcc"), phone: ph(yealinkMAC)},
		{name: "deny without MAC", policy: deny("00"), phone: ph("")},
		{name: "deny wins over allow", policy: func(p *config.Policy) { p.AllowMACs, p.DenyMACs = []string{yealinkMAC}, []string{"001565"} },
			phone: ph(yealinkMAC), want: MACDenied, detail: []string{"deny_macs entry 001565"}, trace: []string{"deny_macs: 001565 matches: refused"}},

		{name: "allow exact", policy: allow(otherMAC, yealinkMAC), phone: ph(yealinkMAC), trace: []string{"allow_macs: 001565aabbcc matches"}},
		{name: "allow prefix", policy: allow("001565"), phone: ph(yealinkMAC), trace: []string{"allow_macs: 001565 matches"}},
		{name: "allow no match", policy: allow("001565"), phone: ph(otherMAC), want: MACNotAllowed,
			detail: []string{"mac-not-allowed: 0004f2000001 matches no allow_macs entry"}, trace: []string{"allow_macs: no entry matches: refused"}},
		{name: "allow exact other", policy: allow("001565aabbcd"), phone: ph(yealinkMAC), want: MACNotAllowed},
		{name: "allow without MAC", policy: allow("001565"), phone: ph(""), want: MACNotAllowed,
			detail: []string{"the phone sent no MAC and allow_macs is set"}, trace: []string{"allow_macs: the phone sent no MAC: refused"}},

		{name: "window not known", policy: window, state: &fakeState{}, phone: ph(yealinkMAC), want: WindowClosed,
			detail: []string{"window-closed: the PBX's data is not read yet"}, trace: []string{"window: the PBX's data is not read yet: closed"}},
		{name: "window none", policy: window, state: &fakeState{windowKnown: true}, phone: ph(yealinkMAC), want: WindowClosed,
			detail: []string{"no provisioning window is open"}, trace: []string{`window: closed ("pnpd ctl window open DURATION" opens it)`}},
		{name: "window past", policy: window, state: &fakeState{until: past, windowKnown: true}, phone: ph(yealinkMAC), want: WindowClosed,
			detail: []string{"the provisioning window closed at " + stamp(past)}, trace: []string{"window: closed at " + stamp(past)}},
		{name: "window ends now", policy: window, state: &fakeState{until: now, windowKnown: true}, phone: ph(yealinkMAC), want: WindowClosed},
		{name: "window future", policy: window, state: &fakeState{until: future, windowKnown: true}, phone: ph(yealinkMAC),
			trace: []string{"window: open until " + stamp(future)}},
		{name: "window closed without MAC", policy: window, state: &fakeState{windowKnown: true}, phone: ph(""), want: WindowClosed},
		{name: "window off ignores state", state: &fakeState{}, phone: ph(yealinkMAC)},

		{name: "once done", policy: once, state: &fakeState{provKnown: true, done: map[string]bool{yealinkMAC: true}}, phone: ph(yealinkMAC), want: ProvisionedOnce,
			detail: []string{"provisioned-once: 001565aabbcc was provisioned already (pnpd ctl rearm 001565aabbcc)"},
			trace:  []string{`once: 001565aabbcc was provisioned ("pnpd ctl rearm 001565aabbcc" answers it again): refused`}},
		{name: "once not known", policy: once, state: &fakeState{}, phone: ph(yealinkMAC), want: ProvisionedOnce,
			detail: []string{"the PBX's data is not read yet"}, trace: []string{"once: the PBX's data is not read yet: refused"}},
		{name: "once not done", policy: once, state: &fakeState{provKnown: true, done: map[string]bool{otherMAC: true}}, phone: ph(yealinkMAC),
			trace: []string{"once: not provisioned yet"}},
		{name: "once without MAC", policy: once, state: &fakeState{}, phone: ph("")},
		{name: "once off ignores state", state: &fakeState{provKnown: true, done: map[string]bool{yealinkMAC: true}}, phone: ph(yealinkMAC)},

		{name: "window before once", policy: func(p *config.Policy) { p.Window, p.Once = true, true },
			state: &fakeState{windowKnown: true, provKnown: true, done: map[string]bool{yealinkMAC: true}}, phone: ph(yealinkMAC), want: WindowClosed},
		{name: "lists before window", policy: func(p *config.Policy) { p.Window, p.DenyMACs = true, []string{"0015"} },
			state: &fakeState{}, phone: ph(yealinkMAC), want: MACDenied},
		{name: "everything passes", policy: func(p *config.Policy) {
			p.Window, p.Once, p.AllowMACs, p.DenyMACs = true, true, []string{"001565"}, []string{"0004f2"}
		}, state: &fakeState{until: future, windowKnown: true, provKnown: true}, phone: ph(yealinkMAC),
			trace: []string{"deny_macs: no entry matches", "allow_macs: 001565 matches", "window: open until", "once: not provisioned yet"}},
	}
}

func (c admitCase) config() Config {
	pc := defaults()
	if c.policy != nil {
		c.policy(&pc)
	}
	cfg := Config{Policy: pc}
	if c.state != nil {
		cfg.State = c.state
	}
	return cfg
}

func TestAdmit(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, tt := range admitCases(now) {
		t.Run(tt.name, func(t *testing.T) {
			p, log := newTestPolicy(t, tt.config())
			r := p.Admit(tt.phone, now)
			if r.Reason != tt.want {
				t.Fatalf("Admit: %v (%q), want %v", r.Reason, r.Error(), tt.want)
			}
			if r.Refused() != (tt.want != Admitted) {
				t.Errorf("Refused() = %v", r.Refused())
			}
			for _, d := range tt.detail {
				if !strings.Contains(r.Error(), d) {
					t.Errorf("Error() = %q, want it to hold %q", r.Error(), d)
				}
			}
			if len(r.Error()) > 200 {
				t.Errorf("Error() is %d bytes: %q", len(r.Error()), r.Error())
			}
			want := map[string]int64{}
			if tt.want != Admitted {
				want[tt.want.String()] = 1
			}
			if got := p.Stats().Refused; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("Refused %v, want %v", got, want)
			}
			// These refusals are the caller's to log, with the outcome.
			if s := log.String(); s != "" {
				t.Errorf("Admit logged:\n%s", s)
			}
		})
	}
}

func TestExplain(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, tt := range admitCases(now) {
		if tt.live {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			p, _ := newTestPolicy(t, tt.config())
			req := resolve.Request{MAC: tt.phone.MAC, IP: tt.phone.Src, Interface: tt.phone.Interface}
			trace, r := p.Explain(req, now)
			// The same verdict as Admit, from a policy of its own.
			q, _ := newTestPolicy(t, tt.config())
			if a := q.Admit(tt.phone, now); r != a {
				t.Errorf("Explain: %q; Admit: %q", r.Error(), a.Error())
			}
			if r.Reason != tt.want {
				t.Errorf("Explain: %v, want %v", r.Reason, tt.want)
			}
			text := strings.Join(trace, "\n")
			for _, l := range trace {
				if !strings.HasPrefix(l, "policy: ") {
					t.Errorf("trace line %q lacks the policy: prefix", l)
				}
			}
			for _, w := range tt.trace {
				if !strings.Contains(text, "policy: "+w) {
					t.Errorf("trace lacks %q:\n%s", "policy: "+w, text)
				}
			}
			// Explain neither counts nor spends.
			if st := p.Stats(); len(st.Refused) != 0 || st.MACs != 0 || st.Sources != 0 {
				t.Errorf("Explain changed the stats: %+v", st)
			}
		})
	}
}

func TestExplainHeader(t *testing.T) {
	lookup := func(context.Context, string, netip.Addr) (net.HardwareAddr, error) { return nil, nil }
	tests := []struct {
		name   string
		policy func(*config.Policy)
		mac    string
		want   []string // the whole trace
		reason Reason
	}{
		{"defaults", nil, yealinkMAC, []string{
			"policy: contact_is_source: checked on live SUBSCRIBEs",
			"policy: source_rate 10/10s, mac_rate 10/10s: applied to live SUBSCRIBEs",
		}, Admitted},
		{"one rate off", func(p *config.Policy) { p.ContactIsSource, p.SourceRate = false, config.Rate{} }, yealinkMAC, []string{
			"policy: source_rate off, mac_rate 10/10s: applied to live SUBSCRIBEs",
		}, Admitted},
		{"everything off", func(p *config.Policy) {
			p.ContactIsSource, p.SourceRate, p.MACRate = false, config.Rate{}, config.Rate{}
		}, yealinkMAC, nil, Admitted},
		{"neighbor_check", func(p *config.Policy) {
			p.ContactIsSource, p.SourceRate, p.MACRate, p.NeighborCheck = false, config.Rate{}, config.Rate{}, true
		}, yealinkMAC, []string{
			"policy: neighbor_check: the kernel's neighbour entry of the source must hold 001565aabbcc (checked before the NOTIFY)",
		}, Admitted},
		{"neighbor_check after a refusal", func(p *config.Policy) {
			p.ContactIsSource, p.SourceRate, p.MACRate, p.NeighborCheck, p.DenyMACs = false, config.Rate{}, config.Rate{}, true, []string{"0015"}
		}, yealinkMAC, []string{
			"policy: deny_macs: 0015 matches: refused",
		}, MACDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc := defaults()
			if tt.policy != nil {
				tt.policy(&pc)
			}
			p, _ := newTestPolicy(t, Config{Policy: pc, Neighbor: lookup})
			trace, r := p.Explain(resolve.Request{MAC: tt.mac, IP: phoneSrc}, time.Now())
			if strings.Join(trace, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("trace:\n%s\nwant:\n%s", strings.Join(trace, "\n"), strings.Join(tt.want, "\n"))
			}
			if r.Reason != tt.reason {
				t.Errorf("verdict %v, want %v", r.Reason, tt.reason)
			}
		})
	}
}

// TestExplainNeighborWithoutMAC: a phone that sends no MAC is always
// refused by CheckNeighbor, so `pnpd resolve` must not show it admitted,
// nor trace that its neighbour entry "must hold " nothing.
func TestExplainNeighborWithoutMAC(t *testing.T) {
	pc := defaults()
	pc.NeighborCheck = true
	lookup := func(context.Context, string, netip.Addr) (net.HardwareAddr, error) {
		return net.HardwareAddr{0, 0x15, 0x65, 0xaa, 0xbb, 0xcc}, nil
	}
	p, _ := newTestPolicy(t, Config{Policy: pc, Neighbor: lookup})
	live := p.CheckNeighbor(context.Background(), "eth0", phoneSrc, "")
	trace, r := p.Explain(resolve.Request{IP: phoneSrc, Interface: "eth0"}, time.Now())
	text := strings.Join(trace, "\n")
	if strings.Contains(text, "must hold  (") {
		t.Errorf("trace names an empty MAC:\n%s", text)
	}
	if r.Reason != live.Reason {
		t.Errorf("Explain: %q; CheckNeighbor, live: %q", r.Error(), live.Error())
	}
}

func TestCheckNeighbor(t *testing.T) {
	hw := func(s string) net.HardwareAddr {
		a, err := net.ParseMAC(s)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	lookupErr := errors.New("netio: no neighbour entry")
	tests := []struct {
		name    string
		mac     string
		hw      net.HardwareAddr
		err     error
		want    Reason
		detail  []string
		noAsk   bool // the lookup must not be called
		checked bool
	}{
		{name: "match", mac: yealinkMAC, hw: hw("00:15:65:aa:bb:cc")},
		{name: "match, read upper-case", mac: yealinkMAC, hw: hw("00:15:65:AA:BB:CC")},
		{name: "mismatch", mac: yealinkMAC, hw: hw("00:04:f2:00:00:01"), want: NeighborMismatch,
			detail: []string{"neighbor-mismatch: 192.168.1.10 is at 00:04:f2:00:00:01 on eth0, not at the claimed 001565aabbcc"}},
		{name: "prefix of the claim", mac: yealinkMAC, hw: hw("00:15:65:aa:bb:cd"), want: NeighborMismatch},
		{name: "lookup error", mac: yealinkMAC, err: lookupErr, want: NeighborMismatch,
			detail: []string{"the kernel did not resolve 192.168.1.10 on eth0 in time: netio: no neighbour entry"}},
		{name: "no MAC", mac: "", hw: hw("00:15:65:aa:bb:cc"), want: NeighborMismatch, noAsk: true,
			detail: []string{"the phone sent no MAC to check"}},
		{name: "empty entry", mac: yealinkMAC, hw: net.HardwareAddr{}, want: NeighborMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				asked    int
				deadline time.Time
				hasDL    bool
				gotIface string
				gotIP    netip.Addr
			)
			lookup := func(ctx context.Context, iface string, ip netip.Addr) (net.HardwareAddr, error) {
				asked++
				deadline, hasDL = ctx.Deadline()
				gotIface, gotIP = iface, ip
				return tt.hw, tt.err
			}
			pc := defaults()
			pc.NeighborCheck = true
			p, _ := newTestPolicy(t, Config{Policy: pc, Neighbor: lookup})
			if !p.NeighborCheck() {
				t.Error("NeighborCheck() false")
			}
			before := time.Now()
			r := p.CheckNeighbor(context.Background(), "eth0", phoneSrc, tt.mac)
			if r.Reason != tt.want {
				t.Fatalf("CheckNeighbor: %q, want %v", r.Error(), tt.want)
			}
			for _, d := range tt.detail {
				if !strings.Contains(r.Error(), d) {
					t.Errorf("Error() = %q, want it to hold %q", r.Error(), d)
				}
			}
			if tt.noAsk {
				if asked != 0 {
					t.Errorf("the lookup was asked %d times", asked)
				}
			} else {
				if asked != 1 || gotIface != "eth0" || gotIP != phoneSrc {
					t.Errorf("lookup asked %d times, for %s on %q", asked, gotIP, gotIface)
				}
				// Bounded by NeighborWait, whatever the caller's context.
				if !hasDL || deadline.Before(before) || deadline.After(time.Now().Add(NeighborWait)) {
					t.Errorf("lookup deadline %v (set %v), want within %v of the call", deadline, hasDL, NeighborWait)
				}
			}
			want := map[string]int64{}
			if tt.want != Admitted {
				want[tt.want.String()] = 1
			}
			if got := p.Stats().Refused; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("Refused %v, want %v", got, want)
			}
		})
	}

	t.Run("caller's shorter deadline kept", func(t *testing.T) {
		pc := defaults()
		pc.NeighborCheck = true
		var got time.Time
		p, _ := newTestPolicy(t, Config{Policy: pc, Neighbor: func(ctx context.Context, _ string, _ netip.Addr) (net.HardwareAddr, error) {
			got, _ = ctx.Deadline()
			return nil, ctx.Err()
		}})
		want := time.Now().Add(NeighborWait / 10)
		ctx, cancel := context.WithDeadline(context.Background(), want)
		defer cancel()
		p.CheckNeighbor(ctx, "eth0", phoneSrc, yealinkMAC)
		if !got.Equal(want) {
			t.Errorf("deadline %v, want the caller's %v", got, want)
		}
	})
	t.Run("caller's cancel reaches the lookup", func(t *testing.T) {
		pc := defaults()
		pc.NeighborCheck = true
		p, _ := newTestPolicy(t, Config{Policy: pc, Neighbor: func(ctx context.Context, _ string, _ netip.Addr) (net.HardwareAddr, error) {
			<-ctx.Done() // would wait NeighborWait if the cancel were lost
			return nil, ctx.Err()
		}})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r := p.CheckNeighbor(ctx, "eth0", phoneSrc, yealinkMAC)
		if r.Reason != NeighborMismatch || !strings.Contains(r.Detail, context.Canceled.Error()) {
			t.Errorf("%q", r.Error())
		}
	})
}

// Serve sweeps the buckets that refilled, and returns when ctx ends.
func TestServe(t *testing.T) {
	pc := defaults()
	pc.SourceRate = config.Rate{N: 10, Per: 10 * time.Millisecond}
	p, _ := newTestPolicy(t, Config{Policy: pc})
	p.Source(netip.MustParseAddr("10.0.0.1"), time.Now())
	if st := p.Stats(); st.Sources != 1 {
		t.Fatalf("tracked %d sources, want 1", st.Sources)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); p.Stats().Sources != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Serve never swept the refilled bucket")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestStatsConcurrent(t *testing.T) {
	p, _ := newTestPolicy(t, Config{Policy: defaults()})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			src := netip.AddrFrom4([4]byte{10, 0, 0, byte(w)})
			for range 100 {
				p.Source(src, p.epoch)
				p.Admit(Phone{MAC: yealinkMAC, Src: src, ContactIsSource: true}, p.epoch)
				p.Stats()
			}
		})
	}
	wg.Go(func() {
		for i := range 10 {
			p.sweep(p.epoch.Add(time.Duration(i) * time.Second))
		}
	})
	wg.Wait()
	st := p.Stats()
	// Per source 10 taken and 90 refused at the epoch, unless a sweep
	// gave some back: at most 4*90.
	if n := st.Refused["source-rate"]; n > 4*90 || n == 0 {
		t.Errorf("source-rate refusals %d", n)
	}
}

// A flood from many (forged) addresses logs maxTold of them one by one and
// sums up the rest at the next sweep.
func TestRateWarningsBounded(t *testing.T) {
	p, log := newTestPolicy(t, Config{Policy: defaults()})
	now := time.Now()
	const senders = 50
	for i := range senders {
		src := netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)})
		for range 11 {
			p.Source(src, now)
		}
	}
	if got := log.count("source over its rate"); got != maxTold {
		t.Errorf("%d senders logged one by one, want %d", got, maxTold)
	}
	p.sweep(now.Add(time.Second))
	if got := log.count("not_logged=40"); got != 1 {
		t.Errorf("no summary of the 40 senders not logged:\n%s", log)
	}
	if st := p.Stats(); st.Refused["source-rate"] != senders {
		t.Errorf("refusals %v, want %d", st.Refused, senders)
	}
}
