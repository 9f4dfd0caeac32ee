package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pnpd/pnpd/pkg/bench"
)

// benchTimeout bounds a whole `pnpd bench` run by default.
const benchTimeout = 15 * time.Minute

// benchCmd runs the measurement of docs/BENCHMARKS.md, or with "responder"
// the minimal responder it measures pnpd against.
func benchCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "responder" {
		return benchResponderCmd(args[1:], stdout, stderr)
	}
	fs := newFlagSet("bench", stderr)
	o := bench.Options{}
	fs.IntVar(&o.Phones, "phones", bench.DefaultPhones, "phones in the boot storm and in the saturation run (each its own MAC and address)")
	fs.DurationVar(&o.Offer, "offer", bench.DefaultOffer, "the storm's first SUBSCRIBEs are spread over this long")
	fs.IntVar(&o.Singles, "singles", bench.DefaultSingles, "phones sent one at a time for the single-phone latency")
	fs.DurationVar(&o.Gap, "gap", bench.DefaultGap, "pause after each single phone")
	fs.IntVar(&o.Outstanding, "outstanding", bench.DefaultOutstanding, "phones in flight at once in the saturation run")
	fs.IntVar(&o.Rounds, "rounds", bench.DefaultRounds, "rounds of the storm and of the saturation run for each responder (the table gives medians)")
	fs.StringVar(&o.Asterisk, "asterisk", bench.AsteriskAuto, "the real Asterisk (401 latency, PBX data): auto (when scripts/asterisk-root prepared one), off or required")
	pbxSizes := fs.String("pbx", "10000,100000", "PBX families to fill and load, phones each, comma-separated; \"\" for none")
	fs.StringVar(&o.Packets, "packets", "sip/testdata/phones", "directory of SUBSCRIBE packets for the parser comparison; \"\" for none")
	fs.DurationVar(&o.ParseTime, "parse-time", bench.DefaultParseTime, "time per parser and packet")
	fs.DurationVar(&o.PhaseLimit, "phase-limit", bench.DefaultPhaseLimit, "bound of each phase")
	fs.StringVar(&o.Exe, "exe", "", "the pnpd binary whose serve is measured, to compare two builds (default: this one; the minimal responder is always this one's)")
	timeout := fs.Duration("timeout", benchTimeout, "bound of the whole run")
	level := fs.String("log-level", "info", "progress log level: debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	if !explicit["packets"] {
		if _, err := os.Stat(o.Packets); err != nil {
			// Outside a checkout the default is not there: measure the rest.
			fmt.Fprintf(stderr, "pnpd bench: no %s here: the parser comparison is left out (run from a checkout, or pass -packets DIR)\n", o.Packets)
			o.Packets = ""
		}
	}
	o.PBXSizes = []int{}
	for _, f := range strings.Split(*pbxSizes, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return fmt.Errorf("%w: -pbx %q: %v", errUsage, *pbxSizes, err)
		}
		o.PBXSizes = append(o.PBXSizes, n)
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		return err
	}
	o.Logger = log
	// Zero in bench.Options means "the default"; on the command line it is
	// a mistake.
	for name, v := range map[string]int{"phones": o.Phones, "singles": o.Singles, "outstanding": o.Outstanding, "rounds": o.Rounds} {
		if v < 1 {
			return fmt.Errorf("%w: -%s %d: want at least 1", errUsage, name, v)
		}
	}
	for name, v := range map[string]time.Duration{"offer": o.Offer, "gap": o.Gap, "parse-time": o.ParseTime, "phase-limit": o.PhaseLimit, "timeout": *timeout} {
		if v <= 0 {
			return fmt.Errorf("%w: -%s %v: want a positive duration", errUsage, name, v)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := bench.Run(ctx, o)
	if errors.Is(err, bench.ErrOptions) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if rep != nil && (err == nil || len(rep.Single) > 0) {
		// What was measured before a failure is still worth reading.
		rep.Write(stdout)
	}
	return err
}

// benchResponderCmd is the minimal responder, run by `pnpd bench` inside
// its namespace: it prints its counts as JSON on stdout at SIGTERM.
func benchResponderCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench responder", stderr)
	iface := fs.String("iface", "", "interface to join the group on (required)")
	port := fs.Int("port", 5060, "the group's port")
	spin := fs.Bool("spin", false, "never sleep: poll the socket, one core busy (to show what waking up costs)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *iface == "" {
		return fmt.Errorf("%w: -iface is required", errUsage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	st, err := bench.Minimal{Iface: *iface, Port: *port, Spin: *spin}.Serve(ctx, func() {
		fmt.Fprintf(stderr, "minimal responder ready on %s port %d\n", *iface, *port)
	})
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(st)
}
