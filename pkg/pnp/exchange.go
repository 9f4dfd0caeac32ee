package pnp

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/pnpd/pnpd/pkg/phone"
	"github.com/pnpd/pnpd/pkg/policy"
	"github.com/pnpd/pnpd/pkg/resolve"
	"github.com/pnpd/pnpd/sip"
)

// outcome is how an exchange ended.
type outcome int

const (
	outcomeProvisioned outcome = iota // the phone answered the NOTIFY 2xx
	outcomeRejected                   // the phone answered the NOTIFY >= 300
	outcomeTimeout                    // no final response before Timer F
	outcomeObserved                   // no URL for the phone: not answered
	outcomeSendError                  // the NOTIFY could not be sent
	outcomeAborted                    // shut down before an outcome
	outcomeError                      // the URL could not be decided
	outcomePending                    // unknown, recorded for approval: not answered
	outcomeRefused                    // refused by the policy
	numOutcomes
)

var outcomeNames = [numOutcomes]string{
	outcomeProvisioned: "provisioned",
	outcomeRejected:    "rejected",
	outcomeTimeout:     "timeout",
	outcomeObserved:    "observed",
	outcomeSendError:   "send-error",
	outcomeAborted:     "aborted",
	outcomeError:       "error",
	outcomePending:     "pending",
	outcomeRefused:     "refused",
}

// String names the outcome as logs and Stats do.
func (o outcome) String() string { return outcomeNames[o] }

// serverTx is the server transaction of one SUBSCRIBE: it answers the
// SUBSCRIBE's retransmissions with the same 200 until it expires (Timer J).
type serverTx struct {
	resp    []byte // nil while observed only
	dst     netip.AddrPort
	port    Port
	refused bool // refused by the policy: counted in refusedOpen, not against max transactions
	expires time.Time
}

// exchange is the NOTIFY client transaction of one dialog.
type exchange struct {
	key, dialog string
	toTag       string // ours: the 200's To tag and the NOTIFY's From tag
	port        Port
	dst         netip.AddrPort
	notify      []byte
	id          phone.Identity
	src         netip.AddrPort
	url         string
	source      string
	tenant      string
	err         error // why no URL could be decided
	started     time.Time
	deadline    time.Time // Timer F
	interval    time.Duration
	sends       int
	sendsDone   int // sends, read at the outcome
	timer       *time.Timer
	done        bool
	// sendMu is held across each transmission of the NOTIFY (a syscall,
	// which on a veth link also carries the datagram to the phone) and by
	// finish: once finish has returned nothing more is sent, and s.mu, which
	// the readers need for every datagram, is never held across a send.
	// Taken before s.mu, never after. A pointer: outcome reads a copy of
	// the exchange.
	sendMu  *sync.Mutex
	expires time.Time // when the dialog entry may go
}

func (s *Server) handleSubscribe(st *settings, p Packet, m *sip.Message, now time.Time) {
	switch {
	case !m.IsRequest():
		s.drop(p, dropNotRequest, nil)
		return
	case !bytes.Equal(m.Method, methodSubscribe):
		s.drop(p, dropMethod, nil)
		return
	}
	// Only the package must be ua-profile: parameters phones get wrong
	// (a trailing ';', an unquoted value with a space) are no reason to
	// leave a phone unanswered.
	if !bytes.EqualFold(eventPackage(m.Get(sip.HdrEvent)), eventUAProfile) {
		s.drop(p, dropEvent, nil)
		return
	}
	via, err := m.TopVia()
	if err != nil {
		s.drop(p, dropIncomplete, err)
		return
	}
	callID, from, to := m.Get(sip.HdrCallID), m.Get(sip.HdrFrom), m.Get(sip.HdrTo)
	if len(callID) == 0 || len(from) == 0 || len(to) == 0 || len(m.Get(sip.HdrCSeq)) == 0 {
		s.drop(p, dropIncomplete, nil)
		return
	}
	fromAddr, err := sip.ParseAddr(from)
	if err != nil {
		s.drop(p, dropIncomplete, err)
		return
	}
	// A To that is no address would come back with our tag appended to
	// whatever it holds: not SIP, which no phone could match (found by
	// FuzzHandle). A CSeq of another method is no SUBSCRIBE (RFC 4475,
	// mismatch01).
	toAddr, err := sip.ParseAddr(to)
	if err != nil {
		s.drop(p, dropMalformed, err)
		return
	}
	_, cseqMethod, err := sip.ParseCSeq(m.Get(sip.HdrCSeq))
	if err != nil {
		s.drop(p, dropIncomplete, err)
		return
	}
	if !bytes.Equal(cseqMethod, methodSubscribe) {
		s.drop(p, dropMalformed, fmt.Errorf("CSeq method %q is not SUBSCRIBE", cseqMethod))
		return
	}

	key := txKey(via, callID, m.Get(sip.HdrCSeq))
	dialog := string(callID) + "\x00" + string(fromAddr.Tag())
	s.mu.Lock()
	if tx, ok := s.servers[key]; ok {
		resp, dst, port := tx.resp, tx.dst, tx.port
		s.mu.Unlock()
		if resp != nil {
			s.stats.retransmissions.Add(1)
			_ = port.Send(resp, dst)
		} else {
			// Observed, pending, refused: the first got no 200 either.
			s.drop(p, dropSilentRetransmission, nil)
		}
		return
	}
	if s.closing {
		s.mu.Unlock()
		s.drop(p, dropShuttingDown, nil)
		return
	}
	if len(s.servers)+len(s.clients)-s.refusedOpen >= st.maxTx {
		s.mu.Unlock()
		s.drop(p, dropTableFull, nil)
		if s.fullLogged.CompareAndSwap(false, true) {
			s.log.Warn("max_transactions reached: new SUBSCRIBEs are dropped until transactions end",
				"max_transactions", st.maxTx)
		}
		return
	}
	tx := &serverTx{port: p.Port, expires: now.Add(64 * s.t1)}
	s.servers[key] = tx
	// One NOTIFY per dialog: a new SUBSCRIBE in a dialog that already has
	// its exchange (Grandstream sends five) gets a 200 with the dialog's
	// tag and nothing more; nothing is decided again.
	ex, existing := s.dialogs[dialog]
	s.mu.Unlock()

	id := identify(m)
	seen := Event{Kind: EventSeen, Identity: id, Src: p.Src, Interface: portName(p.Port), Time: now}

	if existing {
		s.stats.subscribes.Add(1)
		s.sendOK(m, via, p, tx, taggedTo(to, toAddr, ex.toTag))
		s.observe(seen)
		return
	}

	var refusal policy.Refusal
	if st.pol != nil {
		ph := policy.Phone{MAC: id.MAC, Src: p.Src.Addr(), Interface: portName(p.Port)}
		ph.ContactIsSource, ph.Contact = contactIsSource(m, p.Src.Addr())
		refusal = st.pol.Admit(ph, now)
		if refusal.Reason == policy.MACRate {
			// A flood: counted and dropped, logged by the policy once
			// while it lasts; its retransmissions are taken anew.
			s.forget(key)
			s.drop(p, dropRateLimited, nil)
			return
		}
	}
	// A new SUBSCRIBE transaction is counted once it is not dropped
	// (dropped ones are counted by their drop reason).
	if refusal.Refused() {
		s.stats.subscribes.Add(1)
		// The transaction stays, unanswered, so that its retransmissions
		// are silent and the refusal is logged once. Refused transactions
		// have a table of their own size: a flood of refusals must not
		// lock phones out of the table.
		s.mu.Lock()
		if s.refusedOpen < st.maxTx {
			tx.refused = true
			s.refusedOpen++
		} else {
			delete(s.servers, key)
		}
		s.mu.Unlock()
		s.observe(seen)
		s.outcome(&exchange{id: id, src: p.Src, port: p.Port, started: now, err: refusal, source: "policy"}, outcomeRefused, 0)
		return
	}

	req := resolve.Request{MAC: id.MAC, Brand: id.Brand, Model: id.Model, Version: id.Firmware,
		IP: p.Src.Addr(), Interface: portName(p.Port)}
	d, decided, err := s.decide(st.res, req)
	if err != nil {
		s.drop(p, dropResolveError, err)
		s.observe(seen)
		s.outcome(&exchange{id: id, src: p.Src, port: p.Port, tenant: d.Tenant, source: d.Source, started: now, err: err}, outcomeError, 0)
		return
	}
	if decided && d.URL == "" {
		s.stats.subscribes.Add(1)
		s.observe(seen)
		o := outcomeObserved
		if d.Pending {
			o = outcomePending
		}
		s.outcome(&exchange{id: id, src: p.Src, port: p.Port, source: d.Source, started: now}, o, 0)
		return
	}
	// With neighbor_check the NOTIFY waits for the kernel to resolve the
	// phone's address, which the 200 starts: off the reader.
	check := st.pol != nil && st.pol.NeighborCheck()
	if !decided || check {
		// The PBX must be asked, or the neighbour checked: the 200
		// leaves now, the work is done after it, and the NOTIFY follows
		// only if the answer is a URL (and the check passes). A bounded
		// number of such exchanges wait at once (MaxAsking); beyond that
		// the SUBSCRIBE is forgotten, so that its retransmission is
		// handled anew.
		select {
		case s.asking <- struct{}{}:
		default:
			s.forget(key)
			s.drop(p, dropBusy, nil)
			s.observe(seen)
			return
		}
	}
	release := func() {
		if !decided || check {
			<-s.asking
		}
	}

	s.mu.Lock()
	if ex, existing = s.dialogs[dialog]; existing {
		// Another SUBSCRIBE of the dialog got there first.
		s.mu.Unlock()
		release()
		s.stats.subscribes.Add(1)
		s.sendOK(m, via, p, tx, taggedTo(to, toAddr, ex.toTag))
		s.observe(seen)
		return
	}
	if s.closing {
		delete(s.servers, key)
		s.mu.Unlock()
		release()
		s.drop(p, dropShuttingDown, nil)
		return
	}
	s.stats.subscribes.Add(1)
	toTag := string(toAddr.Tag())
	if toTag == "" {
		toTag = randomTag()
	}
	ex = &exchange{sendMu: new(sync.Mutex), dialog: dialog, toTag: toTag, port: p.Port, id: id, src: p.Src, url: d.URL, source: d.Source,
		tenant: d.Tenant, started: now, deadline: now.Add(64 * s.t1), interval: s.t1}
	s.dialogs[dialog] = ex
	s.inflight.Add(1) // under the lock that checked closing: Shutdown waits for it
	if !decided || check {
		s.asked.Add(1)
	}
	s.mu.Unlock()

	// The 200, sent before the NOTIFY is built.
	tagged := taggedTo(to, toAddr, toTag)
	s.sendOK(m, via, p, tx, tagged)
	s.observe(seen)
	if !decided || check {
		later := p
		later.Data = append([]byte(nil), p.Data...)
		go s.later(st, ex, later, req, decided)
		return
	}
	s.startNotify(ex, m, p, tagged, d.URL)
}

// contactIsSource reports whether the host of the SUBSCRIBE's first
// Contact is src, written as an IPv4 address; when it is not, host is what
// the Contact names ("" when none parses).
func contactIsSource(m *sip.Message, src netip.Addr) (ok bool, host string) {
	var contact []byte
	sip.SplitComma(m.Get(sip.HdrContact), func(e []byte) bool {
		contact = e
		return false
	})
	a, err := sip.ParseAddr(contact)
	if err != nil {
		return false, ""
	}
	u, err := sip.ParseURI(a.URI)
	if err != nil {
		return false, ""
	}
	var buf [16]byte
	if bytes.Equal(u.Host, src.AppendTo(buf[:0])) {
		return true, ""
	}
	return false, string(u.Host)
}

// sendOK builds the 200 for the SUBSCRIBE, keeps it in its server
// transaction for retransmissions, and sends it.
func (s *Server) sendOK(m *sip.Message, via sip.Via, p Packet, tx *serverTx, tagged []byte) {
	resp, dst := s.buildOK(m, via, p, tagged)
	s.mu.Lock()
	tx.resp, tx.dst = resp, dst
	s.mu.Unlock()
	if err := p.Port.Send(resp, dst); err != nil {
		s.log.Warn("send 200", "dst", dst.String(), "err", err)
	}
}

// forget removes a server transaction that got no answer, so that the
// SUBSCRIBE's retransmission is handled as new.
func (s *Server) forget(key string) {
	s.mu.Lock()
	delete(s.servers, key)
	s.mu.Unlock()
}

// decide asks the resolver for the phone's URL: without I/O when the
// resolver can (decided), else decided is false and resolveLater asks
// after the 200. A resolver without a fast path is asked here.
func (s *Server) decide(res resolve.Resolver, req resolve.Request) (d resolve.Decision, decided bool, err error) {
	if f, ok := res.(resolve.Fast); ok {
		return f.Decide(req)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.resolveT)
	defer cancel()
	d, err = res.Resolve(ctx, req)
	return d, true, err
}

// later does, off the reader, what comes between the 200 and the NOTIFY:
// asking the resolver for a phone whose URL was not decided on the path to
// the 200 (decided false), and the policy's neighbour check. Then it sends
// the NOTIFY, or ends the exchange without one.
func (s *Server) later(st *settings, ex *exchange, p Packet, req resolve.Request, decided bool) {
	defer func() {
		<-s.asking
		s.asked.Done()
	}()
	if !decided {
		ctx, cancel := context.WithTimeout(s.askCtx, s.resolveT)
		d, err := st.res.Resolve(ctx, req)
		cancel()
		s.mu.Lock()
		if ex.done { // aborted by Shutdown meanwhile
			s.mu.Unlock()
			return
		}
		ex.url, ex.source, ex.tenant, ex.err = d.URL, d.Source, d.Tenant, err
		s.mu.Unlock()
		switch {
		case err != nil:
			s.finish(ex, outcomeError, 0)
			return
		case d.URL == "" && d.Pending:
			s.finish(ex, outcomePending, 0)
			return
		case d.URL == "":
			s.finish(ex, outcomeObserved, 0)
			return
		}
	}
	if st.pol != nil && st.pol.NeighborCheck() {
		if r := st.pol.CheckNeighbor(s.askCtx, portName(ex.port), ex.src.Addr(), ex.id.MAC); r.Refused() {
			s.mu.Lock()
			ex.err = r
			s.mu.Unlock()
			s.finish(ex, outcomeRefused, 0)
			return
		}
	}
	s.mu.Lock()
	url := ex.url
	s.mu.Unlock()
	m := new(sip.Message)
	if err := m.Parse(p.Data); err != nil { // parsed once already: cannot fail
		s.mu.Lock()
		ex.err = err
		s.mu.Unlock()
		s.finish(ex, outcomeError, 0)
		return
	}
	toAddr, _ := sip.ParseAddr(m.Get(sip.HdrTo))
	s.startNotify(ex, m, p, taggedTo(m.Get(sip.HdrTo), toAddr, ex.toTag), url)
}

// startNotify builds the exchange's NOTIFY for url and sends it.
func (s *Server) startNotify(ex *exchange, m *sip.Message, p Packet, tagged []byte, url string) {
	branch := "z9hG4bK" + randomTag() + randomTag()
	notify, ndst := s.buildNotify(m, p, branch, tagged, url)
	s.mu.Lock()
	ex.key, ex.dst, ex.notify = branch, ndst, notify
	if !ex.done {
		s.clients[branch] = ex
	}
	s.mu.Unlock()
	s.send(ex)
}

// taggedTo is the SUBSCRIBE's To with our tag: the 200's To and the
// NOTIFY's From.
func taggedTo(to []byte, toAddr sip.Addr, tag string) []byte {
	if len(toAddr.Tag()) != 0 {
		return to
	}
	return append(append(append(make([]byte, 0, len(to)+5+len(tag)), to...), ";tag="...), tag...)
}

// send transmits the NOTIFY and arms Timer E, never past Timer F. It
// sends under the exchange's sendMu, so that once finish has returned
// nothing more is sent for the exchange.
func (s *Server) send(ex *exchange) {
	ex.sendMu.Lock()
	s.mu.Lock()
	done := ex.done
	s.mu.Unlock()
	if done {
		ex.sendMu.Unlock()
		return
	}
	// ex.port, ex.notify and ex.dst are set before the first send and
	// never change.
	err := ex.port.Send(ex.notify, ex.dst)
	if err == nil {
		s.mu.Lock()
		ex.sends++
		wait := max(min(ex.interval, time.Until(ex.deadline)), 0)
		ex.timer = time.AfterFunc(wait, func() { s.timerE(ex) })
		s.mu.Unlock()
	}
	ex.sendMu.Unlock()
	if err != nil {
		s.log.Warn("send NOTIFY", "dst", ex.dst.String(), "err", err)
		s.finish(ex, outcomeSendError, 0)
	}
}

// timerE retransmits the NOTIFY, doubling the interval up to T2, until a
// final response or Timer F.
func (s *Server) timerE(ex *exchange) {
	s.mu.Lock()
	if ex.done {
		s.mu.Unlock()
		return
	}
	if !time.Now().Before(ex.deadline) {
		s.mu.Unlock()
		s.finish(ex, outcomeTimeout, 0)
		return
	}
	if ex.sends >= s.maxSends {
		// Sent as often as it may be: wait for a response until Timer F.
		ex.timer = time.AfterFunc(max(time.Until(ex.deadline), 0), func() { s.timerE(ex) })
		s.mu.Unlock()
		return
	}
	ex.interval = min(2*ex.interval, s.t2)
	s.mu.Unlock()
	s.stats.notifyResends.Add(1)
	s.send(ex)
}

// handleUnicast takes responses to our NOTIFYs.
func (s *Server) handleUnicast(p Packet, m *sip.Message) {
	if m.IsRequest() {
		s.drop(p, dropUnicastRequest, nil)
		return
	}
	via, err := m.TopVia()
	if err != nil {
		s.drop(p, dropUnmatched, err)
		return
	}
	_, method, err := sip.ParseCSeq(m.Get(sip.HdrCSeq))
	if err != nil || !bytes.Equal(method, methodNotify) {
		s.drop(p, dropUnmatched, err)
		return
	}
	s.mu.Lock()
	ex, ok := s.clients[string(via.Branch())]
	if ok && m.StatusCode < 200 {
		// Proceeding: keep retransmitting, at T2.
		ex.interval = s.t2
	}
	s.mu.Unlock()
	if !ok {
		s.drop(p, dropUnmatched, nil)
		return
	}
	s.stats.responses.Add(1)
	switch {
	case m.StatusCode < 200:
	case m.StatusCode < 300:
		s.finish(ex, outcomeProvisioned, m.StatusCode)
	default:
		s.finish(ex, outcomeRejected, m.StatusCode)
	}
}

// finish records the outcome of an exchange once.
func (s *Server) finish(ex *exchange, o outcome, status int) {
	// A NOTIFY being sent now goes out before the outcome.
	ex.sendMu.Lock()
	s.mu.Lock()
	if ex.done {
		s.mu.Unlock()
		ex.sendMu.Unlock()
		return
	}
	ex.done = true
	if ex.timer != nil {
		ex.timer.Stop()
	}
	delete(s.clients, ex.key)
	// The dialog entry stays a while so that late SUBSCRIBEs of the same
	// dialog get no second NOTIFY.
	ex.expires = time.Now().Add(64 * s.t1)
	sends := ex.sends
	ex.sendsDone = sends
	final := *ex // what outcome reads, taken under the lock
	s.mu.Unlock()
	ex.sendMu.Unlock()
	s.inflight.Done()
	s.outcome(&final, o, status)
}

// outcome counts, logs and reports the outcome of an exchange (finished,
// or one that never had a NOTIFY).
func (s *Server) outcome(ex *exchange, o outcome, status int) {
	s.stats.count(o, ex.id.Brand)
	var reason string
	switch o {
	case outcomeRejected:
		reason = "NOTIFY rejected with " + itoa(status)
	case outcomeTimeout:
		reason = "no response to the NOTIFY"
	case outcomeSendError:
		reason = "NOTIFY not sent"
	case outcomeAborted:
		reason = "shut down before the phone answered"
	case outcomeError:
		reason = "no decision"
	case outcomePending:
		reason = "unknown phone waiting for approval"
	}
	if ex.err != nil {
		reason = ex.err.Error()
	}
	if obs := s.set.Load().obs; obs != nil {
		obs.Observe(Event{Kind: EventDone, Identity: ex.id, Src: ex.src, Interface: portName(ex.port),
			URL: ex.url, Source: ex.source, Tenant: ex.tenant, Outcome: o.String(), Reason: reason,
			Status: status, Time: time.Now()})
	}
	level := slog.LevelInfo
	if o != outcomeProvisioned && o != outcomeObserved && o != outcomePending && o != outcomeRefused {
		level = slog.LevelWarn
	}
	if !s.log.Enabled(context.Background(), level) {
		return
	}
	// Typed attributes in an array on the stack: one line per exchange
	// is the daemon's busiest log, and a boot storm writes thousands.
	var buf [16]slog.Attr
	attrs := append(buf[:0], slog.String("outcome", o.String()), slog.String("mac", ex.id.MAC),
		slog.String("brand", ex.id.Brand), slog.String("model", ex.id.Model),
		slog.String("firmware", ex.id.Firmware), slog.Any("src", ex.src), slog.String("iface", portName(ex.port)))
	if ex.url != "" {
		attrs = append(attrs, slog.String("url", resolve.Redact(ex.url)))
	}
	if ex.source != "" {
		attrs = append(attrs, slog.String("decided_by", ex.source))
	}
	if ex.tenant != "" {
		attrs = append(attrs, slog.String("tenant", ex.tenant))
	}
	if ex.notify != nil {
		attrs = append(attrs, slog.Int("notifies", ex.sendsDone))
	}
	if o != outcomeObserved {
		attrs = append(attrs, slog.Any("duration", time.Since(ex.started).Round(time.Microsecond)))
	}
	if status != 0 {
		attrs = append(attrs, slog.Int("status", status))
	}
	if r, ok := ex.err.(policy.Refusal); ok {
		attrs = append(attrs, slog.String("reason", r.Reason.String()), slog.String("detail", r.Detail))
	} else if ex.err != nil {
		attrs = append(attrs, slog.String("err", ex.err.Error()))
	}
	s.log.LogAttrs(context.Background(), level, "exchange", attrs...)
}

// observe reports ev to the Observer, if any.
func (s *Server) observe(ev Event) {
	if obs := s.set.Load().obs; obs != nil {
		obs.Observe(ev)
	}
}

// expire forgets server transactions past Timer J and finished dialogs.
func (s *Server) expire(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, tx := range s.servers {
		if now.After(tx.expires) {
			delete(s.servers, k)
			if tx.refused {
				s.refusedOpen--
			}
		}
	}
	if len(s.servers)+len(s.clients)-s.refusedOpen < s.set.Load().maxTx {
		s.fullLogged.Store(false)
	}
	for k, ex := range s.dialogs {
		if ex.done && now.After(ex.expires) {
			delete(s.dialogs, k)
		}
	}
}

// txKey identifies a server transaction: the branch and sent-by of the top
// Via (RFC 3261 17.2.3), or for a branch without the magic cookie the
// Call-ID and CSeq as well.
func txKey(v sip.Via, callID, cseq []byte) string {
	var b strings.Builder
	br := v.Branch()
	b.Grow(len(br) + len(v.Host) + 8 + len(callID) + len(cseq))
	b.Write(br)
	b.WriteByte(0)
	b.Write(v.Host)
	b.WriteByte(':')
	b.WriteString(itoa(v.Port))
	if !bytes.HasPrefix(br, []byte("z9hG4bK")) {
		b.WriteByte(0)
		b.Write(callID)
		b.WriteByte(0)
		b.Write(cseq)
	}
	return b.String()
}

func randomTag() string {
	var b [4]byte
	v := rand.Uint32()
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	return hex.EncodeToString(b[:])
}

// eventPackage returns the package token of an Event value: what comes
// before the first ';', trimmed.
func eventPackage(v []byte) []byte {
	if i := bytes.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	return bytes.TrimSpace(v)
}

var (
	methodSubscribe = []byte("SUBSCRIBE")
	methodNotify    = []byte("NOTIFY")
	eventUAProfile  = []byte("ua-profile")
)
