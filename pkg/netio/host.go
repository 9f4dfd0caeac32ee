package netio

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Holder is a socket bound to a UDP port in this network namespace.
type Holder struct {
	Local netip.AddrPort
	// Process is "name (pid N)", or "" when /proc does not tell (only
	// root, or the socket's owner, can read another process's descriptors).
	Process string
	PID     int // the process's, 0 when /proc does not tell
}

// Wildcard reports whether the socket is bound to 0.0.0.0 or ::, and so
// takes the port on every address, the group's included.
func (h Holder) Wildcard() bool { return h.Local.Addr().IsUnspecified() }

// Owner is Process, or a phrase saying it is unknown.
func (h Holder) Owner() string {
	if h.Process == "" {
		return "a process (run as root to see which)"
	}
	return h.Process
}

func (h Holder) String() string { return h.Owner() + " on " + h.Local.String() }

// procNet is this process's view of its network namespace's tables:
// /proc/self/net stays readable where /proc/net is hidden (a systemd unit
// with ProcSubset=pid).
const procNet = "/proc/self/net/"

// PortHolders lists the UDP sockets of this network namespace bound to
// port, IPv4 and IPv6, read from /proc/self/net/udp and udp6, with the
// process holding each when /proc/*/fd tells. A table it cannot read is an
// error (udp6 may be missing: IPv6 off), never "nobody holds it".
func PortHolders(port int) ([]Holder, error) { return portHolders(procNet, port) }

// HeldBy reports whether process pid holds a UDP socket bound to addr (in
// its own network namespace), with every holder of addr's port.
func HeldBy(pid int, addr netip.AddrPort) (bool, []Holder, error) {
	hs, err := PortHoldersOf(pid, int(addr.Port()))
	if err != nil {
		return false, nil, err
	}
	for _, h := range hs {
		if h.PID == pid && h.Local == addr {
			return true, hs, nil
		}
	}
	return false, hs, nil
}

// PortHoldersOf is PortHolders for the network namespace of process pid
// (/proc/PID/net), which may be another namespace than the caller's.
func PortHoldersOf(pid, port int) ([]Holder, error) {
	return portHolders(fmt.Sprintf("/proc/%d/net/", pid), port)
}

func portHolders(dir string, port int) ([]Holder, error) {
	inodes := map[string]netip.AddrPort{}
	if err := readUDPTable(dir+"udp", port, inodes); err != nil {
		return nil, fmt.Errorf("netio: who holds UDP %d: %w", port, err)
	}
	if err := readUDPTable(dir+"udp6", port, inodes); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("netio: who holds UDP %d: %w", port, err)
	}
	if len(inodes) == 0 {
		return nil, nil
	}
	owners := socketOwners(inodes)
	out := make([]Holder, 0, len(inodes))
	for ino, local := range inodes {
		h := owners[ino]
		h.Local = local
		out = append(out, h)
	}
	return out, nil
}

// readUDPTable adds the sockets of one /proc/net/udp* table bound to port
// to inodes.
func readUDPTable(name string, port int, inodes map[string]netip.AddrPort) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || fs[0] == "sl" {
			continue
		}
		local, ok := parseProcAddr(fs[1])
		if !ok || int(local.Port()) != port {
			continue
		}
		inodes[fs[9]] = local
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("netio: read %s: %w", name, err)
	}
	return nil
}

// parseProcAddr parses "0100007F:13C4" (IPv4) or the 32-digit IPv6 form:
// the address in 32-bit words of host byte order (little-endian on the
// machines pnpd runs on), the port in hex.
func parseProcAddr(s string) (netip.AddrPort, bool) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, false
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), true
}

// socketOwners maps socket inodes to their process (Holder's Process and
// PID) by reading /proc/*/fd.
func socketOwners(inodes map[string]netip.AddrPort) map[string]Holder {
	out := map[string]Holder{}
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range pids {
		fds, err := os.ReadDir(filepath.Join(dir, "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
			if err != nil || !strings.HasPrefix(target, "socket:[") {
				continue
			}
			ino := strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")
			if _, ok := inodes[ino]; ok {
				pid, _ := strconv.Atoi(filepath.Base(dir))
				out[ino] = Holder{Process: fmt.Sprintf("%s (pid %d)", processName(dir), pid), PID: pid}
			}
		}
	}
	return out
}

// ldValueOptions are the options of the dynamic loader (ld.so) that take a
// value.
var ldValueOptions = map[string]bool{
	"--library-path": true, "--inhibit-rpath": true, "--audit": true, "--preload": true,
	"--argv0": true, "--glibc-hwcaps-prepend": true, "--glibc-hwcaps-mask": true,
}

// processName is the name of the process at dir (/proc/PID): its comm,
// unless it was started through the dynamic loader (ld-linux...), whose
// name says nothing; then the base name of the program the loader ran.
func processName(dir string) string {
	comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
	name := strings.TrimSpace(string(comm))
	if !strings.HasPrefix(name, "ld-linux") && !strings.HasPrefix(name, "ld.so") {
		return name
	}
	cmdline, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	for i := 1; i < len(args); i++ {
		switch a := args[i]; {
		case ldValueOptions[a]:
			i++ // the option's value
		case strings.HasPrefix(a, "-"):
		default:
			return filepath.Base(a)
		}
	}
	return name
}

// AsteriskHere reports whether an Asterisk runs in this network namespace:
// its control socket (asterisk.ctl) is listed in /proc/self/net/unix,
// which shows this namespace's sockets to any user.
func AsteriskHere() (bool, error) {
	b, err := os.ReadFile(procNet + "unix")
	if err != nil {
		return false, fmt.Errorf("netio: is Asterisk running: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasSuffix(line, "/asterisk.ctl") {
			return true, nil
		}
	}
	return false, nil
}

// capNetRaw is CAP_NET_RAW's bit in the capability sets.
const capNetRaw = 13

// HasCapNetRaw reports whether this process has CAP_NET_RAW in its
// effective set (read from /proc/self/status), which raw and packet mode
// need.
func HasCapNetRaw() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<capNetRaw) != 0
		}
	}
	return false
}

// GroupJoined lists the interfaces on which this network namespace has
// joined group at the IP level (bind and raw mode do, and so may other
// programs), from /proc/net/igmp. A PBX socket on the wildcard address
// receives the group's datagrams once the host joined it.
func GroupJoined(group netip.Addr) ([]string, error) {
	b, err := os.ReadFile(procNet + "igmp")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("netio: %w", err)
	}
	return parseProcIGMP(string(b), group), nil
}

// parseProcIGMP reads /proc/net/igmp: a line per interface ("2\teth0      :
// 1      V3"), then a tab-indented line per group it has joined, the group
// in hex as the kernel holds it in memory, little-endian on the machines
// pnpd runs on (224.0.1.75 is "4B0100E0").
func parseProcIGMP(text string, group netip.Addr) []string {
	a := group.As4()
	want := fmt.Sprintf("%02X%02X%02X%02X", a[3], a[2], a[1], a[0])
	var out []string
	dev := ""
	for i, line := range strings.Split(text, "\n") {
		if i == 0 || strings.TrimSpace(line) == "" {
			continue
		}
		if line[0] != '\t' && line[0] != ' ' {
			head, _, _ := strings.Cut(line, ":")
			dev = ""
			if fs := strings.Fields(head); len(fs) == 2 {
				dev = fs[1]
			}
			continue
		}
		fs := strings.Fields(line)
		if dev != "" && len(fs) > 0 && strings.EqualFold(fs[0], want) && !slices.Contains(out, dev) {
			out = append(out, dev)
		}
	}
	return out
}
