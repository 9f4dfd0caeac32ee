package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Errors returned by this package.
var (
	// ErrClosed is returned for operations on a namespace that was closed.
	ErrClosed = errors.New("netns: namespace closed")
	// ErrUnavailable is wrapped by Check when namespaces cannot be made here.
	ErrUnavailable = errors.New("netns: network namespaces unavailable")
)

// runDir is where `ip netns` keeps the bind mounts that name namespaces.
const runDir = "/run/netns"

// DefaultPrefix starts the names of namespaces made without Options.Prefix.
const DefaultPrefix = "pnpd"

// counter makes names unique within this process.
var counter atomic.Uint64

// CmdError is a failed `ip` command: its arguments, its error and its stderr.
type CmdError struct {
	Args   []string // arguments after "ip"
	Err    error
	Stderr string
}

func (e *CmdError) Error() string {
	msg := fmt.Sprintf("netns: ip %s: %v", strings.Join(e.Args, " "), e.Err)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// Unwrap returns the error of the command (an *exec.ExitError, a context
// error or a start failure).
func (e *CmdError) Unwrap() error { return e.Err }

// ip runs `ip args...` and returns its stdout.
func ip(ctx context.Context, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, &CmdError{Args: args, Err: err, Stderr: strings.TrimSpace(stderr.String())}
	}
	return stdout.Bytes(), nil
}

// Check reports, wrapping ErrUnavailable, why namespaces cannot be made by
// this process: not root, or no `ip` command.
func Check() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not running as root (uid %d)", ErrUnavailable, os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// UniqueName returns "<prefix>-<pid>-<n>" with n counting up in this process.
func UniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), counter.Add(1))
}

// NS is a named network namespace, as listed by `ip netns list`.
type NS struct {
	Name string

	mu     sync.Mutex
	closed bool
}

// New creates the namespace name (`ip netns add`) and brings its loopback up.
// It fails if a namespace of that name exists.
func New(ctx context.Context, name string) (*NS, error) {
	if name == "" || strings.ContainsAny(name, "/ \t\n") || name == "." || name == ".." {
		return nil, fmt.Errorf("netns: bad namespace name %q", name)
	}
	if _, err := ip(ctx, "netns", "add", name); err != nil {
		return nil, err
	}
	ns := &NS{Name: name}
	if _, err := ip(ctx, "-n", name, "link", "set", "lo", "up"); err != nil {
		_ = ns.Close()
		return nil, err
	}
	return ns, nil
}

// Path is the file that names the namespace (/run/netns/NAME).
func (ns *NS) Path() string { return filepath.Join(runDir, ns.Name) }

// Close deletes the namespace (`ip netns delete`); links with an end in it
// disappear with it. The kernel frees the namespace once no process and no
// socket uses it any more. Close is idempotent and safe for concurrent use.
func (ns *NS) Close() error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.closed {
		return nil
	}
	// Deleting must not be cut short by a cancelled context.
	_, err := ip(context.Background(), "netns", "delete", ns.Name)
	if err != nil {
		if _, statErr := os.Stat(ns.Path()); errors.Is(statErr, os.ErrNotExist) {
			err = nil // gone already
		}
	}
	if err == nil {
		ns.closed = true
	}
	return err
}

// Command returns a command that runs name with args inside the namespace
// (`ip netns exec NS name args...`). ip execs the command in place, so
// signals sent to cmd.Process reach it directly.
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// IP runs `ip -n NS args...` and returns its stdout.
func (ns *NS) IP(ctx context.Context, args ...string) ([]byte, error) {
	return ip(ctx, append([]string{"-n", ns.Name}, args...)...)
}

// Do runs fn on an OS thread switched into the namespace and returns its
// error. Sockets that fn creates stay in the namespace. fn must not start
// goroutines that expect to be in the namespace; it may block.
func (ns *NS) Do(fn func() error) error {
	ns.mu.Lock()
	closed := ns.closed
	ns.mu.Unlock()
	if closed {
		return ErrClosed
	}
	target, err := os.Open(ns.Path())
	if err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	defer target.Close()

	errc := make(chan error, 1)
	go func() {
		// This goroutine owns the thread while it is in the namespace. If
		// switching back fails, it exits still locked and the runtime
		// discards the thread instead of reusing it elsewhere.
		runtime.LockOSThread()
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		orig, err := os.Open(self)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: setns %s: %w", ns.Name, err)
			return
		}
		fnErr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(fnErr, fmt.Errorf("netns: setns back from %s: %w", ns.Name, err))
			return // thread stays locked and is thrown away
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

// ListenUDP is net.ListenUDP inside the namespace.
func (ns *NS) ListenUDP(network string, laddr *net.UDPAddr) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := ns.Do(func() (err error) {
		c, err = net.ListenUDP(network, laddr)
		return err
	})
	return c, err
}

// ListenPacket is net.ListenPacket inside the namespace; address must be
// numeric. "ip4:udp" opens a raw socket that sees every UDP datagram the
// namespace receives.
func (ns *NS) ListenPacket(network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := ns.Do(func() (err error) {
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}

// Listen is net.Listen inside the namespace; address must be numeric.
func (ns *NS) Listen(network, address string) (net.Listener, error) {
	var l net.Listener
	err := ns.Do(func() (err error) {
		l, err = net.Listen(network, address)
		return err
	})
	return l, err
}

// DialContext is (&net.Dialer{}).DialContext inside the namespace; address
// must be numeric.
func (ns *NS) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// InterfaceByName is net.InterfaceByName inside the namespace.
func (ns *NS) InterfaceByName(name string) (*net.Interface, error) {
	var ifi *net.Interface
	err := ns.Do(func() (err error) {
		ifi, err = net.InterfaceByName(name)
		return err
	})
	return ifi, err
}

// List returns the names of the namespaces `ip netns list` shows.
func List(ctx context.Context) ([]string, error) {
	out, err := ip(ctx, "netns", "list")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		// "name" or "name (id: 3)"
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// RemoveStale deletes the namespaces named "<prefix>-<pid>-..." whose
// process pid no longer runs, as left by a process killed before it could
// close them, and returns their names.
func RemoveStale(ctx context.Context, prefix string) ([]string, error) {
	names, err := List(ctx)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, name := range names {
		rest, ok := strings.CutPrefix(name, prefix+"-")
		if !ok {
			continue
		}
		pidText, _, ok := strings.Cut(rest, "-")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := unix.Kill(pid, 0); err == nil || errors.Is(err, unix.EPERM) {
			continue // still running
		}
		if _, err := ip(ctx, "netns", "delete", name); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}

// Options configure NewPair. The zero value is usable.
type Options struct {
	// Prefix starts the namespace names; default DefaultPrefix.
	Prefix string
	// Subnet is shared by the two ends: A gets its first host address, B
	// the second. Default 198.18.0.0/24. IPv4 only.
	Subnet netip.Prefix
	// NoMulticastRoute leaves out the 224.0.0.0/4 routes.
	NoMulticastRoute bool
}

// Pair is two namespaces joined by a veth link.
type Pair struct {
	A, B         *NS
	AIf, BIf     string       // the link's interface name in A and in B
	AAddr, BAddr netip.Prefix // their addresses, with the subnet's length
}

// NewPair creates two namespaces with a veth link between them, addressed
// from opts.Subnet, everything up. On error, whatever was made is removed.
func NewPair(ctx context.Context, opts Options) (p *Pair, err error) {
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	subnet := opts.Subnet
	if !subnet.IsValid() {
		subnet = netip.MustParsePrefix("198.18.0.0/24")
	}
	subnet = subnet.Masked()
	if !subnet.Addr().Is4() || subnet.Bits() > 30 {
		return nil, fmt.Errorf("netns: subnet %s: need IPv4 with room for two hosts", subnet)
	}
	aAddr := subnet.Addr().Next()
	bAddr := aAddr.Next()

	n := counter.Add(1)
	pid := os.Getpid()
	p = &Pair{
		AIf:   fmt.Sprintf("pn%d-%da", pid, n),
		BIf:   fmt.Sprintf("pn%d-%db", pid, n),
		AAddr: netip.PrefixFrom(aAddr, subnet.Bits()),
		BAddr: netip.PrefixFrom(bAddr, subnet.Bits()),
	}
	if len(p.AIf) > unix.IFNAMSIZ-1 {
		return nil, fmt.Errorf("netns: interface name %q longer than %d bytes", p.AIf, unix.IFNAMSIZ-1)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, p.Close())
			p = nil
		}
	}()
	base := fmt.Sprintf("%s-%d-%d", prefix, pid, n)
	if p.A, err = New(ctx, base+"a"); err != nil {
		return p, err
	}
	if p.B, err = New(ctx, base+"b"); err != nil {
		return p, err
	}
	// Made inside A with its peer inside B: the link never appears in the
	// caller's namespace.
	if _, err = p.A.IP(ctx, "link", "add", p.AIf, "type", "veth", "peer", "name", p.BIf, "netns", p.B.Name); err != nil {
		return p, err
	}
	for _, side := range []struct {
		ns   *NS
		ifc  string
		addr netip.Prefix
	}{{p.A, p.AIf, p.AAddr}, {p.B, p.BIf, p.BAddr}} {
		if _, err = side.ns.IP(ctx, "addr", "add", side.addr.String(), "dev", side.ifc); err != nil {
			return p, err
		}
		if _, err = side.ns.IP(ctx, "link", "set", side.ifc, "up"); err != nil {
			return p, err
		}
		if !opts.NoMulticastRoute {
			if _, err = side.ns.IP(ctx, "route", "add", "224.0.0.0/4", "dev", side.ifc); err != nil {
				return p, err
			}
		}
	}
	return p, nil
}

// Close deletes both namespaces, and with them the link. It is idempotent.
func (p *Pair) Close() error {
	var errs []error
	for _, ns := range []*NS{p.A, p.B} {
		if ns != nil {
			errs = append(errs, ns.Close())
		}
	}
	return errors.Join(errs...)
}
