package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pnpd/pnpd/ami"
	"github.com/pnpd/pnpd/pkg/asterisk"
	"github.com/pnpd/pnpd/pkg/netio"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// ErrOptions: Options are invalid; the message names the option.
var ErrOptions = errors.New("bench: bad options")

// Defaults of Options.
const (
	DefaultPhones      = 10000
	DefaultOffer       = time.Second
	DefaultSingles     = 200
	DefaultGap         = 5 * time.Millisecond
	DefaultOutstanding = 256
	DefaultRounds      = 3
	DefaultPhaseLimit  = 60 * time.Second
	DefaultParseTime   = 300 * time.Millisecond
	// MaxPhones bounds the fleet: the phones' /16 less a margin.
	MaxPhones = 60000
)

// DefaultPBXSizes are the PBX families loaded: phones per family.
var DefaultPBXSizes = []int{10000, 100000}

// Asterisk modes of Options.
const (
	AsteriskAuto     = "auto"     // use the prepared root when there is one
	AsteriskOff      = "off"      // never
	AsteriskRequired = "required" // fail without one
)

// group is where phones send their SUBSCRIBEs.
var group = netip.AddrPortFrom(netip.AddrFrom4([4]byte{224, 0, 1, 75}), 5060)

// Options configure Run. Zero values select the defaults.
type Options struct {
	// Exe is the pnpd binary run as `serve`. Default: this program, which
	// also always runs the minimal responder (`bench responder`).
	Exe string
	// Phones in the boot storm and in the saturation run.
	Phones int
	// Offer: the storm's first SUBSCRIBEs are spread over this long.
	Offer time.Duration
	// Singles: phones sent one at a time, Gap apart, for the latency of
	// single phones.
	Singles int
	Gap     time.Duration
	// Outstanding: phones in flight at once in the saturation run.
	Outstanding int
	// Rounds of the storm and of the saturation run, for each responder;
	// the report gives the median of each figure over them.
	Rounds int
	// Asterisk: AsteriskAuto, AsteriskOff or AsteriskRequired.
	Asterisk string
	// PBXSizes: the PBX families loaded (phones each); nil: DefaultPBXSizes;
	// empty (non-nil): no PBX data. Needs Asterisk.
	PBXSizes []int
	// Packets: the directory of phones' SUBSCRIBEs for the parser
	// comparison (sip/testdata/phones); "" leaves it out.
	Packets   string
	ParseTime time.Duration
	// PhaseLimit bounds each phase.
	PhaseLimit time.Duration
	// Logger gets progress; nil: discard.
	Logger *slog.Logger
}

func (o *Options) defaults() error {
	if o.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: this program's path: %w", err)
		}
		o.Exe = exe
	}
	set := func(p *int, d int) {
		if *p == 0 {
			*p = d
		}
	}
	set(&o.Phones, DefaultPhones)
	set(&o.Singles, DefaultSingles)
	set(&o.Outstanding, DefaultOutstanding)
	set(&o.Rounds, DefaultRounds)
	if o.Offer == 0 {
		o.Offer = DefaultOffer
	}
	if o.Gap == 0 {
		o.Gap = DefaultGap
	}
	if o.PhaseLimit == 0 {
		o.PhaseLimit = DefaultPhaseLimit
	}
	if o.ParseTime == 0 {
		o.ParseTime = DefaultParseTime
	}
	if o.PBXSizes == nil {
		o.PBXSizes = DefaultPBXSizes
	}
	if o.Asterisk == "" {
		o.Asterisk = AsteriskAuto
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.Phones < 1 || o.Phones > MaxPhones:
		return fmt.Errorf("%w: -phones %d: want 1 to %d", ErrOptions, o.Phones, MaxPhones)
	case o.Singles < 1 || o.Singles > MaxPhones:
		return fmt.Errorf("%w: -singles %d: want 1 to %d", ErrOptions, o.Singles, MaxPhones)
	case o.Outstanding < 1:
		return fmt.Errorf("%w: -outstanding %d: want at least 1", ErrOptions, o.Outstanding)
	case o.Rounds < 1 || o.Rounds > 20:
		return fmt.Errorf("%w: -rounds %d: want 1 to 20", ErrOptions, o.Rounds)
	case o.Offer < 0 || o.Gap < 0 || o.PhaseLimit < 0 || o.ParseTime < 0:
		return fmt.Errorf("%w: durations must not be negative", ErrOptions)
	case o.Asterisk != AsteriskAuto && o.Asterisk != AsteriskOff && o.Asterisk != AsteriskRequired:
		return fmt.Errorf("%w: -asterisk %q: want auto, off or required", ErrOptions, o.Asterisk)
	}
	for _, n := range o.PBXSizes {
		if n < 1 || n > 1_000_000 {
			return fmt.Errorf("%w: -pbx size %d: want 1 to 1,000,000", ErrOptions, n)
		}
	}
	return nil
}

// Run is one measurement of everything, as Report prints it.
type Report struct {
	Options Options
	Start   time.Time
	Took    time.Duration
	CPUs    int
	Kernel  string

	Single map[string]*Round // "pnpd", "minimal", "spinning" (the minimal one, never asleep), "asterisk"
	// Storm and Saturation hold Options.Rounds rounds of each of "pnpd"
	// and "minimal", run in turn.
	Storm      map[string][]*Round
	Saturation map[string][]*Round
	PBX        *PBXReport
	Parse      []ParseRow
	Notes      []string // what was left out, and why
}

// Round is one responder's side of one phase.
type Round struct {
	Who    string
	Out    Outcome
	Resp   UDPCounters // the responder's namespace, during the phase
	Phones UDPCounters // the phones' namespace
	CPU    time.Duration
	Bench  time.Duration // CPU of the bench itself (the phones)
	HWM    int64         // the responder's peak RSS
	// Confirmed counts the phones' 200s to the NOTIFY that the responder
	// says it received; LastConfirmed is when the last came.
	Confirmed     int
	LastConfirmed time.Time
	IdleRSS       int64    // the responder's RSS when ready, before any phone
	Warnings      []string // the responder's log lines at WARN and above
}

// AllDone is from the first SUBSCRIBE until every phone that got a NOTIFY
// had answered it and the responder had the answer.
func (r *Round) AllDone() time.Duration {
	end := r.Out.LastNotified
	if r.LastConfirmed.After(end) {
		end = r.LastConfirmed
	}
	if end.IsZero() || r.Out.Start.IsZero() {
		return 0
	}
	return end.Sub(r.Out.Start)
}

// Rate is exchanges per second from the first SUBSCRIBE to the last phone
// done.
func (r *Round) Rate() float64 {
	d := r.Out.End.Sub(r.Out.Start)
	if d <= 0 {
		return 0
	}
	return float64(r.Out.Done) / d.Seconds()
}

// CPUPer1000 is the responder's CPU time per 1,000 finished exchanges.
func (r *Round) CPUPer1000() time.Duration {
	if r.Out.Done == 0 {
		return 0
	}
	return r.CPU * 1000 / time.Duration(r.Out.Done)
}

// PBXReport is the PBX data part.
type PBXReport struct {
	Sizes []PBXSize
	// Get is DBGet round trips, sorted.
	Get []time.Duration
	// Serve: pnpd serve with the largest family: its log's snapshot line,
	// RSS once it holds it, and RSS of a pnpd without PBX for contrast.
	ServeEntries int
	ServeTook    string
	ServeRSS     int64
	ServeHWM     int64
}

type run struct {
	o       Options
	self    string // this program, for the minimal responder
	log     *slog.Logger
	lab     *Lab
	fleet   *Fleet
	rep     *Report
	workDir string
}

// Run measures. It makes and removes its namespaces; a pnpd or Asterisk it
// started is stopped before it returns.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	r := &run{o: o, log: o.Logger, rep: &Report{
		Options: o, Start: time.Now(), CPUs: runtimeCPUs(), Kernel: kernel(),
		Single: map[string]*Round{}, Storm: map[string][]*Round{}, Saturation: map[string][]*Round{},
	}}
	defer func() { r.rep.Took = time.Since(r.rep.Start) }()
	var err error
	if r.self, err = os.Executable(); err != nil {
		return nil, fmt.Errorf("bench: this program's path: %w", err)
	}
	if o.Packets != "" {
		// Found missing now, not after a minute of measuring.
		if fi, err := os.Stat(o.Packets); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("%w: -packets %s: not a directory (run from a checkout, or pass -packets \"\" to leave the parser out)", ErrOptions, o.Packets)
		}
	}
	if r.workDir, err = os.MkdirTemp("", "pnpd-bench-"); err != nil {
		return nil, err
	}
	defer os.RemoveAll(r.workDir)
	fleetSize := max(o.Phones, o.Singles)
	if r.lab, err = NewLab(ctx, fleetSize, r.log); err != nil {
		return nil, err
	}
	defer func() {
		if err := r.lab.Close(); err != nil {
			r.log.Warn("removing the lab", "err", err)
		}
	}()
	r.log.Info("making phones", "phones", fleetSize, "addresses", PhoneNet.String())
	if r.fleet, err = NewFleet(r.lab.Phones, r.lab.PhIf, PhoneNet.Addr().Next(), fleetSize); err != nil {
		return nil, err
	}
	defer r.fleet.Close()

	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"single phones", r.singles},
		{"Asterisk", r.asterisk},
		{"boot storm", r.storms},
		{"saturation", r.saturation},
		{"parser", r.parse},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return r.rep, err
		}
		r.log.Info("bench: " + s.name)
		if err := s.fn(ctx); err != nil {
			return r.rep, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return r.rep, nil
}

// responder is a started responder and how to stop it.
type responder struct {
	p       *proc
	idleRSS int64
	minimal bool
}

// startResponder starts pnpd serve (bind mode on the lab's link, a default
// URL for every phone) or the minimal responder in the responder's
// namespace.
func (r *run) startResponder(ctx context.Context, who string) (*responder, error) {
	var p *proc
	var err error
	switch who {
	case "pnpd":
		cfg := filepath.Join(r.workDir, "pnpd.toml")
		text := fmt.Sprintf("[sip]\ninterfaces = [%q]\nmode = \"bind\"\n\n[resolve]\ndefault = \"http://%s/prov/{mac}/\"\n",
			r.lab.RespIf, r.lab.RespAddr)
		if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
			return nil, err
		}
		p, err = startProc(ctx, r.lab.Resp, "pnpd serve", " msg=ready ", r.o.Exe, "serve", "-config", cfg)
	case "minimal", "spinning":
		// Always this program's: -exe may name a pnpd without it.
		p, err = startProc(ctx, r.lab.Resp, who+" responder", "minimal responder ready", r.self,
			"bench", "responder", "-iface", r.lab.RespIf, "-spin="+fmt.Sprint(who == "spinning"))
	default:
		return nil, fmt.Errorf("bench: no responder %q", who)
	}
	if err != nil {
		return nil, err
	}
	u, err := p.usage()
	if err != nil {
		p.kill()
		return nil, err
	}
	return &responder{p: p, idleRSS: u.RSS, minimal: who != "pnpd"}, nil
}

// round runs one phase against a fresh responder process.
func (r *run) round(ctx context.Context, who string, ph Phase) (*Round, error) {
	if err := r.lab.FlushNeighbours(ctx); err != nil {
		return nil, err
	}
	resp, err := r.startResponder(ctx, who)
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			resp.p.kill()
		}
	}()
	rd := &Round{Who: who, IdleRSS: resp.idleRSS}
	respBefore, err1 := ReadUDPCounters(r.lab.Resp)
	phBefore, err2 := ReadUDPCounters(r.lab.Phones)
	uBefore, err3 := resp.p.usage()
	selfBefore := selfCPU()
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, err
	}
	ph.Target = group
	ph.Deadline = r.o.PhaseLimit
	out, runErr := r.fleet.Run(ctx, ph)
	if ctx.Err() != nil {
		// Interrupted, or the whole run's time is up: a cut round would
		// only mislead the table (the responder may be gone already).
		return nil, ctx.Err()
	}
	rd.Out = out
	answered := out.Notified
	if !resp.minimal {
		// pnpd logs each exchange when the phone's 200 arrives.
		rd.Confirmed, rd.LastConfirmed = resp.p.waitProvisioned(answered, 2*time.Second)
	} else {
		time.Sleep(100 * time.Millisecond) // the last 200s in flight
	}
	rd.Bench = selfCPU() - selfBefore
	uAfter, err1 := resp.p.usage()
	respAfter, err2 := ReadUDPCounters(r.lab.Resp)
	phAfter, err3 := ReadUDPCounters(r.lab.Phones)
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, err
	}
	rd.CPU, rd.HWM = uAfter.CPU-uBefore.CPU, uAfter.HWM
	rd.Resp, rd.Phones = respAfter.Sub(respBefore), phAfter.Sub(phBefore)
	stopped = true
	stopErr := resp.p.stop()
	rd.Warnings = resp.p.warningLines()
	if resp.minimal && stopErr == nil {
		var st MinimalStats
		if err := json.Unmarshal(resp.p.stdout.Bytes(), &st); err != nil {
			return rd, fmt.Errorf("bench: the minimal responder's counts %q: %w", resp.p.stdout.String(), err)
		}
		rd.Confirmed, rd.LastConfirmed = st.Others, st.LastOther
	}
	r.log.Info("round", "who", who, "phones", ph.Count, "done", out.Done, "notified", out.Notified,
		"confirmed", rd.Confirmed, "took", rd.AllDone().Round(time.Millisecond).String(),
		"rcvbuf_drops", rd.Resp.RcvbufErrors, "cpu", rd.CPU.String())
	if runErr != nil && !errors.Is(runErr, context.DeadlineExceeded) {
		return rd, errors.Join(runErr, stopErr)
	}
	if runErr != nil {
		// The phase's own limit (the run's context is still live).
		r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("%s: a round against %s stopped at the phase limit of %v with %d of %d phones done; its figures are in the table",
			phaseName(ph), who, r.o.PhaseLimit, out.Done, ph.Count))
	}
	return rd, stopErr
}

func phaseName(ph Phase) string {
	switch {
	case ph.Offer > 0:
		return "boot storm"
	case ph.Outstanding == 1:
		return "single phones"
	}
	return "saturation"
}

func (r *run) singles(ctx context.Context) error {
	for _, who := range []string{"pnpd", "minimal", "spinning"} {
		rd, err := r.round(ctx, who, Phase{Count: r.o.Singles, Outstanding: 1, Gap: r.o.Gap, Notify: true})
		if rd != nil {
			r.rep.Single[who] = rd
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *run) storms(ctx context.Context) error {
	return r.rounds(ctx, r.rep.Storm, Phase{Count: r.o.Phones, Offer: r.o.Offer, Notify: true})
}

func (r *run) saturation(ctx context.Context) error {
	return r.rounds(ctx, r.rep.Saturation, Phase{Count: r.o.Phones, Outstanding: r.o.Outstanding, Notify: true})
}

// rounds runs the phase Options.Rounds times against pnpd and the minimal
// responder in turn, so that both meet the machine's moods alike.
func (r *run) rounds(ctx context.Context, into map[string][]*Round, ph Phase) error {
	for range r.o.Rounds {
		for _, who := range []string{"pnpd", "minimal"} {
			rd, err := r.round(ctx, who, ph)
			if rd != nil {
				into[who] = append(into[who], rd)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *run) parse(context.Context) error {
	if r.o.Packets == "" {
		r.rep.Notes = append(r.rep.Notes, "parser: left out (no -packets directory)")
		return nil
	}
	rows, err := ComparePackets(r.o.Packets, r.o.ParseTime)
	r.rep.Parse = rows
	return err
}

// asterisk measures Asterisk's 401 to the single phones, then the PBX data,
// with one Asterisk in the responder's namespace.
func (r *run) asterisk(ctx context.Context) error {
	if r.o.Asterisk == AsteriskOff {
		r.rep.Notes = append(r.rep.Notes, "Asterisk: left out (-asterisk off)")
		return nil
	}
	if _, err := asterisk.FindRoot(); err != nil {
		if r.o.Asterisk == AsteriskRequired {
			return err
		}
		r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("Asterisk: left out: %v", err))
		return nil
	}
	inst, err := asterisk.Start(ctx, asterisk.Options{
		NS:    r.lab.Resp,
		PJSIP: asterisk.UDPTransport(netip.AddrPortFrom(netip.IPv4Unspecified(), group.Port()).String()),
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := inst.Close(); err != nil {
			r.log.Warn("stopping Asterisk", "err", err)
		}
	}()
	if err := waitBound(ctx, inst.PID(), netip.AddrPortFrom(netip.IPv4Unspecified(), group.Port())); err != nil {
		return err
	}
	// Asterisk's socket on 0.0.0.0:5060 gets the group's datagrams once
	// any socket of the namespace has joined the group on the link.
	ifi, err := r.lab.Resp.InterfaceByName(r.lab.RespIf)
	if err != nil {
		return err
	}
	member, err := r.lab.Resp.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer member.Close()
	if err := ipv4.NewPacketConn(member).JoinGroup(ifi, &net.UDPAddr{IP: group.Addr().AsSlice()}); err != nil {
		return fmt.Errorf("bench: joining the group for Asterisk: %w", err)
	}
	if err := r.lab.FlushNeighbours(ctx); err != nil {
		return err
	}
	out, err := r.fleet.Run(ctx, Phase{Count: r.o.Singles, Outstanding: 1, Gap: r.o.Gap, Target: group, Deadline: r.o.PhaseLimit})
	r.rep.Single["asterisk"] = &Round{Who: "asterisk", Out: out}
	if err != nil {
		return fmt.Errorf("single phones against Asterisk: %w", err)
	}
	member.Close()
	if len(r.o.PBXSizes) == 0 {
		return nil
	}
	return r.pbxData(ctx, inst)
}

// waitBound waits until process pid holds a UDP socket on addr.
func waitBound(ctx context.Context, pid int, addr netip.AddrPort) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		held, hs, err := netio.HeldBy(pid, addr)
		if held {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: Asterisk (pid %d) did not bind UDP %s within 15 s (holders %v, %v)", pid, addr, hs, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pbxData fills the families, times their loads and DBGet, then has a pnpd
// serve hold the largest.
func (r *run) pbxData(ctx context.Context, inst *asterisk.Instance) error {
	// The bench's AMI client lives in the machine's namespace; Asterisk's
	// AMI listens on the lab's loopback. Join them on loopback.
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	go forward(l, func() (net.Conn, error) { return inst.Dial(ctx) })
	c := ami.New(ami.Config{Address: l.Addr().String(), Username: inst.Username, Secret: inst.Secret})
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan struct{})
	go func() { _ = c.Serve(cctx); close(served) }()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = c.Shutdown(sctx)
		scancel()
		cancel()
		<-served
	}()
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	err = c.WaitConnected(wctx)
	wcancel()
	if err != nil {
		return fmt.Errorf("bench: AMI: %w", err)
	}
	// The report shows the PBX part only once all of it is measured.
	rep := &PBXReport{}
	sizes := slices.Sorted(slices.Values(r.o.PBXSizes))
	for _, n := range sizes {
		fam := familyOf(n)
		r.log.Info("filling the PBX database", "family", fam, "phones", n)
		fill, err := fillFamily(ctx, c, fam, n)
		if err != nil {
			return err
		}
		s := PBXSize{Phones: n, Fill: fill}
		for range loadRuns {
			took, entries, err := loadFamily(ctx, c, fam)
			if err != nil {
				return err
			}
			s.Entries = entries
			s.Loads = append(s.Loads, took)
		}
		rep.Sizes = append(rep.Sizes, s)
	}
	if rep.Get, err = dbGetRTT(ctx, c, familyOf(sizes[0]), 200); err != nil {
		return err
	}
	// pnpd serve holding the largest family, on another group port than
	// Asterisk's 5060.
	largest := sizes[len(sizes)-1]
	cfg := filepath.Join(r.workDir, "pnpd-pbx.toml")
	text := fmt.Sprintf("[sip]\ninterfaces = [%q]\nmode = \"bind\"\ngroup = \"224.0.1.75:5061\"\n\n[ami]\naddress = %q\nusername = %q\nsecret = %q\nfamily = %q\n",
		r.lab.RespIf, inst.Addr, inst.Username, inst.Secret, familyOf(largest))
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		return err
	}
	p, err := startProc(ctx, r.lab.Resp, "pnpd serve (PBX)", " msg=ready ", r.o.Exe, "serve", "-config", cfg)
	if err != nil {
		return err
	}
	defer p.kill()
	select {
	case line := <-p.snapshot:
		rep.ServeEntries = atoiField(line, "entries")
		rep.ServeTook = field(line, "took")
	case <-p.exited:
		return fmt.Errorf("bench: pnpd exited before its PBX snapshot:\n%s", p.lastLines())
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return fmt.Errorf("bench: pnpd logged no PBX snapshot within 30 s:\n%s", p.lastLines())
	}
	// Let the loading's garbage be collected, as in a daemon that runs on.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(2 * time.Second):
	}
	u, err := p.usage()
	if err != nil {
		return err
	}
	rep.ServeRSS, rep.ServeHWM = u.RSS, u.HWM
	if err := p.stop(); err != nil {
		return err
	}
	r.rep.PBX = rep
	return nil
}

// field returns the value of key=value in a line of pnpd's log.
func field(line, key string) string {
	_, v, ok := strings.Cut(line, " "+key+"=")
	if !ok {
		return ""
	}
	v, _, _ = strings.Cut(v, " ")
	return strings.Trim(v, `"`)
}

func atoiField(line, key string) int {
	var n int
	_, _ = fmt.Sscanf(field(line, key), "%d", &n)
	return n
}

// selfCPU is this process's CPU time so far.
func selfCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func runtimeCPUs() int {
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) == nil {
		return set.Count()
	}
	return 0
}

func kernel() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
