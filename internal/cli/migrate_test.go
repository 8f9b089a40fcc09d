package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sesame-knock/sesame/internal/config"
)

const (
	migKey  = "iydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY="
	migHMAC = "kRzlTYr0K1R4pc+Vy2hRIOY3ggfgSjsrylbO/9g/VZA9FfhU8R+Xg2cTnNTw+PAyHyeCQL1G64J++Gr4cPhpmg=="
	migPass = "a-secret-passphrase"
)

func runMigrate(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = Main(context.Background(), append([]string{"migrate"}, args...), &o, &e)
	return code, o.String(), e.String()
}

// TestMigrateFwknop: keys go to 0600 files in a 0700 directory, are printed nowhere, the
// configuration goes to -o (0600) and loads; nothing is overwritten without --force.
func TestMigrateFwknop(t *testing.T) {
	dir := t.TempDir()
	access := "SOURCE ANY\nKEY_BASE64 " + migKey + "\nHMAC_KEY_BASE64 " + migHMAC + "\nOPEN_PORTS tcp/22\n\n" +
		"SOURCE 192.0.2.0/24\nKEY " + migPass + "\nOPEN_PORTS tcp/2222\n"
	if err := os.WriteFile(filepath.Join(dir, "access.conf"), []byte(access), 0o600); err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(t.TempDir(), "clients")
	out := filepath.Join(t.TempDir(), "sesame.toml")
	// Flags after the arguments too.
	code, stdout, stderr := runMigrate("fwknop", dir, "--keys-dir", keys, "-o", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, secret := range []string{migKey, migHMAC, migPass} {
		if strings.Contains(stdout+stderr, secret) {
			t.Errorf("a key was printed")
		}
	}
	if fi, err := os.Stat(keys); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("keys directory: %v, %v", fi, err)
	}
	for _, name := range []string{"stanza-1.key", "stanza-1.hmac", "stanza-2.key"} {
		p := filepath.Join(keys, name)
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file %s: %v, %v", p, fi, err)
		}
		if !strings.Contains(stderr, p) {
			t.Errorf("stderr does not name %s:\n%s", p, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(keys, "stanza-2.hmac")); err == nil {
		t.Error("a stanza without an HMAC key got an HMAC key file")
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("output: %v, %v", fi, err)
	}
	cfg, err := config.Load(out, config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cfg.SPA.Clients); n != 2 || string(cfg.SPA.Clients[1].Fwknop.Key) != migPass {
		t.Fatalf("loaded %d clients, or the passphrase did not carry over", n)
	}

	// Again: the output and the key files exist.
	before, _ := os.ReadFile(out)
	if code, _, stderr := runMigrate("fwknop", "--keys-dir", keys, dir, "-o", out); code != 1 || !strings.Contains(stderr, "already exists; use --force") {
		t.Fatalf("second run: exit %d, %s", code, stderr)
	}
	if after, _ := os.ReadFile(out); !bytes.Equal(before, after) {
		t.Fatal("the output was changed without --force")
	}
	if code, _, stderr := runMigrate("fwknop", "--keys-dir", keys, dir, "-o", out, "--force"); code != 0 {
		t.Fatalf("--force: exit %d, %s", code, stderr)
	}
	// To standard output, into a new keys directory.
	code, stdout, stderr = runMigrate("fwknop", dir, "--keys-dir", filepath.Join(t.TempDir(), "k"))
	if code != 0 || !strings.Contains(stdout, "[[spa.client]]") || strings.Contains(stdout+stderr, migKey) {
		t.Fatalf("stdout: exit %d, %s", code, stderr)
	}
}

// TestMigrateKnockd: the configuration goes to standard output and loads as it is.
func TestMigrateKnockd(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "knockd.conf")
	if err := os.WriteFile(conf, []byte("[openSSH]\nsequence = 7000,8000\ncommand = echo %IP%\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runMigrate("knockd", conf)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	cfg, err := config.Parse("out.toml", []byte(stdout))
	if err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	if len(cfg.Doors) != 1 || cfg.Doors[0].StartCommand != "echo %IP%" {
		t.Fatalf("doors %+v", cfg.Doors)
	}
}

func TestMigrateErrors(t *testing.T) {
	dir := t.TempDir()
	ots := filepath.Join(dir, "ots")
	bad := filepath.Join(dir, "knockd.conf")
	if err := os.WriteFile(ots, []byte("1,2,3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("[d]\none_time_sequences = "+ots+"\ncommand = x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.toml")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"knockd"}, 2, "want a format and a path"},
		{[]string{"ipchains", bad}, 2, `unknown format "ipchains"`},
		{[]string{"knockd", bad, "-o", out}, 1, bad + ":2: door \"d\": One_Time_Sequences"},
		{[]string{"fwknop", dir, "--keys-dir", ""}, 2, "--keys-dir must not be empty"},
		{[]string{"fwknop", bad}, 1, "is not a directory"},
	} {
		code, _, stderr := runMigrate(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit %d, %s; want %d, %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a configuration that could not be migrated was written")
	}
}
