package pnp

import (
	"bytes"
	"context"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/policy"
	"github.com/pnpd/pnpd/pkg/resolve"
)

// discardPort keeps only the branch of the last NOTIFY sent.
type discardPort struct {
	addr   netip.AddrPort
	branch []byte
}

func (d *discardPort) Name() string         { return "bench0" }
func (d *discardPort) Addr() netip.AddrPort { return d.addr }
func (d *discardPort) Send(b []byte, _ netip.AddrPort) error {
	if bytes.HasPrefix(b, []byte("NOTIFY ")) {
		i := bytes.Index(b, []byte(";branch="))
		j := bytes.IndexByte(b[i+8:], ';')
		d.branch = append(d.branch[:0], b[i+8:i+8+j]...)
	}
	return nil
}

// BenchmarkExchange measures one whole exchange as the server sees it: a
// new SUBSCRIBE in, the 200 and the NOTIFY built and sent, the phone's 200
// to the NOTIFY in, the outcome logged (to a discarding logger).
func BenchmarkExchange(b *testing.B) {
	for _, file := range []string{"yealink.sip", "grandstream.sip", "gigaset.sip"} {
		b.Run(file, func(b *testing.B) {
			c, err := config.Parse([]byte("[resolve]\ndefault = \"http://prov.example.com/{vendor}/{mac}/\"\n"))
			if err != nil {
				b.Fatal(err)
			}
			benchExchange(b, resolve.NewStatic(c.Resolve), file)
		})
	}
}

// benchExchange runs b.N exchanges of the phone in file through a server
// over res.
func benchExchange(b *testing.B, res resolve.Resolver, file string) {
	benchExchangeWith(b, Config{Resolver: res}, file)
}

// benchExchangeWith is benchExchange for a server of cfg.
func benchExchangeWith(b *testing.B, cfg Config, file string) {
	cfg.MaxTransactions = 1 << 30
	srv := NewServer(cfg)
	port := &discardPort{addr: netip.MustParseAddrPort("192.0.2.1:5062")}
	sub := readPhone(b, file)
	src := netip.MustParseAddrPort("192.168.1.2:5080")
	// Distinct transactions and dialogs: rewrite the branch and Call-ID in
	// place (same length) each iteration.
	bi := bytes.Index(sub, []byte("branch=z9hG4bK")) + len("branch=z9hG4bK")
	ci := bytes.Index(sub, []byte("Call-ID: ")) + len("Call-ID: ")
	answer := []byte("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5062;branch=")
	var pad [16]byte
	var resp []byte
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		n := strconv.AppendInt(pad[:0], int64(i)+1<<40, 36) // 8 digits
		copy(sub[bi:], n)
		copy(sub[ci:], n)
		srv.Handle(Packet{Data: sub, Src: src, Group: true, Port: port})

		// The phone's answer, built in a reused buffer (a few tens of ns;
		// StopTimer would cost far more than it hides).
		resp = append(append(append(resp[:0], answer...), port.branch...),
			";rport\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:x@y>;tag=2\r\nCall-ID: x\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n"...)
		if i%4096 == 4095 {
			srv.expire(time.Now().Add(time.Hour)) // Timer J, amortised
		}
		srv.Handle(Packet{Data: resp, Src: src, Port: port})
	}
	b.StopTimer()
	if st := srv.Stats(); st.Outcomes["provisioned"] != int64(b.N) {
		b.Fatalf("stats %+v after %d exchanges", st, b.N)
	}
}

// snapPBX is a PBX that is connected and holds one snapshot: what the
// responder reads for a phone the PBX has assigned.
type snapPBX struct{ snap *resolve.Snapshot }

func (p snapPBX) Snapshot() *resolve.Snapshot { return p.snap }
func (p snapPBX) Live() bool                  { return true }
func (p snapPBX) Get(context.Context, string) (string, bool, error) {
	panic("the snapshot path asked the PBX")
}
func (p snapPBX) Eval(context.Context, string) (string, error) {
	panic("the snapshot path asked the PBX")
}

// BenchmarkExchangeSnapshot is BenchmarkExchange for a phone that the PBX's
// snapshot assigns to a tenant (10,000 phones in it): the decision that
// never waits on AMI.
func BenchmarkExchangeSnapshot(b *testing.B) {
	snap := resolve.NewSnapshot(10001)
	for i := range 10000 {
		snap.Add("mac/"+strconv.FormatInt(0x001565000000+int64(i), 16), "tenant"+strconv.Itoa(i%50))
	}
	snap.Add("mac/c074ad112233", "acme")
	snap.Add("tenant/acme/url", "http://acme.example.com/{vendor}/{mac}/")
	benchExchange(b, resolve.NewChain(config.Resolve{}, snapPBX{snap}, ""), "grandstream.sip")
}

// BenchmarkExchangePolicy is BenchmarkExchange with every check of the
// default policy on the path (source and MAC token buckets, the Contact,
// the resolver wrapper), plus MAC lists; the rates are set high so that
// one phone may repeat b.N times.
func BenchmarkExchangePolicy(b *testing.B) {
	c, err := config.Parse([]byte(`
[resolve]
default = "http://prov.example.com/{vendor}/{mac}/"
[policy]
source_rate = "1000000000/1s"
mac_rate = "1000000000/1s"
deny_macs = ["001fc1ffff"]
allow_macs = ["000b82", "c074ad"]
`))
	if err != nil {
		b.Fatal(err)
	}
	pol, err := policy.New(policy.Config{Policy: c.Policy})
	if err != nil {
		b.Fatal(err)
	}
	benchExchangeWith(b, Config{Resolver: pol.Resolver(resolve.NewStatic(c.Resolve)), Policy: pol}, "grandstream.sip")
}
