package phone

import "sort"

//go:generate go run ./internal/ouigen -in /usr/share/ieee-data/oui.csv -out oui_table.go

// ouiEntry is one row of the generated ouiTable.
type ouiEntry struct {
	oui   uint32
	brand string
}

const hexDigits = "0123456789abcdef"

// NormalizeMAC returns s as 12 lower-case hex digits. It accepts
// 001fc11b4e1c, 00:1F:C1:1B:4E:1C, 00-1f-c1-1b-4e-1c and 001f.c11b.4e1c (any
// letter case, one separator kind throughout); anything else gives ("", false).
// It checks spelling only: 000000000000 and group addresses are accepted.
func NormalizeMAC(s string) (string, bool) {
	m, ok := parseMAC(s)
	if !ok {
		return "", false
	}
	var b [12]byte
	putMAC(b[:], m)
	return string(b[:]), true
}

// OUIBrand returns the brand whose maker owns the OUI (first three octets) of
// mac, or "" when no known brand's maker does or mac is not a MAC in one of the
// spellings NormalizeMAC accepts. The table comes from the IEEE registry (see
// oui_table.go); a brand's newest blocks may be missing from it.
func OUIBrand(mac string) string {
	m, ok := parseMAC(mac)
	if !ok {
		return ""
	}
	return ouiBrand(m)
}

func ouiBrand(m [6]byte) string {
	oui := uint32(m[0])<<16 | uint32(m[1])<<8 | uint32(m[2])
	i := sort.Search(len(ouiTable), func(i int) bool { return ouiTable[i].oui >= oui })
	if i < len(ouiTable) && ouiTable[i].oui == oui {
		return ouiTable[i].brand
	}
	return ""
}

// putMAC writes m as 12 lower-case hex digits into dst (len >= 12).
func putMAC(dst []byte, m [6]byte) {
	for i, o := range m {
		dst[2*i] = hexDigits[o>>4]
		dst[2*i+1] = hexDigits[o&0xf]
	}
}

// parseMAC reads the spellings NormalizeMAC accepts, without allocating.
func parseMAC[T string | []byte](s T) (m [6]byte, ok bool) {
	switch len(s) {
	case 12: // 001fc11b4e1c
		for i := 0; i < 6; i++ {
			o, ok := hexByte(s[2*i], s[2*i+1])
			if !ok {
				return m, false
			}
			m[i] = o
		}
		return m, true
	case 17: // 00:1f:c1:1b:4e:1c or 00-1f-c1-1b-4e-1c
		sep := s[2]
		if sep != ':' && sep != '-' {
			return m, false
		}
		for i := 0; i < 6; i++ {
			if i > 0 && s[3*i-1] != sep {
				return m, false
			}
			o, ok := hexByte(s[3*i], s[3*i+1])
			if !ok {
				return m, false
			}
			m[i] = o
		}
		return m, true
	case 14: // 001f.c11b.4e1c
		if s[4] != '.' || s[9] != '.' {
			return m, false
		}
		for i := 0; i < 6; i++ {
			p := 2*i + i/2 // skip the dot after every second octet
			o, ok := hexByte(s[p], s[p+1])
			if !ok {
				return m, false
			}
			m[i] = o
		}
		return m, true
	}
	return m, false
}

func hexByte(hi, lo byte) (byte, bool) {
	h, ok1 := hexVal(hi)
	l, ok2 := hexVal(lo)
	return h<<4 | l, ok1 && ok2
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
