package ami

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	DefaultDialTimeout = 3 * time.Second
	DefaultMinBackoff  = 100 * time.Millisecond
	DefaultMaxBackoff  = 5 * time.Second
	// DefaultMaxLoginBackoff caps the delay after a refused login: a wrong
	// secret does not fix itself, and each refusal is a NOTICE in
	// Asterisk's log ("failed to authenticate as") that the stock
	// fail2ban [asterisk] filter counts against the client's address.
	DefaultMaxLoginBackoff = 60 * time.Second
)

const (
	// amigoActionTimeout is amigo's ActionTimeout: the backstop for an
	// action whose response never comes, whatever the caller's context.
	// amigo holds one mutex per action until its response or this timeout,
	// so an unanswered action delays every later one of that connection by
	// this much.
	amigoActionTimeout = 10 * time.Second
	// amigoReconnectInterval is amigo's ReconnectInterval. We never let
	// amigo reconnect (one amigo per connection attempt), but after a
	// failed login, a failed banner read or a lost connection amigo sleeps
	// this long before it looks at its stop channel: its goroutine outlives
	// Close by up to this much, and Close must come within it (see conn.go).
	amigoReconnectInterval = 250 * time.Millisecond
	// eventBuffer is the capacity of the channel amigo hands messages to:
	// more than amigo's own queue (8192), so that amigo never blocks on it
	// even after the drain has stopped (see drain).
	eventBuffer = 8192 + 256
	// lingerSlack is added to the time amigo's goroutines need to end.
	lingerSlack = 50 * time.Millisecond
)

// State is the state of a Client's connection.
type State int

// States. A Client starts Disconnected; Serve moves it to Connecting, then
// Connected (logged in) or back to Disconnected, and again after a lost
// connection; it ends Closed.
const (
	Disconnected State = iota
	Connecting
	Connected
	Closed
)

func (s State) String() string {
	switch s {
	case Disconnected:
		return "disconnected"
	case Connecting:
		return "connecting"
	case Connected:
		return "connected"
	case Closed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Status is a snapshot of a Client's connection.
type Status struct {
	State State
	// Err tells why the client is not connected: Asterisk's refusal of
	// the login (an *Error with Action "Login", "Authentication failed"),
	// the dial error ("dial tcp 127.0.0.1:5038: connect: connection
	// refused"), or the loss of the connection. It stays set while the
	// client tries again (Connecting), is nil once Connected, and is
	// ErrClosed once Closed.
	Err error
	// Since is when the client entered State.
	Since time.Time
	// Logins counts the successful logins. Each is a new AMI session:
	// events sent while there was none are lost, and amigo loses those
	// Asterisk sends right behind the login response; resync after each.
	Logins int
}

// Config configures a Client.
type Config struct {
	// Address of Asterisk's AMI, "host:port". Required.
	Address string
	// Username and Secret of a manager.conf user. Both required: amigo
	// would replace an empty one with its own default (admin, amp111).
	Username, Secret string
	// DialTimeout bounds a TCP connect. Default 3 s.
	DialTimeout time.Duration
	// MinBackoff and MaxBackoff bound the delay before a new connection
	// attempt: it starts at MinBackoff, doubles after each failed attempt
	// up to MaxBackoff, and is MinBackoff again after a successful login.
	// Defaults 100 ms and 5 s.
	MinBackoff, MaxBackoff time.Duration
	// MaxLoginBackoff replaces MaxBackoff as the cap while Asterisk
	// refuses the login (a wrong username or secret, or an address the
	// user's permit/deny refuses): retrying those every few seconds only
	// fills Asterisk's security log. The delay still doubles from where it
	// is, so a login refused during a "manager reload" is soon tried
	// again. Default DefaultMaxLoginBackoff (60 s); never below MaxBackoff.
	MaxLoginBackoff time.Duration
	// Logger gets the transitions (connected, lost, login refused) at
	// Info, details at Debug. Default: nothing logged.
	Logger *slog.Logger
	// OnState, when set, is called on every state change, in order and
	// never concurrently, from the goroutine running Serve (or Shutdown's
	// when Serve never ran). It must not block long, nor wait for a call
	// of this client.
	OnState func(Status)
}

// Client is an AMI client: one AMI session at a time, kept up by Serve.
// Its methods are safe for concurrent use.
type Client struct {
	cfg               Config
	cfgErr            error
	amigoHost, port   string
	dialTimeout       time.Duration
	minBackoff        time.Duration
	maxBackoff        time.Duration
	maxLoginBackoff   time.Duration
	actionTimeout     time.Duration
	reconnectInterval time.Duration
	log               *slog.Logger
	idPrefix          string
	seq               atomic.Uint64
	connSeq           atomic.Uint64

	// events is the channel given to every amigo instance
	// (SetEventChannel): every message, responses included.
	events chan map[string]string

	pmu     sync.Mutex
	pending map[string]*call // by ActionID

	smu        sync.RWMutex
	subs       []*subscriber
	subsClosed bool
	dropped    atomic.Uint64

	stateMu sync.Mutex // serializes state changes and OnState

	mu          sync.Mutex
	status      Status
	changed     chan struct{} // closed at each state change
	cur         *conn         // the logged-in connection, or nil
	conns       []*conn       // connections whose goroutines may still run
	serveDone   chan struct{} // nil until Serve starts; closed when it returns
	closed      bool          // no new calls
	stopped     bool          // stop closed
	stop        chan struct{} // closed by Shutdown
	stopCtx     context.Context
	lingerUntil time.Time // amigo goroutines of closed connections end by then
	loggedErr   string    // last failure logged at Info
}

// New returns a client for cfg; Serve connects it. cfg is copied, never
// changed.
func New(cfg Config) *Client {
	c := &Client{
		cfg:               cfg,
		dialTimeout:       cfg.DialTimeout,
		minBackoff:        cfg.MinBackoff,
		maxBackoff:        cfg.MaxBackoff,
		maxLoginBackoff:   cfg.MaxLoginBackoff,
		actionTimeout:     amigoActionTimeout,
		reconnectInterval: amigoReconnectInterval,
		log:               cfg.Logger,
		events:            make(chan map[string]string, eventBuffer),
		pending:           make(map[string]*call),
		changed:           make(chan struct{}),
		stop:              make(chan struct{}),
	}
	if c.dialTimeout <= 0 {
		c.dialTimeout = DefaultDialTimeout
	}
	if c.minBackoff <= 0 {
		c.minBackoff = DefaultMinBackoff
	}
	if c.maxBackoff <= 0 {
		c.maxBackoff = DefaultMaxBackoff
	}
	c.maxBackoff = max(c.maxBackoff, c.minBackoff)
	if c.maxLoginBackoff <= 0 {
		c.maxLoginBackoff = DefaultMaxLoginBackoff
	}
	c.maxLoginBackoff = max(c.maxLoginBackoff, c.maxBackoff)
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	var r [6]byte
	_, _ = rand.Read(r[:])
	c.idPrefix = "pnpd-" + hex.EncodeToString(r[:]) + "-"
	c.status = Status{State: Disconnected, Since: time.Now()}
	c.cfgErr = c.checkConfig()
	return c
}

func (c *Client) checkConfig() error {
	host, port, err := net.SplitHostPort(c.cfg.Address)
	switch {
	case err != nil:
		return fmt.Errorf("ami: config: Address: %w", err)
	case host == "" || port == "":
		return fmt.Errorf("ami: config: Address %q: host and port required", c.cfg.Address)
	case c.cfg.Username == "":
		return errors.New("ami: config: Username required")
	case c.cfg.Secret == "":
		return errors.New("ami: config: Secret required")
	}
	for _, v := range []struct{ name, value string }{{"Username", c.cfg.Username}, {"Secret", c.cfg.Secret}} {
		if strings.ContainsAny(v.value, "\r\n\x00") {
			return fmt.Errorf("ami: config: %s holds CR, LF or NUL: %w", v.name, ErrInvalidValue)
		}
	}
	// amigo dials fmt.Sprintf("%s:%s", Host, Port): bracket an IPv6 host.
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	c.amigoHost, c.port = host, port
	return nil
}

// Status returns the connection's status now.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// WaitConnected waits until the client is logged in. When ctx ends first it
// returns the last Status.Err (why it is not connected: "ami: Login:
// Authentication failed") wrapped together with ctx's error; ErrClosed once
// the client is closed.
func (c *Client) WaitConnected(ctx context.Context) error {
	for {
		c.mu.Lock()
		st, changed := c.status, c.changed
		c.mu.Unlock()
		switch st.State {
		case Connected:
			return nil
		case Closed:
			return ErrClosed
		}
		select {
		case <-changed:
		case <-ctx.Done():
			if st := c.Status(); st.Err != nil && st.State != Connected {
				return fmt.Errorf("%w (%w)", st.Err, ctx.Err())
			}
			return fmt.Errorf("ami: not connected: %w", ctx.Err())
		}
	}
}

// Serve connects, logs in, and keeps a session up until ctx ends or
// Shutdown is called; then it logs off, stops amigo, and returns nil. It
// returns at once with an error for an invalid Config, with ErrClosed after
// Shutdown, and with an error when already running. Once Serve has
// returned, the client is closed for good.
func (c *Client) Serve(ctx context.Context) error {
	if c.cfgErr != nil {
		return c.cfgErr
	}
	c.mu.Lock()
	switch {
	case c.closed || c.stopped:
		c.mu.Unlock()
		return ErrClosed
	case c.serveDone != nil:
		c.mu.Unlock()
		return errors.New("ami: Serve already called")
	}
	done := make(chan struct{})
	c.serveDone = done
	c.mu.Unlock()
	defer close(done)

	drainStop, drainDone := make(chan struct{}), make(chan struct{})
	go c.drain(drainStop, drainDone)

	c.run(ctx)

	close(drainStop)
	<-drainDone
	c.finish()
	return nil
}

// Shutdown makes Serve log off, stop amigo and return, and waits for it
// (or for ctx, whose error it then returns wrapped; Serve still finishes
// in the background, bounded by ctx). Calls made after Shutdown return
// ErrClosed. Shutdown before Serve closes the client at once.
func (c *Client) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	if !c.stopped {
		c.stopped = true
		c.stopCtx = ctx
		close(c.stop)
	}
	done := c.serveDone
	if done == nil {
		already := c.closed
		c.closed = true
		c.mu.Unlock()
		if !already {
			c.finish()
		}
		return nil
	}
	c.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ami: shutdown: %w", ctx.Err())
	}
}

// finish closes the client for good.
func (c *Client) finish() {
	c.mu.Lock()
	c.closed = true
	c.cur = nil
	c.mu.Unlock()
	c.failPending(nil, ErrClosed)
	c.closeSubscribers()
	c.setState(Closed, ErrClosed, false)
}

// setState records a state change and reports it to OnState, in order.
func (c *Client) setState(st State, err error, login bool) {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	c.mu.Lock()
	c.status.State, c.status.Err, c.status.Since = st, err, time.Now()
	if login {
		c.status.Logins++
	}
	snap := c.status
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	if c.cfg.OnState != nil {
		c.cfg.OnState(snap)
	}
}

// run is Serve's connect/reconnect loop. It returns once the client stops,
// after logging off and waiting for amigo's goroutines.
func (c *Client) run(ctx context.Context) {
	backoff := c.minBackoff
	var lastErr error
	failed := 0 // attempts since the last login
	for {
		if ctx.Err() != nil || c.isStopped() {
			c.teardown(ctx, nil)
			return
		}
		c.setState(Connecting, lastErr, false)
		cn := c.newConn()
		c.log.Debug("ami: connecting", "address", c.cfg.Address, "attempt", cn.id)
		select {
		case <-cn.up:
		case <-cn.done:
		case <-ctx.Done():
			c.teardown(ctx, cn)
			return
		case <-c.stop:
			c.teardown(ctx, cn)
			return
		}
		var err error
		if isClosed(cn.up) {
			c.connected(cn, failed)
			backoff, failed = c.minBackoff, 0
			select {
			case <-cn.done:
			case <-ctx.Done():
				c.teardown(ctx, cn)
				return
			case <-c.stop:
				c.teardown(ctx, cn)
				return
			}
			err = cn.error()
			c.disconnected(cn, err, true)
		} else {
			failed++
			err = cn.error()
			if cn.isDialFailure() {
				err = c.dialError(ctx)
			}
			c.disconnected(cn, err, false)
		}
		lastErr = err
		c.reap()
		// A refused login waits longer than a PBX that is away: see
		// Config.MaxLoginBackoff.
		limit := c.maxBackoff
		if loginRefused(err) {
			limit = c.maxLoginBackoff
		}
		backoff = min(backoff, limit)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-c.stop:
		}
		t.Stop()
		if !isClosed(cn.up) {
			backoff = min(backoff*2, limit)
		}
	}
}

// loginRefused reports whether err is Asterisk's answer to our Login.
func loginRefused(err error) bool {
	var ae *Error
	return errors.As(err, &ae) && ae.Action == "Login"
}

func (c *Client) isStopped() bool { return isClosed(c.stop) }

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// connected makes cn the client's session; failed is the number of
// attempts that failed before it.
func (c *Client) connected(cn *conn, failed int) {
	c.mu.Lock()
	c.cur = cn
	c.loggedErr = ""
	c.mu.Unlock()
	c.setState(Connected, nil, true)
	attrs := []any{"address", c.cfg.Address, "banner", cn.bannerText(), "logins", c.Status().Logins}
	if failed > 0 {
		attrs = append(attrs, "failed_attempts", failed)
	}
	c.log.Info("ami: connected", attrs...)
}

// disconnected records the end of cn (a lost session, or a failed attempt).
func (c *Client) disconnected(cn *conn, err error, wasUp bool) {
	c.mu.Lock()
	if c.cur == cn {
		c.cur = nil
	}
	text := fmt.Sprint(err)
	repeat := !wasUp && text == c.loggedErr
	if !wasUp {
		c.loggedErr = text
	}
	c.mu.Unlock()
	c.setState(Disconnected, err, false)
	// One line per kind of failure, not per attempt: the same failure
	// again is only a Debug line.
	switch {
	case wasUp:
		c.log.Info("ami: connection lost", "address", c.cfg.Address, "err", err)
	case repeat:
		c.log.Debug("ami: connection attempt failed again", "address", c.cfg.Address, "err", err)
	case loginRefused(err):
		// A configuration error that will not mend itself: Warn. Asterisk
		// gives the same answer for the three causes, so name them all.
		c.log.Warn("ami: login refused: check the username and secret",
			"address", c.cfg.Address, "user", c.cfg.Username, "err", err,
			"hint", "the username and secret (pnpd's [ami] section) must be those of a user in Asterisk's manager.conf, and that user's permit/deny must allow this host; then \"manager reload\" on the PBX",
			"retry", "with a delay doubling up to "+c.maxLoginBackoff.String())
	default:
		c.log.Info("ami: cannot connect", "address", c.cfg.Address, "err", err)
	}
}

// dialError recovers the dial error amigo leaves out of its event, by a
// dial of our own to the same address.
func (c *Client) dialError(ctx context.Context) error {
	d := net.Dialer{Timeout: min(c.dialTimeout, time.Second)}
	nc, err := d.DialContext(ctx, "tcp", c.cfg.Address)
	if err != nil {
		return fmt.Errorf("ami: %w", err)
	}
	nc.Close()
	return errors.New("ami: connect failed (amigo gives no reason)")
}

// current returns the logged-in connection for a call of action.
func (c *Client) current(action string) (*conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return nil, opErr(action, ErrClosed)
	case c.cur == nil:
		return nil, opErr(action, ErrNotConnected)
	}
	return c.cur, nil
}

// teardown ends the session at stop: logs off cn (after the calls already
// handed to it), waits until amigo has let go of it, then for the
// goroutines of every connection to end. Shutdown's context bounds it, or,
// when Serve's context ended, DialTimeout plus 2 s.
func (c *Client) teardown(ctx context.Context, cn *conn) {
	c.mu.Lock()
	c.closed = true
	c.cur = nil
	tctx := c.stopCtx
	c.mu.Unlock()
	if tctx == nil {
		var cancel context.CancelFunc
		tctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), c.dialTimeout+2*time.Second)
		defer cancel()
	}
	if cn != nil {
		cn.shutdown(tctx)
	}
	c.reapWait(tctx)
}

// reap forgets the connections whose goroutines have ended.
func (c *Client) reap() {
	c.mu.Lock()
	defer c.mu.Unlock()
	live := c.conns[:0]
	for _, cn := range c.conns {
		if !isClosed(cn.senderDone) {
			live = append(live, cn)
		}
	}
	clear(c.conns[len(live):])
	c.conns = live
}

// reapWait waits, within ctx, until amigo's goroutines of closed
// connections have ended (they sleep up to amigoReconnectInterval after
// Close) and every connection's sender has returned. A sender stuck in
// amigo (see conn.send) is given up after the action timeout.
func (c *Client) reapWait(ctx context.Context) {
	c.mu.Lock()
	until := c.lingerUntil
	conns := append([]*conn(nil), c.conns...)
	c.mu.Unlock()
	if d := time.Until(until); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	giveUp := time.NewTimer(c.actionTimeout + time.Second)
	defer giveUp.Stop()
	for _, cn := range conns {
		select {
		case <-cn.senderDone:
		case <-ctx.Done():
			return
		case <-giveUp.C:
			c.log.Warn("ami: an action is stuck inside amigo; its goroutine is left behind", "address", c.cfg.Address)
			return
		}
	}
	c.reap()
}

// linger records that amigo's goroutines of a connection closed now end
// within d.
func (c *Client) linger(d time.Duration) {
	t := time.Now().Add(d + lingerSlack)
	c.mu.Lock()
	if t.After(c.lingerUntil) {
		c.lingerUntil = t
	}
	c.mu.Unlock()
}
