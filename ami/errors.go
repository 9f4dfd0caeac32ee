package ami

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
)

var (
	// ErrNotConnected: no logged-in AMI session now (Serve not running, not
	// yet logged in, or the connection was lost while the call waited).
	ErrNotConnected = errors.New("ami: not connected")
	// ErrClosed: Shutdown was called or Serve has returned.
	ErrClosed = errors.New("ami: client closed")
	// ErrNotFound: the AstDB has no such entry (Asterisk's "Database entry
	// not found"; "Database entry could not be deleted" for DBDel).
	ErrNotFound = errors.New("ami: not found")
	// ErrInvalidValue: a key or value we would send holds CR, LF or NUL
	// (header injection), or a header name is empty, holds a space, a
	// colon or a control byte, repeats another, or is one the client sets
	// itself (Action, ActionID). Nothing was sent.
	ErrInvalidValue = errors.New("ami: invalid header value")
	// ErrTimeout: Asterisk did not answer within the client's backstop
	// (amigo's action timeout, 10 s), whatever the caller's context said.
	ErrTimeout = errors.New("ami: no response in time")
)

// Error is Asterisk's "Response: Error" to an action, carrying Asterisk's
// Message. A refused login is an *Error with Action "Login".
type Error struct {
	Action  string // the action as sent, "DBGet"
	Message string // Asterisk's Message header, "Database entry not found"
}

func (e *Error) Error() string { return "ami: " + e.Action + ": " + e.Message }

// Is makes errors.Is(err, ErrNotFound) true for the AstDB actions' "not
// found" answers.
func (e *Error) Is(target error) bool {
	if target != ErrNotFound || len(e.Action) < 2 || !strings.EqualFold(e.Action[:2], "db") {
		return false
	}
	return strings.EqualFold(e.Message, "Database entry not found") ||
		(strings.EqualFold(e.Action, "DBDel") && strings.EqualFold(e.Message, "Database entry could not be deleted"))
}

// textError turns the text of an error that amigo only hands over as a
// string back into the error it was, where that is a well-known one.
func textError(s string) error {
	switch {
	case s == io.EOF.Error():
		return io.EOF
	case s == io.ErrUnexpectedEOF.Error():
		return io.ErrUnexpectedEOF
	case strings.HasSuffix(s, net.ErrClosed.Error()):
		return net.ErrClosed
	}
	return errors.New(s)
}

// isIOText reports whether amigo's login error text is an I/O error rather
// than Asterisk's Message.
func isIOText(s string) bool {
	switch textError(s) {
	case io.EOF, io.ErrUnexpectedEOF, net.ErrClosed:
		return true
	}
	return strings.HasPrefix(s, "read tcp") || strings.HasPrefix(s, "write tcp") ||
		strings.Contains(s, "connection reset by peer") || strings.Contains(s, "broken pipe")
}

// opError is an error of one action: "ami: DBGet: not connected".
type opError struct {
	action string
	err    error
}

func opErr(action string, err error) error { return &opError{action: action, err: err} }

func (e *opError) Error() string {
	return "ami: " + e.action + ": " + strings.TrimPrefix(e.err.Error(), "ami: ")
}

func (e *opError) Unwrap() error { return e.err }

// errConnLost ends the calls of a connection that ended under them. The
// action may or may not have been carried out.
var errConnLost = fmt.Errorf("%w: connection lost", ErrNotConnected)

// checkKey validates a header name (or action name) we would send.
func checkKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty header name", ErrInvalidValue)
	}
	for i := 0; i < len(key); i++ {
		if b := key[i]; b <= ' ' || b == ':' || b == 0x7f {
			return fmt.Errorf("%w: header name %q has byte %#02x at %d", ErrInvalidValue, key, b, i)
		}
	}
	return nil
}

// checkValue validates a header value we would send: no CR, LF or NUL,
// which would end the header (or the whole message) early and let the rest
// of the value inject headers or actions of its own. Values come from
// untrusted SIP packets: the value itself is not quoted in the error.
func checkValue(key, value string) error {
	if i := strings.IndexAny(value, "\r\n\x00"); i >= 0 {
		return fmt.Errorf("%w: value of %s has byte %#02x at %d", ErrInvalidValue, key, value[i], i)
	}
	return nil
}
