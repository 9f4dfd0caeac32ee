package main

// Tests against a real Asterisk (pkg/asterisk/asterisktest): the decision
// order source by source, pnpd ctl and doctor, and, in the namespace lab,
// the snapshot, PnpReload, refresh, the UserEvents seen by a second AMI
// session, a phone assigned after the last snapshot racing Asterisk's 401,
// and Asterisk killed while pnpd serves.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/asterisk"
	"github.com/pnpd/pnpd/pkg/asterisk/asterisktest"
	"github.com/pnpd/pnpd/pkg/netns"
)

// pbxConf is the [ami] section for an instance.
func pbxConf(a *asterisktest.Instance, extra string) string {
	return fmt.Sprintf("[ami]\naddress = %q\nusername = %q\nsecret = %q\n%s\n", a.Addr, a.Username, a.Secret, extra)
}

// cli runs an Asterisk CLI command and fails on Asterisk's refusals, which
// `asterisk -rx` does not report in its exit status.
func cli(t *testing.T, a *asterisktest.Instance, command string) string {
	t.Helper()
	out := a.CLI(t, command)
	for _, bad := range []string{"No such command", "not found", "Failed", "Unable"} {
		if strings.Contains(out, bad) {
			t.Fatalf("asterisk -rx %q: %s", command, out)
		}
	}
	return out
}

// exampleUser is the [pnpd] user of examples/manager.conf, with the read
// and write classes the example gives it: the tests run as the
// least-privilege user operators are told to create.
func exampleUser(t *testing.T) asterisktest.User {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "examples", "manager.conf"))
	if err != nil {
		t.Fatal(err)
	}
	u := asterisktest.User{Name: "pnpd"}
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		line, _, _ = strings.Cut(line, ";")
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			in = line == "[pnpd]"
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !in || !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "read":
			u.Read = strings.TrimSpace(v)
		case "write":
			u.Write = strings.TrimSpace(v)
		}
	}
	if u.Read == "" || u.Write == "" {
		t.Fatalf("examples/manager.conf: no read and write in [pnpd]: %+v", u)
	}
	return u
}

// decidedBy returns the "decided by: ..." line of a resolve run.
func decidedBy(stderr string) string {
	for _, l := range strings.Split(stderr, "\n") {
		if s, ok := strings.CutPrefix(l, "decided by: "); ok {
			return s
		}
	}
	return ""
}

func TestPBXDecisionOrder(t *testing.T) {
	a := asterisktest.Start(t, asterisktest.Options{})
	for _, c := range []string{
		"database put pnp mac/000413000001 acme", // a file mac rule beats it
		"database put pnp mac/000413000002 acme",
		"database put pnp mac/000413000003 ghost", // a tenant without URL
		"database put pnp mac/000413000004 http://direct.example/{mac}.cfg",
		"database put pnp tenant/acme/url http://acme.example/{vendor}/",
		"database put pnp tenant/acme/url/yealink http://acme.example/yl/",
		"database put pnp default/url http://pbx-default.example/",
	} {
		cli(t, a, c)
	}
	path := writeConfig(t, `
[resolve]
default = "http://file-default.example/"

[[resolve.rule]]
vendor = "snom"
url = "http://file-vendor.example/"

[[resolve.rule]]
mac = "000413000001"
url = "http://file-mac.example/"
`+pbxConf(a, ""))

	tests := []struct {
		name, mac, vendor string
		code              int
		url, decided      string
		stderr            string
	}{
		{"file mac rule", "000413000001", "snom", 0, "http://file-mac.example/", "rule 2 (line 9)", ""},
		{"pbx mac before file vendor rule", "000413000002", "snom", 0, "http://acme.example/snom/", "pbx snapshot", "tenant acme"},
		{"pbx tenant per-brand", "000413000002", "yealink", 0, "http://acme.example/yl/", "pbx snapshot", ""},
		{"pbx whole URL", "000413000004", "snom", 0, "http://direct.example/000413000004.cfg", "pbx snapshot", ""},
		{"tenant without URL fails", "000413000003", "snom", 1, "", "pbx snapshot: failure: the phone gets no NOTIFY", "tenant has no URL"},
		{"file vendor rule", "000413999999", "snom", 0, "http://file-vendor.example/", "rule 1 (line 5)", ""},
		{"pbx default", "001565999999", "yealink", 0, "http://pbx-default.example/", "pbx default", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, "resolve", "-config", path, "-mac", tt.mac, "-vendor", tt.vendor)
			if code != tt.code || strings.TrimSpace(out) != tt.url || decidedBy(errOut) != tt.decided || !strings.Contains(errOut, tt.stderr) {
				t.Errorf("exit %d, URL %q, decided by %q; want %d, %q, %q (and %q on stderr)\nstderr:\n%s",
					code, out, decidedBy(errOut), tt.code, tt.url, tt.decided, tt.stderr, errOut)
			}
		})
	}
	t.Run("file default last", func(t *testing.T) {
		cli(t, a, "database del pnp default/url")
		code, out, errOut := runCLI(t, "resolve", "-config", path, "-mac", "001565999999", "-vendor", "yealink")
		if code != 0 || strings.TrimSpace(out) != "http://file-default.example/" || decidedBy(errOut) != "default" {
			t.Errorf("exit %d, %q, decided by %q\n%s", code, out, decidedBy(errOut), errOut)
		}
		if !strings.Contains(errOut, "pbx default: none") {
			t.Errorf("trace does not say the PBX had no default:\n%s", errOut)
		}
	})
}

func TestPBXLookup(t *testing.T) {
	// DB() is a privileged function, as func_odbc's are: over AMI it
	// answers only with live_dangerously.
	for _, live := range []bool{true, false} {
		t.Run(fmt.Sprintf("live_dangerously=%v", live), func(t *testing.T) {
			a := asterisktest.Start(t, asterisktest.Options{LiveDangerously: live, Users: []asterisktest.User{exampleUser(t)}})
			cli(t, a, "database put sql 000413000007 acme")
			cli(t, a, "database put pnp tenant/acme/url http://acme.example/")
			path := writeConfig(t, pbxConf(a, `lookup = "DB(sql/{mac})"`))
			code, out, errOut := runCLI(t, "resolve", "-config", path, "-mac", "000413000007", "-vendor", "snom")
			code2, dout, _ := runCLI(t, "doctor", "-config", path)
			if live {
				if code != 0 || strings.TrimSpace(out) != "http://acme.example/" || decidedBy(errOut) != "lookup DB(sql/000413000007)" {
					t.Errorf("resolve: exit %d, %q, decided by %q\n%s", code, out, decidedBy(errOut), errOut)
				}
				if strings.Contains(dout, "FAIL  lookup") {
					t.Errorf("doctor blames live_dangerously, which is set:\n%s", dout)
				}
				return
			}
			if code != 1 || !strings.Contains(errOut, "lookup DB(sql/000413000007): empty") {
				t.Errorf("resolve: exit %d, %q\n%s", code, out, errOut)
			}
			if code2 != 1 || !strings.Contains(dout, "FAIL  lookup") || !strings.Contains(dout, "live_dangerously = yes") {
				t.Errorf("doctor: exit %d, want a FAIL naming live_dangerously:\n%s", code2, dout)
			}
		})
	}
}

func TestCtlRoundTrip(t *testing.T) {
	a := asterisktest.Start(t, asterisktest.Options{})
	path := writeConfig(t, pbxConf(a, ""))
	events := amiEvents(t, a)
	ctl := func(want int, args ...string) string {
		t.Helper()
		code, out, errOut := runCLI(t, append([]string{"ctl", "-config", path}, args...)...)
		if code != want {
			t.Fatalf("pnpd ctl %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, out, errOut)
		}
		return out + errOut
	}
	reloads := 0
	changed := func() {
		t.Helper()
		reloads++
		events.wait(t, "PnpReload", func(map[string]string) bool { return true })
	}

	out := ctl(0, "assign", "00:04:13:AA:BB:01", "acme")
	if !strings.Contains(out, `tenant "acme" has no URL`) {
		t.Errorf("assign to a tenant without URL: no warning:\n%s", out)
	}
	changed()
	ctl(0, "tenant", "set", "acme", "http://user:pw@acme.example/{vendor}/")
	changed()
	ctl(0, "assign", "000413aabb02", "http://direct.example/")
	changed()
	if got := cli(t, a, "database get pnp mac/000413aabb01"); !strings.Contains(got, "Value: acme") {
		t.Errorf("database get: %s", got)
	}
	out = ctl(0, "tenant", "list")
	if !strings.Contains(out, "acme") || !strings.Contains(out, "http://***@acme.example/{vendor}/") || strings.Contains(out, "pw") {
		t.Errorf("tenant list:\n%s", out)
	}
	cli(t, a, "database put pnp seen/000413aabb03 brand=snom&model=D785&outcome=observed&time=2026-11-26T02%3A00%3A00Z")
	out = ctl(0, "list")
	for _, want := range []string{"000413aabb01  acme", "000413aabb02  url direct.example", "000413aabb03  -", "observed", "D785"} {
		if !strings.Contains(out, want) {
			t.Errorf("list has no %q:\n%s", want, out)
		}
	}
	ctl(0, "unassign", "000413aabb01")
	changed()
	out = ctl(1, "unassign", "000413aabb01")
	if !strings.Contains(out, "ami: DBDel: Database entry could not be deleted") {
		t.Errorf("second unassign: want Asterisk's message:\n%s", out)
	}
	ctl(0, "reload")
	changed()
	ctl(2, "assign", "nonsense", "acme")
	ctl(2, "tenant", "set", "a/b", "http://x/")
	ctl(2, "frobnicate")

	// Asterisk's refusal of a permission reaches the operator.
	b := asterisktest.Start(t, asterisktest.Options{Users: []asterisktest.User{{Name: "weak", Read: "user", Write: "user"}}})
	weak := writeConfig(t, pbxConf(b, ""))
	code, _, errOut := runCLI(t, "ctl", "-config", weak, "assign", "000413aabb01", "acme")
	if code != 1 || !strings.Contains(errOut, "Permission denied") {
		t.Errorf("ctl with a user without write=system: exit %d\n%s", code, errOut)
	}
	if reloads != 5 {
		t.Errorf("%d PnpReload events, want 5", reloads)
	}
}

func TestDoctorAMI(t *testing.T) {
	a := asterisktest.Start(t, asterisktest.Options{Users: []asterisktest.User{
		exampleUser(t),
		{Name: "weak", Read: "", Write: "user"},
	}})
	good := writeConfig(t, fmt.Sprintf("[sip]\ninterfaces = []\n[ami]\naddress = %q\nusername = \"pnpd\"\nsecret = %q\nlookup = \"DB(sql/{mac})\"\n", a.Addr, a.Users[0].Secret))
	code, out, _ := runCLI(t, "doctor", "-config", good)
	for _, want := range []string{"ok    ami login", "ok    read the family", "ok    write seen records", "ok    send UserEvents", "ok    receive UserEvents",
		"FAIL  lookup: Getvar DB(sql/000000000000) is empty, and Asterisk refuses privileged functions"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor (exit %d) has no %q:\n%s", code, want, out)
		}
	}
	weak := writeConfig(t, fmt.Sprintf("[ami]\naddress = %q\nusername = \"weak\"\nsecret = %q\nlookup = \"DB(sql/{mac})\"\n", a.Addr, a.Users[1].Secret))
	code, out, _ = runCLI(t, "doctor", "-config", weak)
	if code != 1 || !strings.Contains(out, "FAIL  read the family") || !strings.Contains(out, "write = system") ||
		!strings.Contains(out, "FAIL  receive UserEvents") || !strings.Contains(out, "write = reporting") {
		t.Errorf("doctor with a weak user: exit %d\n%s", code, out)
	}
	wrong := writeConfig(t, fmt.Sprintf("[ami]\naddress = %q\nusername = \"pnpd\"\nsecret = \"wrong\"\n", a.Addr))
	code, out, _ = runCLI(t, "doctor", "-config", wrong)
	if code != 1 || !strings.Contains(out, "FAIL  ami login") || !strings.Contains(out, "Authentication failed") {
		t.Errorf("doctor with a wrong secret: exit %d\n%s", code, out)
	}
}

// amiSession is a second AMI session, spoken by hand, that records every
// event.
type amiSession struct {
	mu     sync.Mutex
	events []map[string]string
	wake   chan struct{}
	seen   int // events handed out by wait
}

// amiEvents logs in to a (in its namespace, if any) as its first user and
// records events until the test ends.
func amiEvents(t *testing.T, a *asterisktest.Instance) *amiSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := a.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "Action: Login\r\nUsername: %s\r\nSecret: %s\r\nEvents: user\r\n\r\n", a.Username, a.Secret)
	s := &amiSession{wake: make(chan struct{})}
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil { // banner
		t.Fatal(err)
	}
	login, err := readAMI(r)
	if err != nil || login["Response"] != "Success" {
		t.Fatalf("AMI login: %v %v", login, err)
	}
	go func() {
		for {
			m, err := readAMI(r)
			if err != nil {
				return
			}
			if m["Event"] != "UserEvent" {
				continue
			}
			s.mu.Lock()
			s.events = append(s.events, m)
			close(s.wake)
			s.wake = make(chan struct{})
			s.mu.Unlock()
		}
	}()
	return s
}

func readAMI(r *bufio.Reader) (map[string]string, error) {
	m := map[string]string{}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return m, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if len(m) > 0 {
				return m, nil
			}
			continue
		}
		k, v, _ := strings.Cut(line, ":")
		m[k] = strings.TrimSpace(v)
	}
}

// wait returns the first UserEvent name after those already handed out
// that matches; it fails the test after logTimeout.
func (s *amiSession) wait(t *testing.T, name string, match func(map[string]string) bool) map[string]string {
	t.Helper()
	deadline := time.After(logTimeout)
	for {
		s.mu.Lock()
		for i := s.seen; i < len(s.events); i++ {
			if ev := s.events[i]; ev["UserEvent"] == name && match(ev) {
				s.seen = i + 1
				s.mu.Unlock()
				return ev
			}
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-wake:
		case <-deadline:
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("no UserEvent %s; events so far: %v", name, s.events)
			return nil
		}
	}
}

// all returns the UserEvents called name so far.
func (s *amiSession) all(name string) []map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]string
	for _, ev := range s.events {
		if ev["UserEvent"] == name {
			out = append(out, ev)
		}
	}
	return out
}

// seenRecord reads pnp/seen/<mac> with the CLI ("" when absent).
func seenRecord(t *testing.T, a *asterisktest.Instance, mac string) url.Values {
	t.Helper()
	out := a.CLI(t, "database get pnp seen/"+mac)
	v, ok := strings.CutPrefix(strings.TrimSpace(out), "Value: ")
	if !ok {
		return nil
	}
	q, err := url.ParseQuery(v)
	if err != nil {
		t.Fatalf("seen/%s = %q: %v", mac, v, err)
	}
	return q
}

func TestPBXServe(t *testing.T) {
	l := newLab(t)
	a := asterisktest.Start(t, asterisktest.Options{NS: l.pbx})
	for _, c := range []string{
		"database put pnp mac/001fc1000001 acme",
		"database put pnp mac/001fc1000002 ghost",
		"database put pnp tenant/acme/url http://admin:secret@acme.example/{mac}/",
	} {
		cli(t, a, c)
	}
	events := amiEvents(t, a)
	l.start("", pbxConf(a, `refresh = "0s"`))
	l.waitLog(t, map[string]string{"msg": "pbx snapshot", "why": "login", "phones": "2"})
	// An Asterisk runs here, without SIP: auto asks it over AMI
	// (ModuleCheck) and then binds the group's port.
	if m := l.waitLog(t, map[string]string{"msg": "sip mode", "mode": "bind"}); !strings.Contains(m["why"], "the PBX says it has no SIP stack") {
		t.Errorf("sip mode chosen because %q", m["why"])
	}

	t.Run("in the snapshot", func(t *testing.T) {
		r := l.simulate(t, "-vendor", "htek", "-mac", "001fc1000001")
		if r.code != 0 || r.url != "http://admin:secret@acme.example/001fc1000001/" || !slices.Equal(r.responses, []string{"200"}) {
			t.Fatalf("%s", r)
		}
		l.waitLog(t, map[string]string{"msg": "exchange", "outcome": "provisioned", "mac": "001fc1000001", "decided_by": "pbx snapshot", "tenant": "acme"})
		seen := events.wait(t, "PnpSeen", func(ev map[string]string) bool { return ev["Mac"] == "001fc1000001" })
		defer func() {
			// One SUBSCRIBE, one transaction: one PnpSeen.
			n := 0
			for _, ev := range events.all("PnpSeen") {
				if ev["Mac"] == "001fc1000001" {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%d PnpSeen for one SUBSCRIBE", n)
			}
		}()
		prov := events.wait(t, "PnpProvisioned", func(ev map[string]string) bool { return ev["Mac"] == "001fc1000001" })
		for _, ev := range []map[string]string{seen, prov} {
			if ev["Vendor"] != "htek" || ev["Ip"] != l.phoneIP.String() || ev["Interface"] != l.pbxIf {
				t.Errorf("UserEvent headers %v", ev)
			}
		}
		if prov["Tenant"] != "acme" || prov["UrlHost"] != "acme.example" || strings.Contains(fmt.Sprint(prov), "secret") {
			t.Errorf("PnpProvisioned %v", prov)
		}
		waitSeen(t, a, "001fc1000001", "provisioned")
	})

	t.Run("tenant without URL", func(t *testing.T) {
		r := l.simulate(t, "-vendor", "yealink", "-mac", "001fc1000002", "-timeout", "2s")
		if r.code != 1 || r.notifies != 0 {
			t.Fatalf("%s", r)
		}
		ev := events.wait(t, "PnpFailed", func(ev map[string]string) bool { return ev["Mac"] == "001fc1000002" })
		if ev["Tenant"] != "ghost" || !strings.Contains(ev["Reason"], "tenant has no URL") {
			t.Errorf("PnpFailed %v", ev)
		}
		waitSeen(t, a, "001fc1000002", "error")
	})

	t.Run("assigned after the snapshot", func(t *testing.T) {
		cli(t, a, "database put pnp mac/001fc1000003 http://late.example/")
		r := l.simulate(t, "-vendor", "htek", "-mac", "001fc1000003")
		if r.code != 0 || r.url != "http://late.example/" || r.notifies != 1 || len(r.responses) == 0 || r.responses[0] != "200" {
			t.Fatalf("%s", r)
		}
		l.waitLog(t, map[string]string{"msg": "exchange", "outcome": "provisioned", "mac": "001fc1000003", "decided_by": "pbx"})
	})

	t.Run("nobody's phone gets no NOTIFY", func(t *testing.T) {
		r := l.simulate(t, "-vendor", "snom", "-mac", "000413000099", "-timeout", "2s")
		if r.code != 1 || r.notifies != 0 {
			t.Fatalf("%s", r)
		}
		l.waitLog(t, map[string]string{"msg": "exchange", "outcome": "observed", "mac": "000413000099"})
	})

	t.Run("PnpReload", func(t *testing.T) {
		cli(t, a, "database put pnp tenant/acme/url http://acme2.example/")
		cmd := l.pbx.Command(context.Background(), l.bin, "ctl", "-config", l.dir+"/pnpd.toml", "reload")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pnpd ctl reload: %v\n%s", err, out)
		}
		l.waitLog(t, map[string]string{"msg": "pbx snapshot", "why": "PnpReload", "phones": "3"})
		r := l.simulate(t, "-vendor", "htek", "-mac", "001fc1000001")
		if r.code != 0 || r.url != "http://acme2.example/" {
			t.Fatalf("%s", r)
		}
	})
	if n := len(events.all("PnpSeen")); n != 5 {
		t.Errorf("%d PnpSeen events for 5 SUBSCRIBEs", n)
	}
}

// waitSeen waits for pnp/seen/<mac> to hold the outcome.
func waitSeen(t *testing.T, a *asterisktest.Instance, mac, outcome string) url.Values {
	t.Helper()
	deadline := time.Now().Add(logTimeout)
	for {
		v := seenRecord(t, a, mac)
		if v.Get("outcome") == outcome {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("seen/%s = %v, want outcome %s", mac, v, outcome)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPBXRaceWith401 puts a PJSIP Asterisk bound to 0.0.0.0:5060 on the
// phone's LAN (a third namespace, bridged with the phone's), with the group
// joined there: it answers every multicast SUBSCRIBE 401, the seed
// capture's second SIP server. Phones assigned after pnpd's last snapshot
// must each get pnpd's URL from the PBX, and pnpd's 200 must come first.
//
// That the 200 leaves before the PBX is asked is pinned without a clock by
// pkg/pnp's TestAskedAfterThe200; here two processes race on a shared,
// noisy machine, so the order is counted, as TestBesideRawOrdering counts
// it: at least raceNeed of raceRuns phones, a second batch when the first
// falls short.
func TestPBXRaceWith401(t *testing.T) {
	l := newLab(t)
	rivalNS, rivalIf := addRival(t, l)
	a := asterisktest.Start(t, asterisktest.Options{NS: l.pbx})
	rival := asterisktest.Start(t, asterisktest.Options{NS: rivalNS,
		PJSIP: asterisk.UDPTransport("0.0.0.0:5060")})
	join := joinGroup(t, rivalNS, rivalIf)
	defer join.Close()
	l.start("", pbxConf(a, `refresh = "0s"`))
	l.waitLog(t, map[string]string{"msg": "pbx snapshot", "why": "login"})

	const (
		raceRuns = 10
		raceNeed = 8
	)
	var first, raced int
	phone := 0
	for batch := range 2 {
		first, raced = 0, 0
		for range raceRuns {
			mac := fmt.Sprintf("001fc1%06x", 0x10+phone)
			phone++
			url := "http://late.example/" + mac
			cli(t, a, "database put pnp mac/"+mac+" "+url)
			r := l.simulate(t, "-vendor", "htek", "-mac", mac, "-linger", "300ms")
			if r.code != 0 || r.url != url || r.notifies != 1 || !slices.Contains(r.responses, "200") {
				t.Fatalf("phone %s: %s", mac, r)
			}
			if r.responses[0] == "200" {
				first++
			}
			if slices.Contains(r.responses, "401") {
				raced++
			}
			l.waitLog(t, map[string]string{"msg": "exchange", "outcome": "provisioned", "mac": mac, "decided_by": "pbx"})
		}
		t.Logf("batch %d: pnpd's 200 first for %d of %d phones; the rival's 401 reached %d", batch+1, first, raceRuns, raced)
		if first >= raceNeed {
			break
		}
	}
	if first < raceNeed {
		t.Errorf("pnpd's 200 came first for %d of %d phones (twice), want at least %d", first, raceRuns, raceNeed)
	}
	// The race was real: the rival answered too.
	if raced == 0 {
		t.Errorf("the rival Asterisk answered none of %d SUBSCRIBEs; its log:\n%s", raceRuns, rival.Log())
	}
}

// addRival adds a third host to the phone's LAN: it bridges the phone's
// link in the phone namespace with a new veth to a new namespace, moves the
// phone's address to the bridge (l.phoneIf becomes the bridge), and
// returns the new namespace and its interface (198.18.0.3/24).
func addRival(t *testing.T, l *lab) (*netns.NS, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rv, err := netns.New(ctx, netns.UniqueName(nsPrefix+"-rival"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := rv.Close(); err != nil {
			t.Errorf("removing namespace: %v", err)
		}
	})
	id := fmt.Sprintf("%d", time.Now().UnixNano()%1000000)
	br, va, vb := "br"+id, "rv"+id+"a", "rv"+id+"b"
	ph := l.phone
	steps := [][]string{
		{"link", "add", br, "type", "bridge", "mcast_snooping", "0"},
		{"addr", "del", l.pair.BAddr.String(), "dev", l.phoneIf},
		{"link", "set", l.phoneIf, "master", br},
		{"addr", "add", l.pair.BAddr.String(), "dev", br},
		{"link", "set", br, "up"},
		{"route", "replace", "224.0.0.0/4", "dev", br},
		{"link", "add", va, "type", "veth", "peer", "name", vb, "netns", rv.Name},
		{"link", "set", va, "master", br},
		{"link", "set", va, "up"},
	}
	for _, s := range steps {
		if out, err := ph.IP(ctx, s...); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(s, " "), err, out)
		}
	}
	for _, s := range [][]string{{"addr", "add", "198.18.0.3/24", "dev", vb}, {"link", "set", vb, "up"}} {
		if out, err := rv.IP(ctx, s...); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(s, " "), err, out)
		}
	}
	l.phoneIf = br
	return rv, vb
}

// joinGroup joins 224.0.1.75 on ifname inside ns with a socket of its own
// (not on 5060), so that the kernel there delivers the group's datagrams to
// every socket bound to the port, Asterisk's among them.
func joinGroup(t *testing.T, ns *netns.NS, ifname string) *net.UDPConn {
	t.Helper()
	ifi, err := ns.InterfaceByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	var c *net.UDPConn
	err = ns.Do(func() error {
		var err error
		c, err = net.ListenMulticastUDP("udp4", ifi, &net.UDPAddr{IP: net.IPv4(224, 0, 1, 75), Port: 5061})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPBXKilled(t *testing.T) {
	l := newLab(t)
	a := asterisktest.Start(t, asterisktest.Options{NS: l.pbx})
	macs := []string{"001fc1000021", "001fc1000022", "001fc1000023"}
	for _, m := range macs {
		cli(t, a, "database put pnp mac/"+m+" acme")
	}
	cli(t, a, "database put pnp tenant/acme/url http://acme.example/")
	a.WaitAstDBCommitted(t)
	l.start("", pbxConf(a, `refresh = "1s"`))
	l.waitLog(t, map[string]string{"msg": "pbx snapshot", "why": "login", "phones": "3"})

	a.Kill(t)
	l.waitLog(t, map[string]string{"msg": "pbx not connected: answering from the last snapshot until it is back"})
	for _, m := range macs {
		r := l.simulate(t, "-vendor", "htek", "-mac", m)
		if r.code != 0 || r.url != "http://acme.example/" {
			t.Fatalf("with Asterisk down: %s", r)
		}
	}
	if n := len(l.logLines(map[string]string{"msg": "pbx not connected: answering from the last snapshot until it is back"})); n != 1 {
		t.Errorf("said %d times that the PBX is away, want once", n)
	}

	a.Start(t)
	l.waitLog(t, map[string]string{"msg": "pbx connected again: taking a new snapshot"})
	for _, m := range macs {
		v := waitSeen(t, a, m, "provisioned")
		if v.Get("brand") != "htek" || v.Get("host") != "acme.example" || v.Get("interface") != l.pbxIf {
			t.Errorf("seen/%s = %v", m, v)
		}
	}
	// The periodic refresh picks up what the CLI changed.
	cli(t, a, "database put pnp mac/001fc1000024 acme")
	l.waitLog(t, map[string]string{"msg": "pbx snapshot", "why": "refresh", "phones": "4"})
	if n := len(l.logLines(map[string]string{"msg": "pbx write queue full: writes are being lost"})); n != 0 {
		t.Errorf("writes lost")
	}
}

// TestOpsScript runs examples/ops/pnp-ops.sh, the CLI-and-plain-AMI twin of
// pnpd ctl, against a real Asterisk: its changes land in the family and
// each is announced with PnpReload.
func TestOpsScript(t *testing.T) {
	a := asterisktest.Start(t, asterisktest.Options{})
	events := amiEvents(t, a)
	host, port, _ := net.SplitHostPort(a.Addr)
	script, err := filepath.Abs(filepath.Join("..", "..", "examples", "ops", "pnp-ops.sh"))
	if err != nil {
		t.Fatal(err)
	}
	ops := func(want int, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...)
		cmd.Env = append(os.Environ(), "ASTERISK="+a.Wrapper(t), "AMI_HOST="+host, "AMI_PORT="+port,
			"AMI_USER="+a.Username, "AMI_SECRET="+a.Secret)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != want {
			t.Fatalf("pnp-ops.sh %s: exit %d, want %d\n%s", strings.Join(args, " "), code, want, out)
		}
		return string(out)
	}
	ops(0, "tenant-set", "acme", "http://acme.example/{mac}/")
	events.wait(t, "PnpReload", func(map[string]string) bool { return true })
	ops(0, "assign", "00:04:13:AA:BB:CC", "acme")
	events.wait(t, "PnpReload", func(map[string]string) bool { return true })
	if out := a.CLI(t, "database get pnp mac/000413aabbcc"); !strings.Contains(out, "Value: acme") {
		t.Errorf("assign: %s", out)
	}
	if out := a.CLI(t, "database get pnp tenant/acme/url"); !strings.Contains(out, "http://acme.example/{mac}/") {
		t.Errorf("tenant-set: %s", out)
	}
	ops(0, "unassign", "000413aabbcc")
	events.wait(t, "PnpReload", func(map[string]string) bool { return true })
	ops(1, "unassign", "000413aabbcc") // gone already: Asterisk says so
	ops(2, "assign", "nonsense", "acme")

	// The policy's keys (issue 6), as pnpd ctl writes them.
	a.CLI(t, "database put pnp pending/000413aabbcc brand=snom&outcome=pending")
	if out := ops(0, "pending"); !strings.Contains(out, "000413aabbcc") {
		t.Errorf("pending: %s", out)
	}
	ops(0, "approve", "00:04:13:aa:bb:cc", "acme")
	events.wait(t, "PnpReload", func(map[string]string) bool { return true })
	if out := a.CLI(t, "database get pnp pending/000413aabbcc"); !strings.Contains(out, "not found") {
		t.Errorf("approve left the pending entry: %s", out)
	}
	if out := a.CLI(t, "database get pnp mac/000413aabbcc"); !strings.Contains(out, "Value: acme") {
		t.Errorf("approve: %s", out)
	}
	ops(0, "window-open", "30m")
	events.wait(t, "PnpReload", func(map[string]string) bool { return true })
	out := a.CLI(t, "database get pnp window")
	v, _ := strings.CutPrefix(strings.TrimSpace(out), "Value: ")
	if until, err := time.Parse(time.RFC3339, v); err != nil || until.Before(time.Now().Add(25*time.Minute)) || until.After(time.Now().Add(31*time.Minute)) {
		t.Errorf("window-open 30m wrote %q", out)
	}
	ops(2, "window-open", "30")
	ops(0, "window-close")
	ops(1, "window-close") // not open: Asterisk says so
	a.CLI(t, "database put pnp provisioned/000413aabbcc 2026-11-26T00:00:00Z")
	ops(0, "rearm", "000413aabbcc")
	if out := a.CLI(t, "database get pnp provisioned/000413aabbcc"); !strings.Contains(out, "not found") {
		t.Errorf("rearm: %s", out)
	}
}
