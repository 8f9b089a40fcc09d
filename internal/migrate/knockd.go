package migrate

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/knockdconf"
	"github.com/sesame-knock/sesame/internal/netport"
)

// knockdSection is where a door of a knockd.conf is: the line of its header and of each of its
// directives (by upper-case key, the last one).
type knockdSection struct {
	line int
	keys map[string]int
}

// scanKnockd finds the doors of a knockd.conf that knockdconf has parsed (so it is well formed),
// with knockdconf's rules for lines and section headers, and the lines of [options] directives.
func scanKnockd(data []byte) (doors []knockdSection, options map[string]int) {
	options = map[string]int{}
	var cur map[string]int
	for i, raw := range bytes.Split(data, []byte("\n")) {
		s := strings.Trim(string(raw), " \t\n\v\f\r")
		if s == "" || s[0] == '#' {
			continue
		}
		if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
			if s[1:len(s)-1] == "options" {
				cur = options
				continue
			}
			doors = append(doors, knockdSection{line: i + 1, keys: map[string]int{}})
			cur = doors[len(doors)-1].keys
			continue
		}
		key, _, ok := strings.Cut(s, "=")
		if !ok && strings.EqualFold(s, "UseSyslog") {
			options["USESYSLOG"] = i + 1 // global wherever it is
			continue
		}
		if ok && cur != nil {
			cur[strings.ToUpper(strings.Trim(key, " \t\n\v\f\r"))] = i + 1
		}
	}
	return doors, options
}

// Knockd migrates the knockd.conf text data; name is its file name, for comments and messages.
// ov are the overrides sesame server --knockd-conf would run it with: as there, a door that opens
// ports (sesame's Open extension) needs ov.Firewall. It reads the one-time sequence files the
// configuration names, as the server does.
func Knockd(name string, data []byte, ov config.Overrides) (*Result, error) {
	legacy, err := knockdconf.Parse(name, data)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	if ov.Firewall == "" && len(legacy.OpenPorts()) > 0 {
		return nil, fmt.Errorf("migrate: %s: doors name ports to open (Open = %v): choose sesame's gate with --firewall %s or --firewall %s, "+
			"as sesame server --knockd-conf needs", name, legacy.OpenPorts(), config.FirewallNftables, config.FirewallIptables)
	}
	legacy.Apply(ov)
	if err := legacy.Validate(); err != nil {
		return nil, fmt.Errorf("migrate: %s: %w", name, err)
	}
	secs, opts := scanKnockd(data)
	if len(secs) != len(legacy.Doors) {
		return nil, fmt.Errorf("migrate: %s: found %d door sections, the parser %d", name, len(secs), len(legacy.Doors))
	}
	at := func(line int) string { return fmt.Sprintf("%s:%d", name, line) }
	w := &writer{}
	w.comment("sesame configuration migrated by `sesame migrate knockd` from %s.", name)
	w.comment("Check it with: sesame server -c FILE --check")
	w.line("")

	srv := legacy.Server
	w.line("[server]")
	switch {
	case ov.Firewall != "":
		w.comment("From --firewall, as sesame server --knockd-conf ran it.")
	case srv.Firewall == config.FirewallNone:
		w.comment("knockd doors run commands and open nothing themselves: sesame touches no firewall.")
	}
	w.str("firewall", string(srv.Firewall))
	if len(srv.Interfaces) > 0 {
		w.comment("%s: Interface", at(opts["INTERFACE"]))
		w.list("interfaces", srv.Interfaces)
	} else {
		w.comment("knockd.conf sets no Interface: knockd itself listens on eth0 only, sesame on every")
		w.comment("interface (also with --knockd-conf). To watch one: interfaces = [\"eth0\"]")
	}
	if srv.LogFile != "" {
		w.comment("%s: LogFile", at(opts["LOGFILE"]))
		w.str("log_file", srv.LogFile)
	}
	if srv.UseSyslog {
		w.comment("%s: UseSyslog", at(opts["USESYSLOG"]))
		w.bool("use_syslog", true)
	}
	if srv.PidFile != "" {
		w.comment("%s: PidFile", at(opts["PIDFILE"]))
		w.str("pid_file", srv.PidFile)
	}

	var names []string
	for i, d := range legacy.Doors {
		sec := secs[i]
		section := fmt.Sprintf("door %q", d.Name)
		where := func(key string) string {
			if l, ok := sec.keys[key]; ok {
				return at(l)
			}
			return at(sec.line)
		}
		if err := checkKnockdDoor(name, sec, section, d); err != nil {
			return nil, err
		}
		native := doorName(d.Name, names)
		names = append(names, native)
		w.line("")
		w.comment("%s: [%s]", at(sec.line), d.Name)
		if native != d.Name {
			w.comment("renamed: a native door name is unique and made of letters, digits, _ . and - (it only names the door in logs)")
		}
		w.line("[[door]]")
		w.str("name", native)
		w.list("sequence", elements(d.Sequence))
		if _, ok := sec.keys["SEQ_TIMEOUT"]; !ok {
			if _, ok := sec.keys["TIMEOUT"]; !ok {
				w.comment("knockd's default Seq_Timeout, 25 s (a native door's default is 10 s)")
			}
		}
		w.duration("sequence_timeout", d.Timeout)
		if d.Flags == (knock.TCPFlags{}) {
			w.comment("no TCPFlags: any TCP segment counts, as in knockd (a native door's default is \"syn,!ack\",")
			w.comment("a plain SYN, which is what knock clients send: consider it)")
		} else {
			w.comment("%s: TCPFlags", where("TCPFLAGS"))
		}
		w.str("tcp_flags", d.Flags.String())
		if d.Target.IsValid() {
			w.str("target", d.Target.String())
		}
		if len(d.Open) > 0 {
			w.comment("%s: Open, Open_For (sesame's extension)", where("OPEN"))
			w.list("open", ports(d.Open))
			w.duration("open_for", d.OpenFor)
		}
		cmd := func(key, native, value string) {
			if suggest := firewallHint(value); suggest != "" {
				w.comment("%s: %s changes the firewall. sesame can open the port itself, with a grant", where(key), commandNames[key])
				w.comment("that the kernel ends on time even if the daemon dies: %s and open_for,", suggest)
				w.comment("instead of commands. The command is kept, so that nothing changes until you choose.")
			}
			w.str(native, value)
		}
		if d.StartCommand != "" || d.StartCommand6 != "" {
			cmd(startKey(sec, "START_COMMAND", "COMMAND"), "command", d.StartCommand)
		}
		if d.StartCommand6 != d.StartCommand {
			cmd(startKey(sec, "START_COMMAND_6", "COMMAND_6"), "command_6", d.StartCommand6)
		}
		if d.StopCommand != "" {
			cmd("STOP_COMMAND", "stop_command", d.StopCommand)
		}
		if d.StopCommand6 != d.StopCommand {
			cmd("STOP_COMMAND_6", "stop_command_6", d.StopCommand6)
		}
		w.duration("cmd_timeout", d.CmdTimeout)
	}
	if w.err != nil {
		return nil, fmt.Errorf("migrate: %s: %w", name, w.err)
	}
	return &Result{TOML: []byte(w.b.String()), Legacy: legacy, doorNames: names}, nil
}

// checkKnockdDoor refuses what a native door cannot say.
func checkKnockdDoor(file string, sec knockdSection, section string, d config.Door) error {
	line := func(key string) int {
		if l, ok := sec.keys[key]; ok {
			return l
		}
		return sec.line
	}
	switch {
	case d.OneTimeFile != "":
		return notExpressible(file, line("ONE_TIME_SEQUENCES"), section, "One_Time_Sequences %s: a native door has one fixed sequence; "+
			"keep running this door with --knockd-conf, or give it a Sequence", d.OneTimeFile)
	case d.Timeout == 0:
		return notExpressible(file, line("SEQ_TIMEOUT"), section, "Seq_Timeout 0: a native door's sequence_timeout is more than 0")
	case d.CmdTimeout > config.MaxCmdTimeout:
		return notExpressible(file, line("CMD_TIMEOUT"), section, "Cmd_Timeout %v: a native door's cmd_timeout is at most %v", d.CmdTimeout, config.MaxCmdTimeout)
	case len(d.Open) == 0 && d.StartCommand == "" && d.StartCommand6 == "":
		return notExpressible(file, sec.line, section, "the door runs no command and opens nothing; a native door must do one of them (remove the door)")
	}
	for j := 1; j < len(d.Sequence); j++ {
		if d.Sequence[j] == d.Sequence[j-1] {
			return notExpressible(file, line("SEQUENCE"), section, "Sequence: knocks %d and %d are both %s; a native sequence never "+
				"repeats a knock twice in a row (it would be taken for a retransmission)", j, j+1, element(d.Sequence[j]))
		}
	}
	return nil
}

// startKey is the name the door used for its start command.
func startKey(sec knockdSection, keys ...string) string {
	best, line := keys[0], -1
	for _, k := range keys {
		if l, ok := sec.keys[k]; ok && l > line {
			best, line = k, l
		}
	}
	return best
}

// commandNames are knockd's spellings of the command keys.
var commandNames = map[string]string{
	"COMMAND": "Command", "START_COMMAND": "Start_Command", "COMMAND_6": "Command_6",
	"START_COMMAND_6": "Start_Command_6", "STOP_COMMAND": "Stop_Command", "STOP_COMMAND_6": "Stop_Command_6",
}

var nativeName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// doorName makes a knockd section name a native door name, unique among taken.
func doorName(name string, taken []string) string {
	n := name
	if !nativeName.MatchString(n) {
		n = strings.Map(func(r rune) rune {
			if r < 0x80 && nativeName.MatchString(string(r)) {
				return r
			}
			return '_'
		}, n)
	}
	base := n
	for i := 2; slices.Contains(taken, n); i++ {
		n = fmt.Sprintf("%s-%d", base, i)
	}
	return n
}

// element writes a knock in the native syntax.
func element(e knock.Element) string {
	if e.Proto == netport.ICMP {
		return "icmp"
	}
	return fmt.Sprintf("%d/%s", e.Num, e.Proto)
}

func elements(seq []knock.Element) []string {
	out := make([]string, len(seq))
	for i, e := range seq {
		out[i] = element(e)
	}
	return out
}

func ports(ps []netport.Port) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

var (
	firewallTool = regexp.MustCompile(`(^|[^A-Za-z0-9_-])(iptables|ip6tables|iptables-legacy|iptables-nft|nft|ufw|firewall-cmd|ipset)([^A-Za-z0-9_-]|$)`)
	dport        = regexp.MustCompile(`-p\s+(tcp|udp)\b.*--dports?\s+(\d+)`)
)

// firewallHint suggests the open setting for a command that changes the firewall ("" when it
// does not).
func firewallHint(cmd string) string {
	if !firewallTool.MatchString(cmd) {
		return ""
	}
	if m := dport.FindStringSubmatch(cmd); m != nil {
		return fmt.Sprintf("open = [\"%s/%s\"]", m[1], m[2])
	}
	return "open = [\"tcp/PORT\"]"
}
