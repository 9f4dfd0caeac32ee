package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/pnpd/pnpd/pkg/pbx"
	"github.com/pnpd/pnpd/pkg/phone"
	"github.com/pnpd/pnpd/pkg/resolve"
)

func resolveCmd(args []string, stdout, stderr io.Writer) (int, error) {
	fs := newFlagSet("resolve", stderr)
	cfgPath := fs.String("config", "", "configuration file (default /etc/pnpd/pnpd.toml if it exists)")
	mac := fs.String("mac", "", "the phone's MAC address (required)")
	vendor := fs.String("vendor", "", "brand: "+strings.Join(phone.Brands(), " "))
	model := fs.String("model", "", "model")
	version := fs.String("version", "", "firmware version")
	ip := fs.String("ip", "", "the phone's IPv4 address")
	iface := fs.String("iface", "", "interface the phone is on")
	if err := parseFlags(fs, args); err != nil {
		return 0, err
	}
	req := resolve.Request{Model: *model, Version: *version, Interface: *iface}
	if *mac == "" {
		return 0, fmt.Errorf("%w: -mac is required", errUsage)
	}
	m, ok := phone.NormalizeMAC(*mac)
	if !ok {
		return 0, fmt.Errorf("%w: -mac %q is not a MAC address", errUsage, *mac)
	}
	req.MAC = m
	if *vendor != "" {
		req.Brand = strings.ToLower(*vendor)
		if !phone.IsBrand(req.Brand) {
			fmt.Fprintf(stderr, "warning: %q is not a brand pnpd identifies (%s)\n", *vendor, strings.Join(phone.Brands(), " "))
		}
	} else {
		req.Brand = phone.OUIBrand(m)
	}
	if *ip != "" {
		a, err := netip.ParseAddr(*ip)
		if err != nil || !a.Is4() {
			return 0, fmt.Errorf("%w: -ip %q is not an IPv4 address", errUsage, *ip)
		}
		req.IP = a
	}
	log, _ := newLogger(stderr, "warn")
	cfg, err := loadConfig(*cfgPath, log)
	if err != nil {
		return 0, err
	}
	var res resolve.Resolver = resolve.NewStatic(cfg.Resolve)
	ctx := context.Background()
	var px *pbx.PBX
	if cfg.AMI.Enabled {
		// The PBX as serve sees it: a snapshot, then questions for what
		// it lacks. Without a login the trace says the PBX was down.
		link := startAMI(cfg.AMI, log)
		defer link.Close()
		if err := link.login(ctx, cfg.AMI); err != nil {
			fmt.Fprintf(stderr, "warning: %v: deciding without the PBX\n", err)
		}
		var stopPBX func()
		px, stopPBX = runPBX(cfg, link, log)
		defer stopPBX()
		if px.Live() && !waitSnapshot(ctx, px, loginTimeout) {
			fmt.Fprintln(stderr, "warning: no snapshot of the PBX's family in time")
		}
		res = resolve.NewChain(cfg.Resolve, px, cfg.AMI.Lookup)
	}
	pol, err := newPolicy(cfg, px, log)
	if err != nil {
		return 0, err
	}
	fmt.Fprintf(stderr, "phone: mac=%s brand=%s model=%s version=%s ip=%s iface=%s\n", req.MAC, req.Brand, req.Model, req.Version, *ip, req.Interface)
	// The policy's checks first, as serve makes them before the URL.
	trace, refusal := pol.Explain(req, time.Now())
	for _, t := range trace {
		fmt.Fprintln(stderr, "  "+t)
	}
	if refusal.Refused() {
		fmt.Fprintf(stderr, "decided by: policy: refused (%s): the phone is not answered\n", refusal)
		return 1, nil
	}
	d, err := pol.Resolver(res).Resolve(ctx, req)
	for _, t := range d.Trace {
		fmt.Fprintln(stderr, "  "+resolve.Redact(t))
	}
	if err != nil {
		if d.Source != "" {
			fmt.Fprintf(stderr, "decided by: %s: failure: the phone gets no NOTIFY\n", d.Source)
		}
		return 0, err
	}
	switch {
	case d.Pending:
		fmt.Fprintf(stderr, "decided by: %s: the phone would be recorded as pending, not answered\n", d.Source)
		return 1, nil
	case d.URL == "" && d.Source != "":
		fmt.Fprintf(stderr, "decided by: %s: this phone would be observed, not answered\n", d.Source)
		return 1, nil
	case d.URL == "":
		fmt.Fprintln(stderr, "decided by: nothing: this phone would be observed, not answered")
		return 1, nil
	}
	fmt.Fprintln(stdout, d.URL)
	fmt.Fprintf(stderr, "decided by: %s\n", d.Source)
	return 0, nil
}
