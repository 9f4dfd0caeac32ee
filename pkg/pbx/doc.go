// Package pbx keeps pnpd's view of the PBX database and writes pnpd's
// reports back to it, over AMI.
//
// A PBX holds a snapshot of the AstDB family (DBGetTree at every login, on
// the UserEvent PnpReload, and every Refresh), answers the resolver's
// questions for what the snapshot lacks (DBGet, Getvar), and, as the
// responder's Observer, writes seen/<mac> records and sends the UserEvents
// PnpSeen, PnpProvisioned, PnpFailed and PnpPending. Writes wait in a
// bounded queue while the PBX is away and are flushed after the next
// login; what does not fit is counted and logged, never dropped silently.
//
// For the policy it writes pending/<mac> (a phone waiting for approval,
// at most Config.MaxPending) and, with Config.Once, provisioned/<mac>, and
// answers Window, Provisioned and Pending from the snapshot together with
// what it wrote since: its own writes count at once, not only after the
// next snapshot.
//
//	client := ami.New(ami.Config{Address: "127.0.0.1:5038", Username: "pnpd", Secret: s})
//	p := pbx.New(pbx.Config{Client: client, Family: "pnp", Refresh: time.Minute, Events: true})
//	go client.Serve(ctx)
//	go p.Serve(ctx)
//	res := resolve.NewChain(cfg.Resolve, p, cfg.AMI.Lookup)
//	srv := pnp.NewServer(pnp.Config{Resolver: res, Observer: p})
//
// The family's layout (keys relative to the family, default "pnp"):
//
//	mac/<mac>                   a tenant name, or a whole URL when it holds "://"
//	tenant/<tenant>/url         the tenant's URL template
//	tenant/<tenant>/url/<brand> the tenant's template for one brand
//	default/url                 the template for phones nobody assigned
//	seen/<mac>                  written by pnpd (see SeenRecord)
//	pending/<mac>               written by pnpd: waiting for approval (as seen/<mac>)
//	window                      the end of the provisioning window, RFC 3339 UTC
//	provisioned/<mac>           written by pnpd under once: when, RFC 3339 UTC
package pbx
