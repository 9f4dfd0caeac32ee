package amitest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Limits of ReadMessage, close to Asterisk's own (a manager session's input
// buffer is 1 KiB a line there; it keeps at most 128 headers a message).
const (
	// MaxLineLength is the longest header line ReadMessage accepts,
	// without its CRLF.
	MaxLineLength = 8192
	// MaxHeaders is the number of headers of a message ReadMessage keeps;
	// later ones are read and dropped, as Asterisk drops them.
	MaxHeaders = 128
)

// ErrLineTooLong is returned by ReadMessage for a line over MaxLineLength.
var ErrLineTooLong = errors.New("amitest: line too long")

// Header is one "Key: Value" line of a message.
type Header struct{ Key, Value string }

// Message is an AMI message: its headers in the order sent.
type Message []Header

// Msg builds a Message from key, value pairs; an odd last key gets an
// empty value.
func Msg(kv ...string) Message {
	m := make(Message, 0, (len(kv)+1)/2)
	for i := 0; i < len(kv); i += 2 {
		h := Header{Key: kv[i]}
		if i+1 < len(kv) {
			h.Value = kv[i+1]
		}
		m = append(m, h)
	}
	return m
}

// Get returns the value of the first header named key (case-insensitive),
// or "".
func (m Message) Get(key string) string {
	v, _ := m.Lookup(key)
	return v
}

// Lookup returns the value of the first header named key
// (case-insensitive) and whether there is one.
func (m Message) Lookup(key string) (string, bool) {
	for _, h := range m {
		if strings.EqualFold(h.Key, key) {
			return h.Value, true
		}
	}
	return "", false
}

// AppendTo appends the message in wire form ("Key: Value\r\n" per header,
// then an empty line) to b.
func (m Message) AppendTo(b []byte) []byte {
	for _, h := range m {
		b = append(b, h.Key...)
		b = append(b, ": "...)
		b = append(b, h.Value...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

// String returns the message in wire form.
func (m Message) String() string { return string(m.AppendTo(nil)) }

// ReadMessage reads one message: header lines up to an empty line. Lines
// end in CRLF or LF. A line's key is what precedes its first colon (spaces
// before the colon dropped); its value what follows, spaces and tabs after
// the colon skipped, as Asterisk reads them; a line without a colon becomes
// a header with that key and no value. Empty lines before the first header
// are skipped. It returns at most MaxHeaders headers, and ErrLineTooLong
// for a line longer than MaxLineLength. At end of input it returns what it
// has with the error (io.EOF when it has nothing).
func ReadMessage(r *bufio.Reader) (Message, error) {
	var m Message
	n := 0
	for {
		line, err := readLine(r)
		if err != nil {
			return m, err
		}
		if len(line) == 0 {
			if n == 0 {
				continue
			}
			return m, nil
		}
		n++
		if len(m) >= MaxHeaders {
			continue
		}
		m = append(m, parseHeader(line))
	}
}

// readLine reads a line without its line end, refusing one longer than
// MaxLineLength (the rest of that line is consumed).
func readLine(r *bufio.Reader) ([]byte, error) {
	var long []byte
	for {
		frag, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long = append(long, frag...)
			if len(long) > MaxLineLength+2 {
				if _, err := r.ReadString('\n'); err != nil {
					return nil, err
				}
				return nil, ErrLineTooLong
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if long != nil {
			frag = append(long, frag...)
		}
		frag = bytes.TrimSuffix(frag, []byte("\n"))
		frag = bytes.TrimSuffix(frag, []byte("\r"))
		if len(frag) > MaxLineLength {
			return nil, ErrLineTooLong
		}
		return frag, nil
	}
}

func parseHeader(line []byte) Header {
	i := bytes.IndexByte(line, ':')
	if i < 0 {
		return Header{Key: string(line)}
	}
	key := bytes.TrimRight(line[:i], " ")
	v := line[i+1:]
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	return Header{Key: string(key), Value: string(v)}
}

// Response builds a response to req: "Response: status", req's ActionID
// when it has one, then h.
func Response(req Message, status string, h ...Header) Message {
	m := make(Message, 0, 2+len(h))
	m = append(m, Header{"Response", status})
	if id, ok := req.Lookup("ActionID"); ok {
		m = append(m, Header{"ActionID", id})
	}
	return append(m, h...)
}

// Success builds "Response: Success" with a Message header (left out when
// message is empty) and then h.
func Success(req Message, message string, h ...Header) Message {
	if message != "" {
		h = append([]Header{{"Message", message}}, h...)
	}
	return Response(req, "Success", h...)
}

// Error builds "Response: Error" with Asterisk's message.
func Error(req Message, message string) Message {
	return Response(req, "Error", Header{"Message", message})
}

// ListStart builds the first message of an event list, as Asterisk's
// astman_send_listack does.
func ListStart(req Message) Message {
	return Response(req, "Success", Header{"EventList", "start"}, Header{"Message", "Result will follow"})
}

// ListComplete builds the last message of an event list.
func ListComplete(req Message, event string, items int) Message {
	m := Message{{"Event", event}}
	if id, ok := req.Lookup("ActionID"); ok {
		m = append(m, Header{"ActionID", id})
	}
	return append(m, Header{"EventList", "Complete"}, Header{"ListItems", fmt.Sprint(items)})
}
