// Package simulate implements a SIP Plug-and-Play desk phone, for
// `pnpd simulate` and the integration tests.
//
// Run sends one brand's ua-profile SUBSCRIBE exactly in the shape that brand's
// phones use (Request-URI and From/To MAC spelling, Via with or without rport,
// Contact with or without a user, User-Agent, Event parameters, source port;
// see docs/pnp-protocol.md and sip/testdata/phones), then behaves as the phone:
// it collects the responses to its SUBSCRIBE, checks the NOTIFY against the
// rules phones rely on, answers it with a 200, and can fetch the configuration
// files from the URL in the order the brand's phones do.
//
// Everything received is parsed with github.com/jart/gosip, a SIP parser
// independent of pnpd's own, so that a simulation also checks that pnpd writes
// valid SIP.
//
//	res, err := simulate.Run(ctx, simulate.Options{
//		Vendor: "yealink",
//		Iface:  "eth0",
//		Fetch:  true,
//		Stderr: os.Stderr,
//	})
//	if err != nil {
//		return err // errors.Is(err, simulate.ErrNoNotify) when nobody answered
//	}
//	fmt.Println(res.URL, res.OKLatency)
//
// A multicast Target (the default, 224.0.1.75:5060) leaves on Iface with TTL 1
// and multicast loopback off; tests use Iface "lo" and a unicast Target on
// 127.0.0.1 instead.
//
// Fetch order per brand (stop at the first file that downloads, Yealink
// excepted):
//
//	htek         factory0000.xml, cfg0000.xml, <mac>.cfg, cfg<mac>, cfg<mac>.xml
//	grandstream  cfg<mac>, cfg<mac>.xml, cfg.xml
//	yealink      y000000000000.cfg, then <mac>.cfg (both fetched)
//	snom         the URL itself, {mac} expanded (upper-case MAC)
//	gigaset      the URL itself, %MACD expanded (upper-case MAC)
//	panasonic    {mac} {MAC} {MODEL} {fwver} expanded; no file name -> {MODEL}.cfg
//	fanvil       $mac expanded; no file name -> <mac>.cfg
//	audiocodes   no file name -> <mac>.cfg
//
// Names are appended to the URL with one '/' between; <mac> is lower-case.
// Only http and https URLs are fetched. Credentials in URLs never reach
// Stderr or the Logger: they are printed as http://***@host/...
package simulate
