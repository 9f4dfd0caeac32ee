package policy

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/resolve"
)

// staticConfig has a default URL and one rule for Yealink's prefix.
func staticConfig(def, rule string) config.Resolve {
	return config.Resolve{Default: def, Rules: []config.Rule{{Index: 1, Line: 7, MACPrefix: "001565", URL: rule}}}
}

// both runs Resolve, and Decide when r has a fast path, and checks they
// agree.
func both(t *testing.T, r resolve.Resolver, req resolve.Request) resolve.Decision {
	t.Helper()
	d, err := r.Resolve(context.Background(), req)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if f, ok := r.(resolve.Fast); ok {
		fd, decided, err := f.Decide(req)
		if err != nil || !decided {
			t.Fatalf("Decide: decided %v, %v", decided, err)
		}
		if fd.URL != d.URL || fd.Source != d.Source || fd.Pending != d.Pending || fd.Unknown != d.Unknown ||
			strings.Join(fd.Trace, "\n") != strings.Join(d.Trace, "\n") {
			t.Errorf("Decide %+v\nResolve %+v", fd, d)
		}
	}
	return d
}

func TestResolverUnknown(t *testing.T) {
	known := resolve.Request{MAC: yealinkMAC, Brand: "yealink", IP: phoneSrc}
	unknown := resolve.Request{MAC: otherMAC, Brand: "snom", IP: phoneSrc}
	noMAC := resolve.Request{Brand: "audiocodes", IP: phoneSrc}
	const (
		def  = "http://prov.example.com/{mac}/"
		rule = "http://yealink.example.com/{mac}.cfg"
	)
	tests := []struct {
		name    string
		unknown string
		def     string
		req     resolve.Request
		url     string
		source  string
		pending bool
		trace   []string // in the lines the policy adds; nil: it adds none
	}{
		{"default, known", "default", def, known, "http://yealink.example.com/001565aabbcc.cfg", "rule 1 (line 7)", false, nil},
		{"default, unknown", "default", def, unknown, "http://prov.example.com/0004f2000001/", "default", false, nil},
		{"default, unknown, no default URL", "default", "", unknown, "", "", false, nil},
		{"default, no MAC", "default", def, noMAC, "http://prov.example.com/{mac}/", "default", false, nil},

		{"observe, known", "observe", def, known, "http://yealink.example.com/001565aabbcc.cfg", "rule 1 (line 7)", false, nil},
		{"observe, unknown", "observe", def, unknown, "", "policy (unknown = observe)", false,
			[]string{"policy: unknown = observe: nobody named this phone", "default"}},
		{"observe, unknown, no default URL", "observe", "", unknown, "", "policy (unknown = observe)", false,
			[]string{"policy: unknown = observe: nobody named this phone"}},
		{"observe, no MAC", "observe", def, noMAC, "", "policy (unknown = observe)", false,
			[]string{"policy: unknown = observe: nobody named this phone", "default"}},

		{"approve, known", "approve", def, known, "http://yealink.example.com/001565aabbcc.cfg", "rule 1 (line 7)", false, nil},
		{"approve, unknown", "approve", def, unknown, "", "policy (unknown = approve)", true,
			[]string{"policy: unknown = approve: recorded as pending/0004f2000001", `"pnpd ctl approve 0004f2000001 TENANT"`}},
		{"approve, unknown, no default URL", "approve", "", unknown, "", "policy (unknown = approve)", true,
			[]string{"policy: unknown = approve: recorded as pending/0004f2000001"}},
		{"approve, no MAC", "approve", def, noMAC, "", "policy (unknown = approve)", false,
			[]string{"policy: unknown = approve: the phone sent no MAC to approve"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc := defaults()
			pc.Unknown = tt.unknown
			p, _ := newTestPolicy(t, Config{Policy: pc, State: &fakeState{}})
			inner := resolve.NewStatic(staticConfig(tt.def, rule))
			want, err := inner.Resolve(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			d := both(t, p.Resolver(inner), tt.req)
			if d.URL != tt.url || d.Source != tt.source || d.Pending != tt.pending {
				t.Errorf("got URL %q source %q pending %v\nwant URL %q source %q pending %v", d.URL, d.Source, d.Pending, tt.url, tt.source, tt.pending)
			}
			if d.Unknown != want.Unknown {
				t.Errorf("Unknown %v, want the inner resolver's %v", d.Unknown, want.Unknown)
			}
			// The inner trace is kept, the policy's line added last.
			n := len(want.Trace)
			if len(d.Trace) < n || strings.Join(d.Trace[:n], "\n") != strings.Join(want.Trace, "\n") {
				t.Fatalf("trace %q does not start with the inner %q", d.Trace, want.Trace)
			}
			var added string
			if len(d.Trace) > n {
				added = strings.Join(d.Trace[n:], "\n")
			}
			if tt.trace == nil && added != "" || tt.trace != nil && added == "" {
				t.Errorf("policy trace %q, want %q", added, tt.trace)
			}
			for _, w := range tt.trace {
				if !strings.Contains(added, w) {
					t.Errorf("policy trace %q lacks %q", added, w)
				}
			}
		})
	}
}

// notFast is a resolver without a fast path.
type notFast struct{ d resolve.Decision }

func (n notFast) Resolve(context.Context, resolve.Request) (resolve.Decision, error) { return n.d, nil }

// fakeFast can say it did not decide, or fail.
type fakeFast struct {
	notFast
	decided bool
	err     error
}

func (f fakeFast) Decide(resolve.Request) (resolve.Decision, bool, error) {
	return f.d, f.decided, f.err
}

func (f fakeFast) Resolve(context.Context, resolve.Request) (resolve.Decision, error) {
	return f.d, f.err
}

func TestResolverFast(t *testing.T) {
	pc := defaults()
	pc.Unknown = "approve"
	p, _ := newTestPolicy(t, Config{Policy: pc, State: &fakeState{}})
	unk := resolve.Decision{URL: "http://prov/", Source: "default", Unknown: true}
	req := resolve.Request{MAC: otherMAC}

	t.Run("Fast iff the inner one is", func(t *testing.T) {
		for _, tt := range []struct {
			name  string
			inner resolve.Resolver
			fast  bool
		}{
			{"static", resolve.NewStatic(config.Resolve{}), true},
			{"Func", resolve.Func(func(context.Context, resolve.Request) (resolve.Decision, error) { return unk, nil }), false},
			{"no fast path", notFast{unk}, false},
			{"fake fast", fakeFast{notFast: notFast{unk}, decided: true}, true},
		} {
			t.Run(tt.name, func(t *testing.T) {
				_, fast := p.Resolver(tt.inner).(resolve.Fast)
				if fast != tt.fast {
					t.Errorf("wrapped implements Fast: %v, want %v", fast, tt.fast)
				}
			})
		}
	})
	t.Run("not fast still applies unknown", func(t *testing.T) {
		d, err := p.Resolver(notFast{unk}).Resolve(context.Background(), req)
		if err != nil || d.URL != "" || !d.Pending {
			t.Errorf("%+v, %v", d, err)
		}
	})
	t.Run("undecided left alone", func(t *testing.T) {
		d, decided, err := p.Resolver(fakeFast{notFast: notFast{unk}}).(resolve.Fast).Decide(req)
		if err != nil || decided || d.Pending || d.URL != unk.URL {
			t.Errorf("%+v, %v, %v: an undecided answer must not be marked pending", d, decided, err)
		}
	})
	t.Run("errors left alone", func(t *testing.T) {
		boom := errors.New("pbx: down")
		r := p.Resolver(fakeFast{notFast: notFast{unk}, decided: true, err: boom})
		d, _, err := r.(resolve.Fast).Decide(req)
		if !errors.Is(err, boom) || d.Pending {
			t.Errorf("Decide: %+v, %v", d, err)
		}
		d, err = r.Resolve(context.Background(), req)
		if !errors.Is(err, boom) || d.Pending {
			t.Errorf("Resolve: %+v, %v", d, err)
		}
	})
}

func TestResolverToken(t *testing.T) {
	const (
		def  = "http://prov.example.com/{token}/{mac}/"
		rule = "http://yealink.example.com/t/{token}/"
	)
	inner := resolve.NewStatic(staticConfig(def, rule))
	signer := newTestSigner(t, testSecret, 15*time.Minute)
	signed, _ := newTestPolicy(t, Config{Policy: defaults(), Signer: signer})
	unsigned, _ := newTestPolicy(t, Config{Policy: defaults()})

	// token returns what stands between prefix and the next '/'.
	token := func(t *testing.T, url, prefix string) string {
		t.Helper()
		rest, ok := strings.CutPrefix(url, prefix)
		if !ok {
			t.Fatalf("URL %q does not start with %q", url, prefix)
		}
		tok, _, _ := strings.Cut(rest, "/")
		return tok
	}
	tests := []struct {
		name   string
		p      *Policy
		req    resolve.Request
		prefix string // of the URL, before the token
		signed bool
		want   string // the whole URL, when not signed
	}{
		{"default", signed, resolve.Request{MAC: otherMAC, IP: phoneSrc}, "http://prov.example.com/", true, ""},
		{"rule", signed, resolve.Request{MAC: yealinkMAC, IP: phoneSrc}, "http://yealink.example.com/t/", true, ""},
		{"no MAC", signed, resolve.Request{IP: phoneSrc}, "", false, "http://prov.example.com/{token}/{mac}/"},
		{"no signer", unsigned, resolve.Request{MAC: yealinkMAC}, "", false, "http://yealink.example.com/t/{token}/"},
		{"caller's token kept", signed, resolve.Request{MAC: yealinkMAC, Token: "given"}, "", false, "http://yealink.example.com/t/given/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := both(t, tt.p.Resolver(inner), tt.req)
			if !tt.signed {
				if d.URL != tt.want {
					t.Errorf("URL %q, want %q", d.URL, tt.want)
				}
				return
			}
			tok := token(t, d.URL, tt.prefix)
			if len(tok) != TokenLen {
				t.Fatalf("token %q in %q: %d characters, want %d", tok, d.URL, len(tok), TokenLen)
			}
			if err := signer.Verify(tt.req.MAC, tok, time.Now()); err != nil {
				t.Errorf("Verify for %s: %v", tt.req.MAC, err)
			}
			if err := signer.Verify(testMAC, tok, time.Now()); !errors.Is(err, ErrTokenInvalid) {
				t.Errorf("Verify for another MAC: %v, want ErrTokenInvalid", err)
			}
			if err := signer.Verify(tt.req.MAC, tok, time.Now().Add(16*time.Minute)); !errors.Is(err, ErrTokenExpired) {
				t.Errorf("Verify after the ttl: %v, want ErrTokenExpired", err)
			}
			// The trace shows the template, never the token.
			if strings.Contains(strings.Join(d.Trace, "\n"), tok) {
				t.Errorf("trace shows the token: %q", d.Trace)
			}
		})
	}
	t.Run("the caller's request is not changed", func(t *testing.T) {
		req := resolve.Request{MAC: yealinkMAC, IP: netip.MustParseAddr("10.0.0.1")}
		if _, err := signed.Resolver(inner).Resolve(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		if req.Token != "" {
			t.Errorf("Token %q", req.Token)
		}
	})
}
