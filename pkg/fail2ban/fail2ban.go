package fail2ban

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Jail is an enabled fail2ban jail that reads Asterisk's log.
type Jail struct {
	Name     string
	File     string   // the file that enabled it, under root
	IgnoreIP []string // its ignoreip entries (the jail's own, else [DEFAULT]'s)
}

// State is what the configuration and the run directory tell of fail2ban
// on a host.
type State struct {
	Installed bool   // /etc/fail2ban exists
	Jails     []Jail // enabled Asterisk jails
	Socket    string // the server's socket when one exists: it runs
}

// Sockets are where the fail2ban server's socket lives while it runs.
var Sockets = []string{"/run/fail2ban/fail2ban.sock", "/var/run/fail2ban/fail2ban.sock"}

// Read reads root/etc/fail2ban's jail configuration in fail2ban's order
// (jail.conf, jail.d/*.conf, jail.local, jail.d/*.local; a later value
// wins) and looks for the server's socket under root. root is "/" but in
// tests. A host without /etc/fail2ban gives the zero State.
func Read(root string) (State, error) {
	var st State
	dir := filepath.Join(root, "etc", "fail2ban")
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return st, nil
	}
	st.Installed = true
	for _, s := range Sockets {
		if fi, err := os.Stat(filepath.Join(root, s)); err == nil && fi.Mode()&os.ModeSocket != 0 {
			st.Socket = s
			break
		}
	}
	confs, _ := filepath.Glob(filepath.Join(dir, "jail.d", "*.conf"))
	locals, _ := filepath.Glob(filepath.Join(dir, "jail.d", "*.local"))
	files := []string{filepath.Join(dir, "jail.conf")}
	files = append(files, confs...)
	files = append(files, filepath.Join(dir, "jail.local"))
	files = append(files, locals...)
	ini := iniFile{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return st, fmt.Errorf("fail2ban: %w", err)
		}
		rel, _ := filepath.Rel(root, f)
		ini.parse(string(b), "/"+rel)
	}
	names := make([]string, 0, len(ini))
	for name := range ini {
		names = append(names, name)
	}
	slices.Sort(names)
	def := ini["DEFAULT"]
	for _, name := range names {
		sec := ini[name]
		if name == "DEFAULT" || name == "INCLUDES" || !isAsteriskJail(name, sec["filter"].val) {
			continue
		}
		enabled, ok := sec["enabled"]
		if !ok {
			enabled = def["enabled"]
		}
		if !iniBool(enabled.val) {
			continue
		}
		ignore, ok := sec["ignoreip"]
		if !ok {
			ignore = def["ignoreip"]
		}
		st.Jails = append(st.Jails, Jail{Name: name, File: enabled.file,
			IgnoreIP: strings.FieldsFunc(ignore.val, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })})
	}
	return st, nil
}

// isAsteriskJail reports whether a jail reads Asterisk's log: the stock
// jails are [asterisk] (and, in older releases, [asterisk-tcp] and
// [asterisk-udp]); another jail may name the filter.
func isAsteriskJail(name, filter string) bool {
	n := strings.ToLower(name)
	if n == "asterisk" || strings.HasPrefix(n, "asterisk-") || strings.HasPrefix(n, "asterisk_") {
		return true
	}
	f, _, _ := strings.Cut(strings.TrimSpace(filter), "[")
	return strings.HasPrefix(strings.ToLower(strings.TrimSpace(f)), "asterisk")
}

// iniFile holds the sections of fail2ban's configuration files, merged.
type iniFile map[string]map[string]iniValue

type iniValue struct{ val, file string }

// parse adds one file: "[section]", "key = value" or "key: value", lines
// that start with '#' or ';' are comments, as is the rest of a line after
// " #" or " ;", and an indented line continues the value before it.
func (ini iniFile) parse(text, file string) {
	sec, key := "", ""
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || trimmed[0] == '#' || trimmed[0] == ';' {
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && key != "" && sec != "" {
			v := ini[sec][key]
			v.val = strings.TrimSpace(v.val + " " + iniUncomment(trimmed))
			ini[sec][key] = v
			continue
		}
		if end := strings.IndexByte(trimmed, ']'); trimmed[0] == '[' && end > 0 {
			// As Python's configparser, which fail2ban uses: the name ends
			// at the first ']', and what follows it (a comment) is ignored.
			sec, key = strings.TrimSpace(trimmed[1:end]), ""
			if ini[sec] == nil {
				ini[sec] = map[string]iniValue{}
			}
			continue
		}
		i := strings.IndexAny(trimmed, "=:")
		if i <= 0 || sec == "" {
			key = ""
			continue
		}
		key = strings.ToLower(strings.TrimSpace(trimmed[:i]))
		ini[sec][key] = iniValue{val: iniUncomment(strings.TrimSpace(trimmed[i+1:])), file: file}
	}
}

func iniUncomment(s string) string {
	for _, c := range []string{" #", " ;", "\t#", "\t;"} {
		if i := strings.Index(s, c); i >= 0 {
			s = s[:i]
		}
	}
	return strings.TrimSpace(s)
}

// iniBool is fail2ban's reading of a boolean.
func iniBool(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "yes", "true", "on":
		return true
	}
	return false
}

// Ignores reports whether the jail's ignoreip entries (addresses, CIDR
// prefixes; host names are not resolved) cover every address of p.
func (j Jail) Ignores(p netip.Prefix) bool {
	for _, e := range j.IgnoreIP {
		q, err := netip.ParsePrefix(e)
		if err != nil {
			a, err := netip.ParseAddr(e)
			if err != nil {
				continue
			}
			q = netip.PrefixFrom(a, a.BitLen())
		}
		if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
			return true
		}
	}
	return false
}
