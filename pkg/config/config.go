package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/pnpd/pnpd/pkg/phone"
)

// DefaultPath is where `pnpd serve` looks for its configuration when -config
// is not given.
const DefaultPath = "/etc/pnpd/pnpd.toml"

// DefaultGroup is the SIP multicast group and port phones send PnP
// SUBSCRIBEs to (sip.mcast.net, RFC 3261 10.2.6).
var DefaultGroup = netip.MustParseAddrPort("224.0.1.75:5060")

// Errors returned by this package; a *KeyError wraps ErrInvalid.
var (
	ErrInvalid = errors.New("config: invalid")
)

// Config is pnpd's validated configuration.
type Config struct {
	// Path is the file the configuration was read from ("" when parsed
	// from memory).
	Path     string
	SIP      SIP
	Resolve  Resolve
	AMI      AMI
	Policy   Policy
	Metrics  Metrics
	Warnings []string // things that load but are probably wrong
}

// Values of [policy] unknown, the default first.
var UnknownModes = []string{"default", "observe", "approve"}

// Defaults of the [policy] section.
const (
	DefaultMaxTransactions = 50000
	DefaultTokenTTL        = 15 * time.Minute
)

// DefaultRate is the default of [policy] source_rate and mac_rate: a phone
// sends a handful of SUBSCRIBEs when it boots (retransmissions, and
// Grandstream's five), an address that floods sends thousands.
var DefaultRate = Rate{N: 10, Per: 10 * time.Second}

// Policy says whom pnpd answers; see the README's "Security" section.
type Policy struct {
	// Unknown is what a phone that no rule and no assignment names gets:
	// "default" (the default URL, if any), "observe" (nothing) or
	// "approve" (recorded as pending in the PBX until approved).
	Unknown string
	// ContactIsSource requires the Contact host to be the source address.
	ContactIsSource bool
	// SourceRate and MACRate bound the SUBSCRIBEs taken per source
	// address and per MAC; a zero Rate is no limit.
	SourceRate, MACRate Rate
	// MaxTransactions caps the open SIP transactions.
	MaxTransactions int
	// AllowMACs and DenyMACs hold exact MACs (12 lower-case hex digits)
	// and prefixes (fewer digits). Empty AllowMACs allows every MAC; a
	// deny entry wins.
	AllowMACs, DenyMACs []string
	// Window answers phones only while a window opened with
	// "pnpd ctl window open" is open.
	Window bool
	// Once answers a MAC that was provisioned only after "pnpd ctl rearm".
	Once bool
	// NeighborCheck requires the kernel's neighbour entry of the source
	// address to hold the claimed MAC before the NOTIFY.
	NeighborCheck bool
	// TokenSecretFile holds the secret of {token} (an absolute path);
	// TokenTTL is how long a token is valid.
	TokenSecretFile string
	TokenTTL        time.Duration
}

// Rate is N events per Per, as a token bucket of N that refills over Per.
type Rate struct {
	N   int
	Per time.Duration
}

// Off reports whether the rate sets no limit.
func (r Rate) Off() bool { return r.N <= 0 }

// String writes the rate as the configuration does: "10/10s", or "off".
func (r Rate) String() string {
	if r.Off() {
		return "off"
	}
	d := r.Per.String() // "1m0s": written as the configuration would, "1m"
	if strings.HasSuffix(d, "m0s") {
		d = strings.TrimSuffix(d, "0s")
	}
	if strings.HasSuffix(d, "h0m") {
		d = strings.TrimSuffix(d, "0m")
	}
	return fmt.Sprintf("%d/%s", r.N, d)
}

// ParseRate reads "N/DURATION" ("10/10s", "600/1m"; "10/s" is 10/1s) or
// "off".
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "off" {
		return Rate{}, nil
	}
	n, per, ok := strings.Cut(s, "/")
	if !ok {
		return Rate{}, fmt.Errorf("%q is not a rate such as \"10/10s\" (or \"off\")", s)
	}
	var r Rate
	if _, err := fmt.Sscanf(n, "%d", &r.N); err != nil || r.N < 1 || strconv.Itoa(r.N) != n {
		return Rate{}, fmt.Errorf("%q: the count %q is not a whole number of at least 1", s, n)
	}
	if per != "" && per[0] >= 'a' && per[0] <= 'z' {
		per = "1" + per // "10/s"
	}
	d, err := time.ParseDuration(per)
	if err != nil || d <= 0 {
		return Rate{}, fmt.Errorf("%q: the period %q is not a duration such as \"10s\"", s, per)
	}
	if d > 24*time.Hour {
		return Rate{}, fmt.Errorf("%q: a period over 24h is not a rate limit", s)
	}
	r.Per = d
	return r, nil
}

// Defaults of the [ami] section.
const (
	DefaultAMIAddress = "127.0.0.1:5038"
	DefaultFamily     = "pnp"
	DefaultRefresh    = 60 * time.Second
	DefaultWriteQueue = 50000
	MaxWriteQueue     = 10000000
)

// AMI configures the link to the PBX. It is on when the file has an [ami]
// section; without one pnpd decides from the file alone.
type AMI struct {
	Enabled  bool
	Address  string // host:port, default 127.0.0.1:5038
	Username string
	// Secret is the manager secret, read from SecretFile when that is set.
	Secret     string
	SecretFile string
	Family     string        // AstDB family, default "pnp"
	Refresh    time.Duration // snapshot period; 0 = only at start, reconnect and PnpReload
	Events     bool          // send the Pnp* UserEvents; default true
	// Lookup is a dialplan function expression with URL placeholders,
	// evaluated with Getvar for phones the AstDB family does not name.
	Lookup string
	// WriteQueue bounds the writes to the PBX (seen, pending and
	// provisioned records, UserEvents) waiting while it is away; default
	// DefaultWriteQueue. Beyond it writes are lost, counted and logged.
	WriteQueue int
}

// SIP configures where pnpd listens and whom it answers.
type SIP struct {
	// Interfaces to join the group on; empty means every up,
	// multicast-capable, non-loopback interface with an IPv4 address.
	Interfaces []string
	// Group is the multicast group and port (default 224.0.1.75:5060).
	Group netip.AddrPort
	// Allow lists the source subnets answered; empty means the subnets of
	// the joined interfaces.
	Allow []netip.Prefix
	// Port is the UDP port of the per-interface unicast sockets that send
	// the answers and receive the phones' responses to NOTIFY; 0 lets the
	// kernel choose a free one.
	Port int
	// Mode is how the group's datagrams are received: "auto" (default),
	// "bind", "raw" or "packet"; see Modes.
	Mode string
	// RealtimePriority is the SCHED_RR priority of the threads that read
	// the group and send the 200 (default DefaultRealtimePriority); 0
	// keeps them at the normal policy.
	RealtimePriority int
}

// DefaultRealtimePriority equals the SCHED_RR priority Debian runs Asterisk
// at (asterisk -p), so that pnpd's 200 keeps its lead over Asterisk's 401
// on a busy host without ever preempting Asterisk's own threads.
const DefaultRealtimePriority = 10

// Modes are the values of [sip] mode, the default first.
var Modes = []string{"auto", "bind", "raw", "packet"}

// Resolve configures the static URL decision.
type Resolve struct {
	// Default is the URL template for phones no rule matches; "" means
	// such phones are observed only.
	Default string
	Rules   []Rule
}

// Rule is one [[resolve.rule]]: every key that is set must match.
type Rule struct {
	Index     int    // 1-based position among the rules
	Line      int    // line of its [[resolve.rule]] header, 0 if unknown
	MAC       string // 12 lower-case hex digits
	MACPrefix string // 1 to 12 lower-case hex digits
	Vendor    string // glob over the brand name, lower-case
	Model     string // glob over the model, lower-case
	Subnet    netip.Prefix
	Interface string
	URL       string // template
}

// HasSubnet reports whether the rule restricts the source subnet.
func (r Rule) HasSubnet() bool { return r.Subnet.IsValid() }

// Name describes the rule for traces and logs: "rule 2 (line 14)".
func (r Rule) Name() string {
	if r.Line > 0 {
		return fmt.Sprintf("rule %d (line %d)", r.Index, r.Line)
	}
	return fmt.Sprintf("rule %d", r.Index)
}

// KeyError names the key (and line, when known) of a bad value.
type KeyError struct {
	File string
	Line int
	Key  string // e.g. "resolve.rule[2].subnet"
	Msg  string
}

func (e *KeyError) Error() string {
	var where string
	switch {
	case e.File != "" && e.Line > 0:
		where = fmt.Sprintf("%s:%d: ", e.File, e.Line)
	case e.File != "":
		where = e.File + ": "
	case e.Line > 0:
		where = fmt.Sprintf("line %d: ", e.Line)
	}
	return "config: " + where + e.Key + ": " + e.Msg
}

// Unwrap returns ErrInvalid.
func (e *KeyError) Unwrap() error { return ErrInvalid }

// raw mirrors the TOML file; every field is a string or list so that the
// validation step can name the key of a bad value.
type raw struct {
	SIP struct {
		Interfaces []string `toml:"interfaces"`
		Group      *string  `toml:"group"`
		Allow      []string `toml:"allow"`
		Port       *int     `toml:"port"`
		Mode       *string  `toml:"mode"`
		RTPrio     *int     `toml:"realtime_priority"`
	} `toml:"sip"`
	Resolve struct {
		Default string    `toml:"default"`
		Rule    []rawRule `toml:"rule"`
	} `toml:"resolve"`
	AMI     *rawAMI    `toml:"ami"`
	Policy  rawPolicy  `toml:"policy"`
	Metrics rawMetrics `toml:"metrics"`
}

type rawPolicy struct {
	Unknown         *string  `toml:"unknown"`
	ContactIsSource *bool    `toml:"contact_is_source"`
	SourceRate      *string  `toml:"source_rate"`
	MACRate         *string  `toml:"mac_rate"`
	MaxTransactions *int     `toml:"max_transactions"`
	AllowMACs       []string `toml:"allow_macs"`
	DenyMACs        []string `toml:"deny_macs"`
	Window          *bool    `toml:"window"`
	Once            *bool    `toml:"once"`
	NeighborCheck   *bool    `toml:"neighbor_check"`
	TokenSecretFile *string  `toml:"token_secret_file"`
	TokenTTL        *string  `toml:"token_ttl"`
}

type rawAMI struct {
	Address    *string `toml:"address"`
	Username   *string `toml:"username"`
	Secret     *string `toml:"secret"`
	SecretFile *string `toml:"secret_file"`
	Family     *string `toml:"family"`
	Refresh    *string `toml:"refresh"`
	Events     *bool   `toml:"events"`
	Lookup     *string `toml:"lookup"`
	WriteQueue *int    `toml:"write_queue"`
}

type rawRule struct {
	MAC       *string `toml:"mac"`
	MACPrefix *string `toml:"mac_prefix"`
	Vendor    *string `toml:"vendor"`
	Model     *string `toml:"model"`
	Subnet    *string `toml:"subnet"`
	Interface *string `toml:"interface"`
	URL       *string `toml:"url"`
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parse(path, data)
}

// Parse validates configuration text held in memory.
func Parse(data []byte) (*Config, error) { return parse("", data) }

// Default is the configuration used when there is no file: observe only.
func Default() *Config {
	return &Config{
		SIP:    SIP{Group: DefaultGroup, Mode: Modes[0], RealtimePriority: DefaultRealtimePriority},
		Policy: Policy{Unknown: UnknownModes[0], ContactIsSource: true, SourceRate: DefaultRate, MACRate: DefaultRate, MaxTransactions: DefaultMaxTransactions, TokenTTL: DefaultTokenTTL},
	}
}

func parse(file string, data []byte) (*Config, error) {
	var r raw
	md, err := toml.NewDecoder(strings.NewReader(string(data))).Decode(&r)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &KeyError{File: file, Line: pe.Position.Line, Key: orTop(pe.LastKey), Msg: pe.Message}
		}
		// A value of the wrong type: the decoder's error is a string
		// naming the key.
		if m := typeErr.FindStringSubmatch(err.Error()); m != nil {
			line, _ := strconv.Atoi(m[1])
			return nil, &KeyError{File: file, Line: line, Key: m[2], Msg: m[3]}
		}
		return nil, fmt.Errorf("config: %s: %w", file, err)
	}
	idx := indexLines(data)
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0].String()
		return nil, &KeyError{File: file, Line: idx.lineOfUnindexed(k), Key: k, Msg: "unknown key"}
	}
	v := validator{file: file, idx: idx}
	cfg := v.build(&r)
	if v.err != nil {
		return nil, v.err
	}
	cfg.Path = file
	return cfg, nil
}

var typeErr = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key "([^"]*)"\): (.*)$`)

func orTop(k string) string {
	if k == "" {
		return "(top level)"
	}
	return k
}

type validator struct {
	file string
	idx  lineIndex
	err  error
}

func (v *validator) fail(key, format string, args ...any) {
	if v.err != nil {
		return
	}
	v.err = &KeyError{File: v.file, Line: v.idx.line(key), Key: key, Msg: fmt.Sprintf(format, args...)}
}

func (v *validator) build(r *raw) *Config {
	cfg := Default()

	for i, name := range r.SIP.Interfaces {
		if name == "" || strings.ContainsAny(name, " /\t") || len(name) > 15 {
			v.fail("sip.interfaces", "entry %d: %q is not an interface name", i+1, name)
		}
	}
	cfg.SIP.Interfaces = append([]string(nil), r.SIP.Interfaces...)

	if r.SIP.Group != nil {
		ap, err := netip.ParseAddrPort(*r.SIP.Group)
		switch {
		case err != nil:
			v.fail("sip.group", "%q is not an IPv4 address:port", *r.SIP.Group)
		case !ap.Addr().Is4() || !ap.Addr().IsMulticast():
			v.fail("sip.group", "%s is not an IPv4 multicast group (pnpd speaks IPv4 only)", ap.Addr())
		case ap.Port() == 0:
			v.fail("sip.group", "port must not be 0")
		default:
			cfg.SIP.Group = ap
		}
	}
	for i, s := range r.SIP.Allow {
		p, err := parsePrefix(s)
		if err != nil {
			v.fail("sip.allow", "entry %d: %v", i+1, err)
			continue
		}
		cfg.SIP.Allow = append(cfg.SIP.Allow, p)
	}
	if r.SIP.Port != nil {
		if *r.SIP.Port < 0 || *r.SIP.Port > 65535 {
			v.fail("sip.port", "%d is not a UDP port (0 lets the kernel choose)", *r.SIP.Port)
		}
		cfg.SIP.Port = *r.SIP.Port
	}
	if r.SIP.Mode != nil {
		if !slices.Contains(Modes, *r.SIP.Mode) {
			v.fail("sip.mode", "%q is not a mode (want %s)", *r.SIP.Mode, strings.Join(Modes, ", "))
		}
		cfg.SIP.Mode = *r.SIP.Mode
	}
	if r.SIP.RTPrio != nil {
		if *r.SIP.RTPrio < 0 || *r.SIP.RTPrio > 99 {
			v.fail("sip.realtime_priority", "%d: want 0 (normal policy) or a SCHED_RR priority from 1 to 99", *r.SIP.RTPrio)
		}
		cfg.SIP.RealtimePriority = *r.SIP.RTPrio
	}
	if (cfg.SIP.Mode == "raw" || cfg.SIP.Mode == "packet") && cfg.SIP.Port != 0 && cfg.SIP.Port == int(cfg.SIP.Group.Port()) {
		v.fail("sip.port", "%d is the group's port: %s mode exists to leave it to the PBX; pick another port or 0", cfg.SIP.Port, cfg.SIP.Mode)
	}

	cfg.Resolve.Default = strings.TrimSpace(r.Resolve.Default)
	if err := checkTemplate(cfg.Resolve.Default); err != nil {
		v.fail("resolve.default", "%v", err)
	}
	if d := cfg.Resolve.Default; d != "" && !strings.HasSuffix(d, "/") {
		cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("%s: does not end in \"/\": grandstream and escene phones that get it append file names to it",
			v.at("resolve.default")))
	}
	for i, rr := range r.Resolve.Rule {
		cfg.Resolve.Rules = append(cfg.Resolve.Rules, v.rule(i, rr, cfg))
	}
	if r.AMI != nil {
		cfg.AMI = v.ami(r.AMI, cfg)
	}
	v.policy(&r.Policy, cfg)
	cfg.Metrics = v.metrics(&r.Metrics, cfg)
	return cfg
}

func (v *validator) ami(r *rawAMI, cfg *Config) AMI {
	a := AMI{Enabled: true, Address: DefaultAMIAddress, Family: DefaultFamily, Refresh: DefaultRefresh, Events: true, WriteQueue: DefaultWriteQueue}
	if r.Address != nil {
		a.Address = strings.TrimSpace(*r.Address)
		host, port, err := net.SplitHostPort(a.Address)
		if err != nil || host == "" || port == "" {
			v.fail("ami.address", "%q is not host:port, e.g. %q", a.Address, DefaultAMIAddress)
		}
	}
	if r.Username == nil || strings.TrimSpace(*r.Username) == "" {
		v.fail("ami", "username missing: the manager.conf user pnpd logs in as")
	} else {
		a.Username = strings.TrimSpace(*r.Username)
		if HasControl(a.Username) {
			v.fail("ami.username", "must not hold control characters")
		}
	}
	switch {
	case r.Secret != nil && r.SecretFile != nil:
		v.fail("ami.secret_file", "set secret or secret_file, not both")
	case r.Secret != nil:
		a.Secret = *r.Secret
		if a.Secret == "" || HasControl(a.Secret) {
			v.fail("ami.secret", "empty or holding control characters")
		}
	case r.SecretFile != nil:
		a.SecretFile = strings.TrimSpace(*r.SecretFile)
		if a.SecretFile != "" && !filepath.IsAbs(a.SecretFile) && v.file != "" {
			a.SecretFile = filepath.Join(filepath.Dir(v.file), a.SecretFile)
		}
		data, err := os.ReadFile(a.SecretFile)
		if err != nil {
			v.fail("ami.secret_file", "%v", err)
			break
		}
		a.Secret = strings.TrimRight(string(data), "\r\n")
		if a.Secret == "" || HasControl(a.Secret) {
			v.fail("ami.secret_file", "%s: empty, or more than one line", a.SecretFile)
		}
	default:
		v.fail("ami", "secret missing: set secret or secret_file")
	}
	if r.Family != nil {
		a.Family = strings.TrimSpace(*r.Family)
		if a.Family == "" || strings.Trim(a.Family, "/") != a.Family || strings.ContainsAny(a.Family, " \t") || HasControl(a.Family) {
			v.fail("ami.family", "%q is not an AstDB family (no spaces, no leading or trailing '/')", a.Family)
		}
	}
	if r.Refresh != nil {
		d, err := time.ParseDuration(strings.TrimSpace(*r.Refresh))
		switch {
		case err != nil:
			v.fail("ami.refresh", "%q is not a duration such as \"60s\" (\"0s\" turns the periodic refresh off)", *r.Refresh)
		case d < 0 || (d > 0 && d < time.Second):
			v.fail("ami.refresh", "%s: must be 0 (off) or at least 1s", d)
		default:
			a.Refresh = d
		}
	}
	if r.Events != nil {
		a.Events = *r.Events
	}
	if r.WriteQueue != nil {
		if n := *r.WriteQueue; n < 1 || n > MaxWriteQueue {
			v.fail("ami.write_queue", "%d: must be 1 to %d (writes waiting for the PBX)", n, MaxWriteQueue)
		} else {
			a.WriteQueue = n
		}
	}
	if r.Lookup != nil {
		a.Lookup = strings.TrimSpace(*r.Lookup)
		if HasControl(a.Lookup) {
			v.fail("ami.lookup", "must not hold control characters")
		} else if err := checkTemplate(a.Lookup); err != nil {
			v.fail("ami.lookup", "%v", err)
		} else if a.Lookup != "" && !strings.Contains(a.Lookup, "(") {
			cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("%s: %q names no dialplan function (e.g. \"ODBC_PNP_URL({mac})\"): Getvar will read a channel variable that does not exist",
				v.at("ami.lookup"), a.Lookup))
		}
	}
	return a
}

// HasControl reports control characters, which would end an AMI header
// (or an AstDB value written over AMI).
func HasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

func (v *validator) rule(i int, rr rawRule, cfg *Config) Rule {
	key := func(k string) string { return ruleKey(i, k) }
	ru := Rule{Index: i + 1, Line: v.idx.line(fmt.Sprintf("resolve.rule[%d]", i+1))}
	matchKeys := 0
	if rr.MAC != nil {
		matchKeys++
		m, ok := phone.NormalizeMAC(*rr.MAC)
		if !ok {
			v.fail(key("mac"), "%q is not a MAC address (12 hex digits)", *rr.MAC)
		}
		ru.MAC = m
	}
	if rr.MACPrefix != nil {
		matchKeys++
		p, ok := normalizeMACPrefix(*rr.MACPrefix)
		if !ok {
			v.fail(key("mac_prefix"), "%q is not a MAC prefix (1 to 12 hex digits)", *rr.MACPrefix)
		}
		ru.MACPrefix = p
	}
	if rr.Vendor != nil {
		matchKeys++
		ru.Vendor = strings.ToLower(strings.TrimSpace(*rr.Vendor))
		if ru.Vendor == "" {
			v.fail(key("vendor"), "empty")
		} else if !anyBrandMatches(ru.Vendor) {
			cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("%s: vendor %q matches none of the brands pnpd identifies (%s): the rule never matches",
				v.at(key("vendor")), ru.Vendor, strings.Join(phone.Brands(), " ")))
		}
	}
	if rr.Model != nil {
		matchKeys++
		ru.Model = strings.ToLower(strings.TrimSpace(*rr.Model))
		if ru.Model == "" {
			v.fail(key("model"), "empty")
		}
	}
	if rr.Subnet != nil {
		matchKeys++
		p, err := parsePrefix(*rr.Subnet)
		if err != nil {
			v.fail(key("subnet"), "%v", err)
		}
		ru.Subnet = p
	}
	if rr.Interface != nil {
		matchKeys++
		ru.Interface = strings.TrimSpace(*rr.Interface)
		if ru.Interface == "" {
			v.fail(key("interface"), "empty")
		}
	}
	if rr.URL == nil || strings.TrimSpace(*rr.URL) == "" {
		v.fail(key("url"), "missing: every rule needs a url")
	} else {
		ru.URL = strings.TrimSpace(*rr.URL)
		if err := checkTemplate(ru.URL); err != nil {
			v.fail(key("url"), "%v", err)
		}
	}
	if matchKeys == 0 {
		v.fail(fmt.Sprintf("resolve.rule[%d]", i+1), "no match keys (mac, mac_prefix, vendor, model, subnet, interface); use [resolve] default for a catch-all")
	}
	if (ru.Vendor == "grandstream" || ru.Vendor == "escene") && ru.URL != "" && !strings.HasSuffix(ru.URL, "/") {
		// The URL itself is not repeated: it may carry credentials.
		cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("%s: %s phones append file names to the URL: it should end in \"/\"",
			v.at(key("url")), ru.Vendor))
	}
	return ru
}

// ruleKey names key of the rule at index i (0-based): "resolve.rule[2].url".
func ruleKey(i int, key string) string { return fmt.Sprintf("resolve.rule[%d].%s", i+1, key) }

func (v *validator) at(key string) string {
	if l := v.idx.line(key); l > 0 && v.file != "" {
		return fmt.Sprintf("%s:%d: %s", v.file, l, key)
	} else if l > 0 {
		return fmt.Sprintf("line %d: %s", l, key)
	}
	return key
}

func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IPv4 subnet such as 192.168.0.0/16", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%q is not IPv4 (pnpd speaks IPv4 only)", s)
	}
	return p.Masked(), nil
}

func normalizeMACPrefix(s string) (string, bool) {
	var b strings.Builder
	group := 0 // hex digits since the last separator
	width := func(sep rune) int {
		if sep == '.' {
			return 4 // 0015.65aa.bbcc
		}
		return 2
	}
	last := rune(0)
	for _, c := range strings.ToLower(strings.TrimSpace(s)) {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
			b.WriteRune(c)
			group++
		case c == ':' || c == '-' || c == '.':
			// "0:15:65" is not "01565": with separators, every group
			// is whole.
			if group != width(c) {
				return "", false
			}
			group, last = 0, c
		default:
			return "", false
		}
	}
	if last != 0 && group > width(last) {
		return "", false
	}
	if b.Len() == 0 || b.Len() > 12 {
		return "", false
	}
	return b.String(), true
}

func anyBrandMatches(pattern string) bool {
	for _, b := range phone.Brands() {
		if Glob(pattern, b) {
			return true
		}
	}
	return false
}

// CheckTemplate reports whether a URL template's braces pair up, as the
// configuration requires of every URL.
func CheckTemplate(t string) error { return checkTemplate(t) }

// checkTemplate rejects templates whose braces do not pair up; unknown
// {names} are allowed (the phone may expand them).
func checkTemplate(t string) error {
	depth := 0
	for _, c := range t {
		switch c {
		case '{':
			depth++
			if depth > 1 {
				return errors.New("nested '{' in URL template")
			}
		case '}':
			if depth == 0 {
				return errors.New("'}' without '{' in URL template")
			}
			depth--
		}
	}
	if depth != 0 {
		return errors.New("unclosed '{' in URL template")
	}
	return nil
}

// DefaultMetricsListen is the address the example configuration gives
// [metrics] listen, and where `pnpd status` looks without a configuration.
const DefaultMetricsListen = "127.0.0.1:9560"

// Metrics configures the HTTP listener of the Prometheus metrics. It is off
// unless Listen is set.
type Metrics struct {
	Listen string // host:port; "" = off
}

type rawMetrics struct {
	Listen *string `toml:"listen"`
}

// metrics validates [metrics]: listen must be host:port with an IP address
// or "localhost" (or no host: every address) and a fixed port. A listener
// other hosts can reach is allowed, with a warning: the metrics hold no
// MACs or URLs, but they do tell anyone who asks which interfaces, PBX
// state and phone brands this site has.
func (v *validator) metrics(r *rawMetrics, cfg *Config) Metrics {
	var m Metrics
	if r.Listen == nil {
		return m
	}
	m.Listen = strings.TrimSpace(*r.Listen)
	if m.Listen == "" {
		return m
	}
	host, port, err := net.SplitHostPort(m.Listen)
	if err != nil {
		v.fail("metrics.listen", "%q is not host:port, e.g. %q (\"\" turns the metrics off)", m.Listen, DefaultMetricsListen)
		return m
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		v.fail("metrics.listen", "%q: the port must be 1 to 65535 (a fixed port the scraper can find)", m.Listen)
		return m
	}
	var loopback bool
	switch a, err := netip.ParseAddr(host); {
	case host == "localhost":
		loopback = true
	case host == "":
	case err != nil:
		v.fail("metrics.listen", "%q: the host must be an IP address or localhost", m.Listen)
		return m
	default:
		loopback = a.Unmap().IsLoopback()
	}
	if !loopback {
		cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("%s: %q is not a loopback address: whoever reaches it reads pnpd's operational data (interfaces, PBX state, phones counted by brand); listen on 127.0.0.1 or restrict the port with a firewall",
			v.at("metrics.listen"), m.Listen))
	}
	return m
}

// LoadMetrics reads the [metrics] section alone of the file at path, for
// `pnpd status`: it must work for a user who may not read the secret files
// the rest of the file names, and while the file holds an error a reload
// refused (the daemon still runs with the configuration before it).
func LoadMetrics(path string) (Metrics, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Metrics{}, fmt.Errorf("config: %w", err)
	}
	var r struct {
		Metrics rawMetrics `toml:"metrics"`
	}
	if _, err := toml.Decode(string(data), &r); err != nil {
		return Metrics{}, fmt.Errorf("config: %s: %w", path, err)
	}
	v := validator{file: path, idx: indexLines(data)}
	m := v.metrics(&r.Metrics, &Config{})
	if v.err != nil {
		return Metrics{}, v.err
	}
	return m, nil
}
