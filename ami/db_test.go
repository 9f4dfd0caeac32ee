package ami

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pnpd/pnpd/ami/amitest"
)

func TestDBGet(t *testing.T) {
	leakCheck(t)
	srv := amitest.New(t, amitest.Options{})
	srv.DBPut("pnp", "mac/001fc11b4e1c", "acme")
	srv.DBPut("pnp", "empty", "")
	srv.DBPut("pnp", "spaces", "a: b  ")
	c := connected(t, srv, nil)
	tests := []struct {
		name, family, key string
		want              string
		wantErr           error  // errors.Is
		wantMsg           string // *Error's Message
	}{
		{name: "found", family: "pnp", key: "mac/001fc11b4e1c", want: "acme"},
		{name: "empty value", family: "pnp", key: "empty", want: ""},
		{name: "colon and trailing spaces", family: "pnp", key: "spaces", want: "a: b  "},
		{name: "missing key", family: "pnp", key: "mac/000000000000", wantErr: ErrNotFound, wantMsg: "Database entry not found"},
		{name: "missing family", family: "nosuch", key: "k", wantErr: ErrNotFound, wantMsg: "Database entry not found"},
		{name: "no key", family: "pnp", key: "", wantMsg: "No key specified."},
		{name: "CRLF in key", family: "pnp", key: "k\r\nAction: DBDelTree", wantErr: ErrInvalidValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.DBGet(testCtx(t), tt.family, tt.key)
			if tt.wantErr == nil && tt.wantMsg == "" {
				if err != nil || got != tt.want {
					t.Fatalf("DBGet = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("DBGet error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != ErrNotFound && errors.Is(err, ErrNotFound) {
				t.Errorf("DBGet error %v matches ErrNotFound", err)
			}
			if tt.wantMsg != "" {
				var ae *Error
				if !errors.As(err, &ae) || ae.Message != tt.wantMsg || ae.Action != "DBGet" {
					t.Fatalf("DBGet error = %#v, want *Error{DBGet, %q}", err, tt.wantMsg)
				}
				if want := "ami: DBGet: " + tt.wantMsg; err.Error() != want {
					t.Errorf("Error() = %q, want %q", err.Error(), want)
				}
			}
		})
	}
}

func TestDBWrite(t *testing.T) {
	leakCheck(t)
	srv := amitest.New(t, amitest.Options{})
	c := connected(t, srv, nil)
	ctx := testCtx(t)
	if err := c.DBPut(ctx, "pnp", "mac/001fc11b4e1c", "acme"); err != nil {
		t.Fatal(err)
	}
	if v, ok := srv.DBGet("pnp", "mac/001fc11b4e1c"); !ok || v != "acme" {
		t.Fatalf("server has %q, %v", v, ok)
	}
	if v, err := c.DBGet(ctx, "pnp", "mac/001fc11b4e1c"); err != nil || v != "acme" {
		t.Fatalf("DBGet = %q, %v", v, err)
	}
	if err := c.DBDel(ctx, "pnp", "mac/001fc11b4e1c"); err != nil {
		t.Fatal(err)
	}
	if err := c.DBDel(ctx, "pnp", "mac/001fc11b4e1c"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second DBDel = %v, want ErrNotFound", err)
	}
	for _, k := range []string{"a/1", "a/2", "b/1"} {
		if err := c.DBPut(ctx, "pnp", k, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.DBDelTree(ctx, "pnp", "a"); err != nil {
		t.Fatal(err)
	}
	if n := srv.DBLen(); n != 1 {
		t.Fatalf("%d entries left, want 1", n)
	}
	if err := c.DBDelTree(ctx, "pnp", "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("DBDelTree of nothing = %v, want ErrNotFound", err)
	}
	if err := c.DBDelTree(ctx, "pnp", ""); err != nil {
		t.Fatal(err)
	}
	if n := srv.DBLen(); n != 0 {
		t.Fatalf("%d entries left, want 0", n)
	}
}

func TestDBGetTree(t *testing.T) {
	leakCheck(t)
	srv := amitest.New(t, amitest.Options{})
	for k, v := range map[string]string{"mac/001fc11b4e1c": "acme", "mac/a": "", "mac": "self", "macx/d": "d", "k": "a: b  "} {
		srv.DBPut("pnp", k, v)
	}
	srv.DBPut("PNP", "mac/c", "upper") // Asterisk matches families case-insensitively
	srv.DBPut("pnpx", "mac/b", "other family")
	c := connected(t, srv, nil)
	tests := []struct {
		name, family, prefix string
		want                 []Entry
	}{
		{"family", "pnp", "", []Entry{{"mac/c", "upper"}, {"k", "a: b  "}, {"mac", "self"}, {"mac/001fc11b4e1c", "acme"}, {"mac/a", ""}, {"macx/d", "d"}}},
		{"prefix", "pnp", "mac", []Entry{{"mac/c", "upper"}, {"mac", "self"}, {"mac/001fc11b4e1c", "acme"}, {"mac/a", ""}}},
		{"partial component", "pnp", "ma", nil},
		{"unknown family", "nosuch", "", nil},
		{"whole db", "", "", []Entry{{"PNP/mac/c", "upper"}, {"pnp/k", "a: b  "}, {"pnp/mac", "self"}, {"pnp/mac/001fc11b4e1c", "acme"}, {"pnp/mac/a", ""}, {"pnp/macx/d", "d"}, {"pnpx/mac/b", "other family"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.DBGetTree(testCtx(t), tt.family, tt.prefix)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("DBGetTree(%q, %q) =\n%v\nwant\n%v", tt.family, tt.prefix, got, tt.want)
			}
		})
	}
}

func TestDBGetTree10k(t *testing.T) {
	leakCheck(t)
	srv := amitest.New(t, amitest.Options{WriteTimeout: amitestWriteTimeout})
	const n = 10000
	for i := range n {
		srv.DBPut("pnp", fmt.Sprintf("mac/%012x", i), fmt.Sprintf("tenant-%d", i%7))
	}
	srv.DBPut("other", "k", "v")
	c := connected(t, srv, nil)
	got, err := c.DBGetTree(testCtx(t), "pnp", "mac")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d entries, want %d", len(got), n)
	}
	for i, e := range got {
		if want := (Entry{fmt.Sprintf("mac/%012x", i), fmt.Sprintf("tenant-%d", i%7)}); e != want {
			t.Fatalf("entry %d = %v, want %v", i, e, want)
		}
	}
	if srv.Sessions() != 1 || c.Status().Logins != 1 {
		t.Errorf("the session did not survive: %d sessions, %d logins", srv.Sessions(), c.Status().Logins)
	}
}

// TestListsKeptApart: two list actions whose events the server interleaves
// each get their own events only.
func TestListsKeptApart(t *testing.T) {
	leakCheck(t)
	srv := amitest.New(t, amitest.Options{})
	const n = 50
	var mu sync.Mutex
	var reqs []amitest.Message
	var sess *amitest.Session
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	srv.Handle("TestList", func(s *amitest.Session, req amitest.Message) {
		s.Send(amitest.ListStart(req))
		mu.Lock()
		defer mu.Unlock()
		reqs, sess = append(reqs, req), s
		if len(reqs) < 2 {
			return
		}
		// Both lists started: interleave their events, then end them.
		a, b := reqs[0], reqs[1]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				for _, r := range []amitest.Message{a, b} {
					sess.Send(amitest.Msg("Event", "TestItem", "ActionID", r.Get("ActionID"), "Owner", r.Get("Owner"), "I", fmt.Sprint(i)))
				}
				// an event of nobody's in between
				sess.Send(amitest.Msg("Event", "TestItem", "Owner", "nobody"))
			}
			for _, r := range []amitest.Message{a, b} {
				sess.Send(amitest.ListComplete(r, "TestListComplete", n))
			}
		}()
	})
	c := connected(t, srv, nil)
	results := make([][]Event, 2)
	errs := make([]error, 2)
	var calls sync.WaitGroup
	for i, owner := range []string{"A", "B"} {
		calls.Add(1)
		go func() {
			defer calls.Done()
			results[i], errs[i] = c.List(testCtx(t), "TestList", Header{"Owner", owner})
		}()
	}
	calls.Wait()
	for i, owner := range []string{"A", "B"} {
		if errs[i] != nil {
			t.Fatalf("List %s: %v", owner, errs[i])
		}
		evs := results[i]
		if len(evs) != n+2 {
			t.Fatalf("List %s: %d messages, want %d", owner, len(evs), n+2)
		}
		if evs[0].Get("Response") != "Success" || evs[0].Name != "" {
			t.Errorf("List %s: first is %+v, want the response", owner, evs[0])
		}
		for j, ev := range evs[1 : n+1] {
			if ev.Name != "TestItem" || ev.Get("owner") != owner || ev.Get("I") != fmt.Sprint(j) {
				t.Fatalf("List %s: event %d = %+v", owner, j, ev)
			}
		}
		if last := evs[n+1]; last.Name != "TestListComplete" || last.Get("ListItems") != fmt.Sprint(n) {
			t.Errorf("List %s: last = %+v", owner, last)
		}
	}
}

func TestInvalidValue(t *testing.T) {
	leakCheck(t)
	srv := amitest.New(t, amitest.Options{})
	c := connected(t, srv, nil)
	tests := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"CRLF in value", func(ctx context.Context) error {
			return c.DBPut(ctx, "pnp", "mac/1", "acme\r\nAction: DBDelTree\r\nFamily: pnp")
		}},
		{"LF in value", func(ctx context.Context) error { return c.DBPut(ctx, "pnp", "mac/1", "a\nb") }},
		{"CR in family", func(ctx context.Context) error { return c.DBPut(ctx, "pnp\r", "mac/1", "v") }},
		{"NUL in value", func(ctx context.Context) error { return c.DBPut(ctx, "pnp", "k", "a\x00b") }},
		{"CRLF in UserEvent header", func(ctx context.Context) error {
			return c.UserEvent(ctx, "PnpTest", Header{"Mac", "x\r\n\r\nAction: Logoff"})
		}},
		{"colon in name", func(ctx context.Context) error {
			_, err := c.Action(ctx, "DBPut", Header{"Family: x", "v"})
			return err
		}},
		{"space in name", func(ctx context.Context) error {
			_, err := c.Action(ctx, "DBPut", Header{"Fam ily", "v"})
			return err
		}},
		{"empty name", func(ctx context.Context) error { _, err := c.Action(ctx, "DBPut", Header{"", "v"}); return err }},
		{"CRLF in action", func(ctx context.Context) error { _, err := c.Action(ctx, "DBPut\r\nX"); return err }},
		{"ActionID given", func(ctx context.Context) error {
			_, err := c.Action(ctx, "DBPut", Header{"actionid", "mine"})
			return err
		}},
		{"repeated header", func(ctx context.Context) error {
			_, err := c.Action(ctx, "DBPut", Header{"Key", "a"}, Header{"key", "b"})
			return err
		}},
		{"Logoff", func(ctx context.Context) error { _, err := c.Action(ctx, "Logoff"); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(testCtx(t))
			if !errors.Is(err, ErrInvalidValue) {
				t.Fatalf("error = %v, want ErrInvalidValue", err)
			}
			if strings.Contains(err.Error(), "\r") || strings.Contains(err.Error(), "\n") {
				t.Errorf("error text carries the raw value: %q", err)
			}
		})
	}
	if err := c.Ping(testCtx(t)); err != nil { // the session is intact
		t.Fatal(err)
	}
	for _, a := range []string{"DBPut", "UserEvent", "DBDelTree", "Logoff"} {
		if n := srv.Received(a); n != 0 {
			t.Errorf("server received %d %s", n, a)
		}
	}
}

func TestOtherActions(t *testing.T) {
	leakCheck(t)
	srv := amitest.New(t, amitest.Options{})
	srv.SetVar("PNPD_TENANT", "acme")
	srv.SetCommand("pnp show", "first line", "middle line", "last line")
	srv.SetCommand("one", "only line")
	c := connected(t, srv, nil)
	ctx := testCtx(t)
	t.Run("Getvar", func(t *testing.T) {
		if v, err := c.Getvar(ctx, "PNPD_TENANT"); err != nil || v != "acme" {
			t.Fatalf("Getvar = %q, %v", v, err)
		}
	})
	t.Run("Command", func(t *testing.T) {
		// amigo keeps the first and last Output lines only.
		if out, err := c.Command(ctx, "pnp show"); err != nil || out != "first line\nlast line" {
			t.Fatalf("Command = %q, %v", out, err)
		}
		if out, err := c.Command(ctx, "one"); err != nil || out != "only line" {
			t.Fatalf("Command = %q, %v", out, err)
		}
		_, err := c.Command(ctx, "nosuch thing")
		var ae *Error
		if !errors.As(err, &ae) || !strings.HasPrefix(ae.Message, "No such command 'nosuch thing'") {
			t.Fatalf("Command of an unknown command = %v", err)
		}
	})
	t.Run("Ping", func(t *testing.T) {
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("Action", func(t *testing.T) {
		ev, err := c.Action(ctx, "Ping")
		if err != nil {
			t.Fatal(err)
		}
		if ev.Name != "" || ev.Get("ping") != "Pong" || ev.Get("Response") != "Success" {
			t.Fatalf("Ping response = %+v", ev)
		}
		for _, k := range []string{"#", "TimeReceived", "AmigoConnID"} {
			if _, ok := ev.Fields[k]; ok {
				t.Errorf("response has amigo's %s", k)
			}
		}
		_, err = c.Action(ctx, "NoSuchAction")
		var ae *Error
		if !errors.As(err, &ae) || !strings.HasPrefix(ae.Message, "Invalid/unknown command") || errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown action = %v", err)
		}
	})
}

func TestErrorIs(t *testing.T) {
	tests := []struct {
		err  *Error
		want bool
	}{
		{&Error{"DBGet", "Database entry not found"}, true},
		{&Error{"dbget", "database entry not found"}, true},
		{&Error{"DBDelTree", "Database entry not found"}, true},
		{&Error{"DBDel", "Database entry could not be deleted"}, true},
		{&Error{"DBPut", "Failed to update entry"}, false},
		{&Error{"Getvar", "Database entry not found"}, false},
		{&Error{"D", "Database entry not found"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			if got := errors.Is(tt.err, ErrNotFound); got != tt.want {
				t.Errorf("errors.Is(%v, ErrNotFound) = %v", tt.err, got)
			}
			if errors.Is(tt.err, ErrNotConnected) {
				t.Errorf("matches ErrNotConnected")
			}
		})
	}
}

func TestRelKey(t *testing.T) {
	tests := []struct {
		family, key, want string
		ok                bool
	}{
		{"pnp", "/pnp/mac/001fc11b4e1c", "mac/001fc11b4e1c", true},
		{"pnp", "/PNP/mac", "mac", true},
		{"pnp", "/pnp", "", false},
		{"pnp", "/pnp/", "", false},
		{"pnp", "/pnpx/a", "", false},
		{"pnp", "pnp/a/b", "", false},
		{"pnp", "", "", false},
		{"", "/pnp/a", "pnp/a", true},
		{"", "", "", false},
		{"a/b", "/a/b/c", "c", true},
	}
	for _, tt := range tests {
		t.Run(tt.family+" "+tt.key, func(t *testing.T) {
			got, ok := relKey(tt.family, tt.key)
			if got != tt.want || ok != tt.ok {
				t.Errorf("relKey(%q, %q) = %q, %v; want %q, %v", tt.family, tt.key, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func FuzzRelKey(f *testing.F) {
	f.Add("pnp", "mac/001fc11b4e1c")
	f.Add("PNP", "a")
	f.Add("", "x/y")
	f.Fuzz(func(t *testing.T, family, key string) {
		full := "/" + family + "/" + key
		if family == "" {
			full = "/" + key
		}
		got, ok := relKey(family, full)
		if key == "" {
			if ok && family != "" {
				t.Fatalf("relKey(%q, %q) = %q, true for an empty key", family, full, got)
			}
			return
		}
		if !ok || got != key {
			t.Fatalf("relKey(%q, %q) = %q, %v; want %q", family, full, got, ok, key)
		}
		// Whatever the input, no panic and a suffix of it.
		if got, ok := relKey(family, key); ok && !strings.HasSuffix(key, got) {
			t.Fatalf("relKey(%q, %q) = %q: not a suffix", family, key, got)
		}
	})
}
