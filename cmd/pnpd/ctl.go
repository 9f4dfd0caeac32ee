package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pnpd/pnpd/ami"
	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/pbx"
	"github.com/pnpd/pnpd/pkg/phone"
	"github.com/pnpd/pnpd/pkg/resolve"
)

const ctlUsage = `usage: pnpd ctl [-config FILE] [-timeout D] COMMAND

commands (each change is followed by the UserEvent PnpReload, so every
pnpd of the site takes a new snapshot):
  assign MAC TENANT     the phone belongs to TENANT (or gets TENANT itself when it is a URL)
  unassign MAC          forget the phone's assignment
  tenant set NAME URL   set a tenant's URL template
  tenant list           the tenants and their URLs (credentials hidden)
  list                  assignments joined with what pnpd saw of each phone
  reload                ask every pnpd for a new snapshot
`

func ctlCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ctl", stderr)
	cfgPath := fs.String("config", "", "configuration file (default "+config.DefaultPath+")")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on the whole command")
	fs.Usage = func() { fmt.Fprint(stderr, ctlUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	rest := fs.Args()
	op, err := parseCtl(rest)
	if err != nil {
		return fmt.Errorf("%w: %v\n%s", errUsage, err, ctlUsage)
	}
	log, _ := newLogger(stderr, "error")
	path := *cfgPath
	if path == "" {
		path = config.DefaultPath
	}
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	if !cfg.AMI.Enabled {
		return errNoAMI
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	link := startAMI(cfg.AMI, log)
	defer link.Close()
	if err := link.login(ctx, cfg.AMI); err != nil {
		return err
	}
	return op(ctx, &ctl{c: link.c, family: cfg.AMI.Family, out: stdout, warn: stderr})
}

// ctl is the state of one ctl command.
type ctl struct {
	c      *ami.Client
	family string
	out    io.Writer
	warn   io.Writer
}

type ctlOp func(ctx context.Context, c *ctl) error

// parseCtl checks the command line before anything is sent.
func parseCtl(args []string) (ctlOp, error) {
	want := func(n int) error {
		if len(args) != n {
			return fmt.Errorf("%q takes %d argument(s), got %d", strings.Join(args[:min(len(args), 2)], " "), n-1, len(args)-1)
		}
		return nil
	}
	if len(args) == 0 {
		return nil, errors.New("no command")
	}
	switch args[0] {
	case "assign":
		if err := want(3); err != nil {
			return nil, err
		}
		mac, ok := phone.NormalizeMAC(args[1])
		if !ok {
			return nil, fmt.Errorf("%q is not a MAC address (12 hex digits)", args[1])
		}
		value := strings.TrimSpace(args[2])
		if err := checkAssignValue(value); err != nil {
			return nil, err
		}
		return func(ctx context.Context, c *ctl) error { return c.assign(ctx, mac, value) }, nil
	case "unassign":
		if err := want(2); err != nil {
			return nil, err
		}
		mac, ok := phone.NormalizeMAC(args[1])
		if !ok {
			return nil, fmt.Errorf("%q is not a MAC address (12 hex digits)", args[1])
		}
		return func(ctx context.Context, c *ctl) error { return c.unassign(ctx, mac) }, nil
	case "tenant":
		if len(args) < 2 {
			return nil, errors.New("tenant: want \"tenant set NAME URL\" or \"tenant list\"")
		}
		switch args[1] {
		case "set":
			if len(args) != 4 {
				return nil, errors.New("tenant set takes NAME URL")
			}
			name, url := args[2], strings.TrimSpace(args[3])
			if err := checkTenantName(name); err != nil {
				return nil, err
			}
			if !strings.Contains(url, "://") {
				return nil, fmt.Errorf("%q is not a URL (scheme://host/...)", url)
			}
			if err := config.CheckTemplate(url); err != nil {
				return nil, err
			}
			if config.HasControl(url) {
				return nil, errors.New("the URL holds control characters")
			}
			return func(ctx context.Context, c *ctl) error { return c.tenantSet(ctx, name, url) }, nil
		case "list":
			if len(args) != 2 {
				return nil, errors.New("tenant list takes no arguments")
			}
			return func(ctx context.Context, c *ctl) error { return c.tenantList(ctx) }, nil
		}
		return nil, fmt.Errorf("tenant %q: want set or list", args[1])
	case "list":
		if err := want(1); err != nil {
			return nil, err
		}
		return func(ctx context.Context, c *ctl) error { return c.list(ctx) }, nil
	case "reload":
		if err := want(1); err != nil {
			return nil, err
		}
		return func(ctx context.Context, c *ctl) error { return sendReload(ctx, c.c) }, nil
	}
	return nil, fmt.Errorf("unknown command %q", args[0])
}

func checkTenantName(name string) error {
	if name == "" || strings.ContainsAny(name, "/ \t") || config.HasControl(name) || strings.Contains(name, "://") {
		return fmt.Errorf("%q is not a tenant name (no '/', no spaces)", name)
	}
	return nil
}

func checkAssignValue(v string) error {
	if strings.Contains(v, "://") {
		if config.HasControl(v) {
			return errors.New("the URL holds control characters")
		}
		return config.CheckTemplate(v)
	}
	return checkTenantName(v)
}

func (c *ctl) assign(ctx context.Context, mac, value string) error {
	if !strings.Contains(value, "://") {
		// Assigning to a tenant without a URL is allowed (the URL may
		// follow), but the phone would fail until then: say so.
		keys, err := c.c.DBGetTree(ctx, c.family, resolve.KeyTenant+value)
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			fmt.Fprintf(c.warn, "warning: tenant %q has no URL (%s/%s): its phones fail until \"pnpd ctl tenant set %s URL\"\n",
				value, c.family, resolve.TenantKey(value, ""), value)
		}
	}
	if err := c.c.DBPut(ctx, c.family, resolve.MACKey(mac), value); err != nil {
		return err
	}
	return c.changed(ctx)
}

func (c *ctl) unassign(ctx context.Context, mac string) error {
	if err := c.c.DBDel(ctx, c.family, resolve.MACKey(mac)); err != nil {
		return fmt.Errorf("%s/%s: %w", c.family, resolve.MACKey(mac), err)
	}
	return c.changed(ctx)
}

func (c *ctl) tenantSet(ctx context.Context, name, url string) error {
	if err := c.c.DBPut(ctx, c.family, resolve.TenantKey(name, ""), url); err != nil {
		return err
	}
	return c.changed(ctx)
}

// changed announces a change to every pnpd. When that fails the change
// itself is made: the error says so.
func (c *ctl) changed(ctx context.Context) error {
	if err := sendReload(ctx, c.c); err != nil {
		return fmt.Errorf("the change is made, but %w: every pnpd takes it within its [ami] refresh, or run \"pnpd ctl reload\"", err)
	}
	return nil
}

func (c *ctl) read(ctx context.Context) (*resolve.Snapshot, map[string]string, error) {
	entries, err := c.c.DBGetTree(ctx, c.family, "")
	if err != nil {
		return nil, nil, err
	}
	s := pbx.SnapshotOf(entries)
	seen := map[string]string{}
	for _, e := range entries {
		if mac, ok := strings.CutPrefix(e.Key, resolve.KeySeen); ok {
			if m, ok := phone.NormalizeMAC(mac); ok {
				seen[m] = e.Value
			}
		}
	}
	return s, seen, nil
}

func (c *ctl) tenantList(ctx context.Context) error {
	s, _, err := c.read(ctx)
	if err != nil {
		return err
	}
	count := map[string]int{}
	for _, v := range s.MACs {
		count[v]++
	}
	names := make([]string, 0, len(s.Tenants))
	for n := range s.Tenants {
		names = append(names, n)
	}
	for n := range count {
		if s.Tenants[n] == nil && !strings.Contains(n, "://") {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tPHONES\tURL")
	for _, n := range names {
		t := s.Tenants[n]
		u := "(none: its phones fail)"
		if t != nil && t.URL != "" {
			u = resolve.Redact(t.URL)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", n, count[n], u)
		if t != nil {
			brands := make([]string, 0, len(t.Brands))
			for b := range t.Brands {
				brands = append(brands, b)
			}
			slices.Sort(brands)
			for _, b := range brands {
				fmt.Fprintf(tw, "%s/%s\t\t%s\n", n, b, resolve.Redact(t.Brands[b]))
			}
		}
	}
	if s.Default != "" {
		fmt.Fprintf(tw, "(default)\t\t%s\n", resolve.Redact(s.Default))
	}
	return tw.Flush()
}

func (c *ctl) list(ctx context.Context) error {
	s, seen, err := c.read(ctx)
	if err != nil {
		return err
	}
	macs := make([]string, 0, len(s.MACs)+len(seen))
	for m := range s.MACs {
		macs = append(macs, m)
	}
	for m := range seen {
		if _, ok := s.MACs[m]; !ok {
			macs = append(macs, m)
		}
	}
	slices.SortFunc(macs, cmp.Compare)
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MAC\tASSIGNED\tSEEN\tOUTCOME\tBRAND\tMODEL\tFIRMWARE\tSOURCE\tHOST")
	for _, m := range macs {
		assigned := s.MACs[m]
		switch {
		case assigned == "":
			assigned = "-"
		case strings.Contains(assigned, "://"):
			assigned = "url " + pbx.URLHost(assigned)
		}
		rec, _ := pbx.ParseSeen(seen[m])
		dash := func(k string) string {
			if v := rec.Get(k); v != "" {
				return v
			}
			return "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m, assigned, dash("time"), dash("outcome"),
			dash("brand"), dash("model"), dash("firmware"), dash("source"), dash("host"))
	}
	return tw.Flush()
}
