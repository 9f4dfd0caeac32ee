package pbx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pnpd/pnpd/ami"
	"github.com/pnpd/pnpd/pkg/asterisk/asterisktest"
	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/phone"
	"github.com/pnpd/pnpd/pkg/pnp"
	"github.com/pnpd/pnpd/pkg/resolve"
)

// start runs an ami.Client and a PBX over it until the test ends.
func start(t testing.TB, addr, user, secret string, cfg Config) (*PBX, *ami.Client) {
	t.Helper()
	c := ami.New(ami.Config{Address: addr, Username: user, Secret: secret, MaxBackoff: 500 * time.Millisecond})
	cfg.Client = c
	p := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = c.Serve(ctx) }()
	go func() { defer wg.Done(); _ = p.Serve(ctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = c.Shutdown(sctx)
		cancel()
		wg.Wait()
	})
	return p, c
}

func waitLoaded(t testing.TB, p *PBX) {
	t.Helper()
	select {
	case <-p.Loaded():
	case <-time.After(30 * time.Second):
		t.Fatal("no snapshot")
	}
}

func TestSnapshotAndQuestions(t *testing.T) {
	a := asterisktest.Start(t, asterisktest.Options{})
	for _, c := range []string{
		"database put pnp mac/001fc11b4e1c acme",
		"database put pnp mac/00:15:65:73:22:FF http://direct.example/",
		"database put pnp tenant/acme/url http://acme.example/",
		"database put pnp tenant/acme/url/Yealink http://acme.example/yl/",
		"database put pnp default/url http://default.example/",
		"database put pnp seen/001fc11b4e1c brand=htek",
		"database put pnp junk x",
		"database put other mac/000413000001 nope",
	} {
		a.CLI(t, c)
	}
	p, _ := start(t, a.Addr, a.Username, a.Secret, Config{})
	waitLoaded(t, p)
	s := p.Snapshot()
	if s.Entries != 7 || s.Ignored != 1 || len(s.MACs) != 2 || s.MACs["0015657322ff"] != "http://direct.example/" ||
		s.Tenants["acme"].URLFor("yealink") != "http://acme.example/yl/" || s.Default != "http://default.example/" {
		t.Errorf("snapshot %+v, tenants %+v", s, s.Tenants)
	}
	if !p.Live() {
		t.Error("not live")
	}
	ctx := context.Background()
	a.CLI(t, "database put pnp mac/000413000002 beta")
	if v, found, err := p.Get(ctx, "mac/000413000002"); v != "beta" || !found || err != nil {
		t.Errorf("Get: %q %v %v", v, found, err)
	}
	if v, found, err := p.Get(ctx, "mac/000413000003"); v != "" || found || err != nil {
		t.Errorf("Get of a missing key: %q %v %v", v, found, err)
	}
	if v, err := p.Eval(ctx, "DB_EXISTS(pnp/mac/000413000002)"); v != "1" || err != nil {
		t.Errorf("Eval: %q %v", v, err)
	}

	// The resolver over it, asked now for the phone the snapshot lacks
	// (its tenant has no URL: a failure, not the PBX's default).
	ch := resolve.NewChain(config.Resolve{}, p, "")
	if _, decided, _ := ch.Decide(resolve.Request{MAC: "000413000002"}); decided {
		t.Error("Decide decided for a phone the snapshot lacks")
	}
	d, err := ch.Resolve(ctx, resolve.Request{MAC: "000413000002"})
	if !errors.Is(err, resolve.ErrNoTenantURL) || d.Tenant != "beta" || d.Source != "pbx" {
		t.Errorf("Resolve: %+v %v", d, err)
	}
	a.CLI(t, "database put pnp tenant/beta/url http://beta.example/{mac}")
	d, err = ch.Resolve(ctx, resolve.Request{MAC: "000413000002"})
	if err != nil || d.URL != "http://beta.example/000413000002" {
		t.Errorf("Resolve: %+v %v", d, err)
	}
}

func TestQueueWaitsForThePBX(t *testing.T) {
	a := asterisktest.Start(t, asterisktest.Options{})
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))
	p, c := start(t, a.Addr, a.Username, a.Secret, Config{Events: true, Logger: log})
	waitLoaded(t, p)
	a.Kill(t)
	deadline := time.Now().Add(10 * time.Second)
	for c.Status().State == ami.Connected && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	macs := []string{"001fc1000031", "001fc1000032", "001fc1000033"}
	for _, m := range macs {
		p.Observe(doneEvent(m))
	}
	a.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, m := range macs {
		out := a.CLI(t, "database get pnp seen/"+m)
		if !strings.Contains(out, "outcome=provisioned") {
			t.Errorf("seen/%s after the restart: %q", m, out)
		}
	}
	if st := p.Stats(); st.Overflows != 0 || st.WriteErrors != 0 || st.Written != 6 || st.Loads < 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestQueueOverflowIsCounted(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))
	// Nothing listens there: every write waits, the queue fills.
	c := ami.New(ami.Config{Address: "127.0.0.1:1", Username: "x", Secret: "y"})
	p := New(Config{Client: c, Queue: 2, Logger: log})
	for i := range 5 {
		p.Observe(doneEvent(fmt.Sprintf("001fc10000%02x", i)))
	}
	if st := p.Stats(); st.Overflows != 3 || st.QueueDepth != 2 {
		t.Errorf("stats %+v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "pbx write queue full"); n != 1 {
		t.Errorf("logged the overflow %d times, want once:\n%s", n, logs.String())
	}
}

func doneEvent(mac string) pnp.Event {
	return pnp.Event{Kind: pnp.EventDone, Identity: phone.Identity{MAC: mac, Brand: "htek", Model: "UC912G"},
		Src: netip.MustParseAddrPort("10.0.0.9:60000"), Interface: "eth0", URL: "http://acme.example/",
		Outcome: "provisioned", Time: time.Now()}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// fill puts n phones into the family over AMI (DBPut is far faster than
// one `asterisk -rx` per key).
func fill(b testing.TB, c *ami.Client, n int) {
	b.Helper()
	ctx := context.Background()
	for i := range n {
		if err := c.DBPut(ctx, "pnp", fmt.Sprintf("mac/0015%08x", i), "tenant"+fmt.Sprint(i%50)); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 50 {
		if err := c.DBPut(ctx, "pnp", fmt.Sprintf("tenant/tenant%d/url", i), "http://prov.example/"+fmt.Sprint(i)+"/"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAsteriskLoad10k takes a snapshot of a 10,000-phone family from
// a real Asterisk (DBGetTree through amigo, then the snapshot built).
//
//	go test -run x -bench Asterisk -benchtime 20x ./pkg/pbx
func BenchmarkAsteriskLoad10k(b *testing.B) {
	a := asterisktest.Start(b, asterisktest.Options{})
	p, c := start(b, a.Addr, a.Username, a.Secret, Config{})
	waitLoaded(b, p)
	fill(b, c, 10000)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		p.load(ctx, "bench")
	}
	b.StopTimer()
	if s := p.Snapshot(); len(s.MACs) != 10000 {
		b.Fatalf("snapshot holds %d phones", len(s.MACs))
	}
}

// BenchmarkAsteriskDBGet is one question for a phone the snapshot lacks:
// a DBGet round trip to a real Asterisk on loopback.
func BenchmarkAsteriskDBGet(b *testing.B) {
	a := asterisktest.Start(b, asterisktest.Options{})
	p, c := start(b, a.Addr, a.Username, a.Secret, Config{})
	waitLoaded(b, p)
	if err := c.DBPut(context.Background(), "pnp", "mac/001fc11b4e1c", "acme"); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if v, found, err := p.Get(ctx, "mac/001fc11b4e1c"); v != "acme" || !found || err != nil {
			b.Fatal(v, found, err)
		}
	}
}

func TestReloadBurstIsOneSnapshot(t *testing.T) {
	a := asterisktest.Start(t, asterisktest.Options{})
	p, c := start(t, a.Addr, a.Username, a.Secret, Config{})
	waitLoaded(t, p)
	before := p.Stats().Loads
	a.CLI(t, "database put pnp mac/001fc11b4e1c acme")
	ctx := context.Background()
	const burst = 30
	for range burst {
		if err := c.UserEvent(ctx, EventReload); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.Stats().Loads == before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(3 * reloadGap) // room for any further (wrong) loads
	n := p.Stats().Loads - before
	if n < 1 || n > 3 {
		t.Errorf("%d PnpReloads made %d snapshots, want 1 (at most 3)", burst, n)
	}
	if _, ok := p.Snapshot().MACs["001fc11b4e1c"]; !ok {
		t.Error("the snapshot after the reload lacks the change")
	}
}
