package asterisktest

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pnpd/pnpd/pkg/asterisk"
	"github.com/pnpd/pnpd/pkg/netns/netnstest"
)

// EnvRoot names the environment variable that locates the prepared root.
const EnvRoot = asterisk.EnvRoot

// DefaultRoot is the root's place when EnvRoot is unset or empty.
const DefaultRoot = asterisk.DefaultRoot

// StartTimeout bounds the wait for a starting Asterisk: its AMI banner,
// then `core waitfullybooted`.
const StartTimeout = asterisk.StartTimeout

// PJSIPModules are the modules loaded when Options.PJSIP is set: enough for
// a UDP transport, endpoints, registrations, subscriptions and calls.
var PJSIPModules = asterisk.PJSIPModules

// User is a manager.conf user. Read and Write are class lists such as
// "system,user,command".
type User = asterisk.User

// Options configure Start. The zero value gives an Asterisk with AMI and
// one user, "pnpd", with a random secret. A nil Logger logs to the test.
type Options = asterisk.Options

// Instance is a running (or stopped) Asterisk of a test. Its fields (Dir,
// Addr, Username, Secret, Users, NS) and the methods that take no
// testing.TB (PID, Log, Dial, ...) are the embedded asterisk.Instance's;
// its methods that take one fail the test where asterisk.Instance's return
// an error. The test's cleanup closes it: do not call Close.
type Instance struct {
	*asterisk.Instance

	// reported: a failed restart put the tails of Asterisk's output and
	// log into the test's log already; the cleanup does not repeat them.
	reported atomic.Bool
}

// Root returns the prepared root: $PNPD_ASTERISK_ROOT, default DefaultRoot.
// When it is missing or unfinished it calls netnstest.SkipOrFail (skip, or
// fail under CI=true) with a message naming scripts/asterisk-root.
func Root(t testing.TB) string {
	t.Helper()
	root, err := asterisk.FindRoot()
	if err != nil {
		netnstest.SkipOrFail(t, "needs a real Asterisk: %v", err)
	}
	return root
}

// Start starts a new Asterisk configured by opts, waits until it has fully
// booted, and returns it. When the test ends it is stopped (SIGTERM, then
// SIGKILL after 2 s) and its directory removed; when the test failed, the
// tails of its log and of its stdout and stderr go to the test's log first.
// A failed start fails the test with those tails in the message.
func Start(t testing.TB, opts Options) *Instance {
	t.Helper()
	Root(t)
	if opts.NS != nil {
		netnstest.Require(t)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	a, err := asterisk.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	i := &Instance{Instance: a}
	t.Cleanup(func() {
		// The tails are read before Close removes them, and before its
		// SIGTERM adds the shutdown's lines to them.
		if t.Failed() && !i.reported.Load() {
			if tail := a.LogTail(60); tail != "" {
				t.Logf("asterisktest: last lines of Asterisk's log (%s):\n%s", a.LogPath(), tail)
			}
			if tail := a.StdioTail(20); tail != "" {
				t.Logf("asterisktest: last lines of Asterisk's stdout and stderr:\n%s", tail)
			}
		}
		if err := a.Close(); err != nil {
			t.Error(err)
		}
	})
	return i
}

// testWriter writes each line (slog writes one per Write) to the test's
// log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// WriteFile writes a configuration file into the instance's etc directory,
// for a test that then reloads a module (CLI "module reload ...").
func (i *Instance) WriteFile(t testing.TB, name, content string) {
	t.Helper()
	if err := i.Instance.WriteFile(name, content); err != nil {
		t.Fatal(err)
	}
}

// Wrapper writes an executable script into the instance's directory that
// runs this instance's asterisk with its asterisk.conf and the script's
// arguments, so that scripts written for a PBX host (`asterisk -rx ...`)
// can be run against it; it returns the script's path. The instance must
// not run in a namespace.
func (i *Instance) Wrapper(t testing.TB) string {
	t.Helper()
	path, err := i.Instance.Wrapper()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// CLI runs a CLI command (`asterisk -C <conf> -rx command`) and returns its
// output. It fails the test when Asterisk cannot be reached; an unknown
// command or a failing one is output like any other ("No such command ...",
// "Database entry not found.").
func (i *Instance) CLI(t testing.TB, command string) string {
	t.Helper()
	out, err := i.Instance.CLI(context.Background(), command)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Kill kills Asterisk with SIGKILL and waits until it is reaped. Like a
// crash, it loses the AstDB writes of about the last second: Asterisk
// commits them at most once a second (see WaitAstDBCommitted).
func (i *Instance) Kill(t testing.TB) {
	t.Helper()
	if err := i.Instance.Kill(); err != nil {
		t.Fatal(err)
	}
}

// Stop stops Asterisk with SIGTERM and waits until it has exited; after
// 10 s it kills it and fails the test.
func (i *Instance) Stop(t testing.TB) {
	t.Helper()
	if err := i.Instance.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// WaitAstDBCommitted waits (up to 5 s) until Asterisk has committed every
// AstDB write made so far, so that a Kill keeps them.
func (i *Instance) WaitAstDBCommitted(t testing.TB) {
	t.Helper()
	if err := i.Instance.WaitAstDBCommitted(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Start starts Asterisk again after Kill or Stop, with the same directory,
// configuration, AMI port and AstDB, and waits until it has fully booted.
func (i *Instance) Start(t testing.TB) {
	t.Helper()
	if err := i.Instance.Restart(context.Background()); err != nil {
		i.reported.Store(true)
		t.Fatal(err)
	}
}
