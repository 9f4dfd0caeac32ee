package pnp

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/policy"
	"github.com/pnpd/pnpd/sip"
)

// tortureFiles returns RFC 4475's torture messages (sip/testdata/rfc4475,
// valid and invalid), by "dir/name".
func tortureFiles(tb testing.TB) map[string][]byte {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "sip", "testdata", "rfc4475", "*", "*.sip"))
	if err != nil {
		tb.Fatal(err)
	}
	if len(files) < 40 {
		tb.Fatalf("only %d torture messages under sip/testdata/rfc4475", len(files))
	}
	out := make(map[string][]byte, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		out[filepath.Base(filepath.Dir(f))+"/"+filepath.Base(f)] = b
	}
	return out
}

// None of RFC 4475's torture messages, well-formed or not, is a ua-profile
// SUBSCRIBE: sent to the group (or to the unicast address, where only
// responses to our NOTIFYs are taken) none gets any reply, with or without
// a policy, and each is counted as dropped for the reason the parser's
// verdict predicts.
func TestTortureGetsNoReply(t *testing.T) {
	msgs := tortureFiles(t)
	names := make([]string, 0, len(msgs))
	for n := range msgs {
		names = append(names, n)
	}
	sort.Strings(names)

	servers := map[string]func(t *testing.T) *Server{
		"no policy": func(t *testing.T) *Server { return newServer(t, everyone, time.Second) },
		"policy": func(t *testing.T) *Server {
			srv, _ := policyServer(t, everyone+"[policy]\ncontact_is_source = false\n", time.Second, policy.Config{})
			return srv
		},
	}
	for sname, mk := range servers {
		for _, group := range []bool{true, false} {
			for i, name := range names {
				data := msgs[name]
				dest := "unicast"
				if group {
					dest = "group"
				}
				t.Run(sname+"/"+dest+"/"+name, func(t *testing.T) {
					srv := mk(t)
					port := newFakePort()
					// A source of its own per message: source_rate must not
					// be what silences them.
					src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}), 5060)
					srv.Handle(Packet{Data: bytes.Clone(data), Src: src, Group: group, Port: port})

					// Nothing may be in flight: Shutdown returns at once.
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					if err := srv.Shutdown(ctx); err != nil {
						t.Fatalf("Shutdown: %v: a torture message started an exchange", err)
					}
					if n := len(port.ch); n != 0 {
						s := <-port.ch
						t.Fatalf("%d datagrams sent in reply, the first to %s:\n%s", n, s.dst, s.b)
					}
					st := srv.Stats()
					if st.Subscribes != 0 || st.Datagrams != 1 {
						t.Errorf("stats %+v", st)
					}
					want := dropFor(data, group)
					if st.Dropped[want] != 1 {
						t.Errorf("dropped %v, want 1 %s", st.Dropped, want)
					}
				})
			}
		}
	}
}

// dropFor is the drop reason a datagram that is no ua-profile SUBSCRIBE
// gets: decided by our parser, as the server decides.
func dropFor(data []byte, group bool) string {
	m, err := sip.Parse(bytes.Clone(data))
	switch {
	case err != nil:
		return "malformed"
	case !group && m.IsRequest():
		return "unicast-request"
	case !group:
		return "response-unmatched"
	case !m.IsRequest():
		return "unexpected-response"
	case string(m.Method) != "SUBSCRIBE":
		return "not-subscribe"
	}
	return "?"
}
