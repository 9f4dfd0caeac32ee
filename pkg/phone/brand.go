package phone

// Brand names, lower-case. Identity.Brand is one of these or "".
const (
	BrandHtek        = "htek"
	BrandYealink     = "yealink"
	BrandSnom        = "snom"
	BrandGrandstream = "grandstream"
	BrandFanvil      = "fanvil" // PLANET-branded phones included
	BrandGigaset     = "gigaset"
	BrandPanasonic   = "panasonic"
	BrandAudioCodes  = "audiocodes"
)

var brands = [...]string{
	BrandHtek, BrandYealink, BrandSnom, BrandGrandstream,
	BrandFanvil, BrandGigaset, BrandPanasonic, BrandAudioCodes,
}

// Brands returns the brand names pnpd knows, lower-case, in a fixed order. The
// slice is a fresh copy on every call: the caller may keep or change it.
func Brands() []string {
	out := make([]string, len(brands))
	copy(out, brands[:])
	return out
}

// IsBrand reports whether s is one of Brands. The comparison is exact: brand
// names are lower-case.
func IsBrand(s string) bool {
	for _, b := range brands {
		if s == b {
			return true
		}
	}
	return false
}

// brandWords are the words that name a brand at the start of a User-Agent or
// in an Event vendor parameter, compared case-insensitively. "planet" is
// PLANET Technology, which sells Fanvil phones; "audc" is AudioCodes' short
// User-Agent prefix (AUDC-IPPhone/...).
var brandWords = [...]struct{ word, brand string }{
	{"htek", BrandHtek},
	{"yealink", BrandYealink},
	{"snom", BrandSnom},
	{"grandstream", BrandGrandstream},
	{"fanvil", BrandFanvil},
	{"planet", BrandFanvil},
	{"gigaset", BrandGigaset},
	{"panasonic", BrandPanasonic},
	{"audiocodes", BrandAudioCodes},
	{"audc", BrandAudioCodes},
}

// brandPrefix reports the brand whose word s starts with (case-insensitively,
// the word not followed by another letter), and the word's length.
func brandPrefix(s []byte) (brand string, n int) {
	for _, w := range brandWords {
		if len(s) < len(w.word) || !equalFoldASCII(s[:len(w.word)], w.word) {
			continue
		}
		if len(s) > len(w.word) && isLetter(s[len(w.word)]) {
			continue
		}
		return w.brand, len(w.word)
	}
	return "", 0
}

func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }

// equalFoldASCII compares b and s ignoring ASCII case.
func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x == y {
			continue
		}
		if isLetter(x) && x|0x20 == y|0x20 {
			continue
		}
		return false
	}
	return true
}
