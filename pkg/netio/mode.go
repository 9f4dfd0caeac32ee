package netio

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Mode is how pnpd receives the group's datagrams.
type Mode string

// The modes. See the package documentation.
const (
	// ModeAuto chooses one of the others with ChooseMode.
	ModeAuto Mode = "auto"
	// ModeBind binds the group address and port and joins the group.
	ModeBind Mode = "bind"
	// ModeRaw reads a raw UDP socket through a kernel filter and joins the
	// group on a socket of its own: nothing is bound to the group's port,
	// but a PBX bound to the wildcard address sees the datagrams too.
	ModeRaw Mode = "raw"
	// ModePacket reads the link layer (AF_PACKET) with a link-layer
	// membership for the group and no IP-level join: the host's IP stack,
	// and so a PBX, never sees the datagrams. pnpd sends the IGMP reports.
	ModePacket Mode = "packet"
)

// Modes lists the modes in the order the configuration documents them.
func Modes() []Mode { return []Mode{ModeAuto, ModeBind, ModeRaw, ModePacket} }

// ParseMode parses a configured mode name.
func ParseMode(s string) (Mode, error) {
	for _, m := range Modes() {
		if string(m) == s {
			return m, nil
		}
	}
	names := make([]string, 0, 4)
	for _, m := range Modes() {
		names = append(names, string(m))
	}
	return "", fmt.Errorf("netio: unknown mode %q (want %s)", s, strings.Join(names, ", "))
}

// ErrNoSafeMode is returned by ChooseMode when every mode would either
// take the port from the PBX or needs a capability pnpd lacks.
var ErrNoSafeMode = errors.New("netio: no safe way to receive the group")

// Host is what ChooseMode knows of the host pnpd runs on.
type Host struct {
	Port    int // the group's port
	Group   netip.Addr
	Holders []Holder // sockets on Port in this network namespace
	// Asterisk: an Asterisk runs in this network namespace.
	Asterisk bool
	// PBXHere: the configuration names a PBX on this host ([ami] on a
	// loopback or local address), running or not.
	PBXHere bool
	// PBXSIP says whether the PBX has a SIP stack loaded, when the PBX
	// told (over AMI); nil when unknown.
	PBXSIP *bool
	// CapNetRaw: this process may open raw and packet sockets.
	CapNetRaw bool
	// Unknown says what could not be read; ChooseMode then never holds
	// the port.
	Unknown error
}

// ProbeHost reads the host's state for group from /proc. What it cannot
// read is in Host.Unknown (and returned). PBXHere and PBXSIP are left for
// the caller, who knows the PBX.
func ProbeHost(group netip.AddrPort) (Host, error) {
	h := Host{Port: int(group.Port()), Group: group.Addr(), CapNetRaw: HasCapNetRaw()}
	var errs []error
	var err error
	if h.Holders, err = PortHolders(h.Port); err != nil {
		errs = append(errs, err)
	}
	if h.Asterisk, err = AsteriskHere(); err != nil {
		errs = append(errs, err)
	}
	h.Unknown = errors.Join(errs...)
	return h, h.Unknown
}

// Choice is ChooseMode's answer.
type Choice struct {
	Mode Mode
	Why  string // what on the host decided it
	// Better names the change that would allow a mode needing less (bind
	// needs no capability and leaves IGMP to the kernel), or "" when Mode
	// is already bind.
	Better string
}

// remedy is what an operator can change so that a PBX keeps its port and
// pnpd receives the group.
func remedy(port int) string {
	return fmt.Sprintf("grant pnpd CAP_NET_RAW (systemd: AmbientCapabilities=CAP_NET_RAW) for packet mode, "+
		"or bind the PBX's SIP transport to a unicast address (pjsip.conf [transport-udp] bind=ADDR:%d) so that bind mode is safe", port)
}

// Verdict is what BindVerdict finds about holding the group's port.
type Verdict int

// Verdicts, from the safest.
const (
	// BindSafe: the PBX's SIP cannot want the port on every address.
	BindSafe Verdict = iota
	// BindRisky: nothing holds the port now, but a PBX here may bind it on
	// every address at its next start, and could not while pnpd holds it.
	BindRisky
	// BindBlocked: the port is taken on every address (the bind fails), or
	// the host could not be read.
	BindBlocked
	// BindDuplicate: the group address itself is held: another responder
	// receives the SUBSCRIBEs here, in every mode.
	BindDuplicate
)

// BindVerdict judges bind mode on h and says why.
func BindVerdict(h Host) (Verdict, string) {
	var wild, uni, grp []string
	for _, x := range h.Holders {
		switch {
		case x.Wildcard():
			wild = append(wild, x.String())
		case x.Local.Addr() == h.Group:
			grp = append(grp, x.String())
		default:
			uni = append(uni, x.String())
		}
	}
	switch {
	case len(grp) > 0:
		return BindDuplicate, fmt.Sprintf("%s already holds the group address: another responder (another pnpd?) receives the phones' SUBSCRIBEs here, and two would answer each phone",
			strings.Join(grp, ", "))
	case len(wild) > 0:
		return BindBlocked, fmt.Sprintf("%s holds UDP %d on every address: pnpd must not take the port, and that socket would answer the phones (401) if this host joined the group",
			strings.Join(wild, ", "), h.Port)
	case h.Unknown != nil:
		return BindBlocked, fmt.Sprintf("cannot tell who holds UDP %d (%v)", h.Port, h.Unknown)
	case len(uni) > 0:
		return BindSafe, fmt.Sprintf("UDP %d is held on unicast addresses only (%s): the group address binds beside them and they never see the group",
			h.Port, strings.Join(uni, ", "))
	case h.PBXSIP != nil && !*h.PBXSIP:
		return BindSafe, fmt.Sprintf("nothing holds UDP %d and the PBX says it has no SIP stack loaded", h.Port)
	case h.PBXSIP == nil && !h.Asterisk && !h.PBXHere:
		return BindSafe, fmt.Sprintf("nothing holds UDP %d, no Asterisk runs in this network namespace and [ami] names no PBX on this host", h.Port)
	}
	var why string
	switch {
	case h.PBXSIP != nil:
		why = fmt.Sprintf("nothing holds UDP %d now, but the PBX here has its SIP stack loaded", h.Port)
	case h.Asterisk:
		why = fmt.Sprintf("nothing holds UDP %d now, but Asterisk runs here", h.Port)
	default:
		why = fmt.Sprintf("nothing holds UDP %d now, but [ami] names a PBX on this host, which does not answer", h.Port)
	}
	return BindRisky, why + ": holding the port could keep its SIP transport from binding at its next start"
}

// ChooseMode picks the safest way to receive the group on h. pnpd holds
// the group's port (bind) only when BindVerdict finds it safe; otherwise
// it takes packet mode, which takes nothing from the PBX and hides the
// datagrams from it. Raw mode is never chosen here: it is the fallback
// when packet mode cannot open (see Listen's errors).
func ChooseMode(h Host) (Choice, error) {
	verdict, why := BindVerdict(h)
	if verdict == BindSafe {
		return Choice{Mode: ModeBind, Why: why}, nil
	}
	var better string
	switch {
	case verdict == BindDuplicate:
		return Choice{}, fmt.Errorf("%w: %s", ErrNoSafeMode, why)
	case h.Unknown != nil:
		better = "let pnpd read /proc/self/net"
	case verdict == BindBlocked:
		better = fmt.Sprintf("bind the PBX's SIP transport to a unicast address (pjsip.conf [transport-udp] bind=ADDR:%d): then bind mode, which needs no capability", h.Port)
	default:
		better = fmt.Sprintf("if this PBX never takes UDP %d on every address, [sip] mode = \"bind\", which needs no capability", h.Port)
	}
	if !h.CapNetRaw {
		err := fmt.Errorf("%w: %s, and without CAP_NET_RAW pnpd cannot receive without holding the port: %s", ErrNoSafeMode, why, remedy(h.Port))
		if verdict == BindRisky {
			err = fmt.Errorf("%w; or, if this PBX never takes UDP %d on every address, set [sip] mode = \"bind\"", err, h.Port)
		}
		return Choice{}, err
	}
	return Choice{Mode: ModePacket, Why: why + "; packet mode takes nothing from it and hides the SUBSCRIBEs from it", Better: better}, nil
}
