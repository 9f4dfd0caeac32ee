package pnp

import "sync/atomic"

// dropReason says why a datagram got no answer.
type dropReason int

// Reasons a datagram is dropped without an answer.
const (
	dropMalformed dropReason = iota
	dropNotAllowed
	dropNotRequest
	dropMethod
	dropEvent
	dropIncomplete
	dropTableFull
	dropShuttingDown
	dropUnmatched
	dropUnicastRequest
	dropResolveError
	dropBusy
	dropRateLimited
	numDropReasons
)

var dropNames = [numDropReasons]string{
	dropMalformed:      "malformed",
	dropNotAllowed:     "source-not-allowed",
	dropNotRequest:     "unexpected-response",
	dropMethod:         "not-subscribe",
	dropEvent:          "not-ua-profile",
	dropIncomplete:     "missing-headers",
	dropTableFull:      "transaction-table-full",
	dropShuttingDown:   "shutting-down",
	dropUnmatched:      "response-unmatched",
	dropUnicastRequest: "unicast-request",
	dropResolveError:   "resolve-error",
	dropBusy:           "busy",
	dropRateLimited:    "rate-limited",
}

// String names the reason as logs and Stats do.
func (d dropReason) String() string { return dropNames[d] }

type counters struct {
	datagrams       atomic.Int64
	drops           [numDropReasons]atomic.Int64
	subscribes      atomic.Int64
	retransmissions atomic.Int64 // SUBSCRIBE retransmissions answered with the stored 200
	notifyResends   atomic.Int64 // NOTIFY retransmissions on Timer E
	outcomes        [numOutcomes]atomic.Int64
}

// Stats are the Server's counters since it started.
type Stats struct {
	Datagrams         int64            // datagrams handed to Handle
	Dropped           map[string]int64 // by reason, only those that happened
	Subscribes        int64            // new ua-profile SUBSCRIBE transactions from allowed sources
	Retransmissions   int64            // retransmitted SUBSCRIBEs answered with the stored 200
	NotifyRetransmits int64            // NOTIFYs sent again on Timer E
	Outcomes          map[string]int64 // exchanges by outcome
}

func (c *counters) snapshot() Stats {
	st := Stats{
		Datagrams:         c.datagrams.Load(),
		Dropped:           map[string]int64{},
		Subscribes:        c.subscribes.Load(),
		Retransmissions:   c.retransmissions.Load(),
		NotifyRetransmits: c.notifyResends.Load(),
		Outcomes:          map[string]int64{},
	}
	for i := range c.drops {
		if n := c.drops[i].Load(); n > 0 {
			st.Dropped[dropReason(i).String()] = n
		}
	}
	for i := range c.outcomes {
		if n := c.outcomes[i].Load(); n > 0 {
			st.Outcomes[outcome(i).String()] = n
		}
	}
	return st
}
