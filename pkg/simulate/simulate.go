package simulate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/pnpd/pnpd/pkg/phone"
	"github.com/pnpd/pnpd/pkg/resolve"
	"golang.org/x/net/ipv4"
)

// Errors. Run wraps them with details; test with errors.Is.
var (
	// ErrOptions: Options are invalid; the message names the field.
	ErrOptions = errors.New("simulate: bad options")
	// ErrNoNotify: no valid NOTIFY came before Options.Timeout.
	ErrNoNotify = errors.New("simulate: no NOTIFY before the timeout")
	// ErrBadNotify: a NOTIFY for our subscription broke the rules a phone
	// relies on (Request-URI, tags, Event, Subscription-State, Content-Type,
	// body). The message says which.
	ErrBadNotify = errors.New("simulate: invalid NOTIFY")
	// ErrBadResponse: a 2xx to our SUBSCRIBE lacks a To tag, changes our Via
	// branch, or leaves our rport unfilled.
	ErrBadResponse = errors.New("simulate: invalid response to SUBSCRIBE")
	// ErrFetch: Options.Fetch was set and no configuration file downloaded.
	ErrFetch = errors.New("simulate: no configuration file downloaded")
)

// Defaults.
const (
	DefaultTimeout = 5 * time.Second
	repeatInterval = 100 * time.Millisecond
	// okGrace is how long Run waits, after it answered the NOTIFY, for a final
	// response to the SUBSCRIBE that has not come yet (a NOTIFY may overtake
	// the 200). One T1.
	okGrace = 500 * time.Millisecond
)

// defaultTarget is sip.mcast.net:5060, where phones send their SUBSCRIBE.
var defaultTarget = netip.AddrPortFrom(netip.AddrFrom4([4]byte{224, 0, 1, 75}), 5060)

// Options configure one simulated phone. The zero value of each optional field
// selects its default; Run does not modify the caller's Options.
type Options struct {
	// Vendor is a brand name from phone.Brands() (required; case-insensitive).
	// "fanvil" sends the PLANET VIP-1120PT shape of the capture, or a
	// "Fanvil X4" when MAC is in Fanvil's own block 0c:38:3e.
	Vendor string
	// Iface is the interface to send the multicast on; its first IPv4 address
	// is bound as the phone's address (required; "lo" with a unicast Target for
	// tests).
	Iface string
	// MAC in any spelling phone.NormalizeMAC accepts. Default: a random MAC in
	// the brand's OUI block. AudioCodes phones send no MAC at all; theirs is
	// used only for fetched file names.
	MAC string
	// Target is where the SUBSCRIBE goes (default 224.0.1.75:5060). A
	// multicast Target is sent with IP_MULTICAST_IF = Iface, TTL 1, loopback
	// off; a unicast one is simply sent to. IPv4 only.
	Target netip.AddrPort
	// LocalPort is the phone's source port: 0 = the brand's (Yealink 5059,
	// Grandstream 5080, Htek 60000, others 5060), -1 = any free port (for tests
	// that run beside a SIP stack), else that port.
	LocalPort int
	// Timeout is how long to wait for the NOTIFY after the SUBSCRIBE was sent
	// (default 5s); it also bounds each HTTP GET of Fetch.
	Timeout time.Duration
	// Fetch: after the NOTIFY, GET the brand's configuration files from the
	// URL as the phone would, reporting each attempt on Stderr.
	Fetch bool
	// IgnoreNotifies: do not answer the first N NOTIFYs (they are counted), to
	// exercise the responder's Timer E retransmission.
	IgnoreNotifies int
	// Repeat: send the same SUBSCRIBE (same branch) this many extra times,
	// 100 ms apart, as a retransmitting phone does. Run returns only after all
	// were sent; Linger then gives the answers to the last ones time to come.
	Repeat int
	// Linger: once the first NOTIFY was answered and the last Repeat sent,
	// keep listening this long, counting (and answering) further NOTIFYs and
	// responses. Default 0; Run still waits up to 500 ms (T1) for a final
	// response when the NOTIFY overtook it.
	Linger time.Duration
	Stderr io.Writer    // fetch report (default: discarded)
	Logger *slog.Logger // default: discarded
}

// Result is what one simulated phone saw.
type Result struct {
	URL       string        // NOTIFY body, trimmed (credentials included: do not log it)
	OKLatency time.Duration // SUBSCRIBE sent -> first 2xx received (0 if none)
	GotOK     bool
	Notifies  int   // NOTIFY datagrams for our subscription (retransmissions included)
	Responses []int // status codes received for our SUBSCRIBE, in order
	// Latencies holds, for each of Responses, the time from the first
	// SUBSCRIBE sent to that response received.
	Latencies  []time.Duration
	Fetched    []FetchResult
	MAC        string         // the MAC the phone used (12 lower-case hex digits)
	NotifyFrom netip.AddrPort // source of the first answered NOTIFY
	// Malformed counts datagrams that github.com/jart/gosip could not parse;
	// a non-zero count means a peer (pnpd?) wrote invalid SIP.
	Malformed int
}

// config is Options validated and with defaults applied.
type config struct {
	shape     *shape
	ifi       *net.Interface
	ip        netip.Addr
	port      int
	mac       string
	target    netip.AddrPort
	timeout   time.Duration
	fetch     bool
	ignore    int
	repeat    int
	linger    time.Duration
	stderr    io.Writer
	log       *slog.Logger
	multicast bool
}

func (o *Options) resolve() (*config, error) {
	c := &config{
		timeout: o.Timeout, fetch: o.Fetch, ignore: o.IgnoreNotifies,
		repeat: o.Repeat, linger: o.Linger, stderr: o.Stderr, log: o.Logger,
	}
	brand := strings.ToLower(strings.TrimSpace(o.Vendor))
	c.shape = shapes[brand]
	if c.shape == nil {
		return nil, fmt.Errorf("%w: Vendor %q is not one of %s", ErrOptions, o.Vendor, strings.Join(phone.Brands(), ", "))
	}
	if o.Iface == "" {
		return nil, fmt.Errorf("%w: Iface is required", ErrOptions)
	}
	ifi, err := net.InterfaceByName(o.Iface)
	if err != nil {
		return nil, fmt.Errorf("%w: Iface %q: %w", ErrOptions, o.Iface, err)
	}
	c.ifi = ifi
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("%w: Iface %q addresses: %w", ErrOptions, o.Iface, err)
	}
	for _, a := range addrs {
		if pfx, err := netip.ParsePrefix(a.String()); err == nil && pfx.Addr().Is4() {
			c.ip = pfx.Addr()
			break
		}
	}
	if !c.ip.IsValid() {
		return nil, fmt.Errorf("%w: Iface %q has no IPv4 address", ErrOptions, o.Iface)
	}
	switch {
	case o.MAC == "":
		c.mac = randMAC(c.shape.oui)
	default:
		mac, ok := phone.NormalizeMAC(o.MAC)
		if !ok {
			return nil, fmt.Errorf("%w: MAC %q is not a MAC address", ErrOptions, o.MAC)
		}
		c.mac = mac
	}
	c.target = o.Target
	if !c.target.IsValid() {
		c.target = defaultTarget
	}
	c.target = netip.AddrPortFrom(c.target.Addr().Unmap(), c.target.Port())
	if !c.target.Addr().Is4() || c.target.Port() == 0 || c.target.Addr().IsUnspecified() {
		return nil, fmt.Errorf("%w: Target %s is not an IPv4 address and port", ErrOptions, o.Target)
	}
	c.multicast = c.target.Addr().IsMulticast()
	switch {
	case o.LocalPort == 0:
		c.port = c.shape.port
	case o.LocalPort == -1:
		c.port = 0
	case o.LocalPort > 0 && o.LocalPort < 65536:
		c.port = o.LocalPort
	default:
		return nil, fmt.Errorf("%w: LocalPort %d out of range", ErrOptions, o.LocalPort)
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	for _, f := range []struct {
		name string
		bad  bool
	}{
		{"Timeout", c.timeout < 0},
		{"IgnoreNotifies", c.ignore < 0},
		{"Repeat", c.repeat < 0},
		{"Linger", c.linger < 0},
	} {
		if f.bad {
			return nil, fmt.Errorf("%w: %s must not be negative", ErrOptions, f.name)
		}
	}
	if c.stderr == nil {
		c.stderr = io.Discard
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Run plays one phone: it sends the brand's SUBSCRIBE from Iface's IPv4
// address and the brand's port to Target, collects the responses, validates and
// answers the NOTIFY, and, with Fetch, downloads the configuration as the
// phone would. It returns when the NOTIFY was answered and Linger (and the
// Repeat retransmissions) are over, when Timeout passes without a NOTIFY
// (ErrNoNotify), when a NOTIFY or 2xx breaks the rules (ErrBadNotify,
// ErrBadResponse), or when ctx ends. The Result holds what was seen up to then,
// also on error.
func Run(ctx context.Context, o Options) (Result, error) {
	c, err := o.resolve()
	if err != nil {
		return Result{}, err
	}
	conn, err := openSocket(c)
	if err != nil {
		return Result{MAC: c.mac}, err
	}
	defer conn.Close()
	local := netip.MustParseAddrPort(conn.LocalAddr().String())
	r := &runner{
		c:    c,
		conn: conn,
		sub:  buildSubscribe(c.shape, c.shape.newParams(c.ip, int(local.Port()), c.mac)),
		res:  Result{MAC: c.mac},
	}
	if err := r.exchange(ctx); err != nil {
		return r.res, err
	}
	if c.fetch {
		// A transport of our own: no proxy from the environment (a phone has
		// none), and no idle connections left behind.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil
		defer tr.CloseIdleConnections()
		client := &http.Client{Timeout: c.timeout, Transport: tr}
		r.res.Fetched = fetch(ctx, client, c.stderr, c.shape.fetch, r.res.URL, c.mac, c.shape.model, c.shape.fw, r.sub.ua)
		ok := false
		for _, f := range r.res.Fetched {
			ok = ok || f.OK()
		}
		if !ok {
			return r.res, fmt.Errorf("%w from %s", ErrFetch, resolve.Redact(r.res.URL))
		}
	}
	return r.res, nil
}

// openSocket binds the phone's address and port and, for a multicast Target,
// sets IP_MULTICAST_IF to Iface, TTL 1 and loopback off.
func openSocket(c *config) (*net.UDPConn, error) {
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.ip, uint16(c.port))))
	if err != nil {
		return nil, fmt.Errorf("simulate: listen: %w", err)
	}
	if !c.multicast {
		return conn, nil
	}
	p := ipv4.NewPacketConn(conn)
	if err := p.SetMulticastInterface(c.ifi); err != nil {
		conn.Close()
		return nil, fmt.Errorf("simulate: IP_MULTICAST_IF %s: %w", c.ifi.Name, err)
	}
	if err := p.SetMulticastTTL(1); err != nil {
		conn.Close()
		return nil, fmt.Errorf("simulate: IP_MULTICAST_TTL: %w", err)
	}
	if err := p.SetMulticastLoopback(false); err != nil {
		conn.Close()
		return nil, fmt.Errorf("simulate: IP_MULTICAST_LOOP: %w", err)
	}
	return conn, nil
}
