// Package policy decides whom pnpd answers on a LAN it cannot trust.
//
// The multicast port is open to every host of the LAN and a SUBSCRIBE's MAC
// is whatever its sender claims, so before a phone gets its 200 the policy
// checks, cheapest first:
//
//   - source_rate, per source address, before the datagram is parsed
//     (Source);
//   - mac_rate, contact_is_source, the MAC allow and deny lists, the
//     provisioning window and once, for each new SUBSCRIBE transaction
//     (Admit);
//
// then, wrapped around the resolver (Resolver), what an unknown phone gets
// (unknown = default, observe or approve) and the {token} of the URL
// (Signer); and, when neighbor_check is on, between the 200 and the NOTIFY,
// whether the kernel's neighbour table maps the source address to the
// claimed MAC (CheckNeighbor).
//
// The policy knows nothing of the SIP wire format: pkg/pnp reads the packet
// and asks. The PBX's database (window, once, pending) is read through
// State, which *pbx.PBX implements.
package policy
