package ami

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ivahaev/amigo"
)

// A conn is one connection attempt: one amigo instance, used for one TCP
// connection and closed after it, never left to reconnect on its own.
//
// How amigo v0.1.11 behaves, and what this file does about it:
//
//   - amigo.New writes its defaults (admin/amp111, 127.0.0.1:5038) into the
//     Settings it is given: each conn gives it a private Settings with every
//     field set.
//   - Close before Connect panics: Close is only ever called after Connect
//     has returned (conn.ready).
//   - amigo's goroutine reads its `reconnect` flag without a lock, and Close
//     writes it: Close must not run while that goroutine may be between two
//     looks at the flag. Close therefore only runs from amigo's own "error"
//     events, each of which leaves that goroutine parked where it next looks
//     at its stop channel: synchronously inside the "AMI Reconnect failed"
//     handler (on that very goroutine), or, for the other errors, while it
//     sleeps ReconnectInterval before trying again (amigoReconnectInterval,
//     far longer than the handler takes). It then ends without dialing
//     again; it outlives Close by up to ReconnectInterval (Client.linger).
//   - Close on a live connection prints "STOPPED" to stderr and leaves
//     amigo's socket reader goroutine blocked forever. A live session is
//     ended with Logoff instead; Asterisk closes the socket, amigo reports
//     "AMI TCP ERROR" and Close follows. The Logoff is sent with a
//     lower-case "action" header: amigo's Action looks for "Action" exactly
//     to clear its reconnect flag (unlocked, racing with its goroutine),
//     while Asterisk matches header names case-insensitively. Close on a
//     live connection remains the last resort when Logoff does not end it
//     (forceClose).
//   - amigo's "connect" event comes before amigo counts itself connected:
//     onConnect waits for Connected() before reporting the login.
//   - The dial error is left out of amigo's event: Client.dialError dials
//     again itself to name it.
type conn struct {
	c     *Client
	id    uint64
	am    *amigo.Amigo
	sendq chan *call

	ready      chan struct{} // closed once am.Connect has returned
	up         chan struct{} // closed once logged in (am.Connected())
	done       chan struct{} // closed once the connection has ended and am is closed
	senderDone chan struct{} // closed when sender returns
	upOnce     sync.Once
	doneOnce   sync.Once

	mu         sync.Mutex
	amClosed   bool
	err        error
	dialFailed bool
	abandoned  bool
	banner     string
}

// amigo's "error" event texts.
const (
	evDialFailed   = "AMI Reconnect failed"
	evConnectError = "AMI Connect error: "
	evBannerError  = "Asterisk connection error: "
	evLoginError   = "Asterisk login error: "
	evTCPError     = "AMI TCP ERROR: "
	evChanFull     = "events chan is full"
)

// newConn starts a connection attempt.
func (c *Client) newConn() *conn {
	cn := &conn{
		c:          c,
		id:         c.connSeq.Add(1),
		sendq:      make(chan *call),
		ready:      make(chan struct{}),
		up:         make(chan struct{}),
		done:       make(chan struct{}),
		senderDone: make(chan struct{}),
	}
	settings := &amigo.Settings{
		Username:          c.cfg.Username,
		Password:          c.cfg.Secret,
		Host:              c.amigoHost,
		Port:              c.port,
		ActionTimeout:     c.actionTimeout,
		DialTimeout:       c.dialTimeout,
		ReconnectInterval: c.reconnectInterval,
		Keepalive:         false, // amigo's pinger can block its reader forever
	}
	cn.am = amigo.New(settings)
	cn.am.On("connect", cn.onConnect)
	cn.am.On("error", cn.onError)
	cn.am.SetEventChannel(c.events) // before Connect: no message missed
	c.mu.Lock()
	c.conns = append(c.conns, cn)
	c.mu.Unlock()
	go cn.sender()
	cn.am.Connect()
	close(cn.ready)
	return cn
}

func (cn *conn) error() error {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.err
}

func (cn *conn) isDialFailure() bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.dialFailed
}

func (cn *conn) bannerText() string {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.banner
}

// onConnect is amigo's "connect" event (on a goroutine of its own):
// logged in.
func (cn *conn) onConnect(banner string) {
	<-cn.ready
	// amigo sends the event just before it sets its connected flag.
	for !cn.am.Connected() {
		t := time.NewTimer(time.Millisecond)
		select {
		case <-cn.done:
			t.Stop()
			return
		case <-t.C:
		}
	}
	cn.mu.Lock()
	cn.banner = strings.TrimSpace(banner)
	abandoned := cn.abandoned
	cn.mu.Unlock()
	if abandoned {
		// Shutdown gave up waiting for this attempt: end the session
		// it has made after all.
		_, _ = cn.am.Action(map[string]string{"action": "Logoff"})
		return
	}
	cn.upOnce.Do(func() { close(cn.up) })
}

// onError is amigo's "error" event. "AMI Reconnect failed" and "events
// chan is full" come synchronously from amigo's goroutines; the others
// from a goroutine of their own while amigo's connection goroutine sleeps.
func (cn *conn) onError(msg string) {
	switch {
	case msg == evChanFull:
		// From amigo's reader, once per message while its queue is full:
		// return at once. Our drain never blocks, so this does not
		// happen unless the machine is starved.
		return
	case msg == evDialFailed:
		<-cn.ready
		cn.terminate(nil, true)
	case strings.HasPrefix(msg, evConnectError):
		<-cn.ready
		cn.terminate(nil, true)
	case strings.HasPrefix(msg, evBannerError):
		<-cn.ready
		cn.terminate(fmt.Errorf("ami: reading banner: %w", textError(msg[len(evBannerError):])), false)
	case strings.HasPrefix(msg, evLoginError):
		<-cn.ready
		text := msg[len(evLoginError):]
		var err error = &Error{Action: "Login", Message: text}
		if isIOText(text) {
			err = fmt.Errorf("ami: login: %w", textError(text))
		}
		cn.terminate(err, false)
	case strings.HasPrefix(msg, evTCPError):
		<-cn.ready
		cn.terminate(fmt.Errorf("ami: connection lost: %w", textError(msg[len(evTCPError):])), false)
	default:
		cn.c.log.Debug("ami: amigo error event", "event", msg)
	}
}

// terminate closes amigo once the connection has ended (never while it is
// live: see the type's comment) and fails the calls still waiting on it.
func (cn *conn) terminate(err error, dialFailed bool) {
	cn.mu.Lock()
	first := !cn.amClosed
	if first {
		cn.amClosed = true
		cn.err, cn.dialFailed = err, dialFailed
		cn.am.Close()
	}
	cn.mu.Unlock()
	if first {
		if dialFailed {
			cn.c.linger(0) // amigo's goroutine ends as the handler returns
		} else {
			cn.c.linger(cn.c.reconnectInterval)
		}
	}
	cn.doneOnce.Do(func() { close(cn.done) })
	cn.c.failPending(cn, errConnLost)
}

// forceClose closes amigo on a live connection: the last resort when
// Logoff did not end it. amigo prints "STOPPED" and leaks its socket
// reader goroutine.
func (cn *conn) forceClose() {
	cn.mu.Lock()
	first := !cn.amClosed
	if first {
		cn.amClosed = true
		if cn.err == nil {
			cn.err = ErrClosed
		}
		cn.am.Close()
	}
	cn.mu.Unlock()
	if first {
		cn.c.log.Warn("ami: Logoff did not end the session; closing it under amigo", "address", cn.c.cfg.Address)
		cn.c.linger(0)
	}
	cn.doneOnce.Do(func() { close(cn.done) })
	cn.c.failPending(cn, errConnLost)
}

// shutdown ends cn within ctx: waits for the attempt to resolve, logs off
// a live session and waits for amigo to report its end.
func (cn *conn) shutdown(ctx context.Context) {
	select {
	case <-cn.up:
	case <-cn.done:
	case <-ctx.Done():
		// Still connecting (a server that accepts and never answers
		// holds amigo in a read without deadline). amigo's goroutine
		// cannot be stopped safely now; if it ever logs in, onConnect
		// logs off, and the error that follows closes it.
		cn.mu.Lock()
		cn.abandoned = true
		cn.mu.Unlock()
		cn.c.log.Warn("ami: shutdown: connection attempt still pending; left to end on its own", "address", cn.c.cfg.Address)
		return
	}
	if isClosed(cn.done) {
		return
	}
	cn.logoff(ctx)
	select {
	case <-cn.done:
	case <-ctx.Done():
		cn.forceClose()
	}
}

// logoff sends Logoff after the calls already handed to the sender and
// waits for its answer (or the end of the connection, or ctx).
func (cn *conn) logoff(ctx context.Context) {
	c := cn.c
	cl := &call{action: "Logoff", kind: kindSingle, cn: cn, done: make(chan struct{})}
	cl.id = c.nextID()
	// Lower-case "action": see the type's comment.
	cl.hdr = map[string]string{"action": "Logoff", "ActionID": cl.id}
	c.pmu.Lock()
	c.pending[cl.id] = cl
	c.pmu.Unlock()
	select {
	case cn.sendq <- cl:
	case <-cn.done:
	case <-ctx.Done():
	}
	select {
	case <-cl.done:
	case <-cn.done:
	case <-ctx.Done():
	}
	c.abandon(cl, nil)
}

// sender hands the calls to amigo one at a time (amigo runs one action at
// a time anyway), so that a caller whose context ends is never held up by
// amigo, and an action whose caller gave up before its turn is not sent.
func (cn *conn) sender() {
	defer close(cn.senderDone)
	for {
		select {
		case cl := <-cn.sendq:
			cn.send(cl)
		case <-cn.done:
			return
		}
	}
}

// send runs one call through amigo. amigo's Action returns at the first
// response (the rest of a list comes through the drain), {"Error":
// "Timeout"} after its ActionTimeout, or an error when not connected.
//
// A call made at the very moment the connection drops can block inside
// amigo for good: amigo sends on an unbuffered channel whose writer
// goroutine has already ended. reapWait gives up on such a sender.
func (cn *conn) send(cl *call) {
	c := cn.c
	c.pmu.Lock()
	gone := cl.finished
	c.pmu.Unlock()
	if gone {
		return
	}
	res, err := cn.am.Action(cl.hdr)
	switch {
	case err != nil:
		c.finishCall(cl, opErr(cl.action, ErrNotConnected), false)
	case len(res) == 1 && res["Error"] == "Timeout":
		c.finishCall(cl, opErr(cl.action, ErrTimeout), true)
	}
}
