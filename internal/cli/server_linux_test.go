package cli

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/config"
)

// TestServerFilesNoFollow: the pid file and the knockd log file are never written through a
// symbolic link, a FIFO or a file of another user put in their place.
func TestServerFilesNoFollow(t *testing.T) {
	open := map[string]func(path string) error{
		"pid file": func(p string) error { return writePidFile(p, 4242) },
		"log file": func(p string) error {
			k, err := newKnockdLog(&config.Config{Server: config.Server{LogFile: p}})
			if err == nil {
				k.Line("hello")
				k.Close()
			}
			return err
		},
	}
	tests := []struct {
		name string
		make func(t *testing.T, path, target string)
		err  string // "": works
	}{
		{"new file", func(*testing.T, string, string) {}, ""},
		{"existing file", func(t *testing.T, p, _ string) { write(t, p, "old old old old\n") }, ""},
		{"link", func(t *testing.T, p, target string) { link(t, target, p) }, "is a symbolic link"},
		{"dangling link", func(t *testing.T, p, target string) { link(t, target+".new", p) }, "is a symbolic link"},
		{"fifo", func(t *testing.T, p, _ string) {
			if err := syscall.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "sesame.file"}, // "not a regular file", or ENXIO: with O_NONBLOCK a FIFO never blocks the open
		{"another user's file", func(t *testing.T, p, _ string) {
			if os.Geteuid() != 0 {
				t.Skip("needs root to give a file to another user (chown)")
			}
			write(t, p, "")
			if err := os.Chown(p, 4242, 4242); err != nil {
				t.Fatal(err)
			}
		}, "is owned by uid 4242"},
	}
	for what, fn := range open {
		for _, tc := range tests {
			t.Run(what+"/"+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				target := filepath.Join(dir, "precious")
				write(t, target, "keep me")
				path := filepath.Join(dir, "sesame.file")
				tc.make(t, path, target)
				done := make(chan error, 1)
				go func() { done <- fn(path) }()
				var err error
				select {
				case err = <-done:
				case <-time.After(5 * time.Second):
					t.Fatal("blocked")
				}
				if data, _ := os.ReadFile(target); string(data) != "keep me" {
					t.Errorf("wrote through the link: %q", data)
				}
				if _, serr := os.Stat(target + ".new"); serr == nil {
					t.Error("created the dangling link's target")
				}
				if tc.err != "" {
					if err == nil || !strings.Contains(err.Error(), tc.err) {
						t.Fatalf("err = %v, want %q", err, tc.err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				data, _ := os.ReadFile(path)
				if want := map[string]string{"pid file": "4242\n"}[what]; want != "" && string(data) != want {
					t.Errorf("pid file holds %q, want %q", data, want)
				}
				if what == "log file" && !strings.HasSuffix(string(data), "] hello\n") {
					t.Errorf("log file holds %q", data)
				}
			})
		}
	}
}

// TestServerStateDirChecked: a state directory that others could change is refused before the
// replay cache is opened in it.
func TestServerStateDirChecked(t *testing.T) {
	for _, tc := range []struct {
		mode os.FileMode
		err  string
	}{
		{0o777, "state directory {d} is writable by others (mode 0777)"},
		{0o757, "state directory {d} is writable by others (mode 0757)"},
	} {
		d := filepath.Join(t.TempDir(), "state")
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, tc.mode); err != nil {
			t.Fatal(err)
		}
		cfg := &config.Config{Server: config.DefaultServer(), SPA: &config.SPA{}}
		cfg.Server.StateDir = d
		deps, err := openSPA(cfg, nil)
		if err == nil {
			deps.Close()
		}
		if want := strings.ReplaceAll(tc.err, "{d}", d); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("mode %04o: err = %v, want %q", tc.mode, err, want)
		}
		if _, err := os.Stat(filepath.Join(d, "replay.db")); err == nil {
			t.Errorf("mode %04o: replay.db created", tc.mode)
		}
	}
}

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
