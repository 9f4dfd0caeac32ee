package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/metrics"
)

func TestStartMetrics(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	stop, err := startMetrics(config.Metrics{}, metrics.Sources{}, log)
	if err != nil || stop == nil {
		t.Fatalf("off: %v", err)
	}
	stop(context.Background())

	// A port in use: the error names the key.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	taken := ln.Addr().String()
	if _, err := startMetrics(config.Metrics{Listen: taken}, metrics.Sources{}, log); err == nil ||
		!strings.HasPrefix(err.Error(), `[metrics] listen = "`+taken+`": `) || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("taken port: %v", err)
	}
	ln.Close()

	// Served, then stopped: the port is given back.
	info := func() metrics.Info { return metrics.Info{Version: pnpdVersion(), Started: time.Now()} }
	stop, err = startMetrics(config.Metrics{Listen: taken}, metrics.Sources{Info: info}, log)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + taken + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `pnpd_info{config="",mode="",version="`+pnpdVersion()+`"} 1`) {
		t.Errorf("no pnpd_info in:\n%s", body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stop(ctx)
	ln, err = net.Listen("tcp", taken)
	if err != nil {
		t.Fatalf("port not given back after stop: %v", err)
	}
	ln.Close()
}
