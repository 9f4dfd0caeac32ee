package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pnpd/pnpd/pkg/config"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pnpd.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const resolveConf = `
[resolve]
default = "http://prov.example.com/{vendor}/"

[[resolve.rule]]
mac = "001fc11b4e1c"
url = "http://admin:123456@192.168.0.25:88"

[[resolve.rule]]
vendor = "grandstream"
subnet = "192.168.1.0/24"
url = "http://gs.example.com/{mac}/"
`

func TestResolveCommand(t *testing.T) {
	cfg := writeConfig(t, resolveConf)
	noDefault := writeConfig(t, "[[resolve.rule]]\nvendor = \"snom\"\nurl = \"http://snom/\"\n")
	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     string
		stderrHave []string
		stderrNot  []string
	}{
		{"rule by mac", []string{"-config", cfg, "-mac", "00:1F:C1:1B:4E:1C"}, 0,
			"http://admin:123456@192.168.0.25:88\n", []string{"decided by: rule 1 (line 5)", "brand=htek"}, []string{"123456"}},
		{"rule by vendor and subnet", []string{"-config", cfg, "-mac", "c074ad112233", "-vendor", "Grandstream", "-ip", "192.168.1.2"}, 0,
			"http://gs.example.com/c074ad112233/\n", []string{"rule 1 (line 5): no (mac)", "decided by: rule 2 (line 9)"}, nil},
		{"default", []string{"-config", cfg, "-mac", "0015657322ff", "-model", "T21"}, 0,
			"http://prov.example.com/yealink/\n", []string{"decided by: default"}, nil},
		{"no url", []string{"-config", noDefault, "-mac", "0015657322ff"}, 1, "", []string{"observed, not answered"}, nil},
		{"bad mac", []string{"-config", cfg, "-mac", "nope"}, 2, "", []string{"-mac"}, nil},
		{"missing mac", []string{"-config", cfg}, 2, "", []string{"-mac is required"}, nil},
		{"bad ip", []string{"-config", cfg, "-mac", "0015657322ff", "-ip", "::1"}, 2, "", []string{"-ip"}, nil},
		{"stray argument", []string{"-config", cfg, "-mac", "0015657322ff", "extra"}, 2, "", []string{"unexpected argument"}, nil},
		{"missing config", []string{"-config", filepath.Join(t.TempDir(), "none.toml"), "-mac", "0015657322ff"}, 1, "", []string{"no such file"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := runCLI(t, append([]string{"resolve"}, tt.args...)...)
			if code != tt.code || out != tt.stdout {
				t.Errorf("exit %d stdout %q, want %d %q\nstderr:\n%s", code, out, tt.code, tt.stdout, errs)
			}
			for _, s := range tt.stderrHave {
				if !strings.Contains(errs, s) {
					t.Errorf("stderr lacks %q:\n%s", s, errs)
				}
			}
			for _, s := range tt.stderrNot {
				if strings.Contains(errs, s) {
					t.Errorf("stderr shows %q:\n%s", s, errs)
				}
			}
		})
	}
}

func TestUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage:"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"serve", "-log-level", "loud"}, 2, "-log-level"},
		{[]string{"serve", "-config", "/nonexistent/pnpd.toml"}, 1, "no such file"},
		{[]string{"simulate", "-vendor", "yealink"}, 2, "-iface are required"},
		{[]string{"simulate", "-vendor", "yealink", "-iface", "lo", "-target", "nowhere"}, 2, "-target"},
		{[]string{"simulate", "-vendor", "nokia", "-iface", "lo"}, 2, "nokia"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, errs := runCLI(t, tt.args...)
			if code != tt.code || !strings.Contains(errs, tt.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errs, tt.code, tt.want)
			}
		})
	}
}

func TestServeRefusesBadConfig(t *testing.T) {
	cfg := writeConfig(t, "[sip]\ngroup = \"224.0.1.75:5060\"\nallow = [\"lan\"]\n")
	code, _, errs := runCLI(t, "serve", "-config", cfg)
	if code != 1 || !strings.Contains(errs, cfg+":3: sip.allow") {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}

// TestExampleConfig keeps examples/pnpd.toml loadable: every key it sets is
// one the configuration knows (its secret_file points at systemd's
// credential, which exists only under the unit: a secret stands in).
func TestExampleConfig(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "examples", "pnpd.toml"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), `secret_file = "/run/credentials/pnpd.service/ami.secret"`, `secret = "x"`, 1)
	if text == string(data) {
		t.Fatal("examples/pnpd.toml no longer names the systemd credential as secret_file")
	}
	cfg, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.AMI.Enabled || cfg.AMI.Username != "pnpd" || len(cfg.Resolve.Rules) == 0 {
		t.Errorf("example config: %+v", cfg)
	}
}
