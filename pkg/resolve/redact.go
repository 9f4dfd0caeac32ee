package resolve

import "strings"

// Redact hides the credentials of a URL for logs and traces:
// "http://admin:123456@192.168.0.25:88/x" becomes "http://***@192.168.0.25:88/x".
// It works on templates and other text that net/url would refuse.
func Redact(u string) string {
	i := strings.Index(u, "://")
	if i < 0 {
		return u
	}
	rest := u[i+3:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	at := strings.LastIndexByte(rest[:end], '@')
	if at < 0 {
		return u
	}
	return u[:i+3] + "***" + rest[at:]
}
