package fwknopconf

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/netport"
)

// liveDir copies two of the live configurations (testdata, from the fwknop reference run) into a
// directory as fwknopd.conf and access.conf, mode 0600.
func liveDir(t *testing.T, server, access string) string {
	t.Helper()
	dir := t.TempDir()
	for src, dst := range map[string]string{server: "fwknopd.conf", access: "access.conf"} {
		if src == "" {
			continue
		}
		data, err := os.ReadFile(filepath.Join("testdata", src))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func hasWarning(s *config.SPA, sub string) bool {
	return slices.ContainsFunc(s.Warnings, func(w string) bool { return strings.Contains(w, sub) })
}

func TestFwknopConfLive(t *testing.T) {
	tests := []struct {
		name, server, access string
		sniff                bool
		ifaces               []string
		warnings             []string
		check                func(t *testing.T, c config.SPAClient)
	}{
		{"pcap", "fwknopd.conf", "access.conf", true, []string{"veth-fs"},
			[]string{"FLUSH_IPT_AT_INIT is ignored", "FLUSH_IPT_AT_EXIT is ignored", "no OPEN_PORTS"}, nil},
		{"udp", "fwknopd-udp.conf", "access.conf", false, nil, []string{"no OPEN_PORTS"}, nil},
		{"nat", "fwknopd-nat.conf", "access.conf", true, []string{"veth-fs"}, []string{"NAT requests (-N) are refused"}, nil},
		{"cmd", "fwknopd-udp.conf", "access-cmd.conf", false, nil, []string{"ENABLE_CMD_EXEC is not supported"},
			func(t *testing.T, c config.SPAClient) {
				if c.DefaultOpenFor != 10*time.Second || c.MaxOpenFor != fwknop.DefaultMaxFWTimeout {
					t.Errorf("timeouts %v/%v", c.DefaultOpenFor, c.MaxOpenFor)
				}
			}},
		{"nft", "fwknopd-udp.conf", "access-nft.conf", false, nil, []string{"CMD_CYCLE_OPEN/CMD_CYCLE_CLOSE are not supported"},
			func(t *testing.T, c config.SPAClient) {
				if c.DefaultOpenFor != fwknop.DefaultFWAccessTimeout {
					t.Errorf("default %v", c.DefaultOpenFor)
				}
			}},
		{"no fwknopd.conf", "", "access.conf", true, nil, []string{"PCAP_INTF is not set"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := liveDir(t, tc.server, tc.access)
			cfg, err := Load(dir, config.Overrides{})
			if err != nil {
				t.Fatal(err)
			}
			s := cfg.SPA
			if cfg.Server.Firewall != config.FirewallIptables || s == nil || s.Port != 62201 || !s.Sniff || s.SniffForStealth == tc.sniff ||
				s.MaxAge != 120*time.Second || len(cfg.Doors) != 0 {
				t.Fatalf("config %+v spa %+v", cfg.Server, s)
			}
			if !slices.Equal(cfg.Server.Interfaces, tc.ifaces) {
				t.Errorf("interfaces %v, want %v", cfg.Server.Interfaces, tc.ifaces)
			}
			// FWKNOP_RUN_DIR (/tmp/fwklive/run in these files) is a run directory, often a tmpfs:
			// the replay cache stays in the persistent state directory.
			if cfg.Server.StateDir != config.DefaultStateDir {
				t.Errorf("state dir %q, want %q", cfg.Server.StateDir, config.DefaultStateDir)
			}
			if tc.server != "" && !hasWarning(s, "FWKNOP_RUN_DIR is not used") {
				t.Errorf("no FWKNOP_RUN_DIR warning in %q", s.Warnings)
			}
			for _, w := range tc.warnings {
				if !hasWarning(s, w) {
					t.Errorf("no warning %q in %q", w, s.Warnings)
				}
			}
			if len(s.Clients) != 1 {
				t.Fatalf("%d clients", len(s.Clients))
			}
			c := s.Clients[0]
			if c.Format != config.SPAFormatFwknop || c.Name != "stanza#1" || !c.AnyPort || len(c.Open) != 0 ||
				!slices.Equal(c.Sources, config.AnySource) || len(c.Fwknop.Key) != 32 || len(c.Fwknop.HMACKey) != 64 {
				t.Errorf("client %+v", c)
			}
			if tc.check != nil {
				tc.check(t, c)
			} else if c.DefaultOpenFor != 10*time.Second || c.MaxOpenFor != 60*time.Second {
				t.Errorf("timeouts %v/%v, want 10s/60s", c.DefaultOpenFor, c.MaxOpenFor)
			}
			for _, w := range s.Warnings {
				if strings.Contains(w, "iydGYI5G") {
					t.Errorf("warning reveals a key: %q", w)
				}
			}
			// Protected: only the SPA port (the stanza allows any port). fwknopd's UDP server mode
			// (tc.sniff false) is sniffed too: the default stealth = "closed" gate keeps the SPA
			// port looking like a port where nothing runs, and the capture reads the packets.
			want := []netport.Port{{Proto: netport.UDP, Num: 62201}}
			if got := s.Protected(); !slices.Equal(got, want) {
				t.Errorf("Protected %v, want %v", got, want)
			}
		})
	}
}

const keys = "KEY_BASE64 iydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY=\nHMAC_KEY_BASE64 kRzlTYr0K1R4pc+Vy2hRIOY3ggfgSjsrylbO/9g/VZA9FfhU8R+Xg2cTnNTw+PAyHyeCQL1G64J++Gr4cPhpmg==\n"

func TestFwknopConfOptions(t *testing.T) {
	srv := "ENABLE_UDP_SERVER Y;\nUDPSERV_PORT 4000;\nMAX_SPA_PACKET_AGE 30;\nFW_ACCESS_TIMEOUT 20;\nFWKNOP_RUN_DIR /var/lib/x;\n"
	acc := "SOURCE 198.18.0.0/16, 10.0.0.1\n" + keys +
		"OPEN_PORTS tcp/22, udp/53\nRESTRICT_PORTS tcp/23\nHMAC_DIGEST_TYPE sha512\nENCRYPTION_MODE CBC\n" +
		"MAX_FW_TIMEOUT 120\nREQUIRE_USERNAME alice\nREQUIRE_SOURCE_ADDRESS Y\nACCESS_EXPIRE 12/31/2099\n" +
		"SOURCE ANY\nKEY secret pass\n"
	cfg, err := Parse("dir", "fwknopd.conf", []byte(srv), "access.conf", []byte(acc))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.SPA
	if !s.Sniff || !s.SniffForStealth || s.Port != 4000 || s.MaxAge != 30*time.Second || cfg.Server.StateDir != config.DefaultStateDir || len(s.Clients) != 2 {
		t.Fatalf("spa %+v", s)
	}
	c := s.Clients[0]
	want := []netport.Port{{Proto: netport.TCP, Num: 22}, {Proto: netport.UDP, Num: 53}}
	if c.AnyPort || !slices.Equal(c.Open, want) || len(c.Restrict) != 1 || len(c.Sources) != 2 ||
		c.Fwknop.HMACDigest != fwknop.DigestSHA512 || c.RequireUsername != "alice" || !c.RequireSourceAddress ||
		c.AccessExpire.Year() != 2099 || c.DefaultOpenFor != 20*time.Second || c.MaxOpenFor != 120*time.Second {
		t.Errorf("stanza 1 %+v", c)
	}
	if c2 := s.Clients[1]; string(c2.Fwknop.Key) != "secret pass" || c2.Fwknop.HMACKey != nil || !hasWarning(s, "no HMAC key") {
		t.Errorf("stanza 2 %+v, warnings %q", c2, s.Warnings)
	}
	// The sniffed SPA port is protected too.
	want = append([]netport.Port{{Proto: netport.UDP, Num: 4000}}, want...)
	if got := s.Protected(); !slices.Equal(got, want) {
		t.Errorf("Protected %v, want %v", got, want)
	}
}

func TestFwknopConfErrors(t *testing.T) {
	acc := "SOURCE ANY\n" + keys
	tests := []struct{ name, srv, acc, want string }{
		{"complex filter", "PCAP_FILTER udp port 1 or udp port 2;\n", acc, `PCAP_FILTER "udp port 1 or udp port 2": sesame needs a filter of the form "udp port N"`},
		{"tcp filter", "PCAP_FILTER tcp port 1;\n", acc, `sesame needs a filter`},
		{"tcp server", "ENABLE_TCP_SERVER Y;\n", acc, `fwknopd.conf: ENABLE_TCP_SERVER: SPA over TCP is not supported`},
		{"http", "ENABLE_SPA_OVER_HTTP Y;\n", acc, `SPA over HTTP is not supported`},
		{"destination", "", acc + "DESTINATION 10.0.0.1\n", `access.conf:1: stanza #1: DESTINATION is not supported`},
		{"force nat", "", acc + "FORCE_NAT 192.168.1.2 22\n", `stanza #1: FORCE_NAT: needs ENABLE_IPT_FORWARDING Y`},
		{"force nat on iptables", "ENABLE_IPT_FORWARDING Y;\n", acc + "OPEN_PORTS tcp/22\nFORCE_NAT 198.19.0.2 22\n", `forwards need firewall "nftables" (the iptables backend does not forward)`},
		{"force nat any port", "ENABLE_IPT_FORWARDING Y;\n", acc + "FORCE_NAT 192.168.1.2 22\n", `stanza #1: FORCE_NAT: needs OPEN_PORTS`},
		{"force snat", "ENABLE_IPT_FORWARDING Y;\n", acc + "OPEN_PORTS tcp/22\nFORCE_NAT 192.168.1.2 22\nFORCE_SNAT 10.0.0.1\n", `FORCE_SNAT: source NAT is not supported`},
		{"force nat bad", "ENABLE_IPT_FORWARDING Y;\n", acc + "OPEN_PORTS tcp/22\nFORCE_NAT 127.0.0.1 22\n", `FORCE_NAT: "tcp/22 -> 127.0.0.1:22": 127.0.0.1 is not a unicast address of another host`},
		{"gpg", "", "SOURCE ANY\nGPG_DECRYPT_ID ABCD\n", `stanza #1: GPG keys are not supported`},
		{"bad access", "", "KEY x\n", `option before the first SOURCE`},
		{"timeout too long", "", acc + "MAX_FW_TIMEOUT 100000\n", `may be at most 24h0m0s`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("dir", "fwknopd.conf", []byte(tc.srv), "access.conf", []byte(tc.acc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "iydGYI5G") {
				t.Errorf("error reveals a key: %v", err)
			}
		})
	}
	warnings := []struct{ name, srv, acc, want string }{
		{"aging off", "ENABLE_SPA_PACKET_AGING N;\n", acc, "ENABLE_SPA_PACKET_AGING N is ignored"},
		{"unknown server option", "SOMETHING_NEW Y;\n", acc, "SOMETHING_NEW is ignored: not supported by sesame"},
		{"tcp server off", "ENABLE_TCP_SERVER N;\n", acc, ""},
		{"gpg with key", "", acc + "GPG_REMOTE_ID ABCD\n", "GPG_REMOTE_ID is not supported and is ignored"},
		{"access file", "ACCESS_FILE /etc/fwknop/other.conf;\n", acc, "ACCESS_FILE /etc/fwknop/other.conf is not read"},
		{"default above max", "", acc + "FW_ACCESS_TIMEOUT 600\n", "every grant is at most 5m0s, also without a client timeout (fwknopd would give 10m0s)"},
	}
	for _, tc := range warnings {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("dir", "fwknopd.conf", []byte(tc.srv), "access.conf", []byte(tc.acc))
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != "" && !hasWarning(cfg.SPA, tc.want) {
				t.Errorf("no warning %q in %q", tc.want, cfg.SPA.Warnings)
			}
		})
	}
}

func TestFwknopConfLoadErrors(t *testing.T) {
	dir := liveDir(t, "fwknopd-udp.conf", "access.conf")
	if _, err := Load(filepath.Join(dir, "nope"), config.Overrides{}); err == nil {
		t.Error("missing directory accepted")
	}
	if _, err := Load(filepath.Join(dir, "fwknopd.conf"), config.Overrides{}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("file as directory: %v", err)
	}
	if _, err := Load(t.TempDir(), config.Overrides{}); err == nil || !strings.Contains(err.Error(), "access.conf") {
		t.Errorf("no access.conf: %v", err)
	}
}

// TestFwknopConfPermissions: files group or others may read get a warning naming the file and
// the fix, and run, as under fwknopd; files others could change are refused.
func TestFwknopConfPermissions(t *testing.T) {
	tests := []struct {
		name             string
		srvMode, accMode os.FileMode // 0: as written (0600)
		dirMode          os.FileMode // 0: as made (0700)
		warn, err        string      // "{dir}" stands for the directory
	}{
		{"private", 0, 0, 0, "", ""},
		{"access.conf world-readable", 0, 0o644, 0, "{dir}/access.conf holds keys and is readable by group or others (mode 0644): chmod 600 {dir}/access.conf", ""},
		{"access.conf group-readable", 0, 0o640, 0, "{dir}/access.conf holds keys and is readable by group or others (mode 0640): chmod 600 {dir}/access.conf", ""},
		{"fwknopd.conf world-readable", 0o644, 0, 0, "{dir}/fwknopd.conf is readable by group or others (mode 0644): chmod 600 {dir}/fwknopd.conf", ""},
		{"directory world-readable", 0, 0, 0o755, "", ""},
		{"access.conf world-writable", 0, 0o606, 0, "", "{dir}/access.conf is writable by others (mode 0606)"},
		{"fwknopd.conf world-writable", 0o666, 0, 0, "", "chmod o-w {dir}/fwknopd.conf"},
		{"directory world-writable", 0, 0, 0o777, "", "directory {dir} is writable by others (mode 0777)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := liveDir(t, "fwknopd-udp.conf", "access.conf")
			for f, m := range map[string]os.FileMode{"fwknopd.conf": tc.srvMode, "access.conf": tc.accMode} {
				if m != 0 {
					if err := os.Chmod(filepath.Join(dir, f), m); err != nil {
						t.Fatal(err)
					}
				}
			}
			if tc.dirMode != 0 {
				if err := os.Chmod(dir, tc.dirMode); err != nil {
					t.Fatal(err)
				}
			}
			cfg, err := Load(dir, config.Overrides{})
			if tc.err != "" {
				if want := strings.ReplaceAll(tc.err, "{dir}", dir); err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("err = %v, want %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			readable := slices.ContainsFunc(cfg.SPA.Warnings, func(w string) bool { return strings.Contains(w, "readable by group or others") })
			if tc.warn == "" {
				if readable {
					t.Errorf("unexpected warning in %q", cfg.SPA.Warnings)
				}
				return
			}
			if want := strings.ReplaceAll(tc.warn, "{dir}", dir); !hasWarning(cfg.SPA, want) {
				t.Errorf("no warning %q in %q", want, cfg.SPA.Warnings)
			}
		})
	}
}

// TestFwknopConfOwners: files and directories owned by another user (not root) are refused; a
// group-writable file is refused unless the group is root's. Ownership takes root to set.
func TestFwknopConfOwners(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to another user (chown)")
	}
	const other = 4242
	tests := []struct {
		name     string
		file     string // "" : the directory
		uid, gid int
		mode     os.FileMode
		err      string
	}{
		{"access.conf of another user", "access.conf", other, 0, 0o600, "access.conf is owned by uid 4242, neither root nor the user running sesame (uid 0): that user could change it: chown root "},
		{"fwknopd.conf of another user", "fwknopd.conf", other, 0, 0o600, "fwknopd.conf is owned by uid 4242"},
		{"directory of another user", "", other, 0, 0o700, "is owned by uid 4242"},
		{"access.conf writable by a group", "access.conf", 0, other, 0o620, "access.conf is writable by group 4242 (mode 0620)"},
		{"access.conf writable by root's group", "access.conf", 0, 0, 0o620, ""},
		{"directory writable by a group", "", 0, other, 0o770, "is writable by group 4242 (mode 0770)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := liveDir(t, "fwknopd-udp.conf", "access.conf")
			p := filepath.Join(dir, tc.file)
			if err := os.Chown(p, tc.uid, tc.gid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := Load(dir, config.Overrides{})
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
}

// TestFwknopConfPlaceholder: Debian's fwknop-server ships an access.conf whose only stanza is
// SOURCE ANY with KEY_BASE64 and HMAC_KEY_BASE64 __CHANGEME__ (its other lines are comments).
// Running it says what to do.
func TestFwknopConfPlaceholder(t *testing.T) {
	for _, acc := range []string{
		"SOURCE              ANY\nKEY_BASE64          __CHANGEME__\nHMAC_KEY_BASE64     __CHANGEME__\n",
		"SOURCE ANY\nKEY_BASE64 " + strings.Fields(keys)[1] + "\nHMAC_KEY_BASE64 __CHANGEME__\n",
		"SOURCE ANY\nKEY __CHANGEME__\n",
	} {
		_, err := Parse("dir", "fwknopd.conf", nil, "access.conf", []byte(acc))
		if err == nil || !strings.Contains(err.Error(), "placeholder __CHANGEME__") || !strings.Contains(err.Error(), "sesame keygen --fwknop") {
			t.Errorf("%q: err = %v, want the placeholder and `sesame keygen --fwknop`", acc, err)
		}
	}
}

// TestFwknopConfDefaultAboveMax: fwknopd caps client timeouts at MAX_FW_TIMEOUT even when
// FW_ACCESS_TIMEOUT is longer; sesame keeps that cap (for both), never the longer one.
func TestFwknopConfDefaultAboveMax(t *testing.T) {
	tests := []struct {
		acc              string
		wantDef, wantMax time.Duration
	}{
		{"FW_ACCESS_TIMEOUT 30\nMAX_FW_TIMEOUT 3\n", 3 * time.Second, 3 * time.Second},
		{"FW_ACCESS_TIMEOUT 600\n", 5 * time.Minute, 5 * time.Minute},
		{"FW_ACCESS_TIMEOUT 3\nMAX_FW_TIMEOUT 30\n", 3 * time.Second, 30 * time.Second},
	}
	for _, tc := range tests {
		cfg, err := Parse("dir", "fwknopd.conf", nil, "access.conf", []byte("SOURCE ANY\n"+keys+tc.acc))
		if err != nil {
			t.Fatal(err)
		}
		if c := cfg.SPA.Clients[0]; c.DefaultOpenFor != tc.wantDef || c.MaxOpenFor != tc.wantMax {
			t.Errorf("%q: default %v, max %v; want %v, %v", tc.acc, c.DefaultOpenFor, c.MaxOpenFor, tc.wantDef, tc.wantMax)
		}
	}
}

// TestFwknopConfICMP: sesame sniffs SPA in pings (fwknop -P icmp) exactly when fwknopd's
// PCAP_FILTER takes ICMP and fwknopd sniffs at all (not with ENABLE_UDP_SERVER).
func TestFwknopConfICMP(t *testing.T) {
	acc := "SOURCE ANY\n" + keys
	for _, tc := range []struct {
		name, srv string
		icmp      bool
		port      uint16
		warn      string
	}{
		{"default filter", "", false, 62201, ""},
		{"udp or icmp", "PCAP_FILTER udp port 4000 or icmp;\n", true, 4000, ""},
		{"icmp or udp", "PCAP_FILTER icmp or udp dst port 62201;\n", true, 62201, ""},
		{"icmp only", "PCAP_FILTER icmp;\n", true, 62201, `PCAP_FILTER "icmp": sesame sniffs udp/62201 for SPA too`},
		{"udp server", "ENABLE_UDP_SERVER Y;\nPCAP_FILTER udp port 62201 or icmp;\n", false, 62201, "PCAP_FILTER are not used with ENABLE_UDP_SERVER Y"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("dir", "fwknopd.conf", []byte(tc.srv), "access.conf", []byte(acc))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.SPA.ICMP != tc.icmp || cfg.SPA.Port != tc.port {
				t.Errorf("icmp %v port %d, want %v %d", cfg.SPA.ICMP, cfg.SPA.Port, tc.icmp, tc.port)
			}
			if tc.warn != "" && !hasWarning(cfg.SPA, tc.warn) {
				t.Errorf("no warning %q in %q", tc.warn, cfg.SPA.Warnings)
			}
		})
	}
	if _, err := Parse("dir", "fwknopd.conf", []byte("PCAP_FILTER tcp port 1 or icmp;\n"), "access.conf", []byte(acc)); err == nil ||
		!strings.Contains(err.Error(), `"udp port N", "icmp" or "udp port N or icmp"`) {
		t.Errorf("tcp port 1 or icmp: err = %v", err)
	}
}

// TestFwknopConfLocalNAT: ENABLE_IPT_LOCAL_NAT Y gives each stanza NAT-only local forwards to
// its OPEN_PORTS (so --nat-local works and a plain request still opens the port itself) with
// the nftables backend; other backends keep running without local NAT, with a warning.
func TestFwknopConfLocalNAT(t *testing.T) {
	srv := "ENABLE_UDP_SERVER Y;\nENABLE_IPT_LOCAL_NAT Y;\n"
	acc := "SOURCE ANY\n" + keys + "OPEN_PORTS tcp/22, udp/53\n\nSOURCE 10.0.0.0/8\nKEY other key\n"
	for _, tc := range []struct {
		fw      firewall.Kind
		want    []string
		warning string
	}{
		{firewall.Nftables, []string{"nat tcp/* -> local:22", "nat udp/* -> local:53"}, "stanza #2: no OPEN_PORTS: ENABLE_IPT_LOCAL_NAT requests"},
		{firewall.Iptables, nil, "ENABLE_IPT_LOCAL_NAT needs --firewall nftables"},
	} {
		t.Run(string(tc.fw), func(t *testing.T) {
			cfg, err := ParseOverrides("dir", "fwknopd.conf", []byte(srv), "access.conf", []byte(acc), config.Overrides{Firewall: tc.fw})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range cfg.SPA.Clients[0].Forward {
				got = append(got, f.String())
			}
			if !slices.Equal(got, tc.want) || len(cfg.SPA.Clients[1].Forward) != 0 {
				t.Errorf("forwards %q, %v; want %q and none", got, cfg.SPA.Clients[1].Forward, tc.want)
			}
			if !slices.Equal(cfg.SPA.Clients[0].Open, []netport.Port{{Proto: netport.TCP, Num: 22}, {Proto: netport.UDP, Num: 53}}) {
				t.Errorf("open %v: the ports must stay open to plain requests", cfg.SPA.Clients[0].Open)
			}
			if !hasWarning(cfg.SPA, tc.warning) {
				t.Errorf("warnings %q lack %q", cfg.SPA.Warnings, tc.warning)
			}
		})
	}
}
