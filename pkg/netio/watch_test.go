package netio_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/pnpd/pnpd/pkg/netio"
	"github.com/pnpd/pnpd/pkg/netns"
)

// changeTimeout bounds waiting for the watcher to report a change made
// with `ip`: a bound for a noisy machine, not an expectation.
const changeTimeout = 20 * time.Second

// TestWatch follows the interfaces of a Listener with Watch, in each mode,
// in namespace A of a lab that starts with one veth (to B): a second veth
// created after start (to a third namespace C) is joined, the first one
// deleted and created again with the same name and another address is
// joined again on its new index, and all of them deleted leaves the
// Listener waiting until one comes back. Each time a datagram sent to the
// group from the far side arrives with the new interface, and an answer
// sent on that Iface leaves from the new address. A plain down/up would
// prove nothing: the kernel keeps the membership across it.
func TestWatch(t *testing.T) {
	for _, mode := range []netio.Mode{netio.ModeBind, netio.ModeRaw, netio.ModePacket} {
		t.Run(string(mode), func(t *testing.T) { testWatch(t, mode) })
	}
}

// ifaceView is what OnChange was shown of one interface.
type ifaceView struct {
	name  string
	index int
	addr  netip.Addr
}

func (v ifaceView) String() string { return fmt.Sprintf("%s#%d=%s", v.name, v.index, v.addr) }

func viewOf(ifs []*netio.Iface) []ifaceView {
	out := make([]ifaceView, len(ifs))
	for i, ifc := range ifs {
		out[i] = ifaceView{ifc.Name(), ifc.Index(), ifc.Addr().Addr()}
	}
	return out
}

// watchLab is a lab (namespaces A and B joined by a veth) with a third
// namespace for the far ends of the veths a test adds, and a Listener
// with Watch in A once listen is called.
type watchLab struct {
	t       *testing.T
	ctx     context.Context
	p       *netns.Pair
	far     *netns.NS
	logs    *records
	changes chan []ifaceView // every list OnChange was given
	got     chan netio.Datagram
	l       *netio.Listener
	stop    func() // closes the Listener and waits for Serve; once
}

func newWatchLab(t *testing.T) *watchLab {
	t.Helper()
	p := lab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	// Namespaces made by `ip netns add` hold no descriptor of this
	// process: TestWatchNoLeak counts them.
	far, err := netns.New(ctx, netns.UniqueName(netns.DefaultPrefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { far.Close() })
	w := &watchLab{t: t, ctx: ctx, p: p, far: far, logs: &records{}, changes: make(chan []ifaceView, 64),
		got: make(chan netio.Datagram, 16), stop: func() {}}
	waitOperUp(ctx, t, p.A, p.AIf)
	waitOperUp(ctx, t, p.B, p.BIf)
	return w
}

// ip runs `ip args...` in ns.
func (w *watchLab) ip(ns *netns.NS, args ...string) {
	w.t.Helper()
	if out, err := ns.IP(w.ctx, args...); err != nil {
		w.t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
	}
}

// listen starts a Listener with Watch in A, on the interfaces named (nil:
// the default choice), and its Serve; the group's datagrams go to w.got,
// the lists OnChange is given to w.changes.
func (w *watchLab) listen(mode netio.Mode, names []string) {
	t := w.t
	t.Helper()
	err := w.p.A.Do(func() error {
		chosen, _, err := netio.Choose(names)
		if err != nil {
			return err
		}
		w.l, err = netio.Listen(netio.Config{Mode: mode, Group: netip.MustParseAddrPort("224.0.1.75:5060"), Interfaces: chosen,
			Watch: true, Names: names, Logger: slog.New(w.logs),
			OnChange: func(ifs []*netio.Iface) {
				select {
				case w.changes <- viewOf(ifs):
				default:
					t.Errorf("OnChange: test's channel full")
				}
			}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- w.l.Serve(sctx, netio.HandlerFunc(func(d netio.Datagram) {
			if !d.Group {
				return
			}
			d.Data = append([]byte(nil), d.Data...)
			select {
			case w.got <- d:
			default: // not the test's: never hold a reader up
			}
		}))
	}()
	w.stop = sync.OnceFunc(func() {
		w.l.Close()
		scancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Serve still running 30s after Close")
		}
	})
	t.Cleanup(func() {
		w.stop()
		if t.Failed() {
			t.Logf("listener log:\n%s", w.logs)
		}
	})
}

func testWatch(t *testing.T, mode netio.Mode) {
	w := newWatchLab(t)
	w.listen(mode, nil) // A holds lo and the veth
	ctx, p, c, ip, l, got, changes, logs := w.ctx, w.p, w.far, w.ip, w.l, w.got, w.changes, w.logs

	first := l.Interfaces()
	if len(first) != 1 || first[0].Name() != p.AIf {
		t.Fatalf("interfaces at start %v, want only %s", viewOf(first), p.AIf)
	}
	exchange(t, l, got, p.B, p.BIf, p.BAddr.Addr(), viewOf(first)[0])

	var seen [][]ifaceView // every list OnChange was given
	waitChange := func(what string, ok func([]ifaceView) bool) []ifaceView {
		t.Helper()
		deadline := time.After(changeTimeout)
		for {
			select {
			case v := <-changes:
				seen = append(seen, v)
				if ok(v) {
					return v
				}
			case <-deadline:
				t.Fatalf("OnChange never showed %s within %s; it showed %v", what, changeTimeout, seen)
			}
		}
	}
	index := func(ns *netns.NS, name string) int {
		t.Helper()
		ifi, err := ns.InterfaceByName(name)
		if err != nil {
			t.Fatal(err)
		}
		return ifi.Index
	}
	// veth makes a veth pair from A to ns, addressed a (in A) and b.
	veth := func(aIf string, ns *netns.NS, nsIf, a, b string) {
		t.Helper()
		ip(p.A, "link", "add", aIf, "type", "veth", "peer", "name", nsIf, "netns", ns.Name)
		ip(p.A, "addr", "add", a, "dev", aIf)
		ip(ns, "addr", "add", b, "dev", nsIf)
		ip(ns, "link", "set", nsIf, "up")
		ip(p.A, "link", "set", aIf, "up")
		waitOperUp(ctx, t, p.A, aIf)
		waitOperUp(ctx, t, ns, nsIf)
	}

	// (1) A second interface, created after start.
	const aNew, cIf = "pwnew0", "pwpeer0"
	veth(aNew, c, cIf, "198.18.9.1/24", "198.18.9.2/24")
	newView := ifaceView{aNew, index(p.A, aNew), netip.MustParseAddr("198.18.9.1")}
	waitChange("the new interface", func(v []ifaceView) bool { return slices.Contains(v, newView) })
	if v := viewOf(l.Interfaces()); len(v) != 2 || v[0] != viewOf(first)[0] || v[1] != newView {
		t.Errorf("interfaces %v, want %v and %v", v, viewOf(first)[0], newView)
	}
	exchange(t, l, got, c, cIf, netip.MustParseAddr("198.18.9.2"), newView)

	// (2) The first one deleted, then created again under its name with
	// another address: a new index.
	ip(p.A, "link", "del", p.AIf)
	waitChange("the first interface gone", func(v []ifaceView) bool { return slices.Equal(v, []ifaceView{newView}) })
	if _, ok := l.Iface(first[0].Index()); ok {
		t.Errorf("Iface(%d) still finds the deleted interface", first[0].Index())
	}
	// A transaction may still hold it: Send fails, it does not panic.
	if err := first[0].Send([]byte("late"), netip.MustParseAddrPort("198.18.7.2:5060")); !errors.Is(err, netio.ErrIfaceGone) {
		t.Errorf("Send on the deleted interface: %v, want ErrIfaceGone", err)
	}
	veth(p.AIf, p.B, p.BIf, "198.18.10.1/24", "198.18.10.2/24")
	again := ifaceView{p.AIf, index(p.A, p.AIf), netip.MustParseAddr("198.18.10.1")}
	if again.index == first[0].Index() {
		t.Fatalf("the kernel gave the new %s the old index %d: the test proves less than it says", p.AIf, again.index)
	}
	waitChange("the first interface back", func(v []ifaceView) bool { return slices.Contains(v, again) })
	exchange(t, l, got, p.B, p.BIf, netip.MustParseAddr("198.18.10.2"), again)

	// (3) None left, then one back.
	ip(p.A, "link", "del", p.AIf)
	ip(p.A, "link", "del", aNew)
	waitChange("no interface", func(v []ifaceView) bool { return len(v) == 0 })
	if n := len(l.Interfaces()); n != 0 {
		t.Errorf("%d interfaces held, want none", n)
	}
	veth(p.AIf, p.B, p.BIf, "198.18.11.1/24", "198.18.11.2/24")
	back := ifaceView{p.AIf, index(p.A, p.AIf), netip.MustParseAddr("198.18.11.1")}
	waitChange("an interface back after none", func(v []ifaceView) bool { return slices.Equal(v, []ifaceView{back}) })
	exchange(t, l, got, p.B, p.BIf, netip.MustParseAddr("198.18.11.2"), back)

	// OnChange saw each state, in order, and nothing it should not have.
	want := [][]ifaceView{{viewOf(first)[0], newView}, {newView}, {newView, again}, {}, {back}}
	var states [][]ifaceView
	for _, v := range seen {
		if len(states) == 0 || !slices.Equal(states[len(states)-1], v) {
			states = append(states, v)
		}
	}
	if !slices.EqualFunc(states, want, slices.Equal) {
		// Two changes close together may come as one call; never
		// a list that was not true.
		for _, s := range states {
			if !slices.ContainsFunc(want, func(w []ifaceView) bool { return slices.Equal(w, s) }) {
				t.Errorf("OnChange was shown %v, which was never the case (want the states %v)", s, want)
			}
		}
	}
	if v := viewOf(l.Interfaces()); !slices.Equal(v, seen[len(seen)-1]) {
		t.Errorf("Interfaces() = %v, but OnChange last showed %v", v, seen[len(seen)-1])
	}

	// The log says what happened.
	for _, w := range []struct {
		level slog.Level
		msg   string
		iface string
		addr  string
	}{
		{slog.LevelInfo, "interface joined", aNew, "198.18.9.1"},
		{slog.LevelWarn, "interface gone", p.AIf, p.AAddr.Addr().String()},
		{slog.LevelInfo, "interface joined", p.AIf, "198.18.10.1"},
		{slog.LevelWarn, "interface gone", aNew, "198.18.9.1"},
		{slog.LevelInfo, "interface joined", p.AIf, "198.18.11.1"},
	} {
		if !logs.has(w.level, w.msg, "iface", w.iface, "addr", w.addr) {
			t.Errorf("no %s %q for %s %s in the log", w.level, w.msg, w.iface, w.addr)
		}
	}
	if !logs.has(slog.LevelWarn, "no usable interface left: the group is received nowhere until one comes back") {
		t.Errorf("no warning that no interface was left")
	}
}

// TestWatchNamed: with a configured name the watcher applies Choose's rule
// for names. In each mode, another interface created after start is not
// joined; the named one taken down is let go of (a warning) and joined
// again when it is up; deleted, it is dropped with a warning, and created
// again under its name it is joined again on its new index.
func TestWatchNamed(t *testing.T) {
	for _, mode := range []netio.Mode{netio.ModeBind, netio.ModeRaw, netio.ModePacket} {
		t.Run(string(mode), func(t *testing.T) { testWatchNamed(t, mode) })
	}
}

func testWatchNamed(t *testing.T, mode netio.Mode) {
	w := newWatchLab(t)
	w.listen(mode, []string{w.p.AIf})
	ctx, p, ip, l, got, changes, logs := w.ctx, w.p, w.ip, w.l, w.got, w.changes, w.logs
	next := func(what string) []ifaceView {
		t.Helper()
		select {
		case v := <-changes:
			return v
		case <-time.After(changeTimeout):
			t.Fatalf("OnChange never showed %s within %s", what, changeTimeout)
			return nil
		}
	}
	first := viewOf(l.Interfaces())[0]

	// Not named: never joined. The change that follows is the named
	// interface going down, and the other is not in any list.
	ip(p.A, "link", "add", "pwother0", "type", "veth", "peer", "name", "pwother1")
	ip(p.A, "addr", "add", "198.18.12.1/24", "dev", "pwother0")
	ip(p.A, "link", "set", "pwother0", "up")
	ip(p.A, "link", "set", "pwother1", "up")
	ip(p.A, "link", "set", p.AIf, "down")
	if v := next("the named interface down"); len(v) != 0 {
		t.Fatalf("after the named interface went down, OnChange showed %v, want none", v)
	}
	if !logs.has(slog.LevelWarn, "interface gone", "iface", p.AIf, "why", "down") {
		t.Errorf("no warning that %s is gone because it is down", p.AIf)
	}
	ip(p.A, "link", "set", p.AIf, "up")
	waitOperUp(ctx, t, p.A, p.AIf)
	waitOperUp(ctx, t, p.B, p.BIf)
	if v := next("the named interface up again"); !slices.Equal(v, []ifaceView{first}) {
		t.Fatalf("after up, OnChange showed %v, want %v", v, first)
	}
	exchange(t, l, got, p.B, p.BIf, p.BAddr.Addr(), first)

	ip(p.A, "link", "del", p.AIf)
	if v := next("the named interface deleted"); len(v) != 0 {
		t.Fatalf("after the named interface was deleted, OnChange showed %v, want none", v)
	}
	if !logs.has(slog.LevelWarn, "interface gone", "iface", p.AIf, "why", "deleted") {
		t.Errorf("no warning that %s is gone because it was deleted", p.AIf)
	}
	ip(p.A, "link", "add", p.AIf, "type", "veth", "peer", "name", p.BIf, "netns", p.B.Name)
	ip(p.A, "addr", "add", "198.18.13.1/24", "dev", p.AIf)
	ip(p.B, "addr", "add", "198.18.13.2/24", "dev", p.BIf)
	ip(p.B, "link", "set", p.BIf, "up")
	ip(p.A, "link", "set", p.AIf, "up")
	waitOperUp(ctx, t, p.A, p.AIf)
	waitOperUp(ctx, t, p.B, p.BIf)
	ifi, err := p.A.InterfaceByName(p.AIf)
	if err != nil {
		t.Fatal(err)
	}
	back := ifaceView{p.AIf, ifi.Index, netip.MustParseAddr("198.18.13.1")}
	if v := next("the named interface back"); !slices.Equal(v, []ifaceView{back}) {
		t.Fatalf("after it was created again, OnChange showed %v, want %v", v, back)
	}
	exchange(t, l, got, p.B, p.BIf, netip.MustParseAddr("198.18.13.2"), back)
}

// leakCycles is how many times TestWatchNoLeak creates and deletes an
// interface: a socket or goroutine kept per cycle then shows as several,
// and a mode still takes a few seconds.
const leakCycles = 5

// leakTimeout bounds polling for the counts to come back (a packet
// socket's reader closes it within its read timeout, a goroutine ends
// when the scheduler gets to it): a bound for a noisy machine, not an
// expectation.
const leakTimeout = 10 * time.Second

// TestWatchNoLeak: in each mode, a Listener with Watch that joins an
// interface and lets go of it again and again (a veth into another
// namespace, created, then deleted) keeps nothing of it. After the
// cycles the process holds exactly the file descriptors it held while
// serving before them, and at most as many goroutines; after Close, those
// it held before Listen.
func TestWatchNoLeak(t *testing.T) {
	for _, mode := range []netio.Mode{netio.ModeBind, netio.ModeRaw, netio.ModePacket} {
		t.Run(string(mode), func(t *testing.T) { testWatchNoLeak(t, mode) })
	}
}

func testWatchNoLeak(t *testing.T, mode netio.Mode) {
	w := newWatchLab(t)
	before := settledUsage(t, "before Listen")
	w.listen(mode, nil) // A holds lo and the lab's veth
	p, c, ip, l, got, changes, stop := w.p, w.far, w.ip, w.l, w.got, w.changes, w.stop

	// A datagram through the group reader and an answer back say that
	// Serve started its readers; the counts then settle once the watcher
	// has started its own and made its first look.
	first := l.Interfaces()
	if len(first) != 1 || first[0].Name() != p.AIf {
		t.Fatalf("interfaces at start %v, want only %s", viewOf(first), p.AIf)
	}
	exchange(t, l, got, p.B, p.BIf, p.BAddr.Addr(), viewOf(first)[0])
	serving := settledUsage(t, "serving")

	waitChange := func(what string, ok func([]ifaceView) bool) {
		t.Helper()
		var seen [][]ifaceView
		deadline := time.After(changeTimeout)
		for {
			select {
			case v := <-changes:
				if ok(v) {
					return
				}
				seen = append(seen, v)
			case <-deadline:
				t.Fatalf("OnChange never showed %s within %s; it showed %v", what, changeTimeout, seen)
			}
		}
	}
	const aIf, cIf = "pwleak0", "pwleakp0"
	addr := netip.MustParseAddr("198.18.14.1")
	for cycle := 1; cycle <= leakCycles; cycle++ {
		ip(p.A, "link", "add", aIf, "type", "veth", "peer", "name", cIf, "netns", c.Name)
		ip(p.A, "addr", "add", addr.String()+"/24", "dev", aIf)
		ip(c, "link", "set", cIf, "up")
		ip(p.A, "link", "set", aIf, "up")
		ifi, err := p.A.InterfaceByName(aIf)
		if err != nil {
			t.Fatal(err)
		}
		joined := ifaceView{aIf, ifi.Index, addr}
		waitChange(fmt.Sprintf("cycle %d: %v joined", cycle, joined), func(v []ifaceView) bool { return slices.Contains(v, joined) })
		ip(p.A, "link", "del", aIf)
		waitChange(fmt.Sprintf("cycle %d: %v gone", cycle, joined), func(v []ifaceView) bool {
			return !slices.ContainsFunc(v, func(i ifaceView) bool { return i.name == aIf })
		})
	}
	if v := viewOf(l.Interfaces()); !slices.Equal(v, viewOf(first)) {
		t.Errorf("after the cycles the Listener holds %v, want %v as at start", v, viewOf(first))
	}
	waitUsage(t, fmt.Sprintf("after %d cycles", leakCycles), serving, p.A)

	stop()
	waitUsage(t, "after Close", before, p.A)
}

// usage is what the process holds at one time: its file descriptors
// (what each points to, e.g. "socket:[1234]"), its goroutines, and for
// the record its threads.
type usage struct {
	fds        []string
	goroutines int
	threads    int
	stacks     string // the goroutine profile, grouped by stack
}

// takeUsage counts the process's file descriptors, goroutines and
// threads. The descriptor ReadDir holds on /proc/self/fd is among those
// counted, every time.
func takeUsage(t *testing.T) usage {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("counting file descriptors: %v", err)
	}
	u := usage{goroutines: runtime.NumGoroutine()}
	for _, e := range ents {
		// Closed since the listing: counted anyway, as the count is what
		// is compared; the target only explains a difference.
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			target = "(closed while looked at)"
		}
		u.fds = append(u.fds, target)
	}
	if tasks, err := os.ReadDir("/proc/self/task"); err == nil {
		u.threads = len(tasks)
	}
	var b strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&b, 1); err == nil {
		u.stacks = b.String()
	}
	return u
}

func (u usage) String() string {
	return fmt.Sprintf("%d fds, %d goroutines, %d threads", len(u.fds), u.goroutines, u.threads)
}

// settledUsage returns the usage once it has stayed the same (descriptors
// and goroutines) over several samples: goroutines that were just started
// are running, and those that were ending have ended.
func settledUsage(t *testing.T, what string) usage {
	t.Helper()
	const samples, every = 5, 50 * time.Millisecond
	var last usage
	same := 0
	for deadline := time.Now().Add(leakTimeout); ; time.Sleep(every) {
		u := takeUsage(t)
		if len(u.fds) == len(last.fds) && u.goroutines == last.goroutines {
			same++
		} else {
			same = 1
		}
		last = u
		if same == samples {
			t.Logf("%s: %v", what, u)
			return u
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the process's descriptors and goroutines did not settle within %s (last %v)", what, leakTimeout, u)
		}
	}
}

// waitUsage waits until the process holds exactly the descriptors of want
// (the same files and sockets, not only as many) and at most its
// goroutines, and says what is left over when it does not. Goroutines may
// be fewer: one of the runtime's or the testing package's that was
// running at the count may have ended since. Descriptors get no such
// slack: nothing else in the test opens or closes one while it waits,
// and the Listener's own (the first interface's, the group's, the route
// socket) are the same sockets throughout. ns is where the Listener's
// sockets are, to name them.
func waitUsage(t *testing.T, what string, want usage, ns *netns.NS) {
	t.Helper()
	var u usage
	for deadline := time.Now().Add(leakTimeout); ; time.Sleep(50 * time.Millisecond) {
		u = takeUsage(t)
		added, removed := diffCounts(want.fds, u.fds)
		if len(added) == 0 && len(removed) == 0 && u.goroutines <= want.goroutines {
			t.Logf("%s: %v (was %v)", what, u, want)
			return
		}
		if time.Now().After(deadline) {
			break
		}
	}
	t.Errorf("%s: still %v after %s, want the %d fds held then and at most %d goroutines", what, u, leakTimeout, len(want.fds), want.goroutines)
	added, removed := diffCounts(want.fds, u.fds)
	for _, fd := range added {
		t.Errorf("%s: descriptor left open: %s%s", what, fd, socketInfo(ns, fd))
	}
	for _, fd := range removed {
		t.Errorf("%s: descriptor closed that was open before: %s", what, fd)
	}
	if u.goroutines > want.goroutines {
		added, _ := diffCounts(stackList(want.stacks), stackList(u.stacks))
		for _, s := range added {
			t.Errorf("%s: goroutine left running:\n%s", what, s)
		}
	}
}

// diffCounts returns the elements that b holds more often than a, and
// those a holds more often than b, one entry per extra occurrence.
func diffCounts(a, b []string) (added, removed []string) {
	n := map[string]int{}
	for _, s := range a {
		n[s]--
	}
	for _, s := range b {
		n[s]++
	}
	for _, s := range slices.Sorted(maps.Keys(n)) {
		for ; n[s] > 0; n[s]-- {
			added = append(added, s)
		}
		for ; n[s] < 0; n[s]++ {
			removed = append(removed, s)
		}
	}
	return added, removed
}

// stackList expands a goroutine profile at debug level 1 ("N @ pcs"
// followed by the frames, a blank line between stacks) into one entry
// per goroutine: its frames, without the addresses. The goroutine that
// took the profile is left out.
func stackList(profile string) []string {
	var out []string
	for _, rec := range strings.Split(profile, "\n\n") {
		lines := strings.Split(strings.TrimSpace(rec), "\n")
		if strings.HasPrefix(lines[0], "goroutine profile:") {
			lines = lines[1:]
		}
		if len(lines) == 0 {
			continue
		}
		count, _, ok := strings.Cut(lines[0], " @ ")
		n, err := strconv.Atoi(count)
		if !ok || err != nil {
			continue
		}
		var frames []string
		for _, f := range lines[1:] {
			// "#\t0x4b7cd1\tpkg.fn+0x31\t/path/file.go:152"
			if parts := strings.SplitN(f, "\t", 3); len(parts) == 3 {
				frames = append(frames, "\t"+parts[2])
			}
		}
		stack := strings.Join(frames, "\n")
		if strings.Contains(stack, "netio_test.takeUsage") {
			continue // the test's own, whose caller differs each time
		}
		for range n {
			out = append(out, stack)
		}
	}
	return out
}

// socketInfo names the socket a descriptor target ("socket:[INODE]")
// points to: its line in the kernel's socket tables of namespace ns or
// of the test's own, "" when it is no socket or is not found.
func socketInfo(ns *netns.NS, target string) string {
	ino, ok := strings.CutPrefix(target, "socket:[")
	if !ok {
		return ""
	}
	ino = strings.TrimSuffix(ino, "]")
	find := func() string {
		// thread-self: Do switches one thread, not the process.
		for _, table := range []string{"udp", "raw", "packet", "netlink", "unix"} {
			b, err := os.ReadFile("/proc/thread-self/net/" + table)
			if err != nil {
				continue
			}
			for line := range strings.Lines(string(b)) {
				if slices.Contains(strings.Fields(line), ino) {
					return " (" + table + ": " + strings.TrimSpace(line) + ")"
				}
			}
		}
		return ""
	}
	var in string
	_ = ns.Do(func() error {
		in = find()
		return nil
	})
	if in != "" {
		return in
	}
	return find()
}

// exchange sends a datagram to the group from src on ns's interface ifname
// and checks that the Listener hands it over as arrived on want, then
// answers it on that Iface and checks that the answer comes from want's
// address. Like a phone it sends again when nothing comes back (a link
// just up may drop the first packets); the tries are logged.
func exchange(t *testing.T, l *netio.Listener, got chan netio.Datagram, ns *netns.NS, ifname string, src netip.Addr, want ifaceView) {
	t.Helper()
	phone, err := ns.ListenUDP("udp4", &net.UDPAddr{IP: src.AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	defer phone.Close()
	ifi, err := ns.InterfaceByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	if err := ipv4.NewPacketConn(phone).SetMulticastInterface(ifi); err != nil {
		t.Fatal(err)
	}
	const tries, every = 20, 500 * time.Millisecond
	payload := fmt.Sprintf("hello from %s at %d", src, time.Now().UnixNano())
	var d netio.Datagram
	for try := 1; string(d.Data) != payload; try++ {
		if try > tries {
			t.Fatalf("%q sent to the group on %s %d times never reached the handler (holding %v)", payload, ifname, tries, viewOf(l.Interfaces()))
		}
		if try > 1 {
			t.Logf("sending %q again (try %d)", payload, try)
		}
		if _, err := phone.WriteTo([]byte(payload), &net.UDPAddr{IP: net.IPv4(224, 0, 1, 75), Port: 5060}); err != nil {
			t.Fatal(err)
		}
		for wait := time.After(every); string(d.Data) != payload; {
			select {
			case d = <-got:
				continue
			case <-wait:
			}
			break
		}
	}
	if v := (ifaceView{d.Iface.Name(), d.Iface.Index(), d.Iface.Addr().Addr()}); v != want {
		t.Errorf("%q arrived on %v, want %v", payload, v, want)
	}
	buf := make([]byte, 100)
	for try := 1; ; try++ {
		if err := d.Iface.Send([]byte("answer"), d.Src); err != nil {
			t.Fatalf("Send on %s: %v", d.Iface.Name(), err)
		}
		phone.SetReadDeadline(time.Now().Add(every))
		n, from, err := phone.ReadFromUDPAddrPort(buf)
		if err == nil {
			if string(buf[:n]) != "answer" || from.Addr() != want.addr || from != d.Iface.Addr() {
				t.Errorf("answer %q from %v; want from %v", buf[:n], from, d.Iface.Addr())
			}
			return
		}
		if try == tries {
			t.Fatalf("answer on %s sent %d times never reached %s: %v", d.Iface.Name(), tries, d.Src, err)
		}
		t.Logf("sending the answer again (try %d): %v", try+1, err)
	}
}

// waitOperUp waits until the kernel reports ifname's operational state UP:
// only then has the link's queue been started, and packets are no longer
// dropped.
func waitOperUp(ctx context.Context, t *testing.T, ns *netns.NS, ifname string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		out, err := ns.IP(ctx, "-o", "link", "show", "dev", ifname)
		if err == nil && strings.Contains(string(out), "state UP") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s in %s not operationally up within 10s: %s %v", ifname, ns.Name, out, err)
		}
	}
}

// records is a slog.Handler that keeps what is logged.
type records struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }

func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}

func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// has reports whether a record at level with message msg has the key and
// value pairs of kv; an "addr" value matches an address with a port too.
func (r *records) has(level slog.Level, msg string, kv ...string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.recs {
		if rec.Level != level || rec.Message != msg {
			continue
		}
		attrs := map[string]string{}
		rec.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		ok := true
		for i := 0; i+1 < len(kv); i += 2 {
			v := attrs[kv[i]]
			if v != kv[i+1] && !(kv[i] == "addr" && strings.HasPrefix(v, kv[i+1]+":")) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func (r *records) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, rec := range r.recs {
		fmt.Fprintf(&b, "%s %s", rec.Level, rec.Message)
		rec.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&b, " %s=%s", a.Key, a.Value)
			return true
		})
		b.WriteByte('\n')
	}
	return b.String()
}
