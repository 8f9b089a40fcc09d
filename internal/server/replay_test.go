package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sesame-knock/sesame/internal/config"
)

// TestOpenReplayStateDirChecked: a state directory that others could change is refused before the
// replay cache is opened in it.
func TestOpenReplayStateDirChecked(t *testing.T) {
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
		store, err := OpenReplay(cfg)
		if err == nil {
			store.Close()
		}
		if want := strings.ReplaceAll(tc.err, "{d}", d); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("mode %04o: err = %v, want %q", tc.mode, err, want)
		}
		if _, err := os.Stat(filepath.Join(d, "replay.db")); err == nil {
			t.Errorf("mode %04o: replay.db created", tc.mode)
		}
	}
}
