package pnp

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/policy"
	"github.com/pnpd/pnpd/pkg/resolve"
)

// fakeState is the PBX's data as the policy reads it.
type fakeState struct {
	until       time.Time
	provisioned map[string]bool
}

func (f *fakeState) Window() (time.Time, bool) { return f.until, true }
func (f *fakeState) Provisioned(mac string) (bool, bool) {
	return f.provisioned[mac], true
}

// policyServer returns a server for the configuration text conf (its
// [resolve] and [policy]) with the policy wired as serve wires it.
func policyServer(t *testing.T, conf string, t1 time.Duration, pc policy.Config) (*Server, *recorder) {
	t.Helper()
	c, err := config.Parse([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	pc.Policy = c.Policy
	pol, err := policy.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	rec.done = make(chan Event, 256)
	srv := NewServer(Config{Resolver: pol.Resolver(resolve.NewStatic(c.Resolve)), T1: t1, T2: 4 * t1,
		Policy: pol, Observer: rec, MaxTransactions: c.Policy.MaxTransactions})
	return srv, rec
}

// variant is yealink.sip as a new transaction and dialog: branch and
// Call-ID numbered i.
func variant(sub []byte, i int) []byte {
	d := bytes.Replace(sub, []byte("z9hG4bK1263794541"), fmt.Appendf(nil, "z9hG4bK1263794541x%d", i), 1)
	return bytes.Replace(d, []byte("1092315383@"), fmt.Appendf(nil, "%d-1092315383@", i), 1)
}

// withContact puts host:port in yealink.sip's Contact.
func withContact(sub []byte, hostport string) []byte {
	return bytes.Replace(sub, []byte("Contact: <sip:MAC0015657322ff@172.16.32.148:5059>"),
		[]byte("Contact: <sip:MAC0015657322ff@"+hostport+">"), 1)
}

// count takes what the port sent within wait.
func count(port *fakePort, wait time.Duration) int {
	n := 0
	deadline := time.After(wait)
	for {
		select {
		case <-port.ch:
			n++
		case <-deadline:
			return n
		}
	}
}

var yealinkSrc = netip.MustParseAddrPort("172.16.32.148:5059")

// One address that floods gets source_rate's burst answered and nothing
// more; the refusals are counted, not answered.
func TestPolicySourceRate(t *testing.T) {
	srv, _ := policyServer(t, everyone+"[policy]\nmac_rate = \"off\"\n", time.Second, policy.Config{})
	port := newFakePort()
	sub := readPhone(t, "yealink.sip")
	const sent = 100
	for i := range sent {
		srv.Handle(Packet{Data: variant(sub, i), Src: yealinkSrc, Group: true, Port: port})
	}
	// 10 admitted: a 200 and a NOTIFY each.
	if got := count(port, 200*time.Millisecond); got != 20 {
		t.Errorf("%d datagrams from one address got %d packets back, want 20 (10 × 200 + NOTIFY)", sent, got)
	}
	if st := srv.Stats(); st.Dropped["rate-limited"] != sent-10 || st.Subscribes != 10 {
		t.Errorf("stats %+v", st)
	}
}

// A MAC claimed from many addresses is answered mac_rate's burst times.
func TestPolicyMACRate(t *testing.T) {
	srv, rec := policyServer(t, everyone+"[policy]\ncontact_is_source = false\n", time.Second, policy.Config{})
	port := newFakePort()
	sub := readPhone(t, "yealink.sip")
	for i := range 30 {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{172, 16, 33, byte(i + 1)}), 5059)
		srv.Handle(Packet{Data: variant(sub, i), Src: src, Group: true, Port: port})
	}
	if got := count(port, 200*time.Millisecond); got != 20 {
		t.Errorf("got %d packets back, want 20", got)
	}
	if st := srv.Stats(); st.Dropped["rate-limited"] != 20 {
		t.Errorf("stats %+v", st)
	}
	// Floods are not reported phone by phone.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, ev := range rec.events {
		if ev.Outcome == "refused" {
			t.Errorf("a rate refusal was reported as an outcome: %+v", ev)
		}
	}
}

// Refusals on the path to the 200: nothing is sent, the outcome says why,
// once, and the SUBSCRIBE's retransmissions are silent.
func TestPolicyRefusesBefore200(t *testing.T) {
	sub := readPhone(t, "yealink.sip")
	tests := []struct {
		name, conf string
		state      *fakeState
		data       []byte
		reason     string
	}{
		{"contact elsewhere", "", nil, withContact(sub, "203.0.113.9:5059"), "contact-not-source"},
		{"contact hostname", "", nil, withContact(sub, "victim.example.com:5059"), "contact-not-source"},
		{"deny exact", "deny_macs = [\"00:15:65:73:22:ff\"]\n", nil, sub, "mac-denied"},
		{"deny prefix over allow", "allow_macs = [\"001565\"]\ndeny_macs = [\"0015657\"]\n", nil, sub, "mac-denied"},
		{"not in allow", "allow_macs = [\"00156573229\", \"805ec0\"]\n", nil, sub, "mac-not-allowed"},
		{"window closed", "window = true\n", &fakeState{}, sub, "window-closed"},
		{"window over", "window = true\n", &fakeState{until: time.Now().Add(-time.Second)}, sub, "window-closed"},
		{"once", "once = true\n", &fakeState{provisioned: map[string]bool{"0015657322ff": true}}, sub, "provisioned-once"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := everyone
			if tt.state != nil {
				conf += "[ami]\nusername = \"u\"\nsecret = \"s\"\n"
			}
			pc := policy.Config{}
			if tt.state != nil {
				pc.State = tt.state
			}
			srv, rec := policyServer(t, conf+"[policy]\n"+tt.conf, time.Second, pc)
			port := newFakePort()
			for range 3 {
				srv.Handle(Packet{Data: append([]byte(nil), tt.data...), Src: yealinkSrc, Group: true, Port: port})
			}
			ev := rec.wait(t)
			if ev.Outcome != "refused" || !bytes.HasPrefix([]byte(ev.Reason), []byte(tt.reason)) {
				t.Errorf("outcome %q reason %q, want refused %s", ev.Outcome, ev.Reason, tt.reason)
			}
			port.none(t, 100*time.Millisecond)
			select {
			case ev := <-rec.done:
				t.Errorf("a second outcome for one transaction: %+v", ev)
			default:
			}
			if st := srv.Stats(); st.Outcomes["refused"] != 1 || st.Subscribes != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
	t.Run("admitted", func(t *testing.T) {
		srv, _ := policyServer(t, everyone+"[ami]\nusername = \"u\"\nsecret = \"s\"\n[policy]\nwindow = true\nonce = true\nallow_macs = [\"001565\"]\n",
			time.Second, policy.Config{State: &fakeState{until: time.Now().Add(time.Hour)}})
		port := newFakePort()
		srv.Handle(Packet{Data: sub, Src: yealinkSrc, Group: true, Port: port})
		port.next(t)
		port.next(t)
	})
}

// One forged SUBSCRIBE never causes more than a 200 and DefaultMaxNotifies
// NOTIFYs, however long the phone stays silent.
func TestNotifyCap(t *testing.T) {
	const t1 = 10 * time.Millisecond
	srv, rec := policyServer(t, everyone, t1, policy.Config{})
	port := newFakePort()
	srv.Handle(Packet{Data: readPhone(t, "yealink.sip"), Src: yealinkSrc, Group: true, Port: port})
	ev := rec.wait(t) // Timer F: 64 × T1
	if ev.Outcome != "timeout" {
		t.Fatalf("outcome %+v", ev)
	}
	if got := len(port.ch); got != 1+DefaultMaxNotifies {
		t.Errorf("one SUBSCRIBE got %d packets back, want %d", got, 1+DefaultMaxNotifies)
	}
}

// unknown = "approve": an unknown phone is pending, not answered; a phone
// a rule names is answered.
func TestPolicyPending(t *testing.T) {
	conf := everyone + `
[[resolve.rule]]
mac = "00135e874b49"
url = "http://prov.example.com/snom/"
[ami]
username = "u"
secret = "s"
[policy]
unknown = "approve"
`
	srv, rec := policyServer(t, conf, time.Second, policy.Config{State: &fakeState{}})
	port := newFakePort()
	srv.Handle(Packet{Data: readPhone(t, "yealink.sip"), Src: yealinkSrc, Group: true, Port: port})
	if ev := rec.wait(t); ev.Outcome != "pending" || ev.Identity.MAC != "0015657322ff" {
		t.Errorf("unknown phone: %+v", ev)
	}
	port.none(t, 50*time.Millisecond)
	srv.Handle(Packet{Data: readPhone(t, "snom.sip"), Src: netip.MustParseAddrPort("192.168.10.67:5060"), Group: true, Port: port})
	port.next(t)
	n := port.next(t)
	if !bytes.Contains(n.b, []byte("http://prov.example.com/snom/")) {
		t.Errorf("known phone's NOTIFY:\n%s", n.b)
	}
}

// neighbor_check: the 200 leaves, the NOTIFY only if the kernel's entry
// for the source holds the claimed MAC.
func TestPolicyNeighborCheck(t *testing.T) {
	for _, tt := range []struct {
		name   string
		hw     string
		err    error
		notify bool
	}{
		{"match", "00:15:65:73:22:ff", nil, true},
		{"other MAC", "02:00:00:00:00:01", nil, false},
		{"no entry", "", fmt.Errorf("no neighbour entry"), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			asked := make(chan string, 1)
			look := func(ctx context.Context, iface string, ip netip.Addr) (net.HardwareAddr, error) {
				if _, ok := ctx.Deadline(); !ok {
					t.Error("the neighbour lookup has no deadline")
				}
				asked <- iface + " " + ip.String()
				if tt.err != nil {
					return nil, tt.err
				}
				return net.ParseMAC(tt.hw)
			}
			srv, rec := policyServer(t, everyone+"[policy]\nneighbor_check = true\n", time.Second, policy.Config{Neighbor: look})
			port := newFakePort()
			srv.Handle(Packet{Data: readPhone(t, "yealink.sip"), Src: yealinkSrc, Group: true, Port: port})
			if m, _ := parseBoth(t, port.next(t).b); m.StatusCode != 200 {
				t.Fatal("no 200 first")
			}
			if got := <-asked; got != "test0 172.16.32.148" {
				t.Errorf("looked up %q", got)
			}
			if !tt.notify {
				ev := rec.wait(t)
				if ev.Outcome != "refused" || !bytes.HasPrefix([]byte(ev.Reason), []byte("neighbor-mismatch")) {
					t.Errorf("outcome %+v", ev)
				}
				port.none(t, 50*time.Millisecond)
				return
			}
			n := port.next(t)
			srv.Handle(Packet{Data: answer(t, n.b, 200), Src: n.dst, Port: port})
			if ev := rec.wait(t); ev.Outcome != "provisioned" {
				t.Errorf("outcome %+v", ev)
			}
		})
	}
}

// Refused transactions are kept (their retransmissions stay silent) in a
// room of their own: more refusals than max_transactions never lock a
// phone out of the table.
func TestRefusalsDoNotFillTheTable(t *testing.T) {
	srv, rec := policyServer(t, everyone+"[policy]\nmax_transactions = 4\nmac_rate = \"off\"\nsource_rate = \"off\"\n", time.Second, policy.Config{})
	port := newFakePort()
	sub := withContact(readPhone(t, "yealink.sip"), "203.0.113.9:5059")
	for i := range 10 {
		srv.Handle(Packet{Data: variant(sub, i), Src: yealinkSrc, Group: true, Port: port})
	}
	for range 10 {
		if ev := rec.wait(t); ev.Outcome != "refused" {
			t.Fatalf("outcome %+v", ev)
		}
	}
	srv.Handle(Packet{Data: readPhone(t, "snom.sip"), Src: netip.MustParseAddrPort("192.168.10.67:5060"), Group: true, Port: port})
	if m, _ := parseBoth(t, port.next(t).b); m.StatusCode != 200 {
		t.Fatal("the phone after the refusals got no 200")
	}
	port.next(t) // its NOTIFY
	if st := srv.Stats(); st.Dropped["transaction-table-full"] != 0 || st.Outcomes["refused"] != 10 {
		t.Errorf("stats %+v", st)
	}
	// Timer J forgets the refusals with the rest.
	srv.expire(time.Now().Add(time.Hour))
	if s, c := srv.Open(); s != 0 || c != 1 {
		t.Errorf("open after Timer J: %d servers, %d clients", s, c)
	}
}
