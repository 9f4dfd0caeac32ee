package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pnpd/pnpd/pkg/asterisk/asterisktest"
)

// rewrite writes a new configuration where start wrote the first, with the
// same [sip] header, and sends pnpd SIGHUP; it returns the number of log
// lines before the signal, for findLog.
func (l *lab) rewrite(t *testing.T, sipExtra, rest string) int {
	t.Helper()
	cfg := fmt.Sprintf("[sip]\ninterfaces = [%q]\ngroup = \"224.0.1.75:5060\"\n%s\n%s%s", l.pbxIf, sipExtra, reloadMetrics, rest)
	return l.rewriteRaw(t, cfg)
}

func (l *lab) rewriteRaw(t *testing.T, cfg string) int {
	t.Helper()
	// Written aside and renamed, as an editor or a configuration tool
	// would: pnpd must never read half a file.
	path := filepath.Join(l.dir, "pnpd.toml")
	if err := os.WriteFile(path+".new", []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	skip := len(completeLines(l.log.String()))
	if err := l.serve.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	return skip
}

// waitLogFrom waits for a log line with want, written after line skip.
func (l *lab) waitLogFrom(t *testing.T, skip int, want map[string]string) map[string]string {
	t.Helper()
	got, ok := l.findLog(skip, want)
	if !ok {
		t.Fatalf("serve log has no line with %v after line %d", want, skip)
	}
	return got
}

func (l *lab) wantURL(t *testing.T, mac, url string) {
	t.Helper()
	r := l.simulate(t, "-vendor", "yealink", "-mac", mac)
	if r.code != 0 || r.url != url {
		t.Fatalf("phone %s: want %s, got %s", mac, url, r)
	}
}

// reloadMetrics is the [metrics] section of every configuration of
// TestReloadSIGHUP: a reload cannot change it.
const reloadMetrics = "[metrics]\nlisten = \"127.0.0.1:9560\"\n"

// TestReloadSIGHUP changes the rules, the policy and the PBX of a running
// pnpd with SIGHUP; a bad file or a change only a restart can apply is
// refused with its reason, and the running configuration stays whole.
func TestReloadSIGHUP(t *testing.T) {
	l := newLab(t)
	a := asterisktest.Start(t, asterisktest.Options{NS: l.pbx})
	cli(t, a, "database put pnp mac/001565000031 acme")
	cli(t, a, "database put pnp tenant/acme/url http://acme.example/")
	a.WaitAstDBCommitted(t)

	l.start("", reloadMetrics+"[resolve]\ndefault = \"http://one.example/\"\n")
	l.wantURL(t, "001565000030", "http://one.example/")

	t.Run("rules", func(t *testing.T) {
		skip := l.rewrite(t, "", "[resolve]\ndefault = \"http://two.example/\"\n[[resolve.rule]]\nmac = \"001565000032\"\nurl = \"http://rule.example/\"\n")
		got := l.waitLogFrom(t, skip, map[string]string{"msg": "config reloaded"})
		if got["changed"] != "resolve" || got["rules"] != "1" {
			t.Errorf("reload line %v", got)
		}
		l.wantURL(t, "001565000033", "http://two.example/")
		l.wantURL(t, "001565000032", "http://rule.example/")
	})

	refusals := []struct {
		name, cfg, why string
	}{
		{"syntax", "[resolve]\ndefault = \"http://three.example/\n", "line"},
		{"bad value", "[resolve]\ndefault = \"http://three.example/\"\n[policy]\nsource_rate = \"often\"\n", "policy.source_rate"},
		{"restart only", "[resolve]\ndefault = \"http://three.example/\"\n", "sip.mode changed: only a restart applies it"},
	}
	for _, tc := range refusals {
		t.Run("refused "+tc.name, func(t *testing.T) {
			extra := ""
			if tc.name == "restart only" {
				extra = "mode = \"packet\"\n"
			}
			reloaded := len(l.logLines(map[string]string{"msg": "config reloaded"}))
			skip := l.rewrite(t, extra, tc.cfg)
			got := l.waitLogFrom(t, skip, map[string]string{"msg": "reload refused: the running configuration stays"})
			if !strings.Contains(got["err"], tc.why) {
				t.Errorf("refusal %q does not say %q", got["err"], tc.why)
			}
			if n := len(l.logLines(map[string]string{"msg": "config reloaded"})); n != reloaded {
				t.Errorf("reloaded after all")
			}
			// The whole running configuration stays, the rule included.
			l.wantURL(t, "001565000034", "http://two.example/")
			l.wantURL(t, "001565000032", "http://rule.example/")
		})
	}

	t.Run("pbx added", func(t *testing.T) {
		skip := l.rewrite(t, "", "[resolve]\ndefault = \"http://two.example/\"\n"+pbxConf(a, ""))
		got := l.waitLogFrom(t, skip, map[string]string{"msg": "config reloaded"})
		if got["changed"] != "resolve,ami" {
			t.Errorf("reload line %v", got)
		}
		l.waitLogFrom(t, skip, map[string]string{"msg": "pbx snapshot", "why": "login", "phones": "1"})
		l.wantURL(t, "001565000031", "http://acme.example/")
		l.wantURL(t, "001565000035", "http://two.example/")
		waitSeen(t, a, "001565000031", "provisioned")
		// The metrics read the parts a reload built.
		mfs, err := e2eScrape(l.pbx, "127.0.0.1:9560")
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := e2eValue(mfs, "pnpd_ami_up"); !ok || v != 1 {
			t.Errorf("pnpd_ami_up = %v (found %v) after [ami] was added", v, ok)
		}
		if v, ok := e2eValue(mfs, "pnpd_pbx_snapshot_phones"); !ok || v != 1 {
			t.Errorf("pnpd_pbx_snapshot_phones = %v (found %v)", v, ok)
		}
	})

	t.Run("policy", func(t *testing.T) {
		skip := l.rewrite(t, "", "[resolve]\ndefault = \"http://two.example/\"\n"+pbxConf(a, "")+"[policy]\ndeny_macs = [\"001565000036\"]\n")
		got := l.waitLogFrom(t, skip, map[string]string{"msg": "config reloaded"})
		if got["changed"] != "policy" {
			t.Errorf("reload line %v", got)
		}
		// The PBX link is kept: no new login.
		if n := len(l.logLines(map[string]string{"msg": "pbx snapshot", "why": "login"})); n != 1 {
			t.Errorf("%d logins to the PBX, want 1: a policy change logged in again", n)
		}
		r := l.simulate(t, "-vendor", "yealink", "-mac", "001565000036", "-timeout", "2s")
		if r.code == 0 || r.url != "" {
			t.Errorf("denied phone answered: %s", r)
		}
		l.wantURL(t, "001565000031", "http://acme.example/")
	})

	t.Run("pbx settings on the same view", func(t *testing.T) {
		skip := l.rewrite(t, "", "[resolve]\ndefault = \"http://two.example/\"\n"+pbxConf(a, "refresh = \"5s\"\nevents = false\n"))
		got := l.waitLogFrom(t, skip, map[string]string{"msg": "config reloaded"})
		if got["changed"] != "ami,policy" {
			t.Errorf("reload line %v", got)
		}
		// The view, its snapshot and its queue carry on: no new login,
		// and the periodic refresh now runs every 5 s.
		l.waitLogFrom(t, skip, map[string]string{"msg": "pbx snapshot", "why": "refresh"})
		if n := len(l.logLines(map[string]string{"msg": "pbx snapshot", "why": "login"})); n != 1 {
			t.Errorf("%d logins to the PBX, want 1", n)
		}
		l.wantURL(t, "001565000031", "http://acme.example/")
	})

	t.Run("token secret rotated", func(t *testing.T) {
		secretFile := filepath.Join(l.dir, "token.secret")
		writeSecret := func() {
			secret := make([]byte, 32)
			if _, err := rand.Read(secret); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(secretFile, []byte(hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		cfg := fmt.Sprintf("[resolve]\ndefault = \"http://tok.example/{token}/\"\n[policy]\ntoken_secret_file = %q\n", secretFile)
		cfgPath := filepath.Join(l.dir, "pnpd.toml")
		verify := func(mac string) {
			t.Helper()
			r := l.simulate(t, "-vendor", "yealink", "-mac", mac)
			token, ok := between(r.url, "http://tok.example/", "/")
			if !ok || r.code != 0 {
				t.Fatalf("phone %s: %s", mac, r)
			}
			if code, out, errs := polExec(t, "token", "verify", "-config", cfgPath, "-mac", mac, token); code != 0 {
				t.Errorf("token of phone %s does not verify with the secret file as it is now: exit %d %s%s", mac, code, out, errs)
			}
		}
		writeSecret()
		skip := l.rewrite(t, "", cfg)
		l.waitLogFrom(t, skip, map[string]string{"msg": "config reloaded"})
		verify("001565000040")

		// The same file names a new secret: a reload takes it although
		// the configuration reads the same.
		writeSecret()
		skip = l.rewrite(t, "", cfg)
		if got := l.waitLogFrom(t, skip, map[string]string{"msg": "config reloaded"}); got["changed"] != "nothing" {
			t.Errorf("reload line %v", got)
		}
		verify("001565000041")

		// The secret gone: refused, and the running secret stays.
		if err := os.Remove(secretFile); err != nil {
			t.Fatal(err)
		}
		skip = l.rewrite(t, "", cfg)
		got := l.waitLogFrom(t, skip, map[string]string{"msg": "reload refused: the running configuration stays"})
		if !strings.Contains(got["err"], "token_secret_file") {
			t.Errorf("refusal %v", got)
		}
		r := l.simulate(t, "-vendor", "yealink", "-mac", "001565000042")
		if r.code != 0 || !strings.HasPrefix(r.url, "http://tok.example/") {
			t.Errorf("after the refused reload: %s", r)
		}
	})

	// What the reloads did, as the metrics tell it; the last refused.
	mfs, err := e2eScrape(l.pbx, "127.0.0.1:9560")
	if err != nil {
		t.Fatal(err)
	}
	ok := len(l.logLines(map[string]string{"msg": "config reloaded"}))
	failed := len(l.logLines(map[string]string{"msg": "reload refused: the running configuration stays"}))
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"pnpd_config_reloads_total", []string{"result=ok"}, float64(ok)},
		{"pnpd_config_reloads_total", []string{"result=failed"}, float64(failed)},
		{"pnpd_config_last_reload_successful", nil, 0},
	} {
		if v, found := e2eValue(mfs, c.name, c.labels...); !found || v != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, v, found, c.want)
		}
	}
}
