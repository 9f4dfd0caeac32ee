package pnp

import (
	"bytes"
	"context"
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"github.com/pnpd/pnpd/pkg/phone"
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
}

// String names the outcome as logs and Stats do.
func (o outcome) String() string { return outcomeNames[o] }

// serverTx is the server transaction of one SUBSCRIBE: it answers the
// SUBSCRIBE's retransmissions with the same 200 until it expires (Timer J).
type serverTx struct {
	resp    []byte // nil while observed only
	dst     netip.AddrPort
	port    Port
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
	started     time.Time
	deadline    time.Time // Timer F
	interval    time.Duration
	sends       int
	timer       *time.Timer
	done        bool
	expires     time.Time // when the dialog entry may go
}

func (s *Server) handleSubscribe(p Packet, m *sip.Message) {
	switch {
	case !s.allowed(p.Src.Addr()):
		s.drop(p, dropNotAllowed, nil)
		return
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
	toAddr, _ := sip.ParseAddr(to) // a To we cannot read has no tag: ours is added
	if _, _, err := sip.ParseCSeq(m.Get(sip.HdrCSeq)); err != nil {
		s.drop(p, dropIncomplete, err)
		return
	}

	key := txKey(via, callID, m.Get(sip.HdrCSeq))
	now := time.Now()
	s.mu.Lock()
	if tx, ok := s.servers[key]; ok {
		resp, dst, port := tx.resp, tx.dst, tx.port
		s.mu.Unlock()
		if resp != nil {
			s.stats.retransmissions.Add(1)
			_ = port.Send(resp, dst)
		}
		return
	}
	if s.closing {
		s.mu.Unlock()
		s.drop(p, dropShuttingDown, nil)
		return
	}
	if len(s.servers)+len(s.clients) >= s.maxTx {
		s.mu.Unlock()
		s.drop(p, dropTableFull, nil)
		return
	}
	tx := &serverTx{port: p.Port, expires: now.Add(64 * s.t1)}
	s.servers[key] = tx
	s.mu.Unlock()
	s.stats.subscribes.Add(1)

	id := identify(m)
	req := resolve.Request{MAC: id.MAC, Brand: id.Brand, Model: id.Model, Version: id.Firmware,
		IP: p.Src.Addr(), Interface: portName(p.Port)}
	ctx, cancel := context.WithTimeout(context.Background(), s.resolveT)
	d, err := s.res.Resolve(ctx, req)
	cancel()
	if err != nil {
		s.drop(p, dropResolveError, err)
		s.stats.outcomes[outcomeError].Add(1)
		s.log.Warn("exchange", "outcome", outcomeError.String(), "mac", id.MAC, "brand", id.Brand,
			"model", id.Model, "firmware", id.Firmware, "src", p.Src.String(), "iface", portName(p.Port), "err", err)
		return
	}
	if d.URL == "" {
		s.stats.outcomes[outcomeObserved].Add(1)
		s.log.Info("exchange", "outcome", outcomeObserved.String(), "mac", id.MAC, "brand", id.Brand,
			"model", id.Model, "firmware", id.Firmware, "src", p.Src.String(), "iface", portName(p.Port))
		return
	}

	// One NOTIFY per dialog: a new SUBSCRIBE in a dialog that already has
	// one (Grandstream sends five) gets a 200 with the dialog's tag and
	// nothing more.
	dialog := string(callID) + "\x00" + string(fromAddr.Tag())
	s.mu.Lock()
	ex, existing := s.dialogs[dialog]
	if !existing {
		if s.closing {
			s.mu.Unlock()
			s.drop(p, dropShuttingDown, nil)
			return
		}
		toTag := string(toAddr.Tag())
		if toTag == "" {
			toTag = randomTag()
		}
		ex = &exchange{dialog: dialog, toTag: toTag, port: p.Port, id: id, src: p.Src, url: d.URL, source: d.Source,
			started: now, deadline: now.Add(64 * s.t1), interval: s.t1}
		s.dialogs[dialog] = ex
		s.inflight.Add(1) // under the lock that checked closing: Shutdown waits for it
	}
	toTag := ex.toTag
	s.mu.Unlock()
	// The SUBSCRIBE's To with our tag: the 200's To and the NOTIFY's From.
	tagged := to
	if len(toAddr.Tag()) == 0 {
		tagged = append(append(append(make([]byte, 0, len(to)+5+len(toTag)), to...), ";tag="...), toTag...)
	}

	// The 200, sent before the NOTIFY is built.
	resp, dst := s.buildOK(m, via, p, tagged)
	s.mu.Lock()
	tx.resp, tx.dst = resp, dst
	s.mu.Unlock()
	if err := p.Port.Send(resp, dst); err != nil {
		s.log.Warn("send 200", "dst", dst.String(), "err", err)
	}
	if existing {
		return
	}

	branch := "z9hG4bK" + randomTag() + randomTag()
	notify, ndst := s.buildNotify(m, p, branch, tagged, d.URL)
	s.mu.Lock()
	ex.key, ex.dst, ex.notify = branch, ndst, notify
	s.clients[branch] = ex
	s.mu.Unlock()
	s.send(ex)
}

// send transmits the NOTIFY and arms Timer E, never past Timer F. It
// sends under the lock, so that once finish has returned nothing more is
// sent for the exchange.
func (s *Server) send(ex *exchange) {
	s.mu.Lock()
	if ex.done {
		s.mu.Unlock()
		return
	}
	err := ex.port.Send(ex.notify, ex.dst)
	if err == nil {
		ex.sends++
		wait := max(min(ex.interval, time.Until(ex.deadline)), 0)
		ex.timer = time.AfterFunc(wait, func() { s.timerE(ex) })
	}
	s.mu.Unlock()
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
	s.mu.Lock()
	if ex.done {
		s.mu.Unlock()
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
	s.mu.Unlock()
	s.inflight.Done()

	s.stats.outcomes[o].Add(1)
	level := slog.LevelInfo
	if o != outcomeProvisioned {
		level = slog.LevelWarn
	}
	if !s.log.Enabled(context.Background(), level) {
		return
	}
	attrs := []any{"outcome", o.String(), "mac", ex.id.MAC, "brand", ex.id.Brand, "model", ex.id.Model,
		"firmware", ex.id.Firmware, "src", ex.src.String(), "iface", portName(ex.port),
		"url", resolve.Redact(ex.url), "decided_by", ex.source, "notifies", sends,
		"duration", time.Since(ex.started).Round(time.Microsecond).String()}
	if status != 0 {
		attrs = append(attrs, "status", status)
	}
	s.log.Log(context.Background(), level, "exchange", attrs...)
}

// expire forgets server transactions past Timer J and finished dialogs.
func (s *Server) expire(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, tx := range s.servers {
		if now.After(tx.expires) {
			delete(s.servers, k)
		}
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
