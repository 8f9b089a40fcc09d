package cli

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/control"
)

// TestServerCheckOps: `sesame server --check` prints the control socket and the metrics
// listener for every format (defaults for knockd.conf and fwknop's files, which have no such
// sections), --control-socket moves the socket in each, and what only the control and metrics
// packages can judge (a group that does not exist, a listen address that is not loopback) stops
// the check with the file and the reason.
func TestServerCheckOps(t *testing.T) {
	const (
		door   = "[[door]]\nname = \"d\"\nsequence = [\"7000/tcp\"]\nopen = [\"tcp/22\"]\n"
		access = "SOURCE ANY\nKEY_BASE64 iydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY=\nOPEN_PORTS tcp/22\n"
		knockd = "[d]\nsequence = 7000\nopen = tcp/22\n"
	)
	defaults := "  control: socket /run/sesame/control.sock, read: root, change: root, max_grant 24h0m0s\n" +
		"  metrics: on the control socket only ([metrics] listen is off)\n"
	tests := []struct {
		name, file, data string
		args             func(dir string) []string
		want             string // printed by --check, or the error
		err              bool
	}{
		{"native defaults", "sesame.toml", door,
			func(dir string) []string { return []string{"-c", filepath.Join(dir, "sesame.toml")} }, defaults, false},
		{"native sections", "sesame.toml", door + "[control]\nsocket = \"/run/s2/c.sock\"\ngroup = \"0\"\nadmin_group = \"root\"\nmax_grant = \"4h\"\n" +
			"[metrics]\nlisten = \"127.0.0.1:9741\"\n",
			func(dir string) []string { return []string{"-c", filepath.Join(dir, "sesame.toml")} },
			"  control: socket /run/s2/c.sock, read: root and group 0, change: root and group root, max_grant 4h0m0s\n" +
				"  metrics: http://127.0.0.1:9741/metrics (and on the control socket)\n", false},
		{"native flag", "sesame.toml", door + "[control]\nsocket = \"/run/s2/c.sock\"\n",
			func(dir string) []string {
				return []string{"-c", filepath.Join(dir, "sesame.toml"), "--control-socket", "/tmp/x/c.sock"}
			}, "  control: socket /tmp/x/c.sock,", false},
		{"knockd defaults", "knockd.conf", knockd,
			func(dir string) []string {
				return []string{"--knockd-conf", filepath.Join(dir, "knockd.conf"), "--firewall", "nftables"}
			}, defaults, false},
		{"knockd flag", "knockd.conf", knockd,
			func(dir string) []string {
				return []string{"--knockd-conf", filepath.Join(dir, "knockd.conf"), "--firewall", "nftables", "--control-socket", "/tmp/k/c.sock"}
			}, "  control: socket /tmp/k/c.sock, read: root", false},
		{"fwknop defaults", "access.conf", access,
			func(dir string) []string { return []string{"--fwknop-conf", dir} }, defaults, false},
		{"fwknop flag", "access.conf", access,
			func(dir string) []string { return []string{"--fwknop-conf", dir, "--control-socket", "/tmp/f/c.sock"} },
			"  control: socket /tmp/f/c.sock, read: root", false},
		{"flag relative", "access.conf", access,
			func(dir string) []string { return []string{"--fwknop-conf", dir, "--control-socket", "c.sock"} },
			`control: socket: "c.sock": want the absolute path of a socket file`, true},
		{"no such group", "sesame.toml", door + "[control]\ngroup = \"no-such-group-sesame\"\n",
			func(dir string) []string { return []string{"-c", filepath.Join(dir, "sesame.toml")} },
			`sesame.toml: control: group: no group "no-such-group-sesame" on this system`, true},
		{"no such admin group", "sesame.toml", door + "[control]\nadmin_group = \"no-such-group-sesame\"\n",
			func(dir string) []string { return []string{"-c", filepath.Join(dir, "sesame.toml")} },
			`sesame.toml: control: admin_group: no group "no-such-group-sesame" on this system`, true},
		{"metrics remote", "sesame.toml", door + "[metrics]\nlisten = \"0.0.0.0:9741\"\n",
			func(dir string) []string { return []string{"-c", filepath.Join(dir, "sesame.toml")} },
			`sesame.toml: metrics: listen "0.0.0.0:9741": not a loopback address`, true},
		{"metrics remote allowed", "sesame.toml", door + "[metrics]\nlisten = \"0.0.0.0:9741\"\nallow_remote = true\n",
			func(dir string) []string { return []string{"-c", filepath.Join(dir, "sesame.toml")} },
			"  metrics: http://0.0.0.0:9741/metrics", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, filepath.Join(dir, tc.file), tc.data)
			var stdout, stderr strings.Builder
			err := runServer(t.Context(), serverCommand(), append(tc.args(dir), "--check"), &stdout, &stderr)
			if tc.err {
				if err == nil || !strings.Contains(strings.ReplaceAll(err.Error(), dir+"/", ""), tc.want) {
					t.Fatalf("err = %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("--check: %v\n%s", err, stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.want) {
				t.Errorf("--check printed:\n%s\nwant %q", stdout.String(), tc.want)
			}
		})
	}
}

// TestControlDefaultsAgree: the configuration's defaults for [control] are the control
// package's.
func TestControlDefaultsAgree(t *testing.T) {
	if config.DefaultControlSocket != control.DefaultSocket || config.DefaultMaxGrant != control.DefaultMaxGrant {
		t.Errorf("config %s %v, control %s %v", config.DefaultControlSocket, config.DefaultMaxGrant, control.DefaultSocket, control.DefaultMaxGrant)
	}
}
