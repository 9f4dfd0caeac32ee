// Package pnp implements the SIP Plug-and-Play exchange (RFC 6080 ua-profile
// with RFC 6665 fetch semantics) as phones speak it: a SUBSCRIBE multicast to
// the group gets a 200 OK from a server transaction, and a NOTIFY carrying
// the provisioning URL goes to the phone's Contact (at the source address) in
// a client transaction retransmitted on Timer E until a final response or
// Timer F.
//
// The Server knows nothing of sockets or of where URLs come from: it is
// handed received datagrams with the Port they arrived on (answers leave from
// that Port) and asks a resolve.Resolver for the URL.
//
//	srv := pnp.NewServer(pnp.Config{Resolver: resolve.NewStatic(cfg.Resolve), Logger: log})
//	go srv.Serve(ctx)
//	listener.Serve(ctx, netio.HandlerFunc(func(d netio.Datagram) {
//		srv.Handle(pnp.Packet{Data: d.Data, Src: d.Src, Group: d.Group, Port: d.Iface})
//	}))
//	srv.Shutdown(shutdownCtx) // lets NOTIFYs in flight finish
//
// Only a valid ua-profile SUBSCRIBE sent to the group from an allowed source
// is ever answered; everything else is dropped silently and counted.
package pnp
