package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pnpd/pnpd/ami"
	"github.com/pnpd/pnpd/pkg/config"
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
	if cfg != nil {
		if cfg.AMI.Enabled {
			d.checkAMI(cfg.AMI)
		} else {
			d.warn("ami", "no [ami] section: URLs come from the file only",
				"add [ami] with the manager.conf user of examples/manager.conf to take decisions from the PBX database")
		}
		d.checkNetwork(cfg)
	}
	d.checkPort5060()
	fmt.Fprintf(stdout, "\n%d failure(s), %d warning(s)\n", d.fails, d.warns)
	if d.fails > 0 {
		return 1, nil
	}
	return 0, nil
}

// checkAMI logs in and tries every action pnpd needs.
func (d *doctor) checkAMI(c config.AMI) {
	log, _ := newLogger(io.Discard, "error")
	link := startAMI(c, log)
	defer link.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := link.login(ctx, c); err != nil {
		d.fail("ami login", err.Error(), fmt.Sprintf("check that Asterisk runs and manager.conf has [general] enabled=yes and bindaddr/port matching %s, "+
			"and a user [%s] whose secret matches and whose permit= covers this host (see examples/manager.conf); then \"asterisk -rx 'manager reload'\"",
			c.Address, c.Username))
		return
	}
	d.ok("ami login", "%s@%s", c.Username, c.Address)
	a := link.c
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

// checkNetwork checks the interfaces, the multicast route and the join.
func (d *doctor) checkNetwork(cfg *config.Config) {
	chosen, skipped, err := netio.Choose(cfg.SIP.Interfaces)
	if err != nil {
		d.fail("interfaces", err.Error(), "name interfaces that are up, multicast-capable and have an IPv4 address in [sip] interfaces")
		return
	}
	if len(chosen) == 0 {
		d.fail("interfaces", "none is up, multicast-capable and has an IPv4 address ("+strings.Join(skipped, "; ")+")",
			"bring the phones' interface up with an IPv4 address, or name it in [sip] interfaces")
		return
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
	l, err := netio.Listen(netio.Config{Group: cfg.SIP.Group, Interfaces: chosen, Port: cfg.SIP.Port})
	if err != nil {
		d.fail("group join", err.Error(), "see who holds UDP "+strconv.Itoa(int(cfg.SIP.Group.Port()))+" below; pnpd must be able to bind the group address")
		return
	}
	l.Close()
	d.ok("group join", "%s joined on %d interface(s)", cfg.SIP.Group, len(chosen))
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

// checkPort5060 names who holds UDP port 5060 on this host.
func (d *doctor) checkPort5060() {
	holders := udpHolders(5060)
	if len(holders) == 0 {
		d.ok("udp 5060", "nobody holds it")
		return
	}
	for _, h := range holders {
		msg := fmt.Sprintf("%s holds %s", h.proc, h.local)
		if strings.HasPrefix(h.local, "0.0.0.0:") && strings.Contains(h.proc, "asterisk") {
			d.warn("udp 5060", msg+": Asterisk's SIP transport on the wildcard address also receives the phones' multicast SUBSCRIBEs once anything on this host joins the group, and answers them 401",
				"bind the PJSIP transport to a unicast address (pjsip.conf [transport-udp] bind=ADDR:5060), so pnpd can take the group address beside it")
			continue
		}
		d.ok("udp 5060", "%s", msg)
	}
}

type holder struct{ local, proc string }

// udpHolders lists the sockets bound to UDP port on IPv4, with the process
// that holds each (when /proc tells).
func udpHolders(port int) []holder {
	f, err := os.Open("/proc/net/udp")
	if err != nil {
		return nil
	}
	defer f.Close()
	inodes := map[string]string{} // inode -> local address
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || fs[0] == "sl" {
			continue
		}
		addr, p, ok := strings.Cut(fs[1], ":")
		if !ok {
			continue
		}
		pn, err := strconv.ParseUint(p, 16, 16)
		if err != nil || int(pn) != port {
			continue
		}
		a, err := strconv.ParseUint(addr, 16, 32)
		if err != nil {
			continue
		}
		local := fmt.Sprintf("%d.%d.%d.%d:%d", a&0xff, a>>8&0xff, a>>16&0xff, a>>24, pn)
		inodes[fs[9]] = local
	}
	var out []holder
	procs := socketOwners(inodes)
	for ino, local := range inodes {
		p := procs[ino]
		if p == "" {
			p = "a process (unknown: run as root to see which)"
		}
		out = append(out, holder{local, p})
	}
	return out
}

// socketOwners maps socket inodes to "name (pid N)" by reading /proc/*/fd.
func socketOwners(inodes map[string]string) map[string]string {
	out := map[string]string{}
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
				comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
				out[ino] = fmt.Sprintf("%s (pid %s)", strings.TrimSpace(string(comm)), filepath.Base(dir))
			}
		}
	}
	return out
}
