package netio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Each group socket is read by a goroutine of its own, locked to its OS
// thread and blocked in recvmsg: the kernel wakes that thread, and it
// builds and sends the 200 itself. Beside a PBX that answers the same
// SUBSCRIBE 401 within a millisecond, that thread is the one to give a
// real-time priority (Config.Priority) on a loaded host: Debian runs
// Asterisk at SCHED_RR 10 (asterisk -p), and a normal-priority thread
// loses the race to it whenever the CPUs are busy. Only these threads get
// it; the Go runtime creates its other threads from a template thread, so
// they keep the normal policy. A receive timeout lets a reader notice
// Close.
//
// A real-time thread that always has work starves every normal thread of
// its CPU: under a flood (or a saturating benchmark) the unicast reader
// that takes the phones' 200s to our NOTIFYs, Go's timers and the logging
// wait behind it. So a real-time reader watches its queue and yields when
// it stays busy: see overloadAfter.

// readPoll is how long a blocked read waits before it looks whether the
// socket was closed; it bounds how long Close waits for a reader.
const readPoll = 100 * time.Millisecond

// overloadAfter is how long a real-time reader's queue may stay non-empty
// (no read has found it empty since) before the reader drops to the normal
// policy; the first read that finds the queue empty again restores
// SCHED_RR. A legitimate boot storm, 10,000 phones within a second at about
// 20 µs per SUBSCRIBE, keeps the reader busy a fifth of the time, and the
// queue empties many times a second. A burst beyond the reader's pace is
// still served at full priority for half a second: with 20 ms, pnpd bench's
// saturation run (a closed loop that keeps the queue full by design for a
// few hundred milliseconds) lost a fifth of its throughput to the phones'
// threads. A flood that outpaces the reader for longer keeps the queue full
// however cheaply each datagram is dropped (Server.Handle's per-source
// limit), and then the host's normal threads, ours among them, must get
// the CPU back. It is a lower bound: see clockEvery.
const overloadAfter = 500 * time.Millisecond

// clockEvery is how many datagrams of a busy streak pass between two clock
// reads (a power of two). Reading the clock per datagram would cost little
// beside a recvmsg, but nothing at all is better on the path that races
// the PBX: a streak shorter than clockEvery datagrams, which is all that an
// idle or normally loaded socket ever sees, never reads the clock. The
// first read, at the clockEvery-th datagram, starts the streak's clock, so
// a streak counts as overloaded overloadAfter plus clockEvery datagrams
// after it began: about 1.3 ms more at 20 µs a datagram.
const clockEvery = 64

// sockReader is one group socket read with blocking recvmsg.
type sockReader struct {
	fd   int
	name string
	log  *slog.Logger

	priority int // SCHED_RR priority of the reading thread; 0: leave it
	// racing: a PBX may answer the same datagrams (raw mode), so a priority
	// not granted is worth a warning.
	racing bool

	started atomic.Bool
	shut    atomic.Bool
	once    sync.Once
}

// newSockReader takes fd (the caller no longer closes it): it makes the
// socket blocking with a receive timeout.
func newSockReader(fd int, name string, log *slog.Logger) (*sockReader, error) {
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netio: %s: %w", name, err)
	}
	tv := unix.NsecToTimeval(readPoll.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netio: %s: SO_RCVTIMEO: %w", name, err)
	}
	return &sockReader{fd: fd, name: name, log: log}, nil
}

// serve reads until close, calling handle with each datagram, its control
// messages and its source; buf and oob are reused.
func (r *sockReader) serve(buf, oob []byte, handle func(b, oob []byte, from unix.Sockaddr)) {
	// Never unlocked: the thread ends with the goroutine, so that a thread
	// with a real-time policy never runs other goroutines.
	runtime.LockOSThread()
	var g *rtGuard // nil: the thread has the normal policy, nothing to watch
	if r.priority > 0 {
		g = r.takePriority()
	}
	r.started.Store(true)
	defer r.closeFD()
	// A real-time reader reads with MSG_DONTWAIT after a datagram and
	// blocks only once a read has found the queue empty (EAGAIN): that is
	// how it learns that the queue drained. The non-blocking read is no
	// extra read while datagrams wait: it takes the next one. The one read
	// it adds per streak, the EAGAIN, comes after the streak's last
	// datagram was handled and its answer sent, and the thread then blocks
	// as before; a datagram that arrives on an idle socket finds it blocked
	// in recvmsg and wakes it with no more delay than before (one arriving
	// during that EAGAIN read is taken by the blocking read that follows).
	flags := 0
	for !r.shut.Load() {
		n, oobn, _, from, err := unix.Recvmsg(r.fd, buf, oob, flags)
		switch {
		case err == nil:
			handle(buf[:n], oob[:oobn], from)
			if g != nil {
				flags = unix.MSG_DONTWAIT
				g = g.handled()
			}
		case errors.Is(err, unix.EAGAIN):
			// The queue is empty (or the receive timeout passed, which
			// says the same).
			flags = 0
			if g != nil {
				g = g.drained()
			}
		case errors.Is(err, unix.EINTR):
		default:
			if r.shut.Load() {
				return
			}
			r.log.Warn("group socket read", "socket", r.name, "err", err)
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// takePriority gives the calling thread SCHED_RR at r.priority, and returns
// the guard that yields it under overload, or nil when it was not granted.
func (r *sockReader) takePriority() *rtGuard {
	// The normal policy to yield to keeps the thread's nice value (the
	// process's, e.g. systemd's Nice=), which a thread with SCHED_RR does
	// not report: read it first. Going back to it needs no privilege.
	normal := unix.SchedAttr{Policy: unix.SCHED_NORMAL}
	if a, err := unix.SchedGetAttr(0, 0); err == nil && a.Policy == unix.SCHED_NORMAL {
		normal.Nice = a.Nice
	}
	err := unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_RR, Priority: uint32(r.priority)}, 0)
	switch {
	case err != nil && r.racing:
		r.log.Warn("group socket reader keeps the normal priority: on a busy host the PBX's 401 may reach phones first",
			"socket", r.name, "priority", r.priority, "err", err,
			"hint", "allow it with LimitRTPRIO (systemd) or CAP_SYS_NICE, or use packet mode")
		return nil
	case err != nil:
		r.log.Debug("group socket reader keeps the normal priority", "socket", r.name, "priority", r.priority, "err", err)
		return nil
	}
	r.log.Debug("group socket reader at SCHED_RR", "socket", r.name, "priority", r.priority)
	return &rtGuard{r: r, normal: normal}
}

// rtGuard watches a real-time reader's queue from the reader's own thread:
// when it has stayed non-empty for overloadAfter, the thread yields to the
// normal policy until a read finds it empty. Not safe for concurrent use;
// only the reader touches it.
type rtGuard struct {
	r      *sockReader
	normal unix.SchedAttr // the policy yielded to

	streak  int       // datagrams handled since a read last found the queue empty
	since   time.Time // clock at the clockEvery-th datagram of the streak
	demoted bool      // the thread has the normal policy until the queue drains
}

// handled counts one datagram of the streak; every clockEvery datagrams it
// reads the clock and yields the real-time policy once the streak has
// lasted overloadAfter. It returns the guard to keep, nil when the policy
// could not be changed (nothing left to watch).
func (g *rtGuard) handled() *rtGuard {
	g.streak++
	if g.streak%clockEvery != 0 || g.demoted {
		return g
	}
	now := time.Now()
	if g.streak == clockEvery {
		g.since = now
		return g
	}
	busy := now.Sub(g.since)
	if busy < overloadAfter {
		return g
	}
	attr := g.normal
	if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
		// Not expected: going down needs no privilege. Stop watching
		// rather than warn every clockEvery datagrams.
		g.r.log.Warn("group socket reader overloaded, and cannot drop its real-time priority",
			"socket", g.r.name, "priority", g.r.priority, "err", err)
		return nil
	}
	g.demoted = true
	// Logged after the change: a real-time thread that blocks in the log's
	// write is what this avoids.
	g.r.log.Warn("group socket reader overloaded: normal priority until its queue drains",
		"socket", g.r.name, "priority", g.r.priority, "datagrams", g.streak, "busy", busy.Round(time.Millisecond).String())
	return g
}

// drained ends the streak: a read found the queue empty. A demoted thread
// gets SCHED_RR back; the episode it logs is timed from the streak's first
// clock read. It returns the guard to keep, nil when the priority
// could not be restored (nothing left to watch).
func (g *rtGuard) drained() *rtGuard {
	if g.streak == 0 {
		return g
	}
	if g.demoted {
		// Logged before the change, while a blocked write cannot hold
		// up anything of the PBX's or ours.
		g.r.log.Info("group socket reader drained its queue: real-time priority again",
			"socket", g.r.name, "priority", g.r.priority, "datagrams", g.streak,
			"lasted", time.Since(g.since).Round(time.Millisecond).String())
		err := unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_RR, Priority: uint32(g.r.priority)}, 0)
		if err != nil {
			// E.g. RLIMIT_RTPRIO lowered since start: stay normal.
			g.r.log.Warn("group socket reader cannot take its real-time priority back: it keeps the normal priority",
				"socket", g.r.name, "priority", g.r.priority, "err", err)
			return nil
		}
	}
	g.streak, g.demoted = 0, false
	return g
}

// close stops the reader within readPoll; the reader closes the socket.
// A reader that never started has its socket closed here.
func (r *sockReader) close() error {
	r.shut.Store(true)
	if !r.started.Load() {
		r.closeFD()
	}
	return nil
}

func (r *sockReader) closeFD() { r.once.Do(func() { unix.Close(r.fd) }) }

// recvBufferFD returns the receive buffer the kernel granted fd (it
// reports twice the usable size).
func recvBufferFD(fd int) int {
	n, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	if err != nil {
		return 0
	}
	return n / 2
}

// setRecvBufferFD asks for n bytes of receive buffer, beyond
// net.core.rmem_max when the process has CAP_NET_ADMIN.
func setRecvBufferFD(fd, n int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, n)
	}
}

// pktinfo returns the arrival interface and the destination address from
// the IP_PKTINFO control message in oob, or ok false when there is none.
func pktinfo(oob []byte) (ifindex int, dst [4]byte, ok bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0, dst, false
		}
		data := oob[unix.SizeofCmsghdr:l]
		if h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo {
			// struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
			ifindex = int(int32(binary.NativeEndian.Uint32(data[0:4])))
			copy(dst[:], data[8:12])
			return ifindex, dst, true
		}
		next := unix.CmsgSpace(l - unix.SizeofCmsghdr)
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return 0, dst, false
}
