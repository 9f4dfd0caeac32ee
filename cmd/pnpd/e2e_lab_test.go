package main

// The integration lab: the pnpd binary, built once per test run, serving in a
// "pbx" network namespace joined by a veth link to a "phone" namespace where
// `pnpd simulate`, sipp and hand-made sockets play the phones. Nothing here
// sends a packet outside namespaces the test made.
//
// Tests assert counts, contents and orderings, never durations: timeouts
// below are generous bounds for a shared, noisy machine, not expectations.

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
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/netns"
	"github.com/pnpd/pnpd/pkg/netns/netnstest"
	"golang.org/x/net/ipv4"
)

const (
	// nsPrefix starts the names of the namespaces these tests make.
	nsPrefix = "pnpde2e"
	// startTimeout bounds waiting for `pnpd serve` to log msg=ready.
	startTimeout = 30 * time.Second
	// runTimeout bounds one simulate, sipp or tshark run.
	runTimeout = 60 * time.Second
	// logTimeout bounds waiting for a line in the serve log after the
	// event that causes it.
	logTimeout = 15 * time.Second
)

// skipOrFail skips the test, except under CI=true where it fails.
var skipOrFail = netnstest.SkipOrFail

// requireLab skips (or fails under CI) unless namespaces can be made, and
// removes namespaces that earlier killed runs of these tests left behind.
func requireLab(t *testing.T) {
	t.Helper()
	if testing.Short() {
		skipOrFail(t, "integration test skipped in -short mode")
	}
	netnstest.Require(t)
	staleOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		removed, err := netns.RemoveStale(ctx, nsPrefix)
		if len(removed) > 0 {
			t.Logf("removed stale namespaces %q", removed)
		}
		if err != nil {
			t.Logf("removing stale namespaces: %v", err)
		}
	})
}

// requireTool skips (or fails under CI) unless the named program is on PATH,
// and returns its path.
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		skipOrFail(t, "%s not found (Debian package %s; scripts/test installs it): %v", name, pkg, err)
	}
	return path
}

var (
	staleOnce sync.Once

	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// buildDirPrefix names the directories the binary is built in:
// "<TMPDIR>/pnpd-e2e-<pid>". Without a TestMain (cmd/pnpd is the lead's) the
// run cannot remove its own when it ends, so each run removes those of
// processes that no longer run, and leaves at most its own behind.
const buildDirPrefix = "pnpd-e2e-"

// pnpdBinary builds the command once per test binary run and returns the
// path of the result.
func pnpdBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		removeStaleBuildDirs()
		dir := filepath.Join(os.TempDir(), buildDirPrefix+strconv.Itoa(os.Getpid()))
		if buildErr = os.MkdirAll(dir, 0o700); buildErr != nil {
			return
		}
		buildBin = filepath.Join(dir, "pnpd")
		// go test puts its own GOROOT/bin first on PATH.
		gobin, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("go command not found to build pnpd: %w", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, gobin, "build", "-o", buildBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// removeStaleBuildDirs removes the build directories of earlier runs whose
// process is gone.
func removeStaleBuildDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), buildDirPrefix+"*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), buildDirPrefix))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue
		}
		_ = os.RemoveAll(d)
	}
}

// syncBuffer is an io.Writer safe for concurrent use that wakes waiters on
// every write.
type syncBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	wake chan struct{} // closed and replaced on every write
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{wake: make(chan struct{})} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	close(b.wake)
	b.wake = make(chan struct{})
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// snapshot returns the text so far and a channel closed at the next write.
func (b *syncBuffer) snapshot() (string, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String(), b.wake
}

// waitLine waits until a complete line satisfies match or ctx is done, and
// returns that line.
func (b *syncBuffer) waitLine(ctx context.Context, match func(string) bool) (string, error) {
	return b.waitLineFrom(ctx, 0, match)
}

// waitLineFrom is waitLine for the lines after the first skip ones.
func (b *syncBuffer) waitLineFrom(ctx context.Context, skip int, match func(string) bool) (string, error) {
	for {
		text, wake := b.snapshot()
		for i, line := range completeLines(text) {
			if i >= skip && match(line) {
				return line, nil
			}
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// completeLines returns the newline-terminated lines of s.
func completeLines(s string) []string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.Split(s[:i], "\n")
	}
	return nil
}

// logfmt parses a line of slog's text handler (key=value, values quoted with
// Go syntax when needed) into a map; later keys win.
func logfmt(line string) map[string]string {
	kv := map[string]string{}
	s := line
	for {
		s = strings.TrimLeft(s, " ")
		if s == "" {
			return kv
		}
		eq := strings.IndexAny(s, "= ")
		if eq < 0 || s[eq] == ' ' {
			// a bare word: skip it
			if eq < 0 {
				return kv
			}
			s = s[eq:]
			continue
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				val, s = s, ""
			} else {
				val, _ = strconv.Unquote(q)
				s = s[len(q):]
			}
		} else if sp := strings.IndexByte(s, ' '); sp >= 0 {
			val, s = s[:sp], s[sp:]
		} else {
			val, s = s, ""
		}
		kv[key] = val
	}
}

// lab is one pbx namespace running `pnpd serve`, linked to one phone
// namespace.
type lab struct {
	t       *testing.T
	bin     string
	pair    *netns.Pair
	pbx     *netns.NS
	phone   *netns.NS
	pbxIf   string
	phoneIf string
	pbxIP   netip.Addr
	phoneIP netip.Addr
	dir     string
	log     *syncBuffer // serve's stderr and stdout
	// prefix, when set, is the command pnpd serve runs under
	// (prlimit ..., setpriv ...).
	prefix  []string
	serve   *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// newLab makes the namespaces and returns the lab without starting pnpd.
func newLab(t *testing.T) *lab {
	t.Helper()
	requireLab(t)
	bin := pnpdBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := netns.NewPair(ctx, netns.Options{Prefix: nsPrefix, Subnet: netip.MustParsePrefix("198.18.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("removing namespaces: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		names, err := netns.List(ctx)
		if err != nil {
			t.Errorf("ip netns list: %v", err)
		}
		for _, ns := range []*netns.NS{p.A, p.B} {
			if slices.Contains(names, ns.Name) {
				t.Errorf("namespace %s left behind", ns.Name)
			}
		}
	})
	return &lab{
		t: t, bin: bin, pair: p,
		pbx: p.A, phone: p.B, pbxIf: p.AIf, phoneIf: p.BIf,
		pbxIP: p.AAddr.Addr(), phoneIP: p.BAddr.Addr(),
		dir: t.TempDir(),
	}
}

// start writes config (the text after a [sip] header naming the pbx veth)
// and runs `pnpd serve` in the pbx namespace until msg=ready. The serve log
// is dumped when the test fails; at cleanup pnpd gets SIGTERM and must exit
// 0.
func (l *lab) start(sipExtra, resolve string) {
	t := l.t
	t.Helper()
	cfg := fmt.Sprintf("[sip]\ninterfaces = [%q]\ngroup = \"224.0.1.75:5060\"\n%s\n%s", l.pbxIf, sipExtra, resolve)
	cfgPath := filepath.Join(l.dir, "pnpd.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	l.run(cfg, "-config", cfgPath)
}

// run starts `pnpd serve -log-level debug args...` in the pbx namespace and
// waits for msg=ready; cfg is shown when the test fails.
func (l *lab) run(cfg string, args ...string) {
	t := l.t
	t.Helper()
	l.log = newSyncBuffer()
	// The context is a backstop against a pnpd that ignores SIGTERM.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	argv := append([]string{l.bin, "serve", "-log-level", "debug"}, args...)
	if len(l.prefix) > 0 {
		argv = append(append([]string(nil), l.prefix...), argv...)
	}
	cmd := l.pbx.Command(ctx, argv[0], argv[1:]...)
	cmd.Stdout = l.log
	cmd.Stderr = l.log
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	l.serve = cmd
	l.exited = make(chan struct{})
	go func() {
		l.waitErr = cmd.Wait()
		close(l.exited)
	}()
	t.Cleanup(func() {
		defer cancel()
		l.stop()
		if t.Failed() {
			t.Logf("config:\n%s", cfg)
			t.Logf("pnpd serve log:\n%s", l.log.String())
		}
	})
	rctx, rcancel := context.WithTimeout(context.Background(), startTimeout)
	defer rcancel()
	go func() {
		select {
		case <-l.exited:
			rcancel() // no point waiting for a dead process
		case <-rctx.Done():
		}
	}()
	if _, err := l.log.waitLine(rctx, func(s string) bool { return logfmt(s)["msg"] == "ready" }); err != nil {
		select {
		case <-l.exited:
			t.Fatalf("pnpd serve exited before msg=ready: %v", l.waitErr)
		default:
			t.Fatalf("pnpd serve logged no msg=ready within %s", startTimeout)
		}
	}
}

// stop sends SIGTERM to pnpd serve and checks it exits 0. It is idempotent.
func (l *lab) stop() {
	t := l.t
	t.Helper()
	if l.serve == nil {
		return
	}
	select {
	case <-l.exited:
	default:
		if err := l.serve.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Errorf("SIGTERM to pnpd serve: %v", err)
		}
		select {
		case <-l.exited:
		case <-time.After(30 * time.Second):
			_ = l.serve.Process.Kill()
			<-l.exited
			t.Errorf("pnpd serve still running 30s after SIGTERM; killed")
		}
	}
	if l.waitErr != nil {
		t.Errorf("pnpd serve after SIGTERM: %v, want exit status 0", l.waitErr)
	}
	l.serve = nil
}

// waitLog waits for a serve log line whose keys have the wanted values, and
// returns its keys.
func (l *lab) waitLog(t *testing.T, want map[string]string) map[string]string {
	t.Helper()
	got, ok := l.findLog(0, want)
	if !ok {
		t.Errorf("serve log has no line with %v", want)
	}
	return got
}

// findLog waits up to logTimeout for a serve log line after the first skip
// whose keys have the wanted values, and returns its keys.
func (l *lab) findLog(skip int, want map[string]string) (map[string]string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), logTimeout)
	defer cancel()
	var got map[string]string
	_, err := l.log.waitLineFrom(ctx, skip, func(s string) bool {
		kv := logfmt(s)
		for k, v := range want {
			if kv[k] != v {
				return false
			}
		}
		got = kv
		return true
	})
	return got, err == nil
}

// logLines returns the serve log lines whose keys have the wanted values.
func (l *lab) logLines(want map[string]string) []map[string]string {
	var out []map[string]string
	for _, line := range completeLines(l.log.String()) {
		kv := logfmt(line)
		ok := true
		for k, v := range want {
			if kv[k] != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, kv)
		}
	}
	return out
}

// simResult is what one `pnpd simulate` run did.
type simResult struct {
	args      []string
	code      int
	stdout    string
	stderr    string
	url       string            // first line of stdout
	summary   map[string]string // keys of the last stderr line "result: ..."
	notifies  int
	responses []string // status codes of the responses to the SUBSCRIBEs
}

func (r simResult) String() string {
	return fmt.Sprintf("pnpd %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// simulate runs `pnpd simulate -iface PHONEVETH args...` in the phone
// namespace and parses its output. It fails the test only when the run
// cannot be made or its summary line is missing.
func (l *lab) simulate(t *testing.T, args ...string) simResult {
	t.Helper()
	return runSimulate(t, l.phone, l.bin, append([]string{"simulate", "-iface", l.phoneIf}, args...))
}

func runSimulate(t *testing.T, ns *netns.NS, bin string, args []string) simResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := ns.Command(ctx, bin, args...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r := simResult{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		t.Fatalf("%v\n%s", err, r)
	}
	if line, _, _ := strings.Cut(r.stdout, "\n"); line != "" {
		r.url = line
	}
	lines := completeLines(r.stderr)
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "result: ") {
		t.Fatalf("last stderr line is no \"result: ...\" summary\n%s", r)
	}
	r.summary = logfmt(strings.TrimPrefix(lines[len(lines)-1], "result: "))
	n, err := strconv.Atoi(r.summary["notifies"])
	if err != nil {
		t.Fatalf("summary notifies=%q: %v\n%s", r.summary["notifies"], err, r)
	}
	r.notifies = n
	if s := r.summary["responses"]; s != "" {
		r.responses = strings.Split(s, ",")
	}
	return r
}

// phoneConn opens a UDP socket of the phone namespace bound to a:port (0:
// any port) whose multicasts leave on the phone's veth; the caller closes
// it.
func (l *lab) phoneConn(t *testing.T, a netip.Addr, port uint16) *net.UDPConn {
	t.Helper()
	c, err := l.phone.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, port)))
	if err != nil {
		t.Fatal(err)
	}
	ifi, err := l.phone.InterfaceByName(l.phoneIf)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	if err := ipv4.NewPacketConn(c).SetMulticastInterface(ifi); err != nil {
		c.Close()
		t.Fatal(err)
	}
	return c
}

// runPnpd runs bin with args, in ns (nil: outside the namespaces), and
// returns its exit code and output; it fails the test when bin could not
// run or did not exit.
func runPnpd(t *testing.T, ns *netns.NS, bin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	if ns != nil {
		cmd = ns.Command(ctx, bin, args...)
	}
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		code = ee.ExitCode()
	default:
		t.Fatalf("pnpd %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return code, out.String(), errb.String()
}

// between returns what s holds between prefix and suffix, and whether s
// starts with the one and ends with the other.
func between(s, prefix, suffix string) (string, bool) {
	inner, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return "", false
	}
	return strings.CutSuffix(inner, suffix)
}
