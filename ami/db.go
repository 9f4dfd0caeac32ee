package ami

import (
	"context"
	"strings"
)

// Entry is one AstDB entry of DBGetTree. Key is relative to the family
// asked for: "/pnp/mac/001fc11b4e1c" read with family "pnp" is
// "mac/001fc11b4e1c".
type Entry struct{ Key, Value string }

// relKey turns a DBGetTreeResponse Key ("/family/rest") into the key
// relative to family. Asterisk matches the family case-insensitively
// (SQLite's LIKE), so "/PNP/x" is in family "pnp" too. An empty family
// (the whole AstDB) gives the path without its leading slash.
func relKey(family, key string) (string, bool) {
	if family == "" {
		rest, ok := strings.CutPrefix(key, "/")
		return rest, ok && rest != ""
	}
	n := len(family) + 2
	if len(key) <= n || key[0] != '/' || key[n-1] != '/' || !strings.EqualFold(key[1:n-1], family) {
		return "", false
	}
	return key[n:], true
}

// DBGet returns the AstDB value at family/key. A missing entry is an
// *Error matching ErrNotFound.
func (c *Client) DBGet(ctx context.Context, family, key string) (string, error) {
	cl := &call{action: "DBGet", kind: kindDBGet}
	if err := c.do(ctx, cl, []Header{{"Family", family}, {"Key", key}}); err != nil {
		return "", err
	}
	if !cl.hasVal {
		return "", opErr("DBGet", ErrNotFound)
	}
	return cl.val, nil
}

// DBGetTree returns the entries of family whose key is prefix or lies
// below it ("mac" gives "mac" and "mac/...", not "macx"; "" gives the
// whole family), in Asterisk's order (by full path), keys relative to
// family. Asterisk matches family case-insensitively: "/PNP/x" comes with
// family "pnp" as "x". An unknown family gives no entries and no error. An
// empty family reads the whole AstDB (prefix is then ignored, as Asterisk
// ignores it), keys then being full paths without the leading slash. Needs
// Asterisk 16.28, 18.14, 19.6 or later (else an *Error).
//
// The entries are gathered as they arrive, without keeping amigo's
// messages: 100,000 entries hold about the size of their text.
func (c *Client) DBGetTree(ctx context.Context, family, prefix string) ([]Entry, error) {
	cl := &call{action: "DBGetTree", kind: kindTree, family: family}
	var h []Header
	if family != "" {
		h = append(h, Header{"Family", family})
		if prefix != "" {
			h = append(h, Header{"Key", prefix})
		}
	}
	if err := c.do(ctx, cl, h); err != nil {
		return nil, err
	}
	return cl.entries, nil
}

// DBPut stores value at family/key.
func (c *Client) DBPut(ctx context.Context, family, key, value string) error {
	_, err := c.Action(ctx, "DBPut", Header{"Family", family}, Header{"Key", key}, Header{"Val", value})
	return err
}

// DBDel deletes the entry at family/key; a missing one is an *Error
// matching ErrNotFound.
func (c *Client) DBDel(ctx context.Context, family, key string) error {
	_, err := c.Action(ctx, "DBDel", Header{"Family", family}, Header{"Key", key})
	return err
}

// DBDelTree deletes family/key and every entry below it (the whole family
// when key is empty); deleting nothing is an *Error matching ErrNotFound.
func (c *Client) DBDelTree(ctx context.Context, family, key string) error {
	h := []Header{{"Family", family}}
	if key != "" {
		h = append(h, Header{"Key", key})
	}
	_, err := c.Action(ctx, "DBDelTree", h...)
	return err
}

// UserEvent asks Asterisk to send Event: UserEvent named name, with
// headers h, to every session that reads "user" events (this one too).
// Asterisk copies every header of the action into the event, this
// client's ActionID included.
func (c *Client) UserEvent(ctx context.Context, name string, h ...Header) error {
	hh := make([]Header, 0, len(h)+1)
	hh = append(hh, Header{"UserEvent", name})
	_, err := c.Action(ctx, "UserEvent", append(hh, h...)...)
	return err
}

// Getvar returns the value of a global variable or dialplan function.
// Asterisk answers privileged functions (DB(), func_odbc) with an empty
// value unless live_dangerously is set.
func (c *Client) Getvar(ctx context.Context, variable string) (string, error) {
	ev, err := c.Action(ctx, "Getvar", Header{"Variable", variable})
	if err != nil {
		return "", err
	}
	return ev.Fields["Value"], nil
}

// Command runs a CLI command and returns what amigo keeps of its output:
// amigo keeps only the FIRST and the LAST "Output:" line of a response, so
// a longer output comes back as those two lines joined by "\n" and the
// lines between are lost (an old Asterisk's "Response: Follows" body comes
// back whole). Use it for one-line outputs, or to probe a command; read
// data with DBGetTree. A failed command is an *Error whose Message is its
// output ("No such command ...").
func (c *Client) Command(ctx context.Context, command string) (string, error) {
	ev, err := c.Action(ctx, "Command", Header{"Command", command})
	if err != nil {
		return "", err
	}
	return ev.Fields["Output"], nil
}

// Ping checks that Asterisk answers.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.Action(ctx, "Ping")
	return err
}
