package ami

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pnpd/pnpd/ami/amitest"
)

// bound is how long any wait of a test may take before it fails: no test
// asserts a duration, every wait is bounded.
const bound = 20 * time.Second

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	t.Cleanup(cancel)
	return ctx
}

// testClient is a Client served by a goroutine of the test, shut down (and
// Serve waited for) when the test ends.
type testClient struct {
	*Client
	states *stateLog
	served chan error
}

// stateLog records OnState calls.
type stateLog struct {
	mu     sync.Mutex
	list   []Status
	change chan struct{}
}

func newStateLog() *stateLog { return &stateLog{change: make(chan struct{}, 1)} }

func (l *stateLog) add(s Status) {
	l.mu.Lock()
	l.list = append(l.list, s)
	l.mu.Unlock()
	select {
	case l.change <- struct{}{}:
	default:
	}
}

func (l *stateLog) states() []State {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]State, len(l.list))
	for i, s := range l.list {
		out[i] = s.State
	}
	return out
}

func (l *stateLog) all() []Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Status(nil), l.list...)
}

// config returns a Config for srv with fast backoff.
func config(srv *amitest.Server) Config {
	return Config{
		Address:    srv.Addr(),
		Username:   srv.Username(),
		Secret:     srv.Secret(),
		MinBackoff: 5 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond,
	}
}

// serve starts a client for cfg; mod, when set, adjusts the client before
// Serve.
func serve(t testing.TB, cfg Config, mod func(*Client)) *testClient {
	t.Helper()
	log := newStateLog()
	user := cfg.OnState
	cfg.OnState = func(s Status) {
		log.add(s)
		if user != nil {
			user(s)
		}
	}
	c := New(cfg)
	if mod != nil {
		mod(c)
	}
	tc := &testClient{Client: c, states: log, served: make(chan error, 1)}
	go func() { tc.served <- c.Serve(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		select {
		case err := <-tc.served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-ctx.Done():
			t.Errorf("Serve did not return after Shutdown")
		}
	})
	return tc
}

// connected serves a client of srv and waits until it is logged in.
func connected(t testing.TB, srv *amitest.Server, mod func(*Client)) *testClient {
	t.Helper()
	c := serve(t, config(srv), mod)
	if err := c.WaitConnected(testCtx(t)); err != nil {
		t.Fatalf("WaitConnected: %v", err)
	}
	return c
}

// waitFor waits until cond holds, polling; it fails the test after bound.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ourGoroutines returns the stacks of the goroutines that run code of
// amigo or of this package (not of amitest, not of the tests).
func ourGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		s := string(g)
		if strings.Contains(s, "github.com/ivahaev/amigo") ||
			strings.Contains(s, "github.com/pnpd/pnpd/ami.(") ||
			strings.Contains(s, "github.com/pnpd/pnpd/ami.New") {
			if strings.Contains(s, "testing.tRunner") {
				continue // a test's own goroutine
			}
			out = append(out, s)
		}
	}
	return out
}

// leakCheck fails the test when, once its other cleanups have run (the
// clients' Shutdown), goroutines of amigo or of this package are still
// there after a bounded wait. Call it first in a test: cleanups run last
// registered first.
func leakCheck(t *testing.T) {
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			left := ourGoroutines()
			if len(left) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d goroutines left behind:\n%s", len(left), strings.Join(left, "\n\n"))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
