package ami

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

type callKind int

const (
	kindSingle callKind = iota // the response only
	kindList                   // response and events up to "...Complete"
	kindDBGet                  // a list; keeps DBGetResponse's Val only
	kindTree                   // a list; keeps DBGetTreeResponse entries only
)

// call is one action in flight. The fields below done are guarded by
// Client.pmu until done is closed, and read-only after.
type call struct {
	id     string
	action string
	kind   callKind
	cn     *conn
	hdr    map[string]string // handed to amigo, which adds to it
	done   chan struct{}

	finished bool
	err      error
	resp     map[string]string // amigo's message: read, never written
	events   []Event           // kindList
	val      string            // kindDBGet
	hasVal   bool              // kindDBGet
	family   string            // kindTree
	entries  []Entry           // kindTree
}

func (c *Client) nextID() string {
	return c.idPrefix + strconv.FormatUint(c.seq.Add(1), 36)
}

// reserved are the headers the client sets itself.
var reserved = []string{"Action", "ActionID", amigoConnID}

// headers builds the map handed to amigo (a fresh one per call: amigo
// writes into it), after checking every name and value.
func headers(action string, h []Header) (map[string]string, error) {
	if err := checkKey(action); err != nil {
		return nil, fmt.Errorf("ami: action: %w", err) // err quotes the name
	}
	switch strings.ToLower(action) {
	case "login", "logoff", "challenge":
		return nil, opErr(action, fmt.Errorf("%w: action reserved to the client", ErrInvalidValue))
	}
	m := make(map[string]string, len(h)+3)
	m["Action"] = action
	for i, x := range h {
		if err := checkKey(x.Key); err != nil {
			return nil, opErr(action, err)
		}
		if err := checkValue(x.Key, x.Value); err != nil {
			return nil, opErr(action, err)
		}
		for _, r := range reserved {
			if strings.EqualFold(x.Key, r) {
				return nil, opErr(action, fmt.Errorf("%w: header %s is set by the client", ErrInvalidValue, x.Key))
			}
		}
		for _, y := range h[:i] {
			if strings.EqualFold(x.Key, y.Key) {
				return nil, opErr(action, fmt.Errorf("%w: header %s repeated (amigo sends a map)", ErrInvalidValue, x.Key))
			}
		}
		m[x.Key] = x.Value
	}
	return m, nil
}

// do sends cl's action with headers h and waits for it to complete.
func (c *Client) do(ctx context.Context, cl *call, h []Header) error {
	if err := ctx.Err(); err != nil {
		return opErr(cl.action, err)
	}
	hdr, err := headers(cl.action, h)
	if err != nil {
		return err
	}
	cn, err := c.current(cl.action)
	if err != nil {
		return err
	}
	cl.id = c.nextID()
	hdr["ActionID"] = cl.id
	cl.hdr, cl.cn, cl.done = hdr, cn, make(chan struct{})
	// Registered before sending: the first answer can come at once.
	c.pmu.Lock()
	c.pending[cl.id] = cl
	c.pmu.Unlock()
	select {
	case cn.sendq <- cl:
	case <-cl.done: // connection lost or client closed meanwhile
		return cl.err
	case <-cn.done: // lost before the call was registered
		return c.abandon(cl, errConnLost)
	case <-ctx.Done():
		return c.abandon(cl, ctx.Err())
	}
	select {
	case <-cl.done:
		return cl.err
	case <-ctx.Done():
		return c.abandon(cl, ctx.Err())
	}
}

// abandon ends a call its caller no longer waits for; answers that still
// come for it are dropped. It returns the call's error: cause wrapped, or
// what it had already ended with.
func (c *Client) abandon(cl *call, cause error) error {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if !cl.finished {
		var err error
		if cause != nil {
			err = opErr(cl.action, cause)
		}
		c.finishLocked(cl, err)
	}
	return cl.err
}

// finishCall ends cl with err unless it has ended already; with
// onlyIfUnanswered, only when no response has come.
func (c *Client) finishCall(cl *call, err error, onlyIfUnanswered bool) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if cl.finished || onlyIfUnanswered && cl.resp != nil {
		return
	}
	c.finishLocked(cl, err)
}

func (c *Client) finishLocked(cl *call, err error) {
	cl.finished = true
	cl.err = err
	delete(c.pending, cl.id)
	close(cl.done)
}

// failPending ends with err the calls waiting on cn (every call when cn
// is nil).
func (c *Client) failPending(cn *conn, err error) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	for _, cl := range c.pending {
		if cn == nil || cl.cn == cn {
			c.finishLocked(cl, opErr(cl.action, err))
		}
	}
}

// drain reads every message amigo hands over and routes it without ever
// blocking: amigo passes action responses through the same channel before
// it hands them to Action, and Asterisk drops a session that does not read
// its output in time. Once stop is closed it empties the channel and
// returns; the channel being larger than amigo's own queue, an amigo still
// forwarding its last messages then never blocks.
func (c *Client) drain(stop, done chan struct{}) {
	defer close(done)
	for {
		select {
		case m := <-c.events:
			c.route(m)
		case <-stop:
			for {
				select {
				case m := <-c.events:
					c.route(m)
				default:
					return
				}
			}
		}
	}
}

// route gives a message to the pending call whose ActionID it carries, or
// else, when it is an event, to the subscribers.
func (c *Client) route(m map[string]string) {
	if id := m["ActionID"]; strings.HasPrefix(id, c.idPrefix) {
		c.pmu.Lock()
		cl := c.pending[id]
		if cl != nil {
			c.collect(cl, m)
		}
		c.pmu.Unlock()
		if cl != nil {
			return
		}
	}
	if m["Event"] != "" {
		c.publish(m)
	}
}

// collect adds a message to a pending call; c.pmu is held.
func (c *Client) collect(cl *call, m map[string]string) {
	if resp, ok := m["Response"]; ok && cl.resp == nil {
		cl.resp = m
		switch {
		case strings.EqualFold(resp, "Error"):
			c.finishLocked(cl, responseError(cl.action, m))
		case cl.kind == kindSingle:
			c.finishLocked(cl, nil)
		case cl.kind == kindList:
			cl.events = append(cl.events, toEvent(m))
		}
		return
	}
	name := m["Event"]
	if cl.kind == kindSingle || name == "" {
		return
	}
	switch cl.kind {
	case kindDBGet:
		if strings.EqualFold(name, "DBGetResponse") {
			cl.val, cl.hasVal = m["Val"], true
		}
	case kindTree:
		if strings.EqualFold(name, "DBGetTreeResponse") {
			if k, ok := relKey(cl.family, m["Key"]); ok {
				cl.entries = append(cl.entries, Entry{Key: k, Value: m["Val"]})
			}
		}
	case kindList:
		cl.events = append(cl.events, toEvent(m))
	}
	if isComplete(m) {
		c.finishLocked(cl, nil)
	}
}

// isComplete reports whether m ends an event list.
func isComplete(m map[string]string) bool {
	if strings.EqualFold(m["EventList"], "Complete") {
		return true
	}
	name := m["Event"]
	return len(name) >= 8 && strings.EqualFold(name[len(name)-8:], "Complete")
}

// responseError is the *Error of a "Response: Error".
func responseError(action string, m map[string]string) error {
	msg := m["Message"]
	if out, ok := output(m); ok && (msg == "" || msg == "Command output follows") {
		msg = out
	}
	return &Error{Action: action, Message: msg}
}

// Action sends an action with headers h and returns Asterisk's response
// (Name empty, Fields["Response"] "Success"). A "Response: Error" is an
// *Error. The client sets Action and ActionID itself; header values must
// not hold CR, LF or NUL (ErrInvalidValue), and a header name may not
// repeat (amigo sends a map). Events that follow the response with the same
// ActionID go to subscribers; use List for list actions.
//
// When ctx ends first, Action returns ctx's error wrapped at once; an
// action already handed to amigo is still sent and its answer dropped.
func (c *Client) Action(ctx context.Context, action string, h ...Header) (Event, error) {
	cl := &call{action: action, kind: kindSingle}
	if err := c.do(ctx, cl, h); err != nil {
		return Event{}, err
	}
	return toEvent(cl.resp), nil
}

// List sends a list action (one answered by "EventList: start", then
// events, then an event whose name ends in "Complete") and returns the
// response followed by the events carrying its ActionID, the Complete one
// last. Events of other actions or of other sessions are not included.
func (c *Client) List(ctx context.Context, action string, h ...Header) ([]Event, error) {
	cl := &call{action: action, kind: kindList}
	if err := c.do(ctx, cl, h); err != nil {
		return nil, err
	}
	return cl.events, nil
}
