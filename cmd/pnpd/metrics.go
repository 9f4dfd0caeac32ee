package main

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/pnpd/pnpd/ami"
	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/metrics"
	"github.com/pnpd/pnpd/pkg/netio"
	"github.com/pnpd/pnpd/pkg/pbx"
)

// version is pnpd's version, set at build time with
// -ldflags "-X main.version=1.2.3"; see pnpdVersion.
var version = "dev"

// pnpdVersion is version, or the module version `go install ...@v1.2.3`
// records when version was not set.
func pnpdVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}

// startMetrics serves the metrics of src on cfg.Listen until stop is
// called; with no listen it does nothing. A listen address that cannot be
// bound is an error naming [metrics] listen, so pnpd does not start.
func startMetrics(cfg config.Metrics, src metrics.Sources, log *slog.Logger) (stop func(context.Context), err error) {
	if cfg.Listen == "" {
		return func(context.Context) {}, nil
	}
	reg, err := metrics.NewRegistry(src)
	if err != nil {
		return nil, err
	}
	s := metrics.NewServer(cfg.Listen, reg, log)
	if err := s.Listen(); err != nil {
		return nil, fmt.Errorf("[metrics] listen = %q: %w", cfg.Listen, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Serve(ctx); err != nil {
			log.Error("metrics listener stopped", "err", err)
		}
	}()
	log.Info("metrics", "listen", s.Addr().String(), "path", "/metrics")
	return func(sctx context.Context) {
		if err := s.Shutdown(sctx); err != nil {
			log.Warn("metrics listener", "err", err)
		}
		cancel()
		<-done
	}, nil
}

// metricsListener describes l for the metrics, at scrape time.
func metricsListener(l *netio.Listener) metrics.ListenerStats {
	ifs := l.Interfaces()
	st := metrics.ListenerStats{Dropped: l.Dropped(), Mode: string(l.Mode()), Interfaces: make([]metrics.Interface, len(ifs))}
	for i, ifc := range ifs {
		st.Interfaces[i] = metrics.Interface{Name: ifc.Name(), Addr: ifc.Addr().String()}
	}
	return st
}

// metricsAMI is the state of link for the metrics; false without one.
func metricsAMI(link *amiLink) (ami.Status, bool) {
	if link == nil {
		return ami.Status{}, false
	}
	return link.c.Status(), true
}

// metricsPBX is px's counters for the metrics; nil without a PBX view.
func metricsPBX(px *pbx.PBX) *pbx.Stats {
	if px == nil {
		return nil
	}
	st := px.Stats()
	return &st
}
