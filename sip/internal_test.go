package sip

import "testing"

// TestFindCtl checks the eight-bytes-at-a-time scan against a byte loop, for every
// byte value at every position of lines of several lengths.
func TestFindCtl(t *testing.T) {
	naive := func(b []byte, i, end int) int {
		for ; i < end; i++ {
			if c := b[i]; c < 0x20 && c != '\t' || c == 0x7f {
				return i
			}
		}
		return -1
	}
	for n := 0; n <= 24; n++ {
		for pos := 0; pos < n; pos++ {
			for c := 0; c < 256; c++ {
				b := make([]byte, n)
				for k := range b {
					b[k] = "aZ \t~\x80\xff"[k%7]
				}
				b[pos] = byte(c)
				for start := 0; start <= 3 && start <= n; start++ {
					if got, want := findCtl(b, start, n), naive(b, start, n); got != want {
						t.Fatalf("findCtl(%q, %d, %d) = %d, want %d", b, start, n, got, want)
					}
				}
			}
		}
	}
}

func TestLookupID(t *testing.T) {
	for id := HdrOther + 1; id < numHeaderIDs; id++ {
		name := headerNames[id]
		if got := lookupID(name); got != id {
			t.Errorf("lookupID(%q) = %d, want %d", name, got, id)
		}
		up := []byte(name)
		for i := range up {
			if 'a' <= up[i] && up[i] <= 'z' {
				up[i] -= 'a' - 'A'
			}
		}
		if got := lookupID(up); got != id {
			t.Errorf("lookupID(%q) = %d, want %d", up, got, id)
		}
	}
	compact := map[string]HeaderID{"v": HdrVia, "F": HdrFrom, "t": HdrTo, "i": HdrCallID, "m": HdrContact,
		"l": HdrContentLength, "c": HdrContentType, "o": HdrEvent, "k": HdrSupported, "s": HdrSubject,
		"e": HdrContentEncoding, "u": HdrAllowEvents, "r": HdrOther, "x": HdrOther, "1": HdrOther, "-": HdrOther}
	for name, want := range compact {
		if got := lookupID(name); got != want {
			t.Errorf("lookupID(%q) = %d, want %d", name, got, want)
		}
	}
	for _, name := range []string{"", "Vi", "Viaa", "Call_ID", "Content-Lengtx", "A-very-long-header-name-indeed-x"} {
		if got := lookupID(name); got != HdrOther {
			t.Errorf("lookupID(%q) = %d, want HdrOther", name, got)
		}
	}
}
