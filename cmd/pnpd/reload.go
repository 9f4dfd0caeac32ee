package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
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

// parts is what one configuration builds beside the listener and the
// responder: the PBX link and view, the policy and the resolver. A reload
// builds new parts (taking over those whose settings did not change) and
// swaps them in at once.
type parts struct {
	cfg     *config.Config
	log     *slog.Logger
	link    *amiLink // nil without [ami]
	px      *pbx.PBX // nil without [ami]
	stopPBX func()
	pol     *policy.Policy
	stopPol context.CancelFunc // nil until started
	polDone chan struct{}
	res     resolve.Resolver
	// tokenSecret is the secret of {token} the policy was built with.
	tokenSecret []byte
}

// buildParts builds the parts of cfg, taking over from prev (nil at start)
// the AMI link when its address and credentials are the same, the PBX view
// when its settings are the same too, and the policy when its section is
// the same and it sits on the same PBX view (so its rate limits keep
// their state). Nothing of prev is stopped. On error nothing new is left
// running.
func buildParts(ctx context.Context, cfg *config.Config, prev *parts, log *slog.Logger) (_ *parts, err error) {
	p := &parts{cfg: cfg, log: log}
	// What can refuse the configuration comes first, before any link is
	// opened: the token secret is read now (and again by newPolicy), so
	// that a rotated secret is taken even when [policy] did not change.
	if f := cfg.Policy.TokenSecretFile; f != "" {
		if p.tokenSecret, err = policy.ReadSecret(f); err != nil {
			return nil, fmt.Errorf("[policy] token_secret_file: %w", err)
		}
	}
	defer func() {
		if err != nil {
			p.close(prev)
		}
	}()
	if cfg.AMI.Enabled {
		if prev != nil && prev.link != nil && sameLink(prev.cfg.AMI, cfg.AMI) {
			p.link = prev.link
		} else {
			p.link = startAMI(cfg.AMI, log)
		}
		if prev != nil && prev.px != nil && p.link == prev.link && samePBX(prev.cfg, cfg) {
			p.px, p.stopPBX = prev.px, prev.stopPBX
		} else {
			p.px, p.stopPBX = runPBX(cfg, p.link, log)
			// Start with the PBX's data when it answers soon; without
			// it, phones are answered from the file until it does.
			if !waitSnapshot(ctx, p.px, firstSnapshotWait) && ctx.Err() == nil {
				log.Warn("pbx: no snapshot yet: answering from the file's rules until the PBX answers",
					"ami", cfg.AMI.Username+"@"+cfg.AMI.Address, "err", errString(p.link.c.Status().Err),
					"hint", amiHint(p.link))
			}
		}
		p.res = resolve.NewChain(cfg.Resolve, p.px, cfg.AMI.Lookup)
	} else {
		p.res = resolve.NewStatic(cfg.Resolve)
	}
	if prev != nil && prev.pol != nil && prev.px == p.px && reflect.DeepEqual(prev.cfg.Policy, cfg.Policy) &&
		bytes.Equal(prev.tokenSecret, p.tokenSecret) {
		p.pol, p.stopPol, p.polDone = prev.pol, prev.stopPol, prev.polDone
	} else if p.pol, err = newPolicy(cfg, p.px, log); err != nil {
		return nil, err
	}
	return p, nil
}

// start runs what the parts need in the background that is not running
// yet: the policy's sweeps.
func (p *parts) start() {
	if p.stopPol != nil {
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	p.stopPol, p.polDone = stop, make(chan struct{})
	go func() {
		defer close(p.polDone)
		_ = p.pol.Serve(ctx)
	}()
}

// close stops what of p next does not take over (next nil: all of it).
// The PBX view's queued writes get flushGrace to reach the PBX first.
func (p *parts) close(next *parts) {
	if p.stopPol != nil && (next == nil || next.pol != p.pol) {
		p.stopPol()
		<-p.polDone
	}
	if p.px != nil && (next == nil || next.px != p.px) {
		fctx, cancel := context.WithTimeout(context.Background(), flushGrace)
		if err := p.px.Flush(fctx); err != nil {
			p.log.Warn("pbx writes not flushed", "err", err)
		}
		cancel()
		p.stopPBX()
	}
	if p.link != nil && (next == nil || next.link != p.link) {
		p.link.Close()
	}
}

// settings are the responder's settings for these parts.
func (p *parts) settings(allow []netip.Prefix) pnp.Settings {
	st := pnp.Settings{Resolver: p.pol.Resolver(p.res), Allow: allow, Policy: p.pol,
		MaxTransactions: p.cfg.Policy.MaxTransactions}
	if p.px != nil {
		st.Observer = p.px // never a nil *pbx.PBX in the interface
	}
	return st
}

// sameLink reports whether a and b log in to the same PBX as the same user.
func sameLink(a, b config.AMI) bool {
	return a.Address == b.Address && a.Username == b.Username && a.Secret == b.Secret
}

// samePBX reports whether b can keep a's PBX view: the same family (its
// snapshot, queued writes and overlay carry on). What else of the view a
// reload changes is set on it by configure.
func samePBX(a, b *config.Config) bool { return a.AMI.Family == b.AMI.Family }

// configure sets on a PBX view taken over what the new configuration
// changes of it.
func (p *parts) configure() {
	if p.px != nil {
		p.px.Configure(p.cfg.AMI.Refresh, p.cfg.AMI.Events, p.cfg.Policy.Once)
	}
}

// restartOnly names the keys a reload cannot change: they shape the
// sockets, which a running responder keeps.
func restartOnly(a, b *config.Config) []string {
	var keys []string
	add := func(changed bool, key string) {
		if changed {
			keys = append(keys, key)
		}
	}
	add(!reflect.DeepEqual(a.SIP.Interfaces, b.SIP.Interfaces), "sip.interfaces")
	add(a.SIP.Group != b.SIP.Group, "sip.group")
	add(a.SIP.Port != b.SIP.Port, "sip.port")
	add(a.SIP.Mode != b.SIP.Mode, "sip.mode")
	add(a.SIP.RealtimePriority != b.SIP.RealtimePriority, "sip.realtime_priority")
	add(a.Metrics != b.Metrics, "metrics.listen")
	// The queue's bound is its channel's: a new one would drop what
	// waits in the old.
	add(a.AMI.Enabled && b.AMI.Enabled && a.AMI.WriteQueue != b.AMI.WriteQueue, "ami.write_queue")
	return keys
}

// changedSections names the sections a reload changes, for its log line.
func changedSections(a, b *config.Config) []string {
	var s []string
	add := func(changed bool, name string) {
		if changed {
			s = append(s, name)
		}
	}
	add(!reflect.DeepEqual(a.SIP.Allow, b.SIP.Allow), "sip.allow")
	add(!reflect.DeepEqual(a.Resolve, b.Resolve), "resolve")
	add(!reflect.DeepEqual(a.AMI, b.AMI), "ami")
	add(!reflect.DeepEqual(a.Policy, b.Policy), "policy")
	return s
}

// daemon is the running responder's state that reloads and interface
// changes replace.
type daemon struct {
	path string // the configuration file ("" for the default one)
	log  *slog.Logger
	srv  *pnp.Server

	mu     sync.Mutex // serializes reloads and interface changes
	cur    *parts
	ifaces []*netio.Iface

	started                 time.Time
	reloads, reloadFailures atomic.Int64
	lastReloadOK            atomic.Pointer[time.Time] // when the configuration in use was loaded by a reload
	lastReloadErr           atomic.Pointer[string]    // nil when the latest reload took
}

// parts returns the parts in use.
func (d *daemon) parts() *parts {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cur
}

// metricsInfo is the daemon's facts for the metrics.
func (d *daemon) metricsInfo() metrics.Info {
	cfg := d.parts().cfg
	in := metrics.Info{Version: pnpdVersion(), ConfigPath: cfg.Path, Started: d.started,
		Reloads: d.reloads.Load(), ReloadFailures: d.reloadFailures.Load()}
	if t := d.lastReloadOK.Load(); t != nil {
		in.LastReload = *t
	}
	if e := d.lastReloadErr.Load(); e != nil {
		in.LastReloadError = *e
	}
	if cfg.AMI.Enabled {
		in.SnapshotRefresh = cfg.AMI.Refresh
	}
	return in
}

// allow is the subnets answered: [sip] allow, or those of the interfaces
// joined now.
func (d *daemon) allow() []netip.Prefix {
	if a := d.cur.cfg.SIP.Allow; len(a) > 0 {
		return a
	}
	if len(d.ifaces) == 0 {
		// For the responder an empty list answers any source: with no
		// interface left, answer none (0.0.0.0 is no phone's source)
		// until the next one is joined and announced.
		return []netip.Prefix{netip.PrefixFrom(netip.IPv4Unspecified(), 32)}
	}
	allow := make([]netip.Prefix, 0, len(d.ifaces))
	for _, i := range d.ifaces {
		allow = append(allow, i.Prefix().Masked())
	}
	return allow
}

// apply hands the current parts and allowed subnets to the responder.
// Call with d.mu held.
func (d *daemon) apply() { d.srv.Reconfigure(d.cur.settings(d.allow())) }

// interfacesChanged is the listener's OnChange: with the default allow
// list the subnets answered follow the interfaces.
func (d *daemon) interfacesChanged(ifaces []*netio.Iface) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ifaces = append([]*netio.Iface(nil), ifaces...)
	d.apply()
	d.log.Info("interfaces changed", "interfaces", ifaceList(ifaces), "allow", prefixes(d.srv.Allow()))
}

// reload reads the configuration file again and applies it whole, or
// refuses it (a bad file, a key only a restart can change, a part that
// cannot be built) and keeps the running one.
func (d *daemon) reload(ctx context.Context) {
	err := d.tryReload(ctx)
	if err != nil {
		d.reloadFailures.Add(1)
		msg := err.Error()
		d.lastReloadErr.Store(&msg)
		d.log.Error("reload refused: the running configuration stays", "err", err)
		return
	}
	d.reloads.Add(1)
	d.lastReloadErr.Store(nil)
	now := time.Now()
	d.lastReloadOK.Store(&now)
}

func (d *daemon) tryReload(ctx context.Context) error {
	d.log.Info("reloading the configuration", "file", configName(d.path))
	cfg, err := loadConfig(d.path, d.log)
	if err != nil {
		return err
	}
	d.mu.Lock()
	old := d.cur
	d.mu.Unlock()
	if keys := restartOnly(old.cfg, cfg); len(keys) > 0 {
		return fmt.Errorf("%s changed: only a restart applies it (systemctl restart pnpd)", strings.Join(keys, ", "))
	}
	// Built outside the lock: a new AMI link waits up to a few seconds
	// for its first snapshot, and interface changes go on meanwhile.
	next, err := buildParts(ctx, cfg, old, d.log)
	if err != nil {
		return err
	}
	next.start()
	next.configure()
	d.mu.Lock()
	d.cur = next
	d.apply()
	d.mu.Unlock()
	old.close(next)
	changed := changedSections(old.cfg, cfg)
	if len(changed) == 0 {
		changed = []string{"nothing"}
	}
	d.log.Info("config reloaded", "changed", strings.Join(changed, ","), "rules", len(cfg.Resolve.Rules),
		"default", resolve.Redact(cfg.Resolve.Default), "pbx", pbxName(cfg.AMI), "policy", policySummary(cfg.Policy),
		"allow", prefixes(d.srv.Allow()))
	warnObserve(cfg, d.log)
	return nil
}

func configName(path string) string {
	if path == "" {
		return config.DefaultPath
	}
	return path
}

func ifaceList(ifaces []*netio.Iface) string {
	names := make([]string, 0, len(ifaces))
	for _, i := range ifaces {
		names = append(names, i.Name()+"="+i.Addr().String())
	}
	return strings.Join(names, ",")
}

// observeMode reports whether cfg answers no phone at all.
func observeMode(cfg *config.Config) bool {
	return cfg.Resolve.Default == "" && len(cfg.Resolve.Rules) == 0 && !cfg.AMI.Enabled ||
		len(cfg.Resolve.Rules) == 0 && !cfg.AMI.Enabled && cfg.Policy.Unknown == "observe"
}

// warnObserve says so when cfg answers no phone.
func warnObserve(cfg *config.Config, log *slog.Logger) {
	switch {
	case observeMode(cfg) && cfg.Resolve.Default != "":
		log.Warn("observe mode: [policy] unknown = \"observe\" withholds the default, and there are no rules and no [ami], so no phone is answered")
	case observeMode(cfg):
		log.Warn("observe mode: no [resolve] default, no rules and no [ami], so no phone is answered")
	}
}

// amiHint says what to check when the AMI login does not work.
func amiHint(l *amiLink) string {
	var refused *ami.Error
	switch err := l.c.Status().Err; {
	case err == nil:
		return ""
	case errors.As(err, &refused):
		return "Asterisk refused the login: check [ami] username and secret against the user's secret= in manager.conf, and that its permit= covers this host; pnpd keeps trying"
	default:
		return "check that Asterisk runs and that manager.conf has enabled = yes with bindaddr and port matching [ami] address; pnpd keeps trying"
	}
}
