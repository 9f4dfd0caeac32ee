package phone

import (
	"slices"
	"sort"
	"strings"
	"testing"
)

func TestNormalizeMAC(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"001fc11b4e1c", "001fc11b4e1c", true},
		{"001FC11B4E1C", "001fc11b4e1c", true},
		{"00:1F:C1:1B:4E:1C", "001fc11b4e1c", true},
		{"00-1f-c1-1b-4e-1c", "001fc11b4e1c", true},
		{"001f.c11b.4e1c", "001fc11b4e1c", true},
		{"001F.C11B.4E1C", "001fc11b4e1c", true},
		{"000000000000", "000000000000", true},
		{"ffffffffffff", "ffffffffffff", true},
		{"", "", false},
		{"001fc11b4e1", "", false},
		{"001fc11b4e1c0", "", false},
		{"001fc11b4e1g", "", false},
		{"00:1f:c1-1b:4e:1c", "", false}, // mixed separators
		{"00.1f.c1.1b.4e.1c", "", false},
		{"00:1f:c1:1b:4e:1", "", false},
		{"0:1f:c1:1b:4e:1c:", "", false},
		{"001fc.11b.4e1c", "", false},
		{"001f:c11b:4e1c", "", false},
		{" 001fc11b4e1c", "", false},
		{"001fc11b4e1c ", "", false},
		{"+01fc11b4e1c", "", false},
		{"MAC001fc11b4e1c", "", false},
		{"001fc11b4e1c\x00", "", false},
		{"00:1f:c1:1b:4e:1c:", "", false},
		{"192.168.1.200", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := NormalizeMAC(tt.in)
			if got != tt.want || ok != tt.ok {
				t.Errorf("NormalizeMAC(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestOUIBrand(t *testing.T) {
	tests := []struct{ mac, want string }{
		// The OUIs in docs/pnp-protocol.md, checked against the IEEE registry.
		{"001fc11b4e1c", "htek"},
		{"0015657322ff", "yealink"},
		{"000413b50a1f", "snom"},
		{"c074ad112233", "grandstream"},
		{"00304fa99948", "fanvil"},
		{"7c2f8030d21e", "gigaset"},
		{"0080f0a1b2c3", "panasonic"},
		{"00908f602aac", "audiocodes"},
		{"0c383e000001", "fanvil"},
		{"00:0B:82:01:02:AB", "grandstream"},
		{"805e.c012.3456", "yealink"},
		// snom.sip's MAC 00:13:5e is not snom's: the registry gives it to EAB/RWI/K.
		{"00135e874b49", ""},
		{"000000000000", ""},
		{"ffffffffffff", ""},
		{"001fc1", ""},
		{"not a mac", ""},
	}
	for _, tt := range tests {
		t.Run(tt.mac, func(t *testing.T) {
			if got := OUIBrand(tt.mac); got != tt.want {
				t.Errorf("OUIBrand(%q) = %q, want %q", tt.mac, got, tt.want)
			}
		})
	}
}

func TestOUITable(t *testing.T) {
	if !sort.SliceIsSorted(ouiTable[:], func(i, j int) bool { return ouiTable[i].oui < ouiTable[j].oui }) {
		t.Error("ouiTable is not sorted")
	}
	seen := map[string]bool{}
	for i, e := range ouiTable {
		if !IsBrand(e.brand) {
			t.Errorf("ouiTable[%d] brand %q is not in Brands", i, e.brand)
		}
		if i > 0 && ouiTable[i-1].oui == e.oui {
			t.Errorf("OUI %06x listed twice", e.oui)
		}
		seen[e.brand] = true
	}
	for _, b := range Brands() {
		if !seen[b] {
			t.Errorf("brand %q has no OUI", b)
		}
	}
}

func TestBrands(t *testing.T) {
	b := Brands()
	want := []string{"htek", "yealink", "snom", "grandstream", "fanvil", "gigaset", "panasonic", "audiocodes"}
	if !slices.Equal(b, want) {
		t.Fatalf("Brands() = %v, want %v", b, want)
	}
	b[0] = "changed"
	if Brands()[0] != "htek" {
		t.Error("Brands() returned shared storage")
	}
	for _, name := range want {
		if !IsBrand(name) {
			t.Errorf("IsBrand(%q) = false", name)
		}
		if IsBrand(strings.ToUpper(name)) {
			t.Errorf("IsBrand(%q) = true, want false (brand names are lower-case)", strings.ToUpper(name))
		}
	}
	for _, s := range []string{"", "planet", "cisco", "akuvox"} {
		if IsBrand(s) {
			t.Errorf("IsBrand(%q) = true", s)
		}
	}
}

func TestNoAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { OUIBrand("00:15:65:73:22:ff") }); n != 0 {
		t.Errorf("OUIBrand allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { IsBrand("audiocodes") }); n != 0 {
		t.Errorf("IsBrand allocates %v times", n)
	}
}
