package main

// pnpd doctor beside a PBX on the same host: the systemd unit's
// capabilities; `pnpd doctor` in the lab's pbx namespace beside a real
// PJSIP Asterisk; and `pnpd serve` run as an unprivileged user with exactly
// the unit's capabilities.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/asterisk"
	"github.com/pnpd/pnpd/pkg/asterisk/asterisktest"
	"github.com/pnpd/pnpd/pkg/config"
)

// docUnitFile is the example systemd unit.
var docUnitFile = filepath.Join("..", "..", "examples", "pnpd.service")

// docUnitDirectives returns the values of every assignment to key in the
// unit's [Service] section, comments left out.
func docUnitDirectives(t *testing.T, key string) []string {
	t.Helper()
	f, err := os.Open(docUnitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok && section == "[Service]" && strings.TrimSpace(k) == key {
			out = append(out, strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// docUnitCaps returns the unit's capabilities, checked to be exactly
// CAP_NET_RAW in both AmbientCapabilities and CapabilityBoundingSet, in
// setpriv's spelling ("net_raw").
func docUnitCaps(t *testing.T) []string {
	t.Helper()
	amb := docUnitDirectives(t, "AmbientCapabilities")
	bnd := docUnitDirectives(t, "CapabilityBoundingSet")
	if len(amb) != 1 || len(bnd) != 1 {
		t.Fatalf("%s: AmbientCapabilities %q and CapabilityBoundingSet %q: want one line each", docUnitFile, amb, bnd)
	}
	if amb[0] != "CAP_NET_RAW" || bnd[0] != amb[0] {
		t.Fatalf("%s: AmbientCapabilities=%s, CapabilityBoundingSet=%s: want CAP_NET_RAW in both", docUnitFile, amb[0], bnd[0])
	}
	var caps []string
	for _, c := range strings.Fields(amb[0]) {
		caps = append(caps, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	return caps
}

func TestUnitFile(t *testing.T) {
	docUnitCaps(t)
	fams := docUnitDirectives(t, "RestrictAddressFamilies")
	if len(fams) != 1 {
		t.Fatalf("RestrictAddressFamilies %q: want one line", fams)
	}
	for _, want := range []string{"AF_INET", "AF_PACKET", "AF_NETLINK"} {
		if !slices.Contains(strings.Fields(fams[0]), want) {
			t.Errorf("RestrictAddressFamilies=%s lacks %s", fams[0], want)
		}
	}
	for key, want := range map[string]string{"DynamicUser": "yes", "NoNewPrivileges": "yes"} {
		if got := docUnitDirectives(t, key); !slices.Equal(got, []string{want}) {
			t.Errorf("%s=%q, want %q", key, got, want)
		}
	}
	b, err := os.ReadFile(docUnitFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "After=network-online.target asterisk.service") {
		t.Errorf("the unit does not start after asterisk.service")
	}
}

// nobodyID is the uid and gid the unprivileged runs take: it stands in for
// the unit's DynamicUser.
const nobodyID = "65534"

// docSetprivArgs are setpriv's arguments that run a program as nobodyID with
// exactly caps (setpriv's names: "net_raw") in its inheritable, ambient
// and bounding sets, and so in its effective set, as systemd does with the
// unit's AmbientCapabilities and CapabilityBoundingSet.
func docSetprivArgs(caps []string) []string {
	set := "-all"
	for _, c := range caps {
		set += ",+" + c
	}
	args := []string{"--reuid=" + nobodyID, "--regid=" + nobodyID, "--clear-groups", "--no-new-privs",
		"--inh-caps=" + set, "--bounding-set=" + set}
	if len(caps) > 0 {
		args = append(args, "--ambient-caps=+"+strings.Join(caps, ",+"))
	}
	return args
}

// nobodyDir returns a new directory that uid nobodyID can read:
// t.TempDir() and its parent are 0700 and root's.
func nobodyDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// nobodyBinary copies the pnpd binary where uid nobodyID can run it: its
// build directory is root's alone.
func nobodyBinary(t *testing.T, bin string) string {
	t.Helper()
	dst := filepath.Join(nobodyDir(t), "pnpd")
	src, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, src); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// nobodyConfig writes cfg where uid nobodyID can read it and returns its
// path.
func nobodyConfig(t *testing.T, cfg string) string {
	t.Helper()
	p := filepath.Join(nobodyDir(t), "pnpd.toml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// docRun runs `bin args...` in the lab's pbx namespace, through setpriv
// with priv when priv is not nil, to its end, and returns its exit status
// and its stdout and stderr together.
func docRun(t *testing.T, l *lab, priv []string, bin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	name, argv := bin, args
	if priv != nil {
		name, argv = "setpriv", append(append(slices.Clone(priv), bin), args...)
	}
	var out bytes.Buffer
	cmd := l.pbx.Command(ctx, name, argv...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &ee) && ee.Exited():
		return ee.ExitCode(), out.String()
	}
	t.Fatalf("%s %s: %v\n%s", name, strings.Join(argv, " "), err, out.String())
	return 0, ""
}

// TestDoctorBeside runs `pnpd doctor` in the lab's pbx namespace beside a
// real PJSIP Asterisk, its transport on 0.0.0.0:5060 or on the
// namespace's unicast address.
func TestDoctorBeside(t *testing.T) {
	type env struct {
		l   *lab
		pid int // Asterisk's
	}
	tests := []struct {
		name    string
		unicast bool                 // the transport on the pbx address, else 0.0.0.0
		mode    string               // [sip] mode; "" leaves it out (auto)
		nobody  bool                 // run doctor as nobody, without capabilities
		join    bool                 // join the group in the namespace first
		code    int                  // doctor's exit status
		want    func(e env) []string // substrings of doctor's output, in order
		wantNot []string             // must not appear
	}{
		{name: "wildcard, auto", code: 0,
			want: func(e env) []string {
				return []string{
					"ok    pbx sip: ModuleCheck: a SIP stack (res_pjsip.so or chan_sip.so) is loaded",
					fmt.Sprintf("ok    udp 5060: asterisk (pid %d) holds 0.0.0.0:5060 (IPv4 wildcard", e.pid),
					fmt.Sprintf("ok    sip mode: auto picks packet: asterisk (pid %d) on 0.0.0.0:5060 holds UDP 5060 on every address", e.pid),
					"ok    packet sockets:",
					"ok    pbx sees SUBSCRIBEs: no:",
					"0 failure(s)",
				}
			},
			wantNot: []string{"group join"}},
		{name: "wildcard, bind", mode: "bind", code: 1,
			want: func(e env) []string {
				return []string{
					fmt.Sprintf("FAIL  sip mode: bind, but asterisk (pid %d) on 0.0.0.0:5060 holds UDP 5060 on every address", e.pid),
					"warn  pbx sees SUBSCRIBEs: yes:", "No matching endpoint found",
					"1 failure(s)",
				}
			},
			wantNot: []string{"group join"}},
		{name: "wildcard, packet, group joined here", mode: "packet", join: true, code: 0,
			want: func(e env) []string {
				return []string{
					"ok    sip mode: packet:",
					fmt.Sprintf("warn  pbx sees SUBSCRIBEs: yes: asterisk (pid %d) on 0.0.0.0:5060 holds UDP 5060 on every address and this host has joined 224.0.1.75 on %s", e.pid, e.l.pbxIf),
					"401 Unauthorized", "fix: set [sip] mode = \"packet\"",
				}
			}},
		{name: "wildcard, auto, nobody without capabilities", nobody: true, code: 1,
			want: func(e env) []string {
				return []string{
					"ok    udp 5060: a process (run as root to see which) holds 0.0.0.0:5060",
					"FAIL  sip mode: auto finds no safe mode:", "without CAP_NET_RAW",
					"fix: grant pnpd CAP_NET_RAW",
				}
			}},
		{name: "unicast, auto", unicast: true, code: 0,
			want: func(e env) []string {
				return []string{
					fmt.Sprintf("ok    udp 5060: asterisk (pid %d) holds %s:5060 (IPv4 unicast", e.pid, e.l.pbxIP),
					fmt.Sprintf("ok    sip mode: auto picks bind: UDP 5060 is held on unicast addresses only (asterisk (pid %d) on %s:5060)", e.pid, e.l.pbxIP),
					"ok    group join: 224.0.1.75:5060 bound and joined on 1 interface(s)",
					"ok    pbx sees SUBSCRIBEs: no: nothing holds UDP 5060 on every address",
					"0 failure(s)",
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLab(t)
			bind := "0.0.0.0:5060"
			if tt.unicast {
				bind = l.pbxIP.String() + ":5060"
			}
			a := asterisktest.Start(t, asterisktest.Options{NS: l.pbx, PJSIP: asterisk.UDPTransport(bind)})
			e := env{l: l, pid: a.PID()}
			waitHeld(t, e.pid, netip.MustParseAddrPort(bind))
			if tt.join {
				c := joinGroup(t, l.pbx, l.pbxIf)
				defer c.Close()
			}
			cfg := fmt.Sprintf("[sip]\ninterfaces = [%q]\n", l.pbxIf)
			if tt.mode != "" {
				cfg += fmt.Sprintf("mode = %q\n", tt.mode)
			}
			cfg += "[resolve]\ndefault = \"http://prov.example/{vendor}/\"\n" + pbxConf(a, "")
			bin := l.bin
			var priv []string
			if tt.nobody {
				requireTool(t, "setpriv", "util-linux")
				bin, priv = nobodyBinary(t, l.bin), docSetprivArgs(nil)
			}
			code, out := docRun(t, l, priv, bin, "doctor", "-config", nobodyConfig(t, cfg))
			t.Logf("pnpd doctor (exit %d):\n%s", code, out)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			docInOrder(t, out, tt.want(e))
			for _, s := range tt.wantNot {
				if strings.Contains(out, s) {
					t.Errorf("output has %q", s)
				}
			}
			// Doctor took nothing from the PBX: its transport still holds
			// the port.
			waitHeld(t, e.pid, netip.MustParseAddrPort(bind))
		})
	}
}

// unitLimits returns the prlimit command that gives pnpd serve the
// unit's LimitRTPRIO, as systemd would, and the limit; nil when this
// machine does not let the test raise the limit (root without
// CAP_SYS_RESOURCE, as in some sandboxes).
func unitLimits(t *testing.T) ([]string, int) {
	t.Helper()
	v := docUnitDirectives(t, "LimitRTPRIO")
	if len(v) != 1 {
		t.Fatalf("examples/pnpd.service: LimitRTPRIO %q, want one value", v)
	}
	n, err := strconv.Atoi(v[0])
	if err != nil || n < 1 || n > 99 {
		t.Fatalf("examples/pnpd.service: LimitRTPRIO=%s is no SCHED_RR priority", v[0])
	}
	cmd := []string{"prlimit", "--rtprio=" + v[0]}
	if out, err := exec.Command(cmd[0], append(cmd[1:], "true")...).CombinedOutput(); err != nil {
		t.Logf("cannot give pnpd the unit's LimitRTPRIO here (%v: %s): its real-time priority is not checked", err, bytes.TrimSpace(out))
		return nil, n
	}
	return cmd, n
}

// rrThreads returns the threads of pid that run at SCHED_RR, with their
// priority (from /proc/PID/task/TID/stat: fields 40 and 41, rt_priority
// and policy, counted after the command name).
func rrThreads(t *testing.T, pid int) map[string]int {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			continue // ended meanwhile
		}
		_, rest, _ := strings.Cut(string(b), ") ")
		fs := strings.Fields(rest) // fs[0] is field 3 (state)
		if len(fs) < 39 {
			t.Fatalf("short stat: %s", b)
		}
		prio, _ := strconv.Atoi(fs[37])
		if policy := fs[38]; policy == "2" { // SCHED_RR
			out[task.Name()] = prio
		}
	}
	return out
}

// docProcStatus returns the fields of /proc/PID/status.
func docProcStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// TestUnprivileged runs `pnpd serve` as nobody beside a PJSIP Asterisk on
// 0.0.0.0:5060, with exactly the capabilities of examples/pnpd.service,
// and with none.
func TestUnprivileged(t *testing.T) {
	caps := docUnitCaps(t)
	tests := []struct {
		name string
		mode string
		caps []string
		ok   bool // serve starts and answers; else it must refuse to start
	}{
		{"packet with the unit's capabilities", "packet", caps, true},
		{"auto with the unit's capabilities", "auto", caps, true},
		{"auto without capabilities", "auto", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireTool(t, "setpriv", "util-linux")
			l := newLab(t)
			a := asterisktest.Start(t, asterisktest.Options{NS: l.pbx, PJSIP: asterisk.UDPTransport("0.0.0.0:5060")})
			waitHeld(t, a.PID(), netip.MustParseAddrPort("0.0.0.0:5060"))
			bin := nobodyBinary(t, l.bin)
			cfg := fmt.Sprintf("[sip]\ninterfaces = [%q]\nmode = %q\n[resolve]\ndefault = \"http://prov.example/{vendor}/{mac}/\"\n", l.pbxIf, tt.mode)
			path := nobodyConfig(t, cfg)
			priv := docSetprivArgs(tt.caps)
			if !tt.ok {
				code, out := docRun(t, l, priv, bin, "serve", "-config", path)
				t.Logf("pnpd serve as nobody (exit %d):\n%s", code, out)
				if code == 0 || !strings.Contains(out, "CAP_NET_RAW") {
					t.Errorf("pnpd serve as nobody without capabilities: exit %d, want non-zero and a message naming CAP_NET_RAW:\n%s", code, out)
				}
				return
			}
			// prlimit sets the unit's LimitRTPRIO, then setpriv drops to
			// nobody with the unit's capabilities and execs pnpd.
			limits, rtprio := unitLimits(t)
			l.prefix = append(append(limits, "setpriv"), priv...)
			l.bin = bin
			l.run(cfg, "-config", path)
			st := docProcStatus(t, l.serve.Process.Pid)
			if uid := strings.Fields(st["Uid"]); len(uid) == 0 || uid[0] != nobodyID || st["CapEff"] != "0000000000002000" || st["NoNewPrivs"] != "1" {
				t.Fatalf("pnpd serve runs with Uid %q, CapEff %q, NoNewPrivs %q; want %s, CAP_NET_RAW alone (0000000000002000), 1",
					st["Uid"], st["CapEff"], st["NoNewPrivs"], nobodyID)
			}
			kv := l.waitLog(t, map[string]string{"msg": "sip mode", "mode": "packet"})
			t.Logf("pnpd serve as nobody: sip mode=%s why=%q", kv["mode"], kv["why"])
			// The one group reader (packet mode, one interface), and only
			// it, runs at SCHED_RR with the unit's priority, which is
			// also the default realtime_priority.
			if rtprio != config.DefaultRealtimePriority {
				t.Errorf("unit LimitRTPRIO=%d, default [sip] realtime_priority %d: they should agree", rtprio, config.DefaultRealtimePriority)
			}
			if limits != nil {
				waitRRThreads(t, l, rtprio)
			}
			const mac = "001565000042"
			r := l.simulate(t, "-vendor", "yealink", "-mac", mac)
			if want := "http://prov.example/yealink/" + mac + "/"; r.code != 0 || r.url != want {
				t.Fatalf("want URL %s\n%s", want, r)
			}
			l.waitLog(t, map[string]string{"msg": "exchange", "mac": mac, "outcome": "provisioned"})
			if rr := rrThreads(t, l.serve.Process.Pid); limits == nil && len(rr) != 0 {
				// The reader has answered the phone: it exists, and
				// without the limit it could not take the priority.
				t.Errorf("SCHED_RR threads %v without the limit", rr)
			}
		})
	}
}
