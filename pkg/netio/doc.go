// Package netio owns pnpd's sockets: the multicast group membership, the
// socket bound to the group address itself, and one unicast socket per
// chosen interface that sends the answers and receives the phones'
// responses to them.
//
// Go's net.ListenMulticastUDP binds 0.0.0.0:port and so also receives
// unicast sent to that port; this package binds the group address itself
// with the socket system calls, joins the group on each chosen interface,
// and reads the destination address and arrival interface (IP_PKTINFO) of
// every datagram so that datagrams from interfaces not chosen, or not sent
// to the group, never reach the handler.
//
//	l, err := netio.Listen(netio.Config{Group: group, Interfaces: []string{"eth0"}, Logger: log})
//	if err != nil {
//		return err
//	}
//	go l.Serve(ctx, netio.HandlerFunc(func(d netio.Datagram) { ... d.Iface.Send(reply, d.Src) ... }))
//
// IPv4 only.
package netio
