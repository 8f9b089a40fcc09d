package fwknop

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

const (
	testKeyB64  = "iydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY="
	testHMACB64 = "kRzlTYr0K1R4pc+Vy2hRIOY3ggfgSjsrylbO/9g/VZA9FfhU8R+Xg2cTnNTw+PAyHyeCQL1G64J++Gr4cPhpmg=="
)

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseAccessLive(t *testing.T) {
	tests := []struct {
		file  string
		check func(t *testing.T, s AccessStanza)
	}{
		{"access.conf", func(t *testing.T, s AccessStanza) {
			if s.FWAccessTimeout != 10*time.Second || s.MaxFWTimeout != time.Minute {
				t.Errorf("timeouts %v %v", s.FWAccessTimeout, s.MaxFWTimeout)
			}
		}},
		{"access-cmd.conf", func(t *testing.T, s AccessStanza) {
			if !s.EnableCmdExec || s.MaxFWTimeout != DefaultMaxFWTimeout {
				t.Errorf("cmd exec %v max %v", s.EnableCmdExec, s.MaxFWTimeout)
			}
		}},
		{"access-nft.conf", func(t *testing.T, s AccessStanza) {
			if !strings.HasPrefix(s.CmdCycleOpen, "/usr/sbin/nft add element inet fwk allow { $IP") || s.CmdCycleTimer != 5*time.Second ||
				!strings.Contains(s.CmdCycleClose, "delete element") {
				t.Errorf("cmd cycle %q %q %v", s.CmdCycleOpen, s.CmdCycleClose, s.CmdCycleTimer)
			}
		}},
	}
	v01 := loadVectors(t)["v01_access_default"]
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			st, err := ParseAccess(tc.file, readFile(t, "testdata/live/"+tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if len(st) != 1 || !st[0].SourceAny || st[0].Line != 1 {
				t.Fatalf("stanzas %+v", st)
			}
			tc.check(t, st[0])
			// The parsed keys decode the real client's packet.
			if _, err := Decode([]byte(v01["packet"]), st[0].Keys); err != nil {
				t.Fatalf("decode v01 with parsed keys: %v", err)
			}
		})
	}
}

func TestParseAccessFull(t *testing.T) {
	conf := `# two stanzas
SOURCE              192.0.2.0/24, 198.51.100.7, 2001:db8::/32
DESTINATION         ANY
OPEN_PORTS          tcp/22, udp/53
RESTRICT_PORTS      tcp/23
KEY                 fwknoptest
HMAC_KEY            hmacpass123
HMAC_DIGEST_TYPE    SHA512
ENCRYPTION_MODE     CBC
FW_ACCESS_TIMEOUT   15
MAX_FW_TIMEOUT      120
REQUIRE_USERNAME    alice
REQUIRE_SOURCE_ADDRESS Y
ACCESS_EXPIRE       12/31/2030
GPG_REMOTE_ID       ABCD1234

source any
key_base64 ` + testKeyB64 + `
REQUIRE_SOURCE      N
ACCESS_EXPIRE_EPOCH 1900000000
`
	st, err := ParseAccess("access.conf", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 {
		t.Fatalf("got %d stanzas", len(st))
	}
	a := st[0]
	wantSrc := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.7/32"), netip.MustParsePrefix("2001:db8::/32")}
	if a.SourceAny || !slices.Equal(a.Source, wantSrc) || a.Destination != nil {
		t.Errorf("source %v dest %v", a.Source, a.Destination)
	}
	if !slices.Equal(a.OpenPorts, []netport.Port{{Proto: netport.TCP, Num: 22}, {Proto: netport.UDP, Num: 53}}) ||
		!slices.Equal(a.RestrictPorts, []netport.Port{{Proto: netport.TCP, Num: 23}}) {
		t.Errorf("ports %v %v", a.OpenPorts, a.RestrictPorts)
	}
	if string(a.Keys.Key) != "fwknoptest" || string(a.Keys.HMACKey) != "hmacpass123" || a.Keys.HMACDigest != DigestSHA512 || a.Keys.EncryptionMode != ModeCBC {
		t.Errorf("keys wrong")
	}
	if a.FWAccessTimeout != 15*time.Second || a.MaxFWTimeout != 2*time.Minute || a.RequireUsername != "alice" || !a.RequireSourceAddress {
		t.Errorf("options %+v", a)
	}
	if !a.AccessExpire.Equal(time.Date(2030, 12, 31, 0, 0, 0, 0, time.UTC)) || a.Other["GPG_REMOTE_ID"] != "ABCD1234" {
		t.Errorf("expire %v other %v", a.AccessExpire, a.Other)
	}
	b := st[1]
	if !b.SourceAny || len(b.Keys.Key) != 32 || b.Keys.HMACKey != nil || b.RequireSourceAddress || b.AccessExpire.Unix() != 1900000000 || b.Line != 17 {
		t.Errorf("second stanza %+v", b)
	}
}

func TestParseAccessErrors(t *testing.T) {
	tests := []struct {
		name, conf, want string
	}{
		{"before source", "KEY x\n", "access.conf:1: KEY: option before the first SOURCE"},
		{"unknown", "SOURCE ANY\nKEY x\nBOGUS 1\n", "access.conf:3: unknown option"},
		{"bad b64 key", "SOURCE ANY\nKEY_BASE64 sekrit!!\n", "access.conf:2: KEY_BASE64: not valid base64"},
		{"bad hmac b64", "SOURCE ANY\nKEY x\nHMAC_KEY_BASE64 sekrit!!\n", "access.conf:3: HMAC_KEY_BASE64: not valid base64"},
		{"same keys", "SOURCE ANY\nKEY sekrit\nHMAC_KEY sekrit\n", "access.conf:1: SOURCE: encryption and HMAC keys are identical"},
		{"no key", "SOURCE ANY\nOPEN_PORTS tcp/22\n", "access.conf:1: SOURCE: stanza has no KEY"},
		{"bad port", "SOURCE ANY\nKEY x\nOPEN_PORTS tcp/0\n", "access.conf:3: OPEN_PORTS:"},
		{"bad source", "SOURCE 10.0.0.300\n", "access.conf:1: SOURCE: bad address"},
		{"bad timeout", "SOURCE ANY\nKEY x\nFW_ACCESS_TIMEOUT -1\n", "access.conf:3: FW_ACCESS_TIMEOUT: want a number of seconds"},
		{"bad mode", "SOURCE ANY\nKEY x\nENCRYPTION_MODE PCBC\n", "access.conf:3: ENCRYPTION_MODE: unsupported"},
		{"include", "%include /etc/x\n", "access.conf:1: %include: includes are not supported"},
		{"empty", "# nothing\n", "no SOURCE stanza"},
		{"key too long", "SOURCE ANY\nKEY " + strings.Repeat("s", 33) + "\n", "encryption key longer than 32 bytes"},
		{"legacy hmac", "SOURCE ANY\nKEY x\nHMAC_KEY y\nENCRYPTION_MODE legacy\n", "legacy encryption mode is incompatible"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseAccess("access.conf", []byte(tc.conf))
			if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "sekrit") {
				t.Fatal("error leaks key material")
			}
		})
	}
}

func TestParseServerConfLive(t *testing.T) {
	tests := []struct {
		file  string
		check func(t *testing.T, c *ServerConf)
	}{
		{"fwknopd.conf", func(t *testing.T, c *ServerConf) {
			if c.PCAPIntf != "veth-fs" || c.PCAPFilter != "udp port 62201" || c.PCAPPort != 62201 || c.PCAPProto != netport.UDP ||
				c.EnableUDPServer || c.MaxSPAPacketAge != 2*time.Minute || !c.EnableSPAPacketAging || c.RunDir != "/tmp/fwklive/run" ||
				c.Other["FLUSH_IPT_AT_INIT"] != "Y" {
				t.Errorf("%+v", c)
			}
		}},
		{"fwknopd-udp.conf", func(t *testing.T, c *ServerConf) {
			if !c.EnableUDPServer || c.UDPServPort != 62201 || !c.EnableDigestPersistence || c.PCAPIntf != "eth0" {
				t.Errorf("%+v", c)
			}
		}},
		{"fwknopd-nat.conf", func(t *testing.T, c *ServerConf) {
			if !c.EnableIPTForwarding || !c.EnableIPTLocalNAT || c.FWAccessTimeout != DefaultFWAccessTimeout {
				t.Errorf("%+v", c)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			c, err := ParseServerConf(tc.file, readFile(t, "testdata/live/"+tc.file))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestParseServerConfErrors(t *testing.T) {
	tests := []struct{ conf, want string }{
		{"UDPSERV_PORT 0;\n", "fwknopd.conf:1: UDPSERV_PORT:"},
		{"ENABLE_UDP_SERVER maybe;\n", "fwknopd.conf:1: ENABLE_UDP_SERVER: want Y or N"},
		{"\nMAX_SPA_PACKET_AGE x;\n", "fwknopd.conf:2: MAX_SPA_PACKET_AGE: want a number of seconds"},
		{"PCAP_INTF\n", "fwknopd.conf:1: PCAP_INTF: missing value"},
	}
	for _, tc := range tests {
		_, err := ParseServerConf("fwknopd.conf", []byte(tc.conf))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.conf, err, tc.want)
		}
	}
	for filter, want := range map[string]uint16{"udp dst port 40000": 40000, "udp port 1 or udp port 2": 0, "udp portrange 1-2": 0, "tcp port 62201": 62201} {
		if _, p := filterPort(filter); p != want {
			t.Errorf("filterPort(%q) = %d, want %d", filter, p, want)
		}
	}
	for _, tc := range []struct {
		filter string
		proto  netport.Proto
		port   uint16
		icmp   bool
	}{
		{"udp port 62201", netport.UDP, 62201, false},
		{"icmp", 0, 0, true},
		{"ICMP", 0, 0, true},
		{"udp port 62201 or icmp", netport.UDP, 62201, true},
		{"icmp or udp dst port 40000", netport.UDP, 40000, true},
		{"(udp port 62201) or (icmp)", netport.UDP, 62201, true},
		{"udp port 62201 or ip proto icmp", netport.UDP, 62201, true},
		{"icmp or icmp", 0, 0, false},
		{"udp port 1 or udp port 2", 0, 0, false},
		{"udp port 1 or icmp or icmp6", 0, 0, false},
		{"icmp6", 0, 0, false},
		{"icmp and src host 192.0.2.1", 0, 0, false},
	} {
		proto, port, icmp := parseFilter(tc.filter)
		if proto != tc.proto || port != tc.port || icmp != tc.icmp {
			t.Errorf("parseFilter(%q) = %v %d %v, want %v %d %v", tc.filter, proto, port, icmp, tc.proto, tc.port, tc.icmp)
		}
	}
}

func TestParseRC(t *testing.T) {
	st, err := ParseRC(".fwknoprc", readFile(t, "testdata/fwknoprc"))
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 3 || st[0].Name != "default" || st[1].Name != "myserver" || st[2].Name != "nat" {
		t.Fatalf("stanzas %+v", st)
	}
	if st[0].DigestType != DigestSHA256 || st[0].SPAServerProto != "udp" {
		t.Errorf("default %+v", st[0])
	}
	m := st[1]
	if m.SPAServer != "203.0.113.10" || m.SPAServerPort != 62201 || m.AllowIP != "source" || m.FWTimeout != time.Minute ||
		!m.UseHMAC || m.SpoofUser != "alice" || len(m.Keys.Key) != 32 || len(m.Keys.HMACKey) != 64 || m.Keys.HMACDigest != DigestSHA256 ||
		!slices.Equal(m.Access, []netport.Port{{Proto: netport.TCP, Num: 22}, {Proto: netport.UDP, Num: 53}}) {
		t.Errorf("myserver %+v", m)
	}
	n := st[2]
	if n.NATAccess != "192.168.10.5,22" || string(n.Keys.Key) != "fwknoptest" || n.AllowIP != "resolve" || n.Other["RESOLVE_URL"] != "https://ip.example.net/" {
		t.Errorf("nat %+v", n)
	}
	// A packet built from the rc stanza decodes with the server's access.conf keys.
	acc, err := ParseAccess("access.conf", readFile(t, "testdata/live/access.conf"))
	if err != nil {
		t.Fatal(err)
	}
	msg := &Message{User: m.SpoofUser, Timestamp: time.Unix(1795302428, 0), Type: TypeAccess, AllowIP: netip.IPv4Unspecified(), Ports: m.Access, ClientTimeout: m.FWTimeout}
	wire, err := Encode(msg, m.Keys, zeroReader{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Decode(wire, acc[0].Keys); err != nil || got.Type != TypeClientTimeoutAccess {
		t.Fatalf("decode: %v %+v", err, got)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestParseRCErrors(t *testing.T) {
	tests := []struct{ rc, want string }{
		{"SPA_SERVER x\n", ".fwknoprc:1: SPA_SERVER: variable outside a [stanza]"},
		{"[a\n", ".fwknoprc:1: bad section header"},
		{"[a]\nKEY_BASE64 sekrit!!\n", ".fwknoprc:2: KEY_BASE64: invalid value"},
		{"[a]\nACCESS tcp/99999\n", ".fwknoprc:2: ACCESS:"},
		{"[a]\nbad-name 1\n", ".fwknoprc:2: not a variable name"},
	}
	for _, tc := range tests {
		_, err := ParseRC(".fwknoprc", []byte(tc.rc))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "sekrit") {
			t.Errorf("%q: err = %v, want %q", tc.rc, err, tc.want)
		}
	}
}

func FuzzParseAccess(f *testing.F) {
	for _, n := range []string{"access.conf", "access-cmd.conf", "access-nft.conf"} {
		f.Add(readFile(f, "testdata/live/"+n))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseAccess("f", data)
		if err == nil && len(st) == 0 {
			t.Fatal("no stanzas and no error")
		}
	})
}

func FuzzParseServerConf(f *testing.F) {
	for _, n := range []string{"fwknopd.conf", "fwknopd-udp.conf", "fwknopd-nat.conf"} {
		f.Add(readFile(f, "testdata/live/"+n))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseServerConf("f", data)
		if err == nil && c == nil {
			t.Fatal("nil conf")
		}
	})
}

func FuzzParseRC(f *testing.F) {
	f.Add(readFile(f, "testdata/fwknoprc"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = ParseRC("f", data)
	})
}

func TestKeysNotPrinted(t *testing.T) {
	st, err := ParseAccess("access.conf", []byte("SOURCE ANY\nKEY sekritkey\nHMAC_KEY sekrithmac\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprint(st), fmt.Sprintf("%+v", st[0]), fmt.Sprintf("%#v", st[0]), fmt.Sprintf("%v", st[0].Keys)} {
		if strings.Contains(s, "sekrit") || strings.Contains(s, "115 101 107") || !strings.Contains(s, "redacted") {
			t.Errorf("keys printed: %s", s)
		}
	}
}

// marker stands for a secret: the errors of files that hold keys never quote it.
const marker = "MARKER-s3cr3t"

func TestConfErrorsKeepSecrets(t *testing.T) {
	tests := []struct {
		name  string
		parse func([]byte) error
		data  string
	}{
		{"access: stray word", access, "SOURCE ANY\nKEY x\n" + marker + "\n"},
		{"access: stray line", access, "SOURCE ANY\nKEY x\n" + marker + " more words\n"},
		{"access: stray colon", access, "SOURCE ANY\nKEY x\n" + marker + ": y\n"},
		{"access: before SOURCE", access, marker + "\nSOURCE ANY\nKEY x\n"},
		{"access: before SOURCE with value", access, marker + " x\nSOURCE ANY\nKEY x\n"},
		{"access: bad base64", access, "SOURCE ANY\nKEY_BASE64 " + marker + "\n"},
		{"access: bad hmac base64", access, "SOURCE ANY\nKEY x\nHMAC_KEY_BASE64 " + marker + "\n"},
		{"access: key too long", access, "SOURCE ANY\nKEY " + marker + strings.Repeat("x", 32) + "\n"},
		{"fwknoprc: stray word", rc, "[a]\nKEY x\n" + marker + "\n"},
		{"fwknoprc: stray colon", rc, "[a]\n" + marker + ": x\n"},
		{"fwknoprc: outside a stanza", rc, marker + " x\n[a]\n"},
		{"fwknoprc: bad base64", rc, "[a]\nHMAC_KEY_BASE64 " + marker + "\n"},
		{"fwknopd.conf: stray colon", srvConf, marker + ": x;\n"},
		{"key file", keyFile, "KEY x\n" + marker + " y\n"},
		{"key file: word", keyFile, marker + "\n"},
		{"key file: stray word", keyFile, "KEY x\n" + marker + "\n"},
		{"key file: bad base64", keyFile, "KEY_BASE64: " + marker + "\n"},
		{"key file: bad digest", keyFile, "HMAC_DIGEST_TYPE " + marker + "\n"},
		{"key file: bad mode", keyFile, "ENCRYPTION_MODE " + marker + "\n"},
		{"key file: other host", keyFile, marker + ": x\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.parse([]byte(tc.data))
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("the error quotes the file: %v", err)
			}
		})
	}
}

func access(b []byte) error { _, err := ParseAccess("access.conf", b); return err }
func rc(b []byte) error     { _, err := ParseRC(".fwknoprc", b); return err }
func srvConf(b []byte) error {
	_, err := ParseServerConf("fwknopd.conf", b)
	return err
}
func keyFile(b []byte) error { _, err := ParseKeyFile(b, "192.0.2.7"); return err }

// TestParseAccessPlaceholder: the access.conf that Debian's fwknop-server ships holds
// KEY_BASE64 and HMAC_KEY_BASE64 __CHANGEME__.
func TestParseAccessPlaceholder(t *testing.T) {
	for _, conf := range []string{
		"SOURCE              ANY\nKEY_BASE64          __CHANGEME__\nHMAC_KEY_BASE64     __CHANGEME__\n",
		"SOURCE ANY\nKEY __CHANGEME__\n",
		"SOURCE ANY\nKEY x\nHMAC_KEY __CHANGEME__\n",
	} {
		_, err := ParseAccess("access.conf", []byte(conf))
		if err == nil || !strings.Contains(err.Error(), "placeholder __CHANGEME__") || !strings.Contains(err.Error(), "`sesame keygen --fwknop`") {
			t.Errorf("%q: err = %v", conf, err)
		}
	}
}

func TestParseKeyFile(t *testing.T) {
	const key, hmacKey = "iydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY=", "kRzlTYr0K1R4pc+Vy2hRIOY3ggfgSjsrylbO/9g/VZA9FfhU8R+Xg2cTnNTw+PAyHyeCQL1G64J++Gr4cPhpmg=="
	tests := []struct {
		name, data      string
		key, hmac, bare string // what is set, as text
		digest          Digest
		mode            Mode
		err             string
	}{
		{"sesame keygen", "# c\nKEY_BASE64          " + key + "\nHMAC_KEY_BASE64     " + hmacKey + "\n", "b64:" + key, "b64:" + hmacKey, "", 0, 0, ""},
		{"fwknop --key-gen", "KEY_BASE64: " + key + "\nHMAC_KEY_BASE64: " + hmacKey + "\n", "b64:" + key, "b64:" + hmacKey, "", 0, 0, ""},
		{"passphrases", "KEY   my pass:word\nHMAC_KEY other\n", "my pass:word", "other", "", 0, 0, ""},
		{"rijndael names", "KEY_RIJNDAEL p\nkey_rijndael_base64 " + key + "\n", "b64:" + key, "", "", 0, 0, ""},
		{"bare", "\n# c\n" + key + "\n", "", "", "b64:" + key, 0, 0, ""},
		{"host", "192.0.2.7: pass:word\n", "pass:word", "", "", 0, 0, ""},
		{"digest and mode", "KEY p\nHMAC_DIGEST_TYPE sha512\nENCRYPTION_MODE cbc\nUSE_HMAC Y\n", "p", "", "", DigestSHA512, ModeCBC, ""},
		{"bad bare", "!!!\n", "", "", "", 0, 0, "line 1: not valid base64"},
		{"bad base64", "KEY x\nKEY_BASE64 !!!\n", "", "", "", 0, 0, "line 2: KEY_BASE64: not valid base64"},
		{"no value", "KEY\nHMAC_KEY x\n", "", "", "", 0, 0, "line 1: KEY: no value"},
		{"unknown", "KEY x\nSOURCE ANY\n", "", "", "", 0, 0, "line 2: unknown setting"},
		{"placeholder", "KEY_BASE64 __CHANGEME__\n", "", "", "", 0, 0, "placeholder __CHANGEME__"},
	}
	text := func(b []byte, want string) string {
		if strings.HasPrefix(want, "b64:") {
			return "b64:" + base64.StdEncoding.EncodeToString(b)
		}
		return string(b)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kf, err := ParseKeyFile([]byte(tc.data), "192.0.2.7")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if text(kf.Key, tc.key) != tc.key || text(kf.HMACKey, tc.hmac) != tc.hmac || text(kf.Bare, tc.bare) != tc.bare ||
				kf.HMACDigest != tc.digest || kf.EncryptionMode != tc.mode {
				t.Errorf("got %+v", kf)
			}
		})
	}
}
