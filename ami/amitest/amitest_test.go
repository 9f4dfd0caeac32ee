package amitest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// exchange is one request and the messages it is answered with, in wire
// form.
type exchange struct {
	req   string
	resps []string
}

// readTranscript reads a testdata transcript (see its header).
func readTranscript(t *testing.T, path string) []exchange {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []exchange
	var b *strings.Builder
	var isReq bool
	flush := func() {
		if b == nil {
			return
		}
		msg := b.String() + "\r\n"
		if isReq {
			out = append(out, exchange{req: msg})
		} else {
			out[len(out)-1].resps = append(out[len(out)-1].resps, msg)
		}
		b = nil
	}
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case line == ">>>" || line == "<<<":
			if line == "<<<" && len(out) == 0 && !isReq {
				t.Fatalf("%s: an answer before any request", path)
			}
			flush()
			b, isReq = &strings.Builder{}, line == ">>>"
		case line == "" || b == nil: // the end, or the comments on top
		default:
			b.WriteString(line + "\r\n")
		}
	}
	flush()
	return out
}

// dialLogin connects to srv and logs in.
func dialLogin(t *testing.T, srv *Server) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, r := dial(t, srv)
	fmt.Fprintf(c, "Action: Login\r\nUsername: %s\r\nSecret: %s\r\n\r\n", srv.Username(), srv.Secret())
	want := []string{
		"Response: Success\r\nMessage: Authentication accepted\r\n\r\n",
		"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 1\r\nLastReload: 1\r\nStatus: Fully Booted\r\n\r\n",
	}
	for _, w := range want {
		if got := readRaw(t, c, r); got != w {
			t.Fatalf("login: got %q, want %q", got, w)
		}
	}
	return c, r
}

func dial(t *testing.T, srv *Server) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp4", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	banner, err := r.ReadString('\n')
	if err != nil || banner != Banner+"\r\n" {
		t.Fatalf("banner %q, %v", banner, err)
	}
	return c, r
}

// readRaw reads one message as it is on the wire.
func readRaw(t *testing.T, c net.Conn, r *bufio.Reader) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading: %v (so far %q)", err, b.String())
		}
		b.WriteString(line)
		if line == "\r\n" {
			return b.String()
		}
	}
}

// TestTranscript replays what a real Asterisk 22 answered and expects the
// same bytes.
func TestTranscript(t *testing.T) {
	srv := New(t, Options{})
	c, r := dialLogin(t, srv)
	for i, ex := range readTranscript(t, "testdata/asterisk22-session.txt") {
		name := fmt.Sprintf("%02d %s", i, strings.SplitN(ex.req, "\r\n", 2)[0])
		t.Run(name, func(t *testing.T) {
			if _, err := io.WriteString(c, ex.req); err != nil {
				t.Fatal(err)
			}
			for _, want := range ex.resps {
				if got := readRaw(t, c, r); got != want {
					t.Fatalf("request\n%s\ngot\n%q\nwant\n%q", ex.req, got, want)
				}
			}
		})
	}
}

func TestSessionRules(t *testing.T) {
	tests := []struct {
		name  string
		send  string
		want  string
		close bool // the server closes the connection after
	}{
		{"before login", "Action: Ping\r\nActionID: p0\r\n\r\n", "Response: Error\r\nActionID: p0\r\nMessage: Permission denied\r\n\r\n", false},
		{"wrong secret", "Action: Login\r\nUsername: pnpd\r\nSecret: wrong\r\n\r\n", "Response: Error\r\nMessage: Authentication failed\r\n\r\n", true},
		{"logoff", "Action: Logoff\r\n\r\n", "Response: Goodbye\r\nMessage: Thanks for all the fish.\r\n\r\n", true},
		{"no action", "Foo: bar\r\n\r\n", "Response: Error\r\nMessage: Missing action in request\r\n\r\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := New(t, Options{})
			c, r := dial(t, srv)
			io.WriteString(c, tt.send)
			if got := readRaw(t, c, r); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			if tt.close {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := r.ReadByte(); err != io.EOF {
					t.Fatalf("connection still open (%v)", err)
				}
			}
		})
	}
}

func TestHooks(t *testing.T) {
	srv := New(t, Options{})
	c1, r1 := dialLogin(t, srv)
	_, r2 := dialLogin(t, srv)
	t.Run("broadcast", func(t *testing.T) {
		srv.Broadcast(Msg("Event", "Test", "N", "1"))
		for _, r := range []*bufio.Reader{r1, r2} {
			if m, err := ReadMessage(r); err != nil || m.Get("n") != "1" {
				t.Fatalf("got %v, %v", m, err)
			}
		}
	})
	t.Run("handler", func(t *testing.T) {
		srv.Handle("ping", func(s *Session, req Message) { s.Send(Success(req, "mine")) })
		io.WriteString(c1, "Action: PING\r\nActionID: x\r\n\r\n")
		if got, want := readRaw(t, c1, r1), "Response: Success\r\nActionID: x\r\nMessage: mine\r\n\r\n"; got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
		srv.Handle("Ping", nil)
		io.WriteString(c1, "Action: Ping\r\n\r\n")
		if m, _ := ReadMessage(r1); m.Get("Ping") != "Pong" {
			t.Fatalf("built-in Ping not restored: %v", m)
		}
	})
	t.Run("counters", func(t *testing.T) {
		if srv.Connections() != 2 || srv.Logins() != 2 || srv.LoginAttempts() != 2 || srv.Sessions() != 2 || srv.Received("ping") != 2 {
			t.Fatalf("connections %d logins %d attempts %d sessions %d pings %d",
				srv.Connections(), srv.Logins(), srv.LoginAttempts(), srv.Sessions(), srv.Received("ping"))
		}
	})
	t.Run("drop, refuse, accept", func(t *testing.T) {
		if n := srv.DropAll(); n != 2 {
			t.Fatalf("DropAll = %d", n)
		}
		if _, err := ReadMessage(r1); err == nil {
			t.Fatal("session 1 still open")
		}
		srv.Refuse()
		if c, err := net.Dial("tcp4", srv.Addr()); err == nil {
			c.Close()
			t.Fatal("connection accepted while refusing")
		}
		if err := srv.Accept(); err != nil {
			t.Fatal(err)
		}
		dialLogin(t, srv)
	})
}

func TestWriteTimeout(t *testing.T) {
	srv := New(t, Options{WriteTimeout: 50 * time.Millisecond})
	// More than loopback's socket buffers hold.
	for i := range 15000 {
		srv.DBPut("big", fmt.Sprint(i), strings.Repeat("x", 1000))
	}
	c, r := dialLogin(t, srv)
	io.WriteString(c, "Action: DBGetTree\r\nFamily: big\r\n\r\n")
	// Not reading: the server gives up on the session.
	waitFor := time.Now().Add(10 * time.Second)
	for srv.Sessions() != 0 {
		if time.Now().After(waitFor) {
			t.Fatal("session not dropped")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = r
}

func TestReadMessage(t *testing.T) {
	long := strings.Repeat("v", MaxLineLength)
	many := strings.Repeat("K: v\r\n", MaxHeaders+5)
	tests := []struct {
		name    string
		in      string
		want    Message
		wantErr error
	}{
		{"CRLF", "A: b\r\nC: d\r\n\r\n", Msg("A", "b", "C", "d"), nil},
		{"LF", "A: b\nC: d\n\n", Msg("A", "b", "C", "d"), nil},
		{"blank lines first", "\r\n\r\nA: b\r\n\r\n", Msg("A", "b"), nil},
		{"colon in value", "Val: a: b  \r\n\r\n", Msg("Val", "a: b  "), nil},
		{"no space, tab", "A:b\r\nC:\t d\r\n\r\n", Msg("A", "b", "C", "d"), nil},
		{"space before colon", "A : b\r\n\r\n", Msg("A", "b"), nil},
		{"no colon", "Asterisk Call Manager/11.0.0\r\n\r\n", Message{{"Asterisk Call Manager/11.0.0", ""}}, nil},
		{"empty value", "Val:\r\n\r\n", Msg("Val", ""), nil},
		{"longest line", "K: " + long[3:] + "\r\n\r\n", Msg("K", long[3:]), nil},
		{"line too long", "K: " + long + "\r\n\r\n", nil, ErrLineTooLong},
		{"too many headers", many + "\r\n", func() Message {
			m := make(Message, MaxHeaders)
			for i := range m {
				m[i] = Header{"K", "v"}
			}
			return m
		}(), nil},
		{"eof inside", "A: b\r\n", Msg("A", "b"), io.EOF},
		{"eof", "", nil, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadMessage(bufio.NewReaderSize(strings.NewReader(tt.in), 16))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != ErrLineTooLong && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// FuzzReadMessage: never panics, and what it parses survives a write and a
// read again (keys lose trailing spaces, as the parser drops them).
func FuzzReadMessage(f *testing.F) {
	f.Add([]byte("Action: DBGet\r\nActionID: 1\r\nFamily: pnp\r\nKey: mac/1\r\n\r\n"))
	f.Add([]byte("Event: DBGetTreeResponse\r\nKey: /pnp/k\r\nVal: a: b  \r\n\r\n"))
	f.Add([]byte("no colon line\n\n"))
	f.Add([]byte(":\r\n : x\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		m1, err := ReadMessage(bufio.NewReaderSize(strings.NewReader(string(in)), 16))
		if err != nil || len(m1) == 0 {
			return
		}
		m2, err := ReadMessage(bufio.NewReader(strings.NewReader(m1.String())))
		if err != nil {
			t.Fatalf("re-reading %q: %v", m1.String(), err)
		}
		if len(m2) != len(m1) {
			t.Fatalf("%d headers, then %d: %q", len(m1), len(m2), m1.String())
		}
		for i := range m1 {
			if m2[i].Value != m1[i].Value || m2[i].Key != strings.TrimRight(m1[i].Key, " ") {
				t.Fatalf("header %d: %q then %q", i, m1[i], m2[i])
			}
		}
	})
}
