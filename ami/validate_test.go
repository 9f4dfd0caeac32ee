package ami

import (
	"bufio"
	"errors"
	"strings"
	"testing"

	"github.com/pnpd/pnpd/ami/amitest"
)

func TestHeaders(t *testing.T) {
	tests := []struct {
		name    string
		action  string
		h       []Header
		wantErr bool
	}{
		{"plain", "DBPut", []Header{{"Family", "pnp"}, {"Key", "mac/1"}, {"Val", "acme: x  "}}, false},
		{"empty value", "DBPut", []Header{{"Val", ""}}, false},
		{"tab and unicode in value", "UserEvent", []Header{{"Name", "a\tb é"}}, false},
		{"CR", "DBPut", []Header{{"Val", "a\rb"}}, true},
		{"LF", "DBPut", []Header{{"Val", "a\nb"}}, true},
		{"NUL", "DBPut", []Header{{"Val", "a\x00"}}, true},
		{"colon in key", "DBPut", []Header{{"A:B", "v"}}, true},
		{"tab in key", "DBPut", []Header{{"A\tB", "v"}}, true},
		{"DEL in key", "DBPut", []Header{{"A\x7f", "v"}}, true},
		{"empty key", "DBPut", []Header{{"", "v"}}, true},
		{"Action", "DBPut", []Header{{"action", "DBDelTree"}}, true},
		{"AmigoConnID", "DBPut", []Header{{"AmigoConnID", "1"}}, true},
		{"repeated", "DBPut", []Header{{"Key", "a"}, {"KEY", "b"}}, true},
		{"empty action", "", nil, true},
		{"space in action", "DB Put", nil, true},
		{"Login", "login", nil, true},
		{"Challenge", "Challenge", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := headers(tt.action, tt.h)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidValue) {
					t.Fatalf("headers = %v, %v; want ErrInvalidValue", m, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m["Action"] != tt.action || len(m) != len(tt.h)+1 {
				t.Fatalf("headers = %v", m)
			}
			for _, h := range tt.h {
				if m[h.Key] != h.Value {
					t.Errorf("%s = %q, want %q", h.Key, m[h.Key], h.Value)
				}
			}
		})
	}
}

// FuzzHeaders: a header either is refused with ErrInvalidValue or, written
// as amigo writes it ("Key: Value\r\n"), reads back as one header with that
// key and value (less the leading blanks Asterisk skips): it can never
// inject a header or an action.
func FuzzHeaders(f *testing.F) {
	f.Add("Val", "acme")
	f.Add("Val", "acme\r\nAction: DBDelTree")
	f.Add("X-Y", " \tlead")
	f.Add("K", "a: b  ")
	f.Fuzz(func(t *testing.T, key, value string) {
		m, err := headers("UserEvent", []Header{{key, value}})
		if err != nil {
			if !errors.Is(err, ErrInvalidValue) {
				t.Fatalf("headers: %v", err)
			}
			return
		}
		wire := "Action: UserEvent\r\n" + key + ": " + m[key] + "\r\n\r\n"
		r := bufio.NewReader(strings.NewReader(wire))
		msg, err := amitest.ReadMessage(r)
		if err != nil {
			if errors.Is(err, amitest.ErrLineTooLong) {
				return
			}
			t.Fatalf("reading %q: %v", wire, err)
		}
		if len(msg) != 2 || msg[1].Key != key || msg[1].Value != strings.TrimLeft(value, " \t") {
			t.Fatalf("%q read back as %q", wire, msg)
		}
		if rest, _ := r.Peek(1); len(rest) != 0 {
			t.Fatalf("%q left %q unread: a second message", wire, rest)
		}
	})
}
