package policy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/resolve"
)

// Reason says why a phone was refused.
type Reason int

// Reasons of a refusal; Admitted is none.
const (
	Admitted         Reason = iota
	SourceRate              // the source address sent over source_rate
	MACRate                 // the MAC was claimed over mac_rate
	ContactNotSource        // the Contact host is not the source address
	MACDenied               // a deny_macs entry matches
	MACNotAllowed           // allow_macs is set and no entry matches
	WindowClosed            // window = true and no window is open
	ProvisionedOnce         // once = true and the MAC was provisioned
	NeighborMismatch        // neighbor_check: the kernel maps the source elsewhere
	numReasons
)

var reasonNames = [numReasons]string{
	Admitted:         "admitted",
	SourceRate:       "source-rate",
	MACRate:          "mac-rate",
	ContactNotSource: "contact-not-source",
	MACDenied:        "mac-denied",
	MACNotAllowed:    "mac-not-allowed",
	WindowClosed:     "window-closed",
	ProvisionedOnce:  "provisioned-once",
	NeighborMismatch: "neighbor-mismatch",
}

// String names the reason as logs, counters and traces do.
func (r Reason) String() string { return reasonNames[r] }

// Refusal is a decision not to answer; the zero Refusal admits.
type Refusal struct {
	Reason Reason
	Detail string // for people: what was seen
}

// Refused reports whether the phone is refused.
func (r Refusal) Refused() bool { return r.Reason != Admitted }

// Error writes the refusal as a reason text: "mac-denied: 0015651234 matches deny_macs 001565".
func (r Refusal) Error() string {
	if r.Detail == "" {
		return r.Reason.String()
	}
	return r.Reason.String() + ": " + r.Detail
}

// State is what the policy reads of the PBX's database. *pbx.PBX
// implements it. known is false while the PBX's data is not read yet.
type State interface {
	// Window is the end of the open provisioning window; zero when none.
	Window() (until time.Time, known bool)
	// Provisioned reports whether mac was provisioned under once and not
	// rearmed since.
	Provisioned(mac string) (done, known bool)
}

// NeighborFunc returns the hardware address the kernel's neighbour table
// holds for ip on the interface, waiting (up to ctx) for an entry being
// resolved. netio.WaitNeighbor is one.
type NeighborFunc func(ctx context.Context, iface string, ip netip.Addr) (net.HardwareAddr, error)

// Config configures a Policy.
type Config struct {
	Policy config.Policy // validated
	// State is the PBX's data; required for window and once.
	State State
	// Signer signs {token}; nil when no token_secret_file is set.
	Signer *Signer
	// Neighbor looks the source address up; required for neighbor_check.
	Neighbor NeighborFunc
	Logger   *slog.Logger
}

// Policy decides whom pnpd answers. It is safe for concurrent use.
type Policy struct {
	c        config.Policy
	state    State
	signer   *Signer
	neighbor NeighborFunc
	log      *slog.Logger
	epoch    time.Time

	sources *limiter[netip.Addr]
	macs    *limiter[string]

	refusals [numReasons]atomic.Int64
	told     atomic.Int64 // senders over their rate logged since the last sweep
}

// maxTold bounds the senders over their rate logged one by one between two
// sweeps (a second): a flood from forged addresses across an allowed /16
// must not write a line for each. The others are summed up by the sweep.
const maxTold = 10

// tell reports whether one more sender over its rate may be logged now.
func (p *Policy) tell() bool { return p.told.Add(1) <= maxTold }

// New returns the policy of cfg. It fails when a key needs a part that
// cfg lacks.
func New(cfg Config) (*Policy, error) {
	p := &Policy{c: cfg.Policy, state: cfg.State, signer: cfg.Signer, neighbor: cfg.Neighbor, log: cfg.Logger,
		epoch: time.Now(), sources: newLimiter[netip.Addr](cfg.Policy.SourceRate), macs: newLimiter[string](cfg.Policy.MACRate)}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.c.Unknown == "" {
		p.c.Unknown = config.UnknownModes[0]
	}
	switch {
	case (p.c.Window || p.c.Once || p.c.Unknown == "approve") && p.state == nil:
		return nil, fmt.Errorf("policy: window, once and unknown = \"approve\" need the PBX's database")
	case p.c.NeighborCheck && p.neighbor == nil:
		return nil, fmt.Errorf("policy: neighbor_check needs a neighbour lookup")
	}
	return p, nil
}

// Config returns the policy's settings.
func (p *Policy) Config() config.Policy { return p.c }

// Source takes one datagram sent to the group from src against
// source_rate; false refuses it. It runs before the datagram is parsed.
func (p *Policy) Source(src netip.Addr, now time.Time) bool {
	switch p.sources.take(src, since(p.epoch, now)) {
	case taken:
		return true
	case refusedNew:
		if p.tell() {
			p.log.Warn("policy: source over its rate: its datagrams are dropped until it slows down",
				"reason", SourceRate.String(), "src", src.String(), "source_rate", p.c.SourceRate.String())
		}
	case tableFullNew:
		p.tableFull("source_rate", src.String())
	}
	p.refusals[SourceRate].Add(1)
	return false
}

// tableFull logs the first refusal of a limiter whose table is full,
// once until a sweep leaves it room.
func (p *Policy) tableFull(key, who string) {
	p.log.Warn("policy: too many senders tracked at once: new ones are refused until some slow down",
		"limit", key, "tracked", maxBuckets, "first_refused", who)
}

// Phone is what the policy reads of a new SUBSCRIBE.
type Phone struct {
	MAC       string // 12 lower-case hex digits, "" when the phone sent none
	Src       netip.Addr
	Interface string
	// ContactIsSource: the host of the SUBSCRIBE's first Contact is the
	// source address. When it is not, Contact is that host as written
	// ("" when there is no Contact that parses).
	ContactIsSource bool
	Contact         string
}

// Admit decides, on the path to the 200, whether a new SUBSCRIBE
// transaction is answered: mac_rate, contact_is_source, the MAC lists,
// the window and once. Refusals are counted; mac_rate's are logged here
// (once while a MAC stays over its rate), the others are the caller's to
// log once with the phone's outcome.
func (p *Policy) Admit(ph Phone, now time.Time) Refusal {
	if ph.MAC != "" {
		switch v := p.macs.take(ph.MAC, since(p.epoch, now)); v {
		case taken:
		case refusedNew:
			if p.tell() {
				p.log.Warn("policy: MAC over its rate: its SUBSCRIBEs are dropped until they slow down",
					"reason", MACRate.String(), "mac", ph.MAC, "src", ph.Src.String(), "mac_rate", p.c.MACRate.String())
			}
			return p.refuse(MACRate, "")
		case tableFull, tableFullNew:
			if v == tableFullNew {
				p.tableFull("mac_rate", ph.MAC)
			}
			return p.refuse(MACRate, "too many MACs tracked")
		default:
			return p.refuse(MACRate, "")
		}
	}
	if p.c.NeighborCheck && ph.MAC == "" {
		// Nothing to check before the NOTIFY: refused before the 200.
		return p.refuse(NeighborMismatch, "the phone sent no MAC to check")
	}
	if p.c.ContactIsSource && !ph.ContactIsSource {
		c := ph.Contact
		if c == "" {
			c = "none"
		}
		return p.refuse(ContactNotSource, "contact host "+clip(c)+" is not the source address "+ph.Src.String())
	}
	r := p.check(ph.MAC, now, nil)
	if r.Refused() {
		p.refusals[r.Reason].Add(1)
	}
	return r
}

func (p *Policy) refuse(r Reason, detail string) Refusal {
	p.refusals[r].Add(1)
	return Refusal{Reason: r, Detail: detail}
}

// clip bounds a value from the packet in a reason text.
func clip(s string) string {
	if len(s) > 64 {
		return strings.ToValidUTF8(s[:64], "") + "..."
	}
	return s
}

// check applies the checks that depend on the MAC and the PBX's data, not
// on traffic: the lists, the window, once. With trace, each check says
// what it found.
func (p *Policy) check(mac string, now time.Time, trace *[]string) Refusal {
	say := func(s string) {
		if trace != nil {
			*trace = append(*trace, "policy: "+s)
		}
	}
	if mac != "" {
		if e := matchMAC(p.c.DenyMACs, mac); e != "" {
			say("deny_macs: " + e + " matches: refused")
			return Refusal{Reason: MACDenied, Detail: "deny_macs entry " + e + " matches " + mac}
		}
		if len(p.c.DenyMACs) > 0 {
			say("deny_macs: no entry matches")
		}
	}
	if len(p.c.AllowMACs) > 0 {
		if mac == "" {
			say("allow_macs: the phone sent no MAC: refused")
			return Refusal{Reason: MACNotAllowed, Detail: "the phone sent no MAC and allow_macs is set"}
		}
		e := matchMAC(p.c.AllowMACs, mac)
		if e == "" {
			say("allow_macs: no entry matches: refused")
			return Refusal{Reason: MACNotAllowed, Detail: mac + " matches no allow_macs entry"}
		}
		say("allow_macs: " + e + " matches")
	}
	if p.c.Window {
		until, known := p.state.Window()
		switch {
		case !known:
			say("window: the PBX's data is not read yet: closed")
			return Refusal{Reason: WindowClosed, Detail: "the PBX's data is not read yet"}
		case until.IsZero():
			say("window: closed (\"pnpd ctl window open DURATION\" opens it)")
			return Refusal{Reason: WindowClosed, Detail: "no provisioning window is open"}
		case !now.Before(until):
			say("window: closed at " + until.UTC().Format(time.RFC3339))
			return Refusal{Reason: WindowClosed, Detail: "the provisioning window closed at " + until.UTC().Format(time.RFC3339)}
		}
		say("window: open until " + until.UTC().Format(time.RFC3339))
	}
	if p.c.Once && mac != "" {
		done, known := p.state.Provisioned(mac)
		switch {
		case done:
			say("once: " + mac + " was provisioned (\"pnpd ctl rearm " + mac + "\" answers it again): refused")
			return Refusal{Reason: ProvisionedOnce, Detail: mac + " was provisioned already (pnpd ctl rearm " + mac + ")"}
		case !known:
			say("once: the PBX's data is not read yet: refused")
			return Refusal{Reason: ProvisionedOnce, Detail: "the PBX's data is not read yet"}
		}
		say("once: not provisioned yet")
	}
	return Refusal{}
}

// matchMAC returns the first entry of list that is mac or a prefix of it.
func matchMAC(list []string, mac string) string {
	for _, e := range list {
		if strings.HasPrefix(mac, e) {
			return e
		}
	}
	return ""
}

// Explain runs the checks that do not depend on traffic for req, as
// `pnpd resolve` shows them: the trace lines and the verdict.
func (p *Policy) Explain(req resolve.Request, now time.Time) ([]string, Refusal) {
	var trace []string
	if p.c.ContactIsSource {
		trace = append(trace, "policy: contact_is_source: checked on live SUBSCRIBEs")
	}
	if !p.c.SourceRate.Off() || !p.c.MACRate.Off() {
		trace = append(trace, "policy: source_rate "+p.c.SourceRate.String()+", mac_rate "+p.c.MACRate.String()+": applied to live SUBSCRIBEs")
	}
	r := p.check(req.MAC, now, &trace)
	switch {
	case !p.c.NeighborCheck || r.Refused():
	case req.MAC == "":
		trace = append(trace, "policy: neighbor_check: the phone sent no MAC to check: refused")
		r = Refusal{Reason: NeighborMismatch, Detail: "the phone sent no MAC to check"}
	default:
		trace = append(trace, "policy: neighbor_check: the kernel's neighbour entry of the source must hold "+req.MAC+" (checked before the NOTIFY)")
	}
	return trace, r
}

// NeighborCheck reports whether CheckNeighbor must run before each NOTIFY.
func (p *Policy) NeighborCheck() bool { return p.c.NeighborCheck }

// NeighborWait bounds how long CheckNeighbor waits for the kernel to
// resolve the phone's address after the 200 was sent to it.
const NeighborWait = time.Second

// CheckNeighbor refuses the NOTIFY unless the kernel's neighbour entry for
// ip on iface holds mac. It waits up to NeighborWait (or ctx) for the
// entry to be resolved.
func (p *Policy) CheckNeighbor(ctx context.Context, iface string, ip netip.Addr, mac string) Refusal {
	if mac == "" {
		return p.refuse(NeighborMismatch, "the phone sent no MAC to check")
	}
	ctx, cancel := context.WithTimeout(ctx, NeighborWait)
	defer cancel()
	hw, err := p.neighbor(ctx, iface, ip)
	if err != nil {
		return p.refuse(NeighborMismatch, "the kernel did not resolve "+ip.String()+" on "+iface+" in time: "+err.Error())
	}
	got := strings.ReplaceAll(hw.String(), ":", "")
	if got != mac {
		return p.refuse(NeighborMismatch, ip.String()+" is at "+hw.String()+" on "+iface+", not at the claimed "+mac)
	}
	return Refusal{}
}

// Serve forgets the rate buckets that refilled, every second, until ctx
// ends. It returns nil.
func (p *Policy) Serve(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			p.sweep(now)
		}
	}
}

func (p *Policy) sweep(now time.Time) {
	n := since(p.epoch, now)
	ended := p.sources.sweep(n) + p.macs.sweep(n)
	if ended > 0 {
		p.log.Info("policy: senders back under their rate", "count", ended)
	}
	if told := p.told.Swap(0); told > maxTold {
		p.log.Warn("policy: more senders went over their rate than are logged one by one",
			"not_logged", told-maxTold, "logged", maxTold)
	}
}

// Stats are the policy's counters.
type Stats struct {
	Refused map[string]int64 // by reason, only those that happened
	Sources int              // addresses tracked by source_rate
	MACs    int              // MACs tracked by mac_rate
}

// Stats returns the counters.
func (p *Policy) Stats() Stats {
	st := Stats{Refused: map[string]int64{}, Sources: p.sources.size(), MACs: p.macs.size()}
	for i := range p.refusals {
		if n := p.refusals[i].Load(); n > 0 {
			st.Refused[Reason(i).String()] = n
		}
	}
	return st
}
