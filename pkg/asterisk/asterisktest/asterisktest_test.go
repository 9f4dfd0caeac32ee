package asterisktest_test

// These test the wrapper: its methods that take a testing.TB, and what it
// does when the test ends. What Asterisk does is package asterisk's tests'.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/asterisk/asterisktest"
)

// login logs into a's AMI over a plain connection and returns the
// response's Response header.
func login(t *testing.T, a *asterisktest.Instance) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := a.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	if banner, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(banner, "Asterisk Call Manager/") {
		t.Fatalf("banner %q, %v", banner, err)
	}
	fmt.Fprintf(c, "Action: Login\r\nUsername: %s\r\nSecret: %s\r\n\r\n", a.Username, a.Secret)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading AMI: %v", err)
		}
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "Response: "); ok {
			return v
		}
	}
}

// TestLifecycle runs an instance through every method of the wrapper, then
// checks that the test's end stopped it and removed its directory.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	var dir string
	var pid int
	t.Run("instance", func(t *testing.T) {
		a := asterisktest.Start(t, asterisktest.Options{LiveDangerously: true})
		dir, pid = a.Dir, a.PID()
		if login(t, a) != "Success" {
			t.Fatal("login failed")
		}
		if out := a.CLI(t, "database put pnp mac/001fc11b4e1c acme"); !strings.Contains(out, "Updated database successfully") {
			t.Fatalf("database put: %q", out)
		}
		a.WaitAstDBCommitted(t)
		a.Kill(t)
		if a.PID() != 0 {
			t.Fatalf("PID after Kill: %d", a.PID())
		}
		a.Start(t)
		a.Stop(t)
		a.Start(t)
		if out := a.CLI(t, "database get pnp mac/001fc11b4e1c"); !strings.Contains(out, "Value: acme") {
			t.Fatalf("database get after Kill, Start, Stop, Start: %q", out)
		}
		pid = a.PID()

		a.WriteFile(t, "extensions.conf", "[general]\n[pnp-test]\nexten => s,1,NoOp(hello)\n")
		a.CLI(t, "dialplan reload")
		out, err := exec.Command(a.Wrapper(t), "-rx", "dialplan show pnp-test").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "NoOp(hello)") {
			t.Fatalf("dialplan show through the wrapper script: %q, %v", out, err)
		}
		if !strings.Contains(a.Log(), "Asterisk Ready") {
			t.Errorf("log lacks \"Asterisk Ready\":\n%s", a.Log())
		}
	})
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("Asterisk (pid %d) after the test: kill -0: %v", pid, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after the test: %v", dir, err)
	}
}

// failingTB is a test that has failed, with its own cleanups and log.
type failingTB struct {
	testing.TB
	cleanups []func()
	logs     []string
}

func (f *failingTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }
func (f *failingTB) Failed() bool      { return true }
func (f *failingTB) Logf(format string, args ...any) {
	f.logs = append(f.logs, fmt.Sprintf(format, args...))
}

// TestFailedTestGetsLogTails: when the test failed, its log gets the
// tails of Asterisk's log and output before the instance goes.
func TestFailedTestGetsLogTails(t *testing.T) {
	t.Parallel()
	f := &failingTB{TB: t}
	runCleanups := func() {
		for len(f.cleanups) > 0 {
			last := f.cleanups[len(f.cleanups)-1]
			f.cleanups = f.cleanups[:len(f.cleanups)-1]
			last()
		}
	}
	t.Cleanup(runCleanups) // when the test stops early
	a := asterisktest.Start(f, asterisktest.Options{})
	runCleanups()
	logs := strings.Join(f.logs, "\n")
	for _, want := range []string{"last lines of Asterisk's log (" + a.LogPath() + ")", "Asterisk Ready", "last lines of Asterisk's stdout and stderr"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the failed test's log lacks %q:\n%s", want, logs)
		}
	}
	if _, err := os.Stat(a.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after the cleanup: %v", a.Dir, err)
	}
}
