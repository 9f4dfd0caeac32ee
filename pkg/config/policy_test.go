package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// amiSection is the least [ami] that validates; the PBX is not dialled.
const amiSection = "[ami]\nusername = \"pnpd\"\nsecret = \"s\"\n"

// writeSecret writes a token secret into dir and returns its path.
func writeSecret(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPolicyDefaults(t *testing.T) {
	want := Policy{
		Unknown:         "default",
		ContactIsSource: true,
		SourceRate:      Rate{N: 10, Per: 10 * time.Second},
		MACRate:         Rate{N: 10, Per: 10 * time.Second},
		MaxTransactions: 50000,
		TokenTTL:        15 * time.Minute,
	}
	if got := Default().Policy; !reflect.DeepEqual(got, want) {
		t.Errorf("Default():\n got %+v\nwant %+v", got, want)
	}
	for _, text := range []string{"", "[policy]\n", "[sip]\nport = 5070\n", "[policy]\nallow_macs = []\ndeny_macs = []\n"} {
		t.Run(fmt.Sprintf("%q", text), func(t *testing.T) {
			c, err := Parse([]byte(text))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Policy, want) {
				t.Errorf("\n got %+v\nwant %+v", c.Policy, want)
			}
		})
	}
	// Default hands out a fresh Policy: a caller changing one does not
	// change the next.
	d := Default()
	d.Policy.SourceRate.N = 1
	if Default().Policy.SourceRate.N != 10 || DefaultRate.N != 10 {
		t.Error("changing a Default() changed the defaults")
	}
}

func TestPolicyParse(t *testing.T) {
	dir := t.TempDir()
	secret := writeSecret(t, dir, "token.secret")
	text := amiSection + fmt.Sprintf(`
[resolve]
default = "http://prov.example.com/{token}/"

[policy]
unknown = "approve"
contact_is_source = false
source_rate = "600/1m"
mac_rate = "off"
max_transactions = 1000
allow_macs = ["00:15:65", "0004F2000001", "00-1F-C1"]
deny_macs = ["0015.65aa.bbcc"]
window = true
once = true
neighbor_check = true
token_secret_file = %q
token_ttl = "1h"
`, secret)
	c, err := Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	want := Policy{
		Unknown:         "approve",
		ContactIsSource: false,
		SourceRate:      Rate{N: 600, Per: time.Minute},
		MACRate:         Rate{},
		MaxTransactions: 1000,
		AllowMACs:       []string{"001565", "0004f2000001", "001fc1"},
		DenyMACs:        []string{"001565aabbcc"},
		Window:          true,
		Once:            true,
		NeighborCheck:   true,
		TokenSecretFile: secret,
		TokenTTL:        time.Hour,
	}
	if !reflect.DeepEqual(c.Policy, want) {
		t.Errorf("\n got %+v\nwant %+v", c.Policy, want)
	}
	if !c.Policy.MACRate.Off() || c.Policy.SourceRate.Off() {
		t.Errorf("Off: mac_rate %v source_rate %v", c.Policy.MACRate.Off(), c.Policy.SourceRate.Off())
	}

	for _, tt := range []struct {
		name, text string
		check      func(Policy) bool
	}{
		{"observe without ami", "[policy]\nunknown = \"observe\"\n", func(p Policy) bool { return p.Unknown == "observe" }},
		{"unknown trimmed", "[policy]\nunknown = \" observe \"\n", func(p Policy) bool { return p.Unknown == "observe" }},
		{"neighbor_check without ami", "[policy]\nneighbor_check = true\n", func(p Policy) bool { return p.NeighborCheck }},
		{"window off without ami", "[policy]\nwindow = false\nonce = false\n", func(p Policy) bool { return !p.Window && !p.Once }},
		{"default without ami", "[policy]\nunknown = \"default\"\n", func(p Policy) bool { return p.Unknown == "default" }},
		{"empty secret file", "[policy]\ntoken_secret_file = \"\"\n", func(p Policy) bool { return p.TokenSecretFile == "" }},
		{"ttl lowest", "[policy]\ntoken_ttl = \"1m\"\n", func(p Policy) bool { return p.TokenTTL == time.Minute }},
		{"ttl highest", "[policy]\ntoken_ttl = \"168h\"\n", func(p Policy) bool { return p.TokenTTL == 168*time.Hour }},
		{"max_transactions bounds", "[policy]\nmax_transactions = 10000000\n", func(p Policy) bool { return p.MaxTransactions == 10_000_000 }},
		{"one transaction", "[policy]\nmax_transactions = 1\n", func(p Policy) bool { return p.MaxTransactions == 1 }},
		{"rate with spaces", "[policy]\nsource_rate = \" 10/s \"\n", func(p Policy) bool { return p.SourceRate == Rate{N: 10, Per: time.Second} }},
		{"token without MAC placeholder in a rule", "[[resolve.rule]]\nvendor = \"yealink\"\nurl = \"http://y/{mac}/\"\n", func(p Policy) bool { return p.TokenSecretFile == "" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.text))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c.Policy) {
				t.Errorf("%+v", c.Policy)
			}
		})
	}
}

func TestPolicyBad(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"unknown mode", "[policy]\nunknown = \"ask\"\n", `line 2: policy.unknown: "ask" is not one of default, observe, approve`},
		{"unknown empty", "[policy]\nunknown = \"\"\n", "policy.unknown"},
		{"approve without ami", "[policy]\nunknown = \"approve\"\n", "line 2: policy.unknown: \"approve\" records unknown phones in the PBX's database: it needs an [ami] section"},
		{"window without ami", "[policy]\nwindow = true\n", "line 2: policy.window: the provisioning window is kept in the PBX's database: it needs an [ami] section"},
		{"once without ami", "[policy]\nonce = true\n", "line 2: policy.once: what was provisioned is kept in the PBX's database: it needs an [ami] section"},
		{"bad source_rate", "[policy]\nsource_rate = \"fast\"\n", `line 2: policy.source_rate: "fast" is not a rate`},
		{"zero period mac_rate", "[policy]\nmac_rate = \"10/0s\"\n", "line 2: policy.mac_rate"},
		{"rate as a number (TOML type)", "[policy]\nsource_rate = 10\n", "policy.source_rate"},
		{"max_transactions 0", "[policy]\nmax_transactions = 0\n", "line 2: policy.max_transactions: 0: want 1 to 10000000"},
		{"max_transactions negative", "[policy]\nmax_transactions = -5\n", "policy.max_transactions: -5"},
		{"max_transactions huge", "[policy]\nmax_transactions = 10000001\n", "policy.max_transactions: 10000001"},
		{"allow_macs not hex", "[policy]\nallow_macs = [\"00:15:65\", \"00:1f:zz\"]\n", `line 2: policy.allow_macs: entry 2: "00:1f:zz" is not a MAC address or prefix`},
		{"allow_macs empty entry", "[policy]\nallow_macs = [\"\"]\n", "policy.allow_macs: entry 1"},
		{"allow_macs separators only", "[policy]\nallow_macs = [\":-.\"]\n", "policy.allow_macs: entry 1"},
		{"allow_macs too long", "[policy]\nallow_macs = [\"00:15:65:aa:bb:cc:dd\"]\n", "policy.allow_macs: entry 1"},
		{"deny_macs not hex", "[policy]\ndeny_macs = [\"yealink\"]\n", "line 2: policy.deny_macs: entry 1"},
		{"deny_macs as a string (TOML type)", "[policy]\ndeny_macs = \"001565\"\n", "policy.deny_macs"},
		{"window as a string (TOML type)", "[policy]\nwindow = \"yes\"\n", "policy.window"},
		{"ttl not a duration", "[policy]\ntoken_ttl = \"soon\"\n", `line 2: policy.token_ttl: "soon" is not a duration`},
		{"ttl too short", "[policy]\ntoken_ttl = \"59s\"\n", "line 2: policy.token_ttl: 59s: want 1m to 168h"},
		{"ttl too long", "[policy]\ntoken_ttl = \"168h0m1s\"\n", "policy.token_ttl: 168h0m1s: want 1m to 168h"},
		{"ttl negative", "[policy]\ntoken_ttl = \"-15m\"\n", "policy.token_ttl"},
		{"ttl zero", "[policy]\ntoken_ttl = \"0s\"\n", "policy.token_ttl"},
		{"secret file missing", "[policy]\ntoken_secret_file = \"/nonexistent/pnpd-token.secret\"\n", "line 2: policy.token_secret_file: stat /nonexistent/pnpd-token.secret"},
		{"token in default without secret", "[resolve]\ndefault = \"http://p/{token}/\"\n", "line 2: resolve.default: uses {token}, but [policy] token_secret_file is not set"},
		{"token in a rule without secret", "[[resolve.rule]]\nvendor = \"yealink\"\nurl = \"http://y/\"\n[[resolve.rule]]\nvendor = \"snom\"\nurl = \"http://s/{token}/\"\n",
			"resolve.rule[2].url: uses {token}, but [policy] token_secret_file is not set"},
		{"token with an empty secret file", "[resolve]\ndefault = \"http://p/{token}/\"\n[policy]\ntoken_secret_file = \"\"\n", "resolve.default: uses {token}"},
		{"unknown policy key", "[policy]\nsource_rate = \"10/10s\"\nrate = \"10/10s\"\n", "line 3: policy.rate: unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.text))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "config: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			// A value of the wrong TOML type is the decoder's error, not
			// a KeyError: TestPolicyTypeError.
			if !strings.HasSuffix(tt.name, "(TOML type)") && !errors.Is(err, ErrInvalid) {
				t.Errorf("error %q is not ErrInvalid", err)
			}
		})
	}
}

// TestPolicyTypeError: a value of the wrong TOML type is as invalid as a
// bad value of the right type, and says so the same way.
func TestPolicyTypeError(t *testing.T) {
	for _, tt := range []struct{ text, key string }{
		{"[policy]\nsource_rate = 10\n", "policy.source_rate"},
		{"[policy]\nwindow = \"yes\"\n", "policy.window"},
	} {
		t.Run(tt.key, func(t *testing.T) {
			_, err := Parse([]byte(tt.text))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), tt.key) {
				t.Errorf("error %q does not name line 2 and %s", err, tt.key)
			}
			if strings.HasPrefix(err.Error(), "config: : ") {
				t.Errorf("error %q names an empty file", err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %q is not ErrInvalid", err)
			}
		})
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want Rate
		err  string // in the error; "" when valid
	}{
		{"10/10s", Rate{N: 10, Per: 10 * time.Second}, ""},
		{"600/1m", Rate{N: 600, Per: time.Minute}, ""},
		{"10/s", Rate{N: 10, Per: time.Second}, ""},
		{"1/h", Rate{N: 1, Per: time.Hour}, ""},
		{"100/ms", Rate{N: 100, Per: time.Millisecond}, ""},
		{"5/1m30s", Rate{N: 5, Per: 90 * time.Second}, ""},
		{"1/24h", Rate{N: 1, Per: 24 * time.Hour}, ""},
		{" 10/10s ", Rate{N: 10, Per: 10 * time.Second}, ""},
		{"off", Rate{}, ""},
		{" off\t", Rate{}, ""},
		{"0/10s", Rate{}, `the count "0" is not a whole number of at least 1`},
		{"-1/10s", Rate{}, "the count"},
		{"+10/10s", Rate{}, "the count"},
		{"010/10s", Rate{}, "the count"},
		{"1e3/10s", Rate{}, "the count"},
		{"99999999999999999999/10s", Rate{}, "the count"},
		{"10", Rate{}, `"10" is not a rate such as "10/10s"`},
		{"", Rate{}, "is not a rate"},
		{"Off", Rate{}, "is not a rate"},
		{"x/10s", Rate{}, `the count "x"`},
		{"/10s", Rate{}, "the count"},
		{"10/", Rate{}, "the period"},
		{"10/0s", Rate{}, `the period "0s" is not a duration`},
		{"10/-1s", Rate{}, `the period "-1s"`},
		{"10/10", Rate{}, "the period"},
		{"10/d", Rate{}, "the period"},
		{"10/10s/2", Rate{}, "the period"},
		{"10 / 10s", Rate{}, "the count"},
		{"10/48h", Rate{}, "a period over 24h is not a rate limit"},
		{"10/24h1s", Rate{}, "over 24h"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRate(tt.in)
			if tt.err == "" {
				if err != nil {
					t.Fatalf("ParseRate: %v", err)
				}
				if got != tt.want {
					t.Errorf("got %+v, want %+v", got, tt.want)
				}
				// What String writes reads back as the same rate.
				again, err := ParseRate(got.String())
				if err != nil || again != got {
					t.Errorf("ParseRate(%q) = %+v, %v; want %+v", got.String(), again, err, got)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted as %+v", got)
			}
			if !strings.Contains(err.Error(), tt.err) {
				t.Errorf("error %q does not mention %q", err, tt.err)
			}
			if got != (Rate{}) {
				t.Errorf("an error with the rate %+v", got)
			}
		})
	}
}

func TestRateString(t *testing.T) {
	for _, tt := range []struct {
		r    Rate
		want string
	}{
		{Rate{N: 10, Per: 10 * time.Second}, "10/10s"},
		{Rate{N: 1, Per: time.Second}, "1/1s"},
		{Rate{}, "off"},
		{Rate{N: -1, Per: time.Second}, "off"},
		{Rate{N: 0, Per: time.Second}, "off"},
	} {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.r, got, tt.want)
		}
		if got := tt.r.Off(); got != (tt.want == "off") {
			t.Errorf("%#v.Off() = %v", tt.r, got)
		}
	}
}

func TestPolicyTokenSecretFile(t *testing.T) {
	dir := t.TempDir()
	secret := writeSecret(t, dir, "token.secret")
	write := func(t *testing.T, text string) string {
		t.Helper()
		p := filepath.Join(dir, "pnpd.toml")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const tmpl = "[resolve]\ndefault = \"http://p/{token}/\"\n\n[[resolve.rule]]\nvendor = \"yealink\"\nurl = \"http://y/{token}/\"\n\n[policy]\ntoken_secret_file = %q\n"

	t.Run("relative to the config file", func(t *testing.T) {
		// The working directory is the package's, not dir: a path
		// resolved against it would not exist.
		c, err := Load(write(t, fmt.Sprintf(tmpl, "token.secret")))
		if err != nil {
			t.Fatal(err)
		}
		if c.Policy.TokenSecretFile != secret {
			t.Errorf("token_secret_file %q, want %q", c.Policy.TokenSecretFile, secret)
		}
	})
	t.Run("relative in a subdirectory", func(t *testing.T) {
		if err := os.Mkdir(filepath.Join(dir, "keys"), 0o700); err != nil {
			t.Fatal(err)
		}
		want := writeSecret(t, filepath.Join(dir, "keys"), "t")
		c, err := Load(write(t, fmt.Sprintf(tmpl, "keys/t")))
		if err != nil {
			t.Fatal(err)
		}
		if c.Policy.TokenSecretFile != want {
			t.Errorf("token_secret_file %q, want %q", c.Policy.TokenSecretFile, want)
		}
	})
	t.Run("absolute", func(t *testing.T) {
		c, err := Load(write(t, fmt.Sprintf(tmpl, secret)))
		if err != nil {
			t.Fatal(err)
		}
		if c.Policy.TokenSecretFile != secret {
			t.Errorf("token_secret_file %q", c.Policy.TokenSecretFile)
		}
	})
	t.Run("missing", func(t *testing.T) {
		p := write(t, fmt.Sprintf(tmpl, "missing.secret"))
		_, err := Load(p)
		if err == nil {
			t.Fatal("accepted")
		}
		for _, w := range []string{p + ":9: policy.token_secret_file", filepath.Join(dir, "missing.secret"), "no such file"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
	})
	t.Run("token without the key", func(t *testing.T) {
		p := write(t, "[resolve]\ndefault = \"http://p/\"\n\n[[resolve.rule]]\nvendor = \"yealink\"\nurl = \"http://y/{token}/\"\n")
		_, err := Load(p)
		if err == nil || !strings.Contains(err.Error(), p+":6: resolve.rule[1].url: uses {token}") {
			t.Errorf("error %v", err)
		}
	})
}

func TestPolicyNeedsAMI(t *testing.T) {
	// With [ami] each is accepted; without, the error names the key and
	// the missing section.
	for _, key := range []string{"unknown = \"approve\"", "window = true", "once = true"} {
		t.Run(key, func(t *testing.T) {
			if _, err := Parse([]byte(amiSection + "[policy]\n" + key + "\n")); err != nil {
				t.Errorf("with [ami]: %v", err)
			}
			_, err := Parse([]byte("[policy]\n" + key + "\n"))
			name, _, _ := strings.Cut(key, " ")
			if err == nil || !strings.Contains(err.Error(), "policy."+name+": ") || !strings.Contains(err.Error(), "[ami]") {
				t.Errorf("without [ami]: %v", err)
			}
		})
	}
}

// TestPolicyMACListGroups: a MAC written with unpadded octets, as some
// tools print it ("0:15:65:aa:bb:cc"), must not silently become another
// prefix ("01565aabbcc"): a deny entry would then deny nothing it was
// meant to.
func TestPolicyMACListGroups(t *testing.T) {
	for _, tt := range []struct {
		key, entry string
	}{
		{"deny_macs", "0:15:65:aa:bb:cc"},
		{"allow_macs", "0:4:f2"},
		{"deny_macs", "00-15-6-aa-bb-cc"},
		{"allow_macs", "001.565.aab.bcc"},
	} {
		t.Run(tt.entry, func(t *testing.T) {
			c, err := Parse([]byte(fmt.Sprintf("[policy]\n%s = [%q]\n", tt.key, tt.entry)))
			if err == nil {
				t.Fatalf("accepted as %q %q", c.Policy.AllowMACs, c.Policy.DenyMACs)
			}
			if !strings.Contains(err.Error(), "policy."+tt.key+": entry 1") {
				t.Errorf("error %q does not name the entry", err)
			}
		})
	}
	// Padded groups, and a prefix that ends inside an octet, stay valid.
	for _, entry := range []string{"00:15:65", "00:15:6", "0015.65aa.bbcc", "00-15-65-AA-BB-CC", "001565"} {
		if _, err := Parse([]byte(fmt.Sprintf("[policy]\ndeny_macs = [%q]\n", entry))); err != nil {
			t.Errorf("%q: %v", entry, err)
		}
	}
}

// TestPolicyTokenSecretNotAFile: the secret must be a file; a directory
// passes os.Stat and fails only when pnpd starts.
func TestPolicyTokenSecretNotAFile(t *testing.T) {
	dir := t.TempDir()
	_, err := Parse([]byte(fmt.Sprintf("[policy]\ntoken_secret_file = %q\n", dir)))
	if err == nil || !strings.Contains(err.Error(), "policy.token_secret_file") {
		t.Errorf("a directory as token_secret_file: %v", err)
	}
}
