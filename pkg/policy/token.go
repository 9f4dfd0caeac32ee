package policy

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"time"
)

// Errors of token verification. Verify wraps exactly one of them.
var (
	ErrTokenMalformed = errors.New("policy: token malformed")
	ErrTokenExpired   = errors.New("policy: token expired")
	ErrTokenInvalid   = errors.New("policy: token not signed for this MAC with this secret")
)

// Token layout, before base64url: the expiry in Unix seconds as 5 bytes
// big-endian, then the first 16 bytes of HMAC-SHA256(secret, tokenDomain ||
// expiry || mac).
//
// 5 bytes of expiry last until the year 36812, and keep the first character
// 'A' until the year 2514: a token never starts with '-', so it cannot be
// taken for a flag on a command line. 21 bytes encode to exactly 28
// characters with no padding and no spare bits, so every token has a single
// spelling.
const (
	expiryLen = 5
	tagLen    = 16
	rawLen    = expiryLen + tagLen
	// TokenLen is the length of every token Sign returns.
	TokenLen = (rawLen*8 + 5) / 6

	maxExpiry = 1<<(8*expiryLen) - 1
)

// tokenDomain separates these MACs from any other use of the same secret.
// The fields after it have fixed lengths except the MAC, which comes last, so
// no two (expiry, mac) pairs hash the same bytes.
const tokenDomain = "pnpd-token-v1\x00"

// Minimum secret length: shorter secrets are guessable offline from one
// token.
const minSecret = 16

// maxSecretFile bounds what ReadSecret reads, so that a path naming the
// wrong file (a log, /dev/zero) fails instead of filling memory.
const maxSecretFile = 4096

var enc = base64.RawURLEncoding

// Signer makes and checks {token} values: short-lived, URL-safe proof that
// pnpd gave a URL to the phone with a given MAC. A Signer is safe for
// concurrent use.
type Signer struct {
	ttl  time.Duration
	pool sync.Pool // of *macState keyed with the secret
}

// NewSigner returns a Signer whose tokens are valid for ttl. It keeps a copy
// of secret, which must be at least 16 bytes.
func NewSigner(secret []byte, ttl time.Duration) (*Signer, error) {
	if len(secret) < minSecret {
		return nil, fmt.Errorf("policy: token secret is %d bytes, want at least %d", len(secret), minSecret)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("policy: token ttl %v, want more than 0", ttl)
	}
	key := bytes.Clone(secret)
	s := &Signer{ttl: ttl}
	s.pool.New = func() any { return &macState{h: hmac.New(sha256.New, key)} }
	return s, nil
}

// Sign returns a token for mac (the 12 lower-case hex digits form) that is
// valid until now plus the ttl, rounded up to the second.
func (s *Signer) Sign(mac string, now time.Time) string {
	t := now.Add(s.ttl)
	exp := t.Unix()
	if t.Nanosecond() > 0 {
		exp++
	}
	exp = min(max(exp, 0), maxExpiry)
	var raw [rawLen]byte
	s.seal(&raw, uint64(exp), mac)
	var out [TokenLen]byte
	enc.Encode(out[:], raw[:])
	return string(out[:])
}

// Verify reports whether token was made by a Signer with this secret for
// mac and is still valid at now (now before its expiry). The error is or wraps
// ErrTokenMalformed, ErrTokenInvalid (another secret, another MAC, a changed
// byte) or ErrTokenExpired; an expired token is reported as such only when
// its signature holds.
func (s *Signer) Verify(mac, token string, now time.Time) error {
	var raw [rawLen]byte
	exp, err := decode(token, &raw)
	if err != nil {
		return err
	}
	var want [rawLen]byte
	s.seal(&want, exp, mac)
	if !hmac.Equal(raw[expiryLen:], want[expiryLen:]) {
		return ErrTokenInvalid
	}
	if at := time.Unix(int64(exp), 0); !now.Before(at) {
		return fmt.Errorf("%w at %s", ErrTokenExpired, at.UTC().Format(time.RFC3339))
	}
	return nil
}

// TokenExpiry returns the expiry a token claims. It does not check the
// signature: only believe it once Verify has returned nil.
func TokenExpiry(token string) (time.Time, error) {
	var raw [rawLen]byte
	exp, err := decode(token, &raw)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(int64(exp), 0), nil
}

// decode fills raw from token and returns the expiry it holds.
func decode(token string, raw *[rawLen]byte) (uint64, error) {
	// The length check comes first so that a huge input costs nothing
	// and is never echoed back.
	if len(token) != TokenLen {
		return 0, fmt.Errorf("%w: %d characters, want %d", ErrTokenMalformed, len(token), TokenLen)
	}
	n, err := enc.Decode(raw[:], []byte(token))
	if err != nil || n != rawLen {
		return 0, fmt.Errorf("%w: not base64url", ErrTokenMalformed)
	}
	var b [8]byte
	copy(b[8-expiryLen:], raw[:expiryLen])
	return binary.BigEndian.Uint64(b[:]), nil
}

// seal writes exp and the truncated HMAC over (exp, mac) into raw.
func (s *Signer) seal(raw *[rawLen]byte, exp uint64, mac string) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], exp)
	copy(raw[:expiryLen], b[8-expiryLen:])

	m := s.pool.Get().(*macState)
	m.buf = append(append(append(m.buf[:0], tokenDomain...), raw[:expiryLen]...), mac...)
	m.h.Reset()
	m.h.Write(m.buf)
	copy(raw[expiryLen:], m.h.Sum(m.sum[:0]))
	if cap(m.buf) > 256 {
		m.buf = nil // a huge MAC once should not stay in the pool
	}
	s.pool.Put(m)
}

// macState is a keyed HMAC with the buffers it needs, pooled so that Sign
// and Verify do not allocate: data written to a hash.Hash escapes.
type macState struct {
	h   hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

// ReadSecret reads a token secret from the file at path. One trailing
// newline (\n or \r\n) is not part of the secret, so that `echo` and editors
// can write the file; a secret shorter than 16 bytes is refused.
func ReadSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("policy: token secret: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, fmt.Errorf("policy: token secret: %s: %w", path, err)
	}
	if len(b) > maxSecretFile {
		return nil, fmt.Errorf("policy: token secret file %s is larger than %d bytes: is it the right file?", path, maxSecretFile)
	}
	if bytes.HasSuffix(b, []byte("\r\n")) {
		b = b[:len(b)-2]
	} else if bytes.HasSuffix(b, []byte("\n")) {
		b = b[:len(b)-1]
	}
	switch {
	case len(b) == 0:
		return nil, fmt.Errorf("policy: token secret file %s is empty", path)
	case len(b) < minSecret:
		return nil, fmt.Errorf("policy: token secret in %s is %d bytes, want at least %d (e.g. head -c 32 /dev/urandom | base64 > %s)", path, len(b), minSecret, path)
	}
	return b, nil
}

// SecretFileWarning returns a warning when the file at path can be read or
// changed by its group or by others, and "" when it cannot or when it cannot
// be inspected (ReadSecret then says why).
func SecretFileWarning(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Sprintf("token secret file %s has mode %04o: anyone who can read it can sign tokens; chmod 600 it", path, perm)
	}
	return ""
}
