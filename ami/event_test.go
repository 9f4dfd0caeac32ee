package ami

import (
	"fmt"
	"testing"
	"time"

	"github.com/pnpd/pnpd/ami/amitest"
)

// amitestWriteTimeout drops a session of the scripted server whose socket
// stays unwritable that long, as Asterisk does (100 ms there; generous
// here, for the race detector).
const amitestWriteTimeout = time.Second

func TestSubscribeUserEvent(t *testing.T) {
	leakCheck(t)
	srv := amitest.New(t, amitest.Options{})
	a := connected(t, srv, nil)
	b := connected(t, srv, nil)
	tests := []struct{ name, subscribe string }{
		{"exact", "UserEvent"},
		{"lower case", "userevent"},
		{"every event", "*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch, cancel := a.Subscribe(tt.subscribe, 8)
			defer cancel()
			other, cancelOther := a.Subscribe("DBGetResponse", 8)
			defer cancelOther()
			if err := b.UserEvent(testCtx(t), "PnpTest", Header{"Mac", "001fc11b4e1c"}, Header{"Tenant", "acme: x  "}); err != nil {
				t.Fatal(err)
			}
			var ev Event
			select {
			case ev = <-ch:
			case <-time.After(bound):
				t.Fatal("no event")
			}
			if ev.Name != "UserEvent" || ev.Get("userevent") != "PnpTest" || ev.Get("MAC") != "001fc11b4e1c" || ev.Get("Tenant") != "acme: x  " {
				t.Fatalf("event = %+v", ev)
			}
			for _, k := range []string{"#", "TimeReceived", "AmigoConnID"} {
				if _, ok := ev.Fields[k]; ok {
					t.Errorf("event has amigo's %s: %+v", k, ev.Fields)
				}
			}
			select {
			case ev := <-other:
				t.Errorf("DBGetResponse subscriber got %+v", ev)
			default:
			}
		})
	}
	t.Run("cancel closes", func(t *testing.T) {
		ch, cancel := a.Subscribe("UserEvent", 1)
		cancel()
		cancel()
		if _, ok := <-ch; ok {
			t.Fatal("channel open after cancel")
		}
	})
}

// TestSlowSubscriber: a subscriber that never reads loses events, counted,
// and calls go on meanwhile.
func TestSlowSubscriber(t *testing.T) {
	leakCheck(t)
	srv := amitest.New(t, amitest.Options{WriteTimeout: amitestWriteTimeout})
	srv.DBPut("pnp", "k", "v")
	c := connected(t, srv, nil)
	_, cancel := c.Subscribe("UserEvent", 1) // never read
	defer cancel()
	fast, cancelFast := c.Subscribe("UserEvent", 5000)
	defer cancelFast()
	const n = 3000
	ctx := testCtx(t)
	go func() {
		for i := range n {
			srv.Broadcast(amitest.Msg("Event", "UserEvent", "Privilege", "user,all", "UserEvent", "Flood", "N", fmt.Sprint(i)))
		}
	}()
	for range 50 {
		if v, err := c.DBGet(ctx, "pnp", "k"); err != nil || v != "v" {
			t.Fatalf("DBGet during the flood = %q, %v", v, err)
		}
	}
	for i := range n {
		select {
		case ev := <-fast:
			if ev.Get("N") != fmt.Sprint(i) {
				t.Fatalf("event %d: N = %s (out of order)", i, ev.Get("N"))
			}
		case <-ctx.Done():
			t.Fatalf("got %d of %d events", i, n)
		}
	}
	if d := c.Dropped(); d != n-1 {
		t.Errorf("Dropped() = %d, want %d", d, n-1)
	}
	if c.Status().Logins != 1 {
		t.Errorf("the session was lost")
	}
}

func TestEventGet(t *testing.T) {
	ev := Event{Name: "X", Fields: map[string]string{"UserEvent": "a", "Mac": "b"}}
	tests := []struct{ key, want string }{
		{"UserEvent", "a"}, {"userevent", "a"}, {"MAC", "b"}, {"none", ""},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if got := ev.Get(tt.key); got != tt.want {
				t.Errorf("Get(%q) = %q, want %q", tt.key, got, tt.want)
			}
		})
	}
}

func TestToEvent(t *testing.T) {
	tests := []struct {
		name string
		in   map[string]string
		want map[string]string
	}{
		{"internal keys dropped", map[string]string{"Event": "E", "#": "1", "TimeReceived": "t", "AmigoConnID": "2", "A": "b"},
			map[string]string{"Event": "E", "A": "b"}},
		{"one output line", map[string]string{"Response": "Success", "RealOutput": "only"},
			map[string]string{"Response": "Success", "Output": "only"}},
		{"first and last output lines", map[string]string{"Response": "Success", "RealOutput": "first", "Output": "last"},
			map[string]string{"Response": "Success", "Output": "first\nlast"}},
		{"Response: Follows", map[string]string{"Response": "Follows", "CommandResponse": "a\nb\nc"},
			map[string]string{"Response": "Follows", "Output": "a\nb\nc"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := toEvent(tt.in)
			if fmt.Sprint(got.Fields) != fmt.Sprint(tt.want) {
				t.Errorf("Fields = %v, want %v", got.Fields, tt.want)
			}
		})
	}
}
