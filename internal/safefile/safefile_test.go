//go:build unix

package safefile_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/knockdlog"
	"github.com/sesame-knock/sesame/internal/safefile"
)

// TestNoFollow: the pid file and the knockd log file are never written through a
// symbolic link, a FIFO or a file of another user put in their place.
func TestNoFollow(t *testing.T) {
	open := map[string]func(path string) error{
		"pid file": func(p string) error { return safefile.WritePid(p, 4242) },
		"log file": func(p string) error {
			k, err := knockdlog.Open(p, false)
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
