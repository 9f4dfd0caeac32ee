package config

import (
	"bytes"
	"fmt"
	"strings"
)

// lineIndex maps key paths such as "sip.allow" or "resolve.rule[2].url"
// (and table headers such as "resolve.rule[2]") to the line they are
// written on, so that errors can point at the line. It understands the
// subset of TOML pnpd's configuration uses: [table], [[array]] and
// key = value lines; anything it does not understand has no line.
type lineIndex map[string]int

func indexLines(data []byte) lineIndex {
	idx := lineIndex{}
	prefix := ""
	counts := map[string]int{}
	for i, line := range bytes.Split(data, []byte("\n")) {
		s := strings.TrimSpace(string(line))
		n := i + 1
		switch {
		case s == "" || s[0] == '#':
		case strings.HasPrefix(s, "[["):
			end := strings.Index(s, "]]")
			if end < 0 {
				continue
			}
			name := cleanKey(s[2:end])
			counts[name]++
			prefix = fmt.Sprintf("%s[%d]", name, counts[name])
			idx.set(prefix, n)
		case s[0] == '[':
			end := strings.Index(s, "]")
			if end < 0 {
				continue
			}
			prefix = cleanKey(s[1:end])
			idx.set(prefix, n)
		default:
			eq := strings.Index(s, "=")
			if eq <= 0 {
				continue
			}
			k := cleanKey(s[:eq])
			if k == "" || strings.ContainsAny(k, " \t,[]{}") {
				continue
			}
			if prefix != "" {
				k = prefix + "." + k
			}
			idx.set(k, n)
		}
	}
	return idx
}

func (idx lineIndex) set(k string, n int) {
	if _, ok := idx[k]; !ok {
		idx[k] = n
	}
}

func (idx lineIndex) line(key string) int { return idx[key] }

// lineOfUnindexed finds a key given without array indexes (as the TOML
// decoder reports undecoded keys): the first line whose key matches once
// indexes are removed.
func (idx lineIndex) lineOfUnindexed(key string) int {
	best := 0
	for k, n := range idx {
		if stripIndexes(k) == key && (best == 0 || n < best) {
			best = n
		}
	}
	return best
}

func stripIndexes(k string) string {
	var b strings.Builder
	skip := false
	for _, c := range k {
		switch {
		case c == '[':
			skip = true
		case c == ']':
			skip = false
		case !skip:
			b.WriteRune(c)
		}
	}
	return b.String()
}

func cleanKey(s string) string {
	parts := strings.Split(s, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}
