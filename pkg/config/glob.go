package config

// Glob reports whether name matches pattern, where '*' matches any run of
// characters (including none) and '?' any one character. Both are compared
// as given: callers lower-case them for a case-insensitive match.
func Glob(pattern, name string) bool {
	// Iterative matcher with one backtrack point: linear for patterns
	// with a single star, O(len(pattern)*len(name)) at worst.
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == name[n]):
			p++
			n++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
