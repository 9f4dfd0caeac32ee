// Command pnpd answers SIP Plug-and-Play SUBSCRIBEs from desk phones with
// their provisioning URL. See the README for the subcommands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// errUsage marks errors that are the caller's words being off: exit 2.
var errUsage = errors.New("usage")

const usage = `pnpd: SIP Plug-and-Play responder for desk phones

usage:
  pnpd serve    [-config FILE] [-log-level LEVEL]
  pnpd simulate -vendor BRAND -iface NAME [-mac MAC] [-target 224.0.1.75:5060] [-timeout 5s] [-fetch]
  pnpd resolve  [-config FILE] -mac MAC [-vendor V] [-model M] [-version X] [-ip IP] [-iface NAME]
  pnpd ctl      [-config FILE] assign MAC TENANT | unassign MAC | tenant set NAME URL |
                               tenant list | list | reload | pending | approve MAC TENANT |
                               window open DURATION | window close | window | rearm MAC
  pnpd doctor   [-config FILE]
  pnpd status   [-config FILE] [-metrics HOST:PORT] [-json]
  pnpd token    verify [-config FILE] -mac MAC TOKEN
  pnpd bench    [-phones 10000] [-offer 1s] [-asterisk auto|off|required] [-pbx 10000,100000] ...

Run "pnpd COMMAND -h" for the flags of one command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	var code int
	switch args[0] {
	case "serve":
		err = serveCmd(args[1:], stderr)
	case "simulate":
		code, err = simulateCmd(args[1:], stdout, stderr)
	case "resolve":
		code, err = resolveCmd(args[1:], stdout, stderr)
	case "ctl":
		err = ctlCmd(args[1:], stdout, stderr)
	case "doctor":
		code, err = doctorCmd(args[1:], stdout, stderr)
	case "status":
		code, err = statusCmd(args[1:], stdout, stderr)
	case "token":
		code, err = tokenCmd(args[1:], stdout, stderr)
	case "bench":
		err = benchCmd(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "pnpd: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "pnpd %s: %v\n", args[0], err)
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "pnpd %s: %v\n", args[0], err)
		return 1
	}
	return code
}

// newFlagSet returns a flag set that reports errors rather than exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("pnpd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args and refuses positional leftovers.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

// newLogger returns a text logger on w at the named level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("%w: -log-level %q: want debug, info, warn or error", errUsage, level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
