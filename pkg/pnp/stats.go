package pnp

import (
	"sync/atomic"

	"github.com/pnpd/pnpd/pkg/phone"
)

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
	dropSilentRetransmission
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
	// A retransmitted SUBSCRIBE of a transaction that got no 200
	// (observed, pending, refused): it gets none either.
	dropSilentRetransmission: "retransmission-unanswered",
}

// String names the reason as logs and Stats do.
func (d dropReason) String() string { return dropNames[d] }

// DropReasons returns the reasons Stats.Dropped counts by, in a fixed
// order; a fresh slice on each call.
func DropReasons() []string { return append([]string(nil), dropNames[:]...) }

// Outcomes returns the outcomes Stats.Outcomes and Stats.Exchanges count
// by, in a fixed order; a fresh slice on each call.
func Outcomes() []string { return append([]string(nil), outcomeNames[:]...) }

type counters struct {
	datagrams       atomic.Int64
	drops           [numDropReasons]atomic.Int64
	subscribes      atomic.Int64
	retransmissions atomic.Int64 // SUBSCRIBE retransmissions answered with the stored 200
	notifyResends   atomic.Int64 // NOTIFY retransmissions on Timer E
	responses       atomic.Int64 // responses to our NOTIFYs, matched
	outcomes        [numOutcomes]atomic.Int64
	byBrand         [numOutcomes][]atomic.Int64 // by brandIndex
}

// brands are the brand names the exchanges are counted by: phone.Brands,
// then BrandUnknown for a phone no vendor table named.
var brands = append(phone.Brands(), BrandUnknown)

// BrandUnknown is the brand an exchange is counted under in
// Stats.Exchanges when the phone's brand is not known.
const BrandUnknown = "unknown"

func brandIndex(b string) int {
	for i, n := range brands[:len(brands)-1] {
		if n == b {
			return i
		}
	}
	return len(brands) - 1
}

// init makes the per-brand counters.
func (c *counters) init() {
	for i := range c.byBrand {
		c.byBrand[i] = make([]atomic.Int64, len(brands))
	}
}

// count counts one exchange's outcome.
func (c *counters) count(o outcome, brand string) {
	c.outcomes[o].Add(1)
	c.byBrand[o][brandIndex(brand)].Add(1)
}

// Stats are the Server's counters since it started.
type Stats struct {
	Datagrams         int64            // datagrams handed to Handle
	Dropped           map[string]int64 // by reason, only those that happened
	Subscribes        int64            // new ua-profile SUBSCRIBE transactions, not dropped
	Retransmissions   int64            // retransmitted SUBSCRIBEs answered with the stored 200
	NotifyRetransmits int64            // NOTIFYs sent again on Timer E
	Responses         int64            // phones' responses to our NOTIFYs
	Outcomes          map[string]int64 // exchanges by outcome
	// Exchanges counts the exchanges by outcome, then by brand
	// (BrandUnknown when no vendor table named it); only those that
	// happened.
	Exchanges map[string]map[string]int64
}

func (c *counters) snapshot() Stats {
	st := Stats{
		Datagrams:         c.datagrams.Load(),
		Dropped:           map[string]int64{},
		Subscribes:        c.subscribes.Load(),
		Retransmissions:   c.retransmissions.Load(),
		NotifyRetransmits: c.notifyResends.Load(),
		Responses:         c.responses.Load(),
		Outcomes:          map[string]int64{},
		Exchanges:         map[string]map[string]int64{},
	}
	for i := range c.drops {
		if n := c.drops[i].Load(); n > 0 {
			st.Dropped[dropReason(i).String()] = n
		}
	}
	for i := range c.outcomes {
		if n := c.outcomes[i].Load(); n > 0 {
			st.Outcomes[outcome(i).String()] = n
			byBrand := map[string]int64{}
			for j := range c.byBrand[i] {
				if n := c.byBrand[i][j].Load(); n > 0 {
					byBrand[brands[j]] = n
				}
			}
			st.Exchanges[outcome(i).String()] = byBrand
		}
	}
	return st
}
