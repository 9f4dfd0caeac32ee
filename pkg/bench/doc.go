// Package bench measures pnpd the way a site meets it: single phones and a
// boot storm of thousands of phones, each from its own address, between
// network namespaces it creates and removes itself, with pnpd, a minimal UDP
// responder (what the machine can do at all for the same packet pattern)
// and, when one is prepared, a real Asterisk answering the same SUBSCRIBEs.
// It also times our parser against gosip's and the PBX database loads.
//
// Fleet is the phones' side: one socket per brand port sends every phone's
// SUBSCRIBE from the phone's own address (IP_PKTINFO), retransmits it as a
// phone does (T1 doubling to T2, Timer F), answers each NOTIFY with a 200,
// and records when each thing happened. Run drives a whole measurement and
// Report prints it as one table; `pnpd bench` is the command.
//
// Nothing is sent outside the namespaces: the phones' addresses are local to
// their namespace and reached over a veth link from the responder's.
package bench
