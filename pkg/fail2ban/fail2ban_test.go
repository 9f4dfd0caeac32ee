package fail2ban

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// stockJailConf is the part of fail2ban's stock jail.conf that matters.
var stockJailConf = func() string {
	b, err := os.ReadFile(filepath.Join("testdata", "jail.conf"))
	if err != nil {
		panic(err)
	}
	return string(b)
}()

// writeFiles writes name -> content under root, making directories.
func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRead(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string]string
		socket    string // a unix socket to create
		installed bool
		jails     []Jail
		running   string
	}{
		{name: "not installed"},
		{name: "stock, nothing enabled", installed: true,
			files: map[string]string{"etc/fail2ban/jail.conf": stockJailConf}},
		{name: "debian default: sshd only", installed: true,
			files: map[string]string{"etc/fail2ban/jail.conf": stockJailConf,
				"etc/fail2ban/jail.d/defaults-debian.conf": "[sshd]\nenabled = true\n"}},
		{name: "asterisk in jail.local", installed: true,
			files: map[string]string{"etc/fail2ban/jail.conf": stockJailConf,
				"etc/fail2ban/jail.local": "[asterisk]\nenabled = true\n"},
			jails: []Jail{{Name: "asterisk", File: "/etc/fail2ban/jail.local", IgnoreIP: []string{"127.0.0.1/8", "::1"}}}},
		{name: "jail.local overrides jail.d/*.conf", installed: true,
			files: map[string]string{"etc/fail2ban/jail.conf": stockJailConf,
				"etc/fail2ban/jail.d/pbx.conf": "[asterisk]\nenabled = yes\n",
				"etc/fail2ban/jail.local":      "[asterisk]\nenabled = false\n"}},
		{name: "jail.d/*.local overrides jail.local", installed: true,
			files: map[string]string{"etc/fail2ban/jail.conf": stockJailConf,
				"etc/fail2ban/jail.local":       "[asterisk]\nenabled = false\n",
				"etc/fail2ban/jail.d/pbx.local": "[asterisk]\nenabled: on ; the PBX\nignoreip = 127.0.0.1/8,\n  192.168.10.0/24 # phones\n  10.0.0.7\n"},
			jails: []Jail{{Name: "asterisk", File: "/etc/fail2ban/jail.d/pbx.local", IgnoreIP: []string{"127.0.0.1/8", "192.168.10.0/24", "10.0.0.7"}}}},
		{name: "enabled by [DEFAULT]", installed: true,
			files: map[string]string{"etc/fail2ban/jail.conf": stockJailConf,
				"etc/fail2ban/jail.local": "[DEFAULT]\nenabled = true\nignoreip = 127.0.0.1/8 198.18.0.0/16\n"},
			jails: []Jail{{Name: "asterisk", File: "/etc/fail2ban/jail.local", IgnoreIP: []string{"127.0.0.1/8", "198.18.0.0/16"}}}},
		{name: "section header with a comment", installed: true,
			files: map[string]string{"etc/fail2ban/jail.local": "[sshd]\nenabled = true\n[asterisk]   # the PBX\nenabled = true\n"},
			jails: []Jail{{Name: "asterisk", File: "/etc/fail2ban/jail.local"}}},
		{name: "another name, asterisk's filter", installed: true,
			files: map[string]string{"etc/fail2ban/jail.local": "[pbx-sip]\nfilter = asterisk[mode=normal]\nenabled = 1\n"},
			jails: []Jail{{Name: "pbx-sip", File: "/etc/fail2ban/jail.local"}}},
		{name: "old split jails", installed: true,
			files: map[string]string{"etc/fail2ban/jail.local": "[asterisk-udp]\nenabled = true\n[asterisk-tcp]\nenabled = true\n"},
			jails: []Jail{{Name: "asterisk-tcp", File: "/etc/fail2ban/jail.local"}, {Name: "asterisk-udp", File: "/etc/fail2ban/jail.local"}}},
		{name: "running", installed: true, socket: "run/fail2ban/fail2ban.sock", running: "/run/fail2ban/fail2ban.sock",
			files: map[string]string{"etc/fail2ban/jail.local": "[asterisk]\nenabled = true\n"},
			jails: []Jail{{Name: "asterisk", File: "/etc/fail2ban/jail.local"}}},
		{name: "running, old socket place", installed: true, socket: "var/run/fail2ban/fail2ban.sock", running: "/var/run/fail2ban/fail2ban.sock",
			files: map[string]string{"etc/fail2ban/jail.conf": stockJailConf}},
		{name: "a stale file is no socket", installed: true,
			files: map[string]string{"etc/fail2ban/jail.conf": stockJailConf, "run/fail2ban/fail2ban.sock": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeFiles(t, root, tt.files)
			if tt.socket != "" {
				p := filepath.Join(root, tt.socket)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				ln, err := net.Listen("unix", p)
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
			}
			st, err := Read(root)
			if err != nil {
				t.Fatal(err)
			}
			if st.Installed != tt.installed || st.Socket != tt.running {
				t.Errorf("installed %v, socket %q; want %v, %q", st.Installed, st.Socket, tt.installed, tt.running)
			}
			if fmt.Sprint(st.Jails) != fmt.Sprint(tt.jails) {
				t.Errorf("jails %+v\nwant %+v", st.Jails, tt.jails)
			}
		})
	}
}

func TestIgnores(t *testing.T) {
	j := Jail{IgnoreIP: []string{"127.0.0.1/8", "::1", "192.168.0.0/16", "10.0.0.7", "pbx.example"}}
	for p, want := range map[string]bool{
		"192.168.10.0/24": true, "192.168.0.0/16": true, "192.0.0.0/8": false,
		"10.0.0.7/32": true, "10.0.0.0/24": false, "172.16.0.0/12": false,
	} {
		if got := j.Ignores(netip.MustParsePrefix(p)); got != want {
			t.Errorf("Ignores(%s) = %t, want %t", p, got, want)
		}
	}
}
