package policy

import (
	"context"
	"time"

	"github.com/pnpd/pnpd/pkg/resolve"
)

// Resolver wraps inner with what the policy says of URLs: the {token} of
// the phone is signed before inner expands its templates, and a phone
// nobody named (Decision.Unknown) gets what unknown says. The result
// implements resolve.Fast when inner does.
func (p *Policy) Resolver(inner resolve.Resolver) resolve.Resolver {
	g := gated{p: p, inner: inner}
	if f, ok := inner.(resolve.Fast); ok {
		return gatedFast{gated: g, fast: f}
	}
	return g
}

type gated struct {
	p     *Policy
	inner resolve.Resolver
}

func (g gated) Resolve(ctx context.Context, req resolve.Request) (resolve.Decision, error) {
	g.p.sign(&req)
	d, err := g.inner.Resolve(ctx, req)
	if err == nil {
		g.p.unknown(&d, req)
	}
	return d, err
}

type gatedFast struct {
	gated
	fast resolve.Fast
}

func (g gatedFast) Decide(req resolve.Request) (resolve.Decision, bool, error) {
	g.p.sign(&req)
	d, ok, err := g.fast.Decide(req)
	if ok && err == nil {
		g.p.unknown(&d, req)
	}
	return d, ok, err
}

// sign fills req.Token when a secret is configured and the phone has a MAC.
func (p *Policy) sign(req *resolve.Request) {
	if p.signer != nil && req.MAC != "" && req.Token == "" {
		req.Token = p.signer.Sign(req.MAC, time.Now())
	}
}

// unknown applies [policy] unknown to a decision that no rule and no
// assignment made.
func (p *Policy) unknown(d *resolve.Decision, req resolve.Request) {
	if !d.Unknown {
		return
	}
	switch p.c.Unknown {
	case "observe":
		if d.URL != "" {
			d.Trace = append(d.Trace, "policy: unknown = observe: nobody named this phone: the URL of "+d.Source+" is withheld")
		} else {
			d.Trace = append(d.Trace, "policy: unknown = observe: nobody named this phone")
		}
		d.URL, d.Source = "", "policy (unknown = observe)"
	case "approve":
		if req.MAC == "" {
			d.Trace = append(d.Trace, "policy: unknown = approve: the phone sent no MAC to approve: observed")
			d.URL, d.Source = "", "policy (unknown = approve)"
			return
		}
		d.Trace = append(d.Trace, "policy: unknown = approve: recorded as pending/"+req.MAC+" until \"pnpd ctl approve "+req.MAC+" TENANT\"")
		d.URL, d.Source, d.Pending = "", "policy (unknown = approve)", true
	}
}
