package asterisk

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pnpd/pnpd/pkg/netns"
)

// EnvRoot names the environment variable that locates the prepared root.
const EnvRoot = "PNPD_ASTERISK_ROOT"

// DefaultRoot is the root's place when EnvRoot is unset or empty.
const DefaultRoot = "/var/cache/pnpd/asterisk-root"

// readyMark is the file scripts/asterisk-root writes into a finished root.
const readyMark = ".pnpd-ready"

// Timeouts.
const (
	// StartTimeout bounds the wait for a starting Asterisk: its AMI banner,
	// then `core waitfullybooted`.
	StartTimeout = 20 * time.Second
	// cliTimeout bounds one CLI command.
	cliTimeout = 30 * time.Second
	// stopTimeout bounds Stop's wait after SIGTERM before it kills.
	stopTimeout = 10 * time.Second
	// closeGrace is how long Close waits after SIGTERM before SIGKILL.
	closeGrace = 2 * time.Second
	// reapTimeout bounds the wait for a SIGKILLed process to be reaped.
	reapTimeout = 10 * time.Second
	// commitTimeout bounds WaitAstDBCommitted.
	commitTimeout = 5 * time.Second
)

// ErrNoRoot is wrapped by the errors of FindRoot and Start when there is no
// usable prepared root, so that a caller can tell "Asterisk is not
// installed here" from a failure of Asterisk itself.
var ErrNoRoot = errors.New("asterisk: no usable Asterisk root")

// PJSIPModules are the modules loaded when Options.PJSIP is set: enough for
// a UDP transport, endpoints, registrations, subscriptions and calls.
var PJSIPModules = []string{
	"res_sorcery_config.so",
	"res_sorcery_memory.so",
	"res_sorcery_astdb.so",
	"res_pjproject.so",
	"res_pjsip.so",
	"res_pjsip_session.so",
	"res_pjsip_pubsub.so",
	"res_pjsip_authenticator_digest.so",
	"res_pjsip_endpoint_identifier_ip.so",
	"res_pjsip_endpoint_identifier_user.so",
	"chan_pjsip.so",
}

// baseModules are always loaded: the dialplan (extensions.conf), the DB
// dialplan functions and the UserEvent application.
var baseModules = []string{"pbx_config.so", "func_db.so", "app_userevent.so"}

// quietFiles are written empty so that Asterisk's core does not log an
// ERROR or WARNING for each configuration file it misses; all of them mean
// "defaults".
var quietFiles = []string{
	"acl.conf", "ccss.conf", "cdr.conf", "cel.conf", "features.conf",
	"pjproject.conf", "stasis.conf", "udptl.conf",
}

// writtenBy heads every configuration file Start writes, so that someone
// who finds an instance's directory knows where it came from.
const writtenBy = "; written by pnpd's pkg/asterisk"

// indicationsConf gives Asterisk the default tone zone it warns about
// when it has none.
const indicationsConf = writtenBy + `
[general]
country = us

[us]
description = United States
ringcadence = 2000,4000
dial = 350+440
busy = 480+620/500,0/500
ring = 440+480/2000,0/4000
congestion = 480+620/250,0/250
`

// UDPTransport is a pjsip.conf with one UDP transport, "transport-udp",
// bound to bind ("0.0.0.0:5060", "127.0.0.1:5070"...), for Options.PJSIP.
func UDPTransport(bind string) string {
	return "[transport-udp]\ntype=transport\nprotocol=udp\nbind=" + bind + "\n"
}

// User is a manager.conf user. Read and Write are class lists such as
// "system,user,command".
type User struct {
	Name, Secret, Read, Write string
}

// Options configure Start. The zero value gives an Asterisk with AMI and
// one user, "pnpd", with a random secret.
type Options struct {
	// Users of AMI. Default: one user "pnpd" with a random secret, read
	// "system,user,command,reporting" and write
	// "system,user,command,reporting,originate". A user without Secret
	// gets a random one.
	Users []User
	// PJSIP, when non-empty, is pjsip.conf, and the PJSIPModules are
	// loaded.
	PJSIP string
	// LiveDangerously sets live_dangerously = yes in asterisk.conf: AMI may
	// then read privileged dialplan functions such as DB().
	LiveDangerously bool
	// Modules are loaded on top of the base ones ("func_odbc" or
	// "func_odbc.so").
	Modules []string
	// Files are more configuration files (name -> content) for the
	// instance's etc directory, written last: a name that Start writes
	// itself (extensions.conf, say) is replaced.
	Files map[string]string
	// NS, when set, is the network namespace Asterisk runs in; its AMI
	// then binds 127.0.0.1 inside the namespace. Needs root.
	NS *netns.NS
	// Logger gets Start's notes (another AMI port tried); nil: discard.
	Logger *slog.Logger
}

// Instance is a running (or stopped) Asterisk. Its methods are safe for
// concurrent use.
type Instance struct {
	// Dir holds the instance's configuration and everything it writes.
	Dir string
	// Addr is the AMI address, "127.0.0.1:port" (inside NS when NS is set).
	Addr string
	// Username and Secret are those of the first AMI user.
	Username, Secret string
	// Users are all the AMI users, secrets filled in.
	Users []User
	// NS is the namespace Asterisk runs in, or nil.
	NS *netns.NS

	paths paths

	mu     sync.Mutex
	cmd    *exec.Cmd     // nil when not running
	done   chan struct{} // closed once cmd is reaped
	closed bool          // Close was called: Dir is gone
}

// paths are the files of the prepared root that an instance uses.
type paths struct {
	root     string
	loader   string // sid's dynamic loader
	libDir   string
	asterisk string // usr/sbin/asterisk
	modDir   string
	dataDir  string
	sbinDir  string
}

// FindRoot returns the prepared root: $PNPD_ASTERISK_ROOT, default
// DefaultRoot. When it is missing or unfinished the error wraps ErrNoRoot
// and says how to prepare it.
func FindRoot() (string, error) {
	p, err := findRoot()
	if err != nil {
		return "", err
	}
	return p.root, nil
}

// findRoot is findPaths with FindRoot's error.
func findRoot() (paths, error) {
	p, err := findPaths()
	if err != nil {
		return p, fmt.Errorf("%w: %w; prepare it with scripts/asterisk-root (as root; $%s chooses where)", ErrNoRoot, err, EnvRoot)
	}
	return p, nil
}

// findPaths locates the root and the files in it that an instance needs.
func findPaths() (paths, error) {
	root := os.Getenv(EnvRoot)
	if root == "" {
		root = DefaultRoot
	}
	root = filepath.Clean(root)
	p := paths{
		root:     root,
		asterisk: filepath.Join(root, "usr/sbin/asterisk"),
		dataDir:  filepath.Join(root, "usr/share/asterisk"),
		sbinDir:  filepath.Join(root, "usr/sbin"),
	}
	if _, err := os.Stat(filepath.Join(root, readyMark)); err != nil {
		return p, fmt.Errorf("%s is missing or unfinished (%w)", root, err)
	}
	if err := executable(p.asterisk); err != nil {
		return p, err
	}
	// The loader: usr/lib64/ld-linux-x86-64.so.2 is a relative symlink
	// into usr/lib/<triplet>; an absolute one would leave the root, so
	// resolve it and insist that it stays inside.
	var errs []error
	for _, c := range []struct{ loader, lib string }{
		{"usr/lib64/ld-linux-x86-64.so.2", "usr/lib/x86_64-linux-gnu"},
		{"usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "usr/lib/x86_64-linux-gnu"},
		{"usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1", "usr/lib/aarch64-linux-gnu"},
		{"usr/lib/ld-linux-aarch64.so.1", "usr/lib/aarch64-linux-gnu"},
	} {
		loader, err := filepath.EvalSymlinks(filepath.Join(root, c.loader))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !strings.HasPrefix(loader, root+"/") {
			errs = append(errs, fmt.Errorf("%s leads out of the root to %s", c.loader, loader))
			continue
		}
		if err := executable(loader); err != nil {
			errs = append(errs, err)
			continue
		}
		p.loader = loader
		p.libDir = filepath.Join(root, c.lib)
		p.modDir = filepath.Join(p.libDir, "asterisk/modules")
		break
	}
	if p.loader == "" {
		return p, fmt.Errorf("no dynamic loader in the root %s: %w", root, errors.Join(errs...))
	}
	if _, err := os.Stat(filepath.Join(p.modDir, "pbx_config.so")); err != nil {
		return p, fmt.Errorf("no Asterisk modules in the root: %w", err)
	}
	return p, nil
}

func executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// FreePort returns a port that was free a moment ago on 127.0.0.1 for
// network "tcp" or "udp", inside ns when it is not nil.
func FreePort(ns *netns.NS, network string) (int, error) {
	port, err := freePort(ns, network)
	if err != nil {
		return 0, fmt.Errorf("asterisk: %w", err)
	}
	return port, nil
}

func freePort(ns *netns.NS, network string) (int, error) {
	var addr net.Addr
	switch network {
	case "tcp", "tcp4":
		var l net.Listener
		var err error
		if ns != nil {
			l, err = ns.Listen("tcp4", "127.0.0.1:0")
		} else {
			l, err = net.Listen("tcp4", "127.0.0.1:0")
		}
		if err != nil {
			return 0, fmt.Errorf("finding a free %s port: %w", network, err)
		}
		addr = l.Addr()
		l.Close()
	case "udp", "udp4":
		var c net.PacketConn
		var err error
		if ns != nil {
			c, err = ns.ListenPacket("udp4", "127.0.0.1:0")
		} else {
			c, err = net.ListenPacket("udp4", "127.0.0.1:0")
		}
		if err != nil {
			return 0, fmt.Errorf("finding a free %s port: %w", network, err)
		}
		addr = c.LocalAddr()
		c.Close()
	default:
		return 0, fmt.Errorf("FreePort: network %q: want tcp or udp", network)
	}
	_, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(port)
}

// Start starts a new Asterisk configured by opts, waits until it has fully
// booted, and returns it; ctx bounds the wait (as does StartTimeout), not
// the instance's life, which lasts until Close. The error of a failed start
// ends with the tails of Asterisk's output and log; nothing is left running
// then and the instance's directory is removed.
func Start(ctx context.Context, opts Options) (*Instance, error) {
	p, err := findRoot()
	if err != nil {
		return nil, err
	}
	if opts.NS != nil {
		// Checked here, not left to `ip netns exec`, for a clear error.
		if err := netns.Check(); err != nil {
			return nil, fmt.Errorf("asterisk: Options.NS: %w", err)
		}
	}
	users, err := fillUsers(opts.Users)
	if err != nil {
		return nil, fmt.Errorf("asterisk: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := shortTempDir()
	if err != nil {
		return nil, fmt.Errorf("asterisk: %w", err)
	}
	i := &Instance{
		Dir:      dir,
		Username: users[0].Name,
		Secret:   users[0].Secret,
		Users:    users,
		NS:       opts.NS,
		paths:    p,
	}
	// fail removes what a failed start made; the failure context is read
	// first, while the directory exists.
	fail := func(err error, withContext bool) (*Instance, error) {
		herr := i.halt(0)
		var fc string
		if withContext {
			fc = i.failureContext()
		}
		if rerr := os.RemoveAll(dir); rerr != nil {
			herr = errors.Join(herr, rerr)
		}
		err = fmt.Errorf("asterisk: %w%s", err, fc)
		if herr != nil {
			err = errors.Join(err, fmt.Errorf("asterisk: cleaning up the failed start: %w", herr))
		}
		return nil, err
	}
	if err := i.writeConfig(opts); err != nil {
		return fail(err, false)
	}
	// The port is free when chosen but someone else can take it before
	// Asterisk binds it; try again with another one then.
	for try := 1; ; try++ {
		port, err := freePort(opts.NS, "tcp")
		if err != nil {
			return fail(err, false)
		}
		i.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err := i.writeManagerConf(port); err != nil {
			return fail(err, false)
		}
		err = i.start(ctx)
		if err == nil {
			return i, nil
		}
		if errors.Is(err, errPortTaken) && try < 3 && ctx.Err() == nil {
			log.Warn("asterisk: trying another AMI port", "err", err, "dir", dir)
			if err := i.halt(closeGrace); err != nil {
				return fail(err, true)
			}
			continue
		}
		return fail(err, true)
	}
}

// fillUsers applies the default user and fills in missing secrets.
func fillUsers(in []User) ([]User, error) {
	users := append([]User(nil), in...)
	if len(users) == 0 {
		users = []User{{
			Name:  "pnpd",
			Read:  "system,user,command,reporting",
			Write: "system,user,command,reporting,originate",
		}}
	}
	seen := map[string]bool{}
	for k := range users {
		u := &users[k]
		if u.Secret == "" {
			u.Secret = randomSecret()
		}
		if u.Name == "" || u.Name == "general" || strings.ContainsAny(u.Name, "[]\r\n;=") {
			return nil, fmt.Errorf("bad AMI user name %q", u.Name)
		}
		if seen[u.Name] {
			return nil, fmt.Errorf("AMI user %q twice", u.Name)
		}
		seen[u.Name] = true
		for _, v := range []string{u.Secret, u.Read, u.Write} {
			if strings.ContainsAny(v, "\r\n;") {
				return nil, fmt.Errorf("AMI user %q: value %q has a newline or ';'", u.Name, v)
			}
		}
	}
	return users, nil
}

func randomSecret() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// shortTempDir makes the instance directory. A unix socket path has at most
// 107 bytes, and the control socket lives at DIR/run/asterisk.ctl.
func shortTempDir() (string, error) {
	base := os.TempDir()
	if len(base)+len("/ast-0123456789/run/asterisk.ctl") > 100 {
		base = "/tmp"
	}
	return os.MkdirTemp(base, "ast-")
}

// plainName reports whether name is a file name without a directory.
func plainName(name string) bool {
	return name != "" && filepath.Base(name) == name && name != "." && name != ".."
}

func (i *Instance) etc(name string) string { return filepath.Join(i.Dir, "etc", name) }
func (i *Instance) conf() string           { return i.etc("asterisk.conf") }

// LogPath is the path of Asterisk's log file (see Log).
func (i *Instance) LogPath() string { return filepath.Join(i.Dir, "log", "messages.log") }

// StdioPath is the path of the file that gets Asterisk's stdout and stderr
// (see Stdio).
func (i *Instance) StdioPath() string { return filepath.Join(i.Dir, "log", "stdio.log") }

// writeConfig writes every configuration file but manager.conf.
func (i *Instance) writeConfig(opts Options) error {
	for _, d := range []string{"etc", "run", "log", "spool", "lib", "db", "cache"} {
		if err := os.MkdirAll(filepath.Join(i.Dir, d), 0o755); err != nil {
			return err
		}
	}
	p := i.paths
	liveDangerously := "no"
	if opts.LiveDangerously {
		liveDangerously = "yes"
	}
	files := map[string]string{
		"asterisk.conf": fmt.Sprintf(writtenBy+`
[directories]
astcachedir => %[1]s/cache
astetcdir => %[1]s/etc
astmoddir => %[2]s
astvarlibdir => %[1]s/lib
astdbdir => %[1]s/db
astkeydir => %[1]s/lib
astdatadir => %[3]s
astagidir => %[3]s/agi-bin
astspooldir => %[1]s/spool
astrundir => %[1]s/run
astlogdir => %[1]s/log
astsbindir => %[4]s

[options]
verbose = 3
live_dangerously = %[5]s

[files]
astctl = asterisk.ctl
astctlpermissions = 0660
`, i.Dir, p.modDir, p.dataDir, p.sbinDir, liveDangerously),
		"logger.conf": writtenBy + `
[general]
dateformat = %F %T.%3q
queue_log = no

[logfiles]
messages.log => notice,warning,error,verbose,dtmf
`,
		"extensions.conf": writtenBy + "\n[general]\n",
		// Without a default country Asterisk warns at every start.
		"indications.conf": indicationsConf,
	}
	var mods strings.Builder
	mods.WriteString(writtenBy + "\n[modules]\nautoload = no\n")
	loaded := map[string]bool{}
	load := func(list []string) {
		for _, m := range list {
			if !strings.HasSuffix(m, ".so") {
				m += ".so"
			}
			if !loaded[m] {
				loaded[m] = true
				fmt.Fprintf(&mods, "load => %s\n", m)
			}
		}
	}
	load(baseModules)
	if opts.PJSIP != "" {
		load(PJSIPModules)
		files["pjsip.conf"] = opts.PJSIP
	}
	load(opts.Modules)
	files["modules.conf"] = mods.String()
	for _, name := range quietFiles {
		files[name] = writtenBy + ": defaults\n"
	}
	for name, content := range opts.Files {
		if !plainName(name) {
			return fmt.Errorf("Options.Files: %q is not a plain file name", name)
		}
		files[name] = content
	}
	for name, content := range files {
		if err := os.WriteFile(i.etc(name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (i *Instance) writeManagerConf(port int) error {
	var b strings.Builder
	fmt.Fprintf(&b, writtenBy+`
[general]
enabled = yes
bindaddr = 127.0.0.1
port = %d
webenabled = no
`, port)
	for _, u := range i.Users {
		fmt.Fprintf(&b, "\n[%s]\nsecret = %s\ndeny = 0.0.0.0/0.0.0.0\npermit = 127.0.0.1/255.255.255.255\nread = %s\nwrite = %s\n",
			u.Name, u.Secret, u.Read, u.Write)
	}
	return os.WriteFile(i.etc("manager.conf"), []byte(b.String()), 0o600)
}

// WriteFile writes a configuration file into the instance's etc directory,
// for a caller that then reloads a module (CLI "module reload ...").
func (i *Instance) WriteFile(name, content string) error {
	if !plainName(name) {
		return fmt.Errorf("asterisk: WriteFile: %q is not a plain file name", name)
	}
	if err := os.WriteFile(i.etc(name), []byte(content), 0o644); err != nil {
		return fmt.Errorf("asterisk: %w", err)
	}
	return nil
}

// command returns the command line that runs the root's asterisk with
// args, through sid's loader.
func (i *Instance) command(ctx context.Context, ns *netns.NS, args ...string) *exec.Cmd {
	full := append([]string{"--library-path", i.paths.libDir, i.paths.asterisk}, args...)
	var cmd *exec.Cmd
	if ns != nil {
		cmd = ns.Command(ctx, i.paths.loader, full...)
	} else {
		cmd = exec.CommandContext(ctx, i.paths.loader, full...)
	}
	cmd.Dir = i.Dir
	return cmd
}

// Wrapper writes an executable script into the instance's directory that
// runs this instance's asterisk with its asterisk.conf and the script's
// arguments, so that scripts written for a PBX host (`asterisk -rx ...`)
// can be run against it; it returns the script's path. The instance must
// not run in a namespace: the script would run Asterisk outside it.
func (i *Instance) Wrapper() (string, error) {
	if i.NS != nil {
		return "", errors.New("asterisk: Wrapper: the instance runs in a namespace")
	}
	path := filepath.Join(i.Dir, "asterisk")
	script := fmt.Sprintf("#!/bin/sh\nexec %q --library-path %q %q -C %q \"$@\"\n",
		i.paths.loader, i.paths.libDir, i.paths.asterisk, i.conf())
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		return "", fmt.Errorf("asterisk: %w", err)
	}
	return path, nil
}

// errPortTaken: Asterisk booted, but another process holds its AMI port.
var errPortTaken = errors.New("the AMI port is held by another process")

// start's errors for an instance it does not start at all.
var (
	errRunning = errors.New("Asterisk is running already")
	errClosed  = errors.New("the instance is closed")
)

// start starts Asterisk and waits until it has fully booted. On error the
// process may still run.
func (i *Instance) start(ctx context.Context) error {
	i.mu.Lock()
	if i.closed {
		i.mu.Unlock()
		return errClosed
	}
	if i.cmd != nil {
		i.mu.Unlock()
		return errRunning
	}
	stdio, err := os.OpenFile(i.StdioPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		i.mu.Unlock()
		return err
	}
	defer stdio.Close()
	fmt.Fprintf(stdio, "=== pkg/asterisk: starting Asterisk at %s\n", time.Now().Format(time.RFC3339Nano))
	// -f: foreground, so that the pid is Asterisk's; -n: no colours.
	// Context is Background: the instance outlives ctx, which bounds only
	// the start.
	cmd := i.command(context.Background(), i.NS, "-C", i.conf(), "-f", "-n")
	cmd.Stdout = stdio
	cmd.Stderr = stdio
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Not killed with the caller's process group by a ^C (Close
		// stops it in order)...
		Setpgid: true,
		// ...but killed when the process that started it dies without
		// closing it (a panic, a test's -timeout). The kernel sends it
		// when the starting thread exits, which the Go runtime does only
		// for a thread left locked (netns.Do after a failed switch back).
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		i.mu.Unlock()
		return fmt.Errorf("starting %s: %w", cmd, err)
	}
	done := make(chan struct{})
	i.cmd, i.done = cmd, done
	i.mu.Unlock()
	go func() {
		_ = cmd.Wait() // reaps it: a killed Asterisk leaves no zombie
		i.mu.Lock()
		if i.cmd == cmd {
			i.cmd = nil
		}
		i.mu.Unlock()
		close(done)
	}()
	return i.waitReady(ctx, cmd, done)
}

// waitReady waits for the AMI banner, then for `core waitfullybooted`, then
// checks that the AMI port is Asterisk's own.
func (i *Instance) waitReady(parent context.Context, cmd *exec.Cmd, done chan struct{}) error {
	ctx, cancel := context.WithTimeout(parent, StartTimeout)
	defer cancel()
	exited := func() error {
		return fmt.Errorf("Asterisk (pid %d) exited while starting: %v", cmd.Process.Pid, cmd.ProcessState)
	}
	var lastErr error
	for {
		select {
		case <-done:
			return exited()
		default:
		}
		banner, err := i.banner(ctx)
		if err == nil && strings.HasPrefix(banner, "Asterisk Call Manager/") {
			break
		}
		if err == nil {
			err = fmt.Errorf("unexpected banner %q", banner)
		}
		lastErr = err
		select {
		case <-done:
			return exited()
		case <-ctx.Done():
			if err := parent.Err(); err != nil {
				return fmt.Errorf("waiting for the AMI banner on %s: %w (%v)", i.Addr, err, lastErr)
			}
			return fmt.Errorf("no AMI banner on %s within %v: %v", i.Addr, StartTimeout, lastErr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	out, err := i.cli(ctx, "core waitfullybooted")
	if err != nil {
		select {
		case <-done:
			return exited()
		default:
		}
		return fmt.Errorf("core waitfullybooted: %w", err)
	}
	if !strings.Contains(out, "fully booted") {
		return fmt.Errorf("core waitfullybooted answered %q", out)
	}
	own, err := listens(cmd.Process.Pid, i.Addr)
	if err != nil {
		return fmt.Errorf("checking the AMI listener: %w", err)
	}
	if !own {
		return fmt.Errorf("%w (%s)", errPortTaken, i.Addr)
	}
	return nil
}

// banner connects to AMI and reads its first line.
func (i *Instance) banner(ctx context.Context) (string, error) {
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c, err := i.Dial(dctx)
	if err != nil {
		return "", err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	if d := time.Now().Add(5 * time.Second); d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// listens reports whether process pid holds the TCP listener on addr
// ("127.0.0.1:port"): its network namespace's /proc/PID/net/tcp names the
// listener's socket inode, which must be one of the process's descriptors.
func listens(pid int, addr string) (bool, error) {
	_, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return false, err
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return false, err
	}
	table, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return false, err
	}
	local := fmt.Sprintf("0100007F:%04X", port)
	inode := ""
	for _, line := range strings.Split(string(table), "\n")[1:] {
		f := strings.Fields(line)
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		if len(f) >= 10 && f[1] == local && f[3] == "0A" {
			inode = f[9]
			break
		}
	}
	if inode == "" {
		return false, nil
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false, err
	}
	want := "socket:[" + inode + "]"
	for _, fd := range fds {
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && link == want {
			return true, nil
		}
	}
	return false, nil
}

// Dial connects to the instance's AMI (inside its namespace when it has
// one). The first line Asterisk sends is the banner,
// "Asterisk Call Manager/...".
func (i *Instance) Dial(ctx context.Context) (net.Conn, error) {
	if i.NS != nil {
		return i.NS.DialContext(ctx, "tcp4", i.Addr)
	}
	return (&net.Dialer{}).DialContext(ctx, "tcp4", i.Addr)
}

// cli runs `asterisk -rx command` against the instance's control socket.
func (i *Instance) cli(ctx context.Context, command string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	// The control socket is a file: no need to enter the namespace.
	cmd := i.command(ctx, nil, "-C", i.conf(), "-rx", command)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		out := strings.TrimSpace(stdout.String() + "\n" + stderr.String())
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return "", fmt.Errorf("asterisk -rx %q: %w: %s", command, err, out)
	}
	return stdout.String(), nil
}

// CLI runs a CLI command (`asterisk -C <conf> -rx command`, bounded by ctx
// and 30 s) and returns its output. The error says that Asterisk could not
// be reached; an unknown command or a failing one is output like any other
// ("No such command ...", "Database entry not found.").
func (i *Instance) CLI(ctx context.Context, command string) (string, error) {
	out, err := i.cli(ctx, command)
	if err != nil {
		return "", fmt.Errorf("asterisk: %w", err)
	}
	return out, nil
}

// Kill kills Asterisk with SIGKILL and waits until it is reaped. Like a
// crash, it loses the AstDB writes of about the last second: Asterisk
// commits them at most once a second (see WaitAstDBCommitted).
func (i *Instance) Kill() error {
	cmd, done := i.current()
	if cmd == nil {
		return errors.New("asterisk: Kill: Asterisk is not running")
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-done:
		return nil
	case <-time.After(reapTimeout):
		return fmt.Errorf("asterisk: Asterisk (pid %d) not reaped %v after SIGKILL", cmd.Process.Pid, reapTimeout)
	}
}

// Stop stops Asterisk with SIGTERM and waits until it has exited. When it
// still runs after 10 s, or when ctx ends first, Stop kills it and returns
// an error.
func (i *Instance) Stop(ctx context.Context) error {
	cmd, done := i.current()
	if cmd == nil {
		return errors.New("asterisk: Stop: Asterisk is not running")
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		err = fmt.Errorf("asterisk: Asterisk (pid %d) still ran after SIGTERM; killed it: %w", cmd.Process.Pid, ctx.Err())
	case <-time.After(stopTimeout):
		err = fmt.Errorf("asterisk: Asterisk (pid %d) still ran %v after SIGTERM; killed it", cmd.Process.Pid, stopTimeout)
	}
	return errors.Join(err, i.halt(0))
}

// WaitAstDBCommitted waits (up to 5 s, and while ctx lasts) until Asterisk
// has committed every AstDB write made so far, so that a Kill keeps them.
// Asterisk gathers writes in an SQLite transaction and commits it at most
// once a second; the transaction's rollback journal
// (db/astdb.sqlite3-journal) exists exactly while writes wait.
func (i *Instance) WaitAstDBCommitted(ctx context.Context) error {
	journal := filepath.Join(i.Dir, "db", "astdb.sqlite3-journal")
	ctx, cancel := context.WithTimeout(ctx, commitTimeout)
	defer cancel()
	for {
		_, err := os.Stat(journal)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("asterisk: AstDB still has uncommitted writes (%s: %v): %w", journal, err, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Restart starts Asterisk again after Kill or Stop, with the same
// directory, configuration, AMI port and AstDB, and waits until it has
// fully booted; ctx bounds the wait. It does not touch a running Asterisk
// but returns an error. The error of a failed start ends with the tails of
// Asterisk's output and log, and Asterisk is not left running.
func (i *Instance) Restart(ctx context.Context) error {
	err := i.start(ctx)
	if err == nil {
		return nil
	}
	if errors.Is(err, errRunning) || errors.Is(err, errClosed) {
		return fmt.Errorf("asterisk: Restart: %w", err)
	}
	herr := i.halt(0)
	err = fmt.Errorf("asterisk: %w%s", err, i.failureContext())
	if herr != nil {
		err = errors.Join(err, fmt.Errorf("asterisk: %w", herr))
	}
	return err
}

// Close stops Asterisk (SIGTERM, SIGKILL after 2 s, waiting until it is
// reaped) and removes the instance's directory. Closing again does
// nothing; a closed instance cannot be restarted.
func (i *Instance) Close() error {
	i.mu.Lock()
	i.closed = true
	i.mu.Unlock()
	err := i.halt(closeGrace)
	if rerr := os.RemoveAll(i.Dir); rerr != nil {
		err = errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("asterisk: closing the instance in %s: %w", i.Dir, err)
	}
	return nil
}

// PID returns the pid of the running Asterisk, or 0 when it is not running.
func (i *Instance) PID() int {
	cmd, _ := i.current()
	if cmd == nil {
		return 0
	}
	return cmd.Process.Pid
}

// Log returns Asterisk's log file (notices, warnings, errors and verbose
// messages to level 3, each line stamped), all of it since the instance
// was made: restarts append.
func (i *Instance) Log() string {
	b, _ := os.ReadFile(i.LogPath())
	return string(b)
}

// Stdio returns what Asterisk wrote to its stdout and stderr since the
// instance was made, each start headed by a line "=== pkg/asterisk:
// starting Asterisk at ...". Messages from before the logger is up (a
// module that cannot load, a bad asterisk.conf) are only here.
func (i *Instance) Stdio() string {
	b, _ := os.ReadFile(i.StdioPath())
	return string(b)
}

// LogTail returns the last n lines of Log.
func (i *Instance) LogTail(n int) string { return lastLines(i.Log(), n) }

// StdioTail returns the last n lines of Stdio.
func (i *Instance) StdioTail(n int) string { return lastLines(i.Stdio(), n) }

func (i *Instance) current() (*exec.Cmd, chan struct{}) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.cmd, i.done
}

// halt stops a running Asterisk: SIGTERM and up to grace, then SIGKILL;
// with grace 0 straight SIGKILL. It waits until the process is reaped and
// returns an error only when it is not.
func (i *Instance) halt(grace time.Duration) error {
	cmd, done := i.current()
	if cmd == nil {
		return nil
	}
	if grace > 0 {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
			return nil
		case <-time.After(grace):
		}
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-done:
		return nil
	case <-time.After(reapTimeout):
		return fmt.Errorf("Asterisk (pid %d) not reaped %v after SIGKILL", cmd.Process.Pid, reapTimeout)
	}
}

// failureContext is the tail of Asterisk's output and log, for the error
// of a failed start: why Asterisk did not come up is in one or the other.
func (i *Instance) failureContext() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n--- Asterisk's stdout and stderr (%s), last lines:\n%s", i.StdioPath(), i.StdioTail(20))
	fmt.Fprintf(&b, "\n--- Asterisk's log (%s), last lines:\n%s", i.LogPath(), i.LogTail(40))
	return b.String()
}

// lastLines returns the last n lines of s, without a final newline.
func lastLines(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
