package amitest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Banner is the first line a session gets, as Asterisk 22 sends it.
const Banner = "Asterisk Call Manager/11.0.0"

// Options configure a Server. The zero value accepts user "pnpd" with
// secret "secret".
type Options struct {
	// Username and Secret are the one account Login accepts (the user
	// name case-insensitively, as Asterisk compares it). Defaults "pnpd"
	// and "secret".
	Username, Secret string
	// LoginFailDelay is how long a refused login waits before its
	// connection is closed (Asterisk waits 1 s). Default 0.
	LoginFailDelay time.Duration
	// WriteTimeout, when set, drops a session whose socket stays
	// unwritable that long, as Asterisk does (its default is 100 ms).
	WriteTimeout time.Duration
}

// Handler answers one action of a session. It runs on the session's own
// goroutine: the session reads its next action only once it returns (as
// Asterisk handles a session's actions one after the other). It may keep s
// and send on it later from another goroutine.
type Handler func(s *Session, req Message)

// Server is a scripted AMI server on 127.0.0.1. Its methods are safe for
// concurrent use.
type Server struct {
	opts Options
	addr string

	mu       sync.Mutex
	ln       net.Listener
	sessions map[*Session]struct{}
	handlers map[string]Handler
	received map[string]int
	vars     map[string]string
	commands map[string][]string
	delay    time.Duration
	closed   bool

	db astDB

	wg sync.WaitGroup

	connections   atomic.Int64
	loginAttempts atomic.Int64
	logins        atomic.Int64
}

// Start starts a server listening on 127.0.0.1 on a free port.
func Start(opts Options) (*Server, error) {
	if opts.Username == "" {
		opts.Username = "pnpd"
	}
	if opts.Secret == "" {
		opts.Secret = "secret"
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("amitest: %w", err)
	}
	s := &Server{
		opts:     opts,
		addr:     ln.Addr().String(),
		ln:       ln,
		sessions: make(map[*Session]struct{}),
		handlers: make(map[string]Handler),
		received: make(map[string]int),
		vars:     make(map[string]string),
		commands: make(map[string][]string),
		db:       astDB{m: make(map[string]string)},
	}
	s.wg.Add(1)
	go s.accept(ln)
	return s, nil
}

// New starts a server for a test and closes it when the test ends.
func New(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s, err := Start(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

// Addr is the server's address, "127.0.0.1:port". It stays the same
// across Refuse and Accept.
func (s *Server) Addr() string { return s.addr }

// Username and Secret are the credentials Login accepts.
func (s *Server) Username() string { return s.opts.Username }

// Secret is the secret Login accepts.
func (s *Server) Secret() string { return s.opts.Secret }

// Close stops listening, closes every session and waits for the server's
// goroutines to end.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
	s.mu.Unlock()
	s.DropAll()
	s.wg.Wait()
}

// Refuse closes the listener: new connections are refused until Accept.
// Open sessions stay.
func (s *Server) Refuse() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
}

// Accept listens again on the server's address after Refuse.
func (s *Server) Accept() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("amitest: server closed")
	}
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp4", s.addr)
	if err != nil {
		return fmt.Errorf("amitest: listening again: %w", err)
	}
	s.ln = ln
	s.wg.Add(1)
	go s.accept(ln)
	return nil
}

// DropAll closes every open session and returns how many there were.
func (s *Server) DropAll() int {
	s.mu.Lock()
	list := make([]*Session, 0, len(s.sessions))
	for ss := range s.sessions {
		list = append(list, ss)
	}
	s.mu.Unlock()
	for _, ss := range list {
		ss.Close()
	}
	return len(list)
}

// Handle makes h answer action (case-insensitive) instead of the built-in
// answer, before and after login alike; a nil h restores the built-in one.
func (s *Server) Handle(action string, h Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h == nil {
		delete(s.handlers, strings.ToLower(action))
		return
	}
	s.handlers[strings.ToLower(action)] = h
}

// SetDelay delays the answer to every action by d (0: no delay).
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	s.delay = d
	s.mu.Unlock()
}

// SetVar sets what Getvar answers for a variable.
func (s *Server) SetVar(name, value string) {
	s.mu.Lock()
	s.vars[name] = value
	s.mu.Unlock()
}

// SetCommand sets the output lines of a CLI command for the Command action.
func (s *Server) SetCommand(command string, output ...string) {
	s.mu.Lock()
	s.commands[command] = output
	s.mu.Unlock()
}

// Broadcast sends ev to every logged-in session.
func (s *Server) Broadcast(ev Message) {
	for _, ss := range s.liveSessions() {
		_ = ss.Send(ev)
	}
}

// Connections counts the connections accepted so far.
func (s *Server) Connections() int { return int(s.connections.Load()) }

// LoginAttempts counts the Login actions received so far.
func (s *Server) LoginAttempts() int { return int(s.loginAttempts.Load()) }

// Logins counts the successful logins so far.
func (s *Server) Logins() int { return int(s.logins.Load()) }

// Sessions counts the sessions open now.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Received counts the actions named action (case-insensitive) received so
// far, whatever their answer.
func (s *Server) Received(action string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.received[strings.ToLower(action)]
}

func (s *Server) liveSessions() []*Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := make([]*Session, 0, len(s.sessions))
	for ss := range s.sessions {
		if ss.LoggedIn() {
			list = append(list, ss)
		}
	}
	return list
}

func (s *Server) accept(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.connections.Add(1)
		ss := &Session{srv: s, conn: c}
		ss.w = bufio.NewWriterSize(deadlineWriter{c, s.opts.WriteTimeout}, 64<<10)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.sessions[ss] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go ss.serve()
	}
}

// deadlineWriter sets a write deadline before each write when timeout is
// set.
type deadlineWriter struct {
	c       net.Conn
	timeout time.Duration
}

// Asterisk's timeout bounds each wait for the socket to become writable,
// not a whole large write: write in small pieces, each with its own
// deadline.
func (w deadlineWriter) Write(p []byte) (int, error) {
	if w.timeout <= 0 {
		return w.c.Write(p)
	}
	n := 0
	for n < len(p) {
		end := min(n+4096, len(p))
		if err := w.c.SetWriteDeadline(time.Now().Add(w.timeout)); err != nil {
			return n, err
		}
		m, err := w.c.Write(p[n:end])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Session is one client connection.
type Session struct {
	srv      *Server
	conn     net.Conn
	loggedIn atomic.Bool

	wmu sync.Mutex
	w   *bufio.Writer
}

// LoggedIn reports whether the session has logged in.
func (ss *Session) LoggedIn() bool { return ss.loggedIn.Load() }

// Send writes messages to the session in one flush. A write error (a
// closed connection, or WriteTimeout passed) closes the session.
func (ss *Session) Send(msgs ...Message) error {
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	var buf [512]byte
	for _, m := range msgs {
		if _, err := ss.w.Write(m.AppendTo(buf[:0])); err != nil {
			ss.conn.Close()
			return err
		}
	}
	if err := ss.w.Flush(); err != nil {
		ss.conn.Close()
		return err
	}
	return nil
}

// sendFunc lets f write to the session's buffered writer, then flushes.
func (ss *Session) sendFunc(f func(w *bufio.Writer) error) error {
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	err := f(ss.w)
	if err == nil {
		err = ss.w.Flush()
	}
	if err != nil {
		ss.conn.Close()
	}
	return err
}

// Close closes the session's connection.
func (ss *Session) Close() error { return ss.conn.Close() }

func (ss *Session) serve() {
	s := ss.srv
	defer s.wg.Done()
	defer func() {
		ss.conn.Close()
		s.mu.Lock()
		delete(s.sessions, ss)
		s.mu.Unlock()
	}()
	if err := ss.sendFunc(func(w *bufio.Writer) error {
		_, err := w.WriteString(Banner + "\r\n")
		return err
	}); err != nil {
		return
	}
	r := bufio.NewReaderSize(ss.conn, 4096)
	for {
		req, err := ReadMessage(r)
		if err != nil {
			return
		}
		action := req.Get("Action")
		s.mu.Lock()
		s.received[strings.ToLower(action)]++
		h := s.handlers[strings.ToLower(action)]
		delay := s.delay
		s.mu.Unlock()
		if delay > 0 {
			time.Sleep(delay)
		}
		if h != nil {
			h(ss, req)
		} else {
			s.Builtin(ss, req)
		}
	}
}
