package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

// Limits on values a configuration may hold.
const (
	MaxSequence    = 32             // elements in a knock sequence (knockd's limit)
	MaxSweepGuard  = 1024           // widest sweep guard band
	MinOpenFor     = time.Second    // shortest open_for
	MaxOpenFor     = 24 * time.Hour // longest open_for
	MaxCmdTimeout  = 24 * time.Hour // longest cmd_timeout
	maxIfaceLength = 15             // Linux IFNAMSIZ - 1
)

// DefaultTCPFlags is the TCP flag condition of a native door that sets no tcp_flags: a plain SYN,
// the packet a client's connect() sends, and never a segment of an established connection.
var DefaultTCPFlags = knock.TCPFlags{Set: knock.SYN, Clear: knock.ACK}

// Error is a configuration error, located as precisely as the file format allows.
type Error struct {
	File    string // file name as given to Load or Parse
	Line    int    // 1-based line, 0 when unknown
	Section string // as in `server` or `door "ssh"`; may be empty
	Key     string // the key at fault; may be empty
	Err     error
}

// Error returns "file:line: section: key: message", leaving out the parts that are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	for _, s := range []string{e.Section, e.Key} {
		if s != "" {
			b.WriteString(": " + s)
		}
	}
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("invalid configuration")
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Load reads and parses the native TOML configuration file at path, refused when someone other
// than root and the user running sesame could change it (ReadConfigFile).
func Load(path string) (*Config, error) {
	data, _, err := ReadConfigFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse parses a native TOML configuration; name is the file name used in messages and as
// Config.Source. The result is validated.
func Parse(name string, data []byte) (*Config, error) {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			line := pe.Position.Line
			if st := pe.Position.Start; st >= 0 && st <= len(data) {
				line = 1 + bytes.Count(data[:st], []byte("\n")) // toml counts a bad newline as the next line
			}
			return nil, &Error{File: name, Line: line, Err: errors.New(pe.Message)}
		}
		return nil, &Error{File: name, Err: err}
	}
	p := &parser{file: name, lines: keyLines(data)}
	cfg := &Config{Source: name, Server: DefaultServer()}
	for _, k := range sortedKeys(raw) {
		if k != "server" && k != "door" && k != "spa" {
			p.fail(k, "", "", fmt.Errorf("unknown key %q (want [server], [[door]] or [spa])", k))
		}
	}
	if v, ok := raw["server"]; ok {
		p.server(v, &cfg.Server)
	}
	if v, ok := raw["door"]; ok {
		cfg.Doors = p.doors(v, cfg.Server.Firewall)
	}
	if v, ok := raw["spa"]; ok {
		cfg.SPA = p.spa(v, cfg.Server.Firewall)
	}
	if p.err != nil {
		return nil, p.err
	}
	if err := cfg.Validate(); err != nil {
		return nil, &Error{File: name, Err: err}
	}
	return cfg, nil
}

// parser walks the decoded TOML tree and keeps the first error.
type parser struct {
	file  string
	lines map[string]int
	err   error
}

// fail records the first error; path locates it (as built by keyLines), section and key name it.
func (p *parser) fail(path, section, key string, err error) {
	if p.err != nil {
		return
	}
	p.err = &Error{File: p.file, Line: p.line(path), Section: section, Key: key, Err: err}
}

// line finds the line of path, or of its nearest located parent.
func (p *parser) line(path string) int {
	for path != "" {
		if n, ok := p.lines[path]; ok {
			return n
		}
		i := strings.LastIndexAny(path, ".#")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// table is one TOML table being read: every key must be taken, the rest are unknown.
type table struct {
	p       *parser
	m       map[string]any
	path    string // as in "server" or "door#0"
	section string // for messages
	taken   map[string]bool
}

func (p *parser) table(v any, path, section string) (*table, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		p.fail(path, "", path, fmt.Errorf("want a table, got %s", typeName(v)))
		return nil, false
	}
	return &table{p: p, m: m, path: path, section: section, taken: map[string]bool{}}, true
}

// get returns the value of key, if present, and marks it known.
func (t *table) get(key string) (any, bool) {
	t.taken[key] = true
	v, ok := t.m[key]
	return v, ok
}

// fail records an error about key.
func (t *table) fail(key string, err error) {
	t.p.fail(t.path+"."+key, t.section, key, err)
}

// failf records an error about key.
func (t *table) failf(key, format string, args ...any) {
	t.fail(key, fmt.Errorf(format, args...))
}

// unknown reports the key, first in the file, that was never asked for.
func (t *table) unknown() {
	first, line := "", 0
	for _, k := range sortedKeys(t.m) {
		if t.taken[k] {
			continue
		}
		n := t.p.lines[t.path+"."+k]
		if first == "" || n > 0 && (line == 0 || n < line) {
			first, line = k, n
		}
	}
	if first != "" {
		t.p.fail(t.path+"."+first, t.section, "", fmt.Errorf("unknown key %q", first))
	}
}

func (t *table) str(key string, dst *string) bool {
	v, ok := t.get(key)
	if !ok {
		return false
	}
	s, ok := v.(string)
	if !ok {
		t.failf(key, "want a string, got %s", typeName(v))
		return false
	}
	*dst = s
	return true
}

func (t *table) strs(key string) ([]string, bool) {
	v, ok := t.get(key)
	if !ok {
		return nil, false
	}
	arr, ok := v.([]any)
	if !ok {
		t.failf(key, "want a list of strings, got %s", typeName(v))
		return nil, false
	}
	out := make([]string, 0, len(arr))
	for _, e := range arr {
		s, ok := e.(string)
		if !ok {
			t.failf(key, "want a list of strings, found %s", typeName(e))
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

func (t *table) integer(key string, dst *int, lo, hi int) {
	v, ok := t.get(key)
	if !ok {
		return
	}
	n, ok := v.(int64)
	if !ok {
		t.failf(key, "want an integer, got %s", typeName(v))
		return
	}
	if n < int64(lo) || n > int64(hi) {
		t.failf(key, "%d is out of range %d-%d", n, lo, hi)
		return
	}
	*dst = int(n)
}

func (t *table) boolean(key string, dst *bool) {
	v, ok := t.get(key)
	if !ok {
		return
	}
	b, ok := v.(bool)
	if !ok {
		t.failf(key, "want true or false, got %s", typeName(v))
		return
	}
	*dst = b
}

// duration reads a Go duration string ("1m30s") or an integer number of seconds.
func (t *table) duration(key string, dst *time.Duration) bool {
	v, ok := t.get(key)
	if !ok {
		return false
	}
	switch v := v.(type) {
	case string:
		d, err := time.ParseDuration(v)
		if err != nil {
			t.failf(key, "%q is not a duration", v)
			return false
		}
		if d < 0 {
			t.failf(key, "%q is negative", v)
			return false
		}
		*dst = d
	case int64:
		if v < 0 || v > math.MaxInt64/int64(time.Second) {
			t.failf(key, "%d seconds is out of range", v)
			return false
		}
		*dst = time.Duration(v) * time.Second
	default:
		t.failf(key, "want a duration such as \"30s\" or an integer number of seconds, got %s", typeName(v))
		return false
	}
	return true
}

// DefaultServer returns the [server] settings of a configuration that sets none.
func DefaultServer() Server {
	return Server{
		Firewall:   FirewallNftables,
		OnStop:     OnStopClose,
		MaxSources: DefaultMaxSources,
		SweepGuard: DefaultSweepGuard,
		StateDir:   DefaultStateDir,
	}
}

func (p *parser) server(v any, srv *Server) {
	t, ok := p.table(v, "server", "")
	if !ok {
		return
	}
	t.section = "server"
	if names, ok := t.strs("interfaces"); ok {
		for _, n := range names {
			if err := CheckInterface(n); err != nil {
				t.fail("interfaces", err)
				return
			}
			if slices.Contains(srv.Interfaces, n) {
				t.failf("interfaces", "%q is listed twice", n)
				return
			}
			srv.Interfaces = append(srv.Interfaces, n)
		}
	}
	if t.str("firewall", &srv.Firewall) && !slices.Contains(firewalls, srv.Firewall) {
		t.failf("firewall", "%q is not a firewall (want nftables, iptables or none)", srv.Firewall)
	}
	if t.str("on_stop", &srv.OnStop) && srv.OnStop != OnStopClose && srv.OnStop != OnStopRemove {
		t.failf("on_stop", "%q is not valid (want close or remove)", srv.OnStop)
	}
	t.integer("max_sources", &srv.MaxSources, 1, math.MaxInt32)
	t.integer("sweep_guard", &srv.SweepGuard, 0, MaxSweepGuard)
	if t.str("state_dir", &srv.StateDir) && srv.StateDir == "" {
		t.failf("state_dir", "must not be empty")
	}
	t.str("log_file", &srv.LogFile)
	t.boolean("use_syslog", &srv.UseSyslog)
	t.str("pid_file", &srv.PidFile)
	t.unknown()
}

var firewalls = []string{FirewallNftables, FirewallIptables, FirewallNone}

// CheckInterface reports whether name can be a Linux network interface name.
func CheckInterface(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) > maxIfaceLength:
		return fmt.Errorf("interface name %q is longer than %d bytes", name, maxIfaceLength)
	case name == "." || name == "..":
		return fmt.Errorf("%q is not an interface name", name)
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c == '/' || c == ':' || c >= 0x7f {
			return fmt.Errorf("interface name %q has a character that is not allowed", name)
		}
	}
	return nil
}

var doorName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// tables returns an array of tables ([[door]], [[spa.client]]) as a list, whichever form the
// TOML decoder gave it in.
func tables(v any) ([]any, bool) {
	switch v := v.(type) {
	case []map[string]any:
		list := make([]any, len(v))
		for i, m := range v {
			list[i] = m
		}
		return list, true
	case []any:
		return v, true
	}
	return nil, false
}

func (p *parser) doors(v any, firewall string) []Door {
	list, ok := tables(v)
	if !ok {
		p.fail("door", "", "door", fmt.Errorf("want [[door]] tables, got %s", typeName(v)))
		return nil
	}
	var doors []Door
	names := map[string]int{}
	for i, e := range list {
		d, ok := p.door(e, i, firewall)
		if !ok {
			return nil
		}
		if first, dup := names[d.Name]; dup {
			p.fail(fmt.Sprintf("door#%d.name", i), fmt.Sprintf("door %q", d.Name), "name",
				fmt.Errorf("door #%d has the same name", first+1))
			return nil
		}
		names[d.Name] = i
		doors = append(doors, d)
	}
	return doors
}

func (p *parser) door(v any, i int, firewall string) (Door, bool) {
	d := Door{
		OpenFor:    DefaultOpenFor,
		CmdTimeout: DefaultCmdTimeout,
	}
	d.Timeout = DefaultSequenceTimeout
	d.Flags = DefaultTCPFlags
	path := fmt.Sprintf("door#%d", i)
	t, ok := p.table(v, path, "")
	if !ok {
		return d, false
	}
	t.section = fmt.Sprintf("door #%d", i+1)
	if !t.str("name", &d.Name) {
		if p.err == nil {
			p.fail(path, t.section, "", errors.New("name is required"))
		}
		return d, false
	}
	if !doorName.MatchString(d.Name) {
		t.failf("name", "%q is not a valid name (want letters, digits, _ . and -)", d.Name)
		return d, false
	}
	t.section = fmt.Sprintf("door %q", d.Name)

	if seq, ok := t.strs("sequence"); ok {
		d.Sequence = t.sequence(seq)
	} else if p.err == nil {
		p.fail(path, t.section, "", errors.New("sequence is required"))
	}
	if t.duration("sequence_timeout", &d.Timeout) && d.Timeout == 0 {
		t.failf("sequence_timeout", "must be more than 0")
	}
	var flags string
	if t.str("tcp_flags", &flags) {
		f, err := ParseTCPFlags(flags)
		if err != nil {
			t.fail("tcp_flags", err)
		}
		d.Flags = f
	}
	t.duration("min_gap", &d.MinGap)
	if t.duration("max_gap", &d.MaxGap) && d.MinGap > 0 && d.MaxGap > 0 && d.MinGap > d.MaxGap {
		t.failf("max_gap", "%v is less than min_gap %v", d.MaxGap, d.MinGap)
	}
	if n := len(d.Sequence); n > 1 && d.MinGap > 0 && d.MinGap > d.Timeout/time.Duration(n-1) {
		t.failf("min_gap", "%d knocks at least %v apart cannot fit in sequence_timeout %v", n, d.MinGap, d.Timeout)
	}
	if srcs, ok := t.strs("sources"); ok {
		for _, s := range srcs {
			pfx, err := ParseSource(s)
			if err != nil {
				t.fail("sources", err)
				break
			}
			d.Sources = append(d.Sources, pfx)
		}
	}
	var target string
	if t.str("target", &target) {
		a, err := ParseTarget(target)
		if err != nil {
			t.fail("target", err)
		}
		d.Target = a
	}
	if open, ok := t.strs("open"); ok {
		for _, s := range open {
			port, err := parseOpen(s)
			if err != nil {
				t.fail("open", err)
				break
			}
			if slices.Contains(d.Open, port) {
				t.failf("open", "%s is listed twice", port)
				break
			}
			d.Open = append(d.Open, port)
		}
		if len(d.Open) > 0 && firewall == FirewallNone {
			t.failf("open", "firewall none cannot open ports; use commands")
		}
	}
	if t.duration("open_for", &d.OpenFor) && (d.OpenFor < MinOpenFor || d.OpenFor > MaxOpenFor) {
		t.failf("open_for", "%v is out of range %v-%v", d.OpenFor, MinOpenFor, MaxOpenFor)
	}
	t.command(&d.StartCommand, "command", "start_command")
	start6 := t.command(&d.StartCommand6, "command_6", "start_command_6")
	t.str("stop_command", &d.StopCommand)
	stop6 := t.str("stop_command_6", &d.StopCommand6)
	if !start6 {
		d.StartCommand6 = d.StartCommand
	}
	if !stop6 {
		d.StopCommand6 = d.StopCommand
	}
	if t.duration("cmd_timeout", &d.CmdTimeout) && d.CmdTimeout > MaxCmdTimeout {
		t.failf("cmd_timeout", "%v is more than %v", d.CmdTimeout, MaxCmdTimeout)
	}
	t.unknown()
	if p.err == nil && len(d.Open) == 0 && d.StartCommand == "" && d.StartCommand6 == "" {
		p.fail(path, t.section, "", errors.New("the door opens nothing: set open, or a command"))
	}
	return d, p.err == nil
}

// command reads a command given under either of two names (aliases); both is an error. It
// reports whether either was present.
func (t *table) command(dst *string, name, alias string) bool {
	a := t.str(name, dst)
	var s string
	b := t.str(alias, &s)
	if a && b {
		t.failf(alias, "is the same as %s: set only one of them", name)
	}
	if b {
		*dst = s
	}
	return a || b
}

// sequence parses native sequence elements: "7000/tcp", "8000/udp", "7000" (tcp) or "icmp".
func (t *table) sequence(elems []string) []knock.Element {
	if len(elems) == 0 {
		t.failf("sequence", "is empty")
		return nil
	}
	if len(elems) > MaxSequence {
		t.failf("sequence", "has %d elements, more than %d", len(elems), MaxSequence)
		return nil
	}
	seq := make([]knock.Element, 0, len(elems))
	for i, s := range elems {
		e, err := ParseElement(s)
		if err != nil {
			t.failf("sequence", "element %d: %v", i+1, err)
			return nil
		}
		if i > 0 && e == seq[i-1] {
			t.failf("sequence", "elements %d and %d are both %s: a knock that repeats the previous "+
				"one is taken for a retransmission and ignored, so use a different element", i, i+1, e)
			return nil
		}
		seq = append(seq, e)
	}
	return seq
}

// ParseElement parses a native sequence element: "7000/tcp", "8000/udp", "7000" (TCP) or "icmp"
// (an ICMP echo).
func ParseElement(s string) (knock.Element, error) {
	num, proto, hasProto := strings.Cut(s, "/")
	if !hasProto {
		if strings.EqualFold(s, "icmp") {
			return knock.Element{Proto: netport.ICMP}, nil
		}
		proto = "tcp"
	}
	p, err := netport.ParseProto(proto)
	if err != nil {
		if _, e2 := netport.ParseProto(num); e2 == nil {
			return knock.Element{}, fmt.Errorf("%q: sequence elements are written PORT/PROTO, as in 7000/tcp", s)
		}
		return knock.Element{}, fmt.Errorf("%q: %w", s, err)
	}
	if p == netport.ICMP {
		return knock.Element{}, fmt.Errorf("%q: an icmp knock has no port: write icmp", s)
	}
	n, err := netport.ParseNumber(num)
	if err != nil {
		return knock.Element{}, fmt.Errorf("%q: %w", s, err)
	}
	return knock.Element{Proto: p, Num: n}, nil
}

// parseOpen parses an open entry, "tcp/22", with a hint for the sequence order "22/tcp".
func parseOpen(s string) (netport.Port, error) {
	port, err := netport.Parse(s)
	if err != nil {
		if num, proto, ok := strings.Cut(s, "/"); ok {
			if _, e2 := netport.ParseNumber(num); e2 == nil {
				if _, e3 := netport.ParseProto(proto); e3 == nil {
					return port, fmt.Errorf("%q: open entries are written PROTO/PORT, as in tcp/22", s)
				}
			}
		}
	}
	return port, err
}

// ParseTCPFlags parses a TCP flag condition in knockd's syntax: a comma-separated list of fin,
// syn, rst, psh, ack and urg (any case), each optionally prefixed with "!" for must-be-clear.
// Spaces around items and empty items are allowed; "" is no condition. A flag both required and
// forbidden is an error.
func ParseTCPFlags(s string) (knock.TCPFlags, error) {
	var f knock.TCPFlags
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, clear := strings.CutPrefix(item, "!")
		bit, ok := knock.FlagBit(name)
		if !ok {
			return knock.TCPFlags{}, fmt.Errorf("unknown tcp flag %q (want fin, syn, rst, psh, ack or urg, "+
				"optionally prefixed with !)", item)
		}
		if clear {
			f.Clear |= bit
		} else {
			f.Set |= bit
		}
		if f.Set&f.Clear != 0 {
			return knock.TCPFlags{}, fmt.Errorf("tcp flag %s is both required and forbidden", strings.ToLower(name))
		}
	}
	return f, nil
}

// ParseSource parses a source network, "10.0.0.0/8" or a bare address "192.0.2.7". Host bits are
// cleared; IPv4-mapped IPv6 and zones are refused.
func ParseSource(s string) (netip.Prefix, error) {
	var pfx netip.Prefix
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return pfx, fmt.Errorf("%q is not an address or CIDR prefix", s)
		}
		pfx = p
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return pfx, fmt.Errorf("%q is not an address or CIDR prefix", s)
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	if pfx.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 prefix: write the IPv4 form", s)
	}
	return pfx.Masked(), nil
}

// ParseTarget parses a door's target address. An IPv4-mapped IPv6 address becomes IPv4; a zone is
// refused.
func ParseTarget(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	return a.Unmap(), nil
}

// Validate checks the invariants every configuration holds, whatever file format it came from.
func (c *Config) Validate() error {
	s := &c.Server
	if !slices.Contains(firewalls, s.Firewall) {
		return fmt.Errorf("server: firewall %q is not valid", s.Firewall)
	}
	if s.OnStop != OnStopClose && s.OnStop != OnStopRemove {
		return fmt.Errorf("server: on_stop %q is not valid", s.OnStop)
	}
	if s.MaxSources < 1 {
		return fmt.Errorf("server: max_sources %d is less than 1", s.MaxSources)
	}
	if s.SweepGuard < 0 || s.SweepGuard > MaxSweepGuard {
		return fmt.Errorf("server: sweep_guard %d is out of range 0-%d", s.SweepGuard, MaxSweepGuard)
	}
	if s.StateDir == "" {
		return errors.New("server: state_dir is empty")
	}
	for i, n := range s.Interfaces {
		if err := CheckInterface(n); err != nil {
			return fmt.Errorf("server: interfaces: %w", err)
		}
		if slices.Contains(s.Interfaces[:i], n) {
			return fmt.Errorf("server: interfaces: %q is listed twice", n)
		}
	}
	for i := range c.Doors {
		if err := c.Doors[i].validate(s.Firewall); err != nil {
			return fmt.Errorf("door %q: %w", c.Doors[i].Name, err)
		}
	}
	if c.SPA != nil {
		if err := c.SPA.Validate(s.Firewall); err != nil {
			return err
		}
	}
	return nil
}

func (d *Door) validate(firewall string) error {
	if d.Name == "" {
		return errors.New("empty name")
	}
	for _, c := range d.Name {
		if c < ' ' || c == 0x7f {
			return errors.New("name has a control character")
		}
	}
	if len(d.Sequence) == 0 || len(d.Sequence) > MaxSequence {
		return fmt.Errorf("sequence has %d elements (want 1-%d)", len(d.Sequence), MaxSequence)
	}
	for _, e := range d.Sequence {
		switch {
		case e.Proto == netport.ICMP && e.Num == 0:
		case (e.Proto == netport.TCP || e.Proto == netport.UDP) && e.Num > 0:
		default:
			return fmt.Errorf("sequence: %s is not a valid knock", e)
		}
	}
	const allFlags = knock.FIN | knock.SYN | knock.RST | knock.PSH | knock.ACK | knock.URG
	if d.Flags.Set&d.Flags.Clear != 0 || (d.Flags.Set|d.Flags.Clear)&^allFlags != 0 {
		return fmt.Errorf("tcp flags %#x/%#x are contradictory", d.Flags.Set, d.Flags.Clear)
	}
	if d.Timeout < 0 || d.MinGap < 0 || d.MaxGap < 0 || d.CmdTimeout < 0 {
		return errors.New("negative duration")
	}
	if d.MinGap > 0 && d.MaxGap > 0 && d.MinGap > d.MaxGap {
		return errors.New("min_gap is more than max_gap")
	}
	for _, p := range d.Sources {
		if !p.IsValid() || p.Addr().Zone() != "" {
			return fmt.Errorf("sources: %v is not valid", p)
		}
	}
	if d.Target.IsValid() && (d.Target.Zone() != "" || d.Target.Is4In6()) {
		return fmt.Errorf("target %v is not valid", d.Target)
	}
	for i, p := range d.Open {
		if p.Proto != netport.TCP && p.Proto != netport.UDP || p.Num == 0 {
			return fmt.Errorf("open: %s is not a port", p)
		}
		if slices.Contains(d.Open[:i], p) {
			return fmt.Errorf("open: %s is listed twice", p)
		}
	}
	if len(d.Open) > 0 {
		if firewall == FirewallNone {
			return errors.New("open: firewall none cannot open ports; use commands")
		}
		if d.OpenFor < MinOpenFor || d.OpenFor > MaxOpenFor {
			return fmt.Errorf("open_for %v is out of range %v-%v", d.OpenFor, MinOpenFor, MaxOpenFor)
		}
	}
	return nil
}

// typeName names the TOML type of a decoded value.
func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date-time"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", v)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// keyLines maps the keys and tables of a TOML document to the line that defines them. A path
// joins keys with "."; the i-th table of an array of tables is "name#i" (as in "door#0.name").
// The document has already been decoded: this only follows its structure, so that messages can
// name a line.
func keyLines(data []byte) map[string]int {
	s := string(data)
	lines := map[string]int{}
	arrays := map[string]int{} // tables of each array of tables so far
	set := func(path string, n int) {
		if _, ok := lines[path]; !ok {
			lines[path] = n
		}
	}
	table, line := "", 1
	for i := 0; i < len(s); {
		switch s[i] {
		case ' ', '\t', '\r':
			i++
		case '\n':
			i++
			line++
		case '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case '[':
			array := strings.HasPrefix(s[i:], "[[")
			i++
			if array {
				i++
			}
			var keys []string
			keys, i = scanKey(s, i)
			path := ""
			for j, k := range keys {
				path = join(path, k)
				if j == len(keys)-1 && array {
					set(path, line)
					arrays[path]++
				}
				if n, ok := arrays[path]; ok {
					path += "#" + strconv.Itoa(n-1)
				}
			}
			set(path, line)
			table = path
			for i < len(s) && s[i] != '\n' {
				i++
			}
		default:
			var keys []string
			start := i
			keys, i = scanKey(s, i)
			path := table
			for _, k := range keys {
				path = join(path, k)
				set(path, line)
			}
			if i < len(s) && s[i] == '=' {
				i++
			} else if i == start {
				i++ // not a key: make progress whatever the input
			}
			i, line = scanValue(s, i, line)
		}
	}
	return lines
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// scanKey reads a dotted key (bare and quoted parts) from s[i:] up to "=", "]" or the end of the
// line, and returns its parts and the index where it stopped.
func scanKey(s string, i int) ([]string, int) {
	var keys []string
	for i < len(s) {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i >= len(s) {
			break
		}
		switch s[i] {
		case '"', '\'':
			q := s[i]
			j := i + 1
			for j < len(s) && s[j] != q && s[j] != '\n' {
				if q == '"' && s[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j, len(s))
			raw := s[i:min(j+1, len(s))]
			k := s[i+1 : j]
			if q == '"' {
				if u, err := strconv.Unquote(raw); err == nil {
					k = u
				}
			}
			keys = append(keys, k)
			i = min(j+1, len(s))
		default:
			j := i
			for j < len(s) && strings.IndexByte(" \t.=]\n\r#", s[j]) < 0 {
				j++
			}
			if j == i {
				return keys, i
			}
			keys = append(keys, s[i:j])
			i = j
		}
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i < len(s) && s[i] == '.' {
			i++
			continue
		}
		break
	}
	return keys, i
}

// scanValue skips a value (strings, arrays and inline tables over any number of lines, and a
// trailing comment) and the newline that ends it; it returns the new index and line number.
func scanValue(s string, i, line int) (int, int) {
	depth := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == '\n':
			i++
			line++
			if depth <= 0 {
				return i, line
			}
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '[' || c == '{':
			depth++
			i++
		case c == ']' || c == '}':
			depth--
			i++
		case c == '"' || c == '\'':
			i, line = scanString(s, i, line)
		default:
			i++
		}
	}
	return i, line
}

// scanString skips the string that starts at s[i].
func scanString(s string, i, line int) (int, int) {
	q := s[i]
	delim := s[i : i+1]
	if strings.HasPrefix(s[i:], strings.Repeat(delim, 3)) {
		delim = strings.Repeat(delim, 3)
	}
	i += len(delim)
	for i < len(s) {
		switch {
		case q == '"' && s[i] == '\\':
			i++
			if i < len(s) && s[i] == '\n' {
				line++
			}
			i++
		case s[i] == '\n':
			if len(delim) == 1 {
				return i, line // an unterminated string: cannot happen in a decoded document
			}
			line++
			i++
		case strings.HasPrefix(s[i:], delim):
			i += len(delim)
			if len(delim) == 3 { // up to two quotes may end the content: """a""""" is `a""`
				for n := 0; n < 2 && i < len(s) && s[i] == q; n++ {
					i++
				}
			}
			return i, line
		default:
			i++
		}
	}
	return i, line
}
