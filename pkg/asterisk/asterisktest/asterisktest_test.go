package asterisktest_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/asterisk/asterisktest"
	"github.com/pnpd/pnpd/pkg/netns"
	"github.com/pnpd/pnpd/pkg/netns/netnstest"
)

// ami is a bare AMI session over a plain connection.
type ami struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
	n int
}

// dial connects to inst's AMI and checks the banner.
func dial(t testing.TB, inst *asterisktest.Instance) *ami {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := inst.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	a := &ami{t: t, c: c, r: bufio.NewReader(c)}
	banner, err := a.r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(banner, "Asterisk Call Manager/") {
		t.Fatalf("banner %q", banner)
	}
	return a
}

// read returns the next message, header -> value.
func (a *ami) read() map[string]string {
	a.t.Helper()
	m := map[string]string{}
	for {
		line, err := a.r.ReadString('\n')
		if err != nil {
			a.t.Fatalf("reading AMI: %v (so far %v)", err, m)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if len(m) == 0 {
				continue
			}
			return m
		}
		k, v, _ := strings.Cut(line, ":")
		m[k] = strings.TrimSpace(v)
	}
}

// action sends an action (header lines "Key: value") and returns its
// response, skipping events.
func (a *ami) action(lines ...string) map[string]string {
	a.t.Helper()
	a.n++
	id := fmt.Sprintf("t%d", a.n)
	msg := strings.Join(lines, "\r\n") + "\r\nActionID: " + id + "\r\n\r\n"
	if _, err := a.c.Write([]byte(msg)); err != nil {
		a.t.Fatal(err)
	}
	for {
		m := a.read()
		if _, ok := m["Response"]; ok && m["ActionID"] == id {
			return m
		}
	}
}

func (a *ami) login(user, secret string) map[string]string {
	a.t.Helper()
	return a.action("Action: Login", "Username: "+user, "Secret: "+secret)
}

func TestLoginAndAstDB(t *testing.T) {
	t.Parallel()
	start := time.Now()
	inst := asterisktest.Start(t, asterisktest.Options{})
	t.Logf("started in %v: dir %s, AMI %s, pid %d", time.Since(start), inst.Dir, inst.Addr, inst.PID())

	a := dial(t, inst)
	if m := a.login(inst.Username, inst.Secret); m["Response"] != "Success" {
		t.Fatalf("login: %v", m)
	}
	if m := a.action("Action: Ping"); m["Response"] != "Success" {
		t.Fatalf("ping: %v", m)
	}
	bad := dial(t, inst)
	if m := bad.login(inst.Username, inst.Secret+"x"); m["Response"] != "Error" {
		t.Fatalf("login with a wrong secret: %v", m)
	}

	if out := inst.CLI(t, "database put pnp mac/001fc11b4e1c acme"); !strings.Contains(out, "Updated database successfully") {
		t.Fatalf("database put: %q", out)
	}
	if out := inst.CLI(t, "database get pnp mac/001fc11b4e1c"); !strings.Contains(out, "Value: acme") {
		t.Fatalf("database get: %q", out)
	}
	// AMI sees the same AstDB.
	if m := a.action("Action: DBGet", "Family: pnp", "Key: mac/001fc11b4e1c"); m["Response"] != "Success" {
		t.Fatalf("DBGet: %v", m)
	}
	if !strings.Contains(inst.Log(), "Asterisk Ready") {
		t.Errorf("log lacks \"Asterisk Ready\":\n%s", inst.Log())
	}
}

func TestKillRestartKeepsAstDB(t *testing.T) {
	t.Parallel()
	inst := asterisktest.Start(t, asterisktest.Options{})
	inst.CLI(t, "database put pnp mac/001fc11b4e1c acme")
	inst.WaitAstDBCommitted(t)
	addr, pid := inst.Addr, inst.PID()

	inst.Kill(t)
	if inst.PID() != 0 {
		t.Fatalf("PID after Kill: %d", inst.PID())
	}
	start := time.Now()
	inst.Start(t)
	t.Logf("restarted after SIGKILL in %v", time.Since(start))
	if inst.PID() == 0 || inst.PID() == pid || inst.Addr != addr {
		t.Fatalf("after restart: pid %d (was %d), addr %s (was %s)", inst.PID(), pid, inst.Addr, addr)
	}
	if out := inst.CLI(t, "database get pnp mac/001fc11b4e1c"); !strings.Contains(out, "Value: acme") {
		t.Fatalf("database get after Kill and Start: %q", out)
	}
	a := dial(t, inst)
	if m := a.login(inst.Username, inst.Secret); m["Response"] != "Success" {
		t.Fatalf("login after restart: %v", m)
	}

	inst.Stop(t)
	inst.Start(t)
	if out := inst.CLI(t, "database get pnp mac/001fc11b4e1c"); !strings.Contains(out, "Value: acme") {
		t.Fatalf("database get after Stop and Start: %q", out)
	}
}

// TestTwoInstances runs two at once: each has its own AstDB and port.
func TestTwoInstances(t *testing.T) {
	t.Parallel()
	var insts [2]*asterisktest.Instance
	for k := range insts {
		insts[k] = asterisktest.Start(t, asterisktest.Options{})
	}
	if insts[0].Addr == insts[1].Addr || insts[0].Dir == insts[1].Dir {
		t.Fatalf("shared: %s %s, %s %s", insts[0].Addr, insts[1].Addr, insts[0].Dir, insts[1].Dir)
	}
	insts[0].CLI(t, "database put pnp only first")
	if out := insts[1].CLI(t, "database get pnp only"); !strings.Contains(out, "not found") {
		t.Fatalf("the second instance sees the first one's AstDB: %q", out)
	}
	for _, inst := range insts {
		a := dial(t, inst)
		if m := a.login(inst.Username, inst.Secret); m["Response"] != "Success" {
			t.Fatalf("login to %s: %v", inst.Addr, m)
		}
	}
}

func TestParallel(t *testing.T) {
	for k := range 2 {
		t.Run(fmt.Sprint(k), func(t *testing.T) {
			t.Parallel()
			inst := asterisktest.Start(t, asterisktest.Options{})
			inst.CLI(t, fmt.Sprintf("database put pnp n %d", k))
			if out := inst.CLI(t, "database get pnp n"); !strings.Contains(out, fmt.Sprintf("Value: %d", k)) {
				t.Fatalf("database get: %q", out)
			}
		})
	}
}

func TestUsersAndLiveDangerously(t *testing.T) {
	t.Parallel()
	inst := asterisktest.Start(t, asterisktest.Options{
		Users: []asterisktest.User{
			{Name: "admin", Secret: "s3cret", Read: "all", Write: "all"},
			{Name: "reader", Read: "user", Write: "reporting"},
		},
		LiveDangerously: true,
		Files: map[string]string{
			"extensions.conf": "[general]\n[pnp-test]\nexten => s,1,NoOp(hello)\n",
		},
	})
	if inst.Username != "admin" || inst.Secret != "s3cret" || len(inst.Users) != 2 || inst.Users[1].Secret == "" {
		t.Fatalf("users: %+v", inst.Users)
	}
	inst.CLI(t, "database put pnp mac/001fc11b4e1c acme")
	a := dial(t, inst)
	if m := a.login("admin", "s3cret"); m["Response"] != "Success" {
		t.Fatalf("login: %v", m)
	}
	// Privileged dialplan functions answer AMI only with live_dangerously.
	if m := a.action("Action: Getvar", "Variable: DB(pnp/mac/001fc11b4e1c)"); m["Value"] != "acme" {
		t.Fatalf("Getvar DB(): %v", m)
	}
	r := dial(t, inst)
	if m := r.login("reader", inst.Users[1].Secret); m["Response"] != "Success" {
		t.Fatalf("login of reader: %v", m)
	}
	if out := inst.CLI(t, "dialplan show pnp-test"); !strings.Contains(out, "NoOp(hello)") {
		t.Fatalf("dialplan from Options.Files: %q", out)
	}
}

func TestPJSIP(t *testing.T) {
	t.Parallel()
	port := asterisktest.FreePort(t, nil, "udp")
	inst := asterisktest.Start(t, asterisktest.Options{
		PJSIP: fmt.Sprintf("[transport-udp]\ntype=transport\nprotocol=udp\nbind=127.0.0.1:%d\n", port),
	})
	out := inst.CLI(t, "pjsip show transports")
	if !strings.Contains(out, "transport-udp") || !strings.Contains(out, fmt.Sprintf("127.0.0.1:%d", port)) {
		t.Fatalf("pjsip show transports:\n%s", out)
	}
	// The transport's port is taken now.
	if c, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
		c.Close()
		t.Fatalf("127.0.0.1:%d is free: PJSIP did not bind it", port)
	}
}

func TestNamespace(t *testing.T) {
	t.Parallel()
	netnstest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns, err := netns.New(ctx, netns.UniqueName("pnpdast"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Error(err)
		}
	})
	inst := asterisktest.Start(t, asterisktest.Options{NS: ns})
	a := dial(t, inst)
	if m := a.login(inst.Username, inst.Secret); m["Response"] != "Success" {
		t.Fatalf("login: %v", m)
	}
	// From the host's namespace the port is not Asterisk's.
	if c, err := net.DialTimeout("tcp4", inst.Addr, time.Second); err == nil {
		c.Close()
		t.Logf("note: something on the host listens on %s too", inst.Addr)
	}
	inst.CLI(t, "database put pnp ns yes")
	inst.WaitAstDBCommitted(t)
	inst.Kill(t)
	inst.Start(t)
	if out := inst.CLI(t, "database get pnp ns"); !strings.Contains(out, "Value: yes") {
		t.Fatalf("database get after restart in the namespace: %q", out)
	}
}
