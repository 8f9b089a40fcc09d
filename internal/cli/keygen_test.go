package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/spa"
)

func run(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = Main(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != want {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tomlBlock returns the indented config lines of keygen's output that start at the line equal to first.
func tomlBlock(t *testing.T, out, first string) string {
	t.Helper()
	i := strings.Index(out, first)
	if i < 0 {
		t.Fatalf("no %q in output:\n%s", first, out)
	}
	var b strings.Builder
	for _, l := range strings.Split(out[i:], "\n") {
		if strings.TrimSpace(l) == "" {
			break
		}
		b.WriteString(strings.TrimSpace(l) + "\n")
	}
	return b.String()
}

func TestKeygenShared(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "alice.key")
	code, stdout, stderr := run("keygen", "-o", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	checkMode(t, out, 0o600)
	key, err := spa.ParseSharedKey(read(t, out))
	if err != nil {
		t.Fatalf("key file does not parse back: %v", err)
	}
	if strings.Contains(stdout, base64.StdEncoding.EncodeToString(key[:])) {
		t.Error("the shared key was printed")
	}
	var cfg struct {
		Spa struct {
			Client []struct {
				Name    string
				KeyFile string `toml:"key_file"`
				Open    []string
			}
		}
	}
	block := "[spa]\n" + tomlBlock(t, stdout, "[[spa.client]]")
	if _, err := toml.Decode(block, &cfg); err != nil {
		t.Fatalf("printed server lines are not TOML: %v\n%s", err, block)
	}
	if c := cfg.Spa.Client; len(c) != 1 || c[0].Name != "alice" || !strings.HasSuffix(c[0].KeyFile, "/alice.key") {
		t.Errorf("server lines = %+v", c)
	}
	if !strings.Contains(stdout, "sesame open HOST -A tcp/22 --id alice --key-file "+out) {
		t.Errorf("no client command in:\n%s", stdout)
	}

	// Never overwrite without --force; --force writes a new key with mode 0600.
	code, _, stderr = run("keygen", "-o", out)
	if code != 1 || !strings.Contains(stderr, "already exists") {
		t.Errorf("second keygen: exit %d, %q; want a refusal", code, stderr)
	}
	if err := os.Chmod(out, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr = run("keygen", "-o", out, "--force"); code != 0 {
		t.Fatalf("--force: exit %d: %s", code, stderr)
	}
	checkMode(t, out, 0o600)
	if key2, err := spa.ParseSharedKey(read(t, out)); err != nil || key2 == key {
		t.Errorf("--force: %v, same key: %v", err, key2 == key)
	}
}

func TestKeygenPair(t *testing.T) {
	dir := t.TempDir()
	client, server := filepath.Join(dir, "alice"), filepath.Join(dir, "server")
	code, stdout, stderr := run("keygen", "--pair", "-o", client)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if code, _, stderr := run("keygen", "--pair", "--server", "-o", server); code != 0 {
		t.Fatalf("server pair: exit %d: %s", code, stderr)
	}
	checkMode(t, client, 0o600)
	checkMode(t, server, 0o600)
	checkMode(t, client+".pub", 0o644)
	kp, err := spa.ParseKeyPair(read(t, client))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := spa.ParsePublicKey(read(t, client+".pub"))
	if err != nil || pub != kp.Public() {
		t.Fatalf("alice.pub: %v, matches private key: %v", err, pub == kp.Public())
	}
	srv, err := spa.ParseKeyPair(read(t, server))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := spa.ParsePublicKey(read(t, server+".pub")); err != nil {
		t.Fatal(err)
	}
	// The printed public_key line is what the server config needs.
	var cfg struct {
		Spa struct {
			Client []struct {
				Name      string
				PublicKey spa.PublicKey `toml:"public_key"`
			}
		}
	}
	if _, err := toml.Decode("[spa]\n"+tomlBlock(t, stdout, "[[spa.client]]"), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Spa.Client) != 1 || cfg.Spa.Client[0].PublicKey != pub {
		t.Fatalf("printed public_key does not match alice.pub: %+v", cfg.Spa.Client)
	}
	if _, err := spa.NewPairClient(cfg.Spa.Client[0].Name, cfg.Spa.Client[0].PublicKey, srv); err != nil {
		t.Fatal(err)
	}
	// Neither file is replaced by a second run.
	if code, _, stderr := run("keygen", "--pair", "-o", client); code != 1 || !strings.Contains(stderr, "already exists") {
		t.Errorf("second run: exit %d, %q", code, stderr)
	}
	if err := os.Remove(client); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := run("keygen", "--pair", "-o", client); code != 1 || !strings.Contains(stderr, "alice.pub already exists") {
		t.Errorf("with only .pub left: exit %d, %q", code, stderr)
	}
}

func TestKeygenFwknop(t *testing.T) {
	code, stdout, stderr := run("keygen", "--fwknop")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	parts := strings.SplitN(stdout, "# Client", 2)
	if len(parts) != 2 {
		t.Fatalf("output:\n%s", stdout)
	}
	acc, err := fwknop.ParseAccess("access.conf", []byte("SOURCE ANY\n"+parts[0]))
	if err != nil || len(acc) != 1 {
		t.Fatalf("server lines do not parse as access.conf: %v", err)
	}
	rc, err := fwknop.ParseRC("fwknoprc", []byte("[x]\n# Client"+parts[1]))
	if err != nil || len(rc) != 1 {
		t.Fatalf("client lines do not parse as .fwknoprc: %v", err)
	}
	if len(rc[0].Keys.Key) != 32 || len(rc[0].Keys.HMACKey) != 64 || !rc[0].UseHMAC {
		t.Errorf("rc keys: %d, %d bytes, USE_HMAC %v", len(rc[0].Keys.Key), len(rc[0].Keys.HMACKey), rc[0].UseHMAC)
	}
	if !bytes.Equal(rc[0].Keys.Key, acc[0].Keys.Key) || !bytes.Equal(rc[0].Keys.HMACKey, acc[0].Keys.HMACKey) {
		t.Error("server and client keys differ")
	}

	out := filepath.Join(t.TempDir(), "home.fwknop")
	code, stdout, stderr = run("keygen", "--fwknop", "-o", out)
	if code != 0 {
		t.Fatalf("-o: exit %d: %s", code, stderr)
	}
	checkMode(t, out, 0o600)
	if regexp.MustCompile(`KEY_BASE64:?\s+[A-Za-z0-9+/]{40}`).MatchString(stdout) {
		t.Errorf("keys printed with -o:\n%s", stdout)
	}
	acc, err = fwknop.ParseAccess("f", []byte("SOURCE ANY\n"+read(t, out)))
	if err != nil || len(acc[0].Keys.Key) != 32 || len(acc[0].Keys.HMACKey) != 64 {
		t.Fatalf("written file: %v", err)
	}
	if code, _, _ := run("keygen", "--fwknop", "-o", out); code != 1 {
		t.Errorf("overwrote %s without --force", out)
	}
}

func TestKeygenUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"keygen"}, "-o FILE is required"},
		{[]string{"keygen", "--pair"}, "-o FILE is required"},
		{[]string{"keygen", "--server", "-o", "x"}, "--server goes with --pair"},
		{[]string{"keygen", "--fwknop", "--pair"}, "does not go with"},
		{[]string{"keygen", "--pair", "-o", "x.pub"}, "FILE.pub"},
		{[]string{"keygen", "-o", "x", "extra"}, "unexpected argument"},
		{[]string{"keygen", "-o", "x", "--id", "bad name"}, "--id"},
		{[]string{"keygen", "--bogus"}, "not defined"},
	} {
		code, _, stderr := run(tt.args...)
		if code != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("%q: exit %d, %q; want 2 and %q", tt.args, code, stderr, tt.want)
		}
	}
	if code, stdout, _ := run("keygen", "-h"); code != 0 || !strings.Contains(stdout, "Examples:") {
		t.Errorf("keygen -h: exit %d:\n%s", code, stdout)
	}
}

func TestOpenUsage(t *testing.T) {
	if code, stdout, _ := run("open", "-h"); code != 0 || !strings.Contains(stdout, "Examples:") {
		t.Errorf("open -h: exit %d:\n%s", code, stdout)
	}
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"open", "192.0.2.7", "--bogus"}, 2, "not defined"},
		{[]string{"open", "-A", "tcp/22"}, 2, "no server"},
		{[]string{"open", "192.0.2.7", "-A", "tcp/22", "--id", "alice"}, 2, "--key-file"},
		{[]string{"open", "192.0.2.7", "-A", "tcp/22", "--id", "alice", "--key-file", "/nonexistent/k"}, 1, "no such file"},
	} {
		code, _, stderr := run(tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.want) {
			t.Errorf("%q: exit %d, %q; want %d and %q", tt.args, code, stderr, tt.code, tt.want)
		}
	}
}
