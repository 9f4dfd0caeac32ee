package policy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/resolve"
)

var (
	testSecret = []byte("0123456789abcdef0123456789abcdef")
	testNow    = time.Date(2026, 1, 2, 3, 4, 5, 500_000_000, time.UTC)
)

const testMAC = "001fc11b4e1c"

func newTestSigner(t testing.TB, secret []byte, ttl time.Duration) *Signer {
	t.Helper()
	s, err := NewSigner(secret, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewSigner(t *testing.T) {
	tests := []struct {
		name   string
		secret []byte
		ttl    time.Duration
		want   string // part of the error, "" for success
	}{
		{"ok", testSecret, 15 * time.Minute, ""},
		{"16 bytes", []byte("0123456789abcdef"), time.Second, ""},
		{"15 bytes", []byte("0123456789abcde"), time.Second, "15 bytes, want at least 16"},
		{"no secret", nil, time.Second, "0 bytes"},
		{"zero ttl", testSecret, 0, "ttl 0s"},
		{"negative ttl", testSecret, -time.Minute, "ttl -1m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSigner(tt.secret, tt.ttl)
			if tt.want == "" {
				if err != nil || s == nil {
					t.Fatalf("NewSigner: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewSigner error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestNewSignerCopiesSecret(t *testing.T) {
	secret := []byte(string(testSecret))
	s := newTestSigner(t, secret, time.Minute)
	tok := s.Sign(testMAC, testNow)
	secret[0] ^= 1
	if err := s.Verify(testMAC, tok, testNow); err != nil {
		t.Fatalf("changing the caller's slice changed the signer: %v", err)
	}
}

func TestSignExpiry(t *testing.T) {
	tests := []struct {
		name string
		now  time.Time
		ttl  time.Duration
		want time.Time
	}{
		{"rounded up", testNow, 15 * time.Minute, time.Date(2026, 1, 2, 3, 19, 6, 0, time.UTC)},
		{"whole second", testNow.Truncate(time.Second), 15 * time.Minute, time.Date(2026, 1, 2, 3, 19, 5, 0, time.UTC)},
		{"one nanosecond over", testNow.Truncate(time.Second).Add(1), time.Second, time.Date(2026, 1, 2, 3, 4, 7, 0, time.UTC)},
		{"sub-second ttl", testNow.Truncate(time.Second), time.Millisecond, time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC)},
		{"before 1970", time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC), time.Hour, time.Unix(0, 0)},
		{"beyond 5 bytes", time.Unix(1<<41, 0), time.Hour, time.Unix(maxExpiry, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSigner(t, testSecret, tt.ttl)
			tok := s.Sign(testMAC, tt.now)
			if len(tok) != TokenLen {
				t.Fatalf("token %q is %d characters, want %d", tok, len(tok), TokenLen)
			}
			got, err := TokenExpiry(tok)
			if err != nil || !got.Equal(tt.want) {
				t.Fatalf("TokenExpiry = %v, %v; want %v", got.UTC(), err, tt.want)
			}
		})
	}
}

func TestSignDeterministic(t *testing.T) {
	s := newTestSigner(t, testSecret, 15*time.Minute)
	a, b := s.Sign(testMAC, testNow), s.Sign(testMAC, testNow)
	if a != b {
		t.Errorf("same MAC and time gave %q and %q", a, b)
	}
	if c := s.Sign("001fc11b4e1d", testNow); c == a {
		t.Errorf("two MACs gave the same token %q", a)
	}
	if d := s.Sign(testMAC, testNow.Add(time.Second)); d == a {
		t.Errorf("two expiries gave the same token %q", a)
	}
}

func TestVerify(t *testing.T) {
	const ttl = 15 * time.Minute
	s := newTestSigner(t, testSecret, ttl)
	other := newTestSigner(t, []byte("another secret of 32 bytes......"), ttl)
	tok := s.Sign(testMAC, testNow)
	expiry, err := TokenExpiry(tok)
	if err != nil {
		t.Fatal(err)
	}
	// A token whose last character is swapped for a neighbour: the
	// signature no longer holds.
	swap := "A"
	if tok[len(tok)-1] == 'A' {
		swap = "B"
	}
	flipped := tok[:len(tok)-1] + swap

	tests := []struct {
		name  string
		mac   string
		token string
		now   time.Time
		want  error // nil for valid
	}{
		{"valid", testMAC, tok, testNow, nil},
		{"valid one nanosecond before expiry", testMAC, tok, expiry.Add(-1), nil},
		{"valid long before", testMAC, tok, testNow.Add(-24 * time.Hour), nil},
		{"expired at exactly expiry", testMAC, tok, expiry, ErrTokenExpired},
		{"expired later", testMAC, tok, expiry.Add(time.Hour), ErrTokenExpired},
		{"other MAC", "001fc11b4e1d", tok, testNow, ErrTokenInvalid},
		{"upper-case MAC", strings.ToUpper(testMAC), tok, testNow, ErrTokenInvalid},
		{"no MAC", "", tok, testNow, ErrTokenInvalid},
		{"other secret", testMAC, other.Sign(testMAC, testNow), testNow, ErrTokenInvalid},
		{"flipped last character", testMAC, flipped, testNow, ErrTokenInvalid},
		{"expired and other MAC", "001fc11b4e1d", tok, expiry.Add(time.Hour), ErrTokenInvalid},
		{"truncated", testMAC, tok[:len(tok)-1], testNow, ErrTokenMalformed},
		{"one extra character", testMAC, tok + "A", testNow, ErrTokenMalformed},
		{"padded", testMAC, tok + "=", testNow, ErrTokenMalformed},
		{"standard alphabet", testMAC, "+" + tok[1:], testNow, ErrTokenMalformed},
		{"not base64", testMAC, strings.Repeat(".", TokenLen), testNow, ErrTokenMalformed},
		{"newline inside", testMAC, tok[:10] + "\n" + tok[11:], testNow, ErrTokenMalformed},
		{"empty", testMAC, "", testNow, ErrTokenMalformed},
		{"huge", testMAC, strings.Repeat(tok, 1<<16), testNow, ErrTokenMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Verify(tt.mac, tt.token, tt.now)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify error %v, want %v", err, tt.want)
			}
			if len(err.Error()) > 120 {
				t.Errorf("error is %d bytes long: it must not echo the input", len(err.Error()))
			}
		})
	}
}

// TestTokenFormat pins the layout, so that a config server can check tokens
// without pnpd: base64url(expiry as 5 bytes big-endian || the first 16 bytes
// of HMAC-SHA256(secret, "pnpd-token-v1\x00" || expiry || mac)).
func TestTokenFormat(t *testing.T) {
	s := newTestSigner(t, testSecret, 15*time.Minute)
	tok := s.Sign(testMAC, testNow)
	const golden = "AGlXOSrWLdPu6wWXHxQsfSRXXkAO"
	if tok != golden {
		t.Errorf("Sign = %q, want %q: the token format changed, and with it every issued URL", tok, golden)
	}
	exp := testNow.Add(15*time.Minute).Truncate(time.Second).Unix() + 1
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], uint64(exp))
	m := hmac.New(sha256.New, testSecret)
	m.Write([]byte("pnpd-token-v1\x00"))
	m.Write(e[3:])
	m.Write([]byte(testMAC))
	want := base64.RawURLEncoding.EncodeToString(append(e[3:], m.Sum(nil)[:16]...))
	if tok != want {
		t.Errorf("Sign = %q, the documented layout gives %q", tok, want)
	}
}

func TestSignerConcurrent(t *testing.T) {
	s := newTestSigner(t, testSecret, 15*time.Minute)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				mac := fmt.Sprintf("0004%02x%06x", g, i)
				tok := s.Sign(mac, testNow)
				if err := s.Verify(mac, tok, testNow); err != nil {
					t.Errorf("%s: %v", mac, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestVerifyExpiredSaysWhen(t *testing.T) {
	s := newTestSigner(t, testSecret, time.Minute)
	tok := s.Sign(testMAC, testNow)
	err := s.Verify(testMAC, tok, testNow.Add(time.Hour))
	if want := "policy: token expired at 2026-01-02T03:05:06Z"; err == nil || err.Error() != want {
		t.Fatalf("Verify error %v, want %q", err, want)
	}
}

// Every character carries signed bits: changing any one of them must be
// caught.
func TestVerifyEveryPosition(t *testing.T) {
	s := newTestSigner(t, testSecret, 15*time.Minute)
	tok := s.Sign(testMAC, testNow)
	for i := range len(tok) {
		for _, c := range []byte("AB-_z9") {
			if tok[i] == c {
				continue
			}
			bad := tok[:i] + string(c) + tok[i+1:]
			if err := s.Verify(testMAC, bad, testNow); !errors.Is(err, ErrTokenInvalid) {
				t.Errorf("position %d set to %q: %v, want %v", i, c, err, ErrTokenInvalid)
			}
		}
	}
}

func TestTokenURLSafe(t *testing.T) {
	s := newTestSigner(t, testSecret, 15*time.Minute)
	for i := range 10_000 {
		mac := fmt.Sprintf("%012x", uint64(i)*0x9e3779b97f4a7c15&(1<<48-1))
		tok := s.Sign(mac, testNow.Add(time.Duration(i)*time.Second))
		if len(tok) != TokenLen {
			t.Fatalf("token %q is %d characters, want %d", tok, len(tok), TokenLen)
		}
		for j := range len(tok) {
			c := tok[j]
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				t.Fatalf("token %q has %q at %d", tok, c, j)
			}
		}
		if tok[0] == '-' {
			t.Fatalf("token %q starts with '-': a command line takes it for a flag", tok)
		}
		if url.PathEscape(tok) != tok || url.QueryEscape(tok) != tok {
			t.Fatalf("token %q changes when escaped", tok)
		}
	}
}

func TestTokenAllocations(t *testing.T) {
	if raceEnabled() {
		t.Skip("the race detector drops sync.Pool entries on purpose")
	}
	s := newTestSigner(t, testSecret, 15*time.Minute)
	tok := s.Sign(testMAC, testNow)
	// Sign runs for every phone whose template has {token}: the token
	// string is its only allocation.
	if n := testing.AllocsPerRun(100, func() { s.Sign(testMAC, testNow) }); n > 1 {
		t.Errorf("Sign allocates %v times, want at most 1", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = s.Verify(testMAC, tok, testNow) }); n > 0 {
		t.Errorf("Verify of a valid token allocates %v times, want 0", n)
	}
}

// The token goes into URL templates as it is: no escaping changes it.
func TestExpandToken(t *testing.T) {
	s := newTestSigner(t, testSecret, 15*time.Minute)
	tok := s.Sign(testMAC, testNow)
	tests := []struct {
		name, tmpl, token, want string
		expand                  func(string, resolve.Request) string
	}{
		{"path", "http://prov.example.com/p/{token}/", tok, "http://prov.example.com/p/" + tok + "/", resolve.Expand},
		{"lookup", "ODBC_PNP_URL({mac},{token})", tok, "ODBC_PNP_URL(" + testMAC + "," + tok + ")", resolve.ExpandLookup},
		{"no secret: left as is", "http://prov.example.com/p/{token}/", "", "http://prov.example.com/p/{token}/", resolve.Expand},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.expand(tt.tmpl, resolve.Request{MAC: testMAC, Token: tt.token})
			if got != tt.want {
				t.Errorf("expand %q = %q, want %q", tt.tmpl, got, tt.want)
			}
		})
	}
}

// raceEnabled reports whether the test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

func TestReadSecret(t *testing.T) {
	const sec = "0123456789abcdef-secret"
	tests := []struct {
		name    string
		content string
		want    string // the secret, when no error
		err     string // part of the error
	}{
		{"no newline", sec, sec, ""},
		{"newline", sec + "\n", sec, ""},
		{"crlf", sec + "\r\n", sec, ""},
		{"only one newline trimmed", sec + "\n\n", sec + "\n", ""},
		{"inner newline kept", "0123456789\nabcdef", "0123456789\nabcdef", ""},
		{"empty", "", "", "is empty"},
		{"only a newline", "\n", "", "is empty"},
		{"short", "0123456789abcde\n", "", "is 15 bytes, want at least 16"},
		{"too large", strings.Repeat("x", maxSecretFile+1), "", "larger than 4096 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "token.secret")
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ReadSecret(p)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), p) {
					t.Fatalf("ReadSecret error %v, want one naming %s and containing %q", err, p, tt.err)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("ReadSecret = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "none")
		_, err := ReadSecret(p)
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), p) {
			t.Fatalf("ReadSecret error %v, want ErrNotExist naming %s", err, p)
		}
	})
}

func TestSecretFileWarning(t *testing.T) {
	tests := []struct {
		mode os.FileMode
		warn bool
	}{
		{0o600, false},
		{0o400, false},
		{0o640, true},
		{0o604, true},
		{0o620, true},
		{0o644, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%04o", tt.mode), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "token.secret")
			if err := os.WriteFile(p, testSecret, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tt.mode); err != nil {
				t.Fatal(err)
			}
			w := SecretFileWarning(p)
			if (w != "") != tt.warn {
				t.Fatalf("SecretFileWarning = %q, want a warning: %v", w, tt.warn)
			}
			if tt.warn && (!strings.Contains(w, p) || !strings.Contains(w, fmt.Sprintf("%04o", tt.mode))) {
				t.Errorf("warning %q does not name the file and its mode", w)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		if w := SecretFileWarning(filepath.Join(t.TempDir(), "none")); w != "" {
			t.Errorf("SecretFileWarning of a missing file = %q, want \"\" (ReadSecret reports it)", w)
		}
	})
}

// fuzzSecret signs the valid tokens of testdata/fuzz/FuzzVerify.
var fuzzSecret = []byte("pnpd fuzz secret, 32 bytes long.")

const fuzzTTL = 15 * time.Minute

// FuzzVerify checks that Verify never panics, that every failure is one of
// the three sentinels, that a token it accepts is the one Sign makes for
// that MAC and expiry (a token has one spelling), and that Sign's tokens
// verify.
func FuzzVerify(f *testing.F) {
	s := newTestSigner(f, fuzzSecret, fuzzTTL)
	f.Add(testMAC, s.Sign(testMAC, testNow), testNow.Unix())
	f.Add(testMAC, s.Sign(testMAC, testNow), testNow.Unix()+3600)
	f.Add("", "", int64(0))
	f.Fuzz(func(t *testing.T, mac, token string, now int64) {
		at := time.Unix(now, 0)
		err := s.Verify(mac, token, at)
		switch {
		case err == nil:
			exp, err := TokenExpiry(token)
			if err != nil {
				t.Fatalf("Verify accepted %q, TokenExpiry refuses it: %v", token, err)
			}
			if !at.Before(exp) {
				t.Fatalf("Verify accepted %q at %v, expiry %v", token, at, exp)
			}
			if again := s.Sign(mac, exp.Add(-fuzzTTL)); again != token {
				t.Fatalf("Verify accepted %q, Sign makes %q for the same MAC and expiry", token, again)
			}
		case errors.Is(err, ErrTokenMalformed), errors.Is(err, ErrTokenInvalid), errors.Is(err, ErrTokenExpired):
		default:
			t.Fatalf("Verify error %v is none of the sentinels", err)
		}

		// Sign's own tokens hold while the expiry fits in 5 bytes.
		if now < 0 || now >= maxExpiry-int64(fuzzTTL/time.Second) {
			return
		}
		tok := s.Sign(mac, at)
		if err := s.Verify(mac, tok, at); err != nil {
			t.Fatalf("Sign(%q, %v) = %q does not verify: %v", mac, at, tok, err)
		}
		if err := s.Verify(mac, tok, at.Add(fuzzTTL)); !errors.Is(err, ErrTokenExpired) {
			t.Fatalf("Sign(%q, %v) = %q at expiry: %v, want %v", mac, at, tok, err, ErrTokenExpired)
		}
	})
}

func BenchmarkSign(b *testing.B) {
	s := newTestSigner(b, testSecret, 15*time.Minute)
	b.ReportAllocs()
	for b.Loop() {
		s.Sign(testMAC, testNow)
	}
}

func BenchmarkVerify(b *testing.B) {
	s := newTestSigner(b, testSecret, 15*time.Minute)
	tok := s.Sign(testMAC, testNow)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Verify(testMAC, tok, testNow); err != nil {
			b.Fatal(err)
		}
	}
}
