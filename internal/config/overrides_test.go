package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sesame-knock/sesame/internal/firewall"
)

// TestOverridesBeforeValidate: the command line's settings are applied before the rules are
// checked, so a flag can make a file valid or invalid, and an error about a flag's value names
// no line of the file.
func TestOverridesBeforeValidate(t *testing.T) {
	const door = "[[door]]\nname = \"a\"\nsequence = [\"1\"]\nopen = [\"tcp/22\"]\n"
	tests := []struct {
		name, src string
		ov        Overrides
		want      string // "" for success
	}{
		{"file none, flag nftables", "[server]\nfirewall = \"none\"\n" + door, Overrides{Firewall: firewall.Nftables}, ""},
		{"file none", "[server]\nfirewall = \"none\"\n" + door, Overrides{}, `s.toml:6: door "a": open: firewall none cannot open ports`},
		{"flag none", door, Overrides{Firewall: firewall.None}, `s.toml:4: door "a": open: firewall none cannot open ports`},
		{"flag none, spa", "[spa]\n[[spa.client]]\nname = \"c\"\nkey_file = \"k\"\nopen = [\"tcp/22\"]\n", Overrides{Firewall: firewall.None},
			`s.toml:1: spa: firewall none cannot open ports for SPA clients`},
		{"flag interface", "[server]\ninterfaces = [\"eth0\"]\n", Overrides{Interfaces: []string{"a/b"}},
			`s.toml: server: interfaces: interface name "a/b" has a character that is not allowed`},
		{"flag firewall kind", "[server]\nfirewall = \"iptables\"\n", Overrides{Firewall: "pf"}, `s.toml: server: firewall: "pf" is not a firewall`},
		{"flag state dir", "[server]\nstate_dir = \"\"\n", Overrides{StateDir: "/srv/s"}, ""},
		{"flag control socket", "[control]\nsocket = \"\"\n", Overrides{ControlSocket: "/tmp/c.sock"}, ""},
		{"flag control socket over file", "[control]\nsocket = \"/run/a.sock\"\n", Overrides{ControlSocket: "/tmp/c.sock"}, ""},
		{"flag control socket relative", "[control]\nsocket = \"/run/a.sock\"\n", Overrides{ControlSocket: "c.sock"}, `s.toml: control: socket: "c.sock": want the absolute path`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "s.toml")
			for name, data := range map[string]string{"s.toml": tc.src, "k": "sesame-shared-v1 " + strings.Repeat("A", 43) + "=\n"} {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg, err := Load(path, tc.ov)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tc.ov.Firewall != "" && cfg.Server.Firewall != tc.ov.Firewall || tc.ov.StateDir != "" && cfg.Server.StateDir != tc.ov.StateDir ||
					tc.ov.ControlSocket != "" && cfg.Control.Socket != tc.ov.ControlSocket {
					t.Errorf("server = %+v, overrides %+v not applied", cfg.Server, tc.ov)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load succeeded: %+v", cfg.Server)
			}
			if msg := strings.ReplaceAll(err.Error(), dir+"/", ""); !strings.Contains(msg, tc.want) {
				t.Errorf("err = %q\nwant it to contain %q", msg, tc.want)
			}
		})
	}
}
