// Package resolve decides which provisioning URL a phone gets, and says why.
//
// A Resolver has one method. The Static resolver decides from the rules and
// the default of the configuration file: every key a rule sets must match,
// the first matching rule wins, then the default. The decision is local and
// takes no I/O.
//
//	r := resolve.NewStatic(cfg.Resolve)
//	d, err := r.Resolve(ctx, resolve.Request{MAC: "001fc11b4e1c", Brand: "htek"})
//	if err == nil && d.URL != "" {
//		fmt.Println(d.URL, "decided by", d.Source)
//	}
//
// URL templates know {mac} (12 lower-case hex digits), {MAC} (upper-case),
// {vendor} (the brand), {model}, {version} (both URL-escaped), {ip} and
// {token} (Request.Token: the signed token pkg/policy fills in, left as it
// is when there is none); any other {...} or $... is left for the phone to
// expand.
package resolve
