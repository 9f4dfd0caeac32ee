package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sipp, an independent SIP implementation, plays a Yealink phone
// (testdata/sipp-pnp-yealink.xml) against pnpd.
func TestE2ESipp(t *testing.T) {
	requireLab(t)
	sipp := requireTool(t, "sipp", "sip-tester")
	scenario, err := filepath.Abs("testdata/sipp-pnp-yealink.xml")
	if err != nil {
		t.Fatal(err)
	}
	l := newLab(t)
	const mac = "0015657322ff"
	l.start("", "[resolve]\n[[resolve.rule]]\nmac = \""+mac+"\"\nurl = \"http://198.18.0.1/sipp/{mac}/\"\n")

	dir := t.TempDir()
	logFile := filepath.Join(dir, "sipp-logs.log")
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := l.phone.Command(ctx, sipp, "224.0.1.75:5060",
		"-sf", scenario, "-t", "u1", "-i", l.phoneIP.String(), "-p", "5059",
		"-key", "mac", mac, "-m", "1", "-nostdin",
		"-timeout", "30s", "-timeout_error",
		// A loaded machine must not make sipp's watchdog end the test.
		"-watchdog_minor_maxtriggers", "1000000", "-watchdog_major_maxtriggers", "1000000",
		"-trace_err", "-error_file", filepath.Join(dir, "sipp-errors.log"),
		"-trace_msg", "-message_file", filepath.Join(dir, "sipp-messages.log"),
		"-trace_logs", "-log_file", logFile)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	dump := func() {
		t.Logf("sipp output:\n%s", out.String())
		for _, f := range []string{"sipp-errors.log", "sipp-messages.log", "sipp-logs.log"} {
			if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
				t.Logf("%s:\n%s", f, b)
			}
		}
	}
	if err != nil {
		dump()
		t.Fatalf("sipp: %v, want exit 0", err)
	}
	logs, err := os.ReadFile(logFile)
	if err != nil {
		dump()
		t.Fatal(err)
	}
	if want := "NOTIFY application/url via SIP/2.0/UDP " + l.pbxIP.String() + ":"; !strings.Contains(string(logs), want) {
		dump()
		t.Errorf("sipp's log lacks %q (NOTIFY from the pbx address)", want)
	}
	if want := "body http://198.18.0.1/sipp/" + mac + "/"; !strings.Contains(string(logs), want) {
		dump()
		t.Errorf("sipp's log lacks %q", want)
	}
	// sipp exits 0 whether or not its 200 reached pnpd; pnpd says.
	l.waitLog(t, map[string]string{"msg": "exchange", "mac": mac, "outcome": "provisioned"})
}

// markerPort is where the end-of-capture marker goes; nothing listens there.
const markerPort = 9999

// tshark decodes every packet of a run of all brands as SIP, with no
// malformed packet and no error-level expert info.
func TestE2ETshark(t *testing.T) {
	requireLab(t)
	tshark := requireTool(t, "tshark", "tshark")
	l := newLab(t)
	l.start("", brandRules(l.pbxIP))

	pcap := filepath.Join(t.TempDir(), "pnpd.pcap")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	capLog := newSyncBuffer()
	// -P -l -T fields: tshark prints the destination port of each packet
	// as it writes it, which shows when the marker sent after the run, and
	// so everything before it, is in the file.
	capOut := newSyncBuffer()
	capture := l.pbx.Command(ctx, tshark, "-n", "-i", l.pbxIf, "-f", "udp", "-w", pcap,
		"-P", "-l", "-T", "fields", "-e", "udp.dstport")
	capture.Stdout = capOut
	capture.Stderr = capLog
	capture.WaitDelay = 10 * time.Second
	if err := capture.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- capture.Wait() }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		_ = capture.Process.Signal(syscall.SIGINT)
		select {
		case err := <-exited:
			return err
		case <-time.After(30 * time.Second):
			_ = capture.Process.Kill()
			return fmt.Errorf("tshark still running 30s after SIGINT: killed (%v)", <-exited)
		}
	}
	t.Cleanup(func() {
		_ = stop()
		if t.Failed() {
			t.Logf("tshark capture output:\n%s\nports seen:\n%s", capLog.String(), capOut.String())
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	_, err := capLog.waitLine(wctx, func(s string) bool { return strings.Contains(s, "Capturing on") })
	wcancel()
	if err != nil {
		t.Fatalf("tshark did not report \"Capturing on\": %v", err)
	}

	// Markers sent from the phone to a port nothing listens on, until
	// tshark prints one, show that the capture runs and, after the run,
	// that it has everything: tshark gets packets in order, and may start
	// late or lose what is still in the kernel's buffer when interrupted.
	marker, err := l.phone.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(l.phoneIP, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer marker.Close()
	mark := strconv.Itoa(markerPort)
	syncCapture := func(mark string) {
		t.Helper()
		mctx, mcancel := context.WithTimeout(ctx, 60*time.Second)
		defer mcancel()
		go func() {
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				_, _ = marker.WriteToUDPAddrPort([]byte("e2e capture marker"), netip.AddrPortFrom(l.pbxIP, markerPort))
				select {
				case <-mctx.Done():
					return
				case <-tick.C:
				}
			}
		}()
		// Only lines after the ones seen so far count.
		seen := len(completeLines(capOut.String()))
		_, err := capOut.waitLineFrom(mctx, seen, func(s string) bool { return strings.TrimSpace(s) == mark })
		if err != nil {
			t.Fatalf("tshark printed no packet to the marker port %s: %v", mark, err)
		}
	}
	syncCapture(mark)

	runBrands(t, l)
	l.stop() // every datagram pnpd sends is out before the capture ends

	// Everything before the marker is in the file.
	syncCapture(mark)
	if err := stop(); err != nil {
		var ee *exec.ExitError
		// tshark may report the interrupt in its exit status.
		if !errors.As(err, &ee) {
			t.Fatalf("tshark: %v", err)
		}
	}

	read := func(args ...string) string {
		t.Helper()
		rctx, rcancel := context.WithTimeout(context.Background(), runTimeout)
		defer rcancel()
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(rctx, tshark, append([]string{"-n", "-r", pcap}, args...)...)
		cmd.Stdout = &stdout
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("tshark %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return stdout.String()
	}

	// Which UDP ports pnpd and the phones used: decode all of them as SIP
	// (heuristics alone miss ports such as 60000).
	ports := map[string]bool{"5060": true}
	for _, line := range completeLines(read("-Y", fmt.Sprintf("udp && udp.dstport != %d", markerPort), "-T", "fields", "-e", "udp.srcport", "-e", "udp.dstport")) {
		for _, p := range strings.Fields(line) {
			ports[p] = true
		}
	}
	decode := []string{"--enable-heuristic", "sip_udp"}
	for _, p := range slices.Sorted(func(yield func(string) bool) {
		for p := range ports {
			if !yield(p) {
				return
			}
		}
	}) {
		decode = append(decode, "-d", "udp.port=="+p+",sip")
	}

	pbx := l.pbxIP.String()
	notMarker := fmt.Sprintf("udp && udp.dstport != %d", markerPort)
	rows := completeLines(read(append(slices.Clone(decode), "-Y", notMarker, "-T", "fields", "-E", "separator=|",
		"-e", "frame.number", "-e", "ip.src", "-e", "ip.dst", "-e", "udp.srcport", "-e", "udp.dstport",
		"-e", "_ws.col.Protocol", "-e", "sip.Method", "-e", "sip.Status-Code", "-e", "sip.CSeq.method")...))
	fromPBX, notifies, oks := 0, 0, 0
	for _, row := range rows {
		f := strings.Split(row, "|")
		if len(f) != 9 {
			t.Errorf("tshark row %q", row)
			continue
		}
		if f[5] != "SIP" {
			t.Errorf("frame %s %s:%s -> %s:%s decodes as %q, not SIP", f[0], f[1], f[3], f[2], f[4], f[5])
		}
		if f[1] != pbx {
			continue
		}
		fromPBX++
		if f[6] == "NOTIFY" {
			notifies++
		}
		if f[7] == "200" && f[8] == "SUBSCRIBE" {
			oks++
		}
	}
	if n := len(e2eBrands); notifies < n || oks < n {
		t.Errorf("capture has %d NOTIFYs and %d 200s to SUBSCRIBE from %s, want at least %d each", notifies, oks, pbx, n)
	}
	if bad := read(append(slices.Clone(decode), "-Y", "("+notMarker+") && (_ws.malformed || _ws.expert.severity >= error)")...); strings.TrimSpace(bad) != "" {
		t.Errorf("malformed packets or error-level expert info:\n%s", bad)
		t.Logf("details:\n%s", read(append(slices.Clone(decode), "-V", "-Y", "("+notMarker+") && (_ws.malformed || _ws.expert.severity >= error)")...))
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("capture (%d UDP packets, %d from pnpd):\n%s", len(rows), fromPBX, read(decode...))
		t.Logf("expert info:\n%s", read(append(slices.Clone(decode), "-q", "-z", "expert")...))
	}
}
