package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/url"
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

approval, window and once ([policy] unknown = "approve", window, once):
  pending               the phones waiting for approval
  approve MAC TENANT    assign the phone (as assign) and take it off the pending list
  window open DURATION  answer phones from now for DURATION (e.g. 2h; at most 168h)
  window close          end the provisioning window now
  window [status]       whether the provisioning window is open, and until when
  rearm MAC             answer a phone provisioned under once again
`

// maxWindow bounds "window open": a window forgotten open is the hostile
// LAN's chance.
const maxWindow = 7 * 24 * time.Hour

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
	return op(ctx, &ctl{c: link.c, family: cfg.AMI.Family, policy: cfg.Policy, path: path, out: stdout, warn: stderr})
}

// ctl is the state of one ctl command.
type ctl struct {
	c      *ami.Client
	family string
	policy config.Policy // of the configuration file, for notes
	path   string        // the configuration file
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
	case "assign", "approve":
		if err := want(3); err != nil {
			return nil, err
		}
		mac, err := parseMAC(args[1])
		if err != nil {
			return nil, err
		}
		value := strings.TrimSpace(args[2])
		if err := checkAssignValue(value); err != nil {
			return nil, err
		}
		if args[0] == "approve" {
			return func(ctx context.Context, c *ctl) error { return c.approve(ctx, mac, value) }, nil
		}
		return func(ctx context.Context, c *ctl) error { return c.assign(ctx, mac, value) }, nil
	case "unassign", "rearm":
		if err := want(2); err != nil {
			return nil, err
		}
		mac, err := parseMAC(args[1])
		if err != nil {
			return nil, err
		}
		if args[0] == "rearm" {
			return func(ctx context.Context, c *ctl) error { return c.rearm(ctx, mac) }, nil
		}
		return func(ctx context.Context, c *ctl) error { return c.unassign(ctx, mac) }, nil
	case "pending":
		if err := want(1); err != nil {
			return nil, err
		}
		return func(ctx context.Context, c *ctl) error { return c.pending(ctx) }, nil
	case "window":
		return parseWindow(args[1:])
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

func parseMAC(s string) (string, error) {
	mac, ok := phone.NormalizeMAC(s)
	if !ok {
		return "", fmt.Errorf("%q is not a MAC address (12 hex digits)", s)
	}
	return mac, nil
}

// parseWindow checks the arguments of "window".
func parseWindow(args []string) (ctlOp, error) {
	if len(args) == 0 || (args[0] == "status" && len(args) == 1) {
		return func(ctx context.Context, c *ctl) error { return c.windowStatus(ctx) }, nil
	}
	switch args[0] {
	case "open":
		if len(args) != 2 {
			return nil, errors.New("window open takes DURATION (e.g. 2h)")
		}
		d, err := time.ParseDuration(args[1])
		if err != nil {
			return nil, fmt.Errorf("window open: %q is not a duration (e.g. 30m, 2h, 72h)", args[1])
		}
		if d <= 0 || d > maxWindow {
			return nil, fmt.Errorf("window open: %s is out of range: more than 0, at most 168h (7 days)", args[1])
		}
		return func(ctx context.Context, c *ctl) error { return c.windowOpen(ctx, d) }, nil
	case "close":
		if len(args) != 1 {
			return nil, errors.New("window close takes no arguments")
		}
		return func(ctx context.Context, c *ctl) error { return c.windowClose(ctx) }, nil
	case "status":
		return nil, errors.New("window status takes no arguments")
	}
	return nil, fmt.Errorf("window %q: want open DURATION, close or status", args[0])
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
	if err := c.put(ctx, mac, value); err != nil {
		return err
	}
	return c.changed(ctx)
}

// put writes mac/<mac>, warning of a tenant without URL.
func (c *ctl) put(ctx context.Context, mac, value string) error {
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
	return c.c.DBPut(ctx, c.family, resolve.MACKey(mac), value)
}

// approve assigns the phone, then takes it off the pending list: in that
// order, so that a failure in between leaves an assigned phone (answered)
// rather than a phone neither pending nor assigned.
func (c *ctl) approve(ctx context.Context, mac, value string) error {
	if err := c.put(ctx, mac, value); err != nil {
		return err
	}
	err := c.c.DBDel(ctx, c.family, resolve.PendingKey(mac))
	switch {
	case errors.Is(err, ami.ErrNotFound):
		fmt.Fprintf(c.warn, "warning: %s was not pending; assigned anyway\n", mac)
	case err != nil:
		err = fmt.Errorf("the phone is assigned, but %s/%s is left: %w", c.family, resolve.PendingKey(mac), err)
		if rerr := c.changed(ctx); rerr != nil {
			return errors.Join(err, rerr)
		}
		return err
	}
	return c.changed(ctx)
}

// pending lists the phones waiting for approval.
func (c *ctl) pending(ctx context.Context) error {
	entries, err := c.c.DBGetTree(ctx, c.family, strings.TrimSuffix(resolve.KeyPending, "/"))
	if err != nil {
		return err
	}
	s := pbx.SnapshotOf(entries)
	if len(s.Pending) == 0 {
		fmt.Fprintln(c.warn, "no phones are waiting for approval")
		return nil
	}
	if c.policy.Unknown != "approve" {
		fmt.Fprintf(c.warn, "note: [policy] unknown = %q in %s: no new phones are recorded\n", c.policy.Unknown, c.path)
	}
	macs := slices.Sorted(maps.Keys(s.Pending))
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MAC\tSINCE\tBRAND\tMODEL\tFIRMWARE\tSOURCE\tINTERFACE")
	for _, m := range macs {
		rec, _ := pbx.ParseSeen(s.Pending[m])
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m, dash(rec, "time"), dash(rec, "brand"), dash(rec, "model"),
			dash(rec, "firmware"), dash(rec, "source"), dash(rec, "interface"))
	}
	return tw.Flush()
}

// dash returns a record's field, "-" when empty.
func dash(rec url.Values, k string) string {
	if v := rec.Get(k); v != "" {
		return v
	}
	return "-"
}

// windowOpen writes the end of the window, now+d.
func (c *ctl) windowOpen(ctx context.Context, d time.Duration) error {
	until := time.Now().Add(d).UTC().Truncate(time.Second)
	if err := c.c.DBPut(ctx, c.family, resolve.KeyWindow, until.Format(time.RFC3339)); err != nil {
		return err
	}
	fmt.Fprintf(c.out, "provisioning window open until %s (%s)\n", until.Format(time.RFC3339), d)
	c.noteWindowOff()
	return c.changed(ctx)
}

func (c *ctl) windowClose(ctx context.Context) error {
	err := c.c.DBDel(ctx, c.family, resolve.KeyWindow)
	if errors.Is(err, ami.ErrNotFound) {
		fmt.Fprintln(c.out, "the provisioning window was not open")
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s/%s: %w", c.family, resolve.KeyWindow, err)
	}
	fmt.Fprintln(c.out, "provisioning window closed")
	return c.changed(ctx)
}

func (c *ctl) windowStatus(ctx context.Context) error {
	v, err := c.c.DBGet(ctx, c.family, resolve.KeyWindow)
	if errors.Is(err, ami.ErrNotFound) {
		fmt.Fprintln(c.out, "provisioning window closed")
		c.noteWindowOff()
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s/%s: %w", c.family, resolve.KeyWindow, err)
	}
	// Read as every pnpd reads it.
	s := resolve.NewSnapshot(1)
	s.Add(resolve.KeyWindow, v)
	now := time.Now()
	switch {
	case s.Window.IsZero():
		fmt.Fprintf(c.out, "provisioning window closed (%s/%s = %q is not an RFC 3339 time)\n", c.family, resolve.KeyWindow, v)
	case !now.Before(s.Window):
		fmt.Fprintf(c.out, "provisioning window closed (it ended at %s)\n", s.Window.Format(time.RFC3339))
	default:
		fmt.Fprintf(c.out, "provisioning window open until %s (%s left)\n", s.Window.Format(time.RFC3339),
			s.Window.Sub(now).Round(time.Second))
	}
	c.noteWindowOff()
	return nil
}

// noteWindowOff says when the configuration does not use the window.
func (c *ctl) noteWindowOff() {
	if !c.policy.Window {
		fmt.Fprintf(c.warn, "note: [policy] window is off in %s: phones are answered whether the window is open or not\n", c.path)
	}
}

func (c *ctl) rearm(ctx context.Context, mac string) error {
	err := c.c.DBDel(ctx, c.family, resolve.ProvisionedKey(mac))
	if errors.Is(err, ami.ErrNotFound) {
		fmt.Fprintf(c.out, "%s was not provisioned under once; nothing to rearm\n", mac)
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s/%s: %w", c.family, resolve.ProvisionedKey(mac), err)
	}
	fmt.Fprintf(c.out, "%s rearmed: its next SUBSCRIBE is answered\n", mac)
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
	for m := range s.Pending {
		_, assigned := s.MACs[m]
		if _, ok := seen[m]; !ok && !assigned {
			macs = append(macs, m)
		}
	}
	slices.SortFunc(macs, cmp.Compare)
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MAC\tASSIGNED\tSEEN\tOUTCOME\tBRAND\tMODEL\tFIRMWARE\tSOURCE\tHOST")
	for _, m := range macs {
		assigned := s.MACs[m]
		_, pending := s.Pending[m]
		switch {
		case assigned == "" && pending:
			assigned = "pending"
		case assigned == "":
			assigned = "-"
		case strings.Contains(assigned, "://"):
			assigned = "url " + pbx.URLHost(assigned)
		}
		r, ok := seen[m]
		if !ok { // a pending phone whose seen record is lost: its pending record
			r = s.Pending[m]
		}
		rec, _ := pbx.ParseSeen(r)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m, assigned, dash(rec, "time"), dash(rec, "outcome"),
			dash(rec, "brand"), dash(rec, "model"), dash(rec, "firmware"), dash(rec, "source"), dash(rec, "host"))
	}
	return tw.Flush()
}
