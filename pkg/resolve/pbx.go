package resolve

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/pnpd/pnpd/pkg/config"
)

// Errors of the PBX resolver.
var (
	// ErrNoTenantURL: the PBX assigns the phone to a tenant that has no URL.
	// It is a failure, not a reason to fall through to a default.
	ErrNoTenantURL = errors.New("resolve: tenant has no URL")
	// ErrPBXDown is what a PBX returns from Get and Eval when it cannot be
	// asked now; the resolver then decides from the last snapshot.
	ErrPBXDown = errors.New("resolve: PBX not connected")
)

// PBX is the PBX's database as the resolver reads it: a snapshot of the
// whole family, and questions asked now for what the snapshot lacks.
type PBX interface {
	// Snapshot returns the latest snapshot, nil before the first. It must
	// not block.
	Snapshot() *Snapshot
	// Live reports whether Get and Eval can reach the PBX now.
	Live() bool
	// Get reads one key of the family now; found is false for a missing
	// key. An error wrapping ErrPBXDown means the PBX cannot be asked.
	Get(ctx context.Context, key string) (value string, found bool, err error)
	// Eval evaluates a dialplan function expression now (AMI Getvar).
	Eval(ctx context.Context, expr string) (string, error)
}

// Chain decides in the order the specific before the generic: the file's
// rules that name a mac; the PBX's per-MAC value (snapshot, then asked
// now: the AstDB key, then the lookup expression); the file's other rules;
// the PBX's default/url; the file's default.
type Chain struct {
	macRules, rules []config.Rule
	def             string
	pbx             PBX
	lookup          string
}

// NewChain returns the resolver for the validated configuration c over
// pbx. lookup is the [ami] lookup expression ("" for none).
func NewChain(c config.Resolve, pbx PBX, lookup string) *Chain {
	ch := &Chain{def: c.Default, pbx: pbx, lookup: lookup}
	for _, r := range c.Rules {
		if r.MAC != "" {
			ch.macRules = append(ch.macRules, r)
		} else {
			ch.rules = append(ch.rules, r)
		}
	}
	return ch
}

// Decide decides without I/O when it can: ok is false when the PBX must be
// asked first (the phone's MAC is not in the snapshot, or the tenant it
// names is not, and the PBX is connected). Decide is meant for the path
// to the 200; Resolve then gives the full answer.
func (c *Chain) Decide(req Request) (d Decision, ok bool, err error) {
	if c.fileMAC(&d, req) {
		return d, true, nil
	}
	snap := c.pbx.Snapshot()
	if req.MAC != "" {
		v, found := "", false
		if snap != nil {
			v, found = snap.MACs[req.MAC]
		}
		live := c.pbx.Live()
		if !found && live {
			return d, false, nil
		}
		if found {
			if !strings.Contains(v, "://") && snap.Tenants[v].URLFor(req.Brand) == "" && live {
				return d, false, nil
			}
			// No question from here: Decide runs on the path to the 200.
			err := c.value(context.Background(), &d, req, v, "pbx snapshot", snap, false)
			return d, true, err
		}
		d.Trace = append(d.Trace, "pbx: mac/"+req.MAC+": not in the snapshot "+snapAge(snap)+"; PBX not connected")
	}
	c.generic(&d, req, snap)
	return d, true, nil
}

// Resolve implements Resolver: Decide, asking the PBX now for what the
// snapshot lacks.
func (c *Chain) Resolve(ctx context.Context, req Request) (Decision, error) {
	var d Decision
	if c.fileMAC(&d, req) {
		return d, nil
	}
	snap := c.pbx.Snapshot()
	if req.MAC != "" {
		v, from, err := c.perMAC(ctx, &d, req, snap)
		if err != nil {
			return d, err
		}
		if v != "" {
			return d, c.value(ctx, &d, req, v, from, snap, c.pbx.Live())
		}
	}
	c.generic(&d, req, snap)
	return d, nil
}

// fileMAC tries the file's rules that name a mac.
func (c *Chain) fileMAC(d *Decision, req Request) bool { return tryRules(c.macRules, d, req) }

// perMAC finds the PBX's value for the phone: the snapshot, else the AstDB
// key asked now, else the lookup expression. "" when nobody assigned it.
func (c *Chain) perMAC(ctx context.Context, d *Decision, req Request, snap *Snapshot) (v, from string, err error) {
	key := MACKey(req.MAC)
	if snap != nil {
		if v, ok := snap.MACs[req.MAC]; ok {
			return v, "pbx snapshot", nil
		}
	}
	v, found, err := c.pbx.Get(ctx, key)
	switch {
	case errors.Is(err, ErrPBXDown):
		d.Trace = append(d.Trace, "pbx: "+key+": not in the snapshot "+snapAge(snap)+"; PBX not connected")
		return "", "", nil
	case err != nil:
		d.Trace = append(d.Trace, "pbx: "+key+": "+err.Error())
		return "", "", fmt.Errorf("resolve: pbx: %s: %w", key, err)
	case found && strings.TrimSpace(v) != "":
		return strings.TrimSpace(v), "pbx", nil
	}
	d.Trace = append(d.Trace, "pbx: "+key+": none")
	if c.lookup == "" {
		return "", "", nil
	}
	expr := ExpandLookup(c.lookup, req)
	v, err = c.pbx.Eval(ctx, expr)
	switch {
	case errors.Is(err, ErrPBXDown):
		d.Trace = append(d.Trace, "lookup "+expr+": PBX not connected")
		return "", "", nil
	case err != nil:
		d.Trace = append(d.Trace, "lookup "+expr+": "+err.Error())
		return "", "", fmt.Errorf("resolve: lookup %s: %w", expr, err)
	}
	v = strings.TrimSpace(v)
	if v == "" {
		d.Trace = append(d.Trace, "lookup "+expr+": empty")
		return "", "", nil
	}
	return v, "lookup " + expr, nil
}

// value turns a per-MAC value (a URL, or a tenant's name) into the
// decision; with ask, a tenant the snapshot lacks is asked for now.
func (c *Chain) value(ctx context.Context, d *Decision, req Request, v, from string, snap *Snapshot, ask bool) error {
	if strings.Contains(v, "://") {
		d.URL, d.Source = Expand(v, req), from
		d.Trace = append(d.Trace, from+": mac/"+req.MAC+" = URL "+Redact(v))
		return nil
	}
	d.Tenant = v
	var t *Tenant
	if snap != nil {
		t = snap.Tenants[v]
	}
	tmpl, tsrc := t.URLFor(req.Brand), "pbx snapshot"
	if tmpl == "" && ask {
		// A tenant the snapshot does not have yet: ask for its keys now.
		tsrc = "pbx"
		keys := []string{TenantKey(v, "")}
		if req.Brand != "" {
			keys = []string{TenantKey(v, req.Brand), TenantKey(v, "")}
		}
		for _, k := range keys {
			u, found, err := c.pbx.Get(ctx, k)
			if err != nil && !errors.Is(err, ErrPBXDown) {
				d.Trace = append(d.Trace, "pbx: "+k+": "+err.Error())
				return fmt.Errorf("resolve: pbx: %s: %w", k, err)
			}
			if found && strings.TrimSpace(u) != "" {
				tmpl = strings.TrimSpace(u)
				break
			}
		}
	}
	if tmpl == "" {
		d.Trace = append(d.Trace, from+": mac/"+req.MAC+" = tenant "+v+": the tenant has no URL")
		d.Source = from
		return fmt.Errorf("%w: tenant %q (mac/%s)", ErrNoTenantURL, v, req.MAC)
	}
	d.URL, d.Source = Expand(tmpl, req), from
	d.Trace = append(d.Trace, from+": mac/"+req.MAC+" = tenant "+v+"; "+tsrc+": "+Redact(tmpl))
	return nil
}

// generic tries the file's other rules, the PBX's default/url and the
// file's default.
func (c *Chain) generic(d *Decision, req Request, snap *Snapshot) {
	if tryRules(c.rules, d, req) {
		return
	}
	d.Unknown = true
	if snap != nil && snap.Default != "" {
		d.URL, d.Source = Expand(snap.Default, req), "pbx default"
		d.Trace = append(d.Trace, "pbx default: "+Redact(snap.Default))
		return
	}
	d.Trace = append(d.Trace, "pbx default: none")
	if c.def != "" {
		d.URL, d.Source = Expand(c.def, req), "default"
		d.Trace = append(d.Trace, "default: "+Redact(c.def))
		return
	}
	d.Trace = append(d.Trace, "default: none configured")
}

func snapAge(s *Snapshot) string {
	if s == nil {
		return "(no snapshot yet)"
	}
	return "(taken " + s.Taken.UTC().Format("15:04:05") + ")"
}

// ExpandLookup fills the placeholders of a lookup expression. Unlike
// Expand, every byte of a value outside [A-Za-z0-9._-] is percent-encoded:
// values come from the phone's packet, and a ',' or ')' would otherwise
// end the function's argument (or call another function).
func ExpandLookup(expr string, req Request) string {
	return expand(expr, req, lookupEscape)
}

func lookupEscape(s string) string {
	const hexd = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexd[c>>4])
			b.WriteByte(hexd[c&15])
		}
	}
	return b.String()
}
