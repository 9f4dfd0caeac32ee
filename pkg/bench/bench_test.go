package bench

// Unit tests of the bench's pieces that need no namespace: the counters and
// log lines it reads, the statistics and formatting of the report, the 200
// the phones send to a NOTIFY, the options' validation, and the minimal
// responder on loopback. `pnpd bench` as a whole is run by TestBenchTiny in
// cmd/pnpd. Nothing here asserts a duration that was measured.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	gosip "github.com/jart/gosip/sip"

	"github.com/pnpd/pnpd/pkg/simulate"
	"github.com/pnpd/pnpd/sip"
)

// snmpSample is /proc/net/snmp as a 6.x kernel writes it.
const snmpSample = `Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards InDelivers OutRequests OutDiscards OutNoRoutes ReasmTimeout ReasmReqds ReasmOKs ReasmFails FragOKs FragFails FragCreates OutTransmits
Ip: 2 64 7698815 0 0 0 0 0 7698815 7675472 0 0 0 0 0 0 0 0 0 7675472
Icmp: InMsgs InErrors InCsumErrors InDestUnreachs InTimeExcds InParmProbs InSrcQuenchs InRedirects InEchos InEchoReps InTimestamps InTimestampReps InAddrMasks InAddrMaskReps OutMsgs OutErrors OutRateLimitGlobal OutRateLimitHost OutDestUnreachs OutTimeExcds OutParmProbs OutSrcQuenchs OutRedirects OutEchos OutEchoReps OutTimestamps OutTimestampReps OutAddrMasks OutAddrMaskReps
Icmp: 4 0 0 4 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
IcmpMsg: InType3
IcmpMsg: 4
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 19475 7678 11252 231 0 7688528 7677798 5478 0 11425 0
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 10091 7 3 10293 2 1 0 5 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 11 12 13 14 15 16 0 0 0
`

func TestParseSNMP(t *testing.T) {
	got, err := parseSNMP([]byte(snmpSample))
	if err != nil {
		t.Fatal(err)
	}
	want := UDPCounters{InDatagrams: 10091, NoPorts: 7, InErrors: 3, OutDatagrams: 10293, RcvbufErrors: 2, SndbufErrors: 1}
	if got != want {
		t.Errorf("parseSNMP = %+v, want %+v", got, want)
	}

	// Columns in another order are read by their names.
	reordered := "Udp: SndbufErrors InDatagrams Future RcvbufErrors\nUdp: 4 100 99 6\n"
	if got, err := parseSNMP([]byte(reordered)); err != nil || got != (UDPCounters{InDatagrams: 100, RcvbufErrors: 6, SndbufErrors: 4}) {
		t.Errorf("reordered columns: %+v, %v", got, err)
	}

	// This machine's own file parses.
	if b, err := os.ReadFile("/proc/net/snmp"); err == nil {
		if _, err := parseSNMP(b); err != nil {
			t.Errorf("/proc/net/snmp of this machine: %v", err)
		}
	}

	for _, tt := range []struct{ name, text string }{
		{"empty", ""},
		{"no Udp lines", "Ip: Forwarding\nIp: 2\nUdpLite: InDatagrams\nUdpLite: 1\n"},
		{"header without values", "Udp: InDatagrams NoPorts\n"},
		{"value not a number", "Udp: InDatagrams NoPorts\nUdp: 12 x\n"},
		{"negative value", "Udp: InDatagrams RcvbufErrors\nUdp: 12 -1\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := parseSNMP([]byte(tt.text)); err == nil {
				t.Errorf("parseSNMP(%q) = %+v, want an error", tt.text, got)
			}
		})
	}
}

func TestUDPCountersSub(t *testing.T) {
	before := UDPCounters{InDatagrams: 10, NoPorts: 1, InErrors: 2, OutDatagrams: 20, RcvbufErrors: 3, SndbufErrors: 4}
	after := UDPCounters{InDatagrams: 110, NoPorts: 1, InErrors: 7, OutDatagrams: 220, RcvbufErrors: 9, SndbufErrors: 5}
	want := UDPCounters{InDatagrams: 100, NoPorts: 0, InErrors: 5, OutDatagrams: 200, RcvbufErrors: 6, SndbufErrors: 1}
	if got := after.Sub(before); got != want {
		t.Errorf("Sub = %+v, want %+v", got, want)
	}
	if got := after.Sub(after); got != (UDPCounters{}) {
		t.Errorf("Sub of itself = %+v, want zero", got)
	}
}

// ms returns durations of 1 ms times each value.
func ms(v ...int) []time.Duration {
	d := make([]time.Duration, len(v))
	for i, x := range v {
		d[i] = time.Duration(x) * time.Millisecond
	}
	return d
}

func TestPercentileAndMedian(t *testing.T) {
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	for _, tt := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 0.99, 0},
		{"one element p99", ms(7), 0.99, 7 * time.Millisecond},
		{"one element p0", ms(7), 0, 7 * time.Millisecond},
		{"p99 of 100 is the 99th", ms(hundred...), 0.99, 99 * time.Millisecond},
		{"p50 of 100 is the 50th", ms(hundred...), 0.5, 50 * time.Millisecond},
		{"p100 of 100 is the largest", ms(hundred...), 1, 100 * time.Millisecond},
		{"p0 is the smallest", ms(hundred...), 0, 1 * time.Millisecond},
		{"p99 of 10 is the largest", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond},
		{"p90 of 10 is the 9th", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.9, 9 * time.Millisecond},
	} {
		t.Run("percentile "+tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%d values, %v) = %v, want %v", len(tt.sorted), tt.p, got, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		name string
		in   []time.Duration
		want time.Duration
	}{
		{"empty", nil, 0},
		{"one element", ms(4), 4 * time.Millisecond},
		{"odd, unsorted", ms(3, 1, 2), 2 * time.Millisecond},
		{"even: the upper middle", ms(4, 1, 3, 2), 3 * time.Millisecond},
		{"100 values", ms(hundred...), 51 * time.Millisecond},
	} {
		t.Run("median "+tt.name, func(t *testing.T) {
			in := append([]time.Duration(nil), tt.in...)
			if got := median(in); got != tt.want {
				t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
			}
			for i := range in {
				if in[i] != tt.in[i] {
					t.Fatalf("median changed its argument: %v, was %v", in, tt.in)
				}
			}
		})
	}
}

func TestDur(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0"},
		{999 * time.Nanosecond, "0 µs"},
		{1500 * time.Nanosecond, "1 µs"},
		{999 * time.Microsecond, "999 µs"},
		{time.Millisecond, "1.00 ms"},
		{12500 * time.Microsecond, "12.50 ms"},
		{999 * time.Millisecond, "999.00 ms"},
		{time.Second, "1.00 s"},
		{1250 * time.Millisecond, "1.25 s"},
		{90 * time.Second, "90.00 s"},
	} {
		t.Run(tt.d.String(), func(t *testing.T) {
			if got := dur(tt.d); got != tt.want {
				t.Errorf("dur(%v) = %q, want %q", tt.d, got, tt.want)
			}
		})
	}
}

// snapshotLine is a line of pnpd serve's log, as pkg/pbx writes it.
const snapshotLine = `time=2026-11-26T04:27:50.655Z level=INFO msg="pbx snapshot" why=start family=pnpbench300 entries=350 phones=300 tenants=50 default=false ignored=0 took=12ms`

func TestFieldAndAtoiField(t *testing.T) {
	for _, tt := range []struct {
		key  string
		want string
		n    int
	}{
		{"why", "start", 0},
		{"family", "pnpbench300", 0},
		{"entries", "350", 350},
		{"phones", "300", 300},
		{"tenants", "50", 50},
		{"default", "false", 0},
		{"ignored", "0", 0},
		{"took", "12ms", 12},
		{"level", "INFO", 0},
		{"absent", "", 0},
		{"ntries", "", 0}, // a key is matched whole, not as the end of another
	} {
		t.Run(tt.key, func(t *testing.T) {
			if got := field(snapshotLine, tt.key); got != tt.want {
				t.Errorf("field(%q) = %q, want %q", tt.key, got, tt.want)
			}
			if got := atoiField(snapshotLine, tt.key); got != tt.n {
				t.Errorf("atoiField(%q) = %d, want %d", tt.key, got, tt.n)
			}
		})
	}
}

func TestLogTime(t *testing.T) {
	for _, tt := range []struct {
		name string
		line string
		want time.Time
		ok   bool
	}{
		{"pnpd's line", snapshotLine, time.Date(2026, 11, 26, 4, 27, 50, 655_000_000, time.UTC), true},
		{"offset and nanoseconds", "time=2026-11-26T05:27:50.000000123+01:00 level=INFO msg=exchange",
			time.Date(2026, 11, 26, 4, 27, 50, 123, time.UTC), true},
		{"time only", "time=2026-11-26T04:27:50Z", time.Date(2026, 11, 26, 4, 27, 50, 0, time.UTC), true},
		{"no time first", "level=INFO time=2026-11-26T04:27:50.655Z msg=x", time.Time{}, false},
		{"not a time", "time=yesterday level=INFO", time.Time{}, false},
		{"empty", "", time.Time{}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := logTime(tt.line)
			if ok != tt.ok || !got.Equal(tt.want) {
				t.Errorf("logTime(%q) = %v, %v; want %v, %v", tt.line, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// gosipVias prints each Via of a chain as gosip reads it.
func gosipVias(v *gosip.Via) []string {
	var out []string
	for i := 0; v != nil && i < 16; v, i = v.Next, i+1 {
		var b bytes.Buffer
		v.Append(&b)
		out = append(out, b.String())
	}
	return out
}

func TestNotifyOK(t *testing.T) {
	body := "http://10.64.0.1/prov/00156573aabb/"
	notify := "NOTIFY sip:10.100.0.7:5060 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 10.64.0.1:5070;branch=z9hG4bK-notify-1;rport\r\n" +
		"v: SIP/2.0/UDP 10.64.0.9;branch=z9hG4bK-proxy-2\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:pnpd@10.64.0.1>;tag=srv-1\r\n" +
		"t: \"Yealink\" <sip:MAC00156573aabb@224.0.1.75>;tag=ph-9\r\n" +
		"i: 4711-abc@10.100.0.7\r\n" +
		"CSeq: 7 NOTIFY\r\n" +
		"Contact: <sip:10.64.0.1:5070>\r\n" +
		"Event: ua-profile;profile-type=\"device\";vendor=\"Yealink\"\r\n" +
		"Subscription-State: terminated;reason=timeout\r\n" +
		"Content-Type: application/url\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body

	want, err := gosip.ParseMsg([]byte(notify))
	if err != nil {
		t.Fatalf("gosip refuses the test's NOTIFY: %v", err)
	}
	var m sip.Message
	if err := m.Parse([]byte(notify)); err != nil {
		t.Fatal(err)
	}
	var b sip.Builder
	out := notifyOK(&b, make([]byte, 0, 16), &m)
	// The buffer is reused: a second call makes the same bytes.
	if again := notifyOK(&b, out, &m); string(again) != string(out) {
		t.Errorf("second notifyOK into the same buffer:\n%s\nfirst:\n%s", again, out)
	}

	got, err := gosip.ParseMsg(append([]byte(nil), out...))
	if err != nil {
		t.Fatalf("gosip refuses the 200: %v\n%s", err, out)
	}
	if got.Method != "" || got.Status != 200 || got.Phrase != "OK" {
		t.Errorf("start line: method %q status %d %q, want a 200 OK", got.Method, got.Status, got.Phrase)
	}
	gv, wv := gosipVias(got.Via), gosipVias(want.Via)
	if len(wv) != 2 || strings.Join(gv, "\n") != strings.Join(wv, "\n") {
		t.Errorf("Via %q, want the NOTIFY's %q", gv, wv)
	}
	if got.From.String() != want.From.String() || got.To.String() != want.To.String() {
		t.Errorf("From %q To %q, want %q %q", got.From, got.To, want.From, want.To)
	}
	if got.CallID != want.CallID || got.CallID != "4711-abc@10.100.0.7" {
		t.Errorf("Call-ID %q, want %q", got.CallID, want.CallID)
	}
	if got.CSeq != 7 || got.CSeqMethod != "NOTIFY" {
		t.Errorf("CSeq %d %s, want 7 NOTIFY", got.CSeq, got.CSeqMethod)
	}
	if got.Payload != nil && len(got.Payload.Data()) > 0 {
		t.Errorf("the 200 has a body: %q", got.Payload.Data())
	}

	// Nothing but the five headers and Content-Length: 0.
	var r sip.Message
	if err := r.Parse(append([]byte(nil), out...)); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range r.Headers {
		names = append(names, h.ID.String())
	}
	if strings.Join(names, ",") != "Via,Via,From,To,Call-ID,CSeq,Content-Length" {
		t.Errorf("headers %q", names)
	}
	if cl := r.Get(sip.HdrContentLength); string(cl) != "0" {
		t.Errorf("Content-Length %q, want 0", cl)
	}
}

func TestOptionsDefaults(t *testing.T) {
	var o Options
	if err := o.defaults(); err != nil {
		t.Fatalf("zero Options: %v", err)
	}
	if o.Exe == "" || o.Phones != DefaultPhones || o.Singles != DefaultSingles || o.Outstanding != DefaultOutstanding ||
		o.Offer != DefaultOffer || o.Gap != DefaultGap || o.PhaseLimit != DefaultPhaseLimit || o.ParseTime != DefaultParseTime ||
		o.Asterisk != AsteriskAuto || len(o.PBXSizes) != len(DefaultPBXSizes) || o.Logger == nil {
		t.Errorf("zero Options became %+v", o)
	}
	none := Options{PBXSizes: []int{}}
	if err := none.defaults(); err != nil || none.PBXSizes == nil || len(none.PBXSizes) != 0 {
		t.Errorf("empty PBXSizes: %v, %v; want it kept empty", none.PBXSizes, err)
	}

	for _, tt := range []struct {
		name string
		o    Options
		want string // in the error
	}{
		{"phones negative", Options{Phones: -1}, "-phones -1"},
		{"phones above the maximum", Options{Phones: MaxPhones + 1}, "-phones"},
		{"singles negative", Options{Singles: -5}, "-singles"},
		{"singles above the maximum", Options{Singles: MaxPhones + 1}, "-singles"},
		{"outstanding negative", Options{Outstanding: -1}, "-outstanding"},
		{"offer negative", Options{Offer: -time.Second}, "negative"},
		{"gap negative", Options{Gap: -time.Millisecond}, "negative"},
		{"phase limit negative", Options{PhaseLimit: -time.Second}, "negative"},
		{"parse time negative", Options{ParseTime: -time.Millisecond}, "negative"},
		{"asterisk mode unknown", Options{Asterisk: "maybe"}, `-asterisk "maybe"`},
		{"PBX size 0", Options{PBXSizes: []int{10, 0}}, "-pbx size 0"},
		{"PBX size too large", Options{PBXSizes: []int{1_000_001}}, "-pbx size 1000001"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			err := o.defaults()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("defaults() = %v, want an error with %q", err, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		name string
		o    Options
	}{
		{"the maximum of phones", Options{Phones: MaxPhones, Singles: MaxPhones}},
		{"one of each", Options{Phones: 1, Singles: 1, Outstanding: 1, PBXSizes: []int{1, 1_000_000}}},
		{"asterisk off", Options{Asterisk: AsteriskOff}},
		{"asterisk required", Options{Asterisk: AsteriskRequired}},
	} {
		t.Run("valid "+tt.name, func(t *testing.T) {
			o := tt.o
			if err := o.defaults(); err != nil {
				t.Errorf("defaults() = %v", err)
			}
		})
	}
}

// freeUDPPort returns a UDP port that was free on 127.0.0.1 a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	return port
}

// udpRxQueue returns the receive queue in bytes of the socket bound to
// 0.0.0.0:port in this namespace (/proc/net/udp), and whether there is one.
func udpRxQueue(t *testing.T, port int) (int64, bool) {
	t.Helper()
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("00000000:%04X", port)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[1] != local {
			continue
		}
		_, rx, ok := strings.Cut(f[4], ":")
		if !ok {
			t.Fatalf("/proc/net/udp: queues %q", f[4])
		}
		n, err := strconv.ParseInt(rx, 16, 64)
		if err != nil {
			t.Fatalf("/proc/net/udp: rx_queue %q: %v", rx, err)
		}
		return n, true
	}
	return 0, false
}

func TestMinimalServeLoopback(t *testing.T) {
	for _, tt := range []struct {
		name string
		spin bool
	}{
		{"blocking reads", false},
		{"spinning", true},
	} {
		t.Run(tt.name, func(t *testing.T) { testMinimalServe(t, tt.spin) })
	}
}

// testMinimalServe has the minimal responder on lo answer one SUBSCRIBE
// sent to it by unicast, take the phone's 200, and count both.
func testMinimalServe(t *testing.T, spin bool) {
	port := freeUDPPort(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Serve's results, to read once done is closed.
	var st MinimalStats
	var serveErr error
	done := make(chan struct{})
	ready := make(chan struct{})
	go func() {
		defer close(done)
		st, serveErr = Minimal{Iface: "lo", Port: port, Spin: spin}.Serve(ctx, func() { close(ready) })
	}()
	// The responder must have returned when the test ends, spinning or not.
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Serve still runs 10 s after its context ended")
		}
	}()
	select {
	case <-ready:
	case <-done:
		if serveErr != nil && strings.Contains(serveErr.Error(), "joining") {
			t.Skipf("the minimal responder cannot join its group on lo here: %v", serveErr)
		}
		t.Fatalf("Serve returned before it was ready: %+v, %v", st, serveErr)
	case <-time.After(10 * time.Second):
		t.Fatal("the minimal responder not ready within 10 s")
	}

	pkt, err := simulate.NewSubscribe("yealink", netip.MustParseAddr("127.0.0.1"), "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	if _, err := c.WriteToUDP(pkt.Raw, to); err != nil {
		t.Fatal(err)
	}
	// The SUBSCRIBE's header lines and body: what both replies carry after
	// their own start line.
	_, rest, ok := strings.Cut(string(pkt.Raw), "\n")
	if !ok {
		t.Fatalf("SUBSCRIBE of one line: %q", pkt.Raw)
	}
	buf := make([]byte, 65536)
	var replies []string
	for _, start := range []string{"SIP/2.0 200 OK\r\n", "NOTIFY sip:127.0.0.1 SIP/2.0\r\n"} {
		if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("waiting for %q: %v", start, err)
		}
		got := string(buf[:n])
		replies = append(replies, got)
		if from.Port != port {
			t.Errorf("reply from %v, want port %d", from, port)
		}
		if !strings.HasPrefix(got, start) || got[len(start):] != rest {
			t.Errorf("reply:\n%s\nwant %q then the SUBSCRIBE's headers:\n%s", got, start, rest)
		}
		if !strings.Contains(got, pkt.CallID) {
			t.Errorf("reply lacks the Call-ID %q:\n%s", pkt.CallID, got)
		}
	}

	// The phone's 200 to the NOTIFY, as the fleet sends it.
	var m sip.Message
	if err := m.Parse([]byte(replies[1])); err != nil {
		t.Fatalf("the NOTIFY does not parse: %v", err)
	}
	var b sip.Builder
	ok200 := notifyOK(&b, nil, &m)
	if !bytes.HasPrefix(ok200, []byte("SIP/2.0 200 OK\r\n")) {
		t.Fatalf("the phone's 200: %q", ok200)
	}
	if _, err := c.WriteToUDP(ok200, to); err != nil {
		t.Fatal(err)
	}
	// Loopback queues the datagram before the send returns; wait until the
	// responder has taken it off its socket, then stop it.
	emptied := false
	for range 2000 {
		q, found := udpRxQueue(t, port)
		if !found {
			t.Fatalf("no socket on 0.0.0.0:%d in /proc/net/udp", port)
		}
		if q == 0 {
			emptied = true
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !emptied {
		t.Fatal("the responder did not read the 200 within 10 s")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10 s of its context ending")
	}
	if serveErr != nil {
		t.Fatalf("Serve: %v", serveErr)
	}
	if st.Subscribes != 1 || st.Others != 1 || st.SendErrors != 0 || st.LastOther.IsZero() {
		t.Errorf("stats %+v, want 1 SUBSCRIBE, 1 other, no send errors, a LastOther", st)
	}
}
