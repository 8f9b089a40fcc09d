package cli

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sesame-knock/sesame/internal/spa"
)

// TestRotatingDoorCLI: `sesame server --check` describes a rotating door without its key, and
// `sesame knock --door` refuses a key file others may read or one that holds no key, without
// showing what the file holds.
func TestRotatingDoorCLI(t *testing.T) {
	dir := t.TempDir()
	k, err := spa.GenerateSharedKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := k.MarshalText()
	key := filepath.Join(dir, "door.key")
	write(t, key, "# the ssh door\n"+string(text)+"\n")
	cfg := filepath.Join(dir, "sesame.toml")
	write(t, cfg, "[[door]]\nname = \"ssh\"\nsecret_file = \"door.key\"\nrotate = \"20s\"\nrotate_length = 5\nopen = [\"tcp/22\"]\n")
	var stdout, stderr strings.Builder
	if err := runServer(t.Context(), serverCommand(), []string{"-c", cfg, "--check"}, &stdout, &stderr); err != nil {
		t.Fatalf("--check: %v\n%s", err, stderr.String())
	}
	want := `door "ssh": rotating every 20s, 5 knocks of tcp/10000-60000, 3 per window, key door.key,`
	if !strings.Contains(stdout.String(), want) || strings.Contains(stdout.String(), string(text)[17:]) {
		t.Errorf("--check printed:\n%s\nwant %q and no key", stdout.String(), want)
	}

	open := filepath.Join(dir, "open.key")
	write(t, open, string(text))
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(dir, "junk.key")
	write(t, junk, "not-a-key-SECRETJUNK\n")
	for _, tc := range []struct{ file, want string }{
		{open, "accessible by group or others"},
		{junk, "not a sesame shared key"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		var out strings.Builder
		err := knockCommand().run(t.Context(), []string{"127.0.0.1", "--door", "ssh", "--secret-file", tc.file, "--state-file", filepath.Join(dir, "st")}, &out, &out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.file, err, tc.want)
			continue
		}
		if msg := err.Error() + out.String(); strings.Contains(msg, "SECRETJUNK") || strings.Contains(msg, string(text)[17:]) {
			t.Errorf("%s: the message shows the file's contents: %s", tc.file, msg)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "st")); err == nil {
		t.Error("a refused knock wrote the state file")
	}
}
