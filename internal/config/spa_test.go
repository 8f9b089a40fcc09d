package config

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/spa"
)

// spaKeys writes a shared key, a server key pair, an fwknop key file and a world-readable copy
// into a temporary directory and returns it with the client's public key.
func spaKeys(t *testing.T) (dir string, pub spa.PublicKey) {
	t.Helper()
	dir = t.TempDir()
	write := func(name string, data []byte, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, name), mode); err != nil {
			t.Fatal(err)
		}
	}
	sk, _ := spa.GenerateSharedKey(rand.Reader)
	skText, _ := sk.MarshalText()
	write("alice.key", append([]byte("# alice\n"), skText...), 0o600)
	write("open.key", skText, 0o644)
	server, _ := spa.GeneratePair(rand.Reader)
	serverText, _ := server.MarshalText()
	write("server", serverText, 0o600)
	client, _ := spa.GeneratePair(rand.Reader)
	write("fwknop.keys", []byte("KEY_BASE64 iydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY=\n"+
		"HMAC_KEY_BASE64 kRzlTYr0K1R4pc+Vy2hRIOY3ggfgSjsrylbO/9g/VZA9FfhU8R+Xg2cTnNTw+PAyHyeCQL1G64J++Gr4cPhpmg==\n"), 0o600)
	write("fwknop.key", []byte("iydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY=\n"), 0o600)
	write("fwknop.hmac", []byte("kRzlTYr0K1R4pc+Vy2hRIOY3ggfgSjsrylbO/9g/VZA9FfhU8R+Xg2cTnNTw+PAyHyeCQL1G64J++Gr4cPhpmg==\n"), 0o600)
	return dir, client.Public()
}

// issueSPA is the [spa] example of the issue, with paths into dir.
const issueSPA = `[spa]
listen = "udp/62201"          # a UDP socket; or sniff = true to see the packet while the port stays dropped
max_age = "120s"
server_key_file = "DIR/server"        # the server's own key pair, for clients with key pairs

[[spa.client]]
name = "alice"
key_file = "DIR/alice.key"     # shared key; or public_key = "..." for a key pair
open = ["tcp/22", "tcp/443"]                   # what this client may ask for
sources = ["0.0.0.0/0", "::/0"]
max_open_for = "1h"
`

func TestSPAConfigIssueExample(t *testing.T) {
	dir, pub := spaKeys(t)
	pubText, _ := pub.MarshalText()
	// stealth = "off": with a stealth gate every SPA port is sniffed (TestStealthSniffsSPA).
	src := "[server]\nstealth = \"off\"\n" + strings.ReplaceAll(issueSPA, "DIR", dir) + `
[[spa.client]]
name = "bob"
public_key = "` + string(pubText) + `"
open = ["udp/53"]
default_open_for = "10s"

[[spa.client]]
name = "legacy"
format = "fwknop"
key_file = "fwknop.keys"
hmac_digest = "sha512"
open = ["tcp/22"]
sources = ["198.18.0.0/16"]
require_username = "root"
require_source_address = true
access_expire = "2099-12-31"

[[spa.client]]
name = "split"
format = "fwknop"
key_file = "fwknop.key"
hmac_key_file = "fwknop.hmac"
encryption_mode = "cbc"
open = ["tcp/2222"]
`
	cfg, err := Parse(filepath.Join(dir, "sesame.toml"), []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.SPA
	if s == nil || s.Port != 62201 || s.Sniff || s.MaxAge != 120*time.Second || s.ServerKey == nil || len(s.Clients) != 4 {
		t.Fatalf("spa = %+v", s)
	}
	a := s.Clients[0]
	if a.Name != "alice" || a.Format != SPAFormatNative || a.Shared == nil || a.Public != nil ||
		len(a.Open) != 2 || a.Open[1] != (netport.Port{Proto: netport.TCP, Num: 443}) ||
		len(a.Sources) != 2 || a.MaxOpenFor != time.Hour || a.DefaultOpenFor != DefaultSPAOpenFor {
		t.Errorf("alice = %+v", a)
	}
	b := s.Clients[1]
	if b.Public == nil || *b.Public != pub || b.Shared != nil || b.DefaultOpenFor != 10*time.Second || b.MaxOpenFor != DefaultSPAMaxOpenFor {
		t.Errorf("bob = %+v", b)
	}
	l := s.Clients[2]
	if l.Format != SPAFormatFwknop || len(l.Fwknop.Key) != 32 || len(l.Fwknop.HMACKey) != 64 || l.Fwknop.HMACDigest != fwknop.DigestSHA512 ||
		l.RequireUsername != "root" || !l.RequireSourceAddress || l.AccessExpire.Year() != 2099 ||
		l.Sources[0] != netip.MustParsePrefix("198.18.0.0/16") {
		t.Errorf("legacy = %+v", l)
	}
	if sp := s.Clients[3]; len(sp.Fwknop.Key) != 32 || len(sp.Fwknop.HMACKey) != 64 {
		t.Errorf("split = %+v", sp)
	}
	want := []netport.Port{{Proto: netport.TCP, Num: 22}, {Proto: netport.TCP, Num: 443}, {Proto: netport.UDP, Num: 53}, {Proto: netport.TCP, Num: 2222}}
	if got := s.Protected(); len(got) != len(want) {
		t.Errorf("Protected = %v, want %v", got, want)
	}
	if strings.Contains(strings.ToLower(strings.ReplaceAll(fmtValue(*cfg.SPA), "<redacted", "")), "iydgyi5g") {
		t.Error("a printed config reveals a key")
	}
}

func TestSPAConfigSniff(t *testing.T) {
	dir, _ := spaKeys(t)
	cfg, err := Parse(filepath.Join(dir, "s.toml"), []byte("[spa]\nlisten = \"udp/4000\"\nsniff = true\n[[spa.client]]\nname = \"a\"\nkey_file = \"alice.key\"\nopen = [\"tcp/22\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.SPA.Protected()
	if !cfg.SPA.Sniff || len(got) != 2 || got[0] != (netport.Port{Proto: netport.UDP, Num: 4000}) {
		t.Errorf("Protected = %v", got)
	}
}

func TestSPAConfigICMP(t *testing.T) {
	dir, _ := spaKeys(t)
	client := "[[spa.client]]\nname = \"a\"\nkey_file = \"alice.key\"\nopen = [\"tcp/22\"]\n"
	for _, tc := range []struct {
		src  string
		want bool
	}{
		{"[spa]\n" + client, false},
		{"[spa]\nicmp = true\n" + client, true},
		{"[spa]\nicmp = false\n" + client, false},
	} {
		cfg, err := Parse(filepath.Join(dir, "s.toml"), []byte(tc.src))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.SPA.ICMP != tc.want {
			t.Errorf("%q: ICMP = %v, want %v", tc.src, cfg.SPA.ICMP, tc.want)
		}
	}
	if _, err := Parse(filepath.Join(dir, "s.toml"), []byte("[spa]\nicmp = \"yes\"\n"+client)); err == nil || !strings.Contains(err.Error(), "icmp") {
		t.Errorf("icmp = \"yes\": err = %v, want one naming icmp", err)
	}
}

func TestSPAConfigErrors(t *testing.T) {
	dir, _ := spaKeys(t)
	client := "[[spa.client]]\nname = \"a\"\nkey_file = \"alice.key\"\nopen = [\"tcp/22\"]\n"
	tests := []struct{ name, src, want string }{
		{"listen tcp", "[spa]\nlisten = \"tcp/1\"\n" + client, `s.toml:2: spa: listen: "tcp/1": SPA packets are UDP`},
		{"listen bad", "[spa]\nlisten = \"62201\"\n" + client, `s.toml:2: spa: listen: "62201": want udp/PORT`},
		{"max_age", "[spa]\nmax_age = \"2h\"\n" + client, `s.toml:2: spa: max_age: 2h0m0s is out of range`},
		{"unknown key", "[spa]\nlisen = \"udp/1\"\n" + client, `s.toml:2: spa: unknown key "lisen"`},
		{"no clients", "[spa]\n", `spa: no [[spa.client]]`},
		{"inline secret", "[spa]\n[[spa.client]]\nname = \"a\"\nkey_base64 = \"AAAA\"\nopen = [\"tcp/22\"]\n", `s.toml:4: spa client "a": key_base64: secrets do not belong in the configuration`},
		{"inline server secret", "[spa]\nprivate_key = \"x\"\n" + client, `s.toml:2: spa: private_key: secrets do not belong`},
		{"world readable", "[spa]\n[[spa.client]]\nname = \"a\"\nkey_file = \"open.key\"\nopen = [\"tcp/22\"]\n", `open.key is readable by group or others (mode 0644)`},
		{"missing key file", "[spa]\n[[spa.client]]\nname = \"a\"\nkey_file = \"nope.key\"\nopen = [\"tcp/22\"]\n", `s.toml:4: spa client "a": key_file: key file: open`},
		{"wrong key kind", "[spa]\n[[spa.client]]\nname = \"a\"\nkey_file = \"server\"\nopen = [\"tcp/22\"]\n", `not a sesame shared key`},
		{"no key", "[spa]\n[[spa.client]]\nname = \"a\"\nopen = [\"tcp/22\"]\n", `s.toml:2: spa client "a": set key_file (shared key) or public_key (key pair)`},
		{"pair without server", "[spa]\n[[spa.client]]\nname = \"a\"\npublic_key = \"sesame-pub-v1 " + strings.Repeat("A", 86) + "==\"\nopen = [\"tcp/22\"]\n", `needs the server's own key`},
		{"no open", "[spa]\n[[spa.client]]\nname = \"a\"\nkey_file = \"alice.key\"\n", `open is required`},
		{"open reversed", "[spa]\n[[spa.client]]\nname = \"a\"\nkey_file = \"alice.key\"\nopen = [\"22/tcp\"]\n", `s.toml:5: spa client "a": open: "22/tcp": open entries are written PROTO/PORT`},
		{"bad name", "[spa]\n[[spa.client]]\nname = \"a b\"\nkey_file = \"alice.key\"\nopen = [\"tcp/22\"]\n", `s.toml:3: spa client #1: name: "a b": a client name is printable ASCII`},
		{"duplicate", "[spa]\n" + client + client, `s.toml:7: spa client "a": name: client #1 has the same name`},
		{"bad format", "[spa]\n" + client + "format = \"gpg\"\n", `format: "gpg" is not a format`},
		{"fwknop option on native", "[spa]\n" + client + "hmac_digest = \"sha256\"\n", `hmac_digest: is an fwknop option`},
		{"fwknop without key", "[spa]\n[[spa.client]]\nname = \"a\"\nformat = \"fwknop\"\nopen = [\"tcp/22\"]\n", `key_file is required`},
		{"fwknop bad digest", "[spa]\n[[spa.client]]\nname = \"a\"\nformat = \"fwknop\"\nkey_file = \"fwknop.keys\"\nhmac_digest = \"crc32\"\nopen = [\"tcp/22\"]\n", `s.toml:6: spa client "a": hmac_digest: "crc32"`},
		{"fwknop shared key file", "[spa]\n[[spa.client]]\nname = \"a\"\nformat = \"fwknop\"\nkey_file = \"alice.key\"\nopen = [\"tcp/22\"]\n", `key_file: alice.key: a sesame key, not fwknop keys`},
		{"max_open_for", "[spa]\n" + client + "max_open_for = \"48h\"\n", `max_open_for: 48h0m0s is out of range`},
		{"default above max", "[spa]\n" + client + "max_open_for = \"1m\"\ndefault_open_for = \"2m\"\n", `default_open_for: 2m0s is out of range 1s-1m0s`},
		{"sources empty", "[spa]\n" + client + "sources = []\n", `sources: is empty`},
		{"firewall none", "[server]\nfirewall = \"none\"\n[spa]\n" + client, `firewall none cannot open ports for SPA clients`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse(filepath.Join(dir, "s.toml"), []byte(tc.src))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", cfg.SPA)
			}
			msg := strings.ReplaceAll(err.Error(), dir+"/", "")
			if !strings.Contains(msg, tc.want) {
				t.Errorf("err = %q\nwant it to contain %q", msg, tc.want)
			}
			if strings.Contains(msg, "iydGYI5G") || strings.Contains(msg, "AAAA") {
				t.Errorf("error reveals a key: %q", msg)
			}
		})
	}
}

func TestSPAConfigParseFwknopKeyFile(t *testing.T) {
	tests := []struct {
		name, data   string
		key, hmacKey int // lengths; -1: error
	}{
		{"lines", "KEY_BASE64 iydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY=\nHMAC_KEY_BASE64 AAAA\n", 32, 3},
		{"single", "# comment\niydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY=\n", 32, 0},
		{"passphrase", "KEY   my secret pass\nHMAC_KEY other\n", 14, 5},
		{"bad base64", "KEY_BASE64 !!!\n", -1, 0},
		{"no key", "HMAC_KEY_BASE64 AAAA\n", -1, 0},
		{"other line", "SOURCE ANY\nKEY x\n", -1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, h, err := ParseFwknopKeyFile([]byte(tc.data))
			if tc.key < 0 {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil || len(k) != tc.key || len(h) != tc.hmacKey {
				t.Errorf("got %d, %d, %v; want %d, %d", len(k), len(h), err, tc.key, tc.hmacKey)
			}
		})
	}
}

func fmtValue(v any) string { return fmt.Sprintf("%+v\n%#v", v, v) }

// marker stands for a secret in a malformed key file (not valid base64: it has a '-').
const marker = "MARKER-s3cr3t"

// secretKeyFiles are malformed key files that hold marker, each where a parser could echo it.
var secretKeyFiles = []struct{ name, data string }{
	{"passphrase alone", marker + " with spaces\n"},
	{"word alone", marker + "\n"},
	{"colon", marker + ": x\n"},
	{"tab", marker + "\tKEY\n"},
	{"stray line", "KEY_BASE64 iydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY=\n" + marker + "\n"},
	{"stray line with value", "KEY x\n" + marker + " y\n"},
	{"bad base64", "KEY_BASE64 " + marker + "\n"},
	{"bad base64 with colon", "KEY_BASE64: " + marker + "\n"},
	{"bad hmac base64", "KEY x\nHMAC_KEY_BASE64 " + marker + "\n"},
	{"bad digest", "KEY x\nHMAC_DIGEST_TYPE " + marker + "\n"},
	{"bad mode", "KEY x\nENCRYPTION_MODE " + marker + "\n"},
	{"sesame shared key", "sesame-shared-v1 " + marker + "\n"},
	{"sesame private key", "# k\nsesame-priv-v1 " + marker + "\n"},
	{"two words", "# comment\n" + marker + " " + marker + "\n"},
}

// TestSPAConfigKeyFileErrorsKeepSecrets: a malformed key file, in every place the
// configuration names one, gives an error that quotes none of its content.
func TestSPAConfigKeyFileErrorsKeepSecrets(t *testing.T) {
	dir, _ := spaKeys(t)
	places := map[string]string{
		"native key_file":      "[spa]\n[[spa.client]]\nname = \"a\"\nkey_file = \"bad.key\"\nopen = [\"tcp/22\"]\n",
		"fwknop key_file":      "[spa]\n[[spa.client]]\nname = \"a\"\nformat = \"fwknop\"\nkey_file = \"bad.key\"\nopen = [\"tcp/22\"]\n",
		"fwknop hmac_key_file": "[spa]\n[[spa.client]]\nname = \"a\"\nformat = \"fwknop\"\nkey_file = \"fwknop.key\"\nhmac_key_file = \"bad.key\"\nopen = [\"tcp/22\"]\n",
		"server_key_file":      "[spa]\nserver_key_file = \"bad.key\"\n[[spa.client]]\nname = \"a\"\nkey_file = \"alice.key\"\nopen = [\"tcp/22\"]\n",
	}
	for _, kf := range secretKeyFiles {
		for place, src := range places {
			t.Run(kf.name+"/"+place, func(t *testing.T) {
				if err := os.WriteFile(filepath.Join(dir, "bad.key"), []byte(kf.data), 0o600); err != nil {
					t.Fatal(err)
				}
				_, err := Parse(filepath.Join(dir, "s.toml"), []byte(src))
				if err == nil {
					t.Fatal("a malformed key file was accepted")
				}
				if strings.Contains(err.Error(), marker) || strings.Contains(err.Error(), "s3cr3t") {
					t.Errorf("the error quotes the key file: %v", err)
				}
			})
		}
		t.Run(kf.name+"/ParseFwknopKeyFile", func(t *testing.T) {
			_, _, err := ParseFwknopKeyFile([]byte(kf.data))
			if err != nil && strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("the error quotes the key file: %v", err)
			}
		})
	}
}

// TestSPAConfigKeyFileSyntax: the server reads the key files the client reads (one grammar,
// fwknop.ParseKeyFile): fwknop --key-gen's "NAME: value" lines too.
func TestSPAConfigKeyFileSyntax(t *testing.T) {
	const key, hmacKey = "iydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY=", "kRzlTYr0K1R4pc+Vy2hRIOY3ggfgSjsrylbO/9g/VZA9FfhU8R+Xg2cTnNTw+PAyHyeCQL1G64J++Gr4cPhpmg=="
	tests := []struct {
		name, keyFile, hmacFile string
		key, hmac               int // lengths
		err                     string
	}{
		{"sesame keygen", "KEY_BASE64          " + key + "\nHMAC_KEY_BASE64     " + hmacKey + "\n", "", 32, 64, ""},
		{"fwknop --key-gen", "KEY_BASE64: " + key + "\nHMAC_KEY_BASE64: " + hmacKey + "\n", "", 32, 64, ""},
		{"rijndael names", "KEY_RIJNDAEL_BASE64 " + key + "\n", "", 32, 0, ""},
		{"one key each", key + "\n", hmacKey + "\n", 32, 64, ""},
		{"hmac file of lines", key + "\n", "HMAC_KEY_BASE64 " + hmacKey + "\n", 32, 64, ""},
		{"hmac file with only KEY", key + "\n", "KEY_BASE64 " + hmacKey + "\n", 32, 64, ""},
		{"digest in key file", "KEY_BASE64 " + key + "\nHMAC_DIGEST_TYPE sha512\n", "", 0, 0, "HMAC_DIGEST_TYPE and ENCRYPTION_MODE are set in the configuration"},
		{"placeholder", "KEY_BASE64 __CHANGEME__\n", "", 0, 0, "placeholder __CHANGEME__"},
		{"hmac file without key", key + "\n", "HMAC_DIGEST_TYPE sha256\n", 0, 0, "HMAC_DIGEST_TYPE and ENCRYPTION_MODE"},
		{"empty value", "KEY_BASE64\nHMAC_KEY x\n", "", 0, 0, "line 1: KEY_BASE64: no value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := "[spa]\n[[spa.client]]\nname = \"a\"\nformat = \"fwknop\"\nkey_file = \"k\"\nopen = [\"tcp/22\"]\n"
			if err := os.WriteFile(filepath.Join(dir, "k"), []byte(tc.keyFile), 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.hmacFile != "" {
				src += "hmac_key_file = \"h\"\n"
				if err := os.WriteFile(filepath.Join(dir, "h"), []byte(tc.hmacFile), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg, err := Parse(filepath.Join(dir, "s.toml"), []byte(src))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k := cfg.SPA.Clients[0].Fwknop; len(k.Key) != tc.key || len(k.HMACKey) != tc.hmac {
				t.Errorf("key %d, hmac %d bytes; want %d, %d", len(k.Key), len(k.HMACKey), tc.key, tc.hmac)
			}
		})
	}
}

// TestSPAConfigWarnsWithoutHMAC: an fwknop client without an HMAC key is accepted with a warning
// (its packets are not authenticated before decryption); one with a key gets none.
func TestSPAConfigWarnsWithoutHMAC(t *testing.T) {
	dir, _ := spaKeys(t)
	client := "[spa]\n[[spa.client]]\nname = \"a\"\nformat = \"fwknop\"\nopen = [\"tcp/22\"]\nkey_file = "
	for _, tc := range []struct {
		key  string
		warn bool
	}{{`"fwknop.key"`, true}, {`"fwknop.keys"`, false}, {"\"fwknop.key\"\nhmac_key_file = \"fwknop.hmac\"", false}} {
		cfg, err := Parse(filepath.Join(dir, "s.toml"), []byte(client+tc.key+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(cfg.SPA.Warnings, "\n")
		if strings.Contains(got, `spa client "a": no HMAC key`) != tc.warn {
			t.Errorf("key_file = %s: warnings %q, want a no-HMAC warning: %v", tc.key, got, tc.warn)
		}
	}
}

// TestStealthSniffsSPA: a stealth gate reads SPA from the capture, so the SPA port answers like
// a closed one (closed) or not at all (dark) instead of open|filtered; off keeps the socket.
func TestStealthSniffsSPA(t *testing.T) {
	dir, _ := spaKeys(t)
	for _, tc := range []struct {
		server string
		sniff  bool
	}{
		{"", true},
		{"stealth = \"closed\"\n", true},
		{"stealth = \"dark\"\n", true},
		{"stealth = \"off\"\n", false},
	} {
		src := "[server]\n" + tc.server + strings.ReplaceAll(issueSPA, "DIR", dir)
		cfg, err := Parse(filepath.Join(dir, "sesame.toml"), []byte(src))
		if err != nil {
			t.Fatalf("%q: %v", tc.server, err)
		}
		if cfg.SPA.Sniff != tc.sniff {
			t.Errorf("%q: sniff = %v, want %v", tc.server, cfg.SPA.Sniff, tc.sniff)
		}
	}
}
