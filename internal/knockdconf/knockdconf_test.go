package knockdconf

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

func tcp(n uint16) knock.Element { return knock.Element{Proto: netport.TCP, Num: n} }
func udp(n uint16) knock.Element { return knock.Element{Proto: netport.UDP, Num: n} }

var syn = knock.TCPFlags{Set: knock.SYN}

// server returns the server settings of a knockd.conf with the given [options].
func server(logFile string, iface ...string) config.Server {
	s := config.DefaultServer()
	s.Firewall = config.FirewallNone
	s.LogFile = logFile
	if len(iface) > 0 {
		s.Interfaces = iface
	}
	return s
}

// cmdDoor returns a door as knockd.conf describes it: commands only.
func cmdDoor(name string, seq []knock.Element, timeout time.Duration, flags knock.TCPFlags, cmd string) config.Door {
	return config.Door{
		Door:          knock.Door{Name: name, Sequence: seq, Flags: flags, Timeout: timeout},
		StartCommand:  cmd,
		StartCommand6: cmd,
		CmdTimeout:    10 * time.Second,
	}
}

func events(s string) string { return `echo "` + s + ` %IP% $(date +%s%N)" >> /tmp/kdr/run/events` }

func TestLoadReferenceConfs(t *testing.T) {
	dir := t.TempDir()
	ots := filepath.Join(dir, "ots.txt")
	if err := os.WriteFile(ots, []byte("# used\n\n 11001,11002,11003\n 12001,12002:udp,12003\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const log = "/tmp/kdr/run/knockd.log"
	basic := server(log)
	basic.PidFile = "/tmp/kdr/run/knockd.pid"
	tests := []struct {
		file string
		want config.Config
	}{{
		file: "basic.conf",
		want: config.Config{Server: basic, Doors: []config.Door{
			cmdDoor("openA", []knock.Element{tcp(7000), tcp(8000), tcp(9000)}, 5*time.Second, syn, events("A")),
			cmdDoor("openB", []knock.Element{tcp(7100), udp(8100), tcp(9100)}, 5*time.Second, knock.TCPFlags{}, events("B")),
		}},
	}, {
		file: "debian-default.conf",
		want: config.Config{Server: server(log), Doors: []config.Door{
			cmdDoor("openSSH", []knock.Element{tcp(7000), tcp(8000), tcp(9000)}, 5*time.Second, syn, events("openSSH")),
			cmdDoor("closeSSH", []knock.Element{tcp(9000), tcp(8000), tcp(7000)}, 5*time.Second, syn, events("closeSSH")),
			cmdDoor("openHTTPS", []knock.Element{tcp(12345), tcp(54321), tcp(24680), tcp(13579)}, 5*time.Second, syn, events("openHTTPS")),
		}},
	}, {
		file: "secret4.conf",
		want: config.Config{Server: server(log), Doors: []config.Door{
			cmdDoor("secret", []knock.Element{tcp(31337), tcp(1024), tcp(50000), tcp(8080)}, 10*time.Second, syn, events("secret")),
		}},
	}, {
		file: "single.conf",
		want: config.Config{Server: server(log), Doors: []config.Door{
			cmdDoor("bedrock", []knock.Element{udp(19132)}, 25*time.Second, knock.TCPFlags{}, `echo "X %IP%" >> /tmp/kdr/run/events`),
		}},
	}, {
		file: "target.conf",
		want: config.Config{Server: server(""), Doors: []config.Door{
			func() config.Door {
				d := cmdDoor("wol", []knock.Element{tcp(5000), tcp(5001)}, 25*time.Second, knock.TCPFlags{}, `echo "WOL %IP%" >> /tmp/kdr/run/events`)
				d.Target = netip.MustParseAddr("10.201.0.77")
				return d
			}(),
			cmdDoor("local", []knock.Element{tcp(5002), tcp(5003)}, 25*time.Second, knock.TCPFlags{}, `echo "LOCAL %IP%" >> /tmp/kdr/run/events`),
		}},
	}, {
		file: "v6.conf",
		want: config.Config{Server: server(log), Doors: []config.Door{
			func() config.Door {
				d := cmdDoor("ots", []knock.Element{tcp(11001), tcp(11002), tcp(11003)}, 5*time.Second, syn, events("OTS"))
				d.OneTimeFile = ots
				return d
			}(),
			func() config.Door {
				d := cmdDoor("v6a", []knock.Element{tcp(7200), tcp(7300)}, 25*time.Second, knock.TCPFlags{}, `echo "V4CMD %IP% %IP%" >> /tmp/kdr/run/events`)
				d.StartCommand6 = `echo "V6CMD [%IP%]" >> /tmp/kdr/run/events`
				return d
			}(),
			cmdDoor("v6b", []knock.Element{tcp(7400), tcp(7500)}, 25*time.Second, knock.TCPFlags{}, `echo "B-fallback %IP%" >> /tmp/kdr/run/events`),
			func() config.Door {
				d := cmdDoor("v6c", []knock.Element{tcp(7600), tcp(7700)}, 25*time.Second, knock.TCPFlags{}, `echo "C %IP%" >> /tmp/kdr/run/events`)
				d.StartCommand6 = ""
				return d
			}(),
			func() config.Door {
				d := cmdDoor("timed", []knock.Element{tcp(7800), tcp(7900)}, 25*time.Second, knock.TCPFlags{}, `echo "START %IP% $(date +%s)" >> /tmp/kdr/run/events`)
				d.StopCommand = `echo "STOP %IP% $(date +%s)" >> /tmp/kdr/run/events`
				d.StopCommand6 = d.StopCommand
				d.CmdTimeout = 4 * time.Second
				return d
			}(),
		}},
	}}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// The one-time sequences file named in v6.conf lives in the test's own directory.
			data = []byte(strings.ReplaceAll(string(data), "/tmp/kdr/run/ots.txt", ots))
			if err := os.WriteFile(filepath.Join(dir, tc.file), data, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := Load(filepath.Join(dir, tc.file), config.Overrides{})
			if err != nil {
				t.Fatal(err)
			}
			tc.want.Source = filepath.Join(dir, tc.file)
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("Load(%s):\n got %+v\nwant %+v", tc.file, *got, tc.want)
			}
		})
	}
}

func TestParseGrammar(t *testing.T) {
	tests := []struct {
		name, src string
		check     func(t *testing.T, c *config.Config)
	}{{
		name: "crlf, case-insensitive keys, first = splits, trimming",
		src:  "[options]\r\n\tLOGFILE=/l\r\n  PidFile =  /p  \r\n[door]\r\nSeQuEnCe = 1,2:UDP, 3 :tcp\r\ncommand = a=b == c # not a comment\r\n",
		check: func(t *testing.T, c *config.Config) {
			d := c.Doors[0]
			if c.Server.LogFile != "/l" || c.Server.PidFile != "/p" {
				t.Errorf("server = %+v", c.Server)
			}
			if !reflect.DeepEqual(d.Sequence, []knock.Element{tcp(1), udp(2), tcp(3)}) {
				t.Errorf("sequence = %v", d.Sequence)
			}
			if d.StartCommand != "a=b == c # not a comment" || d.StartCommand6 != d.StartCommand {
				t.Errorf("command = %q / %q", d.StartCommand, d.StartCommand6)
			}
		},
	}, {
		name: "UseSyslog anywhere, any case; [options] repeated after doors; Interface",
		src:  "usesyslog\n[d]\nsequence=1\nUSESYSLOG\n[options]\ninterface = eth1\n[options]\nInterface = wlan0\n",
		check: func(t *testing.T, c *config.Config) {
			if !c.Server.UseSyslog || !reflect.DeepEqual(c.Server.Interfaces, []string{"wlan0"}) {
				t.Errorf("server = %+v", c.Server)
			}
		},
	}, {
		name: "defaults",
		src:  "[d]\nsequence = 7000\n",
		check: func(t *testing.T, c *config.Config) {
			want := config.Config{Source: "k.conf", Server: server(""), Doors: []config.Door{
				cmdDoor("d", []knock.Element{tcp(7000)}, 25*time.Second, knock.TCPFlags{}, "")}}
			if !reflect.DeepEqual(*c, want) {
				t.Errorf("got %+v\nwant %+v", *c, want)
			}
			if c.Server.MaxSources != config.DefaultMaxSources || c.Server.SweepGuard != config.DefaultSweepGuard ||
				c.Server.OnStop != config.OnStopClose || c.Server.StateDir != config.DefaultStateDir || len(c.Doors[0].Open) != 0 {
				t.Errorf("server = %+v", c.Server)
			}
		},
	}, {
		name: "repeated key: last wins, sequence re-parsed",
		src:  "[d]\nsequence = 1,2,3\nsequence = 4:udp\nseq_timeout = 3\ntimeout = 9\ntcpflags = syn\ntcpflags = fin\ncommand = a\nstart_command = b\n",
		check: func(t *testing.T, c *config.Config) {
			d := c.Doors[0]
			if !reflect.DeepEqual(d.Sequence, []knock.Element{udp(4)}) || d.Timeout != 9*time.Second ||
				d.Flags != (knock.TCPFlags{Set: knock.FIN}) || d.StartCommand != "b" {
				t.Errorf("door = %+v", d)
			}
		},
	}, {
		name: "empty values; _6 present but empty; stop commands",
		src:  "[d]\nsequence = 1\ncommand =\nstart_command_6 = x6\nstop_command = s\nstop_command_6 =\ncmd_timeout = 0\nseq_timeout = 0\ntcpflags =\n",
		check: func(t *testing.T, c *config.Config) {
			d := c.Doors[0]
			if d.StartCommand != "" || d.StartCommand6 != "x6" || d.StopCommand != "s" || d.StopCommand6 != "" ||
				d.CmdTimeout != 0 || d.Timeout != 0 || d.Flags != (knock.TCPFlags{}) {
				t.Errorf("door = %+v", d)
			}
		},
	}, {
		name: "duplicate door names, [OPTIONS] is a door, odd names",
		src:  "[a]\nsequence=1\n[a]\nsequence=2\n[OPTIONS]\nsequence=3\n[ x y ]\nsequence=4\n[" + strings.Repeat("n", 130) + "]\nsequence=5\n",
		check: func(t *testing.T, c *config.Config) {
			var names []string
			for _, d := range c.Doors {
				names = append(names, d.Name)
			}
			want := []string{"a", "a", "OPTIONS", " x y ", strings.Repeat("n", 127)}
			if !reflect.DeepEqual(names, want) {
				t.Errorf("names = %q", names)
			}
		},
	}, {
		name: "sequence quirks knockd accepts",
		src:  "[d]\nsequence = ,1,,2:udp:junk,3: Tcp ,\ntcpflags = SYN,!ack,,URG,\n",
		check: func(t *testing.T, c *config.Config) {
			d := c.Doors[0]
			if !reflect.DeepEqual(d.Sequence, []knock.Element{tcp(1), udp(2), tcp(3)}) {
				t.Errorf("sequence = %v", d.Sequence)
			}
			if d.Flags != (knock.TCPFlags{Set: knock.SYN | knock.URG, Clear: knock.ACK}) {
				t.Errorf("flags = %v", d.Flags)
			}
		},
	}, {
		name: "32 ports, target IPv6, no doors at all is fine elsewhere",
		src:  "[d]\nsequence = " + strings.TrimSuffix(strings.Repeat("1,2,", 16), ",") + "\ntarget = 2001:db8::1\n",
		check: func(t *testing.T, c *config.Config) {
			d := c.Doors[0]
			if len(d.Sequence) != 32 || d.Target != netip.MustParseAddr("2001:db8::1") {
				t.Errorf("door = %+v", d)
			}
		},
	}, {
		name: "no doors",
		src:  "# nothing\n\n[options]\nUseSyslog\n",
		check: func(t *testing.T, c *config.Config) {
			if len(c.Doors) != 0 || !c.Server.UseSyslog {
				t.Errorf("config = %+v", c)
			}
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("k.conf", []byte(tc.src))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"directive before section", "\nsequence = 1\n", `k.conf:2: sequence: all directives must belong to a section`},
		{"bad section name", "[]\n", `k.conf:1: bad section name []`},
		{"bare word", "[d]\nsequence = 1\nsyslog\n", `k.conf:3: door "d": syntax error: "syslog" is not a directive (want key = value, or UseSyslog)`},
		{"usesyslog value", "[options]\nUseSyslog = yes\n", `k.conf:2: options: UseSyslog: syntax error: UseSyslog takes no value`},
		{"unknown option", "[options]\nLogFile = /l\nDebug = 1\n", `k.conf:3: options: syntax error: unknown key "Debug" in [options]`},
		{"door key in options", "[options]\nsequence = 1\n", `unknown key "sequence" in [options]`},
		{"option in door", "[d]\nsequence = 1\nlogfile = /l\n", `k.conf:3: door "d": syntax error: unknown key "logfile" (want Sequence,`},
		{"OPTIONS is a door", "[OPTIONS]\nLogFile = /l\n", `k.conf:2: door "OPTIONS": syntax error: unknown key "LogFile"`},
		{"unicode key fold", "[d]\nſequence = 1\n", `unknown key "ſequence"`},
		{"interface empty", "[options]\ninterface =\n", `k.conf:2: options: interface: empty interface name`},
		{"interface bad", "[options]\ninterface = eth0 eth1\n", `has a character that is not allowed`},
		{"empty sequence", "[a]\nsequence = 1\n\n[b]\ncommand = x\n", `k.conf:4: door "b": empty knock sequence`},
		{"sequence only commas", "[a]\nsequence = ,,\n", `k.conf:1: door "a": empty knock sequence`},
		{"33 ports", "[d]\nsequence = " + strings.Repeat("1,", 33) + "\n", `k.conf:2: door "d": sequence: more than 32 ports`},
		{"port too big", "[d]\nsequence = 1,70000\n", `k.conf:2: door "d": sequence: port 70000 is invalid (want 1-65535)`},
		{"port -1", "[d]\nSequence = 1,-1\n", `k.conf:2: door "d": Sequence: port "-1" is not a number in 1-65535 (knockd would read it as 65535)`},
		{"port abc", "[d]\nsequence = abc\n", `port "abc" is not a number in 1-65535 (knockd would read it as 0)`},
		{"port 0", "[d]\nsequence = 0:udp\n", `sequence: port 0 is invalid (want 1-65535)`},
		{"port blank", "[d]\nsequence = 1, ,2\n", `sequence: port 0 is invalid`},
		{"port trailing", "[d]\nsequence = 1,2 # x\n", `port "2 # x" is not a number in 1-65535 (knockd would read it as 2)`},
		{"port plus", "[d]\nsequence = +5\n", `port "+5" is not a number in 1-65535 (knockd would read it as 5)`},
		{"proto icmp", "[d]\nsequence = 1:icmp\n", `sequence: "1:icmp": unknown protocol "icmp" (want tcp or udp)`},
		{"proto empty", "[d]\nsequence = 1:\n", `unknown protocol ""`},
		{"seq_timeout garbage", "[d]\nsequence = 1\nseq_timeout = abc\n", `k.conf:3: door "d": seq_timeout: "abc" is not a whole number of seconds (knockd would read it as 0)`},
		{"seq_timeout unit", "[d]\nsequence = 1\nTimeout = 5s\n", `Timeout: "5s" is not a whole number of seconds (knockd would read it as 5)`},
		{"seq_timeout negative", "[d]\nsequence = 1\nseq_timeout = -5\n", `"-5" is not a whole number of seconds (knockd would read it as -5)`},
		{"seq_timeout empty", "[d]\nsequence = 1\nseq_timeout =\n", `"" is not a whole number of seconds`},
		{"seq_timeout huge", "[d]\nsequence = 1\nseq_timeout = 99999999999\n", `99999999999 seconds is too long (want at most 2147483647)`},
		{"cmd_timeout", "[d]\nsequence = 1\ncmd_timeout = 1.5\n", `cmd_timeout: "1.5" is not a whole number of seconds (knockd would read it as 1)`},
		{"tcpflags space", "[d]\nsequence = 1\ntcpflags = syn, ack\n", `k.conf:3: door "d": tcpflags: unrecognized flag " ack" (no spaces are allowed in the list)`},
		{"tcpflags unknown", "[d]\nsequence = 1\ntcpflags = syn,ece\n", `tcpflags: unknown tcp flag "ece"`},
		{"tcpflags bang", "[d]\nsequence = 1\ntcpflags = !\n", `unknown tcp flag "!"`},
		{"tcpflags conflict", "[d]\nsequence = 1\ntcpflags = syn,!syn\n", `tcpflags: tcp flag syn is both required and forbidden`},
		{"target", "[d]\nsequence = 1\ntarget = host.example\n", `k.conf:3: door "d": target: "host.example" is not an IP address`},
		{"target empty", "[d]\nsequence = 1\ntarget =\n", `target: "" is not an IP address`},
		{"one-time missing", "[d]\none_time_sequences = /nonexistent/ots\n", `k.conf:2: door "d": one_time_sequences: stat /nonexistent/ots: no such file or directory`},
		{"one-time dir", "[d]\none_time_sequences = /\n", `one_time_sequences: / is not a regular file`},
		{"sequence and one-time", "[d]\nsequence = 1\none_time_sequences = /x\n", `k.conf:3: door "d": one_time_sequences: a door has either Sequence or One_Time_Sequences, not both`},
		{"long line", "[d]\ncommand = " + strings.Repeat("x", 4086) + "\n", `k.conf:2: door "d": line is longer than 4095 bytes (knockd would split it)`},
		{"nul", "[d]\nsequence = 1\ncommand = a\x00b\n", `k.conf:3: door "d": line has a NUL byte`},
		{"control in name", "[a\tb]\n", `k.conf:1: section name "a\tb" has a control character`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("k.conf", []byte(tc.src))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", c)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %q\nwant it to contain %q", err, tc.want)
			}
			var ce *config.Error
			if !errors.As(err, &ce) || ce.File != "k.conf" {
				t.Errorf("err %v is not a *config.Error for k.conf", err)
			}
		})
	}
	// The longest line knockd reads whole is accepted.
	if _, err := Parse("k.conf", []byte("[d]\nsequence = 1\ncommand = "+strings.Repeat("x", 4085)+"\n")); err != nil {
		t.Errorf("4095-byte line: %v", err)
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "knockd.conf"), config.Overrides{})
	if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "knockdconf: ") {
		t.Errorf("err = %v", err)
	}
}

func TestOneTime(t *testing.T) {
	// The example of knockd's man page as tested against knockd 0.8 (CONFIG.md §4).
	const before = " 11001,11002,11003\n 12001,12002:udp,12003\n# a comment\n 13001,13002,13003\n"
	path := filepath.Join(t.TempDir(), "ots")
	if err := os.WriteFile(path, []byte(before), 0o600); err != nil {
		t.Fatal(err)
	}
	seqs := [][]knock.Element{
		{tcp(11001), tcp(11002), tcp(11003)},
		{tcp(12001), udp(12002), tcp(12003)},
		{tcp(13001), tcp(13002), tcp(13003)},
	}
	afters := []string{
		"#11001,11002,11003\n 12001,12002:udp,12003\n# a comment\n 13001,13002,13003\n",
		"#11001,11002,11003\n#12001,12002:udp,12003\n# a comment\n 13001,13002,13003\n",
		"#11001,11002,11003\n#12001,12002:udp,12003\n# a comment\n#13001,13002,13003\n",
	}
	for i, want := range seqs {
		got, err := NextOneTime(path)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d: NextOneTime = %v, %v; want %v", i, got, err, want)
		}
		if err := ConsumeOneTime(path, got); err != nil {
			t.Fatalf("step %d: ConsumeOneTime: %v", i, err)
		}
		data, _ := os.ReadFile(path)
		if string(data) != afters[i] {
			t.Fatalf("step %d: file = %q, want %q", i, data, afters[i])
		}
	}
	if _, err := NextOneTime(path); !errors.Is(err, ErrNoSequence) {
		t.Errorf("NextOneTime on a used-up file: err = %v, want ErrNoSequence", err)
	}
	if err := ConsumeOneTime(path, seqs[0]); err == nil || !strings.Contains(err.Error(), "not in the file") {
		t.Errorf("ConsumeOneTime of a used sequence: err = %v", err)
	}
}

func TestOneTimeSkipsAndOverwrites(t *testing.T) {
	// Invalid lines are skipped silently; a line without a leading space loses its first digit;
	// CRLF and a last line with no newline work; the file length never changes.
	const src = "\r\n  # c\r\nabc\r\n1:icmp\r\n-1,2\r\n" + "7000,8000:udp\r\n9000"
	path := filepath.Join(t.TempDir(), "ots")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := NextOneTime(path)
	if err != nil || !reflect.DeepEqual(got, []knock.Element{tcp(7000), udp(8000)}) {
		t.Fatalf("NextOneTime = %v, %v", got, err)
	}
	// A later line can be consumed too (knockd searches the file for the used sequence).
	if err := ConsumeOneTime(path, []knock.Element{tcp(9000)}); err != nil {
		t.Fatal(err)
	}
	if err := ConsumeOneTime(path, got); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if want := strings.Replace(strings.Replace(src, "7000,", "#000,", 1), "\n9000", "\n#000", 1); string(data) != want {
		t.Errorf("file = %q, want %q", data, want)
	}
	if _, err := NextOneTime(path); !errors.Is(err, ErrNoSequence) {
		t.Errorf("err = %v, want ErrNoSequence", err)
	}
	if _, err := NextOneTime(filepath.Dir(path)); err == nil {
		t.Error("NextOneTime on a directory succeeded")
	}
	if err := ConsumeOneTime(filepath.Join(filepath.Dir(path), "none"), got); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ConsumeOneTime on a missing file: %v", err)
	}
}

func TestParseSequence(t *testing.T) {
	tests := []struct {
		in   string
		want []knock.Element
		err  bool
	}{
		{"7000,8000,9000", []knock.Element{tcp(7000), tcp(8000), tcp(9000)}, false},
		{"1:udp,2:UDP,3:Tcp", []knock.Element{udp(1), udp(2), tcp(3)}, false},
		{" 1 : udp , 2", []knock.Element{udp(1), tcp(2)}, false},
		{"65535", []knock.Element{tcp(65535)}, false},
		{"1,1,1", []knock.Element{tcp(1), tcp(1), tcp(1)}, false},
		{"", nil, false},
		{"0", nil, true},
		{"65536", nil, true},
		{"1x", nil, true},
		{"1:sctp", nil, true},
		{"udp:1", nil, true},
	}
	for _, tc := range tests {
		got, err := ParseSequence(tc.in)
		if (err != nil) != tc.err || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseSequence(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestAtoi(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"", 0}, {"abc", 0}, {"12", 12}, {" \t-1", -1}, {"+7x", 7}, {"5s", 5}, {"99999999999", 1<<31 - 1},
		{"-99999999999", -1 << 31}, {"- 1", 0},
	}
	for _, tc := range tests {
		if got := atoi(tc.in); got != tc.want {
			t.Errorf("atoi(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestParseOpenExtension(t *testing.T) {
	cfg, err := Parse("k.conf", []byte("[d]\nsequence = 1,2\nopen = tcp/22,udp/53\nopen_for = 45\ncommand = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Doors[0]
	if fmt.Sprint(d.Open) != "[tcp/22 udp/53]" || d.OpenFor != 45*time.Second || cfg.Server.Firewall != "nftables" {
		t.Errorf("open %v for %s, firewall %s", d.Open, d.OpenFor, cfg.Server.Firewall)
	}
	if _, err := Parse("k.conf", []byte("[d]\nsequence = 1,2\nopen = tcp/0\n")); err == nil || !strings.Contains(err.Error(), "k.conf:3") {
		t.Errorf("bad open: %v", err)
	}
}
