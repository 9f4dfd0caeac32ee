package sip_test

import (
	"fmt"
	"strings"

	"github.com/pnpd/pnpd/sip"
)

func Example() {
	pkt := []byte("SUBSCRIBE sip:MAC0015657322ff@224.0.1.75 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 172.16.32.148:5059;branch=z9hG4bK1263794541\r\n" +
		"From: <sip:MAC0015657322ff@224.0.1.75>;tag=1581287404\r\n" +
		"To: <sip:MAC0015657322ff@224.0.1.75>\r\n" +
		"Call-ID: 1092315383@172.16.32.148\r\n" +
		"CSeq: 1 SUBSCRIBE\r\n" +
		"Contact: <sip:MAC0015657322ff@172.16.32.148:5059>\r\n" +
		"Event: ua-profile;profile-type=\"device\";vendor=\"Yealink\";model=\"T21\"\r\n" +
		"Expires: 0\r\n" +
		"Content-Length: 0\r\n\r\n")

	var m sip.Message
	if err := m.Parse(pkt); err != nil {
		fmt.Println(err)
		return
	}
	via, _ := m.TopVia()
	from, _ := sip.ParseAddr(m.Get(sip.HdrFrom))
	contact, _ := sip.ParseAddr(m.Get(sip.HdrContact))
	pkg, params, _ := sip.ParseEvent(m.Get(sip.HdrEvent))
	vendor, _ := params.Get("vendor")
	fmt.Printf("%s %s\n", m.Method, m.RequestURI)
	fmt.Printf("via %s:%d branch %s\n", via.Host, via.Port, via.Branch())
	fmt.Printf("from tag %s, event %s vendor %s\n", from.Tag(), pkg, vendor)

	var b sip.Builder
	b.Reset(make([]byte, 0, 1024))
	b.RequestLine("NOTIFY", contact.URI)
	b.HeaderString("Via", "SIP/2.0/UDP 172.16.32.1:5060;branch=z9hG4bKn1")
	b.Header("To", m.Get(sip.HdrFrom))
	b.HeaderCSeq(1, "NOTIFY")
	b.HeaderString("Subscription-State", "terminated;reason=timeout")
	out := b.Body("application/url", []byte("http://prov.example.com/"))
	fmt.Print(strings.ReplaceAll(string(out), "\r\n", "\n")) // CRLF shown as line breaks
	// Output:
	// SUBSCRIBE sip:MAC0015657322ff@224.0.1.75
	// via 172.16.32.148:5059 branch z9hG4bK1263794541
	// from tag 1581287404, event ua-profile vendor Yealink
	// NOTIFY sip:MAC0015657322ff@172.16.32.148:5059 SIP/2.0
	// Via: SIP/2.0/UDP 172.16.32.1:5060;branch=z9hG4bKn1
	// To: <sip:MAC0015657322ff@224.0.1.75>;tag=1581287404
	// CSeq: 1 NOTIFY
	// Subscription-State: terminated;reason=timeout
	// Content-Type: application/url
	// Content-Length: 24
	//
	// http://prov.example.com/
}

func ExampleAppendViaReceived() {
	v := []byte("SIP/2.0/UDP 192.168.1.89:60000;branch=z9hG4bK1430285318;rport")
	fmt.Printf("%s\n", sip.AppendViaReceived(nil, v, "192.168.1.89", 60000, true))
	// Output: SIP/2.0/UDP 192.168.1.89:60000;branch=z9hG4bK1430285318;rport=60000;received=192.168.1.89
}
