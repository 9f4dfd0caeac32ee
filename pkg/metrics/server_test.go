package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitTimeout bounds waiting for Serve to return: generous, the machine
// is shared.
const waitTimeout = 10 * time.Second

// startServer serves fakeSources on a free loopback port and returns the
// server and its base URL; at cleanup it is shut down and Serve must have
// returned nil.
func startServer(t *testing.T) (*Server, string) {
	t.Helper()
	reg, err := NewRegistry(fakeSources())
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer("127.0.0.1:0", reg, nil)
	if s.Addr() != nil {
		t.Errorf("Addr before Listen = %v, want nil", s.Addr())
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve after Shutdown: %v, want nil", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Serve did not return within %s of Shutdown", waitTimeout)
		}
	})
	return s, "http://" + s.Addr().String()
}

func get(t *testing.T, method, url string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: waitTimeout}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

func TestServerPaths(t *testing.T) {
	_, base := startServer(t)
	tests := []struct {
		method, path string
		status       int
		contains     []string
	}{
		{"GET", "/metrics", 200, []string{
			"# HELP pnpd_datagrams_total ",
			"# TYPE pnpd_datagrams_total counter",
			`pnpd_datagrams_total{outcome="subscribe"} 20`,
			`pnpd_exchanges_total{brand="yealink",outcome="provisioned"} 5`,
			`pnpd_info{config="/etc/pnpd/pnpd.toml",mode="packet",version="1.2.3"} 1`,
			"go_goroutines ",
			"process_start_time_seconds ",
		}},
		{"HEAD", "/metrics", 200, nil},
		{"GET", "/", 200, []string{"/metrics"}},
		{"GET", "/debug/pprof/", 404, nil},
		{"GET", "/metrics/x", 404, nil},
		{"POST", "/metrics", 405, nil},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			status, ctype, body := get(t, tt.method, base+tt.path)
			if status != tt.status {
				t.Fatalf("status %d, want %d\n%s", status, tt.status, body)
			}
			if tt.path == "/metrics" && tt.method == "GET" && !strings.HasPrefix(ctype, "text/plain") {
				t.Errorf("Content-Type %q, want the text format", ctype)
			}
			for _, want := range tt.contains {
				if !strings.Contains(body, want) {
					t.Errorf("body lacks %q\n%s", want, body)
				}
			}
		})
	}
}

// TestListenTaken: a port in use fails at Listen, before anything serves.
func TestListenTaken(t *testing.T) {
	s, _ := startServer(t)
	reg, err := NewRegistry(Sources{})
	if err != nil {
		t.Fatal(err)
	}
	again := NewServer(s.Addr().String(), reg, nil)
	err = again.Listen()
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Listen on a taken port: %v, want EADDRINUSE", err)
	}
	if !strings.HasPrefix(err.Error(), "metrics: listen tcp "+s.Addr().String()) {
		t.Errorf("error %q does not name the address", err)
	}
	if err := again.Serve(context.Background()); !errors.Is(err, ErrNotListening) {
		t.Errorf("Serve without a listener: %v, want ErrNotListening", err)
	}
}

// TestServeContext: the end of Serve's context stops it, nil.
func TestServeContext(t *testing.T) {
	reg, err := NewRegistry(Sources{})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer("127.0.0.1:0", reg, nil)
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	if status, _, _ := get(t, "GET", "http://"+s.Addr().String()+"/metrics"); status != 200 {
		t.Fatalf("status %d", status)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v, want nil", err)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("Serve did not return within %s of its context's end", waitTimeout)
	}
}

// TestShutdownWithoutServe: the port is given back even when Serve never
// ran.
func TestShutdownWithoutServe(t *testing.T) {
	reg, err := NewRegistry(Sources{})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer("127.0.0.1:0", reg, nil)
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	again := NewServer(addr, reg, nil)
	if err := again.Listen(); err != nil {
		t.Fatalf("port not given back: %v", err)
	}
	_ = again.Shutdown(context.Background())
}
