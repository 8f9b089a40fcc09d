package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

func tcp(n uint16) knock.Element { return knock.Element{Proto: netport.TCP, Num: n} }
func udp(n uint16) knock.Element { return knock.Element{Proto: netport.UDP, Num: n} }

var icmp = knock.Element{Proto: netport.ICMP}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestLoadFiles(t *testing.T) {
	defaults := DefaultServer()
	tests := []struct {
		file string
		want Config
	}{{
		file: "example.toml",
		want: Config{
			Server: Server{
				Interfaces: []string{"eth0"},
				Firewall:   FirewallNftables,
				OnStop:     OnStopClose,
				MaxSources: 65536,
				SweepGuard: 32,
				StateDir:   "/var/lib/sesame",
				Stealth:    firewall.StealthClosed,
			},
			Doors: []Door{{
				Door: knock.Door{
					Name:     "ssh",
					Sequence: []knock.Element{tcp(7000), udp(8000), tcp(9000)},
					Flags:    knock.TCPFlags{Set: knock.SYN, Clear: knock.ACK},
					Timeout:  5 * time.Second,
					Sources:  prefixes("10.0.0.0/8", "fd00::/8"),
				},
				Open:       []netport.Port{{Proto: netport.TCP, Num: 22}},
				OpenFor:    30 * time.Second,
				CmdTimeout: 10 * time.Second,
			}},
		},
	}, {
		file: "full.toml",
		want: Config{
			Server: Server{
				Interfaces: []string{"eth0", "wg0"},
				Firewall:   FirewallIptables,
				OnStop:     OnStopRemove,
				MaxSources: 1000,
				SweepGuard: 0,
				StateDir:   "/srv/sesame",
				Stealth:    firewall.StealthClosed,
				LogFile:    "/var/log/sesame.log",
				UseSyslog:  true,
				PidFile:    "/run/sesame.pid",
			},
			Doors: []Door{{
				Door: knock.Door{
					Name:     "web.admin",
					Sequence: []knock.Element{tcp(7000), icmp, udp(8000), tcp(7000)},
					Flags:    knock.TCPFlags{Set: knock.SYN, Clear: knock.ACK | knock.RST},
					Timeout:  20 * time.Second,
					MinGap:   100 * time.Millisecond,
					MaxGap:   3 * time.Second,
					Sources:  prefixes("192.0.2.7/32", "2001:db8::/32", "10.0.0.0/8"),
					Target:   netip.MustParseAddr("192.0.2.1"),
				},
				Open:          []netport.Port{{Proto: netport.TCP, Num: 443}, {Proto: netport.UDP, Num: 443}},
				OpenFor:       90 * time.Second,
				StartCommand:  "logger opened %IP%",
				StartCommand6: "",
				StopCommand:   "logger closed %IP%",
				StopCommand6:  "logger closed %IP%",
				CmdTimeout:    90 * time.Second,
			}, {
				Door: knock.Door{
					Name:     "run_only-1",
					Sequence: []knock.Element{udp(1)},
					Timeout:  DefaultSequenceTimeout,
				},
				OpenFor:       DefaultOpenFor,
				StartCommand:  "touch /tmp/%IP%",
				StartCommand6: "touch '/tmp/[%IP%]'",
				StopCommand:   "rm -f /tmp/%IP%",
				StopCommand6:  "rm -f '/tmp/[%IP%]'",
				CmdTimeout:    0,
			}},
			Control: Control{Socket: "/run/sesame-2/control.sock", Group: "sesame", AdminGroup: "64100", MaxGrant: 4 * time.Hour},
			Metrics: Metrics{Listen: "[::1]:9741", AllowRemote: true},
		},
	}, {
		file: "commands-only.toml",
		want: Config{
			Server: func() Server { s := defaults; s.Firewall = FirewallNone; return s }(),
			Doors: []Door{{
				Door: knock.Door{
					Name:     "wake",
					Sequence: []knock.Element{udp(5000), udp(5001)},
					Flags:    DefaultTCPFlags,
					Timeout:  DefaultSequenceTimeout,
					Target:   netip.MustParseAddr("10.0.0.9"),
				},
				OpenFor:       DefaultOpenFor,
				StartCommand:  "wakeonlan 00:11:22:33:44:55",
				StartCommand6: "wakeonlan 00:11:22:33:44:55",
				CmdTimeout:    DefaultCmdTimeout,
			}},
		},
	}}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			got, err := Load(path, Overrides{})
			if err != nil {
				t.Fatal(err)
			}
			tc.want.Source = path
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("Load(%s):\n got %+v\nwant %+v", path, *got, tc.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse("d.toml", []byte("[[door]]\nname = \"a\"\nsequence = [\"1\"]\nopen = [\"tcp/22\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.Server, DefaultServer()) {
		t.Errorf("server = %+v, want %+v", cfg.Server, DefaultServer())
	}
	d := cfg.Doors[0]
	if d.Timeout != 10*time.Second || d.OpenFor != 30*time.Second || d.CmdTimeout != 10*time.Second ||
		d.Flags != (knock.TCPFlags{Set: knock.SYN, Clear: knock.ACK}) || d.MinGap != 0 || d.MaxGap != 0 ||
		d.Sources != nil || d.Target.IsValid() {
		t.Errorf("door defaults = %+v", d)
	}
	// An empty file is a valid configuration with no doors.
	cfg, err = Parse("empty.toml", nil)
	if err != nil || len(cfg.Doors) != 0 || cfg.Source != "empty.toml" {
		t.Errorf("Parse(empty) = %+v, %v", cfg, err)
	}
}

func TestCommandFallback(t *testing.T) {
	const head = "[server]\nfirewall = \"none\"\n[[door]]\nname = \"d\"\nsequence = [\"1\"]\n"
	tests := []struct {
		name, body                 string
		start, start6, stop, stop6 string
	}{
		{"absent", `command = "a"` + "\n" + `stop_command = "b"`, "a", "a", "b", "b"},
		{"empty", "command = \"a\"\ncommand_6 = \"\"\nstop_command = \"b\"\nstop_command_6 = \"\"", "a", "", "b", ""},
		{"set", "start_command = \"a\"\nstart_command_6 = \"a6\"\nstop_command_6 = \"b6\"", "a", "a6", "", "b6"},
		{"v6 only", "command = \"\"\ncommand_6 = \"x\"", "", "x", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("c.toml", []byte(head+tc.body+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			d := cfg.Doors[0]
			if d.StartCommand != tc.start || d.StartCommand6 != tc.start6 || d.StopCommand != tc.stop ||
				d.StopCommand6 != tc.stop6 {
				t.Errorf("commands = %q %q %q %q", d.StartCommand, d.StartCommand6, d.StopCommand, d.StopCommand6)
			}
		})
	}
}

func TestDurations(t *testing.T) {
	tests := []struct {
		value string
		want  time.Duration
		err   string
	}{
		{`"5s"`, 5 * time.Second, ""},
		{`"1m30s"`, 90 * time.Second, ""},
		{`"250ms"`, 250 * time.Millisecond, ""},
		{`7`, 7 * time.Second, ""},
		{`"5x"`, 0, `t.toml:4: door "d": sequence_timeout: "5x" is not a duration`},
		{`"5"`, 0, `sequence_timeout: "5" is not a duration`},
		{`"-5s"`, 0, `sequence_timeout: "-5s" is negative`},
		{`-5`, 0, `sequence_timeout: -5 seconds is out of range`},
		{`10000000000000`, 0, `sequence_timeout: 10000000000000 seconds is out of range`},
		{`0`, 0, `sequence_timeout: must be more than 0`},
		{`"0s"`, 0, `sequence_timeout: must be more than 0`},
		{`1.5`, 0, `sequence_timeout: want a duration such as "30s" or an integer number of seconds, got a float`},
		{`true`, 0, `got a boolean`},
	}
	for _, tc := range tests {
		t.Run(tc.value, func(t *testing.T) {
			src := "[[door]]\nname = \"d\"\nsequence = [\"1\"]\nsequence_timeout = " + tc.value + "\nopen = [\"tcp/1\"]\n"
			cfg, err := Parse("t.toml", []byte(src))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Doors[0].Timeout; got != tc.want {
				t.Errorf("timeout = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	const door = "[[door]]\nname = \"ssh\"\nsequence = [\"7000\", \"8000\"]\nopen = [\"tcp/22\"]\n"
	tests := []struct {
		name, src, want string
	}{
		{"toml syntax", "[server\n", "s.toml:1: "},
		{"toml duplicate", "[server]\nfirewall = \"none\"\nfirewall = \"none\"\n", "s.toml:3: "},
		{"control not a table", "control = 1\n", `s.toml:1: control: want a table, got an integer`},
		{"control unknown key", "[control]\nsocket = \"/run/s.sock\"\ngroups = \"x\"\n", `s.toml:3: control: unknown key "groups"`},
		{"control socket type", "[control]\nsocket = 1\n", `s.toml:2: control: socket: want a string, got an integer`},
		{"control socket relative", "[control]\nsocket = \"run/c.sock\"\n", `s.toml:2: control: socket: "run/c.sock": want the absolute path of a socket file`},
		{"control socket dir", "[control]\nsocket = \"/run/sesame/\"\n", `s.toml:2: control: socket: "/run/sesame/": want the absolute path`},
		{"control socket long", "[control]\nsocket = \"/" + strings.Repeat("s", 107) + "\"\n", `s.toml:2: control: socket: "/sss`},
		{"control admin_group space", "[control]\nadmin_group = \"a b\"\n", `s.toml:2: control: admin_group: "a b" is not a group name or gid`},
		{"control group int", "[control]\ngroup = 100\n", `s.toml:2: control: group: want a string, got an integer`},
		{"control max_grant zero", "[control]\nmax_grant = 0\n", `s.toml:2: control: max_grant: must be more than 0 (leave it out for the default: 24h0m0s)`},
		{"control max_grant short", "[control]\nmax_grant = \"10ms\"\n", `s.toml:2: control: max_grant: 10ms is less than 1s`},
		{"control max_grant bad", "[control]\nmax_grant = \"4x\"\n", `s.toml:2: control: max_grant: "4x" is not a duration`},
		{"metrics unknown key", "[metrics]\nlisten = \"127.0.0.1:9741\"\nport = 1\n", `s.toml:3: metrics: unknown key "port"`},
		{"metrics listen no port", "[metrics]\nlisten = \"127.0.0.1\"\n", `s.toml:2: metrics: listen: "127.0.0.1": want host:port, as in 127.0.0.1:9741`},
		{"metrics listen port 0", "[metrics]\nlisten = \"127.0.0.1:0\"\n", `s.toml:2: metrics: listen: "127.0.0.1:0": the port must be a number in 1-65535`},
		{"metrics listen port name", "[metrics]\nlisten = \"localhost:http\"\n", `the port must be a number in 1-65535`},
		{"metrics allow_remote type", "[metrics]\nallow_remote = \"yes\"\n", `s.toml:2: metrics: allow_remote: want true or false, got a string`},
		{"unknown top key", "[server]\n[spq]\nkey = 1\n", `s.toml:2: unknown key "spq" (want [server], [[door]], [spa], [control], [metrics], [[decoy]], [alert], [scan], [cluster] or [firewall.aws])`},
		{"unknown top value", "x = 1\n", `s.toml:1: unknown key "x"`},
		{"server not table", "server = 1\n", `s.toml:1: server: want a table, got an integer`},
		{"door not array", "[door]\nname = \"x\"\n", `s.toml:1: door: want [[door]] tables, got a table`},
		{"unknown server key", "[server]\nfirewall = \"none\"\nfirwall = \"none\"\n", `s.toml:3: server: unknown key "firwall"`},
		{"first unknown key", "[server]\nzz = 1\naa = 2\n", `s.toml:2: server: unknown key "zz"`},
		{"firewall", "[server]\nfirewall = \"pf\"\n", `s.toml:2: server: firewall: "pf" is not a firewall (want nftables, iptables, aws-sg or none)`},
		{"stealth", "[server]\nstealth = \"hidden\"\n", `s.toml:2: server: stealth: "hidden" is not a stealth mode (want closed, dark or off)`},
		{"stealth dark none", "[server]\nfirewall = \"none\"\nstealth = \"dark\"\n", `s.toml:3: server: stealth: dark needs a firewall (nftables, iptables), not "none"`},
		{"allow not dark", "[server]\nallow = [\"10.0.0.0/8\"]\n", `s.toml:2: server: allow: only a dark gate has an allow list (stealth is "closed")`},
		{"allow bad cidr", "[server]\nstealth = \"dark\"\nallow = [\"10.0.0.0/33\"]\n", `s.toml:3: server: allow: "10.0.0.0/33": "10.0.0.0/33" is not a CIDR`},
		{"allow host bits", "[server]\nstealth = \"dark\"\nallow = [\"10.0.0.1/8\"]\n", `s.toml:3: server: allow: "10.0.0.1/8": 10.0.0.1/8 has host bits set (the network is 10.0.0.0/8)`},
		{"allow bad port", "[server]\nstealth = \"dark\"\nallow = [\"10.0.0.0/8 icmp\"]\n", `s.toml:3: server: allow: "10.0.0.0/8 icmp": port "icmp": want PROTO/PORT`},
		{"allow extra word", "[server]\nstealth = \"dark\"\nallow = [\"10.0.0.0/8 tcp/22 x\"]\n", `s.toml:3: server: allow: "10.0.0.0/8 tcp/22 x": want "CIDR" or "CIDR tcp/PORT" or "CIDR udp/PORT"`},
		{"allow type", "[server]\nstealth = \"dark\"\nallow = \"10.0.0.0/8\"\n", `s.toml:3: server: allow: want`},
		{"firewall type", "[server]\nfirewall = 1\n", `s.toml:2: server: firewall: want a string, got an integer`},
		{"on_stop", "[server]\non_stop = \"keep\"\n", `s.toml:2: server: on_stop: "keep" is not valid (want close or remove)`},
		{"max_sources", "[server]\nmax_sources = 0\n", `s.toml:2: server: max_sources: 0 is out of range 1-2147483647`},
		{"sweep_guard", "[server]\nsweep_guard = 1025\n", `s.toml:2: server: sweep_guard: 1025 is out of range 0-1024`},
		{"sweep_guard neg", "[server]\nsweep_guard = -1\n", `sweep_guard: -1 is out of range 0-1024`},
		{"state_dir", "[server]\nstate_dir = \"\"\n", `s.toml:2: server: state_dir: must not be empty`},
		{"use_syslog", "[server]\nuse_syslog = \"yes\"\n", `server: use_syslog: want true or false, got a string`},
		{"interfaces type", "[server]\ninterfaces = \"eth0\"\n", `s.toml:2: server: interfaces: want a list of strings, got a string`},
		{"interfaces elem", "[server]\ninterfaces = [1]\n", `interfaces: want a list of strings, found an integer`},
		{"interface empty", "[server]\ninterfaces = [\"\"]\n", `interfaces: empty interface name`},
		{"interface long", "[server]\ninterfaces = [\"abcdefghijklmnop\"]\n", `is longer than 15 bytes`},
		{"interface slash", "[server]\ninterfaces = [\"a/b\"]\n", `interface name "a/b" has a character that is not allowed`},
		{"interface twice", "[server]\ninterfaces = [\"lo\", \"lo\"]\n", `interfaces: "lo" is listed twice`},
		{"door no name", "\n[[door]]\nsequence = [\"1\"]\n", `s.toml:2: door #1: name is required`},
		{"door bad name", "[[door]]\nname = \"a b\"\n", `s.toml:2: door #1: name: "a b" is not a valid name (want letters, digits, _ . and -)`},
		{"door empty name", "[[door]]\nname = \"\"\n", `name: "" is not a valid name`},
		{"duplicate name", door + door, `s.toml:6: door "ssh": name: door #1 has the same name`},
		{"no sequence", "[[door]]\nname = \"a\"\nopen = [\"tcp/1\"]\n", `s.toml:1: door "a": sequence is required`},
		{"empty sequence", "[[door]]\nname = \"a\"\nsequence = []\n", `s.toml:3: door "a": sequence: is empty`},
		{"long sequence", "[[door]]\nname = \"a\"\nsequence = [" + strings.Repeat(`"1","2",`, 16) + `"3"]` + "\n",
			`sequence: has 33 elements, more than 32`},
		{"sequence port 0", "[[door]]\nname = \"a\"\nsequence = [\"0/tcp\"]\n", `sequence: element 1: "0/tcp": port number "0" is out of range 1-65535`},
		{"sequence port big", "[[door]]\nname = \"a\"\nsequence = [\"1\", \"65536\"]\n", `element 2: "65536": port number "65536" is out of range`},
		{"sequence neg", "[[door]]\nname = \"a\"\nsequence = [\"-1\"]\n", `"-1": port number "-1" is not a decimal number`},
		{"sequence reversed", "[[door]]\nname = \"a\"\nsequence = [\"tcp/22\"]\n", `"tcp/22": sequence elements are written PORT/PROTO, as in 7000/tcp`},
		{"sequence proto", "[[door]]\nname = \"a\"\nsequence = [\"22/sctp\"]\n", `"22/sctp": unknown protocol "sctp"`},
		{"sequence icmp port", "[[door]]\nname = \"a\"\nsequence = [\"1/icmp\"]\n", `"1/icmp": an icmp knock has no port: write icmp`},
		{"sequence colon", "[[door]]\nname = \"a\"\nsequence = [\"7000:udp\"]\n", `"7000:udp": port number "7000:udp" is not a decimal number`},
		{"sequence repeat", "[[door]]\nname = \"a\"\nsequence = [\"1\", \"7000/tcp\", \"7000\"]\n",
			`s.toml:3: door "a": sequence: elements 2 and 3 are both tcp/7000: a knock that repeats the previous one is taken for a retransmission and ignored`},
		{"sequence repeat icmp", "[[door]]\nname = \"a\"\nsequence = [\"icmp\", \"ICMP\"]\n", `elements 1 and 2 are both icmp`},
		{"tcp_flags", "[[door]]\nname = \"a\"\nsequence = [\"1\"]\ntcp_flags = \"syn,foo\"\n", `s.toml:4: door "a": tcp_flags: unknown tcp flag "foo"`},
		{"tcp_flags both", "[[door]]\nname = \"a\"\nsequence = [\"1\"]\ntcp_flags = \"syn,!SYN\"\n", `tcp_flags: tcp flag syn is both required and forbidden`},
		{"gaps", "[[door]]\nname = \"a\"\nsequence = [\"1\"]\nmin_gap = \"2s\"\nmax_gap = \"1s\"\n", `s.toml:5: door "a": max_gap: 1s is less than min_gap 2s`},
		{"min_gap too long", "[[door]]\nname = \"a\"\nsequence = [\"1\", \"2\", \"3\"]\nsequence_timeout = \"5s\"\nmin_gap = \"3s\"\n",
			`min_gap: 3 knocks at least 3s apart cannot fit in sequence_timeout 5s`},
		{"sources", "[[door]]\nname = \"a\"\nsequence = [\"1\"]\nsources = [\"10.0.0.0/33\"]\n", `s.toml:4: door "a": sources: "10.0.0.0/33" is not an address or CIDR prefix`},
		{"sources host", "[[door]]\nname = \"a\"\nsequence = [\"1\"]\nsources = [\"example.com\"]\n", `sources: "example.com" is not an address`},
		{"sources zone", "[[door]]\nname = \"a\"\nsequence = [\"1\"]\nsources = [\"fe80::1%eth0\"]\n", `sources: "fe80::1%eth0" is not an address`},
		{"sources mapped", "[[door]]\nname = \"a\"\nsequence = [\"1\"]\nsources = [\"::ffff:10.0.0.0/104\"]\n", `is an IPv4-mapped IPv6 prefix: write the IPv4 form`},
		{"target", "[[door]]\nname = \"a\"\nsequence = [\"1\"]\ntarget = \"10.0.0.0/8\"\n", `s.toml:4: door "a": target: "10.0.0.0/8" is not an IP address`},
		{"open reversed", "[[door]]\nname = \"a\"\nsequence = [\"1\"]\nopen = [\"22/tcp\"]\n", `s.toml:4: door "a": open: "22/tcp": open entries are written PROTO/PORT, as in tcp/22`},
		{"open icmp", "[[door]]\nname = \"a\"\nsequence = [\"1\"]\nopen = [\"icmp/0\"]\n", `open: port "icmp/0": only tcp and udp ports can be opened`},
		{"open twice", "[[door]]\nname = \"a\"\nsequence = [\"1\"]\nopen = [\"tcp/22\", \"tcp/22\"]\n", `open: tcp/22 is listed twice`},
		{"open firewall none", "[server]\nfirewall = \"none\"\n[[door]]\nname = \"a\"\nsequence = [\"1\"]\nopen = [\"tcp/22\"]\n",
			`s.toml:6: door "a": open: firewall none cannot open ports; use commands`},
		{"open_for short", "[[door]]\nname = \"a\"\nsequence = [\"1\"]\nopen = [\"tcp/22\"]\nopen_for = \"500ms\"\n", `s.toml:5: door "a": open_for: 500ms is out of range 1s-24h0m0s`},
		{"open_for long", "[[door]]\nname = \"a\"\nsequence = [\"1\"]\nopen = [\"tcp/22\"]\nopen_for = \"25h\"\n", `open_for: 25h0m0s is out of range`},
		{"cmd_timeout", "[[door]]\nname = \"a\"\nsequence = [\"1\"]\ncommand = \"x\"\ncmd_timeout = \"48h\"\n", `cmd_timeout: 48h0m0s is more than 24h0m0s`},
		{"command alias", "[[door]]\nname = \"a\"\nsequence = [\"1\"]\ncommand = \"x\"\nstart_command = \"y\"\n", `s.toml:5: door "a": start_command: is the same as command: set only one of them`},
		{"command_6 alias", "[[door]]\nname = \"a\"\nsequence = [\"1\"]\ncommand_6 = \"x\"\nstart_command_6 = \"y\"\n", `start_command_6: is the same as command_6`},
		{"opens nothing", "\n[[door]]\nname = \"a\"\nsequence = [\"1\"]\n", `s.toml:2: door "a": the door opens nothing: set open, or a command`},
		{"opens nothing empty cmd", "[[door]]\nname = \"a\"\nsequence = [\"1\"]\ncommand = \"\"\nstop_command = \"x\"\n", `the door opens nothing`},
		{"unknown door key", door + "sequnce = [\"1\"]\n", `s.toml:5: door "ssh": unknown key "sequnce"`},
		{"second door line", door + "\n[[door]]\nname = \"web\"\nsequence = [\"1\"]\nopen = [\"tcp/80\"]\nopen_for = \"1y\"\n",
			`s.toml:10: door "web": open_for: "1y" is not a duration`},
		{"nested table", door + "[door.extra]\nx = 1\n", `s.toml:5: door "ssh": unknown key "extra"`},
		{"dotted key", door + "spa.key = 1\n", `s.toml:5: door "ssh": unknown key "spa"`},
		{"quoted key", door + "\"open for\" = 1\n", `s.toml:5: door "ssh": unknown key "open for"`},
		{"inline door", "door = [{name = \"a\", sequence = [\"1\"], open = [\"tcp/1\"], bad = 1}]\n", `s.toml:1: door "a": unknown key "bad"`},
		{"after multiline", "[server]\nlog_file = \"\"\"\n[[door]]\nname = 'x'\n\"\"\"\nstate_dir = '''\n'''\n\n\nmax_sources = 0\n",
			`s.toml:10: server: max_sources: 0 is out of range`},
		{"key case", door + "Open = [\"tcp/2\"]\n", `s.toml:5: door "ssh": unknown key "Open"`},
		{"key fold", door + "\"ſequence\" = [\"1\"]\n", `s.toml:5: door "ssh": unknown key "ſequence"`},
		{"first of two doors", "[[door]]\nname = \"a\"\nsequence = [\"1\"]\nopen = [\"tcp/1\"]\nopen_for = \"1y\"\n" +
			"[[door]]\nname = \"b\"\nsequence = [\"1\"]\nopen = [\"tcp/1\"]\nopen_for = \"2s\"\n", `s.toml:5: door "a": open_for: "1y" is not a duration`},
		{"middle of three doors", door + "[[door]]\nname = \"b\"\nsequence = [\"1\"]\nopen = [\"tcp/1\"]\n\nopen_for = \"0s\"\n" + strings.Replace(door, "ssh", "c", 1),
			`s.toml:10: door "b": open_for: 0s is out of range`},
		{"unknown in first of two", door + "bad = 1\n" + strings.Replace(door, "ssh", "web", 1), `s.toml:5: door "ssh": unknown key "bad"`},
		{"after array", "[[door]]\nname = \"a\"\nsequence = [\n  \"1\", # first\n  \"2\",\n]\nopen = [\"tcp/1\"]\nopen_for = 0\n",
			`s.toml:8: door "a": open_for: 0s is out of range`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("s.toml", []byte(tc.src))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", cfg)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %q\nwant it to contain %q", err, tc.want)
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.File != "s.toml" {
				t.Errorf("err %v is not a *Error for s.toml", err)
			}
		})
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"), Overrides{})
	if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "config: ") {
		t.Errorf("err = %v", err)
	}
}

func TestParseElement(t *testing.T) {
	tests := []struct {
		in   string
		want knock.Element
		err  bool
	}{
		{"7000/tcp", tcp(7000), false},
		{"7000/TCP", tcp(7000), false},
		{"8000/udp", udp(8000), false},
		{"7000", tcp(7000), false},
		{"65535", tcp(65535), false},
		{"icmp", icmp, false},
		{"ICMP", icmp, false},
		{"1/icmp", knock.Element{}, true},
		{"", knock.Element{}, true},
		{"/tcp", knock.Element{}, true},
		{"7000/", knock.Element{}, true},
		{" 7000", knock.Element{}, true},
		{"+7000", knock.Element{}, true},
		{"07000x", knock.Element{}, true},
		{"7000/tcp/x", knock.Element{}, true},
	}
	for _, tc := range tests {
		got, err := ParseElement(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseElement(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestParseTCPFlags(t *testing.T) {
	tests := []struct {
		in   string
		want knock.TCPFlags
		err  string
	}{
		{"", knock.TCPFlags{}, ""},
		{"syn", knock.TCPFlags{Set: knock.SYN}, ""},
		{"syn,!ack", knock.TCPFlags{Set: knock.SYN, Clear: knock.ACK}, ""},
		{"SYN, !ACK ,fin,,", knock.TCPFlags{Set: knock.SYN | knock.FIN, Clear: knock.ACK}, ""},
		{"fin,syn,rst,psh,ack,urg", knock.TCPFlags{Set: 0x3f}, ""},
		{"!fin,!syn,!rst,!psh,!ack,!urg", knock.TCPFlags{Clear: 0x3f}, ""},
		{"syn,syn", knock.TCPFlags{Set: knock.SYN}, ""},
		{"ece", knock.TCPFlags{}, `unknown tcp flag "ece"`},
		{"!", knock.TCPFlags{}, `unknown tcp flag "!"`},
		{"! syn", knock.TCPFlags{}, `unknown tcp flag "! syn"`},
		{"!ack,ack", knock.TCPFlags{}, "tcp flag ack is both required and forbidden"},
	}
	for _, tc := range tests {
		got, err := ParseTCPFlags(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseTCPFlags(%q) err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseTCPFlags(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if err == nil {
			if back, err := ParseTCPFlags(got.String()); err != nil || back != got {
				t.Errorf("round trip of %q via %q = %v, %v", tc.in, got.String(), back, err)
			}
		}
	}
}

func TestParseSource(t *testing.T) {
	tests := []struct{ in, want string }{
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"10.1.2.3/8", "10.0.0.0/8"},
		{"192.0.2.7", "192.0.2.7/32"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"2001:db8::1/32", "2001:db8::/32"},
		{"0.0.0.0/0", "0.0.0.0/0"},
		{"::/0", "::/0"},
		{"10.0.0.0/8 ", ""},
		{"::ffff:1.2.3.4", ""},
		{"fe80::1%eth0/64", ""},
		{"", ""},
	}
	for _, tc := range tests {
		got, err := ParseSource(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseSource(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("ParseSource(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	good := func() *Config {
		return &Config{Server: DefaultServer(), Doors: []Door{{
			Door: knock.Door{Name: "a", Sequence: []knock.Element{tcp(1)}, Timeout: time.Second},
			Open: []netport.Port{{Proto: netport.TCP, Num: 22}}, OpenFor: time.Minute,
		}}}
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"firewall", func(c *Config) { c.Server.Firewall = "" }, `server: firewall: "" is not a firewall`},
		{"on_stop", func(c *Config) { c.Server.OnStop = "x" }, `server: on_stop: "x" is not valid`},
		{"max_sources", func(c *Config) { c.Server.MaxSources = 0 }, "server: max_sources: 0 is out of range 1-2147483647"},
		{"sweep_guard", func(c *Config) { c.Server.SweepGuard = 2000 }, "sweep_guard: 2000 is out of range"},
		{"state_dir", func(c *Config) { c.Server.StateDir = "" }, "state_dir: must not be empty"},
		{"interface", func(c *Config) { c.Server.Interfaces = []string{"a b"} }, "server: interfaces:"},
		{"interface twice", func(c *Config) { c.Server.Interfaces = []string{"a", "a"} }, "listed twice"},
		{"name", func(c *Config) { c.Doors[0].Name = "" }, `door #1: name: "" is not a valid name`},
		{"name control", func(c *Config) { c.Doors[0].Name = "a\nb" }, `name: "a\nb" is not a valid name (want no control characters)`},
		{"no sequence", func(c *Config) { c.Doors[0].Sequence = nil }, `door "a": sequence: is empty`},
		{"port 0", func(c *Config) { c.Doors[0].Sequence[0].Num = 0 }, "sequence: element 1: tcp/0 is not a valid knock"},
		{"icmp port", func(c *Config) { c.Doors[0].Sequence[0] = knock.Element{Proto: netport.ICMP, Num: 3} }, "is not a valid knock"},
		{"flags", func(c *Config) { c.Doors[0].Flags = knock.TCPFlags{Set: 2, Clear: 2} }, "contradictory"},
		{"flags bits", func(c *Config) { c.Doors[0].Flags = knock.TCPFlags{Set: 0x40} }, "contradictory"},
		{"negative", func(c *Config) { c.Doors[0].Timeout = -1 }, "sequence_timeout: -1ns is negative"},
		{"gaps", func(c *Config) { c.Doors[0].MinGap, c.Doors[0].MaxGap = 2, 1 }, "max_gap: 1ns is less than min_gap 2ns"},
		{"source", func(c *Config) { c.Doors[0].Sources = []netip.Prefix{{}} }, "sources:"},
		{"target", func(c *Config) { c.Doors[0].Target = netip.MustParseAddr("::ffff:1.2.3.4") }, "target"},
		{"open", func(c *Config) { c.Doors[0].Open[0].Num = 0 }, "open: tcp/0 is not a port"},
		{"open twice", func(c *Config) { c.Doors[0].Open = append(c.Doors[0].Open, c.Doors[0].Open[0]) }, "listed twice"},
		{"open none", func(c *Config) { c.Server.Firewall = FirewallNone }, "firewall none cannot open ports"},
		{"open_for", func(c *Config) { c.Doors[0].OpenFor = 0 }, "open_for: 0s is out of range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.modify(c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestKeyLines: errors name the line of a key from BurntSushi's own positions, also inside
// multi-line strings and arrays, dotted and quoted keys, and in every table of an array.
func TestKeyLines(t *testing.T) {
	src := `# comment [not] = a table
top = "x" # [fake]
[server]
a = """
b = 1
[c]
"""
"q.k" = 'lit # not a comment'
d.e = [
  1, [2, 3], { x = "]" },
]
[[door]]
name = "one"
[ door . sub ]
z = 1
[[door]]
	name = 'two' # two
str = "a\"b=c"
esc = """x\"""" 
after = 1
`
	at := func(table string, index int, key ...string) place {
		var tk toml.Key
		if table != "" {
			tk = toml.Key{table}
		}
		return place{table: tk, index: index, key: key}
	}
	want := map[string]struct {
		at   place
		line int
	}{
		"top": {at("", -1, "top"), 2}, "server": {at("server", -1), 3}, "server.a": {at("server", -1, "a"), 4},
		"server.q.k": {at("server", -1, "q.k"), 8}, "server.d": {at("server", -1, "d"), 9}, "server.d.e": {at("server", -1, "d", "e"), 9},
		"door": {at("door", 0), 12}, "door#0": {at("door", 0), 12}, "door#0.name": {at("door", 0, "name"), 13},
		"door#0.sub": {at("door", 0, "sub"), 14}, "door#0.sub.z": {at("door", 0, "sub", "z"), 15},
		"door#1": {at("door", 1), 16}, "door#1.name": {at("door", 1, "name"), 17}, "door#1.str": {at("door", 1, "str"), 18},
		"door#1.esc": {at("door", 1, "esc"), 19}, "door#1.after": {at("door", 1, "after"), 20},
	}
	var top map[string]any
	md, err := toml.Decode(src, &top)
	if err != nil {
		t.Fatal(err)
	}
	ps := &positions{data: src, md: md, count: map[string]int{"door": 2}}
	for name, w := range want {
		if got := ps.line(w.at); got != w.line {
			t.Errorf("line of %s = %d, want %d", name, got, w.line)
		}
	}
}

// TestTestdataLoads keeps every example in testdata (including those of docs/CONFIG.md) valid.
func TestTestdataLoads(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.toml"))
	if err != nil || len(files) < 5 {
		t.Fatalf("testdata: %v, %v", files, err)
	}
	for _, f := range files {
		if _, err := Load(f, Overrides{}); err != nil {
			t.Error(err)
		}
	}
}
