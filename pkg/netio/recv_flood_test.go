package netio

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testPriority is the SCHED_RR priority the tests give their readers.
const testPriority = 10

// needRealtime skips the test unless this process may give a thread
// SCHED_RR (CAP_SYS_NICE, or an RLIMIT_RTPRIO of at least testPriority).
func needRealtime(tb testing.TB) {
	tb.Helper()
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread that got SCHED_RR ends with this
		// goroutine instead of running the test's others.
		runtime.LockOSThread()
		errc <- unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_RR, Priority: testPriority}, 0)
	}()
	if err := <-errc; err != nil {
		tb.Skipf("cannot give a thread SCHED_RR %d here (needs CAP_SYS_NICE or RLIMIT_RTPRIO): %v", testPriority, err)
	}
}

// floodReader is a real-time sockReader on a loopback UDP socket, served
// until the test ends, and a client socket connected to it.
type floodReader struct {
	r      *sockReader
	client *net.UDPConn
	logs   *logRecorder
	done   chan struct{} // closed when serve returned

	tid     atomic.Int32 // the reading thread, from the first datagram
	handled atomic.Int64
}

// newFloodReader starts a reader at testPriority whose handler calls
// handle with each datagram and a func that answers it (on the reading
// thread), after recording the thread.
func newFloodReader(t testing.TB, handle func(b []byte, answer func([]byte))) *floodReader {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	// A deep queue, as pnpd asks for: it holds thousands of datagrams.
	setRecvBufferFD(fd, DefaultRecvBuffer)
	f := &floodReader{logs: &logRecorder{}, done: make(chan struct{})}
	if f.r, err = newSockReader(fd, "test", slog.New(f.logs)); err != nil {
		t.Fatal(err)
	}
	f.r.priority = testPriority
	f.client, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*unix.SockaddrInet4).Port})
	if err != nil {
		f.r.close()
		t.Fatal(err)
	}
	go func() {
		defer close(f.done)
		f.r.serve(make([]byte, maxDatagram), make([]byte, 128), func(b, _ []byte, from unix.Sockaddr) {
			f.tid.CompareAndSwap(0, int32(unix.Gettid()))
			f.handled.Add(1)
			handle(b, func(p []byte) { _ = unix.Sendto(fd, p, 0, from) })
		})
	}()
	t.Cleanup(func() {
		f.client.Close()
		f.r.close()
		select {
		case <-f.done:
		case <-time.After(10 * time.Second):
			t.Error("the reader did not stop within 10 s of close")
		}
	})
	return f
}

// policy reads the reading thread's scheduling policy.
func (f *floodReader) policy(t testing.TB) *unix.SchedAttr {
	t.Helper()
	a, err := unix.SchedGetAttr(int(f.tid.Load()), 0)
	if err != nil {
		t.Fatalf("sched_getattr of the reading thread %d: %v", f.tid.Load(), err)
	}
	return a
}

func (f *floodReader) send(t testing.TB, b []byte) {
	t.Helper()
	if _, err := f.client.Write(b); err != nil {
		t.Fatal(err)
	}
}

// burn keeps the CPU busy for d, as parsing and answering a SUBSCRIBE
// would. It spins on the clock, so that every datagram takes at least d of
// wall time however slow the machine or the race detector make the loop.
func burn(d time.Duration) {
	for start := time.Now(); time.Since(start) < d; {
	}
}

// TestReaderYieldsUnderFlood floods a real-time reader whose handler takes
// 50 µs a datagram: its thread drops to SCHED_OTHER (keeping the process's
// nice value) while the queue stays full, logs that once, and gets
// SCHED_RR back, with an Info line, when the queue drains. A datagram on
// the idle socket is handled before and after, and close stops the reader.
//
// The demotion does not hang on the machine's speed: the first flood
// datagram holds the handler until the test has queued thousands behind
// it, which take at least 50 µs of wall time each. The test then keeps
// flooding (at most maxFlood datagrams, and for at most 20 × overloadAfter
// plus 10 s) until it sees the normal policy, so that the window in which
// to see it stays open.
func TestReaderYieldsUnderFlood(t *testing.T) {
	needRealtime(t)
	const (
		cost     = 50 * time.Microsecond
		prefill  = 4000
		maxFlood = 20_000_000
	)
	probes := make(chan string, 4)
	gate := make(chan struct{})
	var gated atomic.Bool
	f := newFloodReader(t, func(b []byte, _ func([]byte)) {
		if string(b) != "flood" {
			select {
			case probes <- string(b):
			default:
			}
			return
		}
		if gated.CompareAndSwap(false, true) {
			select {
			case <-gate:
			case <-time.After(10 * time.Second):
			}
		}
		burn(cost)
	})
	waitProbe := func(want string) {
		t.Helper()
		f.send(t, []byte(want))
		select {
		case got := <-probes:
			if got != want {
				t.Fatalf("handled %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("datagram %q on an idle socket not handled within 5 s", want)
		}
	}

	waitProbe("idle before")
	if a := f.policy(t); a.Policy != unix.SCHED_RR || a.Priority != testPriority {
		t.Fatalf("reading thread has policy %d priority %d, want SCHED_RR (%d) %d", a.Policy, a.Priority, unix.SCHED_RR, testPriority)
	}
	self, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatal(err)
	}

	flood := []byte("flood")
	for range prefill {
		f.send(t, flood)
	}
	close(gate)
	demoted := false
	sent := prefill
	until := time.Now().Add(20*overloadAfter + 10*time.Second)
	for ; sent < maxFlood && (sent%1024 != 0 || time.Now().Before(until)); sent++ {
		if sent%64 == 0 {
			if a := f.policy(t); a.Policy == unix.SCHED_NORMAL {
				if a.Nice != self.Nice {
					t.Errorf("demoted to nice %d, want the process's %d", a.Nice, self.Nice)
				}
				demoted = true
				break
			}
		}
		f.send(t, flood)
	}
	if !demoted {
		t.Fatalf("the reading thread kept SCHED_RR through %d datagrams (%d handled); logs %v", sent, f.handled.Load(), f.logs.messages())
	}
	t.Logf("demoted after %d datagrams sent, %d handled", sent, f.handled.Load())

	// Nothing more is sent: the queue drains, at most a few thousand
	// datagrams at 50 µs.
	restored := false
	for range 3000 {
		if a := f.policy(t); a.Policy == unix.SCHED_RR && a.Priority == testPriority {
			restored = true
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !restored {
		t.Fatalf("the reading thread did not get SCHED_RR back within 30 s (%d handled); logs %v", f.handled.Load(), f.logs.messages())
	}
	waitProbe("idle after")

	// One episode, unless the sender stalled long enough for the reader
	// to empty a queue of thousands: each is warned of once and closed
	// with one Info line.
	warn := f.logs.find(slog.LevelWarn, "group socket reader overloaded: normal priority until its queue drains")
	info := f.logs.find(slog.LevelInfo, "group socket reader drained its queue: real-time priority again")
	if len(warn) == 0 || len(info) != len(warn) {
		t.Fatalf("want one drained line per overload warning, logs %v", f.logs.messages())
	}
	for i := range warn {
		w, d := warn[i]["datagrams"].Int64(), info[i]["datagrams"].Int64()
		if w < clockEvery*2 || d < w || d > f.handled.Load() {
			t.Errorf("episode %d: warned after %d datagrams, drained after %d; want at least %d, then no fewer, of %d handled",
				i, w, d, clockEvery*2, f.handled.Load())
		}
		for _, a := range []map[string]slog.Value{warn[i], info[i]} {
			if a["socket"].String() != "test" || a["priority"].Int64() != testPriority {
				t.Errorf("episode %d: log attributes %v", i, a)
			}
		}
		if _, ok := info[i]["lasted"]; !ok {
			t.Errorf("episode %d: drained line without how long: %v", i, info[i])
		}
	}

	f.r.close()
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the reader did not stop within 10 s of close")
	}
}

// TestReaderIdleKeepsPriority: datagrams that come one at a time never
// form a streak, so the thread keeps SCHED_RR and nothing is logged.
func TestReaderIdleKeepsPriority(t *testing.T) {
	needRealtime(t)
	got := make(chan struct{}, 1)
	f := newFloodReader(t, func([]byte, func([]byte)) { got <- struct{}{} })
	for i := range 3 * clockEvery {
		f.send(t, fmt.Appendf(nil, "one %d", i))
		select {
		case <-got:
		case <-time.After(5 * time.Second):
			t.Fatalf("datagram %d not handled within 5 s", i)
		}
	}
	if a := f.policy(t); a.Policy != unix.SCHED_RR || a.Priority != testPriority {
		t.Errorf("reading thread has policy %d priority %d, want SCHED_RR %d", a.Policy, a.Priority, testPriority)
	}
	if m := f.logs.messages(); len(m) != 0 {
		t.Errorf("logged %v", m)
	}
}

// BenchmarkReaderIdle is how long a datagram sent to a real-time reader
// on an idle socket takes to reach the handler (wake-ns: from before the
// send to the handler's first instruction): the path that races a PBX.
// The socket is left idle for 200 µs before each send, so that the reader
// is blocked in recvmsg, its last streak over.
func BenchmarkReaderIdle(b *testing.B) {
	needRealtime(b)
	reached := make(chan time.Time, 1)
	f := newFloodReader(b, func([]byte, func([]byte)) { reached <- time.Now() })
	msg := []byte("ping")
	var wake time.Duration
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		time.Sleep(200 * time.Microsecond)
		b.StartTimer()
		sent := time.Now()
		f.send(b, msg)
		select {
		case at := <-reached:
			wake += at.Sub(sent)
		case <-time.After(5 * time.Second):
			b.Fatal("not handled within 5 s")
		}
	}
	b.ReportMetric(float64(wake.Nanoseconds())/float64(b.N), "wake-ns")
}

// BenchmarkReaderBusy is the reader's cost per datagram when they queue
// up: batches of 1,000 held behind the first one, then read back to back.
func BenchmarkReaderBusy(b *testing.B) {
	needRealtime(b)
	const batch = 1000
	var (
		mu   sync.Mutex
		gate chan struct{}
		left atomic.Int64
		done = make(chan struct{}, 1)
	)
	f := newFloodReader(b, func([]byte, func([]byte)) {
		mu.Lock()
		g := gate
		gate = nil
		mu.Unlock()
		if g != nil {
			<-g
		}
		if left.Add(-1) == 0 {
			done <- struct{}{}
		}
	})
	msg := []byte("busy")
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		g := make(chan struct{})
		mu.Lock()
		gate = g
		mu.Unlock()
		left.Store(batch)
		for range batch {
			f.send(b, msg)
		}
		b.StartTimer()
		close(g)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		select {
		case <-done:
		case <-ctx.Done():
			b.Fatalf("%d of a batch not handled within 10 s (the queue may hold fewer)", left.Load())
		}
		cancel()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/datagram")
}

// logRecorder is a slog.Handler that keeps every record's level, message
// and attributes.
type logRecorder struct {
	mu      sync.Mutex
	records []loggedRecord
}

type loggedRecord struct {
	level slog.Level
	msg   string
	attrs map[string]slog.Value
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	attrs := map[string]slog.Value{}
	r.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, loggedRecord{r.Level, r.Message, attrs})
	return nil
}

func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// find returns the attributes of the records at level with message msg.
func (l *logRecorder) find(level slog.Level, msg string) []map[string]slog.Value {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]slog.Value
	for _, r := range l.records {
		if r.level == level && r.msg == msg {
			out = append(out, r.attrs)
		}
	}
	return out
}

// messages lists the records above Debug, for failure messages.
func (l *logRecorder) messages() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.records {
		if r.level > slog.LevelDebug {
			out = append(out, fmt.Sprintf("%s %q %v", r.level, r.msg, r.attrs))
		}
	}
	return out
}
