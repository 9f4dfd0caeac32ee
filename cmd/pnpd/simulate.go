package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pnpd/pnpd/pkg/phone"
	"github.com/pnpd/pnpd/pkg/simulate"
)

func simulateCmd(args []string, stdout, stderr io.Writer) (int, error) {
	fs := newFlagSet("simulate", stderr)
	vendor := fs.String("vendor", "", "brand to act as: "+strings.Join(phone.Brands(), " "))
	iface := fs.String("iface", "", "interface to send on (required: never guessed)")
	mac := fs.String("mac", "", "MAC address (default: random under the brand's OUI; audiocodes sends none)")
	target := fs.String("target", "224.0.1.75:5060", "where to send the SUBSCRIBE")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the NOTIFY")
	fetch := fs.Bool("fetch", false, "then fetch the brand's config files from the URL")
	ignore := fs.Int("ignore-notifies", 0, "do not answer the first N NOTIFYs (tests Timer E)")
	repeat := fs.Int("repeat", 0, "send the same SUBSCRIBE N more times (retransmissions)")
	linger := fs.Duration("linger", 0, "after answering, keep listening this long and count NOTIFYs")
	level := fs.String("log-level", "warn", "log level: debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return 0, err
	}
	if *vendor == "" || *iface == "" {
		return 0, fmt.Errorf("%w: -vendor and -iface are required", errUsage)
	}
	tgt, err := netip.ParseAddrPort(*target)
	if err != nil {
		return 0, fmt.Errorf("%w: -target %q: want IPv4:port", errUsage, *target)
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		return 0, err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := simulate.Run(ctx, simulate.Options{
		Vendor: strings.ToLower(*vendor), Iface: *iface, MAC: *mac, Target: tgt, Timeout: *timeout,
		Fetch: *fetch, IgnoreNotifies: *ignore, Repeat: *repeat, Linger: *linger,
		Stderr: stderr, Logger: log,
	})
	if res.URL != "" {
		fmt.Fprintln(stdout, res.URL)
	}
	// The summary is the last stderr line, whatever happened.
	switch {
	case errors.Is(err, simulate.ErrNoNotify):
		fmt.Fprintf(stderr, "pnpd simulate: %v\n", err)
		summary(stderr, res)
		return 1, nil
	case errors.Is(err, simulate.ErrOptions):
		return 0, fmt.Errorf("%w: %v", errUsage, err)
	case err != nil:
		fmt.Fprintf(stderr, "pnpd simulate: %v\n", err)
		summary(stderr, res)
		return 1, nil
	}
	summary(stderr, res)
	return 0, nil
}

// summary prints the last stderr line tests read.
func summary(w io.Writer, r simulate.Result) {
	codes := make([]string, len(r.Responses))
	for i, c := range r.Responses {
		codes[i] = strconv.Itoa(c)
	}
	lat := make([]string, len(r.Latencies))
	for i, d := range r.Latencies {
		lat[i] = d.String()
	}
	fmt.Fprintf(w, "result: ok=%t ok_latency=%s notifies=%d responses=%s latencies=%s\n",
		r.URL != "", r.OKLatency, r.Notifies, strings.Join(codes, ","), strings.Join(lat, ","))
}
