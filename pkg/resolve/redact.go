package resolve

import "strings"

// Redact hides the credentials of a URL for logs and traces:
// "http://admin:123456@192.168.0.25:88/x" becomes "http://***@192.168.0.25:88/x".
// It works on templates and other text that net/url would refuse, and errs
// on the side of hiding: a password may hold an unencoded '/', '?', '#' or
// '@', so everything up to the last '@' before the end of the host part
// (the first '/', '?' or '#' after the first '@') is masked. A URL whose
// path holds an '@' loses its host part in the log, never a password.
func Redact(u string) string {
	i := strings.Index(u, "://")
	if i < 0 {
		return u
	}
	rest := u[i+3:]
	first := strings.IndexByte(rest, '@')
	if first < 0 {
		return u
	}
	end := len(rest)
	if j := strings.IndexAny(rest[first:], "/?#"); j >= 0 {
		end = first + j
	}
	at := strings.LastIndexByte(rest[:end], '@')
	return u[:i+3] + "***" + rest[at:]
}
