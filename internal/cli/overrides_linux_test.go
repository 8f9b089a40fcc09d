package cli

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestServerOverridesBeforeValidate: --firewall, -i and --state-dir are applied before the
// configuration is validated, for each format: a flag can make a file valid (--firewall nftables
// for a file that says none) and the "firewall none cannot open ports" rule judges the result.
func TestServerOverridesBeforeValidate(t *testing.T) {
	const access = "SOURCE ANY\nKEY_BASE64 iydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY=\nOPEN_PORTS tcp/22\n"
	tests := []struct {
		name, file, data string
		flags            func(dir string) serverFlags
		want             string // "" for success
	}{
		{"native none, flag nftables", "sesame.toml", "[server]\nfirewall = \"none\"\n[[door]]\nname = \"d\"\nsequence = [\"7000/tcp\"]\nopen = [\"tcp/22\"]\n",
			func(dir string) serverFlags {
				return serverFlags{config: filepath.Join(dir, "sesame.toml"), firewall: "nftables", iface: "lo", stateDir: "/srv/s"}
			}, ""},
		{"native, flag none", "sesame.toml", "[[door]]\nname = \"d\"\nsequence = [\"7000/tcp\"]\nopen = [\"tcp/22\"]\n",
			func(dir string) serverFlags {
				return serverFlags{config: filepath.Join(dir, "sesame.toml"), firewall: "none"}
			},
			`sesame.toml:4: door "d": open: firewall none cannot open ports`},
		{"knockd, flag none", "knockd.conf", "[d]\nsequence = 7000\nopen = tcp/22\n",
			func(dir string) serverFlags {
				return serverFlags{knockdConf: filepath.Join(dir, "knockd.conf"), firewall: "none"}
			},
			`door "d": open: firewall none cannot open ports`},
		{"knockd, no flag", "knockd.conf", "[d]\nsequence = 7000\nopen = tcp/22\n",
			func(dir string) serverFlags { return serverFlags{knockdConf: filepath.Join(dir, "knockd.conf")} },
			"choose sesame's gate with --firewall nftables or --firewall iptables"},
		{"fwknop, flag none", "access.conf", access,
			func(dir string) serverFlags { return serverFlags{fwknopConf: dir, firewall: "none"} },
			"spa: firewall none cannot open ports for SPA clients"},
		{"bad flag", "access.conf", access,
			func(dir string) serverFlags { return serverFlags{fwknopConf: dir, firewall: "nft"} },
			`--firewall "nft": want nftables, iptables, aws-sg or none`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, filepath.Join(dir, tc.file), tc.data)
			f := tc.flags(dir)
			cfg, err := loadServerConfig(f)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := cfg.Server
			if string(s.Firewall) != f.firewall || len(s.Interfaces) != 1 || s.Interfaces[0] != f.iface || s.StateDir != f.stateDir {
				t.Errorf("server = %+v, want the flags %+v", s, f)
			}
		})
	}
}
