// Package knockdconf reads knockd 0.8's knockd.conf, and its one-time sequence files, into sesame's configuration model.
package knockdconf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

// Defaults and limits of knockd 0.8.
const (
	DefaultSeqTimeout = 25 * time.Second
	DefaultCmdTimeout = 10 * time.Second
	MaxLine           = 4095 // longest line knockd reads whole
	maxName           = 127  // knockd keeps this much of a section name
	maxSeconds        = 1<<31 - 1
	maxOneTimeFile    = 16 << 20 // a sanity limit on one-time sequence files
)

// ErrNoSequence is returned when a one-time sequences file has no valid line left.
var ErrNoSequence = errors.New("no valid sequence left")

// Load reads and parses the knockd.conf file at path, applies ov and validates the result.
func Load(path string, ov config.Overrides) (*config.Config, error) {
	data, _, err := config.ReadConfigFile(path) // its commands run as root: refused if others could change it
	if err != nil {
		return nil, fmt.Errorf("knockdconf: %w", err)
	}
	return parse(path, data, ov)
}

// door is a door being parsed, with what the model cannot hold.
type door struct {
	config.Door
	line          int // of its section header
	seqKey        string
	start6, stop6 bool // the _6 commands were given
}

// parser holds the state of one Parse.
type parser struct {
	file    string
	line    int
	section string // "" before the first section, "options", or `door "name"`
	door    *door  // the current door; nil in [options]
}

func (p *parser) errorf(key, format string, args ...any) error {
	return &config.Error{File: p.file, Line: p.line, Section: p.section, Key: key, Err: fmt.Errorf(format, args...)}
}

// Parse parses a knockd.conf; name is the file name used in messages and as Config.Source. The
// doors open nothing themselves (Server.Firewall is none): they run their commands, as in knockd.
// The result is validated.
func Parse(name string, data []byte) (*config.Config, error) {
	return parse(name, data, config.Overrides{})
}

func parse(name string, data []byte, ov config.Overrides) (*config.Config, error) {
	cfg := &config.Config{Source: name, Server: config.DefaultServer()}
	cfg.Server.Firewall = config.FirewallNone
	p := &parser{file: name}
	var doors []*door
	for i, raw := range bytes.Split(data, []byte("\n")) {
		p.line = i + 1
		if len(raw) > MaxLine {
			return nil, p.errorf("", "line is longer than %d bytes (knockd would split it)", MaxLine)
		}
		if bytes.IndexByte(raw, 0) >= 0 {
			return nil, p.errorf("", "line has a NUL byte")
		}
		s := trim(string(raw))
		if s == "" || s[0] == '#' {
			continue
		}
		if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
			d, err := p.header(s[1 : len(s)-1])
			if err != nil {
				return nil, err
			}
			if d != nil {
				doors = append(doors, d)
			}
			continue
		}
		key, value, ok := strings.Cut(s, "=")
		if !ok {
			if upper(s) == "USESYSLOG" { // a bare keyword, global wherever it appears
				cfg.Server.UseSyslog = true
				continue
			}
			return nil, p.errorf("", "syntax error: %q is not a directive (want key = value, or UseSyslog)", s)
		}
		key, value = trim(key), trim(value)
		var err error
		switch {
		case p.section == "":
			err = p.errorf(key, "all directives must belong to a section")
		case p.door == nil:
			err = p.option(&cfg.Server, key, value)
		default:
			err = p.directive(p.door, key, value)
		}
		if err != nil {
			return nil, err
		}
	}
	for _, d := range doors {
		if len(d.Sequence) == 0 {
			return nil, &config.Error{File: name, Line: d.line, Section: fmt.Sprintf("door %q", d.Name),
				Err: errors.New("empty knock sequence (set Sequence or One_Time_Sequences)")}
		}
		if !d.start6 {
			d.StartCommand6 = d.StartCommand
		}
		if !d.stop6 {
			d.StopCommand6 = d.StopCommand
		}
		if len(d.Open) > 0 {
			// A door that names ports needs a gate; the command line chooses which (--firewall).
			cfg.Server.Firewall = config.FirewallNftables
			if d.OpenFor == 0 {
				d.OpenFor = config.DefaultOpenFor
			}
		}
		cfg.Doors = append(cfg.Doors, d.Door)
	}
	cfg.Apply(ov)
	if err := cfg.Validate(); err != nil {
		return nil, &config.Error{File: name, Err: err}
	}
	return cfg, nil
}

// header starts the section named name; it returns the new door, or nil for [options].
func (p *parser) header(name string) (*door, error) {
	if name == "" {
		return nil, p.errorf("", "bad section name []")
	}
	if name == "options" { // case-sensitive, as in knockd: [OPTIONS] is a door
		p.section, p.door = "options", nil
		return nil, nil
	}
	if len(name) > maxName {
		name = name[:maxName]
	}
	for _, c := range name {
		if c < ' ' || c == 0x7f {
			return nil, p.errorf("", "section name %q has a control character", name)
		}
	}
	p.door = &door{line: p.line}
	p.door.Name = name
	p.door.Timeout = DefaultSeqTimeout
	p.door.CmdTimeout = DefaultCmdTimeout
	p.section = fmt.Sprintf("door %q", name)
	return p.door, nil
}

// option applies one [options] directive.
func (p *parser) option(srv *config.Server, key, value string) error {
	switch upper(key) {
	case "LOGFILE":
		srv.LogFile = value
	case "PIDFILE":
		srv.PidFile = value
	case "INTERFACE":
		if err := config.CheckInterface(value); err != nil {
			return p.errorf(key, "%w", err)
		}
		srv.Interfaces = []string{value}
	case "USESYSLOG":
		return p.errorf(key, "syntax error: UseSyslog takes no value (write UseSyslog alone on its line)")
	default:
		return p.errorf("", "syntax error: unknown key %q in [options] (want LogFile, PidFile, Interface or UseSyslog)", key)
	}
	return nil
}

// directive applies one directive of a door section.
func (p *parser) directive(d *door, key, value string) error {
	var err error
	switch k := upper(key); k {
	case "SEQUENCE", "ONE_TIME_SEQUENCES":
		if d.seqKey != "" && d.seqKey != k {
			return p.errorf(key, "a door has either Sequence or One_Time_Sequences, not both")
		}
		d.seqKey = k
		if k == "SEQUENCE" {
			d.Sequence, err = ParseSequence(value)
			break
		}
		d.Sequence, err = nextOneTime(value)
		d.OneTimeFile = value
	case "SEQ_TIMEOUT", "TIMEOUT":
		d.Timeout, err = seconds(value)
	case "CMD_TIMEOUT":
		d.CmdTimeout, err = seconds(value)
	case "TCPFLAGS":
		d.Flags, err = parseFlags(value)
	case "START_COMMAND", "COMMAND":
		d.StartCommand = value
	case "START_COMMAND_6", "COMMAND_6":
		d.StartCommand6, d.start6 = value, true
	case "STOP_COMMAND":
		d.StopCommand = value
	case "STOP_COMMAND_6":
		d.StopCommand6, d.stop6 = value, true
	case "TARGET":
		d.Target, err = config.ParseTarget(value)
	case "OPEN":
		// sesame extension: ports the door opens through sesame's gate (--firewall nftables).
		d.Open = nil
		for item := range strings.SplitSeq(value, ",") {
			var port netport.Port
			if port, err = netport.Parse(item); err != nil {
				break
			}
			d.Open = append(d.Open, port)
		}
	case "OPEN_FOR":
		// sesame extension: how long a grant of Open lasts, in seconds.
		d.OpenFor, err = seconds(value)
	default:
		return p.errorf("", "syntax error: unknown key %q (want Sequence, One_Time_Sequences, Seq_Timeout, "+
			"TCPFlags, Start_Command, Start_Command_6, Cmd_Timeout, Stop_Command, Stop_Command_6, Target, "+
			"or sesame's Open and Open_For)", key)
	}
	if err != nil {
		return p.errorf(key, "%w", err)
	}
	return nil
}

// ParseSequence parses a knockd sequence, "7000,8000:udp, 9000 :TCP": up to 32 comma-separated
// ports, each with an optional protocol (tcp, the default, or udp; any case). Empty entries are
// skipped, as in knockd. Unlike knockd, a port that is not a plain decimal number in 1-65535 is an
// error rather than whatever atoi makes of it.
func ParseSequence(s string) ([]knock.Element, error) {
	var seq []knock.Element
	for item := range strings.SplitSeq(s, ",") {
		if item == "" {
			continue
		}
		if len(seq) == config.MaxSequence {
			return nil, fmt.Errorf("more than %d ports", config.MaxSequence)
		}
		port, proto, hasProto := strings.Cut(item, ":")
		e := knock.Element{Proto: netport.TCP}
		if hasProto {
			proto, _, _ = strings.Cut(proto, ":") // knockd ignores anything after a second ':'
			switch upper(trim(proto)) {
			case "TCP":
			case "UDP":
				e.Proto = netport.UDP
			default:
				return nil, fmt.Errorf("%q: unknown protocol %q (want tcp or udp)", trim(item), trim(proto))
			}
		}
		n, err := netport.ParseNumber(trim(port))
		if err != nil {
			v := atoi(port)
			if v > 65535 || v == 0 && strings.Trim(port, " \t\n\v\f\r0") == "" {
				return nil, fmt.Errorf("port %d is invalid (want 1-65535)", v)
			}
			return nil, fmt.Errorf("port %q is not a number in 1-65535 (knockd would read it as %d)",
				trim(port), uint16(v))
		}
		e.Num = n
		seq = append(seq, e)
	}
	return seq, nil
}

// seconds parses a whole number of seconds. knockd reads it with atoi; sesame wants a plain
// decimal number.
func seconds(s string) (time.Duration, error) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a whole number of seconds (knockd would read it as %d)", s, atoi(s))
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > maxSeconds {
		return 0, fmt.Errorf("%s seconds is too long (want at most %d)", s, maxSeconds)
	}
	return time.Duration(n) * time.Second, nil
}

// parseFlags parses a TCPFlags value as knockd does: comma-separated names, "!" for must be clear,
// no spaces inside an item. A flag both required and forbidden is an error (knockd accepts it, and
// the door then never matches).
func parseFlags(s string) (knock.TCPFlags, error) {
	for item := range strings.SplitSeq(s, ",") {
		if strings.ContainsAny(item, " \t\v\f\r") {
			return knock.TCPFlags{}, fmt.Errorf("unrecognized flag %q (no spaces are allowed in the list)", item)
		}
	}
	return config.ParseTCPFlags(s)
}

// atoi is C's atoi, saturated to the int32 range: it is only used to tell what knockd would have
// read.
func atoi(s string) int64 {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	neg := false
	if s != "" && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		s = s[1:]
	}
	var n int64
	for i := 0; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		n = min(n*10+int64(s[i]-'0'), 1<<31)
	}
	if neg {
		n = -n
	}
	return max(min(n, 1<<31-1), -1<<31)
}

// NextOneTime returns the active sequence of a one-time sequences file: its first valid line.
// Blank lines, lines starting with "#" and lines that do not parse are skipped, as in knockd. It
// returns an error wrapping ErrNoSequence when no line is left.
func NextOneTime(path string) ([]knock.Element, error) {
	seq, err := nextOneTime(path)
	if err != nil {
		return nil, fmt.Errorf("one-time sequences: %w", err)
	}
	return seq, nil
}

func nextOneTime(path string) ([]knock.Element, error) {
	data, err := readOneTime(path, os.O_RDONLY, nil)
	if err != nil {
		return nil, err
	}
	if lines := oneTimeLines(data); len(lines) > 0 {
		return lines[0].seq, nil
	}
	return nil, fmt.Errorf("%s: %w", path, ErrNoSequence)
}

// ConsumeOneTime marks seq as used in a one-time sequences file, as knockd does: the first byte of
// the first valid line holding seq is overwritten with '#', so the file keeps its length. Start
// each line with a space so that no digit of the sequence is overwritten.
func ConsumeOneTime(path string, seq []knock.Element) error {
	var f *os.File
	data, err := readOneTime(path, os.O_RDWR, &f)
	if err != nil {
		return fmt.Errorf("one-time sequences: %w", err)
	}
	defer f.Close()
	for _, l := range oneTimeLines(data) {
		if !slices.Equal(l.seq, seq) {
			continue
		}
		if _, err := f.WriteAt([]byte{'#'}, int64(l.offset)); err != nil {
			return fmt.Errorf("one-time sequences: %w", err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("one-time sequences: %w", err)
		}
		return nil
	}
	return fmt.Errorf("one-time sequences %s: the sequence is not in the file", path)
}

// readOneTime reads a one-time sequences file, which must be a regular file of at most
// maxOneTimeFile bytes. With keep, the file
// stays open and is stored there; otherwise it is closed.
func readOneTime(path string, flag int, keep **os.File) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if fi.Size() > maxOneTimeFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxOneTimeFile)
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxOneTimeFile+1))
	if err == nil && len(data) > maxOneTimeFile {
		err = fmt.Errorf("%s is larger than %d bytes", path, maxOneTimeFile)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	if keep != nil {
		*keep = f
	} else {
		f.Close()
	}
	return data, nil
}

type oneTimeLine struct {
	offset int // of the first byte of the line
	seq    []knock.Element
}

// oneTimeLines returns the valid lines of a one-time sequences file, in order.
func oneTimeLines(data []byte) []oneTimeLine {
	var out []oneTimeLine
	for off := 0; off < len(data); {
		end := bytes.IndexByte(data[off:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += off
		}
		s := trim(string(data[off:end]))
		if s != "" && s[0] != '#' && !strings.ContainsRune(s, 0) {
			if seq, err := ParseSequence(s); err == nil && len(seq) > 0 {
				out = append(out, oneTimeLine{offset: off, seq: seq})
			}
		}
		off = end + 1
	}
	return out
}

// trim removes C's isspace characters from both ends, as knockd does.
func trim(s string) string { return strings.Trim(s, " \t\n\v\f\r") }

// upper upper-cases ASCII letters only, like C's toupper.
func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
