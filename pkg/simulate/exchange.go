package simulate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jart/gosip/sip"
	"github.com/pnpd/pnpd/pkg/resolve"
)

// runner is one Run's SIP side.
type runner struct {
	c    *config
	conn *net.UDPConn
	sub  subscribe
	res  Result

	sentAt      time.Time
	okTag       string // To tag of the first 2xx
	finals      int    // final responses seen
	answered    bool   // a NOTIFY was answered
	answeredAt  time.Time
	notifyTag   string // From tag of the first answered NOTIFY
	ownToTag    string // To tag we add when the NOTIFY's To has none (Fanvil)
	repeatsLeft int
	nextRepeat  time.Time
	lastRepeat  time.Time // when the last retransmission was sent
}

// exchange sends the SUBSCRIBE and runs the receive loop.
func (r *runner) exchange(ctx context.Context) error {
	log := r.c.log
	stop := context.AfterFunc(ctx, func() { r.conn.SetReadDeadline(time.Now()) })
	defer stop()

	if err := r.send(r.sub.raw, r.c.target); err != nil {
		return err
	}
	r.sentAt = time.Now()
	log.Debug("SUBSCRIBE sent", "to", r.c.target, "from", r.conn.LocalAddr(), "brand", r.c.shape.brand, "mac", r.c.mac, "call_id", r.sub.callID)
	r.repeatsLeft = r.c.repeat
	r.nextRepeat = r.sentAt.Add(repeatInterval)
	deadline := r.sentAt.Add(r.c.timeout)

	buf := make([]byte, 65535)
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("simulate: %w", err)
		}
		now := time.Now()
		if r.repeatsLeft > 0 && !now.Before(r.nextRepeat) {
			if err := r.send(r.sub.raw, r.c.target); err != nil {
				return err
			}
			r.repeatsLeft--
			r.lastRepeat = now
			r.nextRepeat = r.nextRepeat.Add(repeatInterval)
			log.Debug("SUBSCRIBE retransmitted", "left", r.repeatsLeft)
		}
		var wake time.Time
		if r.answered {
			end := later(r.answeredAt, r.lastRepeat).Add(r.c.linger)
			if r.finals == 0 {
				end = later(end, r.answeredAt.Add(okGrace))
			}
			if r.repeatsLeft > 0 {
				end = later(end, r.nextRepeat)
			}
			if !now.Before(end) {
				return nil
			}
			wake = end
		} else {
			if !now.Before(deadline) {
				return r.noNotify()
			}
			wake = deadline
		}
		if r.repeatsLeft > 0 && r.nextRepeat.Before(wake) {
			wake = r.nextRepeat
		}
		if err := r.conn.SetReadDeadline(wake); err != nil {
			return fmt.Errorf("simulate: %w", err)
		}
		if err := ctx.Err(); err != nil { // cancelled before the new deadline was set
			return fmt.Errorf("simulate: %w", err)
		}
		n, src, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return fmt.Errorf("simulate: read: %w", err)
		}
		if err := r.handle(buf[:n], netip.AddrPortFrom(src.Addr().Unmap(), src.Port())); err != nil {
			return err
		}
	}
}

// noNotify is the timeout error, with what did arrive.
func (r *runner) noNotify() error {
	detail := r.c.timeout.String()
	if r.res.Notifies > 0 {
		detail += fmt.Sprintf("; %d NOTIFYs left unanswered as asked", r.res.Notifies)
	}
	if len(r.res.Responses) > 0 {
		detail += fmt.Sprintf("; responses %v", r.res.Responses)
	}
	if r.res.Malformed > 0 {
		detail += fmt.Sprintf("; %d datagrams gosip could not parse", r.res.Malformed)
	}
	return fmt.Errorf("%w (%s)", ErrNoNotify, detail)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (r *runner) send(b []byte, to netip.AddrPort) error {
	if _, err := r.conn.WriteToUDPAddrPort(b, to); err != nil {
		return fmt.Errorf("simulate: send to %s: %w", to, err)
	}
	return nil
}

// parseSIP runs gosip's parser, turning a panic into an error: gosip checks
// what pnpd writes, and a crash there must not crash the caller.
func parseSIP(b []byte) (msg *sip.Msg, err error) {
	defer func() {
		if p := recover(); p != nil {
			msg, err = nil, fmt.Errorf("gosip panicked: %v", p)
		}
	}()
	msg, err = sip.ParseMsg(b)
	if err == nil && msg == nil {
		err = errors.New("empty datagram")
	}
	return msg, err
}

// firstLine keeps the first line of gosip's errors, which quote the whole
// packet.
func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

func (r *runner) handle(b []byte, src netip.AddrPort) error {
	log := r.c.log
	msg, err := parseSIP(b)
	if err != nil {
		r.res.Malformed++
		log.Warn("datagram gosip cannot parse", "from", src, "bytes", len(b), "err", firstLine(err))
		return nil
	}
	raw := parseRaw(b)
	switch {
	case msg.IsResponse():
		return r.handleResponse(msg, src)
	case strings.EqualFold(msg.Method, "NOTIFY"):
		return r.handleNotify(msg, raw, src)
	default:
		log.Debug("request ignored", "method", msg.Method, "from", src)
		return nil
	}
}

func (r *runner) handleResponse(msg *sip.Msg, src netip.AddrPort) error {
	log := r.c.log
	if msg.CallID != r.sub.callID || msg.CSeq != r.sub.cseq || !strings.EqualFold(msg.CSeqMethod, "SUBSCRIBE") {
		log.Debug("response for another transaction", "from", src, "status", msg.Status, "call_id", msg.CallID)
		return nil
	}
	r.res.Responses = append(r.res.Responses, msg.Status)
	r.res.Latencies = append(r.res.Latencies, time.Since(r.sentAt))
	if msg.Status >= 200 {
		r.finals++
	}
	log.Debug("response", "from", src, "status", msg.Status, "phrase", msg.Phrase)
	if msg.Status < 200 || msg.Status > 299 {
		return nil
	}
	if msg.Via == nil || paramValue(msg.Via.Param, "branch") != r.sub.branch {
		return fmt.Errorf("%w: %d from %s does not carry our Via branch %q", ErrBadResponse, msg.Status, src, r.sub.branch)
	}
	if r.sub.rport {
		if p := msg.Via.Param.Get("rport"); p == nil || p.Value != strconv.Itoa(localPort(r.conn)) {
			return fmt.Errorf("%w: %d from %s leaves Via rport unfilled (RFC 3581)", ErrBadResponse, msg.Status, src)
		}
	}
	tag := ""
	if msg.To != nil {
		tag = paramValue(msg.To.Param, "tag")
	}
	if tag == "" {
		return fmt.Errorf("%w: %d from %s has no To tag", ErrBadResponse, msg.Status, src)
	}
	if r.res.GotOK {
		if tag != r.okTag {
			log.Warn("another 2xx with a different To tag: two responders?", "from", src, "tag", tag, "first_tag", r.okTag)
		}
		return nil
	}
	r.res.GotOK = true
	r.res.OKLatency = time.Since(r.sentAt)
	r.okTag = tag
	if r.notifyTag != "" && r.notifyTag != tag {
		return fmt.Errorf("%w: From tag %q differs from the 200's To tag %q", ErrBadNotify, r.notifyTag, tag)
	}
	return nil
}

func (r *runner) handleNotify(msg *sip.Msg, raw rawMessage, src netip.AddrPort) error {
	log := r.c.log
	if msg.CallID != r.sub.callID {
		log.Debug("NOTIFY for another dialog ignored", "from", src, "call_id", msg.CallID)
		return nil
	}
	r.res.Notifies++
	url, fromTag, err := r.checkNotify(msg, raw)
	if err != nil {
		return fmt.Errorf("%w from %s: %s", ErrBadNotify, src, err)
	}
	if r.res.Notifies <= r.c.ignore {
		log.Debug("NOTIFY ignored on purpose", "from", src, "n", r.res.Notifies)
		return nil
	}
	if err := r.send(r.notifyOK(raw, msg), src); err != nil {
		return err
	}
	if r.answered {
		if url != r.res.URL {
			log.Warn("later NOTIFY carries another URL", "from", src, "url", resolve.Redact(url))
		}
		log.Debug("NOTIFY answered again", "from", src, "n", r.res.Notifies)
		return nil
	}
	r.answered = true
	r.answeredAt = time.Now()
	r.notifyTag = fromTag
	r.res.URL = url
	r.res.NotifyFrom = src
	log.Info("NOTIFY answered", "from", src, "url", resolve.Redact(url), "notifies", r.res.Notifies)
	if r.okTag != "" && fromTag != r.okTag {
		return fmt.Errorf("%w from %s: From tag %q differs from the 200's To tag %q", ErrBadNotify, src, fromTag, r.okTag)
	}
	return nil
}

// checkNotify validates a NOTIFY for our dialog and returns its URL and From
// tag, or what is wrong with it.
func (r *runner) checkNotify(msg *sip.Msg, raw rawMessage) (url, fromTag string, err error) {
	contact, err := sip.ParseURI([]byte(r.sub.contact))
	if err != nil {
		return "", "", fmt.Errorf("our Contact %q: %w", r.sub.contact, err)
	}
	if !sameURI(msg.Request, contact) {
		return "", "", fmt.Errorf("Request-URI %q is not our Contact %q", requestURI(raw.start), r.sub.contact)
	}
	if msg.To == nil || msg.From == nil {
		return "", "", errors.New("From or To missing")
	}
	from, err := sip.ParseURI([]byte(r.sub.from))
	if err != nil {
		return "", "", fmt.Errorf("our From %q: %w", r.sub.from, err)
	}
	if !sameURI(msg.To.Uri, from) {
		return "", "", fmt.Errorf("To URI %q is not our From URI %q", msg.To.Uri.String(), r.sub.from)
	}
	if r.sub.tag != "" {
		if t := paramValue(msg.To.Param, "tag"); t != r.sub.tag {
			return "", "", fmt.Errorf("To tag %q is not our From tag %q", t, r.sub.tag)
		}
	}
	fromTag = paramValue(msg.From.Param, "tag")
	if fromTag == "" {
		return "", "", errors.New("From has no tag")
	}
	if !strings.EqualFold(msg.CSeqMethod, "NOTIFY") {
		return "", "", fmt.Errorf("CSeq method %q is not NOTIFY", msg.CSeqMethod)
	}
	if msg.Via == nil {
		return "", "", errors.New("no Via")
	}
	if msg.Contact == nil {
		return "", "", errors.New("no Contact")
	}
	if pkg, _, _ := strings.Cut(msg.Event, ";"); !strings.EqualFold(strings.TrimSpace(pkg), "ua-profile") {
		return "", "", fmt.Errorf("Event %q is not ua-profile", msg.Event)
	}
	if _, ok := raw.get("Subscription-State"); !ok {
		return "", "", errors.New("no Subscription-State")
	}
	// Raw Content-Type: gosip keeps it only together with a non-empty body.
	ctype, _ := raw.get("Content-Type")
	if mt, _, _ := strings.Cut(ctype, ";"); !strings.EqualFold(strings.TrimSpace(mt), "application/url") {
		return "", "", fmt.Errorf("Content-Type %q is not application/url", ctype)
	}
	if msg.Payload != nil {
		url = strings.TrimSpace(string(msg.Payload.Data()))
	}
	if url == "" {
		return "", "", errors.New("empty body")
	}
	return url, fromTag, nil
}

// notifyOK builds our 200 to a NOTIFY: Via, From, To, Call-ID and CSeq copied
// as written, a To tag added when missing.
func (r *runner) notifyOK(raw rawMessage, msg *sip.Msg) []byte {
	var b msgWriter
	b.line("SIP/2.0 200 OK")
	for _, v := range raw.all("Via") {
		b.header("Via", v)
	}
	from, _ := raw.get("From")
	b.header("From", from)
	to, _ := raw.get("To")
	if paramValue(msg.To.Param, "tag") == "" {
		if r.ownToTag == "" {
			r.ownToTag = randHex(8)
		}
		to += ";tag=" + r.ownToTag
	}
	b.header("To", to)
	callID, _ := raw.get("Call-ID")
	b.header("Call-ID", callID)
	cseq, _ := raw.get("CSeq")
	b.header("CSeq", cseq)
	b.header("User-Agent", r.sub.ua)
	b.header("Content-Length", "0")
	b.line("")
	return b.buf
}

// msgWriter appends CRLF-terminated lines. The phone writes its messages
// itself, not with pnpd's sip.Builder, so that pnpd's parser meets a writer
// other than its own, as gosip checks what pnpd's builder writes.
type msgWriter struct{ buf []byte }

func (w *msgWriter) line(s string) { w.buf = append(append(w.buf, s...), "\r\n"...) }
func (w *msgWriter) header(name, value string) {
	w.buf = append(append(append(w.buf, name...), ": "...), value...)
	w.buf = append(w.buf, "\r\n"...)
}

// sameURI compares what identifies a SIP URI for our purposes: scheme, user,
// password, host and port as written (no default port filled in: RFC 3261
// 19.1.4 says a URI with a port never equals one without).
func sameURI(a, b *sip.URI) bool {
	if a == nil || b == nil {
		return false
	}
	return strings.EqualFold(a.Scheme, b.Scheme) && a.User == b.User && a.Pass == b.Pass &&
		strings.EqualFold(a.Host, b.Host) && a.Port == b.Port
}

func paramValue(p *sip.Param, name string) string {
	if v := p.Get(name); v != nil {
		return v.Value
	}
	return ""
}

func requestURI(start string) string {
	f := strings.Fields(start)
	if len(f) < 2 {
		return ""
	}
	return f[1]
}

func localPort(c *net.UDPConn) int {
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok {
		return a.Port
	}
	return 0
}
