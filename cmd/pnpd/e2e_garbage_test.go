package main

// End-to-end count of what garbage gets back (issue 7, "broken packets"):
// RFC 4475's torture messages, every sip/testdata/invalid file and 300
// deterministic mutations of a real phone SUBSCRIBE are sent, from the phone
// namespace to 224.0.1.75:5060, to the real binary. A raw socket counts every
// datagram pnpd sends to the phone namespace (to any address and port, the
// group included). Each datagram sent is classified with our own parser as
// pnpd classifies it; no datagram may come back for one that is not a valid
// ua-profile SUBSCRIBE, and pnpd must still provision a phone afterwards.
// The figures are logged as
//
//	GARBAGE sent=N malformed=M replies_to_malformed=0 valid_mutants=K answered=J
//
// for the closing note.

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/net/ipv4"

	"github.com/pnpd/pnpd/sip"
)

const (
	// garbageMutants is how many mutations of a SUBSCRIBE are sent.
	garbageMutants = 300
	// garbageBatch is how many garbage datagrams go between two control
	// SUBSCRIBEs: pnpd reads one interface's datagrams in order, so the
	// control's 200 says the batch before it was handled, and the socket
	// buffers never hold more than a batch.
	garbageBatch = 25
)

// garbageItem is one datagram to send and what pnpd must make of it.
type garbageItem struct {
	name   string // where it comes from: "rfc4475/valid/wsinv.sip", "mutant/17 flip"
	data   []byte
	mutant bool
	// verdict is "" for a ua-profile SUBSCRIBE pnpd answers, else the
	// reason it drops or refuses it, as its counters name them.
	verdict string
	callID  string // of an answered one
}

func TestE2EGarbage(t *testing.T) {
	l := newLab(t)
	// No rate limits: a valid mutant is answered or not for what it is,
	// not for how many came before it from the same address.
	l.start("", polResolve+"[policy]\nsource_rate = \"off\"\nmac_rate = \"off\"\n")
	g := polAddrs(t, l, 3, 1)[0] // the garbage's own address: simulate uses the veth's
	tap := openGroupTap(t, l)
	sock := openPolSock(t, l, g, 0, true)
	// Our own datagrams to the group are not looped back into the phone
	// namespace, where the tap would have to skip them.
	if err := ipv4.NewPacketConn(sock.c).SetMulticastLoopback(false); err != nil {
		t.Fatal(err)
	}
	src := sock.addr

	var items []garbageItem
	for _, dir := range []string{"rfc4475/valid", "rfc4475/invalid", "invalid"} {
		files, err := filepath.Glob(filepath.Join("..", "..", "sip", "testdata", dir, "*.sip"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no files in sip/testdata/%s: %v", dir, err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			items = append(items, garbageItem{name: dir + "/" + filepath.Base(f), data: b})
		}
	}
	items = append(items, garbageMutations(src)...)
	validCalls := map[string]string{} // Call-ID -> item name
	model := pnpModel{tx: map[string]string{}, dialogs: map[string]bool{}}
	for i := range items {
		it := &items[i]
		it.verdict, it.callID = model.verdict(it.data, src)
		if it.verdict == "retransmission-answered" || it.verdict == "in-answered-dialog" {
			t.Fatalf("%s: %s: the count by Call-ID cannot tell its 200 from an earlier one's", it.name, it.verdict)
		}
		if it.verdict == "" {
			if prev, dup := validCalls[it.callID]; dup {
				// Two answered datagrams in one dialog would make the
				// count by Call-ID ambiguous; the mutations never do it.
				t.Fatalf("%s and %s, both answered, share the Call-ID %q", prev, it.name, it.callID)
			}
			validCalls[it.callID] = it.name
		}
	}

	// Send, a control SUBSCRIBE after every batch.
	controls := map[string]bool{}
	control := func(n int) {
		callID := fmt.Sprintf("control-%d@%s", n, g)
		controls[callID] = true
		sock.send(t, polSubscribe(fmt.Sprintf("0004f2%06x", n), src, callID, fmt.Sprintf("z9hG4bKcontrol%d", n)))
		sock.wait(t, "the control's 200", callID, func(tl polTally) bool { return tl.oks >= 1 })
	}
	for i, it := range items {
		sock.send(t, it.data)
		if (i+1)%garbageBatch == 0 {
			control(i)
		}
	}
	control(len(items))

	// pnpd is alive: a phone is provisioned as before.
	r := l.simulate(t, "-vendor", "yealink", "-mac", "0015657322ff", "-timeout", "30s")
	if want := "http://198.18.0.1/yealink/0015657322ff/"; r.code != 0 || r.url != want {
		t.Errorf("a real phone after the garbage: want exit 0 and %s\n%s", want, r)
	}

	dropped, refused := polStopped(t, l)
	got := tap.settleAll(t, l)

	// Everything pnpd sent into the phone namespace, attributed.
	answered := map[string]bool{} // Call-IDs of valid items that got a 200
	var toMalformed, toGroup, toControls, toSimulate, toSock int
	var strays []string
	for _, d := range got {
		switch {
		case d.dst.Addr() == polGroup.Addr():
			toGroup++
			strays = append(strays, fmt.Sprintf("to the group %s: %q", d.dst, d.data))
			continue
		case d.dst.Addr() == l.phoneIP:
			toSimulate++
			continue
		case d.dst.Addr() != g:
			toMalformed++
			strays = append(strays, fmt.Sprintf("to %s: %q", d.dst, d.data))
			continue
		}
		if d.dst == src {
			toSock++
		}
		m, err := sip.Parse(bytes.Clone(d.data))
		if err != nil {
			toMalformed++
			strays = append(strays, fmt.Sprintf("unparseable, to %s: %q", d.dst, d.data))
			continue
		}
		callID := string(m.Get(sip.HdrCallID))
		switch {
		case controls[callID]:
			toControls++
		case validCalls[callID] != "":
			// pnpd's only responses are its 200s to SUBSCRIBEs (whose
			// CSeq it repeats as the phone wrote it, method and all).
			if m.StatusCode == 200 {
				answered[callID] = true
			}
		default:
			toMalformed++
			strays = append(strays, fmt.Sprintf("Call-ID %q, to %s: %q", callID, d.dst, d.data))
		}
	}

	sent, malformed, validMutants := len(items), 0, 0
	wantDropped := map[string]int64{}
	wantRefused := map[string]int64{}
	for _, it := range items {
		switch {
		case it.verdict == "" && it.mutant:
			validMutants++
		case it.verdict == "":
			t.Logf("%s is a ua-profile SUBSCRIBE pnpd answers", it.name)
		default:
			malformed++
			if r, ok := strings.CutPrefix(it.verdict, "refused:"); ok {
				wantRefused[r]++
			} else {
				wantDropped[it.verdict]++
			}
		}
	}
	t.Logf("GARBAGE sent=%d malformed=%d replies_to_malformed=%d valid_mutants=%d answered=%d",
		sent, malformed, toMalformed, validMutants, len(answered))
	t.Logf("and: %d controls, %d datagrams back to the controls, %d to simulate, %d to the group; the garbage socket received %d",
		len(controls), toControls, toSimulate, toGroup, sock.received())

	if n := sock.received(); toSock < n {
		t.Fatalf("the garbage socket received %d datagrams from pnpd, the raw socket saw %d of them: its counts prove nothing", n, toSock)
	}
	if toMalformed != 0 || toGroup != 0 {
		sort.Strings(strays)
		t.Errorf("%d datagrams answered what pnpd must not answer, %d went to the group:\n%s",
			toMalformed, toGroup, strings.Join(strays, "\n"))
	}
	// Every valid one is answered: nothing else limits them here.
	for callID, name := range validCalls {
		if !answered[callID] {
			t.Errorf("%s (Call-ID %q) is a valid ua-profile SUBSCRIBE and got no 200", name, callID)
		}
	}
	if toControls < 2*len(controls) {
		t.Errorf("%d datagrams back to %d controls, want a 200 and a NOTIFY each", toControls, len(controls))
	}
	// pnpd saw every datagram and dropped each for the reason predicted
	// (the reasons the controls, simulate and the NOTIFYs' answers cannot
	// cause are compared exactly).
	for _, k := range []string{"malformed", "unexpected-response", "not-subscribe", "not-ua-profile", "missing-headers",
		"retransmission-unanswered"} {
		if dropped[k] != wantDropped[k] {
			t.Errorf("msg=stopped dropped[%s] = %d, want %d (all: %v)", k, dropped[k], wantDropped[k], dropped)
		}
	}
	polCheckCounts(t, "refused", refused, wantRefused)
	if t.Failed() {
		for _, it := range items {
			t.Logf("%-40s %s", it.name, it.verdict)
		}
	}
}

// pnpModel classifies the datagrams sent to the group from one source, in
// the order sent, with our own parser and in the order pnpd's responder
// checks (pkg/pnp handleSubscribe; the policy with contact_is_source and no
// rate or MAC limit).
type pnpModel struct {
	// tx holds the verdict of the first SUBSCRIBE of each server
	// transaction: a later one with its key is a retransmission, answered
	// as the first was. (Several files of sip/testdata/invalid share
	// yealink.sip's branch.)
	tx map[string]string
	// dialogs holds the Call-ID and From tag of each answered SUBSCRIBE:
	// a new transaction in one is answered whatever the policy says.
	dialogs map[string]bool
}

// verdict returns "" and the Call-ID for a SUBSCRIBE pnpd answers, else
// pnpd's drop reason, or "refused:" and the policy's reason. A
// retransmission of an answered SUBSCRIBE is reported as "retransmission-answered",
// which the test's data must not hold: it is answered with the first
// one's 200.
func (pm *pnpModel) verdict(data []byte, src netip.AddrPort) (verdict, callID string) {
	m, err := sip.Parse(bytes.Clone(data))
	switch {
	case err != nil:
		return "malformed", ""
	case !m.IsRequest():
		return "unexpected-response", ""
	case string(m.Method) != "SUBSCRIBE":
		return "not-subscribe", ""
	}
	pkg, _, _ := bytes.Cut(m.Get(sip.HdrEvent), []byte(";"))
	if !bytes.EqualFold(bytes.TrimSpace(pkg), []byte("ua-profile")) {
		return "not-ua-profile", ""
	}
	via, err := m.TopVia()
	if err != nil {
		return "missing-headers", ""
	}
	for _, h := range []sip.HeaderID{sip.HdrCallID, sip.HdrFrom, sip.HdrTo, sip.HdrCSeq} {
		if len(m.Get(h)) == 0 {
			return "missing-headers", ""
		}
	}
	if _, err := sip.ParseAddr(m.Get(sip.HdrFrom)); err != nil {
		return "missing-headers", ""
	}
	// A To that is no address, a CSeq of another method: malformed.
	if _, err := sip.ParseAddr(m.Get(sip.HdrTo)); err != nil {
		return "malformed", ""
	}
	_, method, err := sip.ParseCSeq(m.Get(sip.HdrCSeq))
	if err != nil {
		return "missing-headers", ""
	}
	if string(method) != "SUBSCRIBE" {
		return "malformed", ""
	}
	// The server transaction: RFC 3261 17.2.3, the branch and sent-by, and
	// for a branch without the magic cookie the Call-ID and CSeq too.
	key := fmt.Sprintf("%s\x00%s:%d", via.Branch(), via.Host, via.Port)
	if !bytes.HasPrefix(via.Branch(), []byte("z9hG4bK")) {
		key += "\x00" + string(m.Get(sip.HdrCallID)) + "\x00" + string(m.Get(sip.HdrCSeq))
	}
	if first, ok := pm.tx[key]; ok {
		if first == "" {
			return "retransmission-answered", ""
		}
		return "retransmission-unanswered", ""
	}
	from, _ := sip.ParseAddr(m.Get(sip.HdrFrom))
	dialog := string(m.Get(sip.HdrCallID)) + "\x00" + string(from.Tag())
	if pm.dialogs[dialog] {
		return "in-answered-dialog", ""
	}
	verdict, callID = pm.admit(m, src)
	pm.tx[key] = verdict
	if verdict == "" {
		pm.dialogs[dialog] = true
	}
	return verdict, callID
}

// admit is the policy's part of verdict.
func (pm *pnpModel) admit(m *sip.Message, src netip.AddrPort) (verdict, callID string) {
	var first []byte
	sip.SplitComma(m.Get(sip.HdrContact), func(e []byte) bool { first = e; return false })
	a, err := sip.ParseAddr(first)
	if err != nil {
		return "refused:contact-not-source", ""
	}
	if u, err := sip.ParseURI(a.URI); err != nil || string(u.Host) != src.Addr().String() {
		return "refused:contact-not-source", ""
	}
	return "", string(m.Get(sip.HdrCallID))
}

// garbageMutations returns garbageMutants deterministic mutations of a
// Yealink's SUBSCRIBE from src, each with a Call-ID, branch and MAC of its
// own before it is mutated: truncations, byte flips, duplicated, dropped and
// huge headers, and junk bytes put in.
func garbageMutations(src netip.AddrPort) []garbageItem {
	out := make([]garbageItem, 0, garbageMutants)
	for i := range garbageMutants {
		base := polSubscribe(fmt.Sprintf("001565%06x", 0x100000+i), src,
			fmt.Sprintf("garbage-%d@%s", i, src.Addr()), fmt.Sprintf("z9hG4bKgarbage%d", i))
		r := rand.New(rand.NewPCG(uint64(i), 4475))
		head, _, _ := bytes.Cut(base, []byte("\r\n\r\n"))
		lines := bytes.Split(head, []byte("\r\n")) // lines[0] is the request line
		join := func(ls [][]byte) []byte {
			return append(bytes.Join(ls, []byte("\r\n")), "\r\n\r\n"...)
		}
		header := func() int { return 1 + r.IntN(len(lines)-1) }
		var kind string
		var b []byte
		switch {
		case i < 60:
			kind = "truncated"
			b = base[:i*len(base)/60]
		case i < 160:
			kind = "flip"
			b = bytes.Clone(base)
			for range 1 + r.IntN(3) {
				b[r.IntN(len(b))] ^= byte(1 + r.IntN(255))
			}
		case i < 200:
			kind = "duplicate"
			j := header()
			dup := bytes.Clone(lines[j])
			if i%2 == 1 { // the same name with another value
				name, _, _ := bytes.Cut(dup, []byte(":"))
				dup = append(name, ": 5"...)
			}
			ls := append(append(append([][]byte{}, lines[:j+1]...), dup), lines[j+1:]...)
			b = join(ls)
		case i < 240:
			kind = "huge"
			ls := append([][]byte{}, lines...)
			size := 256 << (i % 6) // 256 B to 8 KiB: the largest are over the 8192 B limit
			if i%5 == 4 {
				// More header lines than the 64 the parser takes.
				for k := range 10 + i%70 {
					ls = append(ls[:len(ls):len(ls)], fmt.Appendf(nil, "X-Junk-%d: %s", k, strings.Repeat("y", i%7)))
				}
			} else {
				j := header()
				ls[j] = append(bytes.Clone(ls[j]), strings.Repeat("x", size)...)
			}
			b = join(ls)
		case i < 270:
			kind = "dropped"
			j := header()
			ls := append(append([][]byte{}, lines[:j]...), lines[j+1:]...)
			b = join(ls)
		default:
			kind = "junk"
			junk := make([]byte, 1+r.IntN(16))
			for k := range junk {
				junk[k] = "\x00\r\n\t :;<>\"\x7f\xff\xc3"[r.IntN(13)]
			}
			p := r.IntN(len(base))
			b = append(append(append([]byte{}, base[:p]...), junk...), base[p:]...)
		}
		out = append(out, garbageItem{name: fmt.Sprintf("mutant/%d %s", i, kind), data: b, mutant: true})
	}
	return out
}

// openGroupTap is openPolTap with the group's datagrams too (it joins the
// group on the phone's veth so that the kernel takes them in) and a
// receive buffer that holds every datagram of a batch and its replies.
func openGroupTap(t *testing.T, l *lab) *polTap {
	t.Helper()
	member, err := l.phone.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { member.Close() })
	ifi, err := l.phone.InterfaceByName(l.phoneIf)
	if err != nil {
		t.Fatal(err)
	}
	if err := ipv4.NewPacketConn(member).JoinGroup(ifi, &net.UDPAddr{IP: polGroup.Addr().AsSlice()}); err != nil {
		t.Fatal(err)
	}
	c, err := l.phone.ListenPacket("ip4:udp", "0.0.0.0")
	if err != nil {
		t.Fatal(err)
	}
	// Whatever net.core.rmem_max says: a count with holes would prove
	// nothing (the test checks that the tap saw all the garbage socket
	// received).
	if err := forceRecvBuffer(c, 16<<20); err != nil {
		c.Close()
		t.Fatal(err)
	}
	return newPolTap(t, l, c)
}

// forceRecvBuffer sets SO_RCVBUFFORCE (root may exceed rmem_max).
func forceRecvBuffer(c net.PacketConn, n int) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return fmt.Errorf("%T has no raw socket", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("SO_RCVBUFFORCE: %w", serr)
	}
	return nil
}
