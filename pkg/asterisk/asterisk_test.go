package asterisk

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/netns"
	"github.com/pnpd/pnpd/pkg/netns/netnstest"
)

// start is Start for a test that needs the prepared root: it skips (or
// fails under CI=true) without one, and closes the instance when the test
// ends.
func start(t *testing.T, opts Options) *Instance {
	t.Helper()
	if _, err := FindRoot(); err != nil {
		netnstest.SkipOrFail(t, "needs a real Asterisk: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*StartTimeout)
	defer cancel()
	a, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last lines of Asterisk's log:\n%s", a.LogTail(60))
		}
		if err := a.Close(); err != nil {
			t.Error(err)
		}
	})
	return a
}

// cli is Instance.CLI that fails the test when Asterisk cannot be reached.
func cli(t *testing.T, a *Instance, command string) string {
	t.Helper()
	out, err := a.CLI(context.Background(), command)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ami is a bare AMI session over a plain connection.
type ami struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
	n int
}

// dial connects to a's AMI and checks the banner.
func dial(t testing.TB, a *Instance) *ami {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := a.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	s := &ami{t: t, c: c, r: bufio.NewReader(c)}
	banner, err := s.r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(banner, "Asterisk Call Manager/") {
		t.Fatalf("banner %q", banner)
	}
	return s
}

// read returns the next message, header -> value.
func (s *ami) read() map[string]string {
	s.t.Helper()
	m := map[string]string{}
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			s.t.Fatalf("reading AMI: %v (so far %v)", err, m)
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
func (s *ami) action(lines ...string) map[string]string {
	s.t.Helper()
	s.n++
	id := fmt.Sprintf("t%d", s.n)
	msg := strings.Join(lines, "\r\n") + "\r\nActionID: " + id + "\r\n\r\n"
	if _, err := s.c.Write([]byte(msg)); err != nil {
		s.t.Fatal(err)
	}
	for {
		m := s.read()
		if _, ok := m["Response"]; ok && m["ActionID"] == id {
			return m
		}
	}
}

func (s *ami) login(user, secret string) map[string]string {
	s.t.Helper()
	return s.action("Action: Login", "Username: "+user, "Secret: "+secret)
}

// fakeRoot makes a root with the files findPaths looks for, the loader an
// executable file that loaderLink (relative to the root) leads to.
func fakeRoot(t *testing.T, loaderLink string) string {
	t.Helper()
	root := t.TempDir()
	write := func(name string, mode os.FileMode) {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, mode); err != nil {
			t.Fatal(err)
		}
	}
	write(readyMark, 0o644)
	write("usr/sbin/asterisk", 0o755)
	write("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", 0o755)
	write("usr/lib/x86_64-linux-gnu/asterisk/modules/pbx_config.so", 0o644)
	if err := os.MkdirAll(filepath.Join(root, "usr/lib64"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(loaderLink, filepath.Join(root, "usr/lib64/ld-linux-x86-64.so.2")); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestFindPaths(t *testing.T) {
	root := fakeRoot(t, "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
	t.Setenv(EnvRoot, root+"/")
	p, err := findPaths()
	if err != nil {
		t.Fatal(err)
	}
	want := paths{
		root:     root,
		loader:   filepath.Join(root, "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
		libDir:   filepath.Join(root, "usr/lib/x86_64-linux-gnu"),
		asterisk: filepath.Join(root, "usr/sbin/asterisk"),
		modDir:   filepath.Join(root, "usr/lib/x86_64-linux-gnu/asterisk/modules"),
		dataDir:  filepath.Join(root, "usr/share/asterisk"),
		sbinDir:  filepath.Join(root, "usr/sbin"),
	}
	if p != want {
		t.Fatalf("findPaths:\n got %+v\nwant %+v", p, want)
	}
	if got, err := FindRoot(); err != nil || got != root {
		t.Fatalf("FindRoot: %q, %v; want %q", got, err, root)
	}
}

func TestFindRootErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		root func(t *testing.T) string
		want string
	}{
		{"missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), "none") }, "missing or unfinished"},
		{"unfinished", func(t *testing.T) string { return t.TempDir() }, "missing or unfinished"},
		{"not executable", func(t *testing.T) string {
			root := fakeRoot(t, "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
			if err := os.Chmod(filepath.Join(root, "usr/sbin/asterisk"), 0o644); err != nil {
				t.Fatal(err)
			}
			return root
		}, "is not an executable file"},
		// An absolute link would run the host's loader with the root's
		// libraries.
		{"loader outside", func(t *testing.T) string {
			root := fakeRoot(t, "/bin/true")
			if err := os.Remove(filepath.Join(root, "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")); err != nil {
				t.Fatal(err)
			}
			return root
		}, "leads out of the root"},
		{"no modules", func(t *testing.T) string {
			root := fakeRoot(t, "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
			if err := os.Remove(filepath.Join(root, "usr/lib/x86_64-linux-gnu/asterisk/modules/pbx_config.so")); err != nil {
				t.Fatal(err)
			}
			return root
		}, "no Asterisk modules"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvRoot, tc.root(t))
			_, err := FindRoot()
			if !errors.Is(err, ErrNoRoot) {
				t.Fatalf("FindRoot: %v; want ErrNoRoot", err)
			}
			for _, want := range []string{tc.want, "scripts/asterisk-root", EnvRoot} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q: %v", want, err)
				}
			}
			// Start says the same before it makes anything.
			if _, err := Start(context.Background(), Options{}); !errors.Is(err, ErrNoRoot) {
				t.Errorf("Start: %v; want ErrNoRoot", err)
			}
		})
	}
}

func TestFillUsers(t *testing.T) {
	users, err := fillUsers(nil)
	if err != nil || len(users) != 1 || users[0].Name != "pnpd" || len(users[0].Secret) != 24 ||
		!strings.Contains(users[0].Write, "originate") {
		t.Fatalf("default: %+v, %v", users, err)
	}
	in := []User{{Name: "admin", Secret: "s3cret", Read: "all", Write: "all"}, {Name: "reader", Read: "user"}}
	users, err = fillUsers(in)
	if err != nil || users[0] != in[0] || users[1].Secret == "" || in[1].Secret != "" {
		t.Fatalf("given: %+v, %v (in %+v)", users, err, in)
	}
	for _, bad := range [][]User{
		{{Name: ""}},
		{{Name: "general"}},
		{{Name: "a]b"}},
		{{Name: "a=b"}},
		{{Name: "a"}, {Name: "a"}},
		{{Name: "a", Secret: "x;y"}},
		{{Name: "a", Read: "user\nwrite = all"}},
	} {
		if users, err := fillUsers(bad); err == nil {
			t.Errorf("fillUsers(%+v) = %+v, no error", bad, users)
		}
	}
}

func TestListens(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	if own, err := listens(os.Getpid(), addr); err != nil || !own {
		t.Errorf("listens(self, %s) = %v, %v; want true", addr, own, err)
	}
	// The parent shares the network namespace, so it sees the listener
	// in its /proc/PID/net/tcp, but holds no descriptor of it.
	if own, err := listens(os.Getppid(), addr); err != nil || own {
		t.Errorf("listens(parent, %s) = %v, %v; want false", addr, own, err)
	}
	l.Close()
	if own, err := listens(os.Getpid(), addr); err != nil || own {
		t.Errorf("listens(self, %s) after Close = %v, %v; want false", addr, own, err)
	}
}

func TestFreePort(t *testing.T) {
	for _, network := range []string{"tcp", "udp"} {
		port, err := FreePort(nil, network)
		if err != nil || port <= 0 || port > 65535 {
			t.Errorf("FreePort(%s) = %d, %v", network, port, err)
		}
	}
	if _, err := FreePort(nil, "sctp"); err == nil {
		t.Error("FreePort(sctp): no error")
	}
}

func TestLastLines(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"", 3, ""},
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb", 5, "a\nb"},
		{"a\n\n\n", 1, "a"},
	} {
		if got := lastLines(tc.s, tc.n); got != tc.want {
			t.Errorf("lastLines(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}

func TestLoginAndAstDB(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	a := start(t, Options{})
	t.Logf("started in %v: dir %s, AMI %s, pid %d", time.Since(begin), a.Dir, a.Addr, a.PID())

	s := dial(t, a)
	if m := s.login(a.Username, a.Secret); m["Response"] != "Success" {
		t.Fatalf("login: %v", m)
	}
	if m := s.action("Action: Ping"); m["Response"] != "Success" {
		t.Fatalf("ping: %v", m)
	}
	bad := dial(t, a)
	if m := bad.login(a.Username, a.Secret+"x"); m["Response"] != "Error" {
		t.Fatalf("login with a wrong secret: %v", m)
	}

	if out := cli(t, a, "database put pnp mac/001fc11b4e1c acme"); !strings.Contains(out, "Updated database successfully") {
		t.Fatalf("database put: %q", out)
	}
	if out := cli(t, a, "database get pnp mac/001fc11b4e1c"); !strings.Contains(out, "Value: acme") {
		t.Fatalf("database get: %q", out)
	}
	// AMI sees the same AstDB.
	if m := s.action("Action: DBGet", "Family: pnp", "Key: mac/001fc11b4e1c"); m["Response"] != "Success" {
		t.Fatalf("DBGet: %v", m)
	}
	if !strings.Contains(a.Log(), "Asterisk Ready") {
		t.Errorf("log lacks \"Asterisk Ready\":\n%s", a.Log())
	}
	if !strings.Contains(a.Stdio(), "=== pkg/asterisk: starting Asterisk") {
		t.Errorf("stdio lacks the start's heading:\n%s", a.Stdio())
	}
}

func TestKillRestartKeepsAstDB(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := start(t, Options{})
	cli(t, a, "database put pnp mac/001fc11b4e1c acme")
	if err := a.WaitAstDBCommitted(ctx); err != nil {
		t.Fatal(err)
	}
	addr, pid := a.Addr, a.PID()

	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	if a.PID() != 0 {
		t.Fatalf("PID after Kill: %d", a.PID())
	}
	if err := a.Kill(); err == nil {
		t.Error("Kill of a stopped Asterisk: no error")
	}
	begin := time.Now()
	if err := a.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted after SIGKILL in %v", time.Since(begin))
	if a.PID() == 0 || a.PID() == pid || a.Addr != addr {
		t.Fatalf("after restart: pid %d (was %d), addr %s (was %s)", a.PID(), pid, a.Addr, addr)
	}
	running := a.PID()
	if err := a.Restart(ctx); !errors.Is(err, errRunning) || a.PID() != running {
		t.Fatalf("Restart of a running Asterisk: %v, pid %d after (was %d)", err, a.PID(), running)
	}
	if out := cli(t, a, "database get pnp mac/001fc11b4e1c"); !strings.Contains(out, "Value: acme") {
		t.Fatalf("database get after Kill and Restart: %q", out)
	}
	s := dial(t, a)
	if m := s.login(a.Username, a.Secret); m["Response"] != "Success" {
		t.Fatalf("login after restart: %v", m)
	}

	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if out := cli(t, a, "database get pnp mac/001fc11b4e1c"); !strings.Contains(out, "Value: acme") {
		t.Fatalf("database get after Stop and Restart: %q", out)
	}

	// A Stop whose ctx has ended kills at once.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.Stop(cancelled); !errors.Is(err, context.Canceled) || a.PID() != 0 {
		t.Fatalf("Stop with an ended ctx: %v, pid %d after", err, a.PID())
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	a := start(t, Options{})
	pid := a.PID()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("Asterisk (pid %d) after Close: kill -0: %v", pid, err)
	}
	if _, err := os.Stat(a.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after Close: %v", a.Dir, err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := a.Restart(context.Background()); !errors.Is(err, errClosed) {
		t.Errorf("Restart after Close: %v; want errClosed", err)
	}
}

// TestStartFails: a start that fails leaves nothing running and nothing
// on disk, and its error shows why.
func TestStartFails(t *testing.T) {
	if _, err := FindRoot(); err != nil {
		netnstest.SkipOrFail(t, "needs a real Asterisk: %v", err)
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ctx := context.Background()

	_, err := Start(ctx, Options{Files: map[string]string{"../x.conf": ""}})
	if err == nil || !strings.Contains(err.Error(), "not a plain file name") {
		t.Errorf("Start with a bad file name: %v", err)
	}
	// Asterisk exits at once when a required module is missing.
	_, err = Start(ctx, Options{Files: map[string]string{
		"modules.conf": "[modules]\nautoload = no\nrequire => res_pnpd_no_such_module.so\n",
	}})
	if err == nil {
		t.Fatal("Start with a missing required module: no error")
	}
	t.Logf("the error:\n%v", err)
	for _, want := range []string{"exited while starting", "--- Asterisk's stdout and stderr", "--- Asterisk's log", "res_pnpd_no_such_module"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q", want)
		}
	}
	if left, err := os.ReadDir(tmp); err != nil || len(left) != 0 {
		t.Errorf("left in TMPDIR: %v, %v", left, err)
	}

	// A ctx that ends during the start ends the wait.
	short, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	if _, err := Start(short, Options{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Start with a 1 ms ctx: %v; want context.DeadlineExceeded", err)
	}
	if left, err := os.ReadDir(tmp); err != nil || len(left) != 0 {
		t.Errorf("left in TMPDIR: %v, %v", left, err)
	}
}

// TestTwoInstances runs two at once: each has its own AstDB and port.
func TestTwoInstances(t *testing.T) {
	t.Parallel()
	var as [2]*Instance
	for k := range as {
		as[k] = start(t, Options{})
	}
	if as[0].Addr == as[1].Addr || as[0].Dir == as[1].Dir {
		t.Fatalf("shared: %s %s, %s %s", as[0].Addr, as[1].Addr, as[0].Dir, as[1].Dir)
	}
	cli(t, as[0], "database put pnp only first")
	if out := cli(t, as[1], "database get pnp only"); !strings.Contains(out, "not found") {
		t.Fatalf("the second instance sees the first one's AstDB: %q", out)
	}
	for _, a := range as {
		s := dial(t, a)
		if m := s.login(a.Username, a.Secret); m["Response"] != "Success" {
			t.Fatalf("login to %s: %v", a.Addr, m)
		}
	}
}

func TestUsersLiveDangerouslyAndFiles(t *testing.T) {
	t.Parallel()
	a := start(t, Options{
		Users: []User{
			{Name: "admin", Secret: "s3cret", Read: "all", Write: "all"},
			{Name: "reader", Read: "user", Write: "reporting"},
		},
		LiveDangerously: true,
		Files: map[string]string{
			"extensions.conf": "[general]\n[pnp-test]\nexten => s,1,NoOp(hello)\n",
		},
	})
	if a.Username != "admin" || a.Secret != "s3cret" || len(a.Users) != 2 || a.Users[1].Secret == "" {
		t.Fatalf("users: %+v", a.Users)
	}
	cli(t, a, "database put pnp mac/001fc11b4e1c acme")
	s := dial(t, a)
	if m := s.login("admin", "s3cret"); m["Response"] != "Success" {
		t.Fatalf("login: %v", m)
	}
	// Privileged dialplan functions answer AMI only with live_dangerously.
	if m := s.action("Action: Getvar", "Variable: DB(pnp/mac/001fc11b4e1c)"); m["Value"] != "acme" {
		t.Fatalf("Getvar DB(): %v", m)
	}
	r := dial(t, a)
	if m := r.login("reader", a.Users[1].Secret); m["Response"] != "Success" {
		t.Fatalf("login of reader: %v", m)
	}
	if out := cli(t, a, "dialplan show pnp-test"); !strings.Contains(out, "NoOp(hello)") {
		t.Fatalf("dialplan from Options.Files: %q", out)
	}

	// WriteFile and a reload replace the dialplan.
	if err := a.WriteFile("extensions.conf", "[general]\n[pnp-test]\nexten => s,1,NoOp(again)\n"); err != nil {
		t.Fatal(err)
	}
	cli(t, a, "dialplan reload")
	if out := cli(t, a, "dialplan show pnp-test"); !strings.Contains(out, "NoOp(again)") {
		t.Fatalf("dialplan after WriteFile and reload: %q", out)
	}
	if err := a.WriteFile("../x.conf", ""); err == nil {
		t.Error("WriteFile(../x.conf): no error")
	}

	// The wrapper script reaches the same Asterisk.
	w, err := a.Wrapper()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(w, "-rx", "database get pnp mac/001fc11b4e1c").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Value: acme") {
		t.Fatalf("%s -rx 'database get ...': %q, %v", w, out, err)
	}
}

func TestPJSIP(t *testing.T) {
	t.Parallel()
	port, err := FreePort(nil, "udp")
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, Options{
		PJSIP: UDPTransport(fmt.Sprintf("127.0.0.1:%d", port)),
	})
	out := cli(t, a, "pjsip show transports")
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
	a := start(t, Options{NS: ns})
	s := dial(t, a)
	if m := s.login(a.Username, a.Secret); m["Response"] != "Success" {
		t.Fatalf("login: %v", m)
	}
	// From the host's namespace the port is not Asterisk's.
	if c, err := net.DialTimeout("tcp4", a.Addr, time.Second); err == nil {
		c.Close()
		t.Logf("note: something on the host listens on %s too", a.Addr)
	}
	if _, err := a.Wrapper(); err == nil {
		t.Error("Wrapper in a namespace: no error")
	}
	cli(t, a, "database put pnp ns yes")
	if err := a.WaitAstDBCommitted(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := a.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if out := cli(t, a, "database get pnp ns"); !strings.Contains(out, "Value: yes") {
		t.Fatalf("database get after restart in the namespace: %q", out)
	}
}
