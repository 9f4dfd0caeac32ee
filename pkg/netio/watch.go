package netio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// With Config.Watch the Listener follows the interfaces. A plain link
// down/up keeps the kernel's group membership, but an interface that is
// deleted takes its membership with it and leaves pnpd's sockets on it
// dead, and one created after start (or created again under the same
// name, with a new index and maybe a new address) was never joined. So a
// watcher listens to the kernel's link and IPv4 address reports on a
// netlink route socket, and after each burst of them applies the choice
// again (current) and brings the held interfaces to it (apply): what is
// new is opened and joined, what is gone is let go of. It does not parse
// the reports beyond the deletions of links: any report means "look
// again", which costs a listing of the interfaces, and a slow periodic
// look covers reports the kernel could not deliver (ENOBUFS).
//
// The group readers never wait for any of it: they look the arrival
// interface up in an immutable ifaceSet with one atomic load, and apply
// stores a new set.

const (
	// settleDelay is how long the watcher waits after a report before it
	// looks: `ip link add`, `ip addr add` and `ip link set up` come as
	// several reports within milliseconds.
	settleDelay = 150 * time.Millisecond
	// recheckEvery is the periodic look, in case reports were lost.
	recheckEvery = 30 * time.Second
	// recheckNoNetlink is the periodic look when the route socket could
	// not be opened.
	recheckNoNetlink = 5 * time.Second
	// retryFirst is the first wait before an interface that could not be
	// opened or joined is tried again; it doubles up to recheckEvery.
	retryFirst = time.Second
	// routeBuffer is the route socket's receive buffer: a host that
	// brings up many interfaces at once sends many reports.
	routeBuffer = 1 << 20
)

// watcher is Config.Watch's state.
type watcher struct {
	names    []string
	onChange func([]*Iface)
	log      *slog.Logger

	// nl is the route socket, nil when it could not be opened (then the
	// periodic look alone finds changes).
	nl *os.File
	// nsFD is the network namespace Listen ran in, which the watching
	// thread enters before it opens sockets or lists interfaces; -1 when
	// it could not be opened (the process's own is assumed).
	nsFD int

	kick chan struct{} // 1-buffered: the kernel reported a change

	mu      sync.Mutex
	deleted map[int]bool // links reported deleted since the last look
	nsOpen  bool         // nsFD not yet closed

	// Used by the watching goroutine only.
	failing map[Candidate]string // candidates that failed to open, and why
	retry   time.Duration        // current wait before a retry, 0: none due
}

// newWatcher opens the route socket and keeps the calling thread's network
// namespace; neither failing stops Listen.
func newWatcher(names []string, onChange func([]*Iface), log *slog.Logger) *watcher {
	w := &watcher{names: append([]string(nil), names...), onChange: onChange, log: log, nsFD: -1,
		kick: make(chan struct{}, 1), deleted: map[int]bool{}, failing: map[Candidate]string{}}
	nl, err := openRouteSocket()
	if err != nil {
		log.Warn("interface changes are not reported: looking for them every "+recheckNoNetlink.String()+" instead", "err", err)
	} else {
		w.nl = nl
	}
	// The thread that runs Listen may be in another namespace than the
	// process (a test, a caller that switched one thread).
	fd, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		log.Warn("cannot tell which network namespace the listener is in: watching the process's", "err", err)
	} else {
		w.nsFD, w.nsOpen = fd, true
	}
	return w
}

// openRouteSocket opens a netlink route socket subscribed to the link and
// IPv4 address reports, non-blocking so that the runtime's poller reads it
// and Close wakes the reader.
func openRouteSocket() (*os.File, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netio: route socket: %w", err)
	}
	setRecvBufferFD(fd, routeBuffer)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netio: route socket: subscribe to link and address reports: %w", err)
	}
	return os.NewFile(uintptr(fd), "netlink route"), nil
}

// close closes the route socket (its reader returns) and the namespace.
func (w *watcher) close() error {
	var err error
	if w.nl != nil {
		err = w.nl.Close()
	}
	w.closeNS()
	return err
}

func (w *watcher) closeNS() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.nsOpen {
		unix.Close(w.nsFD)
		w.nsOpen = false
	}
}

// enter switches the calling thread, locked by the caller for good, into
// the Listener's network namespace when it is in another one. Entering
// takes CAP_SYS_ADMIN, which a daemon in its own namespace never needs.
func (w *watcher) enter() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.nsOpen {
		return nil
	}
	var want, have unix.Stat_t
	if err := unix.Fstat(w.nsFD, &want); err != nil {
		return fmt.Errorf("netio: listener's network namespace: %w", err)
	}
	if err := unix.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), &have); err != nil {
		return fmt.Errorf("netio: this thread's network namespace: %w", err)
	}
	if want.Dev == have.Dev && want.Ino == have.Ino {
		return nil
	}
	if err := unix.Setns(w.nsFD, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("netio: enter the listener's network namespace: %w", err)
	}
	return nil
}

// note records a report: the links it says were deleted, and that a look
// is due.
func (w *watcher) note(deleted []int) {
	w.mu.Lock()
	for _, i := range deleted {
		w.deleted[i] = true
	}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// takeDeleted returns the links reported deleted since the last call.
func (w *watcher) takeDeleted() map[int]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := w.deleted
	w.deleted = map[int]bool{}
	return d
}

// readReports reads the route socket until it is closed.
func (w *watcher) readReports(closing <-chan struct{}) {
	buf := make([]byte, 64<<10)
	for {
		n, err := w.nl.Read(buf)
		switch {
		case err == nil:
			w.note(deletedLinks(buf[:n]))
			continue
		case errors.Is(err, os.ErrClosed):
			return
		case errors.Is(err, unix.ENOBUFS):
			// Reports were lost: which links went is unknown, so look at
			// them all.
			w.log.Debug("interface reports overflowed the route socket: looking at every interface")
			w.note(nil)
			continue
		}
		w.log.Warn("route socket read: interface changes are seen by the periodic look only until it works again", "err", err)
		select {
		case <-closing:
			return
		case <-time.After(recheckEvery):
		}
	}
}

// deletedLinks returns the indexes of the links that the RTM_DELLINK
// messages in b (one read of the route socket) report deleted. A bridge
// reports a port leaving it as an RTM_DELLINK of family AF_BRIDGE; the
// link itself stays, so those are not counted.
func deletedLinks(b []byte) []int {
	var out []int
	for len(b) >= unix.NLMSG_HDRLEN {
		n := int(binary.NativeEndian.Uint32(b[0:4]))
		typ := binary.NativeEndian.Uint16(b[4:6])
		if n < unix.NLMSG_HDRLEN || n > len(b) {
			break
		}
		// struct ifinfomsg { u8 family; u8 pad; u16 type; s32 index; u32 flags; u32 change; }
		if typ == unix.RTM_DELLINK && n >= unix.NLMSG_HDRLEN+unix.SizeofIfInfomsg && b[unix.NLMSG_HDRLEN] == unix.AF_UNSPEC {
			idx := int(int32(binary.NativeEndian.Uint32(b[unix.NLMSG_HDRLEN+4:])))
			out = append(out, idx)
		}
		next := (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if next >= len(b) {
			break
		}
		b = b[next:]
	}
	return out
}

// watch follows the interfaces until Close: a look at start (what changed
// between Choose and Serve), after each burst of reports, and
// periodically. It runs on a thread of its own, in the Listener's
// network namespace, which it never leaves: the thread ends with it.
func (l *Listener) watch() {
	runtime.LockOSThread()
	w := l.w
	err := w.enter()
	w.closeNS()
	if err != nil {
		l.log.Error("interfaces are not followed: pnpd keeps those it started with", "err", err)
		return
	}
	if w.nl != nil {
		l.wg.Add(1) // the watcher's own count keeps wg above zero
		go func() {
			defer l.wg.Done()
			w.readReports(l.closing)
		}()
	}
	period := time.NewTimer(l.recheck())
	defer period.Stop()
	var settle <-chan time.Time
	for {
		select {
		case <-l.closing:
			return
		case <-w.kick:
			if settle == nil {
				settle = time.After(settleDelay)
			}
			continue
		case <-settle:
			settle = nil
		case <-period.C:
		}
		period.Reset(l.recheck())
	}
}

// recheck applies the choice again and returns when to look next without
// a report.
func (l *Listener) recheck() time.Duration {
	w := l.w
	deleted := w.takeDeleted()
	now, err := current(w.names)
	failed := err != nil
	if err != nil {
		l.log.Warn("cannot list the interfaces: keeping those held, looking again soon", "err", err)
	} else {
		var changed bool
		changed, failed = l.apply(now, deleted)
		if changed && w.onChange != nil {
			w.onChange(l.Interfaces())
		}
	}
	if failed {
		w.retry = min(max(2*w.retry, retryFirst), recheckEvery)
		return w.retry
	}
	w.retry = 0
	if w.nl == nil {
		return recheckNoNetlink
	}
	return recheckEvery
}

// diffIfaces compares the interfaces held with the candidates chosen now.
// An interface is the same while its index, name and address (with its
// prefix length) are: any change makes it gone and its successor new, as
// does a deletion reported for its index (deleted), which catches a link
// deleted and created again with the same index. gone keeps held's order,
// added now's.
func diffIfaces(held []*Iface, now []Candidate, deleted map[int]bool) (gone []*Iface, added []Candidate) {
	want := make(map[Candidate]bool, len(now))
	for _, c := range now {
		want[c] = true
	}
	kept := make(map[Candidate]bool, len(held))
	for _, ifc := range held {
		c := ifc.candidate()
		if !want[c] || deleted[ifc.index] {
			gone = append(gone, ifc)
			continue
		}
		kept[c] = true
	}
	for _, c := range now {
		if !kept[c] {
			added = append(added, c)
		}
	}
	return gone, added
}

// apply brings the held interfaces to now: it lets go of those gone first
// (a new socket may need the address and port an old one holds), then
// opens and joins the new ones and starts their readers. It reports
// whether the set changed and whether something failed and should be
// tried again.
func (l *Listener) apply(now []Candidate, deleted map[int]bool) (changed, failed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false, false
	}
	old := l.set.Load().list
	gone, added := diffIfaces(old, now, deleted)
	for c := range l.w.failing {
		if !slices.Contains(now, c) {
			delete(l.w.failing, c) // gone before it ever worked: forget it
		}
	}
	if len(gone) == 0 && len(added) == 0 {
		return false, false
	}
	held := make(map[Candidate]*Iface, len(old)+len(added))
	for _, ifc := range old {
		held[ifc.candidate()] = ifc
	}
	reindexed := make(map[int]Candidate, len(added))
	for _, c := range added {
		reindexed[c.Index] = c
	}
	for _, ifc := range gone {
		delete(held, ifc.candidate())
	}
	// Published before the sockets close: a reader that still finds one
	// hands its datagram over with an Iface whose Send fails cleanly.
	l.publish(now, held)
	for _, ifc := range gone {
		changed = true
		why, up := "", false
		succ, again := reindexed[ifc.index]
		if !again {
			why, up = unusable(ifc.index)
			if why == "" {
				why = "not chosen"
			}
		}
		l.leaveIface(ifc, up && !again)
		switch {
		case again && succ.Prefix.Addr() != ifc.prefix.Addr():
			l.log.Info("interface gone", "iface", ifc.name, "addr", ifc.local.String(), "index", ifc.index, "why", "address changed to "+succ.Prefix.Addr().String())
		case again && succ == ifc.candidate():
			l.log.Info("interface gone", "iface", ifc.name, "addr", ifc.local.String(), "index", ifc.index, "why", "deleted and created again")
		case again:
			l.log.Info("interface gone", "iface", ifc.name, "addr", ifc.local.String(), "index", ifc.index, "why", "replaced by "+succ.Name+" "+succ.Prefix.String())
		default:
			l.log.Warn("interface gone", "iface", ifc.name, "addr", ifc.local.String(), "index", ifc.index, "why", why)
		}
	}
	var opened []*Iface
	for _, c := range added {
		ifc, err := l.openIface(c)
		if err != nil {
			failed = true
			l.openFailed(c, err)
			continue
		}
		held[c] = ifc
		opened = append(opened, ifc)
	}
	// Published before the joins, so that the group reader takes the
	// first datagrams they bring.
	l.publish(now, held)
	var refused bool
	for _, ifc := range opened {
		if err := l.joinIface(ifc); err != nil {
			failed, refused = true, true
			l.openFailed(ifc.candidate(), err)
			delete(held, ifc.candidate())
			ifc.close()
			continue
		}
		changed = true
		delete(l.w.failing, ifc.candidate())
		l.startReaders(ifc)
		l.log.Info("interface joined", "iface", ifc.name, "addr", ifc.local.String(), "index", ifc.index, "mode", string(l.mode), "group", l.group.String())
	}
	if refused {
		l.publish(now, held)
	}
	if len(old) > 0 && len(l.set.Load().list) == 0 {
		l.log.Warn("no usable interface left: the group is received nowhere until one comes back")
	}
	return changed, failed
}

// publish stores the interfaces of held in now's order as the set the
// readers see. Called with l.mu held.
func (l *Listener) publish(now []Candidate, held map[Candidate]*Iface) {
	list := make([]*Iface, 0, len(held))
	for _, c := range now {
		if ifc, ok := held[c]; ok {
			list = append(list, ifc)
		}
	}
	l.set.Store(newIfaceSet(list))
}

// openFailed logs an interface that could not be opened or joined: a
// warning the first time, or when the reason changes, then at debug level
// on each retry.
func (l *Listener) openFailed(c Candidate, err error) {
	msg := err.Error()
	if l.w.failing[c] == msg {
		l.log.Debug("interface still not joined", "iface", c.Name, "addr", c.Prefix.Addr().String(), "index", c.Index, "err", err)
		return
	}
	l.w.failing[c] = msg
	l.log.Warn("interface not joined: trying again", "iface", c.Name, "addr", c.Prefix.Addr().String(), "index", c.Index, "err", err)
}
