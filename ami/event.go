package ami

import (
	"strings"
)

// Header is one header of an action: "Key: Value".
type Header struct{ Key, Value string }

// Event is an AMI message as received: an event, or the response to an
// action (Name empty, Fields["Response"] set).
//
// Fields holds every header but amigo's own ("#", "TimeReceived",
// "AmigoConnID"). What amigo loses cannot be given back: of repeated
// headers only the last is kept, and of a response's "Output" lines only
// the first and the last (Fields["Output"] holds them joined by "\n").
// Fields is the receiver's own copy.
type Event struct {
	Name   string
	Fields map[string]string
}

// Get returns the header named key, matched case-insensitively, or "".
func (e Event) Get(key string) string {
	if v, ok := e.Fields[key]; ok {
		return v
	}
	for k, v := range e.Fields {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return ""
}

// amigo's keys in the messages it hands over.
const (
	amigoSeq         = "#"
	amigoTime        = "TimeReceived"
	amigoConnID      = "AmigoConnID"
	amigoRealOutput  = "RealOutput"      // the first Output line
	amigoCommandResp = "CommandResponse" // the body of "Response: Follows"
)

// toEvent copies an amigo message into an Event. amigo hands the same map
// to the caller of its Action too: it is only read here, never changed.
func toEvent(m map[string]string) Event {
	f := make(map[string]string, len(m))
	for k, v := range m {
		switch k {
		case amigoSeq, amigoTime, amigoConnID, amigoRealOutput, amigoCommandResp:
			continue
		}
		f[k] = v
	}
	if out, ok := output(m); ok {
		f["Output"] = out
	}
	return Event{Name: m["Event"], Fields: f}
}

// output returns what amigo kept of a message's output: the body of an old
// "Response: Follows", else the first and last "Output:" lines.
func output(m map[string]string) (string, bool) {
	if s, ok := m[amigoCommandResp]; ok {
		return s, true
	}
	first, ok := m[amigoRealOutput]
	if !ok {
		return "", false
	}
	if last, ok := m["Output"]; ok {
		return first + "\n" + last, true
	}
	return first, true
}

// subscriber is one Subscribe.
type subscriber struct {
	name string // "*" for every event
	ch   chan Event
}

// Subscribe returns a channel of the events named name (matched
// case-insensitively: "UserEvent", "userevent"; "*" for every event) that
// answer no pending call of this client, and a cancel func that ends the
// subscription and closes the channel. Shutdown closes it too.
//
// The channel holds buf events (at least 1). Events are never waited for:
// one that finds the channel full is dropped and counted in Dropped, so a
// slow subscriber loses events but never stalls the client.
//
// Events of a session are delivered in order. Events that Asterisk sends in
// the same TCP read as the login response are lost by amigo (FullyBooted
// among them): after each login (Status.Logins grows, OnState reports
// Connected) a subscriber should resync the state it follows rather than
// rely on an event sent around login.
func (c *Client) Subscribe(name string, buf int) (<-chan Event, func()) {
	if buf < 1 {
		buf = 1
	}
	s := &subscriber{name: name, ch: make(chan Event, buf)}
	c.smu.Lock()
	if c.subsClosed {
		c.smu.Unlock()
		close(s.ch)
		return s.ch, func() {}
	}
	c.subs = append(c.subs, s)
	c.smu.Unlock()
	cancel := func() {
		c.smu.Lock()
		defer c.smu.Unlock()
		for i, x := range c.subs {
			if x == s {
				c.subs = append(c.subs[:i:i], c.subs[i+1:]...)
				close(s.ch)
				return
			}
		}
	}
	return s.ch, cancel
}

// Dropped counts the events dropped because a subscriber's channel was
// full.
func (c *Client) Dropped() uint64 { return c.dropped.Load() }

// publish hands an event to its subscribers without ever waiting.
func (c *Client) publish(m map[string]string) {
	name := m["Event"]
	c.smu.RLock()
	defer c.smu.RUnlock()
	for _, s := range c.subs {
		if s.name != "*" && !strings.EqualFold(s.name, name) {
			continue
		}
		select {
		case s.ch <- toEvent(m):
		default:
			c.dropped.Add(1)
		}
	}
}

// closeSubscribers closes every subscriber's channel, for good.
func (c *Client) closeSubscribers() {
	c.smu.Lock()
	defer c.smu.Unlock()
	for _, s := range c.subs {
		close(s.ch)
	}
	c.subs = nil
	c.subsClosed = true
}
