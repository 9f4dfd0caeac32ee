package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pnpd/pnpd/pkg/netns"
)

// Process timeouts.
const (
	readyTimeout = 20 * time.Second
	stopTimeout  = 10 * time.Second
)

// clockTick is USER_HZ, the unit of /proc/PID/stat's CPU times on Linux.
const clockTick = 10 * time.Millisecond

// proc is a responder running as a process of its own in the lab: pnpd
// serve, or the minimal responder. It reads the process's stderr (pnpd's
// log) line by line as it comes.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout bytes.Buffer
	exited chan struct{}

	mu          sync.Mutex
	ready       chan struct{}
	provisioned int       // pnpd's "exchange" lines with outcome=provisioned
	lastProv    time.Time // the time field of the last of them
	snapshot    chan string
	warnings    []string
	tail        []string // the last lines, for errors
}

// startProc starts exe with args in ns and waits until a line of its
// stderr contains readyMark.
func startProc(ctx context.Context, ns *netns.NS, name, readyMark, exe string, args ...string) (*proc, error) {
	p := &proc{
		name: name, exited: make(chan struct{}), ready: make(chan struct{}),
		snapshot: make(chan string, 4),
	}
	// Context Background: the process is stopped by stop, not by the
	// caller's context ending halfway through a phase.
	p.cmd = ns.Command(context.Background(), exe, args...)
	p.cmd.Stdout = &p.stdout
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: starting %s: %w", name, err)
	}
	go func() {
		// Wait closes the pipe: read it to its end first.
		p.read(stderr, readyMark)
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t := time.NewTimer(readyTimeout)
	defer t.Stop()
	select {
	case <-p.ready:
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("bench: %s exited before it was ready (%v):\n%s", name, p.cmd.ProcessState, p.lastLines())
	case <-t.C:
		p.kill()
		return nil, fmt.Errorf("bench: %s not ready within %v:\n%s", name, readyTimeout, p.lastLines())
	case <-ctx.Done():
		p.kill()
		return nil, ctx.Err()
	}
}

// read follows the log.
func (p *proc) read(r io.Reader, readyMark string) {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	once := sync.OnceFunc(func() { close(p.ready) })
	for s.Scan() {
		line := s.Text()
		p.mu.Lock()
		p.tail = append(p.tail, line)
		if len(p.tail) > 20 {
			p.tail = p.tail[1:]
		}
		switch {
		case strings.Contains(line, " msg=exchange ") && strings.Contains(line, " outcome=provisioned "):
			p.provisioned++
			if at, ok := logTime(line); ok {
				p.lastProv = at
			}
		case strings.Contains(line, " msg=\"pbx snapshot\" "):
			select {
			case p.snapshot <- line:
			default:
			}
		case strings.Contains(line, " level=WARN ") || strings.Contains(line, " level=ERROR "):
			if len(p.warnings) < 10 {
				p.warnings = append(p.warnings, line)
			}
		}
		if strings.Contains(line, readyMark) {
			once()
		}
		p.mu.Unlock()
	}
	// A line too long for the scanner ends it: keep draining, so that the
	// process never blocks on its log.
	_, _ = io.Copy(io.Discard, r)
}

// logTime reads the time= field that starts a line of pnpd's log.
func logTime(line string) (time.Time, bool) {
	v, ok := strings.CutPrefix(line, "time=")
	if !ok {
		return time.Time{}, false
	}
	v, _, _ = strings.Cut(v, " ")
	t, err := time.Parse(time.RFC3339Nano, v)
	return t, err == nil
}

// provisionedSoFar returns how many exchanges pnpd logged as provisioned,
// and the time of the last.
func (p *proc) provisionedSoFar() (int, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.provisioned, p.lastProv
}

// waitProvisioned waits until pnpd has logged n provisioned exchanges, or
// up to wait.
func (p *proc) waitProvisioned(n int, wait time.Duration) (int, time.Time) {
	deadline := time.Now().Add(wait)
	for {
		got, last := p.provisionedSoFar()
		if got >= n || time.Now().After(deadline) {
			return got, last
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *proc) lastLines() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

func (p *proc) warningLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.warnings...)
}

// usage is what a process used so far.
type usage struct {
	CPU      time.Duration // user + system, every thread, exited ones too
	RSS, HWM int64         // bytes: resident now, and at most so far
}

func (p *proc) usage() (usage, error) { return readUsage(p.cmd.Process.Pid) }

// readUsage reads /proc/PID/stat and /proc/PID/status.
func readUsage(pid int) (usage, error) {
	var u usage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// The fields after the command name, which is in parentheses and may
	// hold anything: state is field 3, utime and stime are 14 and 15.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return u, errors.New("bench: /proc/PID/stat without a command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return u, errors.New("bench: /proc/PID/stat too short")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return u, fmt.Errorf("bench: /proc/PID/stat: %w", err)
	}
	u.CPU = time.Duration(ut+st) * clockTick
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		name, v, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return u, fmt.Errorf("bench: /proc/PID/status %s: %w", name, err)
		}
		if name == "VmRSS" {
			u.RSS = kb << 10
		} else {
			u.HWM = kb << 10
		}
	}
	return u, nil
}

// stop sends SIGTERM and waits for the exit, killing after stopTimeout.
func (p *proc) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-p.exited:
		if st := p.cmd.ProcessState; st != nil && !st.Success() {
			return fmt.Errorf("bench: %s exited: %v:\n%s", p.name, st, p.lastLines())
		}
		return nil
	case <-t.C:
		p.kill()
		return fmt.Errorf("bench: %s still ran %v after SIGTERM; killed it", p.name, stopTimeout)
	}
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}
