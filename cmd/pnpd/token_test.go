package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/policy"
)

const tokenTestSecret = "a test secret of thirty-two byte"

// tokenConfig writes a secret file and a configuration that names it
// relative to the configuration's directory, and returns the
// configuration's path.
func tokenConfig(t *testing.T, secret string, mode os.FileMode) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token.secret"), []byte(secret+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "pnpd.toml")
	conf := "[resolve]\ndefault = \"http://prov.example.com/p/{token}/\"\n\n[policy]\ntoken_secret_file = \"token.secret\"\ntoken_ttl = \"15m\"\n"
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTokenCommand(t *testing.T) {
	const mac = "001fc11b4e1c"
	cfg := tokenConfig(t, tokenTestSecret, 0o600)
	noSecret := writeConfig(t, "[resolve]\ndefault = \"http://prov.example.com/\"\n")

	s, err := policy.NewSigner([]byte(tokenTestSecret), 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	other, err := policy.NewSigner([]byte("another secret of thirty-two byt"), 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	valid := s.Sign(mac, now)
	validUntil := expiryOf(t, valid)
	// Signed an hour ago with a 15m ttl: 45 minutes past its expiry, far
	// from any boundary a slow machine could cross.
	expired := s.Sign(mac, now.Add(-time.Hour))
	expiredAt := expiryOf(t, expired)

	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     string
		stderrHave string // "" means stderr must be empty
	}{
		{"valid", []string{"verify", "-config", cfg, "-mac", mac, valid}, 0, "valid until " + validUntil + "\n", ""},
		{"flags after the token", []string{"verify", valid, "-mac", mac, "-config", cfg}, 2, "", "missing TOKEN"},
		{"valid, MAC with colons", []string{"verify", "-config", cfg, "-mac", "00:1F:C1:1B:4E:1C", valid}, 0, "valid until " + validUntil + "\n", ""},
		{"valid after --", []string{"verify", "-config", cfg, "-mac", mac, "--", valid}, 0, "valid until " + validUntil + "\n", ""},
		{"expired", []string{"verify", "-config", cfg, "-mac", mac, expired}, 1, "", "pnpd token verify: expired at " + expiredAt + "\n"},
		{"other MAC", []string{"verify", "-config", cfg, "-mac", "001fc11b4e1d", valid}, 1, "", "pnpd token verify: not signed for this MAC with this secret\n"},
		{"other secret", []string{"verify", "-config", cfg, "-mac", mac, other.Sign(mac, now)}, 1, "", "pnpd token verify: not signed for this MAC with this secret\n"},
		{"malformed", []string{"verify", "-config", cfg, "-mac", mac, "abc"}, 1, "", "pnpd token verify: malformed: 3 characters, a token is 28 of A-Z a-z 0-9 - _\n"},
		{"malformed, not echoed", []string{"verify", "-config", cfg, "-mac", mac, strings.Repeat("<script>", 1000)}, 1, "", "malformed: 8000 characters"},
		{"no -mac", []string{"verify", "-config", cfg, valid}, 2, "", "-mac is required"},
		{"not a MAC", []string{"verify", "-config", cfg, "-mac", "nope", valid}, 2, "", `-mac "nope" is not a MAC address`},
		{"no TOKEN", []string{"verify", "-config", cfg, "-mac", mac}, 2, "", "missing TOKEN"},
		{"extra argument", []string{"verify", "-config", cfg, "-mac", mac, valid, "more"}, 2, "", `unexpected argument "` + valid + `"`},
		// The token comes from a client's URL: whatever it holds, it is a
		// token, never help (exit 0) or a flag.
		{"token -h", []string{"verify", "-config", cfg, "-mac", mac, "-h"}, 1, "", "malformed: 2 characters"},
		{"token --help", []string{"verify", "-config", cfg, "-mac", mac, "--help"}, 1, "", "malformed: 6 characters"},
		{"token -help", []string{"verify", "-config", cfg, "-mac", mac, "-help"}, 1, "", "malformed"},
		{"token -mac=", []string{"verify", "-config", cfg, "-mac", mac, "-mac=001fc11b4e1d"}, 1, "", "malformed"},
		{"token -config=", []string{"verify", "-config", cfg, "-mac", mac, "-config=/dev/null"}, 1, "", "malformed"},
		{"token --", []string{"verify", "-config", cfg, "-mac", mac, "--"}, 1, "", "malformed"},
		{"help among the flags", []string{"verify", "-h", "-mac", mac, valid}, 2, "", "help requested"},
		{"unknown flag", []string{"verify", "-config", cfg, "-mac", mac, "-ttl", "1h", valid}, 2, "", "flag provided but not defined: -ttl"},
		{"unknown subcommand", []string{"check", "-mac", mac, valid}, 2, "", `unknown subcommand "check"`},
		{"no subcommand", nil, 2, "", "want a subcommand"},
		{"no secret configured", []string{"verify", "-config", noSecret, "-mac", mac, valid}, 1, "", "set [policy] token_secret_file"},
		{"no config file", []string{"verify", "-config", filepath.Join(t.TempDir(), "none.toml"), "-mac", mac, valid}, 1, "", "no such file"},
		{"help", []string{"-h"}, 0, tokenUsage, ""},
		{"sign, extra argument", []string{"sign", "-config", cfg, "-mac", mac, "more"}, 2, "", `unexpected argument "more"`},
		{"sign, no -mac", []string{"sign", "-config", cfg}, 2, "", "-mac is required"},
		{"sign, no secret configured", []string{"sign", "-config", noSecret, "-mac", mac}, 1, "", "set [policy] token_secret_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := runCLI(t, append([]string{"token"}, tt.args...)...)
			if code != tt.code || out != tt.stdout {
				t.Errorf("exit %d stdout %q, want %d %q\nstderr:\n%s", code, out, tt.code, tt.stdout, errs)
			}
			switch {
			case tt.stderrHave == "" && errs != "":
				t.Errorf("stderr not empty:\n%s", errs)
			case !strings.Contains(errs, tt.stderrHave):
				t.Errorf("stderr lacks %q:\n%s", tt.stderrHave, errs)
			}
			// A config server logs the reason: one line, never the token.
			if code == 1 && (strings.Count(errs, "\n") != 1 || len(errs) > 200) {
				t.Errorf("exit 1 wants a one-line reason on stderr, got:\n%s", errs)
			}
		})
	}
}

func TestTokenSignThenVerify(t *testing.T) {
	for _, tt := range []struct {
		name string
		mode os.FileMode
		warn bool
	}{
		{"private secret", 0o600, false},
		{"readable secret", 0o644, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tokenConfig(t, tokenTestSecret, tt.mode)
			if err := os.Chmod(filepath.Join(filepath.Dir(cfg), "token.secret"), tt.mode); err != nil {
				t.Fatal(err) // the umask may have narrowed WriteFile's mode
			}
			code, out, errs := runCLI(t, "token", "sign", "-config", cfg, "-mac", "C0-74-AD-11-22-33")
			tok := strings.TrimSuffix(out, "\n")
			if code != 0 || len(tok) != policy.TokenLen || !strings.Contains(errs, "valid until ") {
				t.Fatalf("sign: exit %d stdout %q stderr %q", code, out, errs)
			}
			if got := strings.Contains(errs, "chmod 600"); got != tt.warn {
				t.Errorf("sign: warning about the secret file's mode: %v, want %v\n%s", got, tt.warn, errs)
			}
			code, out, errs = runCLI(t, "token", "verify", "-config", cfg, "-mac", "c074ad112233", tok)
			if code != 0 || !strings.HasPrefix(out, "valid until ") || errs != "" {
				t.Fatalf("verify of a signed token: exit %d stdout %q stderr %q", code, out, errs)
			}
		})
	}
}

func expiryOf(t *testing.T, tok string) string {
	t.Helper()
	exp, err := policy.TokenExpiry(tok)
	if err != nil {
		t.Fatal(err)
	}
	return exp.UTC().Format(time.RFC3339)
}
