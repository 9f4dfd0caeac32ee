// Package metrics exports pnpd's counters in the Prometheus text format on
// an HTTP listener of its own.
//
// A Collector reads the live counters of the responder, the listener, the
// policy, the PBX view and the AMI link through the functions of Sources
// when it is scraped, so the datagram path pays nothing for it; the daemon
// may swap what stands behind those functions on a configuration reload.
// NewRegistry puts the Collector on a registry of pnpd's own (never the
// default one) beside the Go runtime's and the process's collectors.
//
//	reg, err := metrics.NewRegistry(metrics.Sources{Server: srv.Stats, ...})
//	s := metrics.NewServer("127.0.0.1:9560", reg, log)
//	if err := s.Listen(); err != nil { ... } // a taken port fails now
//	go s.Serve(ctx)
//	...
//	s.Shutdown(shutdownCtx)
//
// Every label takes its values from a fixed list (drop reasons, outcomes,
// brands, policy reasons, AMI states) or from the daemon's own
// configuration (interfaces, version), so the number of series stays
// bounded whatever the network sends. Series of the known label values are
// exported at zero too, so that rate() works from the first scrape.
package metrics
