// Package netns creates Linux network namespaces joined by veth pairs, runs
// commands inside them and opens sockets inside them from the calling
// process. It is the lab that pnpd's integration tests and `pnpd bench` run
// phones and responders in, so that their traffic never leaves the machine.
//
// Namespaces and links are managed with iproute2's `ip` command, which must be
// on PATH; creating them needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN). Check
// reports whether that is available.
//
// A Pair is two namespaces, A and B, with one veth link between them. Both
// ends and both loopbacks are up, each end has an address of one subnet (by
// default 198.18.0.1/24 in A and 198.18.0.2/24 in B, from the benchmarking
// range of RFC 2544) and a route for 224.0.0.0/4 through its veth, so that a
// multicast sent without IP_MULTICAST_IF leaves through the link.
//
//	p, err := netns.NewPair(ctx, netns.Options{})
//	if err != nil {
//		return err
//	}
//	defer p.Close()
//	srv := p.A.Command(ctx, "pnpd", "serve", "-config", cfgFile)
//	conn, err := p.B.ListenUDP("udp4", &net.UDPAddr{IP: p.BAddr.Addr().AsSlice()})
//
// A socket keeps the namespace it was created in: ListenUDP, ListenPacket and
// Listen switch one locked OS thread into the namespace, create the socket and
// switch back, so the returned socket works from any goroutine. Do runs any
// function that way. Resolve no host names inside Do; the resolver may use
// other threads.
//
// Names are unique per process: "<prefix>-<pid>-<n>a" for namespaces and
// "pn<pid>-<n>a" for interfaces (at most 15 bytes). RemoveStale removes
// namespaces left behind by processes that died before closing them.
package netns
