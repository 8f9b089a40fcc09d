package spaclient

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/spa"
)

// The test keys of the fwknop reference vectors (LIVE.md); not secret.
const (
	testKeyB64  = "iydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY="
	testHMACB64 = "kRzlTYr0K1R4pc+Vy2hRIOY3ggfgSjsrylbO/9g/VZA9FfhU8R+Xg2cTnNTw+PAyHyeCQL1G64J++Gr4cPhpmg=="
)

// bed is a temporary HOME with sesame and fwknop keys and profiles.
type bed struct {
	dir              string
	shared           spa.SharedKey
	clientPair, srv  *spa.KeyPair
	sharedKey, priv  string // key file paths
	serverPub, fwKey string
	config, rc       string
}

func write(t *testing.T, path, data string, mode os.FileMode) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func newBed(t *testing.T) *bed {
	t.Helper()
	b := &bed{dir: t.TempDir()}
	t.Setenv("HOME", b.dir)
	t.Setenv("XDG_CONFIG_HOME", "")
	var err error
	if b.shared, err = spa.GenerateSharedKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	if b.clientPair, err = spa.GeneratePair(rand.Reader); err != nil {
		t.Fatal(err)
	}
	if b.srv, err = spa.GeneratePair(rand.Reader); err != nil {
		t.Fatal(err)
	}
	txt := func(m interface{ MarshalText() ([]byte, error) }) string {
		s, _ := m.MarshalText()
		return string(s) + "\n"
	}
	b.sharedKey = write(t, filepath.Join(b.dir, "keys", "alice.key"), txt(b.shared), 0o600)
	b.priv = write(t, filepath.Join(b.dir, "keys", "bob"), txt(b.clientPair), 0o600)
	b.serverPub = write(t, filepath.Join(b.dir, "keys", "server.pub"), txt(b.srv.Public()), 0o644)
	b.fwKey = write(t, filepath.Join(b.dir, "keys", "fw.keys"), "# comment\nKEY_BASE64: "+testKeyB64+"\nHMAC_KEY_BASE64 "+testHMACB64+"\n", 0o600)
	b.config = write(t, filepath.Join(b.dir, ".config", "sesame", "client.toml"), `
[profile.home]
server = "192.0.2.7"
id = "alice"
key_file = "~/keys/alice.key"
access = ["tcp/22", "udp/53"]
allow = "198.51.100.4"
open_for = 45

[profile.pair]
server = "192.0.2.8"
port = 6000
id = "bob"
key_file = "../../keys/bob"
server_key = "~/keys/server.pub"
access = ["tcp/443"]
allow = "source"
open_for = "2m"

[profile.fw]
server = "192.0.2.9"
format = "fwknop"
id = "carol"
key_file = "~/keys/fw.keys"
access = ["tcp/22"]
`, 0o644)
	b.rc = write(t, filepath.Join(b.dir, ".fwknoprc"), `[default]
HMAC_DIGEST_TYPE    SHA256
SPA_SERVER_PORT     62201
FW_TIMEOUT          30

[office]
SPA_SERVER          198.18.0.1
ACCESS              tcp/22
ALLOW_IP            source
KEY_BASE64          `+testKeyB64+`
HMAC_KEY_BASE64     `+testHMACB64+`
USE_HMAC            Y
SPOOF_USER          dave

[filekeys]
SPA_SERVER          198.18.0.1
ACCESS              tcp/2222
ALLOW_IP            203.0.113.5
KEY_FILE            `+filepath.Join(b.dir, "keys", "fw.keys")+`

[nat]
SPA_SERVER          198.18.0.1
ACCESS              tcp/22
NAT_ACCESS          192.168.1.2,22
KEY_BASE64          `+testKeyB64+`

[resolve]
SPA_SERVER          198.18.0.1
ACCESS              tcp/22
ALLOW_IP            resolve
KEY_BASE64          `+testKeyB64+`
`, 0o600)
	return b
}

func (b *bed) fwKeys() fwknop.Keys {
	k, _ := base64.StdEncoding.DecodeString(testKeyB64)
	h, _ := base64.StdEncoding.DecodeString(testHMACB64)
	return fwknop.Keys{Key: k, HMACKey: h}
}

// decoded is what a server sees in a packet.
type decoded struct {
	id      string
	allow   netip.Addr // invalid: source
	ports   string
	openFor time.Duration
}

func (b *bed) decode(t *testing.T, r *Request) decoded {
	t.Helper()
	now := time.Now()
	pkt, err := r.Packet(now, rand.Reader)
	if err != nil {
		t.Fatalf("Packet: %v", err)
	}
	ports := func(ps []netport.Port) string {
		var s []string
		for _, p := range ps {
			s = append(s, p.String())
		}
		return strings.Join(s, ",")
	}
	if r.Format == FormatFwknop {
		m, err := fwknop.Decode(pkt, b.fwKeys())
		if err != nil {
			t.Fatalf("fwknop.Decode: %v", err)
		}
		d := decoded{id: m.User, ports: ports(m.Ports), openFor: m.ClientTimeout}
		if !m.FromSource() {
			d.allow = m.AllowIP
		}
		return d
	}
	sc, err := spa.NewSharedClient("alice", b.shared)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := spa.NewPairClient("bob", b.clientPair.Public(), b.srv)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := spa.NewKeyring(sc, pc)
	if err != nil {
		t.Fatal(err)
	}
	req, err := spa.Open(pkt, ring, now, 0)
	if err != nil {
		t.Fatalf("spa.Open: %v", err)
	}
	return decoded{id: req.Client, allow: req.Addr, ports: ports(req.Ports), openFor: req.Duration}
}

func TestResolve(t *testing.T) {
	b := newBed(t)
	// route stands for the client's address on the route to the server: Open fills it in
	// (UseRoute) when the request names no address and does not ask for its source.
	route := netip.MustParseAddr("198.51.100.77")
	tests := []struct {
		name     string
		args     string
		format   Format
		host     string
		port     uint16
		want     decoded
		wantWarn bool
	}{
		{"shared flags", "192.0.2.7 -A tcp/22 --id alice --key-file " + b.sharedKey,
			FormatSesame, "192.0.2.7", 62201, decoded{id: "alice", allow: route, ports: "tcp/22"}, false},
		{"pair flags", "192.0.2.7 -A tcp/22 --id bob --key-file " + b.priv + " --server-key " + b.serverPub + " -a 2001:db8::1 -f 60",
			FormatSesame, "192.0.2.7", 62201, decoded{id: "bob", allow: netip.MustParseAddr("2001:db8::1"), ports: "tcp/22", openFor: time.Minute}, false},
		{"profile shared", "-n home",
			FormatSesame, "192.0.2.7", 62201, decoded{id: "alice", allow: netip.MustParseAddr("198.51.100.4"), ports: "tcp/22,udp/53", openFor: 45 * time.Second}, false},
		{"profile overridden", "-n home other.example -A tcp/2222 -s -f 5",
			FormatSesame, "other.example", 62201, decoded{id: "alice", ports: "tcp/2222", openFor: 5 * time.Second}, true},
		{"profile pair", "-n pair",
			FormatSesame, "192.0.2.8", 6000, decoded{id: "bob", ports: "tcp/443", openFor: 2 * time.Minute}, true},
		{"profile fwknop", "-n fw",
			FormatFwknop, "192.0.2.9", 62201, decoded{id: "carol", allow: route, ports: "tcp/22"}, false},
		{"fwknop flag and key file", "192.0.2.9 --fwknop -A tcp/22,udp/53 -a 198.51.100.9 --id erin --key-file " + b.fwKey,
			FormatFwknop, "192.0.2.9", 62201, decoded{id: "erin", allow: netip.MustParseAddr("198.51.100.9"), ports: "tcp/22,udp/53"}, false},
		{"fwknoprc stanza", "-n office",
			FormatFwknop, "198.18.0.1", 62201, decoded{id: "dave", ports: "tcp/22", openFor: 30 * time.Second}, true},
		{"fwknoprc KEY_FILE", "-n filekeys --id frank -f 9",
			FormatFwknop, "198.18.0.1", 62201, decoded{id: "frank", allow: netip.MustParseAddr("203.0.113.5"), ports: "tcp/2222", openFor: 9 * time.Second}, false},
		{"keys on command line", "198.18.0.1 -A tcp/22 -s --id gina --key-base64-rijndael " + testKeyB64 + " --key-base64-hmac " + testHMACB64,
			FormatFwknop, "198.18.0.1", 62201, decoded{id: "gina", ports: "tcp/22"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := ParseArgs(strings.Fields(tt.args))
			if err != nil {
				t.Fatal(err)
			}
			var warn bytes.Buffer
			r, err := Resolve(o, &warn)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if r.Format != tt.format || r.Host != tt.host || r.Port != tt.port {
				t.Errorf("format, host, port = %v %v %v; want %v %v %v", r.Format, r.Host, r.Port, tt.format, tt.host, tt.port)
			}
			if got := warn.Len() > 0; got != tt.wantWarn {
				t.Errorf("warning = %q, want one: %v", warn.String(), tt.wantWarn)
			}
			if err := r.UseRoute(route, netip.MustParseAddr("192.0.2.1")); err != nil {
				t.Fatalf("UseRoute: %v", err)
			}
			if got := b.decode(t, r); got != tt.want {
				t.Errorf("server decoded %+v, want %+v", got, tt.want)
			}
			for _, secret := range []string{testKeyB64, testHMACB64, "sesame-shared-v1 " + base64.StdEncoding.EncodeToString(b.shared[:])} {
				if strings.Contains(r.String(), secret) || strings.Contains(warn.String(), secret) {
					t.Errorf("a key leaked into %q / %q", r.String(), warn.String())
				}
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	b := newBed(t)
	tests := []struct {
		name    string
		args    string
		usage   bool
		wantErr string
	}{
		{"no host", "-A tcp/22 --id alice --key-file " + b.sharedKey, true, "no server"},
		{"no access", "h --id alice --key-file " + b.sharedKey, true, "nothing to open"},
		{"bad access", "h -A tcp/0 --id alice --key-file " + b.sharedKey, true, "out of range"},
		{"bad allow", "h -A tcp/22 -a nowhere --id alice --key-file " + b.sharedKey, true, "not an IP address"},
		{"no id", "h -A tcp/22 --key-file " + b.sharedKey, true, "--id"},
		{"no key", "h -A tcp/22 --id alice", true, "--key-file"},
		{"pair without server key", "h -A tcp/22 --id bob --key-file " + b.priv, true, "--server-key"},
		{"shared with server key", "h -A tcp/22 --id alice --key-file " + b.sharedKey + " --server-key " + b.serverPub, true, "drop --server-key"},
		{"public as private", "h -A tcp/22 --id alice --key-file " + b.serverPub, true, "public key"},
		{"fwknop key as sesame", "h -A tcp/22 --id alice --key-file " + b.fwKey, false, "add --fwknop"},
		{"sesame key as fwknop", "h -A tcp/22 --fwknop --key-file " + b.sharedKey, false, "unknown setting"},
		{"fwknop v6 allow", "h -A tcp/22 --fwknop -a 2001:db8::1 --key-file " + b.fwKey, true, "only IPv4"},
		{"unknown profile", "-n nosuch", false, "no profile \"nosuch\""},
		{"NAT stanza", "-n nat", false, "NAT_ACCESS"},
		{"resolve stanza", "-n resolve", false, "ALLOW_IP resolve"},
		{"missing key file", "h -A tcp/22 --id alice --key-file " + filepath.Join(b.dir, "nope"), false, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := ParseArgs(strings.Fields(tt.args))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Resolve(o, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Resolve error = %v, want %q", err, tt.wantErr)
			}
			if errors.Is(err, ErrUsage) != tt.usage {
				t.Errorf("errors.Is(%v, ErrUsage) = %v, want %v", err, !tt.usage, tt.usage)
			}
		})
	}
}

func TestKeyFilePermissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes do not describe access on Windows")
	}
	b := newBed(t)
	tests := []struct {
		name string
		file string
		args string
	}{
		{"shared key", b.sharedKey, "h -A tcp/22 --id alice --key-file " + b.sharedKey},
		{"private key", b.priv, "h -A tcp/22 --id bob --key-file " + b.priv + " --server-key " + b.serverPub},
		{"fwknop key file", b.fwKey, "h -A tcp/22 --fwknop --key-file " + b.fwKey},
		{"fwknoprc with keys", b.rc, "-n office"},
	}
	for _, tt := range tests {
		for _, mode := range []os.FileMode{0o640, 0o604, 0o620, 0o644} {
			t.Run(tt.name+"/"+mode.String(), func(t *testing.T) {
				if err := os.Chmod(tt.file, mode); err != nil {
					t.Fatal(err)
				}
				defer os.Chmod(tt.file, 0o600)
				o, err := ParseArgs(strings.Fields(tt.args))
				if err != nil {
					t.Fatal(err)
				}
				_, err = Resolve(o, io.Discard)
				if err == nil || !strings.Contains(err.Error(), "chmod 600") {
					t.Fatalf("Resolve with %s mode %v: err = %v, want a refusal", tt.file, mode, err)
				}
			})
		}
		t.Run(tt.name+"/0600", func(t *testing.T) {
			o, _ := ParseArgs(strings.Fields(tt.args))
			if _, err := Resolve(o, io.Discard); err != nil {
				t.Fatalf("mode 0600 refused: %v", err)
			}
		})
	}
	// A public key may be world-readable; an rc file without keys is not checked.
	if err := os.Chmod(b.serverPub, 0o644); err != nil {
		t.Fatal(err)
	}
	rc := write(t, filepath.Join(b.dir, "public.rc"), "[k]\nSPA_SERVER 198.18.0.1\nACCESS tcp/22\nKEY_FILE "+b.fwKey+"\n", 0o644)
	o, _ := ParseArgs([]string{"-n", "k", "--rc-file", rc})
	if _, err := Resolve(o, io.Discard); err != nil {
		t.Errorf("rc file without keys, mode 0644: %v", err)
	}
}

func TestLoadProfilesErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ name, data, want string }{
		{"unknown key", "[profile.a]\nserver = \"h\"\nkeyfile = \"x\"\n", "unknown keys profile.a.keyfile"},
		{"bad format", "[profile.a]\nformat = \"gpg\"\n", "format \"gpg\""},
		{"bad open_for", "[profile.a]\nopen_for = \"soon\"\n", "open_for"},
		{"bad port", "[profile.a]\nport = 99999\n", "out of range"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := write(t, filepath.Join(dir, tt.name+".toml"), tt.data, 0o600)
			if _, err := LoadProfiles(p); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LoadProfiles error = %v, want %q", err, tt.want)
			}
		})
	}
	if ps, err := LoadProfiles(filepath.Join(dir, "missing.toml")); err != nil || ps != nil {
		t.Errorf("missing file: %v, %v; want no profiles, no error", ps, err)
	}
}

func TestParseFwknopKeyFile(t *testing.T) {
	for _, tt := range []struct {
		name, data string
		key, hmac  string
		wantErr    string
	}{
		{"sesame keygen", "# x\nKEY_BASE64          " + testKeyB64 + "\nHMAC_KEY_BASE64     " + testHMACB64 + "\n", testKeyB64, testHMACB64, ""},
		{"fwknop -K", "KEY_BASE64: " + testKeyB64 + "\nHMAC_KEY_BASE64: " + testHMACB64 + "\n", testKeyB64, testHMACB64, ""},
		{"get-key host line", "192.0.2.7: pass:word\n", base64.StdEncoding.EncodeToString([]byte("pass:word")), "", ""},
		{"passphrase", "KEY my pass\n", base64.StdEncoding.EncodeToString([]byte("my pass")), "", ""},
		{"bad base64", "KEY_BASE64 !!!\n", "", "", "KEY_BASE64: not valid base64"},
		{"other host", "198.51.100.1: x\n", "", "", "unknown setting"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kf, err := parseFwknopKeyFile("f", []byte(tt.data), "192.0.2.7")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "!!!") {
					t.Errorf("error quotes the value: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := base64.StdEncoding.EncodeToString(kf.Key); got != tt.key {
				t.Errorf("key = %s, want %s", got, tt.key)
			}
			if got := base64.StdEncoding.EncodeToString(kf.HMACKey); got != tt.hmac {
				t.Errorf("hmac = %s, want %s", got, tt.hmac)
			}
		})
	}
}

// TestResolveICMP: --icmp, -P icmp and an rc stanza's SPA_SERVER_PROTO icmp ask for the ping
// carriage; other SPA_SERVER_PROTO values are refused.
func TestResolveICMP(t *testing.T) {
	b := newBed(t)
	rc := write(t, filepath.Join(b.dir, "icmp.rc"), "[ping]\nSPA_SERVER 198.18.0.1\nSPA_SERVER_PROTO icmp\nACCESS tcp/22\nKEY_FILE "+b.fwKey+"\n"+
		"[tcp]\nSPA_SERVER 198.18.0.1\nSPA_SERVER_PROTO tcp\nACCESS tcp/22\nKEY_FILE "+b.fwKey+"\n", 0o600)
	for _, tc := range []struct {
		args    string
		icmp    bool
		wantErr string
	}{
		{"h -A tcp/22 --id alice --key-file " + b.sharedKey, false, ""},
		{"h -A tcp/22 --id alice --key-file " + b.sharedKey + " --icmp", true, ""},
		{"h -A tcp/22 --id alice --key-file " + b.sharedKey + " -P icmp", true, ""},
		{"-n ping --rc-file " + rc, true, ""},
		{"-n tcp --rc-file " + rc, false, "SPA_SERVER_PROTO tcp is not supported"},
		{"-n ping --rc-file " + rc + " -S 4000", false, "a ping has no port"},
	} {
		o, err := ParseArgs(strings.Fields(tc.args))
		if err != nil {
			t.Fatal(err)
		}
		r, err := Resolve(o, io.Discard)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err = %v, want %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.args, err)
		}
		if r.ICMP != tc.icmp {
			t.Errorf("%s: ICMP = %v, want %v", tc.args, r.ICMP, tc.icmp)
		}
	}
}

// TestResolveSourcePort: --source-port, or a stanza's SPA_SOURCE_PORT under it, is the port the
// request is sent from.
func TestResolveSourcePort(t *testing.T) {
	b := newBed(t)
	rc := write(t, filepath.Join(b.dir, "sport.rc"), "[default]\nSPA_SOURCE_PORT 40000\n[s]\nSPA_SERVER 198.18.0.1\nACCESS tcp/22\nKEY_FILE "+b.fwKey+"\n", 0o600)
	for _, tc := range []struct {
		args string
		want uint16
	}{
		{"h -A tcp/22 --id alice --key-file " + b.sharedKey, 0},
		{"h -A tcp/22 --id alice --key-file " + b.sharedKey + " --source-port 45000", 45000},
		{"-n s --rc-file " + rc, 40000},
		{"-n s --rc-file " + rc + " -S 41000", 41000},
	} {
		o, err := ParseArgs(strings.Fields(tc.args))
		if err != nil {
			t.Fatal(err)
		}
		r, err := Resolve(o, io.Discard)
		if err != nil {
			t.Fatalf("%s: %v", tc.args, err)
		}
		if r.SourcePort != tc.want {
			t.Errorf("%s: source port %d, want %d", tc.args, r.SourcePort, tc.want)
		}
	}
}
