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

// readPoll is how long a blocked read waits before it looks whether the
// socket was closed; it bounds how long Close waits for a reader.
const readPoll = 100 * time.Millisecond

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
	if r.priority > 0 {
		err := unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_RR, Priority: uint32(r.priority)}, 0)
		switch {
		case err != nil && r.racing:
			r.log.Warn("group socket reader keeps the normal priority: on a busy host the PBX's 401 may reach phones first",
				"socket", r.name, "priority", r.priority, "err", err,
				"hint", "allow it with LimitRTPRIO (systemd) or CAP_SYS_NICE, or use packet mode")
		case err != nil:
			r.log.Debug("group socket reader keeps the normal priority", "socket", r.name, "priority", r.priority, "err", err)
		default:
			r.log.Debug("group socket reader at SCHED_RR", "socket", r.name, "priority", r.priority)
		}
	}
	r.started.Store(true)
	defer r.closeFD()
	for !r.shut.Load() {
		n, oobn, _, from, err := unix.Recvmsg(r.fd, buf, oob, 0)
		switch {
		case err == nil:
			handle(buf[:n], oob[:oobn], from)
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
		default:
			if r.shut.Load() {
				return
			}
			r.log.Warn("group socket read", "socket", r.name, "err", err)
			time.Sleep(10 * time.Millisecond)
		}
	}
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
