package main

// The [policy] flows that live in the PBX database, end to end: the real
// `pnpd serve` in the lab's pbx namespace over a real Asterisk there,
// phones played by `pnpd simulate` from the phone namespace, and the
// operator's `pnpd ctl` run beside pnpd. Approval (unknown = "approve"),
// the provisioning window and once; a refused phone's traces (its seen
// record, PnpFailed) are checked wherever a phone is refused.
//
// A refused phone is the hostile case: each refused run logs
// "HOSTILE test=NAME sent=N back=M", the datagrams it sent and the packets
// that came back to it (responses and NOTIFYs), which must be none.

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/asterisk/asterisktest"
	"github.com/pnpd/pnpd/pkg/pbx"
)

// policyPBX is a lab whose `pnpd serve` runs a [policy] over a real
// Asterisk in the pbx namespace, with a second AMI session recording the
// UserEvents.
type policyPBX struct {
	*lab
	a      *asterisktest.Instance
	events *amiSession
}

// startPolicyPBX starts Asterisk in a new lab, runs the AstDB commands,
// then `pnpd serve` with policy as its [policy] section (refresh off: only
// PnpReload brings a new snapshot), and waits for its first snapshot.
func startPolicyPBX(t *testing.T, policy string, astdb ...string) *policyPBX {
	t.Helper()
	l := newLab(t)
	a := asterisktest.Start(t, asterisktest.Options{NS: l.pbx})
	for _, c := range astdb {
		cli(t, a, c)
	}
	e := &policyPBX{lab: l, a: a, events: amiEvents(t, a)}
	l.start("", pbxConf(a, `refresh = "0s"`)+"[policy]\n"+policy+"\n")
	e.waitLogFrom(t, 0, map[string]string{"msg": "pbx snapshot", "why": "login"})
	return e
}

// mark returns how many complete lines the serve log has: waitLogFrom
// with it sees only what was logged after.
func (e *policyPBX) mark() int { return len(completeLines(e.log.String())) }

// waitLogFrom waits for a serve log line after the first skip whose keys
// have the wanted values, and fails the test after logTimeout.
func (e *policyPBX) waitLogFrom(t *testing.T, skip int, want map[string]string) map[string]string {
	t.Helper()
	got, ok := e.findLog(skip, want)
	if !ok {
		t.Fatalf("serve log has no line with %v after line %d", want, skip)
	}
	return got
}

// linesFrom returns the serve log lines after the first skip whose keys
// have the wanted values.
func (e *policyPBX) linesFrom(skip int, want map[string]string) []map[string]string {
	var out []map[string]string
	for i, line := range completeLines(e.log.String()) {
		if i < skip {
			continue
		}
		kv := logfmt(line)
		ok := true
		for k, v := range want {
			ok = ok && kv[k] == v
		}
		if ok {
			out = append(out, kv)
		}
	}
	return out
}

// ctl runs `pnpd ctl` with serve's configuration in the pbx namespace,
// where Asterisk's AMI is, and fails the test unless it exits with want.
func (e *policyPBX) ctl(t *testing.T, want int, args ...string) (stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	argv := append([]string{"ctl", "-config", filepath.Join(e.dir, "pnpd.toml")}, args...)
	cmd := e.pbx.Command(ctx, e.bin, argv...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = 5 * time.Second
	code := 0
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !ee.Exited() {
			t.Fatalf("pnpd ctl %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
		}
		code = ee.ExitCode()
	}
	if code != want {
		t.Fatalf("pnpd ctl %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, out.String(), errOut.String())
	}
	return out.String(), errOut.String()
}

// change runs a ctl command that changes the family and waits until
// serve has taken the snapshot its PnpReload asks for.
func (e *policyPBX) change(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	from := e.mark()
	stdout, stderr = e.ctl(t, 0, args...)
	e.waitLogFrom(t, from, map[string]string{"msg": "pbx snapshot", "why": pbx.EventReload})
	return stdout, stderr
}

// dbGet reads pnp/<key> with the CLI; ok is false when it is absent.
func (e *policyPBX) dbGet(t *testing.T, key string) (value string, ok bool) {
	t.Helper()
	return strings.CutPrefix(strings.TrimSpace(e.a.CLI(t, "database get pnp "+key)), "Value: ")
}

// waitDB waits until pnp/<key> is present (or absent), and returns its
// value.
func (e *policyPBX) waitDB(t *testing.T, key string, present bool) string {
	t.Helper()
	deadline := time.Now().Add(logTimeout)
	for {
		v, ok := e.dbGet(t, key)
		if ok == present {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("pnp/%s: present %v (%q), want %v", key, ok, v, present)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// provisioned plays a phone that must get url: a 200, then the NOTIFY,
// and serve's outcome=provisioned.
func (e *policyPBX) provisioned(t *testing.T, vendor, mac, url string) map[string]string {
	t.Helper()
	from := e.mark()
	r := e.simulate(t, "-vendor", vendor, "-mac", mac)
	if r.code != 0 || r.url != url || r.notifies < 1 || len(r.responses) == 0 || r.responses[0] != "200" {
		t.Fatalf("want %s provisioned with %s: %s", mac, url, r)
	}
	return e.waitLogFrom(t, from, map[string]string{"msg": "exchange", "outcome": "provisioned", "mac": mac})
}

// refusedRepeats is how many times a refused phone retransmits its
// SUBSCRIBE: the transaction stays, so they must be as silent as the
// first.
const refusedRepeats = 3

// refused plays a phone the policy must refuse for reason: it retransmits,
// gets no response and no NOTIFY, and serve logs outcome=refused once;
// its seen record says refused and a PnpFailed names the check.
func (e *policyPBX) refused(t *testing.T, vendor, mac, reason string) {
	t.Helper()
	from := e.mark()
	r := e.simulate(t, "-vendor", vendor, "-mac", mac, "-timeout", "2s", "-repeat", strconv.Itoa(refusedRepeats))
	sent, back := 1+refusedRepeats, len(r.responses)+r.notifies
	t.Logf("HOSTILE test=%s sent=%d back=%d", t.Name(), sent, back)
	if r.code != 1 || back != 0 {
		t.Fatalf("want %s refused (%s) without a packet back: %s", mac, reason, r)
	}
	want := map[string]string{"msg": "exchange", "outcome": "refused", "mac": mac}
	line := e.waitLogFrom(t, from, want)
	if line["reason"] != reason || line["detail"] == "" || !strings.HasPrefix(line["src"], e.phoneIP.String()+":") {
		t.Errorf("refusal logged as %v, want reason=%s with a detail", line, reason)
	}
	if n := len(e.linesFrom(from, want)); n != 1 {
		t.Errorf("%d exchange lines for one refused SUBSCRIBE and its %d retransmissions, want 1", n, refusedRepeats)
	}
	ev := e.events.wait(t, pbx.EventFailed, func(ev map[string]string) bool { return ev["Mac"] == mac })
	if !strings.HasPrefix(ev["Reason"], reason+": ") || ev["Vendor"] != vendor || ev["Ip"] != e.phoneIP.String() || ev["Interface"] != e.pbxIf {
		t.Errorf("PnpFailed %v, want a Reason starting %q", ev, reason+": ")
	}
	seen := waitSeen(t, e.a, mac, "refused")
	if seen.Get("brand") != vendor || seen.Get("interface") != e.pbxIf || seen.Get("host") != "" {
		t.Errorf("seen/%s = %v", mac, seen)
	}
}

// countEvents counts the UserEvents called name for mac so far.
func (e *policyPBX) countEvents(name, mac string) int {
	n := 0
	for _, ev := range e.events.all(name) {
		if ev["Mac"] == mac {
			n++
		}
	}
	return n
}

func TestE2EPolicyPBXApprove(t *testing.T) {
	const (
		known   = "001fc1000031" // assigned before pnpd starts
		unknown = "001565000032" // nobody's, until approved
	)
	e := startPolicyPBX(t, `unknown = "approve"`,
		"database put pnp mac/"+known+" acme",
		"database put pnp tenant/acme/url http://acme.example/{mac}/")

	t.Run("assigned phone answered at once", func(t *testing.T) {
		line := e.provisioned(t, "htek", known, "http://acme.example/"+known+"/")
		if line["tenant"] != "acme" {
			t.Errorf("exchange %v", line)
		}
		if _, ok := e.dbGet(t, "pending/"+known); ok {
			t.Errorf("an assigned phone was recorded as pending")
		}
	})

	t.Run("unknown phone recorded as pending", func(t *testing.T) {
		from := e.mark()
		r := e.simulate(t, "-vendor", "yealink", "-mac", unknown, "-timeout", "2s")
		if r.code != 1 || r.notifies != 0 || r.url != "" {
			t.Fatalf("an unknown phone got an answer: %s", r)
		}
		line := e.waitLogFrom(t, from, map[string]string{"msg": "exchange", "outcome": "pending", "mac": unknown})
		if line["url"] != "" || line["reason"] != "" {
			t.Errorf("pending logged as %v", line)
		}
		ev := e.events.wait(t, pbx.EventPending, func(ev map[string]string) bool { return ev["Mac"] == unknown })
		if ev["Vendor"] != "yealink" || ev["Ip"] != e.phoneIP.String() || ev["Interface"] != e.pbxIf || ev["UrlHost"] != "" {
			t.Errorf("PnpPending %v", ev)
		}
		v := e.waitDB(t, "pending/"+unknown, true)
		rec, err := pbx.ParseSeen(v)
		if err != nil {
			t.Fatalf("pending/%s = %q: %v", unknown, v, err)
		}
		if _, perr := time.Parse(time.RFC3339, rec.Get("time")); perr != nil || rec.Get("brand") != "yealink" || rec.Get("outcome") != "pending" ||
			rec.Get("interface") != e.pbxIf || !strings.HasPrefix(rec.Get("source"), e.phoneIP.String()+":") {
			t.Errorf("pending/%s = %v", unknown, rec)
		}
		waitSeen(t, e.a, unknown, "pending")
		if _, ok := e.dbGet(t, "mac/"+unknown); ok {
			t.Errorf("a pending phone was assigned")
		}

		// It asks again: still not answered, recorded and announced once.
		from = e.mark()
		r = e.simulate(t, "-vendor", "yealink", "-mac", unknown, "-timeout", "2s")
		if r.code != 1 || r.notifies != 0 {
			t.Fatalf("a pending phone got an answer: %s", r)
		}
		e.waitLogFrom(t, from, map[string]string{"msg": "exchange", "outcome": "pending", "mac": unknown})
		if again := e.waitDB(t, "pending/"+unknown, true); again != v {
			t.Errorf("pending/%s rewritten: %q, was %q", unknown, again, v)
		}
	})

	t.Run("ctl pending lists it", func(t *testing.T) {
		out, _ := e.ctl(t, 0, "pending")
		var rows []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			rows = append(rows, strings.Join(strings.Fields(l), " "))
		}
		if len(rows) != 1 || !strings.HasPrefix(rows[0], unknown+" ") || !strings.Contains(rows[0], " yealink ") ||
			!strings.Contains(rows[0], " "+e.phoneIP.String()+":") || !strings.HasSuffix(rows[0], " "+e.pbxIf) {
			t.Errorf("pending, want one row for %s:\n%s", unknown, out)
		}
	})

	t.Run("approved phone provisioned", func(t *testing.T) {
		e.change(t, "tenant", "set", "beta", "http://beta.example/{mac}.cfg")
		out, errOut := e.change(t, "approve", unknown, "beta")
		if strings.Contains(out+errOut, "warning") {
			t.Errorf("approve warned:\n%s%s", out, errOut)
		}
		e.waitDB(t, "pending/"+unknown, false)
		if v, _ := e.dbGet(t, "mac/"+unknown); v != "beta" {
			t.Errorf("mac/%s = %q after approve, want beta", unknown, v)
		}
		line := e.provisioned(t, "yealink", unknown, "http://beta.example/"+unknown+".cfg")
		if line["tenant"] != "beta" || line["decided_by"] != "pbx snapshot" {
			t.Errorf("exchange %v, want tenant beta decided by the snapshot taken after the approval", line)
		}
		e.events.wait(t, pbx.EventProvisioned, func(ev map[string]string) bool { return ev["Mac"] == unknown })
		waitSeen(t, e.a, unknown, "provisioned")
		out, errOut = e.ctl(t, 0, "pending")
		if out != "" || !strings.Contains(errOut, "no phones are waiting for approval") {
			t.Errorf("pending after approve: stdout %q, stderr %q", out, errOut)
		}
	})

	// pnpd's writes go out in order: the PnpProvisioned above came after
	// any PnpPending the two pending SUBSCRIBEs caused.
	if n := e.countEvents(pbx.EventPending, unknown); n != 1 {
		t.Errorf("%d PnpPending for %s, want 1 for its two SUBSCRIBEs", n, unknown)
	}
	if n := len(e.events.all(pbx.EventPending)); n != 1 {
		t.Errorf("%d PnpPending in all, want 1", n)
	}
	if n := len(e.events.all(pbx.EventFailed)); n != 0 {
		t.Errorf("%d PnpFailed: nothing was refused: %v", n, e.events.all(pbx.EventFailed))
	}
}

func TestE2EPolicyPBXWindow(t *testing.T) {
	const mac = "001fc1000041"
	e := startPolicyPBX(t, "window = true",
		"database put pnp mac/"+mac+" acme",
		"database put pnp tenant/acme/url http://acme.example/{mac}/")

	t.Run("refused before any window", func(t *testing.T) {
		e.refused(t, "htek", mac, "window-closed")
	})
	t.Run("answered while open", func(t *testing.T) {
		out, _ := e.change(t, "window", "open", "10m")
		if !strings.HasPrefix(out, "provisioning window open until ") {
			t.Errorf("window open: %q", out)
		}
		if _, ok := e.dbGet(t, "window"); !ok {
			t.Fatal("pnp/window not set")
		}
		e.provisioned(t, "htek", mac, "http://acme.example/"+mac+"/")
		waitSeen(t, e.a, mac, "provisioned")
	})
	t.Run("refused after close", func(t *testing.T) {
		out, _ := e.change(t, "window", "close")
		if strings.TrimSpace(out) != "provisioning window closed" {
			t.Errorf("window close: %q", out)
		}
		e.refused(t, "htek", mac, "window-closed")
	})
	// Two refusals, one provisioning: one PnpFailed each, in order.
	if n := e.countEvents(pbx.EventFailed, mac); n != 2 {
		t.Errorf("%d PnpFailed, want 2", n)
	}
	if n := e.countEvents(pbx.EventProvisioned, mac); n != 1 {
		t.Errorf("%d PnpProvisioned, want 1", n)
	}
}

func TestE2EPolicyPBXOnce(t *testing.T) {
	const mac = "001fc1000051"
	url := "http://direct.example/" + mac + ".cfg"
	e := startPolicyPBX(t, "once = true",
		"database put pnp mac/"+mac+" http://direct.example/{mac}.cfg")

	var first string
	t.Run("provisioned and marked", func(t *testing.T) {
		e.provisioned(t, "snom", mac, url)
		first = e.waitDB(t, "provisioned/"+mac, true)
		if _, err := time.Parse(time.RFC3339, first); err != nil || !strings.HasSuffix(first, "Z") {
			t.Errorf("provisioned/%s = %q, want RFC 3339 UTC: %v", mac, first, err)
		}
	})
	t.Run("refused the second time", func(t *testing.T) {
		e.refused(t, "snom", mac, "provisioned-once")
		if v, _ := e.dbGet(t, "provisioned/"+mac); v != first {
			t.Errorf("provisioned/%s = %q after a refusal, was %q", mac, v, first)
		}
	})
	t.Run("answered after rearm", func(t *testing.T) {
		out, _ := e.change(t, "rearm", mac)
		if !strings.Contains(out, mac+" rearmed") {
			t.Errorf("rearm: %q", out)
		}
		e.waitDB(t, "provisioned/"+mac, false)
		e.provisioned(t, "snom", mac, url)
		e.waitDB(t, "provisioned/"+mac, true)
	})
	t.Run("refused again after the second provisioning", func(t *testing.T) {
		e.refused(t, "snom", mac, "provisioned-once")
	})
	if n := e.countEvents(pbx.EventProvisioned, mac); n != 2 {
		t.Errorf("%d PnpProvisioned, want 2", n)
	}
	if n, all := e.countEvents(pbx.EventFailed, mac), len(e.events.all(pbx.EventFailed)); n != 2 || all != 2 {
		t.Errorf("%d PnpFailed for %s, %d in all; want 2", n, mac, all)
	}
}
