package ami

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pnpd/pnpd/ami/amitest"
)

func TestLogin(t *testing.T) {
	tests := []struct {
		name    string
		secret  string
		wantErr string // in Status.Err and WaitConnected's error; "" logs in
	}{
		{name: "accepted", secret: "secret"},
		{name: "refused", secret: "wrong", wantErr: "Authentication failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakCheck(t)
			srv := amitest.New(t, amitest.Options{Secret: "secret"})
			cfg := config(srv)
			cfg.Secret = tt.secret
			c := serve(t, cfg, nil)
			if tt.wantErr == "" {
				if err := c.WaitConnected(testCtx(t)); err != nil {
					t.Fatalf("WaitConnected: %v", err)
				}
				st := c.Status()
				if st.State != Connected || st.Err != nil || st.Logins != 1 {
					t.Fatalf("Status = %+v, want connected, no error, 1 login", st)
				}
				return
			}
			waitFor(t, "a refused login", func() bool { return c.Status().Err != nil })
			var ae *Error
			if err := c.Status().Err; !errors.As(err, &ae) || ae.Action != "Login" || ae.Message != tt.wantErr {
				t.Fatalf("Status.Err = %v, want *Error{Login, %q}", err, tt.wantErr)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			err := c.WaitConnected(ctx)
			if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "Login: "+tt.wantErr) {
				t.Fatalf("WaitConnected = %v, want the login error and the deadline", err)
			}
			if !errors.As(err, &ae) {
				t.Fatalf("WaitConnected = %v: no *Error in the chain", err)
			}
		})
	}
}

// TestBackoffGrows counts connection attempts: while a client with a fixed
// retry delay (MinBackoff = MaxBackoff = MaxLoginBackoff) makes 30, one
// whose delay doubles from the same MinBackoff makes fewer. No duration is
// asserted.
func TestBackoffGrows(t *testing.T) {
	leakCheck(t)
	fixedSrv := amitest.New(t, amitest.Options{})
	growSrv := amitest.New(t, amitest.Options{})
	run := func(srv *amitest.Server, maxBackoff time.Duration) {
		cfg := config(srv)
		cfg.Secret = "wrong"
		cfg.MinBackoff, cfg.MaxBackoff, cfg.MaxLoginBackoff = 2*time.Millisecond, maxBackoff, maxBackoff
		serve(t, cfg, nil)
	}
	run(growSrv, time.Hour)
	run(fixedSrv, 2*time.Millisecond)
	waitFor(t, "30 attempts at a fixed interval", func() bool { return fixedSrv.LoginAttempts() >= 30 })
	fixed, grow := fixedSrv.LoginAttempts(), growSrv.LoginAttempts()
	t.Logf("login attempts: fixed interval %d, growing backoff %d", fixed, grow)
	if grow >= fixed/2 {
		t.Errorf("growing backoff made %d attempts while the fixed interval made %d", grow, fixed)
	}
}

// TestLoginBackoff: a refused login backs off up to MaxLoginBackoff, past
// MaxBackoff; a PBX that is away (nothing listens) is still tried every
// MaxBackoff. Attempts are counted against a client whose caps are both
// MaxBackoff, while it makes 30; no duration is asserted.
func TestLoginBackoff(t *testing.T) {
	leakCheck(t)
	const short = 2 * time.Millisecond
	refusedSrv := amitest.New(t, amitest.Options{})
	fixedSrv := amitest.New(t, amitest.Options{})
	wrong := func(srv *amitest.Server, maxLogin time.Duration) Config {
		cfg := config(srv)
		cfg.Secret = "wrong"
		cfg.MinBackoff, cfg.MaxBackoff, cfg.MaxLoginBackoff = time.Millisecond, short, maxLogin
		return cfg
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	away := ln.Addr().String()
	ln.Close() // nothing listens there now

	refused := serve(t, wrong(refusedSrv, 0), nil) // default: DefaultMaxLoginBackoff
	serve(t, wrong(fixedSrv, short), nil)
	dials := 0
	var mu sync.Mutex
	serve(t, Config{Address: away, Username: "u", Secret: "s", MinBackoff: time.Millisecond, MaxBackoff: short,
		OnState: func(s Status) {
			if s.State == Connecting {
				mu.Lock()
				dials++
				mu.Unlock()
			}
		}}, nil)
	if refused.maxLoginBackoff != DefaultMaxLoginBackoff {
		t.Errorf("MaxLoginBackoff 0: cap %v, want DefaultMaxLoginBackoff", refused.maxLoginBackoff)
	}
	waitFor(t, "30 refused logins at a fixed interval", func() bool { return fixedSrv.LoginAttempts() >= 30 })
	waitFor(t, "30 connection attempts to an address where nothing listens", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return dials >= 30
	})
	fixed, grow := fixedSrv.LoginAttempts(), refusedSrv.LoginAttempts()
	t.Logf("refused logins: capped at MaxBackoff %d, at MaxLoginBackoff %d", fixed, grow)
	if grow >= fixed/2 {
		t.Errorf("refused logins past MaxBackoff: %d attempts, while %d at MaxBackoff", grow, fixed)
	}
	// Below MaxBackoff a lower MaxLoginBackoff is raised to it.
	c := New(Config{Address: away, Username: "u", Secret: "s", MaxBackoff: time.Minute, MaxLoginBackoff: time.Second})
	if c.maxLoginBackoff != time.Minute {
		t.Errorf("MaxLoginBackoff below MaxBackoff: cap %v, want MaxBackoff", c.maxLoginBackoff)
	}
}

func TestDialError(t *testing.T) {
	leakCheck(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c := serve(t, Config{Address: addr, Username: "u", Secret: "s", MinBackoff: time.Millisecond}, nil)
	waitFor(t, "a dial error", func() bool { return c.Status().Err != nil })
	want := "dial tcp " + addr + ": connect: connection refused"
	if err := c.Status().Err; !strings.Contains(err.Error(), want) {
		t.Fatalf("Status.Err = %v, want it to say %q", err, want)
	}
	var op *net.OpError
	if !errors.As(c.Status().Err, &op) {
		t.Errorf("Status.Err = %v: no *net.OpError in the chain", c.Status().Err)
	}
	if _, err := c.DBGet(testCtx(t), "pnp", "k"); !errors.Is(err, ErrNotConnected) {
		t.Errorf("DBGet while down = %v, want ErrNotConnected", err)
	}
}

func TestReconnect(t *testing.T) {
	tests := []struct {
		name string
		drop func(t *testing.T, srv *amitest.Server)
	}{
		{"drop", func(t *testing.T, srv *amitest.Server) { srv.DropAll() }},
		{"refuse then accept", func(t *testing.T, srv *amitest.Server) {
			srv.Refuse()
			srv.DropAll()
			n := srv.Connections()
			time.Sleep(50 * time.Millisecond) // let the client fail to dial a few times
			if srv.Connections() != n {
				t.Errorf("connections accepted while refusing")
			}
			if err := srv.Accept(); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakCheck(t)
			srv := amitest.New(t, amitest.Options{})
			srv.DBPut("pnp", "k", "v")
			c := connected(t, srv, nil)
			tt.drop(t, srv)
			waitFor(t, "the second login", func() bool { return c.Status().Logins == 2 && c.Status().State == Connected })
			got := c.states.states()
			want := []State{Connecting, Connected, Disconnected, Connecting}
			if len(got) < 5 || !slices.Equal(got[:4], want) || got[len(got)-1] != Connected {
				t.Fatalf("states = %v, want %v ... connected", got, want)
			}
			for _, s := range c.states.all() {
				if s.State == Disconnected && s.Err == nil {
					t.Errorf("Disconnected without Err: %+v", s)
				}
			}
			if v, err := c.DBGet(testCtx(t), "pnp", "k"); err != nil || v != "v" {
				t.Fatalf("DBGet after reconnect = %q, %v", v, err)
			}
			if srv.Logins() != 2 {
				t.Errorf("server counted %d logins, want 2", srv.Logins())
			}
		})
	}
}

func TestContextTimeout(t *testing.T) {
	leakCheck(t)
	srv := amitest.New(t, amitest.Options{})
	answer := make(chan struct{})
	srv.Handle("Ping", func(s *amitest.Session, req amitest.Message) {
		<-answer // hold the answer until the test lets it go
		srv.Builtin(s, req)
	})
	c := connected(t, srv, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := c.Ping(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ping = %v, want context.DeadlineExceeded", err)
	}
	if want := "ami: Ping: context deadline exceeded"; err.Error() != want {
		t.Errorf("Ping error = %q, want %q", err, want)
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if err := c.Ping(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Ping with a cancelled context = %v", err)
	}
	close(answer) // the abandoned Ping is answered; its answer is dropped
	if err := c.Ping(testCtx(t)); err != nil {
		t.Fatalf("Ping after the abandoned one: %v", err)
	}
}

// TestNoResponse: without a deadline of the caller's, amigo's own timeout
// still ends a call that gets no answer.
func TestNoResponse(t *testing.T) {
	leakCheck(t)
	srv := amitest.New(t, amitest.Options{})
	srv.Handle("Ping", func(*amitest.Session, amitest.Message) {})
	c := connected(t, srv, func(c *Client) { c.actionTimeout = 100 * time.Millisecond })
	if err := c.Ping(context.Background()); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Ping = %v, want ErrTimeout", err)
	}
	srv.Handle("Ping", nil)
	if err := c.Ping(testCtx(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func TestNotConnected(t *testing.T) {
	leakCheck(t)
	srv := amitest.New(t, amitest.Options{})
	c := New(config(srv))
	ctx := testCtx(t)
	if _, err := c.DBGet(ctx, "pnp", "k"); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("DBGet before Serve = %v, want ErrNotConnected", err)
	}
	if got, want := fmt.Sprint(c.Ping(ctx)), "ami: Ping: not connected"; got != want {
		t.Errorf("error text = %q, want %q", got, want)
	}
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DBGet(ctx, "pnp", "k"); !errors.Is(err, ErrClosed) {
		t.Fatalf("DBGet after Shutdown = %v, want ErrClosed", err)
	}
}

func TestShutdownBeforeServe(t *testing.T) {
	leakCheck(t)
	srv := amitest.New(t, amitest.Options{})
	var states []State
	cfg := config(srv)
	cfg.OnState = func(s Status) { states = append(states, s.State) }
	c := New(cfg)
	ch, _ := c.Subscribe("UserEvent", 1)
	if err := c.Shutdown(testCtx(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := c.Shutdown(testCtx(t)); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := c.Serve(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve after Shutdown = %v, want ErrClosed", err)
	}
	if _, ok := <-ch; ok {
		t.Errorf("subscription not closed by Shutdown")
	}
	if err := c.WaitConnected(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("WaitConnected = %v, want ErrClosed", err)
	}
	if !slices.Equal(states, []State{Closed}) {
		t.Errorf("states = %v, want [closed]", states)
	}
	if srv.Connections() != 0 {
		t.Errorf("%d connections made", srv.Connections())
	}
}

func TestShutdownWhileConnecting(t *testing.T) {
	leakCheck(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := New(Config{Address: addr, Username: "u", Secret: "s", MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	served := make(chan error, 1)
	go func() { served <- c.Serve(context.Background()) }()
	waitFor(t, "a failed attempt", func() bool { return c.Status().Err != nil })
	if err := c.Shutdown(testCtx(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if st := c.Status(); st.State != Closed {
		t.Errorf("state %v after Shutdown", st.State)
	}
}

// TestShutdownGoroutines: after Shutdown nothing of the client is left
// running, counted with runtime.NumGoroutine.
func TestShutdownGoroutines(t *testing.T) {
	srv := amitest.New(t, amitest.Options{})
	srv.DBPut("pnp", "k", "v")
	// Let goroutines of earlier tests (amigo's timers) end first.
	waitFor(t, "earlier goroutines to end", func() bool { return len(ourGoroutines()) == 0 })
	before := runtime.NumGoroutine()
	c := New(config(srv))
	served := make(chan error, 1)
	go func() { served <- c.Serve(context.Background()) }()
	ctx := testCtx(t)
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	ev, cancel := c.Subscribe("UserEvent", 4)
	defer cancel()
	for i := range 20 {
		if _, err := c.DBGet(ctx, "pnp", "k"); err != nil {
			t.Fatal(err)
		}
		if err := c.UserEvent(ctx, "Tick", Header{"N", fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	srv.DropAll() // one reconnect on the way
	waitFor(t, "the second login", func() bool { return c.Status().Logins == 2 && c.Status().State == Connected })
	if err := c.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	for range ev {
	}
	waitFor(t, "the session to end on the server", func() bool { return srv.Sessions() == 0 })
	if srv.Received("Logoff") != 1 {
		t.Errorf("server got %d Logoff, want 1", srv.Received("Logoff"))
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines before, %d after Shutdown:\n%s", before, runtime.NumGoroutine(), strings.Join(ourGoroutines(), "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServeContext: Serve returns nil when its context ends, after logging
// off.
func TestServeContext(t *testing.T) {
	leakCheck(t)
	srv := amitest.New(t, amitest.Options{})
	c := New(config(srv))
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- c.Serve(ctx) }()
	if err := c.WaitConnected(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(bound):
		t.Fatal("Serve did not return")
	}
	if srv.Received("Logoff") != 1 {
		t.Errorf("server got %d Logoff, want 1", srv.Received("Logoff"))
	}
	if err := c.Ping(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("Ping after Serve = %v, want ErrClosed", err)
	}
	if err := c.Serve(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("second Serve = %v, want ErrClosed", err)
	}
	if err := c.Shutdown(testCtx(t)); err != nil {
		t.Errorf("Shutdown after Serve returned: %v", err)
	}
}

func TestServeTwice(t *testing.T) {
	leakCheck(t)
	srv := amitest.New(t, amitest.Options{})
	c := connected(t, srv, nil)
	if err := c.Serve(testCtx(t)); err == nil || errors.Is(err, ErrClosed) {
		t.Fatalf("second Serve = %v, want an error", err)
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no address", Config{Username: "u", Secret: "s"}, "Address"},
		{"no port", Config{Address: "127.0.0.1", Username: "u", Secret: "s"}, "Address"},
		{"no host", Config{Address: ":5038", Username: "u", Secret: "s"}, "host and port"},
		{"no user", Config{Address: "127.0.0.1:5038", Secret: "s"}, "Username"},
		{"no secret", Config{Address: "127.0.0.1:5038", Username: "u"}, "Secret"},
		{"CRLF in secret", Config{Address: "127.0.0.1:5038", Username: "u", Secret: "s\r\nAction: x"}, "Secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := New(tt.cfg).Serve(testCtx(t))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Serve = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

// TestConfigUntouched: New and Serve leave the caller's Config as it was
// (amigo.New writes defaults into the Settings it gets).
func TestConfigUntouched(t *testing.T) {
	leakCheck(t)
	srv := amitest.New(t, amitest.Options{})
	cfg := Config{Address: srv.Addr(), Username: srv.Username(), Secret: srv.Secret()}
	want := cfg
	c := serve(t, cfg, nil)
	if err := c.WaitConnected(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("Config changed: %+v, was %+v", cfg, want)
	}
	if c.cfg.DialTimeout != 0 || c.dialTimeout != DefaultDialTimeout {
		t.Errorf("defaults: cfg.DialTimeout %v, dialTimeout %v", c.cfg.DialTimeout, c.dialTimeout)
	}
}

// TestLogging: transitions at Info, a repeated failure once, never the
// secret.
func TestLogging(t *testing.T) {
	leakCheck(t)
	srv := amitest.New(t, amitest.Options{Secret: "right-secret"})
	var mu sync.Mutex
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := config(srv)
	cfg.Secret = "wrong-secret"
	cfg.Logger = logger
	c := serve(t, cfg, nil)
	waitFor(t, "several refused logins", func() bool { return srv.LoginAttempts() >= 4 })
	c.Shutdown(testCtx(t))
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if strings.Contains(out, "wrong-secret") || strings.Contains(out, "right-secret") {
		t.Errorf("log shows a secret:\n%s", out)
	}
	if n := strings.Count(out, "login refused"); n != 1 {
		t.Errorf("%d 'login refused' lines at Info, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "level=WARN msg=\"ami: login refused") || !strings.Contains(out, "user="+srv.Username()) ||
		!strings.Contains(out, "manager.conf") {
		t.Errorf("the refused login is no warning naming the user and manager.conf:\n%s", out)
	}
	if !strings.Contains(out, "Authentication failed") {
		t.Errorf("log does not give Asterisk's message:\n%s", out)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Disconnected: "disconnected", Connecting: "connecting", Connected: "connected", Closed: "closed", 9: "State(9)"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(s), s.String(), want)
		}
	}
}
