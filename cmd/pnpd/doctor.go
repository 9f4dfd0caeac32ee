package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pnpd/pnpd/ami"
	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/fail2ban"
	"github.com/pnpd/pnpd/pkg/netio"
	"github.com/pnpd/pnpd/pkg/pbx"
	"github.com/pnpd/pnpd/pkg/resolve"
)

// doctor runs each check in turn and prints one finding per line: ok,
// warn or FAIL, and for the last two what to change.
type doctor struct {
	out          io.Writer
	fails, warns int
}

func (d *doctor) ok(what, format string, args ...any) {
	fmt.Fprintf(d.out, "ok    %s: %s\n", what, fmt.Sprintf(format, args...))
}

func (d *doctor) warn(what, msg, fix string) {
	d.warns++
	fmt.Fprintf(d.out, "warn  %s: %s\n", what, msg)
	if fix != "" {
		fmt.Fprintf(d.out, "      fix: %s\n", fix)
	}
}

func (d *doctor) fail(what, msg, fix string) {
	d.fails++
	fmt.Fprintf(d.out, "FAIL  %s: %s\n", what, msg)
	if fix != "" {
		fmt.Fprintf(d.out, "      fix: %s\n", fix)
	}
}

func doctorCmd(args []string, stdout, stderr io.Writer) (int, error) {
	fs := newFlagSet("doctor", stderr)
	cfgPath := fs.String("config", "", "configuration file (default "+config.DefaultPath+")")
	if err := parseFlags(fs, args); err != nil {
		return 0, err
	}
	d := &doctor{out: stdout}
	path := *cfgPath
	if path == "" {
		path = config.DefaultPath
	}
	cfg, err := config.Load(path)
	switch {
	case err != nil && *cfgPath == "" && errors.Is(err, os.ErrNotExist):
		d.warn("config", fmt.Sprintf("%s does not exist: pnpd serve would only observe", path),
			"write "+path+" (see examples/pnpd.toml) or pass -config FILE")
		cfg = config.Default()
	case err != nil:
		d.fail("config", err.Error(), "correct the key named above")
		cfg = nil
	default:
		d.ok("config", "%s: %d rule(s), default %q", path, len(cfg.Resolve.Rules), resolve.Redact(cfg.Resolve.Default))
		for _, w := range cfg.Warnings {
			d.warn("config", w, "")
		}
	}
	var pbxSIP *bool
	var chosen []netio.Candidate
	if cfg != nil {
		if cfg.AMI.Enabled {
			pbxSIP = d.checkAMI(cfg.AMI)
		} else {
			d.warn("ami", "no [ami] section: URLs come from the file only",
				"add [ami] with the manager.conf user of examples/manager.conf to take decisions from the PBX database")
		}
		chosen = d.checkNetwork(cfg)
	}
	beside := cfg
	if beside == nil {
		beside = config.Default()
	}
	d.checkBeside(beside, chosen, pbxSIP, "/")
	fmt.Fprintf(stdout, "\n%d failure(s), %d warning(s)\n", d.fails, d.warns)
	if d.fails > 0 {
		return 1, nil
	}
	return 0, nil
}

// checkAMI logs in and tries every action pnpd needs. It returns whether
// the PBX has a SIP stack loaded, or nil when it could not tell.
func (d *doctor) checkAMI(c config.AMI) (pbxSIP *bool) {
	log, _ := newLogger(io.Discard, "error")
	link := startAMI(c, log)
	defer link.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := link.login(ctx, c); err != nil {
		d.fail("ami login", err.Error(), fmt.Sprintf("check that Asterisk runs and manager.conf has [general] enabled=yes and bindaddr/port matching %s, "+
			"and a user [%s] whose secret matches and whose permit= covers this host (see examples/manager.conf); then \"asterisk -rx 'manager reload'\"",
			c.Address, c.Username))
		return nil
	}
	d.ok("ami login", "%s@%s", c.Username, c.Address)
	a := link.c
	if pbxOnThisHost(c.Address) {
		pbxSIP = d.checkPBXSIP(ctx, a, c)
	} else {
		d.ok("pbx sip", "the PBX is on another host (%s): its SIP stack has no bearing on this host's UDP ports", c.Address)
	}
	perm := func(what, action, class string, err error) bool {
		var ae *ami.Error
		switch {
		case err == nil:
			d.ok(what, "%s allowed", action)
			return true
		case errors.As(err, &ae) && strings.Contains(strings.ToLower(ae.Message), "permission"):
			d.fail(what, err.Error(), fmt.Sprintf("give the user [%s] write = %s in manager.conf", c.Username, class))
		default:
			d.fail(what, err.Error(), "")
		}
		return false
	}
	entries, err := a.DBGetTree(ctx, c.Family, "")
	if perm("read the family", "DBGetTree", "system (or reporting)", err) {
		s := pbx.SnapshotOf(entries)
		d.ok("family "+c.Family, "%d key(s): %d phone(s), %d tenant(s), default/url %v", s.Entries, len(s.MACs), len(s.Tenants), s.Default != "")
		for name, t := range s.Tenants {
			if t.URL == "" && len(t.Brands) == 0 {
				d.warn("family "+c.Family, fmt.Sprintf("tenant %q has no URL: its phones fail", name),
					fmt.Sprintf("pnpd ctl tenant set %s URL", name))
			}
		}
		for mac, v := range s.MACs {
			if !strings.Contains(v, "://") && s.Tenants[v] == nil {
				d.warn("family "+c.Family, fmt.Sprintf("mac/%s names tenant %q, which has no URL: the phone fails", mac, v),
					fmt.Sprintf("pnpd ctl tenant set %s URL", v))
			}
		}
	}
	probe := "doctor/probe"
	err = a.DBPut(ctx, c.Family, probe, "1")
	wrote := perm("write seen records", "DBPut", "system", err)
	sub, stop := a.Subscribe("UserEvent", 16)
	defer stop()
	err = a.UserEvent(ctx, "PnpDoctor")
	if perm("send UserEvents", "UserEvent", "user", err) {
		got := false
		wait := time.NewTimer(2 * time.Second)
	loop:
		for {
			select {
			case ev := <-sub:
				if ev.Get("UserEvent") == "PnpDoctor" {
					got = true
					break loop
				}
			case <-wait.C:
				break loop
			}
		}
		wait.Stop()
		if got {
			d.ok("receive UserEvents", "PnpDoctor came back: PnpReload will be heard")
		} else {
			d.fail("receive UserEvents", "a UserEvent sent did not come back: pnpd would not hear PnpReload",
				fmt.Sprintf("give the user [%s] read = user (with system) in manager.conf", c.Username))
		}
	}
	if c.Lookup != "" {
		d.checkLookup(ctx, a, c, wrote, probe)
	}
	if wrote {
		if err := a.DBDel(ctx, c.Family, probe); err != nil {
			d.warn("cleanup", fmt.Sprintf("DBDel %s/%s: %v", c.Family, probe, err), fmt.Sprintf("asterisk -rx 'database del %s %s'", c.Family, probe))
		}
	}
	return pbxSIP
}

// checkPBXSIP asks the PBX whether it has a SIP stack loaded, as serve's
// mode "auto" does (pbx.SIPLoaded: AMI ModuleCheck, which answers Success
// for a loaded module and "Module not loaded" otherwise, and needs write
// class system).
func (d *doctor) checkPBXSIP(ctx context.Context, a *ami.Client, c config.AMI) *bool {
	loaded, err := pbx.SIPLoaded(ctx, a)
	var ae *ami.Error
	switch {
	case err == nil && loaded:
		d.ok("pbx sip", "ModuleCheck: a SIP stack (res_pjsip.so or chan_sip.so) is loaded")
	case err == nil:
		d.ok("pbx sip", "ModuleCheck: neither res_pjsip.so nor chan_sip.so is loaded: the PBX has no SIP stack")
	case errors.As(err, &ae) && strings.Contains(strings.ToLower(ae.Message), "permission"):
		d.warn("pbx sip", err.Error()+": mode \"auto\" cannot ask whether the PBX has a SIP stack, and assumes it has one when Asterisk runs here",
			fmt.Sprintf("give the user [%s] write = system in manager.conf", c.Username))
		return nil
	default:
		d.warn("pbx sip", err.Error()+": mode \"auto\" cannot ask whether the PBX has a SIP stack", "")
		return nil
	}
	return &loaded
}

// checkLookup evaluates the lookup for a made-up phone. An empty answer is
// expected then, unless Asterisk refuses privileged functions over AMI
// (live_dangerously off): DB() of the probe key, privileged too, tells.
func (d *doctor) checkLookup(ctx context.Context, a *ami.Client, c config.AMI, probed bool, probe string) {
	expr := resolve.ExpandLookup(c.Lookup, resolve.Request{MAC: "000000000000", Brand: "yealink"})
	v, err := a.Getvar(ctx, expr)
	var ae *ami.Error
	switch {
	case errors.As(err, &ae) && strings.Contains(strings.ToLower(ae.Message), "permission"):
		d.fail("lookup", fmt.Sprintf("Getvar %s: %v", expr, err), fmt.Sprintf("give the user [%s] write = reporting (with system,user) in manager.conf", c.Username))
		return
	case err != nil:
		d.fail("lookup", fmt.Sprintf("Getvar %s: %v", expr, err), "check the expression in [ami] lookup")
		return
	case v != "":
		d.ok("lookup", "Getvar %s = %q", expr, v)
		return
	}
	if !probed {
		d.warn("lookup", fmt.Sprintf("Getvar %s is empty, and whether Asterisk allows privileged functions over AMI cannot be told without DBPut", expr),
			"if the lookup stays empty for phones it should know, set live_dangerously = yes in the [options] of asterisk.conf")
		return
	}
	pv, perr := a.Getvar(ctx, "DB("+c.Family+"/"+probe+")")
	if perr == nil && pv == "1" {
		d.ok("lookup", "Getvar %s is empty for a made-up phone, as expected; privileged functions are allowed over AMI", expr)
		return
	}
	d.fail("lookup", fmt.Sprintf("Getvar %s is empty, and Asterisk refuses privileged functions over AMI (DB() answered empty too): the lookup answers empty for every phone", expr),
		"set live_dangerously = yes in the [options] of asterisk.conf (func_odbc functions are privileged), then restart Asterisk")
}

// checkNetwork checks the interfaces and the multicast route, and returns
// the interfaces serve would take (nil when none).
func (d *doctor) checkNetwork(cfg *config.Config) []netio.Candidate {
	chosen, skipped, err := netio.Choose(cfg.SIP.Interfaces)
	if err != nil {
		d.fail("interfaces", err.Error(), "name interfaces that are up, multicast-capable and have an IPv4 address in [sip] interfaces")
		return nil
	}
	if len(chosen) == 0 {
		d.fail("interfaces", "none is up, multicast-capable and has an IPv4 address ("+strings.Join(skipped, "; ")+")",
			"bring the phones' interface up with an IPv4 address, or name it in [sip] interfaces")
		return nil
	}
	var names []string
	for _, c := range chosen {
		names = append(names, c.Name+" "+c.Prefix.String())
	}
	d.ok("interfaces", "%s", strings.Join(names, ", "))
	if !multicastRoute() {
		d.warn("multicast route", "no route for 224.0.0.0/4 and no default route",
			"pnpd joins per interface and does not need one to answer, but tools such as pnpd simulate do: ip route add 224.0.0.0/4 dev IFACE")
	} else {
		d.ok("multicast route", "present")
	}
	return chosen
}

// multicastRoute reports whether the main table has a route that covers
// 224.0.0.0/4 (or a default route).
func multicastRoute() bool {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 8 || fs[0] == "Iface" {
			continue
		}
		dst, err1 := strconv.ParseUint(fs[1], 16, 32)
		mask, err2 := strconv.ParseUint(fs[7], 16, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		// The kernel writes addresses in host order (little-endian on
		// the machines pnpd runs on): 224.0.0.0 reads 0x000000E0.
		const group = 0x000000e0
		if group&mask == dst&mask {
			return true
		}
	}
	return false
}

// checkBeside recognises the set-up beside a PBX on this host: who holds
// the group's port, the mode [sip] mode gives here, whether what serve
// would open in that mode opens, whether the PBX would see the phones'
// SUBSCRIBEs, and whether its answers to them would feed fail2ban. chosen
// is nil when the interfaces failed; pbxSIP is what the PBX said over AMI.
// root is "/" but in tests.
func (d *doctor) checkBeside(cfg *config.Config, chosen []netio.Candidate, pbxSIP *bool, root string) {
	h, err := netio.ProbeHost(cfg.SIP.Group)
	if err != nil {
		d.warn("host", err.Error(), "let pnpd read /proc/self/net: without it auto never takes the group's port")
	}
	holders := d.checkHolders(h)
	h.PBXSIP = pbxSIP
	h.PBXHere = cfg.AMI.Enabled && pbxOnThisHost(cfg.AMI.Address)
	mode, usable := d.checkMode(cfg.SIP.Mode, h)
	// Read the memberships before the receive check joins anything.
	joined, err := netio.GroupJoined(cfg.SIP.Group.Addr())
	if err != nil {
		d.warn("group members", err.Error(), "")
	}
	if usable && chosen != nil {
		mode = d.checkReceive(cfg, chosen, mode, cfg.SIP.Mode == string(netio.ModeAuto))
	}
	sees := d.checkPBXSees(cfg.SIP.Group, holders, mode, joined)
	d.checkFail2ban(root, sees, phoneSubnets(cfg, chosen))
}

// checkHolders names who holds the group's port (IPv4 and IPv6, from
// ProbeHost) and returns them, sorted as printed.
func (d *doctor) checkHolders(h netio.Host) []netio.Holder {
	what := fmt.Sprintf("udp %d", h.Port)
	holders := h.Holders
	if h.Unknown != nil && len(holders) == 0 {
		return nil // ProbeHost's warning said why
	}
	if len(holders) == 0 {
		d.ok(what, "nobody holds it (IPv4 or IPv6)")
		return nil
	}
	slices.SortFunc(holders, func(a, b netio.Holder) int { return a.Local.Compare(b.Local) })
	for _, x := range holders {
		var kind string
		switch {
		case x.Wildcard() && x.Local.Addr().Is4():
			kind = "IPv4 wildcard: the port on every address, the group's included"
		case x.Wildcard():
			kind = "IPv6 wildcard: unless the socket is IPv6-only, the port on every IPv4 address too, the group's included"
		case x.Local.Addr().Is4():
			kind = "IPv4 unicast: the group address can be bound beside it"
		default:
			kind = "IPv6 unicast: no bearing on the IPv4 group"
		}
		d.ok(what, "%s holds %s (%s)", x.Owner(), x.Local, kind)
	}
	return holders
}

// capNetRawFix says how pnpd serve gets CAP_NET_RAW.
const capNetRawFix = "grant pnpd serve CAP_NET_RAW (examples/pnpd.service: CapabilityBoundingSet=CAP_NET_RAW and AmbientCapabilities=CAP_NET_RAW)"

// unicastFix says how the PBX's transport leaves the group's port free.
func unicastFix(port int) string {
	return fmt.Sprintf("bind the PBX's SIP transport to a unicast address (pjsip.conf [transport-udp] bind=ADDR:%d, then restart Asterisk)", port)
}

// doctorOwnCaps is added to the fixes that depend on CAP_NET_RAW: doctor judges
// by its own capabilities, which may not be serve's.
const doctorOwnCaps = " (doctor judges by its own capabilities: run it as pnpd serve runs)"

// checkMode says which mode [sip] mode gives on host h, and why. It
// returns that mode ("" when there is none) and whether serve could open
// it here.
func (d *doctor) checkMode(name string, h netio.Host) (netio.Mode, bool) {
	const what = "sip mode"
	m, err := netio.ParseMode(name)
	if err != nil {
		d.fail(what, err.Error(), "set [sip] mode to auto, bind, raw or packet")
		return "", false
	}
	needsCap := ""
	if h.CapNetRaw {
		needsCap = "; pnpd serve needs CAP_NET_RAW for it (this doctor has it)"
	}
	switch m {
	case netio.ModeAuto:
		c, err := netio.ChooseMode(h)
		if err != nil {
			msg := strings.TrimPrefix(err.Error(), "netio: ")
			fix := capNetRawFix + " for packet mode, or " + unicastFix(h.Port) + " so that bind mode is safe"
			if i := strings.LastIndex(msg, ": grant "); i >= 0 {
				msg, fix = msg[:i], msg[i+2:]
			}
			d.fail(what, "auto finds no safe mode: "+msg, fix+doctorOwnCaps)
			return "", false
		}
		msg := fmt.Sprintf("auto picks %s: %s", c.Mode, c.Why)
		if c.Better != "" {
			msg += "; better: " + c.Better
		}
		if c.Mode != netio.ModeBind {
			msg += needsCap
		}
		d.ok(what, "%s", msg)
		return c.Mode, true
	case netio.ModeBind:
		switch verdict, why := netio.BindVerdict(h); verdict {
		case netio.BindBlocked, netio.BindDuplicate:
			d.fail(what, "bind, but "+why+"; had pnpd held the port first, a PBX's next start or reload could not bind its SIP transport on every address",
				fmt.Sprintf("set [sip] mode = \"auto\" (or \"packet\") and %s, or %s", capNetRawFix, unicastFix(h.Port)))
			return m, false
		case netio.BindRisky:
			d.warn(what, "bind: "+why, fmt.Sprintf("%s, or set [sip] mode = \"auto\" and %s", unicastFix(h.Port), capNetRawFix))
		default:
			d.ok(what, "bind: %s", why)
		}
		return m, true
	default: // raw, packet
		if !h.CapNetRaw {
			d.fail(what, fmt.Sprintf("%s needs CAP_NET_RAW, which this process lacks", m), capNetRawFix+doctorOwnCaps)
			return m, false
		}
		if m == netio.ModeRaw {
			d.ok(what, "raw: a filtered raw UDP socket; pnpd holds nothing on UDP %d, but joins the group, so a PBX on the wildcard address sees the SUBSCRIBEs too%s", h.Port, needsCap)
		} else {
			d.ok(what, "packet: the link layer; pnpd holds nothing on UDP %d and joins nothing, so the PBX never sees the SUBSCRIBEs%s", h.Port, needsCap)
		}
		return m, true
	}
}

// checkReceive opens what serve would open in mode, and returns the mode
// serve would end up in (auto falls back from packet to raw when packet
// mode cannot work on an interface). Packet mode is tried without
// netio.Listen, which would send IGMP reports, and a leave at the end that
// could cut a running pnpd off from a snooping switch.
func (d *doctor) checkReceive(cfg *config.Config, chosen []netio.Candidate, mode netio.Mode, auto bool) netio.Mode {
	switch mode {
	case netio.ModeBind:
		l, err := netio.Listen(netio.Config{Mode: netio.ModeBind, Group: cfg.SIP.Group, Interfaces: chosen, Port: cfg.SIP.Port})
		if err != nil {
			d.fail("group join", err.Error(), "see who holds UDP "+strconv.Itoa(int(cfg.SIP.Group.Port()))+" above; pnpd must be able to bind the group address in bind mode")
			return mode
		}
		l.Close()
		d.ok("group join", "%s bound and joined on %d interface(s)", cfg.SIP.Group, len(chosen))
	case netio.ModeRaw:
		if err := netio.CheckSockets(mode, chosen); err != nil {
			d.fail("raw socket", err.Error(), socketFix(err))
			return mode
		}
		d.ok("raw socket", "a raw UDP socket opens")
	case netio.ModePacket:
		err := netio.CheckSockets(mode, chosen)
		switch {
		case errors.Is(err, netio.ErrNotEthernet) && auto:
			d.warn("packet sockets", err.Error()+": auto falls back to raw mode, in which a PBX on the wildcard address sees the SUBSCRIBEs too",
				"leave that interface out of [sip] interfaces, or "+unicastFix(int(cfg.SIP.Group.Port())))
			return d.checkReceive(cfg, chosen, netio.ModeRaw, false)
		case errors.Is(err, netio.ErrNotEthernet):
			d.fail("packet sockets", err.Error(), "leave that interface out of [sip] interfaces, or set [sip] mode = \"raw\"")
			return mode
		case err != nil:
			d.fail("packet sockets", err.Error(), socketFix(err))
			return mode
		}
		d.ok("packet sockets", "an AF_PACKET socket and a raw IGMP socket open; %d Ethernet interface(s)", len(chosen))
	}
	return mode
}

// socketFix says what to change when netio.CheckSockets failed with err.
func socketFix(err error) string {
	switch {
	case errors.Is(err, unix.EAFNOSUPPORT):
		return "allow the address family: systemd RestrictAddressFamilies= must list AF_PACKET (packet mode) besides AF_INET, AF_NETLINK and AF_UNIX"
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return capNetRawFix
	}
	return ""
}

// checkPBXSees says whether a socket holding the group's port on every
// address would receive the phones' SUBSCRIBEs: it does once anything on
// the host has joined the group (joined lists where), as bind and raw mode
// do. It returns whether it would.
func (d *doctor) checkPBXSees(group netip.AddrPort, holders []netio.Holder, mode netio.Mode, joined []string) bool {
	const what = "pbx sees SUBSCRIBEs"
	var wild []string
	for _, x := range holders {
		if x.Wildcard() {
			wild = append(wild, x.String())
		}
	}
	if len(wild) == 0 {
		d.ok(what, "no: nothing holds UDP %d on every address (a SIP transport bound to a unicast address never receives the group)", group.Port())
		return false
	}
	var because []string
	if len(joined) > 0 {
		because = append(because, fmt.Sprintf("this host has joined %s on %s", group.Addr(), strings.Join(joined, ", ")))
	}
	if mode == netio.ModeBind || mode == netio.ModeRaw {
		because = append(because, fmt.Sprintf("%s mode joins the group", mode))
	}
	if len(because) == 0 {
		msg := fmt.Sprintf("no: %s holds UDP %d on every address, but nothing here has joined %s", strings.Join(wild, ", "), group.Port(), group.Addr())
		if mode == netio.ModePacket {
			msg += ", and packet mode receives the group without joining it"
		}
		d.ok(what, "%s", msg)
		return false
	}
	d.warn(what, fmt.Sprintf("yes: %s holds UDP %d on every address and %s: it receives every phone's SUBSCRIBE too, and Asterisk answers each with 401 Unauthorized (logged as \"No matching endpoint found\") within a millisecond or two of it",
		strings.Join(wild, ", "), group.Port(), strings.Join(because, ", and ")),
		fmt.Sprintf("set [sip] mode = \"packet\" (it joins nothing, so the PBX never sees the SUBSCRIBEs; needs CAP_NET_RAW), or %s", unicastFix(int(group.Port()))))
	return true
}

// phoneSubnets are the phones' subnets: [sip] allow, else the subnets of
// the chosen interfaces.
func phoneSubnets(cfg *config.Config, chosen []netio.Candidate) []netip.Prefix {
	if len(cfg.SIP.Allow) > 0 {
		return cfg.SIP.Allow
	}
	var out []netip.Prefix
	for _, c := range chosen {
		if p := c.Prefix.Masked(); !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// checkFail2ban says whether fail2ban would ban phones for the PBX's 401s
// (sees: the PBX receives the SUBSCRIBEs), and what to change.
func (d *doctor) checkFail2ban(root string, sees bool, subnets []netip.Prefix) {
	const what = "fail2ban"
	st, err := fail2ban.Read(root)
	if err != nil {
		d.warn(what, err.Error(), "")
		return
	}
	if !st.Installed {
		d.ok(what, "not installed (no /etc/fail2ban)")
		return
	}
	running := "installed, not running now (no " + strings.Join(fail2ban.Sockets, " or ") + ")"
	if st.Socket != "" {
		running = "running (" + st.Socket + ")"
	}
	if len(st.Jails) == 0 {
		d.ok(what, "%s, no Asterisk jail enabled", running)
		return
	}
	var names []string
	for _, j := range st.Jails {
		names = append(names, fmt.Sprintf("[%s] (enabled in %s)", j.Name, j.File))
	}
	if !sees {
		d.ok(what, "%s, jail %s: the PBX does not see the phones' SUBSCRIBEs, so its log cannot feed it", running, strings.Join(names, ", "))
		return
	}
	var exposed []fail2ban.Jail
	var missing []string
	for _, j := range st.Jails {
		var m []string
		for _, p := range subnets {
			if !j.Ignores(p) {
				m = append(m, p.String())
			}
		}
		if len(m) > 0 {
			exposed = append(exposed, j)
			for _, s := range m {
				if !slices.Contains(missing, s) {
					missing = append(missing, s)
				}
			}
		}
	}
	if len(exposed) == 0 && len(subnets) > 0 {
		d.ok(what, "%s, jail %s: the PBX answers the phones 401, but the jail's ignoreip covers their subnets", running, strings.Join(names, ", "))
		return
	}
	if len(missing) == 0 {
		missing = []string{"PHONE-SUBNETS"}
	}
	j := st.Jails[0]
	if len(exposed) > 0 {
		j = exposed[0]
	}
	ignore := j.IgnoreIP
	if len(ignore) == 0 {
		ignore = []string{"127.0.0.1/8", "::1"}
	}
	d.warn(what, fmt.Sprintf("%s, jail %s: it bans on Asterisk's \"No matching endpoint found\", which the PBX logs for its 401 to every phone's SUBSCRIBE, so phones that retry (Grandstream sends 5 SUBSCRIBEs) can be banned from the PBX",
		running, strings.Join(names, ", ")),
		fmt.Sprintf("set [sip] mode = \"packet\" (the PBX then never sees the SUBSCRIBEs), or exempt the phones in the jail: [%s] ignoreip = %s in /etc/fail2ban/jail.local, then fail2ban-client reload",
			j.Name, strings.Join(append(slices.Clone(ignore), missing...), " ")))
}
