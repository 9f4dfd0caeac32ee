package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/netio"
	"github.com/pnpd/pnpd/pkg/pnp"
	"github.com/pnpd/pnpd/pkg/resolve"
)

// shutdownGrace bounds how long SIGTERM waits for NOTIFYs in flight.
const shutdownGrace = 5 * time.Second

func serveCmd(args []string, stderr io.Writer) error {
	fs := newFlagSet("serve", stderr)
	cfgPath := fs.String("config", "", "configuration file (default "+config.DefaultPath+" if it exists)")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return serve(ctx, cfg, log)
}

// loadConfig reads the named file, or the default one when it exists, or
// returns the observe-only configuration.
func loadConfig(path string, log *slog.Logger) (*config.Config, error) {
	if path == "" {
		if _, err := os.Stat(config.DefaultPath); errors.Is(err, fs.ErrNotExist) {
			log.Warn("no configuration file: observe mode, phones are logged and not answered",
				"hint", "write "+config.DefaultPath+" (or pass -config FILE) with a [resolve] default URL or [[resolve.rule]] entries; see README and examples/pnpd.toml")
			return config.Default(), nil
		}
		path = config.DefaultPath
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	for _, w := range cfg.Warnings {
		log.Warn("config", "warning", w)
	}
	return cfg, nil
}

// serve runs the responder until ctx is done.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	chosen, skipped, err := netio.Choose(cfg.SIP.Interfaces)
	if err != nil {
		return err
	}
	for _, s := range skipped {
		log.Debug("interface passed over", "why", s)
	}
	l, err := netio.Listen(netio.Config{Group: cfg.SIP.Group, Interfaces: chosen, Port: cfg.SIP.Port, Logger: log})
	if err != nil {
		return err
	}
	defer l.Close()

	allow := cfg.SIP.Allow
	if len(allow) == 0 {
		for _, c := range chosen {
			allow = append(allow, c.Prefix.Masked())
		}
	}
	srv := pnp.NewServer(pnp.Config{Resolver: resolve.NewStatic(cfg.Resolve), Allow: allow, Logger: log})

	srvCtx, srvStop := context.WithCancel(context.Background())
	defer srvStop()
	go srv.Serve(srvCtx)
	lctx, lstop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- l.Serve(lctx, netio.HandlerFunc(func(d netio.Datagram) {
			srv.Handle(pnp.Packet{Data: d.Data, Src: d.Src, Group: d.Group, Port: d.Iface})
		}))
	}()

	observe := cfg.Resolve.Default == "" && len(cfg.Resolve.Rules) == 0
	names := make([]string, 0, len(chosen))
	for _, i := range l.Interfaces() {
		names = append(names, i.Name()+"="+i.Addr().String())
	}
	log.Info("ready", "group", cfg.SIP.Group.String(), "interfaces", strings.Join(names, ","),
		"allow", prefixes(allow), "rules", len(cfg.Resolve.Rules), "default", resolve.Redact(cfg.Resolve.Default), "observe", observe)
	if observe {
		log.Warn("observe mode: no [resolve] default and no rules, so no phone is answered")
	}

	select {
	case <-ctx.Done():
	case err := <-served:
		lstop()
		return fmt.Errorf("listener stopped: %w", err)
	}
	log.Info("shutting down", "grace", shutdownGrace.String())
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown", "err", err)
	}
	lstop()
	<-served
	st := srv.Stats()
	log.Info("stopped", "datagrams", st.Datagrams, "dropped_by_listener", l.Dropped(), "subscribes", st.Subscribes, "outcomes", fmt.Sprint(st.Outcomes), "dropped", fmt.Sprint(st.Dropped))
	return nil
}

func prefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
