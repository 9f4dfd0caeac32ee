package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/phone"
	"github.com/pnpd/pnpd/pkg/policy"
)

const tokenUsage = `usage:
  pnpd token verify [-config FILE] -mac MAC TOKEN
        exit 0 and print "valid until TIME" when pnpd signed TOKEN for MAC
        and it has not expired; exit 1 with the reason when not (2 when
        the command line is wrong). TOKEN is always the last argument,
        read as a token even when it starts with '-'
  pnpd token sign   [-config FILE] -mac MAC
        print a fresh token for MAC, as serve puts it in {token}
`

// tokenCmd checks and makes the {token} values of URL templates, for the
// config server that hands out the files.
func tokenCmd(args []string, stdout, stderr io.Writer) (int, error) {
	if len(args) == 0 {
		fmt.Fprint(stderr, tokenUsage)
		return 0, fmt.Errorf("%w: want a subcommand: verify or sign", errUsage)
	}
	switch args[0] {
	case "verify":
		return tokenVerify(args[1:], stdout, stderr)
	case "sign":
		return 0, tokenSign(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, tokenUsage)
		return 0, nil
	}
	return 0, fmt.Errorf("%w: unknown subcommand %q: want verify or sign", errUsage, args[0])
}

func tokenVerify(args []string, stdout, stderr io.Writer) (int, error) {
	fs := newFlagSet("token verify", stderr)
	cfgPath := fs.String("config", config.DefaultPath, "configuration file")
	macFlag := fs.String("mac", "", "the MAC the token must be signed for (required)")
	// The token is whatever a client put in its URL: it is the last
	// argument, never a flag, so that "-h" or "-mac=..." as a token is a
	// malformed token and never help (exit 0) or another MAC.
	if len(args) == 0 || (len(args) >= 2 && (args[len(args)-2] == "-mac" || args[len(args)-2] == "-config")) {
		// Nothing after the flags' values: flags only, no token.
		if err := fs.Parse(args); err != nil {
			return 0, fmt.Errorf("%w: %v", errUsage, err)
		}
		return 0, fmt.Errorf("%w: missing TOKEN", errUsage)
	}
	token := args[len(args)-1]
	if err := fs.Parse(args[:len(args)-1]); err != nil {
		return 0, fmt.Errorf("%w: %v", errUsage, err) // -h among the flags included: never exit 0
	}
	if fs.NArg() > 0 {
		return 0, fmt.Errorf("%w: unexpected argument %q (TOKEN is the last argument)", errUsage, fs.Arg(0))
	}
	mac, err := tokenMAC(*macFlag)
	if err != nil {
		return 0, err
	}
	s, _, err := tokenSigner(*cfgPath)
	if err != nil {
		return 0, err
	}
	// The reasons are written here, one line each, rather than returned:
	// a config server logs them, and "policy:" prefixes would only be noise.
	err = s.Verify(mac, token, time.Now())
	exp, _ := policy.TokenExpiry(token)
	switch {
	case err == nil:
		fmt.Fprintf(stdout, "valid until %s\n", exp.UTC().Format(time.RFC3339))
		return 0, nil
	case errors.Is(err, policy.ErrTokenExpired):
		fmt.Fprintf(stderr, "pnpd token verify: expired at %s\n", exp.UTC().Format(time.RFC3339))
	case errors.Is(err, policy.ErrTokenInvalid):
		fmt.Fprintln(stderr, "pnpd token verify: not signed for this MAC with this secret")
	default:
		// Never echo the token: it may be anything a client sent.
		fmt.Fprintf(stderr, "pnpd token verify: malformed: %d characters, a token is %d of A-Z a-z 0-9 - _\n", len(token), policy.TokenLen)
	}
	return 1, nil
}

func tokenSign(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token sign", stderr)
	cfgPath := fs.String("config", config.DefaultPath, "configuration file")
	macFlag := fs.String("mac", "", "the MAC to sign for (required)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	mac, err := tokenMAC(*macFlag)
	if err != nil {
		return err
	}
	s, secretFile, err := tokenSigner(*cfgPath)
	if err != nil {
		return err
	}
	// verify stays quiet (its stderr is the reason); sign is for people.
	if w := policy.SecretFileWarning(secretFile); w != "" {
		fmt.Fprintln(stderr, "warning: "+w)
	}
	tok := s.Sign(mac, time.Now())
	exp, _ := policy.TokenExpiry(tok)
	fmt.Fprintln(stdout, tok)
	fmt.Fprintf(stderr, "valid until %s for MAC %s\n", exp.UTC().Format(time.RFC3339), mac)
	return nil
}

// tokenMAC checks the -mac flag and returns the form tokens are signed for.
func tokenMAC(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("%w: -mac is required", errUsage)
	}
	m, ok := phone.NormalizeMAC(s)
	if !ok {
		return "", fmt.Errorf("%w: -mac %q is not a MAC address", errUsage, s)
	}
	return m, nil
}

// tokenSigner builds the signer serve uses from the configuration file and
// returns it with the secret file's path.
func tokenSigner(path string) (*policy.Signer, string, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, "", err
	}
	f := cfg.Policy.TokenSecretFile
	if f == "" {
		return nil, "", fmt.Errorf("%s: no token secret: set [policy] token_secret_file to the file serve signs {token} with", path)
	}
	secret, err := policy.ReadSecret(f)
	if err != nil {
		return nil, "", fmt.Errorf("[policy] token_secret_file: %w", err)
	}
	s, err := policy.NewSigner(secret, cfg.Policy.TokenTTL)
	if err != nil {
		return nil, "", fmt.Errorf("[policy] token_secret_file %s: %w", f, err)
	}
	return s, f, nil
}

// parseInterspersed parses flags that may come before or after the
// positional arguments (`verify TOKEN -mac MAC` reads as well as
// `verify -mac MAC TOKEN`), and returns the positional ones. After "--"
// everything is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
