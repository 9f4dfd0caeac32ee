package pnp

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/resolve"
)

// TestReconfigure swaps the resolver and the allowed sources of a running
// Server: the next SUBSCRIBE sees the new ones, nothing else changes.
func TestReconfigure(t *testing.T) {
	first, err := config.Parse([]byte("[resolve]\ndefault = \"http://old.example/{mac}\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := config.Parse([]byte("[resolve]\ndefault = \"http://new.example/{mac}\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	lan := []netip.Prefix{netip.MustParsePrefix("172.16.0.0/12")}
	srv := NewServer(Config{Resolver: resolve.NewStatic(first.Resolve), Allow: lan, T1: time.Second})
	port := newFakePort()
	src := netip.MustParseAddrPort("172.16.32.148:5059")
	sub := readPhone(t, "yealink.sip")

	srv.Handle(Packet{Data: append([]byte(nil), sub...), Src: src, Group: true, Port: port})
	port.next(t) // the 200
	n := port.next(t)
	if !strings.Contains(string(n.b), "http://old.example/") {
		t.Fatalf("first NOTIFY:\n%s", n.b)
	}
	srv.Handle(Packet{Data: answer(t, n.b, 200), Src: src, Port: port})
	port.drain()

	srv.Reconfigure(Settings{Resolver: resolve.NewStatic(second.Resolve), Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	if got := srv.Allow(); len(got) != 1 || got[0].String() != "10.0.0.0/8" {
		t.Errorf("Allow() = %v", got)
	}
	other := withCallID(t, sub, "reconfigured-1")
	srv.Handle(Packet{Data: other, Src: src, Group: true, Port: port})
	port.none(t, 50*time.Millisecond)
	if srv.Stats().Dropped["source-not-allowed"] != 1 {
		t.Errorf("the new allow list is not used: %+v", srv.Stats())
	}

	srv.Reconfigure(Settings{Resolver: resolve.NewStatic(second.Resolve), Allow: lan})
	srv.Handle(Packet{Data: withCallID(t, sub, "reconfigured-2"), Src: src, Group: true, Port: port})
	port.next(t)
	if body := string(port.next(t).b); !strings.Contains(body, "http://new.example/") {
		t.Fatalf("NOTIFY after Reconfigure:\n%s", body)
	}
}

// TestExchangesByBrand counts each exchange under its outcome and brand,
// and one with no brand under BrandUnknown.
func TestExchangesByBrand(t *testing.T) {
	srv := newServer(t, everyone, time.Second)
	port := newFakePort()
	src := netip.MustParseAddrPort("172.16.32.148:5059")
	for _, f := range []string{"yealink.sip", "snom.sip"} {
		srv.Handle(Packet{Data: readPhone(t, f), Src: src, Group: true, Port: port})
		port.next(t)
		n := port.next(t)
		srv.Handle(Packet{Data: answer(t, n.b, 200), Src: src, Port: port})
	}
	obs := NewServer(Config{Resolver: resolve.NewStatic(config.Default().Resolve)})
	obs.Handle(Packet{Data: readPhone(t, "audiocodes.sip"), Src: src, Group: true, Port: port})

	st := srv.Stats()
	if st.Exchanges["provisioned"]["yealink"] != 1 || st.Exchanges["provisioned"]["snom"] != 1 || st.Responses != 2 {
		t.Errorf("stats %+v", st)
	}
	if got := obs.Stats().Exchanges["observed"]; len(got) != 1 {
		t.Errorf("observed by brand: %v", got)
	}
}

// withCallID returns the Yealink SUBSCRIBE with a new Call-ID and Via
// branch: a new transaction and a new dialog of the same phone.
func withCallID(t *testing.T, sub []byte, id string) []byte {
	t.Helper()
	d := bytes.Replace(sub, []byte("z9hG4bK1263794541"), []byte("z9hG4bK-"+id), 1)
	d = bytes.Replace(d, []byte("1092315383@"), []byte(id+"@"), 1)
	if bytes.Equal(d, sub) {
		t.Fatal("the SUBSCRIBE did not change")
	}
	return d
}

// TestDatagramsAddUp checks that every datagram is counted once: as a new
// SUBSCRIBE, a retransmission answered again, a response, or a drop.
func TestDatagramsAddUp(t *testing.T) {
	c, _ := config.Parse([]byte("[[resolve.rule]]\nvendor = \"yealink\"\nurl = \"http://prov.example/\"\n"))
	srv := NewServer(Config{Resolver: resolve.NewStatic(c.Resolve), T1: time.Second})
	port := newFakePort()
	src := netip.MustParseAddrPort("172.16.32.148:5059")
	group := func(b []byte) { srv.Handle(Packet{Data: append([]byte(nil), b...), Src: src, Group: true, Port: port}) }
	yealink, snom := readPhone(t, "yealink.sip"), readPhone(t, "snom.sip")
	group(yealink)
	group(yealink) // answered again
	port.next(t)
	n := port.next(t)
	resp := answer(t, n.b, 200)
	srv.Handle(Packet{Data: resp, Src: src, Port: port})
	srv.Handle(Packet{Data: resp, Src: src, Port: port}) // unmatched now
	group(snom)                                          // observed: no rule
	group(snom)                                          // its retransmission
	group([]byte("garbage"))
	group(bytes.Replace(yealink, []byte("SUBSCRIBE"), []byte("OPTIONS"), 2))
	srv.Handle(Packet{Data: yealink, Src: src, Port: port}) // a request to the unicast port

	st := srv.Stats()
	sum := st.Subscribes + st.Retransmissions + st.Responses
	for _, v := range st.Dropped {
		sum += v
	}
	if st.Datagrams != 9 || sum != st.Datagrams {
		t.Errorf("%d datagrams, counted %d: %+v", st.Datagrams, sum, st)
	}
	if st.Dropped["retransmission-unanswered"] != 1 || st.Subscribes != 2 || st.Retransmissions < 1 {
		t.Errorf("stats %+v", st)
	}
}
