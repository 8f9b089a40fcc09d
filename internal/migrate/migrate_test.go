package migrate

import (
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// sample is a legacy configuration in testdata/: a knockd.conf, or an fwknopd directory.
type sample struct {
	name   string // testdata/NAME.knockd.conf or testdata/NAME/, golden testdata/NAME.toml
	fwknop bool
	ov     config.Overrides // sesame migrate --firewall
}

var samples = []sample{
	{name: "commands"},
	{name: "open", ov: config.Overrides{Firewall: config.FirewallNftables}},
	{name: "fwknop-udp", fwknop: true},
	{name: "fwknop-sniff", fwknop: true},
	{name: "fwknop-icmp", fwknop: true},
	{name: "fwknop-nftables", fwknop: true, ov: config.Overrides{Firewall: config.FirewallNftables}},
}

// run migrates a sample with its keys in keysDir.
func (s sample) run(t *testing.T, keysDir string) *Result {
	t.Helper()
	var res *Result
	var err error
	if s.fwknop {
		dir := filepath.Join("testdata", s.name)
		srv, rerr := os.ReadFile(filepath.Join(dir, "fwknopd.conf"))
		if rerr != nil {
			t.Fatal(rerr)
		}
		res, err = Fwknop(dir, srv, read(t, filepath.Join(dir, "access.conf")), keysDir, s.ov)
	} else {
		path := filepath.Join("testdata", s.name+".knockd.conf")
		res, err = Knockd(path, read(t, path), s.ov)
	}
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGolden: the migrated text of each sample is the one in testdata (go test -update
// rewrites them).
func TestGolden(t *testing.T) {
	for _, s := range samples {
		t.Run(s.name, func(t *testing.T) {
			res := s.run(t, "/etc/sesame/clients")
			golden := filepath.Join("testdata", s.name+".toml")
			if *update {
				if err := os.WriteFile(golden, res.TOML, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if want := read(t, golden); !bytes.Equal(res.TOML, want) {
				t.Errorf("migrated %s differs from %s:\n%s", s.name, golden, res.TOML)
			}
		})
	}
}

// load writes res's key files to their places and loads its text as the server would.
func load(t *testing.T, res *Result) *config.Config {
	t.Helper()
	for _, k := range res.Keys {
		if err := os.WriteFile(k.Path, k.Data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	native, err := config.Parse(filepath.Join(t.TempDir(), "sesame.toml"), res.TOML)
	if err != nil {
		t.Fatalf("the migrated configuration does not load: %v\n%s", err, res.TOML)
	}
	return native
}

// TestRoundTrip: legacy → migrate → config.Parse gives the configuration the legacy loader
// gives, in every field that matters (Check), and in the fields named here one by one.
func TestRoundTrip(t *testing.T) {
	for _, s := range samples {
		t.Run(s.name, func(t *testing.T) {
			res := s.run(t, t.TempDir())
			native := load(t, res)
			if err := res.Check(native); err != nil {
				t.Fatal(err)
			}
			legacy := res.Legacy
			if len(native.Doors) != len(legacy.Doors) || (native.SPA == nil) != (legacy.SPA == nil) {
				t.Fatalf("doors %d, spa %v; legacy %d, %v", len(native.Doors), native.SPA != nil, len(legacy.Doors), legacy.SPA != nil)
			}
			if native.Server.Firewall != legacy.Server.Firewall || native.Server.LogFile != legacy.Server.LogFile ||
				native.Server.UseSyslog != legacy.Server.UseSyslog || native.Server.PidFile != legacy.Server.PidFile {
				t.Errorf("server %+v, legacy %+v", native.Server, legacy.Server)
			}
			for i, d := range native.Doors {
				l := legacy.Doors[i]
				if d.Timeout != l.Timeout || d.Flags != l.Flags || d.CmdTimeout != l.CmdTimeout || d.Target != l.Target ||
					d.StartCommand != l.StartCommand || d.StartCommand6 != l.StartCommand6 ||
					d.StopCommand != l.StopCommand || d.StopCommand6 != l.StopCommand6 ||
					len(d.Sequence) != len(l.Sequence) || len(d.Open) != len(l.Open) || len(d.Open) > 0 && d.OpenFor != l.OpenFor {
					t.Errorf("door %d: %+v\nlegacy: %+v", i, d, l)
				}
			}
			if native.SPA == nil {
				return
			}
			if native.SPA.Port != legacy.SPA.Port || native.SPA.Sniff != legacy.SPA.Sniff || native.SPA.MaxAge != legacy.SPA.MaxAge || native.SPA.ICMP != legacy.SPA.ICMP {
				t.Errorf("spa %d %v %v, legacy %d %v %v", native.SPA.Port, native.SPA.Sniff, native.SPA.MaxAge, legacy.SPA.Port, legacy.SPA.Sniff, legacy.SPA.MaxAge)
			}
			for i, c := range native.SPA.Clients {
				l := legacy.SPA.Clients[i]
				if !bytes.Equal(c.Fwknop.Key, l.Fwknop.Key) || !bytes.Equal(c.Fwknop.HMACKey, l.Fwknop.HMACKey) ||
					c.Fwknop.HMACDigest != l.Fwknop.HMACDigest || c.Fwknop.EncryptionMode != l.Fwknop.EncryptionMode ||
					c.DefaultOpenFor != l.DefaultOpenFor || c.MaxOpenFor != l.MaxOpenFor || c.RequireSourceAddress != l.RequireSourceAddress ||
					c.RequireUsername != l.RequireUsername || c.Format != config.SPAFormatFwknop || len(c.Sources) != len(l.Sources) {
					t.Errorf("client %d differs from the legacy one", i)
				}
			}
		})
	}
}

// TestRoundTripCases: settings the samples do not show, each in a small configuration.
func TestRoundTripCases(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, knockd, access string
	}{
		{name: "icmp and udp knocks", knockd: "[d]\nsequence = 5000:udp,6000\ncommand = true\n"},
		{name: "start_command_6 only", knockd: "[d]\nsequence = 1,2\nStart_Command =\nStart_Command_6 = echo six\n"},
		{name: "stop_command_6 only", knockd: "[d]\nsequence = 1,2\ncommand = a\nStop_Command_6 = b\n"},
		{name: "tcpflags every flag", knockd: "[d]\nsequence = 1,2\ntcpflags = fin,!syn,rst,!psh,ack,!urg\ncommand = a\n"},
		{name: "quotes and backslashes", knockd: "[d]\nsequence = 1,2\ncommand = echo \"a\\tb\" 'c' \\\\ ü\n"},
		{name: "access expire epoch", access: "SOURCE ANY\nKEY_BASE64 " + key32 + "\nHMAC_KEY_BASE64 " + hmac64 + "\nOPEN_PORTS tcp/22\nACCESS_EXPIRE_EPOCH 1900000123\n"},
		{name: "access expire date", access: "SOURCE ANY\nKEY_BASE64 " + key32 + "\nHMAC_KEY_BASE64 " + hmac64 + "\nOPEN_PORTS tcp/22\nACCESS_EXPIRE 12/31/2031\n"},
		{name: "no hmac, legacy mode", access: "SOURCE ANY\nKEY passphrase\nENCRYPTION_MODE legacy\nOPEN_PORTS tcp/22,tcp/80\n"},
		{name: "fw timeout above max", access: "SOURCE ANY\nKEY_BASE64 " + key32 + "\nHMAC_KEY_BASE64 " + hmac64 + "\nOPEN_PORTS tcp/22\nFW_ACCESS_TIMEOUT 100\nMAX_FW_TIMEOUT 50\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var res *Result
			var err error
			if tc.knockd != "" {
				res, err = Knockd(filepath.Join(dir, "knockd.conf"), []byte(tc.knockd), config.Overrides{})
			} else {
				res, err = Fwknop(dir, nil, []byte(tc.access), t.TempDir(), config.Overrides{})
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := res.Check(load(t, res)); err != nil {
				t.Fatalf("%v\n%s", err, res.TOML)
			}
		})
	}
}

const (
	key32  = "iydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY="
	hmac64 = "kRzlTYr0K1R4pc+Vy2hRIOY3ggfgSjsrylbO/9g/VZA9FfhU8R+Xg2cTnNTw+PAyHyeCQL1G64J++Gr4cPhpmg=="
)

// TestCheckCatches: Check finds a change in each field that matters, so the round trip cannot
// pass by comparing nothing.
func TestCheckCatches(t *testing.T) {
	cases := []struct {
		sample string
		field  string
		change func(c *config.Config)
	}{
		{"commands", "Doors[0].Timeout", func(c *config.Config) { c.Doors[0].Timeout++ }},
		{"commands", "Doors[0].Sequence", func(c *config.Config) { c.Doors[0].Sequence[1].Num++ }},
		{"commands", "Doors[0].Flags", func(c *config.Config) { c.Doors[0].Flags = knock.TCPFlags{} }},
		{"commands", "Doors[2].Target", func(c *config.Config) { c.Doors[2].Target = c.Doors[0].Target }},
		{"commands", "Doors[1].StartCommand6", func(c *config.Config) { c.Doors[1].StartCommand6 = "x" }},
		{"commands", "Doors[1].StopCommand6", func(c *config.Config) { c.Doors[1].StopCommand6 = c.Doors[1].StopCommand }},
		{"commands", "Doors[1].CmdTimeout", func(c *config.Config) { c.Doors[1].CmdTimeout = time.Second }},
		{"commands", "Doors[1].Name", func(c *config.Config) { c.Doors[1].Name = "other" }},
		{"commands", "Server.Interfaces", func(c *config.Config) { c.Server.Interfaces = nil }},
		{"commands", "Server.UseSyslog", func(c *config.Config) { c.Server.UseSyslog = false }},
		{"open", "Doors[0].Open", func(c *config.Config) { c.Doors[0].Open = c.Doors[0].Open[:1] }},
		{"open", "Doors[0].OpenFor", func(c *config.Config) { c.Doors[0].OpenFor = time.Minute + time.Second }},
		{"open", "Server.Firewall", func(c *config.Config) { c.Server.Firewall = config.FirewallIptables }},
		{"fwknop-udp", "SPA.Port", func(c *config.Config) { c.SPA.Port++ }},
		{"fwknop-udp", "SPA.MaxAge", func(c *config.Config) { c.SPA.MaxAge = time.Minute + time.Second }},
		{"fwknop-udp", "SPA.Clients[0].Fwknop", func(c *config.Config) { c.SPA.Clients[0].Fwknop.Key[0] ^= 1 }},
		{"fwknop-udp", "SPA.Clients[1].Fwknop", func(c *config.Config) { c.SPA.Clients[1].Fwknop.HMACDigest = fwknop.DigestSHA256 }},
		{"fwknop-udp", "SPA.Clients[1].Sources", func(c *config.Config) { c.SPA.Clients[1].Sources = config.AnySource }},
		{"fwknop-udp", "SPA.Clients[1].Open", func(c *config.Config) { c.SPA.Clients[1].Open = c.SPA.Clients[1].Open[:1] }},
		{"fwknop-udp", "SPA.Clients[0].DefaultOpenFor", func(c *config.Config) { c.SPA.Clients[0].DefaultOpenFor = time.Second }},
		{"fwknop-udp", "SPA.Clients[1].RequireSourceAddress", func(c *config.Config) { c.SPA.Clients[1].RequireSourceAddress = false }},
		{"fwknop-udp", "SPA.Clients[1].RequireUsername", func(c *config.Config) { c.SPA.Clients[1].RequireUsername = "" }},
		{"fwknop-udp", "SPA.Clients[0].AccessExpire", func(c *config.Config) { c.SPA.Clients[0].AccessExpire = time.Unix(1e9, 0) }},
		{"fwknop-udp", "SPA.Clients[0].Restrict", func(c *config.Config) {
			c.SPA.Clients[0].Restrict = []netport.Port{{Proto: netport.TCP, Num: 22}}
		}},
		{"fwknop-sniff", "SPA.Sniff", func(c *config.Config) { c.SPA.Sniff = false }},
		{"fwknop-icmp", "SPA.ICMP", func(c *config.Config) { c.SPA.ICMP = false }},
	}
	for _, tc := range cases {
		t.Run(tc.sample+"/"+tc.field, func(t *testing.T) {
			var s sample
			for _, x := range samples {
				if x.name == tc.sample {
					s = x
				}
			}
			res := s.run(t, t.TempDir())
			native := load(t, res)
			if err := res.Check(native); err != nil {
				t.Fatalf("before the change: %v", err)
			}
			tc.change(native)
			err := res.Check(native)
			if err == nil || !strings.Contains(err.Error(), "in "+tc.field) {
				t.Fatalf("Check = %v, want a difference in %s", err, tc.field)
			}
		})
	}
}

// TestNoKeysInOutput: no key, in any encoding, is in the text or in what is printed about key
// files; each is in its own file, which the text names.
func TestNoKeysInOutput(t *testing.T) {
	for _, s := range samples {
		if !s.fwknop {
			continue
		}
		t.Run(s.name, func(t *testing.T) {
			keys := t.TempDir()
			res := s.run(t, keys)
			if len(res.Keys) == 0 {
				t.Fatal("no key files")
			}
			for _, c := range res.Legacy.SPA.Clients {
				for _, k := range [][]byte{c.Fwknop.Key, c.Fwknop.HMACKey} {
					if k == nil {
						continue
					}
					for _, enc := range []string{string(k), base64.StdEncoding.EncodeToString(k)} {
						if bytes.Contains(res.TOML, []byte(enc)) {
							t.Errorf("a key of %s is in the text", c.Name)
						}
						for _, kf := range res.Keys {
							if strings.Contains(kf.String(), enc) {
								t.Errorf("a key is in the description of %s", kf.Path)
							}
						}
					}
				}
			}
			for _, kf := range res.Keys {
				if filepath.Dir(kf.Path) != keys || !bytes.Contains(res.TOML, []byte(`"`+kf.Path+`"`)) {
					t.Errorf("key file %s: not in %s, or not named by the text", kf.Path, keys)
				}
			}
		})
	}
}

// TestNotExpressible: what the native configuration cannot say is an error naming the file,
// line and setting, never a configuration that behaves differently.
func TestNotExpressible(t *testing.T) {
	dir := t.TempDir()
	ots := filepath.Join(dir, "ots")
	if err := os.WriteFile(ots, []byte(" 1,2,3\n 4,5,6\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys := "KEY_BASE64 " + key32 + "\nHMAC_KEY_BASE64 " + hmac64 + "\n"
	cases := []struct {
		name, knockd, access string
		want                 string // in the error, after the file name
	}{
		{name: "one-time sequences", knockd: "[d]\nOne_Time_Sequences = " + ots + "\ncommand = a\n", want: `knockd.conf:2: door "d": One_Time_Sequences`},
		{name: "seq_timeout 0", knockd: "[d]\nsequence = 1,2\ncommand = a\n\nseq_timeout = 0\n", want: `knockd.conf:5: door "d": Seq_Timeout 0`},
		{name: "repeated knock", knockd: "[options]\nUseSyslog\n[d]\nsequence = 1,2,2\ncommand = a\n", want: `knockd.conf:4: door "d": Sequence: knocks 2 and 3`},
		{name: "door that does nothing", knockd: "[d]\nsequence = 1,2\nstop_command = a\n", want: `knockd.conf:1: door "d": the door runs no command and opens nothing`},
		{name: "cmd_timeout over a day", knockd: "[d]\nsequence = 1,2\ncommand = a\ncmd_timeout = 86401\n", want: `knockd.conf:4: door "d": Cmd_Timeout 24h0m1s`},
		{name: "invalid UTF-8", knockd: "[d]\nsequence = 1,2\ncommand = echo \xff\n", want: "knockd.conf: command: the value is not valid UTF-8"},
		{name: "IPv4-mapped SOURCE", access: "SOURCE 10.0.0.0/8, ::ffff:198.18.0.2\n" + keys + "OPEN_PORTS tcp/22\n", want: "access.conf:1: stanza #1: SOURCE ::ffff:198.18.0.2/128 is an IPv4-mapped IPv6 network"},
		{name: "no OPEN_PORTS", access: "# c\nSOURCE ANY\n" + keys, want: "access.conf:2: stanza #1: no OPEN_PORTS"},
		{name: "restricted open port", access: "SOURCE ANY\n" + keys + "OPEN_PORTS tcp/22\n\nSOURCE ANY\n" + keys + "OPEN_PORTS tcp/22,tcp/23\nRESTRICT_PORTS tcp/23\n",
			want: "access.conf:6: stanza #2: RESTRICT_PORTS tcp/23 is also in OPEN_PORTS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.knockd != "" {
				_, err = Knockd(filepath.Join(dir, "knockd.conf"), []byte(tc.knockd), config.Overrides{})
			} else {
				_, err = Fwknop(dir, nil, []byte(tc.access), t.TempDir(), config.Overrides{})
			}
			if !errors.Is(err, ErrNotExpressible) || !strings.Contains(err.Error(), string(filepath.Separator)+tc.want) {
				t.Fatalf("err = %v, want %q and ErrNotExpressible", err, tc.want)
			}
			if strings.Contains(err.Error(), key32) || strings.Contains(err.Error(), hmac64) {
				t.Fatal("the error holds a key")
			}
		})
	}
}

// TestLegacyErrors: a legacy configuration its loader refuses is refused, with the loader's
// error (not ErrNotExpressible).
func TestLegacyErrors(t *testing.T) {
	for _, tc := range []struct{ name, knockd, access, want string }{
		{name: "knockd syntax", knockd: "[d]\nsequence = 1,x\ncommand = a\n", want: "knockd.conf:2"},
		{name: "knockd Open without --firewall", knockd: "[d]\nsequence = 1,2\nOpen = tcp/22\n", want: "choose sesame's gate with --firewall nftables or --firewall iptables"},
		{name: "fwknop DESTINATION", access: "SOURCE ANY\nDESTINATION 10.0.0.1\nKEY_BASE64 " + key32 + "\nOPEN_PORTS tcp/22\n", want: "DESTINATION is not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.knockd != "" {
				_, err = Knockd("knockd.conf", []byte(tc.knockd), config.Overrides{})
			} else {
				_, err = Fwknop(t.TempDir(), nil, []byte(tc.access), t.TempDir(), config.Overrides{})
			}
			if err == nil || errors.Is(err, ErrNotExpressible) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want the loader's error %q", err, tc.want)
			}
		})
	}
}

func TestDoorName(t *testing.T) {
	for _, tc := range []struct {
		name  string
		taken []string
		want  string
	}{
		{"ssh", nil, "ssh"},
		{"open SSH", nil, "open_SSH"},
		{"ssh", []string{"ssh"}, "ssh-2"},
		{"ssh", []string{"ssh", "ssh-2"}, "ssh-3"},
		{"café", nil, "caf_"},
	} {
		if got := doorName(tc.name, tc.taken); got != tc.want {
			t.Errorf("doorName(%q, %q) = %q, want %q", tc.name, tc.taken, got, tc.want)
		}
	}
}

// TestRoundTripForceNAT: a FORCE_NAT stanza migrates to a forward list that loads into the
// same forwards (and only with firewall nftables, which forwards).
func TestRoundTripForceNAT(t *testing.T) {
	dir := t.TempDir()
	srv := []byte("ENABLE_IPT_FORWARDING Y;\n")
	acc := []byte("SOURCE ANY\nKEY_BASE64 " + key32 + "\nHMAC_KEY_BASE64 " + hmac64 + "\nOPEN_PORTS tcp/8022,udp/5353\nFORCE_NAT 198.19.0.2 22\n")
	if _, err := Fwknop(dir, srv, acc, t.TempDir(), config.Overrides{}); err == nil || !strings.Contains(err.Error(), `forwards need firewall "nftables"`) {
		t.Fatalf("with iptables: err = %v", err)
	}
	res, err := Fwknop(dir, srv, acc, t.TempDir(), config.Overrides{Firewall: config.FirewallNftables})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(res.TOML), `forward = ["tcp/8022 -> 198.19.0.2:22", "udp/5353 -> 198.19.0.2:22"]`) {
		t.Errorf("no forward list:\n%s", res.TOML)
	}
	if err := res.Check(load(t, res)); err != nil {
		t.Fatalf("%v\n%s", err, res.TOML)
	}
}
