package resolve

import (
	"context"
	"net/netip"
	"net/url"
	"strings"

	"github.com/pnpd/pnpd/pkg/config"
)

// Request is what is known of a phone when its URL is decided.
type Request struct {
	MAC       string // 12 lower-case hex digits, "" when the phone sent none
	Brand     string // lower-case brand name, "" when unknown
	Model     string
	Version   string // firmware
	IP        netip.Addr
	Interface string
	Token     string // signed token for {token}, "" when no secret is configured or the phone sent no MAC
}

// Decision is the outcome of a Resolve. URL == "" means the phone gets no
// URL: it is observed, not answered.
type Decision struct {
	URL    string
	Source string   // what decided, e.g. "rule 2 (line 14)" or "default"
	Tenant string   // the PBX tenant the phone belongs to, "" when none
	Trace  []string // each source consulted, in order, and what it said
	// Unknown: no rule and no assignment names the phone; the URL, if
	// any, is a default's. The policy decides what such a phone gets.
	Unknown bool
	// Pending: the phone is not answered but recorded for approval (set
	// by the policy, with URL "").
	Pending bool
}

// Resolver decides a phone's URL. Resolve must be safe for concurrent use
// and must not keep req after it returns. An error means the decision could
// not be made (the phone is then not answered); a phone nobody configured is
// not an error but a Decision with no URL.
type Resolver interface {
	Resolve(ctx context.Context, req Request) (Decision, error)
}

// Fast is implemented by resolvers that can often decide without I/O. The
// responder calls Decide on the path to the 200; when decided is false it
// sends the 200 first and then calls Resolve.
type Fast interface {
	Decide(req Request) (d Decision, decided bool, err error)
}

// Func adapts a function to the Resolver interface.
type Func func(ctx context.Context, req Request) (Decision, error)

// Resolve calls f.
func (f Func) Resolve(ctx context.Context, req Request) (Decision, error) { return f(ctx, req) }

// Static decides from the configuration file's rules and default.
type Static struct {
	rules []config.Rule
	def   string
}

// NewStatic returns a resolver for the validated configuration c.
func NewStatic(c config.Resolve) *Static {
	return &Static{rules: append([]config.Rule(nil), c.Rules...), def: c.Default}
}

// Decide implements Fast: the file's rules never need I/O.
func (s *Static) Decide(req Request) (Decision, bool, error) {
	d, err := s.Resolve(context.Background(), req)
	return d, true, err
}

// Resolve implements Resolver.
func (s *Static) Resolve(_ context.Context, req Request) (Decision, error) {
	var d Decision
	if tryRules(s.rules, &d, req) {
		return d, nil
	}
	d.Unknown = true
	if s.def != "" {
		d.URL = Expand(s.def, req)
		d.Source = "default"
		d.Trace = append(d.Trace, "default: "+s.def)
		return d, nil
	}
	d.Trace = append(d.Trace, "default: none configured")
	return d, nil
}

// tryRules tries rules in order, tracing each, and takes the first that
// matches into d.
func tryRules(rules []config.Rule, d *Decision, req Request) bool {
	for _, r := range rules {
		if why := mismatch(r, req); why != "" {
			d.Trace = append(d.Trace, r.Name()+": no ("+why+")")
			continue
		}
		d.URL, d.Source = Expand(r.URL, req), r.Name()
		d.Trace = append(d.Trace, r.Name()+": match")
		return true
	}
	return false
}

// mismatch names the first key of r that req does not match, "" when all do.
func mismatch(r config.Rule, req Request) string {
	switch {
	case r.MAC != "" && r.MAC != req.MAC:
		return "mac"
	case r.MACPrefix != "" && (req.MAC == "" || !strings.HasPrefix(req.MAC, r.MACPrefix)):
		return "mac_prefix"
	case r.Vendor != "" && !config.Glob(r.Vendor, strings.ToLower(req.Brand)):
		return "vendor"
	case r.Model != "" && !config.Glob(r.Model, strings.ToLower(req.Model)):
		return "model"
	case r.HasSubnet() && (!req.IP.IsValid() || !r.Subnet.Contains(req.IP)):
		return "subnet"
	case r.Interface != "" && r.Interface != req.Interface:
		return "interface"
	}
	return ""
}

// Expand fills the placeholders of tmpl from req. Unknown {names}, and
// placeholders whose value is unknown, are left as they are so that a phone
// that knows them can expand them itself.
func Expand(tmpl string, req Request) string {
	return expand(tmpl, req, url.PathEscape)
}

// expand fills the placeholders of tmpl, passing the values that come from
// the phone's words (vendor, model, version) through esc.
func expand(tmpl string, req Request, esc func(string) string) string {
	if !strings.Contains(tmpl, "{") {
		return tmpl
	}
	var b strings.Builder
	b.Grow(len(tmpl) + 16)
	for {
		i := strings.IndexByte(tmpl, '{')
		if i < 0 {
			b.WriteString(tmpl)
			return b.String()
		}
		j := strings.IndexByte(tmpl[i:], '}')
		if j < 0 {
			b.WriteString(tmpl)
			return b.String()
		}
		b.WriteString(tmpl[:i])
		name := tmpl[i+1 : i+j]
		if v, ok := value(name, req, esc); ok {
			b.WriteString(v)
		} else {
			b.WriteString(tmpl[i : i+j+1])
		}
		tmpl = tmpl[i+j+1:]
	}
}

func value(name string, req Request, esc func(string) string) (string, bool) {
	var v string
	switch name {
	case "mac":
		v = req.MAC
	case "MAC":
		v = strings.ToUpper(req.MAC)
	case "vendor":
		v = esc(req.Brand)
	case "model":
		v = esc(req.Model)
	case "version":
		v = esc(req.Version)
	case "token":
		v = req.Token
	case "ip":
		if req.IP.IsValid() {
			v = req.IP.String()
		}
	default:
		return "", false
	}
	return v, v != ""
}
