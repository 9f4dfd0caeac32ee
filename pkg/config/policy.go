package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// policy validates the [policy] section into cfg.Policy; it runs after
// [resolve] and [ami], which some of its keys depend on.
func (v *validator) policy(r *rawPolicy, cfg *Config) {
	p := &cfg.Policy
	if r.Unknown != nil {
		p.Unknown = strings.TrimSpace(*r.Unknown)
		if !slices.Contains(UnknownModes, p.Unknown) {
			v.fail("policy.unknown", "%q is not one of %s", *r.Unknown, strings.Join(UnknownModes, ", "))
		}
	}
	if r.ContactIsSource != nil {
		p.ContactIsSource = *r.ContactIsSource
	}
	for _, k := range []struct {
		key string
		raw *string
		to  *Rate
	}{{"policy.source_rate", r.SourceRate, &p.SourceRate}, {"policy.mac_rate", r.MACRate, &p.MACRate}} {
		if k.raw == nil {
			continue
		}
		rate, err := ParseRate(*k.raw)
		if err != nil {
			v.fail(k.key, "%v", err)
		}
		*k.to = rate
	}
	if r.MaxTransactions != nil {
		if *r.MaxTransactions < 1 || *r.MaxTransactions > 10_000_000 {
			v.fail("policy.max_transactions", "%d: want 1 to 10000000", *r.MaxTransactions)
		}
		p.MaxTransactions = *r.MaxTransactions
	}
	p.AllowMACs = v.macList("policy.allow_macs", r.AllowMACs)
	p.DenyMACs = v.macList("policy.deny_macs", r.DenyMACs)
	if r.Window != nil {
		p.Window = *r.Window
	}
	if r.Once != nil {
		p.Once = *r.Once
	}
	if r.NeighborCheck != nil {
		p.NeighborCheck = *r.NeighborCheck
	}
	// What the PBX's database keeps needs the PBX.
	if !cfg.AMI.Enabled {
		switch {
		case p.Unknown == "approve":
			v.fail("policy.unknown", "\"approve\" records unknown phones in the PBX's database: it needs an [ami] section")
		case p.Window:
			v.fail("policy.window", "the provisioning window is kept in the PBX's database: it needs an [ami] section")
		case p.Once:
			v.fail("policy.once", "what was provisioned is kept in the PBX's database: it needs an [ami] section")
		}
	}
	if r.TokenSecretFile != nil {
		p.TokenSecretFile = strings.TrimSpace(*r.TokenSecretFile)
		if p.TokenSecretFile != "" && !filepath.IsAbs(p.TokenSecretFile) && v.file != "" {
			p.TokenSecretFile = filepath.Join(filepath.Dir(v.file), p.TokenSecretFile)
		}
		if p.TokenSecretFile != "" {
			if fi, err := os.Stat(p.TokenSecretFile); err != nil {
				v.fail("policy.token_secret_file", "%v", err)
			} else if !fi.Mode().IsRegular() {
				v.fail("policy.token_secret_file", "%s is not a regular file", p.TokenSecretFile)
			}
		}
	}
	if r.TokenTTL != nil {
		d, err := time.ParseDuration(strings.TrimSpace(*r.TokenTTL))
		switch {
		case err != nil:
			v.fail("policy.token_ttl", "%q is not a duration such as \"15m\"", *r.TokenTTL)
		case d < time.Minute || d > 7*24*time.Hour:
			v.fail("policy.token_ttl", "%s: want 1m to 168h (the phone fetches its files within minutes of the NOTIFY)", d)
		default:
			p.TokenTTL = d
		}
	}
	if p.TokenSecretFile == "" {
		if strings.Contains(cfg.Resolve.Default, "{token}") {
			v.fail("resolve.default", "uses {token}, but [policy] token_secret_file is not set")
		}
		for i, ru := range cfg.Resolve.Rules {
			if strings.Contains(ru.URL, "{token}") {
				v.fail(ruleKey(i, "url"), "uses {token}, but [policy] token_secret_file is not set")
			}
		}
	}
}

// macList validates a list of exact MACs and MAC prefixes.
func (v *validator) macList(key string, in []string) []string {
	var out []string
	for i, s := range in {
		m, ok := normalizeMACPrefix(s)
		if !ok {
			v.fail(key, "entry %d: %q is not a MAC address or prefix (1 to 12 hex digits, ':', '-' or '.' between them)", i+1, s)
			continue
		}
		out = append(out, m)
	}
	return out
}
