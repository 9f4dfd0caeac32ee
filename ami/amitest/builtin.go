package amitest

import (
	"bufio"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Builtin answers req the way the server does when no Handler overrides
// its action. Overrides call it to fall back to the built-in answer.
func (s *Server) Builtin(ss *Session, req Message) {
	action, ok := req.Lookup("Action")
	if !ok || action == "" {
		_ = ss.Send(Error(req, "Missing action in request"))
		return
	}
	switch strings.ToLower(action) {
	case "login":
		s.login(ss, req)
		return
	case "logoff":
		_ = ss.Send(Response(req, "Goodbye", Header{"Message", "Thanks for all the fish."}))
		ss.Close()
		return
	}
	if !ss.LoggedIn() {
		_ = ss.Send(Error(req, "Permission denied"))
		return
	}
	switch strings.ToLower(action) {
	case "ping":
		now := time.Now()
		_ = ss.Send(Response(req, "Success", Header{"Ping", "Pong"},
			Header{"Timestamp", fmt.Sprintf("%d.%06d", now.Unix(), now.Nanosecond()/1000)}))
	case "dbget":
		s.dbGet(ss, req)
	case "dbgettree":
		s.dbGetTree(ss, req)
	case "dbput":
		s.dbPut(ss, req)
	case "dbdel":
		s.dbDel(ss, req)
	case "dbdeltree":
		s.dbDelTree(ss, req)
	case "userevent":
		s.userEvent(ss, req)
	case "getvar":
		s.getvar(ss, req)
	case "command":
		s.command(ss, req)
	default:
		_ = ss.Send(Error(req, "Invalid/unknown command: "+action+". Use Action: ListCommands to show available commands."))
	}
}

func (s *Server) login(ss *Session, req Message) {
	s.loginAttempts.Add(1)
	if !strings.EqualFold(req.Get("Username"), s.opts.Username) || req.Get("Secret") != s.opts.Secret {
		_ = ss.Send(Error(req, "Authentication failed"))
		if s.opts.LoginFailDelay > 0 {
			time.Sleep(s.opts.LoginFailDelay)
		}
		ss.Close()
		return
	}
	s.logins.Add(1)
	ss.loggedIn.Store(true)
	// Asterisk sends FullyBooted right behind the login response.
	_ = ss.Send(Success(req, "Authentication accepted"),
		Msg("Event", "FullyBooted", "Privilege", "system,all", "Uptime", "1", "LastReload", "1", "Status", "Fully Booted"))
}

func (s *Server) userEvent(ss *Session, req Message) {
	name := req.Get("UserEvent")
	if name == "" {
		_ = ss.Send(Error(req, "UserEvent header missing"))
		return
	}
	ev := Message{{"Event", "UserEvent"}, {"Privilege", "user,all"}, {"UserEvent", name}}
	for _, h := range req {
		if strings.EqualFold(h.Key, "Action") || strings.EqualFold(h.Key, "UserEvent") {
			continue
		}
		ev = append(ev, h)
	}
	_ = ss.Send(Success(req, "Event Sent"))
	s.Broadcast(ev)
}

func (s *Server) getvar(ss *Session, req Message) {
	name := req.Get("Variable")
	if name == "" {
		_ = ss.Send(Error(req, "No variable specified"))
		return
	}
	s.mu.Lock()
	v := s.vars[name]
	s.mu.Unlock()
	_ = ss.Send(Response(req, "Success", Header{"Variable", name}, Header{"Value", v}))
}

func (s *Server) command(ss *Session, req Message) {
	cmd := strings.TrimSpace(req.Get("Command"))
	s.mu.Lock()
	out, ok := s.commands[cmd]
	s.mu.Unlock()
	if !ok {
		if f := strings.Fields(cmd); len(f) >= 2 && f[0] == "database" && f[1] == "show" && len(f) <= 4 {
			out, ok = s.db.show(f[2:]), true
		}
	}
	if !ok {
		m := Response(req, "Error", Header{"Message", "Command output follows"},
			Header{"Output", fmt.Sprintf("No such command '%s' (type 'core show help %s' for other possible commands)", cmd, cmd)})
		_ = ss.Send(m)
		return
	}
	m := Success(req, "Command output follows")
	for _, line := range out {
		m = append(m, Header{"Output", line})
	}
	_ = ss.Send(m)
}

func (s *Server) dbGet(ss *Session, req Message) {
	family, key := req.Get("Family"), req.Get("Key")
	switch {
	case family == "":
		_ = ss.Send(Error(req, "No family specified."))
		return
	case key == "":
		_ = ss.Send(Error(req, "No key specified."))
		return
	}
	v, ok := s.db.get(family, key)
	if !ok {
		_ = ss.Send(Error(req, "Database entry not found"))
		return
	}
	ev := Msg("Event", "DBGetResponse", "Family", family, "Key", key, "Val", v)
	if id, ok := req.Lookup("ActionID"); ok {
		ev = append(ev, Header{"ActionID", id})
	}
	_ = ss.Send(ListStart(req), ev, ListComplete(req, "DBGetComplete", 1))
}

func (s *Server) dbGetTree(ss *Session, req Message) {
	entries := s.db.tree(req.Get("Family"), req.Get("Key"))
	id, hasID := req.Lookup("ActionID")
	_ = ss.sendFunc(func(w *bufio.Writer) error {
		w.Write(ListStart(req).AppendTo(nil))
		for _, e := range entries {
			w.WriteString("Event: DBGetTreeResponse\r\nKey: ")
			w.WriteString(e.Key)
			w.WriteString("\r\nVal: ")
			w.WriteString(e.Value)
			if hasID {
				w.WriteString("\r\nActionID: ")
				w.WriteString(id)
			}
			if _, err := w.WriteString("\r\n\r\n"); err != nil {
				return err
			}
		}
		_, err := w.Write(ListComplete(req, "DBGetTreeComplete", len(entries)).AppendTo(nil))
		return err
	})
}

func (s *Server) dbPut(ss *Session, req Message) {
	family, key := req.Get("Family"), req.Get("Key")
	switch {
	case family == "":
		_ = ss.Send(Error(req, "No family specified"))
	case key == "":
		_ = ss.Send(Error(req, "No key specified"))
	default:
		s.db.put(family, key, req.Get("Val"))
		_ = ss.Send(Success(req, "Updated database successfully"))
	}
}

func (s *Server) dbDel(ss *Session, req Message) {
	family, key := req.Get("Family"), req.Get("Key")
	switch {
	case family == "":
		_ = ss.Send(Error(req, "No family specified."))
	case key == "":
		_ = ss.Send(Error(req, "No key specified."))
	case !s.db.del(family, key):
		_ = ss.Send(Error(req, "Database entry could not be deleted"))
	default:
		_ = ss.Send(Success(req, "Key deleted successfully"))
	}
}

func (s *Server) dbDelTree(ss *Session, req Message) {
	family := req.Get("Family")
	if family == "" {
		_ = ss.Send(Error(req, "No family specified."))
		return
	}
	if s.db.delTree(family, req.Get("Key")) == 0 {
		_ = ss.Send(Error(req, "Database entry not found"))
		return
	}
	_ = ss.Send(Success(req, "Key tree deleted successfully"))
}

// DBPut stores value at family/key in the server's AstDB.
func (s *Server) DBPut(family, key, value string) { s.db.put(family, key, value) }

// DBGet returns the value at family/key and whether there is one.
func (s *Server) DBGet(family, key string) (string, bool) { return s.db.get(family, key) }

// DBLen counts the entries of the server's AstDB.
func (s *Server) DBLen() int {
	s.db.mu.Lock()
	defer s.db.mu.Unlock()
	return len(s.db.m)
}

// dbEntry is one AstDB entry: Key the full path ("/family/key").
type dbEntry struct{ Key, Value string }

// astDB is the in-memory AstDB: full path ("/family/key") -> value.
type astDB struct {
	mu     sync.Mutex
	m      map[string]string
	sorted []string // keys of m in order, nil when stale
}

func (d *astDB) put(family, key, value string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := "/" + family + "/" + key
	if _, ok := d.m[k]; !ok {
		d.sorted = nil
	}
	d.m[k] = value
}

func (d *astDB) get(family, key string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.m["/"+family+"/"+key]
	return v, ok
}

func (d *astDB) del(family, key string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := "/" + family + "/" + key
	if _, ok := d.m[k]; !ok {
		return false
	}
	delete(d.m, k)
	d.sorted = nil
	return true
}

// prefix is the path Asterisk's ast_db_gettree and ast_db_deltree match:
// "" for everything, else "/family" or "/family/key".
func prefix(family, key string) string {
	switch {
	case family == "":
		return ""
	case key == "":
		return "/" + family
	default:
		return "/" + family + "/" + key
	}
}

// matches is Asterisk's `key || '/' LIKE prefix || '/' || '%'`: whole path
// components, ASCII case-insensitive (SQLite's LIKE); LIKE's own wildcards
// in the prefix are not modelled.
func matches(key, prefix string) bool {
	if prefix == "" {
		return true
	}
	switch {
	case len(key) == len(prefix):
		return strings.EqualFold(key, prefix)
	case len(key) > len(prefix):
		return key[len(prefix)] == '/' && strings.EqualFold(key[:len(prefix)], prefix)
	}
	return false
}

func (d *astDB) keys() []string {
	if d.sorted == nil {
		d.sorted = make([]string, 0, len(d.m))
		for k := range d.m {
			d.sorted = append(d.sorted, k)
		}
		sort.Strings(d.sorted)
	}
	return d.sorted
}

func (d *astDB) tree(family, key string) []dbEntry {
	p := prefix(family, key)
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []dbEntry
	for _, k := range d.keys() {
		if matches(k, p) {
			out = append(out, dbEntry{k, d.m[k]})
		}
	}
	return out
}

func (d *astDB) delTree(family, key string) int {
	p := prefix(family, key)
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for k := range d.m {
		if matches(k, p) {
			delete(d.m, k)
			n++
		}
	}
	if n > 0 {
		d.sorted = nil
	}
	return n
}

// show is the CLI's `database show [family [key]]`.
func (d *astDB) show(args []string) []string {
	var family, key string
	if len(args) > 0 {
		family = args[0]
	}
	if len(args) > 1 {
		key = args[1]
	}
	var out []string
	for _, e := range d.tree(family, key) {
		out = append(out, fmt.Sprintf("%-50s: %-25s", e.Key, e.Value))
	}
	return append(out, fmt.Sprintf("%d results found.", len(out)))
}
