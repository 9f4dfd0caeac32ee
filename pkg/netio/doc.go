// Package netio owns pnpd's sockets: how the group's datagrams are
// received, the group membership, and one unicast socket per chosen
// interface that sends the answers and receives the phones' responses to
// them.
//
// The group is received in one of three modes (Mode):
//
//   - bind: a UDP socket bound to the group address itself (not 0.0.0.0:
//     Go's net.ListenMulticastUDP would also take unicast to the port),
//     joined on each chosen interface, reading the destination address and
//     arrival interface (IP_PKTINFO) of every datagram. It holds the group's
//     port, which a PBX bound to 0.0.0.0:5060 then cannot bind.
//   - raw: a raw UDP socket (CAP_NET_RAW) behind a kernel BPF filter that
//     passes only the group's datagrams, the group joined on the unicast
//     sockets. Nothing is bound to the group's port; a PBX on the wildcard
//     address receives the group's datagrams too, after pnpd (raw sockets
//     get them before UDP sockets).
//   - packet: one AF_PACKET socket per interface (CAP_NET_RAW) with a
//     link-layer membership for the group's Ethernet address and the same
//     filter. No socket joins the group, so the host's IP stack drops the
//     datagrams and no PBX sees them; pnpd sends the IGMP membership
//     reports and answers the queries itself so that snooping switches keep
//     forwarding the group.
//
// ChooseMode picks one for "auto" from what ProbeHost reads in /proc (who
// holds the port, whether an Asterisk runs in this network namespace,
// whether pnpd has CAP_NET_RAW).
//
//	l, err := netio.Listen(netio.Config{Mode: netio.ModePacket, Group: group, Interfaces: chosen,
//		Watch: true, Names: names, OnChange: func(ifs []*netio.Iface) { ... }, Logger: log})
//	if err != nil {
//		return err
//	}
//	go l.Serve(ctx, netio.HandlerFunc(func(d netio.Datagram) { ... d.Iface.Send(reply, d.Src) ... }))
//
// With Config.Watch the Listener follows the interfaces while it serves
// (see watch.go): one created after start, or deleted and created again
// (a new index, maybe a new address), is joined; one deleted, down or
// with another address is let go of, and its Iface's Send fails with
// ErrIfaceGone. Config.OnChange hears of each change.
//
// Datagrams from interfaces not chosen, or not sent to the group, never
// reach the handler. IPv4 only.
package netio
