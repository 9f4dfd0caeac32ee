package pnp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pnpd/pnpd/pkg/phone"
	"github.com/pnpd/pnpd/pkg/policy"
	"github.com/pnpd/pnpd/pkg/resolve"
	"github.com/pnpd/pnpd/sip"
)

// Defaults of Config.
const (
	DefaultT1              = 500 * time.Millisecond
	DefaultT2              = 4 * time.Second
	DefaultMaxTransactions = 50000
	DefaultResolveTimeout  = 2 * time.Second
	DefaultMaxAsking       = 256
	// DefaultMaxNotifies caps the transmissions of one NOTIFY: the first
	// and five retransmissions (0, 0.5, 1.5, 3.5, 7.5 and 11.5 s at the
	// default T1), where RFC 3261's Timer E alone would send eleven. A
	// phone answers within milliseconds; a forged SUBSCRIBE must not aim
	// a long train of packets at an address.
	DefaultMaxNotifies = 6
)

// ErrShutdown is returned by Shutdown when its context ends before every
// NOTIFY in flight has finished.
var ErrShutdown = errors.New("pnp: shutdown: NOTIFYs still in flight")

// Port is where a datagram arrived and where the answers to it leave from.
// *netio.Iface implements it.
type Port interface {
	Name() string
	// Addr is the unicast address the answers leave from; the Via and
	// Contact of what is sent name it, so the phone's responses return to it.
	Addr() netip.AddrPort
	Send(b []byte, dst netip.AddrPort) error
}

// Packet is one received datagram. Data is only read during Handle.
type Packet struct {
	Data  []byte
	Src   netip.AddrPort
	Group bool // sent to the multicast group (else unicast to Port's address)
	Port  Port
}

// Config configures a Server. Zero fields take their defaults; NewServer
// does not modify it.
type Config struct {
	Resolver resolve.Resolver // required
	// Allow lists the source subnets answered. Empty answers any source:
	// pnpd fills it with the subnets of the joined interfaces by default.
	Allow           []netip.Prefix
	Logger          *slog.Logger
	MaxTransactions int           // open server and client transactions; default 50000 (see Settings)
	T1, T2          time.Duration // RFC 3261 timers; defaults 500 ms and 4 s
	ResolveTimeout  time.Duration // bound on one Resolve call; default 2 s
	// MaxAsking bounds the phones whose URL is being asked of the PBX,
	// or whose neighbour entry is being checked, at once (after their
	// 200); default 256. Beyond it such a SUBSCRIBE is dropped (counted
	// as "busy"): the phone retries.
	MaxAsking int
	// Observer, if set, is told of every SUBSCRIBE transaction and every
	// outcome.
	Observer Observer
	// Policy, if set, decides whom to answer: it is asked before each
	// datagram sent to the group is parsed, for each new SUBSCRIBE
	// transaction, and (neighbor_check) before each NOTIFY. Wrap the
	// Resolver with Policy.Resolver as well.
	Policy *policy.Policy
	// MaxNotifies caps the transmissions of one NOTIFY; default 6.
	MaxNotifies int
}

// Observer is told what happens to phones. Observe runs on the path of the
// SUBSCRIBE and of the NOTIFY's response: it must not block.
type Observer interface {
	Observe(Event)
}

// EventKind is what an Event reports.
type EventKind int

// Kinds of Event.
const (
	EventSeen EventKind = iota // a new SUBSCRIBE transaction (after its 200, if any)
	EventDone                  // the outcome of a phone's exchange
)

// Event is one report to the Observer.
type Event struct {
	Kind      EventKind
	Identity  phone.Identity
	Src       netip.AddrPort
	Interface string
	// URL is the decided URL. It may hold credentials: never log or
	// publish it whole (resolve.Redact, or its host only).
	URL     string
	Source  string // what decided the URL
	Tenant  string
	Outcome string // EventDone: provisioned, rejected, timeout, observed, pending, refused, send-error, aborted, error
	Reason  string // EventDone and not provisioned/observed: why
	Status  int    // the phone's final response to the NOTIFY, 0 if none
	Time    time.Time
}

// Server answers PnP SUBSCRIBEs. It is safe for concurrent use.
type Server struct {
	set      atomic.Pointer[settings] // what Reconfigure may change
	log      *slog.Logger
	t1, t2   time.Duration
	resolveT time.Duration
	maxSends int
	asking   chan struct{}  // slots for questions asked after the 200
	asked    sync.WaitGroup // work after the 200 (questions, neighbour checks), running
	askCtx   context.Context
	stopAsk  context.CancelFunc

	msgs sync.Pool // *sip.Message

	mu       sync.Mutex
	servers  map[string]*serverTx // by branch and sent-by of the SUBSCRIBE
	clients  map[string]*exchange // by the branch of our NOTIFY
	dialogs  map[string]*exchange // by Call-ID and From tag: one NOTIFY per dialog
	closing  bool
	inflight sync.WaitGroup
	// refusedOpen counts the server transactions the policy refused:
	// they are kept (so that retransmissions are silent) in a room of
	// their own, max transactions, and do not count against maxTx.
	refusedOpen int
	fullLogged  atomic.Bool // the table-full warning of this episode is out

	stats counters
}

// NewServer returns a Server for cfg.
func NewServer(cfg Config) *Server {
	s := &Server{
		log:      cfg.Logger,
		t1:       cfg.T1,
		t2:       cfg.T2,
		resolveT: cfg.ResolveTimeout,
		maxSends: cfg.MaxNotifies,
		servers:  map[string]*serverTx{},
		clients:  map[string]*exchange{},
		dialogs:  map[string]*exchange{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.t1 <= 0 {
		s.t1 = DefaultT1
	}
	if s.t2 <= 0 {
		s.t2 = DefaultT2
	}
	if s.t2 < s.t1 {
		s.t2 = s.t1
	}
	if s.maxSends <= 0 {
		s.maxSends = DefaultMaxNotifies
	}
	if s.resolveT <= 0 {
		s.resolveT = DefaultResolveTimeout
	}
	if cfg.MaxAsking <= 0 {
		cfg.MaxAsking = DefaultMaxAsking
	}
	s.asking = make(chan struct{}, cfg.MaxAsking)
	s.askCtx, s.stopAsk = context.WithCancel(context.Background())
	s.msgs.New = func() any { return new(sip.Message) }
	s.stats.init()
	s.Reconfigure(Settings{Resolver: cfg.Resolver, Allow: cfg.Allow, Observer: cfg.Observer, Policy: cfg.Policy,
		MaxTransactions: cfg.MaxTransactions})
	return s
}

// Settings are the parts of a Config that Reconfigure can change while
// the Server runs.
type Settings struct {
	Resolver resolve.Resolver // required
	Allow    []netip.Prefix
	Observer Observer
	Policy   *policy.Policy
	// MaxTransactions bounds the open transactions; default 50000. A
	// lower bound than those open now refuses new SUBSCRIBEs until
	// enough have ended.
	MaxTransactions int
}

// settings is the Server's copy of Settings.
type settings struct {
	res   resolve.Resolver
	allow []netip.Prefix
	obs   Observer
	pol   *policy.Policy
	maxTx int
}

// Reconfigure replaces the resolver, the allowed sources, the observer and
// the policy at once, for every datagram handled after it returns. An
// exchange under way keeps the resolver and policy it started with; its
// outcome goes to the new observer.
func (s *Server) Reconfigure(st Settings) {
	if st.MaxTransactions <= 0 {
		st.MaxTransactions = DefaultMaxTransactions
	}
	s.set.Store(&settings{res: st.Resolver, allow: append([]netip.Prefix(nil), st.Allow...), obs: st.Observer, pol: st.Policy,
		maxTx: st.MaxTransactions})
}

// Allow returns the source subnets answered now (empty: any).
func (s *Server) Allow() []netip.Prefix {
	return append([]netip.Prefix(nil), s.set.Load().allow...)
}

// Serve expires finished transactions until ctx is done. It returns nil.
func (s *Server) Serve(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			s.expire(now)
		}
	}
}

// Shutdown stops answering new SUBSCRIBEs and waits until every NOTIFY in
// flight has its outcome, or ctx ends (then ErrShutdown, and the rest are
// logged as aborted).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	var open []*exchange
	for _, ex := range s.dialogs {
		if !ex.done {
			open = append(open, ex)
		}
	}
	s.mu.Unlock()
	for _, ex := range open {
		s.finish(ex, outcomeAborted, 0)
	}
	// Questions still open are cut short; wait (briefly: resolvers honour
	// their context) for their goroutines.
	s.stopAsk()
	asked := make(chan struct{})
	go func() {
		s.asked.Wait()
		close(asked)
	}()
	select {
	case <-asked:
	case <-time.After(time.Second):
	}
	return fmt.Errorf("%w (%d aborted)", ErrShutdown, len(open))
}

// Handle processes one received datagram: a SUBSCRIBE sent to the group,
// or a response to one of our NOTIFYs sent to a Port's unicast address.
func (s *Server) Handle(p Packet) {
	s.stats.datagrams.Add(1)
	var now time.Time // read once for a datagram to the group
	st := s.set.Load()
	if p.Group {
		// The cheap refusals first, before the datagram is even parsed.
		if !st.allowed(p.Src.Addr()) {
			s.drop(p, dropNotAllowed, nil)
			return
		}
		now = time.Now()
		if st.pol != nil && !st.pol.Source(p.Src.Addr(), now) {
			s.drop(p, dropRateLimited, nil)
			return
		}
	}
	m := s.msgs.Get().(*sip.Message)
	defer s.msgs.Put(m)
	if err := m.Parse(p.Data); err != nil {
		s.drop(p, dropMalformed, err)
		return
	}
	if !p.Group {
		s.handleUnicast(p, m)
		return
	}
	s.handleSubscribe(st, p, m, now)
}

// drop counts and logs (at debug) a datagram that gets no answer.
func (s *Server) drop(p Packet, why dropReason, err error) {
	s.stats.drops[why].Add(1)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		attrs := []any{"reason", why.String(), "src", p.Src.String(), "iface", portName(p.Port), "bytes", len(p.Data)}
		if err != nil {
			attrs = append(attrs, "err", err.Error())
		}
		s.log.Debug("dropped", attrs...)
	}
}

func portName(p Port) string {
	if p == nil {
		return ""
	}
	return p.Name()
}

func (st *settings) allowed(a netip.Addr) bool {
	if len(st.allow) == 0 {
		return true
	}
	for _, p := range st.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// identify extracts who the phone says it is.
func identify(m *sip.Message) phone.Identity {
	return phone.Identify(phone.Fields{
		RequestURI: m.RequestURI,
		From:       m.Get(sip.HdrFrom),
		To:         m.Get(sip.HdrTo),
		Contact:    m.Get(sip.HdrContact),
		UserAgent:  m.Get(sip.HdrUserAgent),
		Event:      m.Get(sip.HdrEvent),
	})
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

// Open returns the number of open server and client transactions.
func (s *Server) Open() (servers, clients int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.servers), len(s.clients)
}
