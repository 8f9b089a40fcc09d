package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sesame-knock/sesame/internal/config"
)

// TestServerFwknopStateDir: with --fwknop-conf the replay cache stays in the persistent state
// directory, not FWKNOP_RUN_DIR; --state-dir moves it.
func TestServerFwknopStateDir(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "fwknopd.conf"), "ENABLE_UDP_SERVER Y;\nFWKNOP_RUN_DIR /run/fwknop;\n")
	write(t, filepath.Join(dir, "access.conf"), "SOURCE ANY\nKEY_BASE64 iydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY=\n"+
		"HMAC_KEY_BASE64 kRzlTYr0K1R4pc+Vy2hRIOY3ggfgSjsrylbO/9g/VZA9FfhU8R+Xg2cTnNTw+PAyHyeCQL1G64J++Gr4cPhpmg==\nOPEN_PORTS tcp/22\n")
	for _, tc := range []struct{ flag, want string }{{"", config.DefaultStateDir}, {"/srv/sesame", "/srv/sesame"}} {
		cfg, err := loadServerConfig(serverFlags{fwknopConf: dir, stateDir: tc.flag})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Server.StateDir != tc.want {
			t.Errorf("--state-dir %q: state dir %q, want %q", tc.flag, cfg.Server.StateDir, tc.want)
		}
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func link(t *testing.T, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

// TestServerConfigsChecked: every kind of configuration (its commands run as root) is refused
// when others could change it, with the file and the fix.
func TestServerConfigsChecked(t *testing.T) {
	const access = "SOURCE ANY\nKEY_BASE64 iydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY=\nOPEN_PORTS tcp/22\n"
	tests := []struct {
		name  string
		file  string
		data  string
		flags func(dir string) serverFlags
	}{
		{"native", "sesame.toml", "[server]\nfirewall = \"none\"\n[[door]]\nname = \"d\"\nsequence = [\"7000/tcp\"]\ncommand = \"true\"\n",
			func(dir string) serverFlags { return serverFlags{config: filepath.Join(dir, "sesame.toml")} }},
		{"knockd", "knockd.conf", "[openSSH]\nsequence = 7000\ncommand = true\n",
			func(dir string) serverFlags { return serverFlags{knockdConf: filepath.Join(dir, "knockd.conf")} }},
		{"fwknop", "access.conf", access,
			func(dir string) serverFlags { return serverFlags{fwknopConf: dir} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, tc.file)
			write(t, p, tc.data)
			if _, err := loadServerConfig(tc.flags(dir)); err != nil {
				t.Fatalf("private file: %v", err)
			}
			if err := os.Chmod(p, 0o602); err != nil {
				t.Fatal(err)
			}
			_, err := loadServerConfig(tc.flags(dir))
			if want := p + " is writable by others (mode 0602)"; err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "chmod o-w "+p) {
				t.Errorf("err = %v, want %q and the fix", err, want)
			}
		})
	}
}

// TestServerCheckReadableFwknopConf: `sesame server --fwknop-conf DIR --check` with a
// world-readable access.conf succeeds and prints the warning, with the file and the fix.
func TestServerCheckReadableFwknopConf(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "access.conf")
	write(t, p, "SOURCE ANY\nKEY_BASE64 iydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY=\nOPEN_PORTS tcp/22\n")
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr strings.Builder
	if err := runServer(t.Context(), serverCommand(), []string{"--fwknop-conf", dir, "--check"}, &stdout, &stderr); err != nil {
		t.Fatalf("--check: %v\n%s", err, stderr.String())
	}
	if want := "  warning: " + p + " holds keys and is readable by group or others (mode 0644): chmod 600 " + p + "\n"; !strings.Contains(stdout.String(), want) {
		t.Errorf("--check printed:\n%s\nwant the line %q", stdout.String(), want)
	}
}
