package ami

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/ivahaev/amigo"
	"github.com/pnpd/pnpd/ami/amitest"
)

// The benchmarks run against amitest on loopback, in the same process: the
// allocations they report include the scripted server's. The *RawTCP ones
// do the same exchange with a bare socket and no amigo, to tell the
// server's and the socket's share from the client's.

// benchWriteTimeout is Asterisk's own: the session is dropped if the
// client does not keep up.
const benchWriteTimeout = 100 * time.Millisecond

func BenchmarkDBGet(b *testing.B) {
	srv := amitest.New(b, amitest.Options{WriteTimeout: benchWriteTimeout})
	srv.DBPut("pnp", "mac/001fc11b4e1c", "acme")
	c := connected(b, srv, nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if v, err := c.DBGet(ctx, "pnp", "mac/001fc11b4e1c"); err != nil || v != "acme" {
			b.Fatalf("DBGet = %q, %v", v, err)
		}
	}
}

// BenchmarkDBGetNotFound is the miss: one "Response: Error" message.
func BenchmarkDBGetNotFound(b *testing.B) {
	srv := amitest.New(b, amitest.Options{WriteTimeout: benchWriteTimeout})
	c := connected(b, srv, nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.DBGet(ctx, "pnp", "mac/001fc11b4e1c"); err == nil {
			b.Fatal("found")
		}
	}
}

// BenchmarkDBGetParallel: amigo runs one action at a time per connection,
// so concurrent callers wait for each other's round trips.
func BenchmarkDBGetParallel(b *testing.B) {
	srv := amitest.New(b, amitest.Options{WriteTimeout: benchWriteTimeout})
	srv.DBPut("pnp", "mac/001fc11b4e1c", "acme")
	c := connected(b, srv, nil)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.DBGet(ctx, "pnp", "mac/001fc11b4e1c"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDBGetRawTCP is the same round trip on a bare socket: the floor
// that amigo and this package add to.
func BenchmarkDBGetRawTCP(b *testing.B) {
	srv := amitest.New(b, amitest.Options{WriteTimeout: benchWriteTimeout})
	srv.DBPut("pnp", "mac/001fc11b4e1c", "acme")
	conn, r := rawLogin(b, srv)
	b.ReportAllocs()
	var buf []byte
	i := 0
	for b.Loop() {
		i++
		buf = append(buf[:0], "Action: DBGet\r\nActionID: "...)
		buf = strconv.AppendInt(buf, int64(i), 10)
		buf = append(buf, "\r\nFamily: pnp\r\nKey: mac/001fc11b4e1c\r\n\r\n"...)
		if _, err := conn.Write(buf); err != nil {
			b.Fatal(err)
		}
		for {
			m, err := amitest.ReadMessage(r)
			if err != nil {
				b.Fatal(err)
			}
			if m.Get("Event") == "DBGetComplete" {
				break
			}
		}
	}
}

// BenchmarkDBGetBareAmigo is the same round trip with amigo alone (its
// Action, then the list's events from its event channel): what this
// package adds is the difference to BenchmarkDBGet.
func BenchmarkDBGetBareAmigo(b *testing.B) {
	srv := amitest.New(b, amitest.Options{WriteTimeout: benchWriteTimeout})
	srv.DBPut("pnp", "mac/001fc11b4e1c", "acme")
	host, port, _ := net.SplitHostPort(srv.Addr())
	a := amigo.New(&amigo.Settings{Username: srv.Username(), Password: srv.Secret(), Host: host, Port: port,
		ActionTimeout: 10 * time.Second, DialTimeout: time.Second, ReconnectInterval: 250 * time.Millisecond})
	events := make(chan map[string]string, 8192)
	complete := make(chan struct{}, 1)
	drained := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case m := <-events:
				if m["Event"] == "DBGetComplete" {
					complete <- struct{}{}
				}
			case <-stop:
				return
			}
		}
	}()
	lost := make(chan struct{}, 1)
	a.On("error", func(string) {
		select {
		case lost <- struct{}{}:
		default:
		}
	})
	a.SetEventChannel(events)
	a.Connect()
	for !a.Connected() {
		time.Sleep(time.Millisecond)
	}
	b.Cleanup(func() {
		a.Action(map[string]string{"action": "Logoff"})
		<-lost
		a.Close()
		close(stop)
		<-drained
	})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		res, err := a.Action(map[string]string{"Action": "DBGet", "ActionID": strconv.Itoa(i), "Family": "pnp", "Key": "mac/001fc11b4e1c"})
		if err != nil || res["Response"] != "Success" {
			b.Fatalf("DBGet = %v, %v", res, err)
		}
		<-complete
	}
}

func rawLogin(b *testing.B, srv *amitest.Server) (net.Conn, *bufio.Reader) {
	conn, err := net.Dial("tcp4", srv.Addr())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	r := bufio.NewReaderSize(conn, 64<<10)
	if _, err := r.ReadString('\n'); err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(conn, "Action: Login\r\nUsername: %s\r\nSecret: %s\r\n\r\n", srv.Username(), srv.Secret())
	for range 2 { // the response, FullyBooted
		if _, err := amitest.ReadMessage(r); err != nil {
			b.Fatal(err)
		}
	}
	return conn, r
}

const treeSize = 100_000

func treeServer(b *testing.B) *amitest.Server {
	srv := amitest.New(b, amitest.Options{WriteTimeout: benchWriteTimeout})
	for i := range treeSize {
		srv.DBPut("pnp", fmt.Sprintf("mac/%012x", i), "tenant-"+strconv.Itoa(i%97))
	}
	return srv
}

// BenchmarkDBGetTree100k loads 100,000 entries per op. It reports the
// entries per second, and the heap the returned entries hold.
func BenchmarkDBGetTree100k(b *testing.B) {
	srv := treeServer(b)
	c := connected(b, srv, nil)
	ctx := context.Background()
	load := func() []Entry {
		e, err := c.DBGetTree(ctx, "pnp", "mac")
		if err != nil {
			b.Fatal(err)
		}
		if len(e) != treeSize {
			b.Fatalf("%d entries, want %d", len(e), treeSize)
		}
		return e
	}
	load() // the server sorts its keys once

	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	held := load()
	runtime.GC()
	runtime.ReadMemStats(&m1)
	heldBytes := float64(m1.HeapAlloc) - float64(m0.HeapAlloc)
	runtime.KeepAlive(held)
	held = nil

	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		load()
	}
	b.ReportMetric(float64(treeSize*b.N)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(heldBytes/treeSize, "heldB/entry")
	if c.Status().Logins != 1 {
		b.Errorf("the session was dropped (%d logins): the client did not keep up", c.Status().Logins)
	}
}

// BenchmarkDBGetTree100kRawTCP reads the same 100,000 entries on a bare
// socket, parsed with amitest.ReadMessage.
func BenchmarkDBGetTree100kRawTCP(b *testing.B) {
	srv := treeServer(b)
	conn, r := rawLogin(b, srv)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		fmt.Fprintf(conn, "Action: DBGetTree\r\nActionID: %d\r\nFamily: pnp\r\nKey: mac\r\n\r\n", i)
		n := 0
		for {
			m, err := amitest.ReadMessage(r)
			if err != nil {
				b.Fatal(err)
			}
			if m.Get("Event") == "DBGetTreeComplete" {
				break
			}
			n++
		}
		if n != treeSize+1 {
			b.Fatalf("%d messages, want %d", n, treeSize+1)
		}
	}
	b.ReportMetric(float64(treeSize*b.N)/b.Elapsed().Seconds(), "entries/s")
}
