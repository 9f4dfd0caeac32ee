package sip_test

import (
	"strings"
	"testing"

	gosip "github.com/jart/gosip/sip"

	"github.com/pnpd/pnpd/sip"
)

// The parse benchmarks copy the packet into a scratch buffer on every iteration,
// ours and gosip's alike: our parser unfolds folded lines in place, and gosip keeps
// references into its input, so neither gets to reuse a parsed buffer. The copy
// (about 500 bytes) is part of both figures and allocates nothing.

func benchName(p packet) string { return strings.TrimSuffix(p.name, ".sip") }

// BenchmarkParseSubscribe measures (*Message).Parse, reusing one Message, on every
// file in testdata/phones.
func BenchmarkParseSubscribe(b *testing.B) {
	for _, p := range readDir(b, "phones") {
		b.Run(benchName(p), func(b *testing.B) {
			buf := make([]byte, len(p.data))
			var m sip.Message
			b.ReportAllocs()
			b.SetBytes(int64(len(p.data)))
			for b.Loop() {
				copy(buf, p.data)
				if err := m.Parse(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGosipParseMsg measures github.com/jart/gosip/sip.ParseMsg on the same
// packets. compact-folded.sip gets its start line's double spaces collapsed first
// (gosipInput), as gosip refuses them; the other files are given unchanged.
func BenchmarkGosipParseMsg(b *testing.B) {
	for _, p := range readDir(b, "phones") {
		b.Run(benchName(p), func(b *testing.B) {
			m, err := sip.Parse([]byte(string(p.data)))
			if err != nil {
				b.Fatal(err)
			}
			in := gosipInput(m, p.data)
			buf := make([]byte, len(in))
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				copy(buf, in)
				if _, err := gosip.ParseMsg(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParsePnPFields measures what a PnP responder does per SUBSCRIBE: Parse
// plus the Request-URI, top Via, From, To, Contact, CSeq and Event (with the vendor
// parameter). gosip's ParseMsg already does all of this and more.
func BenchmarkParsePnPFields(b *testing.B) {
	for _, p := range readDir(b, "phones") {
		b.Run(benchName(p), func(b *testing.B) {
			buf := make([]byte, len(p.data))
			var m sip.Message
			var v pnpView
			b.ReportAllocs()
			b.SetBytes(int64(len(p.data)))
			for b.Loop() {
				copy(buf, p.data)
				if err := m.Parse(buf); err != nil {
					b.Fatal(err)
				}
				if err := extractView(&m, &v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseNewMessage measures Parse, which allocates the Message.
func BenchmarkParseNewMessage(b *testing.B) {
	data := mustReadB(b, "phones", "htek.sip")
	buf := make([]byte, len(data))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, data)
		if _, err := sip.Parse(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuild200AndNotify measures building the 200 OK and the NOTIFY for a
// SUBSCRIBE into reused buffers.
func BenchmarkBuild200AndNotify(b *testing.B) {
	sub, err := sip.Parse(mustReadB(b, "phones", "htek.sip"))
	if err != nil {
		b.Fatal(err)
	}
	contact, _ := sip.ParseAddr(sub.Get(sip.HdrContact))
	var bld sip.Builder
	buf := make([]byte, 0, 2048)
	scratch := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		bld.Reset(buf)
		build200(&bld, sub, "192.168.1.89", 60000, scratch)
		bld.Reset(buf)
		buildNotify(&bld, sub, contact.URI, "http://prov.example.com/", scratch)
	}
}

func mustReadB(b *testing.B, dir, name string) []byte {
	data, err := readFile(dir, name)
	if err != nil {
		b.Fatal(err)
	}
	return data
}
