package main

import (
	"strings"
	"testing"
)

// A registry excerpt in the CSV layout ieee-data ships (quoted fields may span
// lines), with decoys whose names merely contain a brand word.
const sample = `Registry,Assignment,Organization Name,Organization Address
MA-L,00304F,PLANET Technology Corporation,"11F, No. 96, Min-Chuan Road
Hsin-Tien Dist., New Taipei City  TW  "
MA-L,2CCA0C,WITHUS PLANET,somewhere
MA-L,00164C,"PLANET INT Co., Ltd",somewhere
MA-L,001FC1,"Hanlong Technology Co.,LTD",Nanjing
MA-L,001565,"XIAMEN YEALINK NETWORK TECHNOLOGY CO.,LTD",Xiamen
MA-L,805E0C,"YEALINK(XIAMEN) NETWORK TECHNOLOGY CO.,LTD.",Xiamen
MA-L,000413,snom technology GmbH,Berlin
MA-L,C074AD,"Grandstream Networks, Inc.",Brookline
MA-L,7C2F80,Gigaset Communications GmbH,Bocholt
MA-L,0013A3,Siemens Home & Office Comm. Devices,Munich
MA-L,0080F0,"Panasonic Communications Co., Ltd.",Fukuoka
MA-L,D8AFF1,Panasonic Appliances Company,Shiga
MA-L,00908F,AUDIO CODES LTD.,Or Yehuda
MA-L,0005E7,Netrake an AudioCodes Company,Plano
MA-L,0C383E,"Fanvil Technology Co., Ltd.",Shenzhen
MA-M,0C383E1,"Fanvil Technology Co., Ltd.",Shenzhen
`

func TestCollect(t *testing.T) {
	entries, err := collect(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.brand+":"+strings.ToUpper(hex6(e.oui)))
	}
	want := "snom:000413 gigaset:0013A3 yealink:001565 htek:001FC1 fanvil:00304F panasonic:0080F0 " +
		"audiocodes:00908F fanvil:0C383E gigaset:7C2F80 yealink:805E0C grandstream:C074AD"
	if strings.Join(got, " ") != want {
		t.Errorf("collect =\n %s\nwant\n %s", strings.Join(got, " "), want)
	}

	src, err := render("oui.csv", "2022-08-27", entries)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"DO NOT EDIT", "registry snapshot 2022-08-27", `{0x00304f, "fanvil"},`, "// PLANET Technology Corporation\n"} {
		if !strings.Contains(string(src), s) {
			t.Errorf("rendered file lacks %q:\n%s", s, src)
		}
	}
}

func TestCollectErrors(t *testing.T) {
	tests := []struct{ name, csv string }{
		{"brand missing", "MA-L,001FC1,Hanlong Technology,x\n"},
		{"bad assignment", strings.Replace(sample, "001FC1", "01FC1", 1)},
		{"duplicate", sample + "MA-L,001FC1,Hanlong Technology,x\n"},
		{"broken csv", sample + "MA-L,\"unterminated\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := collect(strings.NewReader(tt.csv)); err == nil {
				t.Error("collect succeeded, want an error")
			}
		})
	}
}

func hex6(v uint32) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 6)
	for i := 5; i >= 0; i-- {
		b[i] = digits[v&0xf]
		v >>= 4
	}
	return string(b)
}
