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
	"sync"
	"syscall"
	"time"

	"github.com/pnpd/pnpd/ami"
	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/metrics"
	"github.com/pnpd/pnpd/pkg/netio"
	"github.com/pnpd/pnpd/pkg/pbx"
	"github.com/pnpd/pnpd/pkg/pnp"
	"github.com/pnpd/pnpd/pkg/policy"
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
	// SIGHUP reloads; caught from the start, as its default would end
	// pnpd.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := loadConfig(*cfgPath, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return serve(ctx, cfg, *cfgPath, hup, log)
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

// serve runs the responder until ctx is done; each value on hup reloads
// the configuration from path.
func serve(ctx context.Context, cfg *config.Config, path string, hup <-chan os.Signal, log *slog.Logger) error {
	chosen, skipped, err := netio.Choose(cfg.SIP.Interfaces)
	if err != nil {
		return err
	}
	for _, s := range skipped {
		log.Debug("interface passed over", "why", s)
	}
	cur, err := buildParts(ctx, cfg, nil, log)
	if err != nil {
		return err
	}
	if path == "" {
		// Started from the default file: a reload reads that file, and
		// refuses its absence rather than fall back to observe mode.
		path = cfg.Path
	}
	d := &daemon{path: path, log: log, cur: cur, started: time.Now()}
	closeParts := sync.OnceValue(func() *parts {
		d.mu.Lock()
		last := d.cur
		d.mu.Unlock()
		last.close(nil)
		return last
	})
	defer closeParts()
	// The responder exists before the listener, whose interface changes
	// reconfigure it.
	d.srv = pnp.NewServer(pnp.Config{Logger: log, Resolver: cur.res})
	l, err := listen(ctx, cfg, chosen, cur.link, d.interfacesChanged, log)
	if err != nil {
		return err
	}
	defer l.Close()
	d.mu.Lock()
	d.ifaces = l.Interfaces()
	d.apply()
	d.mu.Unlock()
	stopMetrics, err := startMetrics(cfg.Metrics, metrics.Sources{
		Server:   d.srv.Stats,
		Listener: func() metrics.ListenerStats { return metricsListener(l) },
		Policy:   func() policy.Stats { return d.parts().pol.Stats() },
		PBX:      func() *pbx.Stats { return metricsPBX(d.parts().px) },
		AMI:      func() (ami.Status, bool) { return metricsAMI(d.parts().link) },
		Info:     d.metricsInfo,
	}, log)
	if err != nil {
		return err
	}
	defer func() {
		mctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		stopMetrics(mctx)
	}()
	cur.start()
	srvCtx, srvStop := context.WithCancel(context.Background())
	defer srvStop()
	srv := d.srv
	go srv.Serve(srvCtx)
	lctx, lstop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- l.Serve(lctx, netio.HandlerFunc(func(d netio.Datagram) {
			srv.Handle(pnp.Packet{Data: d.Data, Src: d.Src, Group: d.Group, Port: d.Iface})
		}))
	}()

	log.Info("ready", "mode", string(l.Mode()), "group", cfg.SIP.Group.String(), "interfaces", ifaceList(l.Interfaces()),
		"allow", prefixes(srv.Allow()), "rules", len(cfg.Resolve.Rules), "default", resolve.Redact(cfg.Resolve.Default),
		"pbx", pbxName(cfg.AMI), "observe", observeMode(cfg), "policy", policySummary(cfg.Policy))
	warnObserve(cfg, log)

	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-hup:
			d.reload(ctx)
		case err := <-served:
			lstop()
			return fmt.Errorf("listener stopped: %w", err)
		}
	}
	log.Info("shutting down", "grace", shutdownGrace.String())
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown", "err", err)
	}
	// The outcomes of the last exchanges, aborted ones too, get a budget
	// of their own (flushGrace) to reach the PBX.
	last := closeParts()
	lstop()
	<-served
	st := srv.Stats()
	attrs := []any{"datagrams", st.Datagrams, "dropped_by_listener", l.Dropped(), "subscribes", st.Subscribes,
		"outcomes", fmt.Sprint(st.Outcomes), "dropped", fmt.Sprint(st.Dropped), "refused", fmt.Sprint(last.pol.Stats().Refused)}
	if last.px != nil {
		ps := last.px.Stats()
		attrs = append(attrs, "pbx_written", ps.Written, "pbx_lost", ps.Overflows+ps.WriteErrors, "pbx_unsent", ps.QueueDepth,
			"pbx_replayed", ps.Replayed)
	}
	log.Info("stopped", attrs...)
	return nil
}

// listen opens the listener in the configured mode, choosing it when the
// mode is auto; link, when not nil, lets auto ask the PBX.
func listen(ctx context.Context, cfg *config.Config, chosen []netio.Candidate, link *amiLink, onChange func([]*netio.Iface), log *slog.Logger) (*netio.Listener, error) {
	host, err := netio.ProbeHost(cfg.SIP.Group)
	if err != nil {
		log.Warn("cannot tell who holds the group's port: auto will not take it", "err", err)
	}
	host.PBXHere = cfg.AMI.Enabled && pbxOnThisHost(cfg.AMI.Address)
	// The interfaces are followed as they come and go (a VLAN interface
	// created after pnpd, a USB NIC plugged again), by the rule that chose
	// them at start.
	lc := netio.Config{Group: cfg.SIP.Group, Interfaces: chosen, Port: cfg.SIP.Port, Logger: log, Priority: cfg.SIP.RealtimePriority,
		Watch: true, Names: cfg.SIP.Interfaces, OnChange: onChange}
	choice := netio.Choice{Mode: netio.Mode(cfg.SIP.Mode), Why: "configured"}
	if choice.Mode == netio.ModeAuto {
		if link != nil && host.PBXHere && link.c.Status().State == ami.Connected {
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			loaded, err := pbx.SIPLoaded(actx, link.c)
			cancel()
			if err != nil {
				log.Debug("pbx: cannot tell whether SIP is loaded", "err", err)
			} else {
				host.PBXSIP = &loaded
			}
		}
		if choice, err = netio.ChooseMode(host); err != nil {
			return nil, err
		}
	}
	if cfg.SIP.Mode == string(netio.ModeBind) {
		if verdict, why := netio.BindVerdict(host); verdict == netio.BindRisky {
			log.Warn("bind mode holds the group's port beside a PBX: "+why, "hint", "use [sip] mode = \"auto\" or \"packet\", or bind the PBX's SIP transport to a unicast address")
		}
	}
	lc.Mode = choice.Mode
	l, err := netio.Listen(lc)
	if err != nil && cfg.SIP.Mode == string(netio.ModeAuto) && choice.Mode == netio.ModePacket && !errors.Is(err, os.ErrPermission) {
		log.Warn("packet mode failed: trying raw mode", "err", err)
		choice = netio.Choice{Mode: netio.ModeRaw,
			Why:    "packet mode failed (" + err.Error() + "), so raw mode, which holds nothing on the port but lets a PBX on the wildcard address see the SUBSCRIBEs; packet was chosen because " + choice.Why,
			Better: "make packet mode work: " + err.Error()}
		lc.Mode = choice.Mode
		l, err = netio.Listen(lc)
	}
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) && lc.Mode == netio.ModeBind {
			hint := "set [sip] mode = \"auto\" or \"packet\" to receive beside it"
			if cfg.SIP.Mode == string(netio.ModeAuto) {
				hint = "it was taken after pnpd looked; start pnpd again, or set [sip] mode = \"packet\""
			}
			return nil, fmt.Errorf("%w (held by: %s); %s", err, holders(host.Holders), hint)
		}
		return nil, err
	}
	log.Info("sip mode", "mode", string(choice.Mode), "why", choice.Why, "better", choice.Better, "rt_priority", lc.Priority)
	if choice.Mode != netio.ModePacket {
		for _, h := range host.Holders {
			if h.Wildcard() {
				log.Warn("the PBX receives the phones' SUBSCRIBEs too and answers them (401): fail2ban's asterisk jails may ban phones",
					"holder", h.String(), "hint", "use [sip] mode = \"packet\", or bind the PBX's SIP transport to a unicast address")
			}
		}
	}
	return l, nil
}

func holders(hs []netio.Holder) string {
	if len(hs) == 0 {
		return "unknown"
	}
	s := make([]string, len(hs))
	for i, h := range hs {
		s[i] = h.String()
	}
	return strings.Join(s, ", ")
}

// firstSnapshotWait bounds how long serve waits for the PBX's data before
// it starts answering.
const firstSnapshotWait = 3 * time.Second

// flushGrace bounds how long SIGTERM waits for the PBX writes still queued.
const flushGrace = 2 * time.Second

func pbxName(c config.AMI) string {
	if !c.Enabled {
		return "none"
	}
	return c.Username + "@" + c.Address + " family " + c.Family
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func prefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
