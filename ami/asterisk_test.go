package ami

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/asterisk/asterisktest"
)

// TestRealAsterisk runs the client against a real Asterisk 22: the same
// calls as against amitest, and what amitest cannot show (the real login
// refusal, a restart of the server).
func TestRealAsterisk(t *testing.T) {
	a := asterisktest.Start(t, asterisktest.Options{})
	cfg := Config{Address: a.Addr, Username: a.Username, Secret: a.Secret, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	c := serve(t, cfg, nil)
	ctx := testCtx(t)
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}

	t.Run("db", func(t *testing.T) {
		if err := c.DBPut(ctx, "pnp", "mac/001fc11b4e1c", "acme"); err != nil {
			t.Fatal(err)
		}
		if v, err := c.DBGet(ctx, "pnp", "mac/001fc11b4e1c"); v != "acme" || err != nil {
			t.Errorf("DBGet: %q %v", v, err)
		}
		_, err := c.DBGet(ctx, "pnp", "mac/000000000000")
		var ae *Error
		if !errors.Is(err, ErrNotFound) || !errors.As(err, &ae) || ae.Message != "Database entry not found" {
			t.Errorf("DBGet of a missing key: %v", err)
		}
		if err := c.DBDel(ctx, "pnp", "mac/000000000000"); !errors.Is(err, ErrNotFound) {
			t.Errorf("DBDel of a missing key: %v", err)
		}
		entries, err := c.DBGetTree(ctx, "pnp", "")
		if err != nil || len(entries) != 1 || entries[0] != (Entry{"mac/001fc11b4e1c", "acme"}) {
			t.Errorf("DBGetTree: %v %v", entries, err)
		}
		if entries, err := c.DBGetTree(ctx, "nosuchfamily", ""); err != nil || len(entries) != 0 {
			t.Errorf("DBGetTree of an unknown family: %v %v", entries, err)
		}
		if err := c.DBPut(ctx, "pnp", "x", "a\r\nAction: Originate"); !errors.Is(err, ErrInvalidValue) {
			t.Errorf("DBPut with CR LF: %v", err)
		}
	})

	t.Run("events", func(t *testing.T) {
		ch, cancel := c.Subscribe("UserEvent", 8)
		defer cancel()
		if err := c.UserEvent(ctx, "PnpTest", Header{"Mac", "001fc11b4e1c"}); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-ch:
			if ev.Get("UserEvent") != "PnpTest" || ev.Get("mac") != "001fc11b4e1c" {
				t.Errorf("event %+v", ev)
			}
		case <-ctx.Done():
			t.Fatal("no UserEvent")
		}
	})

	t.Run("getvar", func(t *testing.T) {
		if v, err := c.Getvar(ctx, "DB_EXISTS(pnp/mac/001fc11b4e1c)"); v != "1" || err != nil {
			t.Errorf("Getvar: %q %v", v, err)
		}
	})

	t.Run("restart", func(t *testing.T) {
		logins := c.Status().Logins
		a.Kill(t)
		waitFor(t, "the client to see the loss", func() bool { return c.Status().State != Connected })
		if _, err := c.DBGet(ctx, "pnp", "mac/001fc11b4e1c"); !errors.Is(err, ErrNotConnected) {
			t.Errorf("DBGet while down: %v, want ErrNotConnected", err)
		}
		if st := c.Status(); st.Err == nil || !strings.Contains(st.Err.Error(), "connection refused") && !strings.Contains(st.Err.Error(), "EOF") && !strings.Contains(st.Err.Error(), "reset") {
			t.Errorf("Status while down: %+v", st)
		}
		a.Start(t)
		if err := c.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
		if st := c.Status(); st.Logins != logins+1 {
			t.Errorf("logins %d after a restart, want %d", st.Logins, logins+1)
		}
	})

	t.Run("wrong secret", func(t *testing.T) {
		bad := cfg
		bad.Secret = "wrong"
		b := serve(t, bad, nil)
		waitFor(t, "the refusal", func() bool { return b.Status().Err != nil })
		var ae *Error
		if err := b.Status().Err; !errors.As(err, &ae) || ae.Message != "Authentication failed" {
			t.Errorf("Status.Err = %v, want Asterisk's refusal", err)
		}
	})
}
