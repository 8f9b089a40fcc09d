package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/BurntSushi/toml"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

// Limits on values a configuration may hold.
const (
	MaxSequence    = 32             // elements in a knock sequence (knockd's limit)
	MaxSweepGuard  = 1024           // widest sweep guard band
	MaxSources     = math.MaxInt32  // largest max_sources
	MinOpenFor     = time.Second    // shortest open_for
	MaxOpenFor     = 24 * time.Hour // longest open_for
	MaxCmdTimeout  = 24 * time.Hour // longest cmd_timeout
	maxIfaceLength = 15             // Linux IFNAMSIZ - 1
)

// Error is a configuration error, located as precisely as the file format allows.
type Error struct {
	File    string // file name as given to Load or Parse
	Line    int    // 1-based line, 0 when unknown
	Section string // as in `server` or `door "ssh"`; may be empty
	Key     string // the key at fault; may be empty
	Err     error
	at      place // where in a native file, for Parse to find the line
}

// Error returns "file:line: section: key: message", leaving out the parts that are unknown.
func (e *Error) Error() string {
	var parts []string
	if e.File != "" {
		f := e.File
		if e.Line > 0 {
			f += ":" + strconv.Itoa(e.Line)
		}
		parts = append(parts, f)
	}
	for _, s := range []string{e.Section, e.Key} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	msg := "invalid configuration"
	if e.Err != nil {
		msg = e.Err.Error()
	}
	return strings.Join(append(parts, msg), ": ")
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// place is where a key is in a native file: a key of a table (nil: the top level) or of the
// index-th table of an array of tables (index -1: a plain table). An empty key is the table.
type place struct {
	table toml.Key
	index int
	key   toml.Key
}

// problem is an error about key of the table at t, in section.
func problem(t place, section, key string, format string, args ...any) *Error {
	if key != "" {
		t.key = toml.Key{key}
	}
	return &Error{Section: section, Key: key, Err: fmt.Errorf(format, args...), at: t}
}

var (
	atServer  = place{table: toml.Key{"server"}, index: -1}
	atSPA     = place{table: toml.Key{"spa"}, index: -1}
	atControl = place{table: toml.Key{"control"}, index: -1}
	atMetrics = place{table: toml.Key{"metrics"}, index: -1}
)

func atDoor(i int) place   { return place{table: toml.Key{"door"}, index: i} }
func atClient(i int) place { return place{table: toml.Key{"spa", "client"}, index: i} }

// Validate checks the rules every configuration holds, whatever file format it came from, with
// the overrides of the command line applied. It returns an *Error naming the section and key.
func (c *Config) Validate() error {
	s := &c.Server
	if !slices.Contains(firewall.Kinds(), s.Firewall) {
		return problem(atServer, "server", "firewall", "%q is not a firewall (want %s)", s.Firewall, firewall.KindList())
	}
	if s.OnStop != OnStopClose && s.OnStop != OnStopRemove {
		return problem(atServer, "server", "on_stop", "%q is not valid (want %s or %s)", s.OnStop, OnStopClose, OnStopRemove)
	}
	if s.MaxSources < 1 || s.MaxSources > MaxSources {
		return problem(atServer, "server", "max_sources", "%d is out of range 1-%d", s.MaxSources, MaxSources)
	}
	if s.SweepGuard < 0 || s.SweepGuard > MaxSweepGuard {
		return problem(atServer, "server", "sweep_guard", "%d is out of range 0-%d", s.SweepGuard, MaxSweepGuard)
	}
	if !slices.Contains(firewall.Stealths(), s.Stealth) {
		return problem(atServer, "server", "stealth", "%q is not a stealth mode (want closed, dark or off)", s.Stealth)
	}
	if s.Stealth == firewall.StealthDark && s.Firewall == firewall.None {
		return problem(atServer, "server", "stealth", "dark needs a firewall (nftables, iptables), not %q", s.Firewall)
	}
	if len(s.Allow) > 0 && s.Stealth != firewall.StealthDark {
		return problem(atServer, "server", "allow", "only a dark gate has an allow list (stealth is %q)", s.Stealth)
	}
	if s.StateDir == "" {
		return problem(atServer, "server", "state_dir", "must not be empty")
	}
	for i, n := range s.Interfaces {
		if err := CheckInterface(n); err != nil {
			return problem(atServer, "server", "interfaces", "%w", err)
		}
		if slices.Contains(s.Interfaces[:i], n) {
			return problem(atServer, "server", "interfaces", "%q is listed twice", n)
		}
	}
	if err := c.validateAWS(); err != nil {
		return err
	}
	if err := c.Control.validate(); err != nil {
		return err
	}
	if err := c.Metrics.validate(); err != nil {
		return err
	}
	for i := range c.Doors {
		if err := c.Doors[i].validate(i, s.Firewall); err != nil {
			return err
		}
	}
	if c.SPA != nil {
		if err := c.SPA.Validate(s.Firewall); err != nil {
			return err
		}
		// With a stealth gate the SPA port must look like the other ports: the gate refuses or
		// drops it and the capture reads SPA packets, as in sniff mode (a bound socket would
		// make it open|filtered).
		if s.Stealth != firewall.StealthOff && s.Firewall != firewall.None && !c.SPA.Sniff {
			c.SPA.Sniff, c.SPA.SniffForStealth = true, true
		}
	}
	if err := c.checkDecoys(); err != nil {
		return err
	}
	return c.checkRotations()
}

// doorSection names door i in messages.
func doorSection(i int, name string) string {
	if name == "" {
		return fmt.Sprintf("door #%d", i+1)
	}
	return fmt.Sprintf("door %q", name)
}

func (d *Door) validate(i int, fw firewall.Kind) error {
	at, sec := atDoor(i), doorSection(i, d.Name)
	if d.Name == "" || strings.ContainsFunc(d.Name, func(c rune) bool { return c < ' ' || c == 0x7f }) {
		return problem(at, sec, "name", "%q is not a valid name (want no control characters)", d.Name)
	}
	switch n := len(d.Sequence); {
	case d.Rotate != nil && n > 0:
		return problem(at, sec, "sequence", "a rotating door derives its sequence: leave sequence out")
	case d.Rotate != nil:
		if err := d.Rotate.Check(); err != nil {
			return problem(at, sec, "rotate", "%w", err)
		}
	case n == 0:
		return problem(at, sec, "sequence", "is empty")
	case n > MaxSequence:
		return problem(at, sec, "sequence", "has %d elements, more than %d", n, MaxSequence)
	}
	for j, e := range d.Sequence {
		switch {
		case e.Proto == netport.ICMP && e.Num == 0:
		case (e.Proto == netport.TCP || e.Proto == netport.UDP) && e.Num > 0:
		default:
			return problem(at, sec, "sequence", "element %d: %s is not a valid knock", j+1, e)
		}
	}
	const allFlags = knock.FIN | knock.SYN | knock.RST | knock.PSH | knock.ACK | knock.URG
	if d.Flags.Set&d.Flags.Clear != 0 || (d.Flags.Set|d.Flags.Clear)&^allFlags != 0 {
		return problem(at, sec, "tcp_flags", "flags %#x/%#x are contradictory", d.Flags.Set, d.Flags.Clear)
	}
	for _, v := range []struct {
		key string
		d   time.Duration
	}{{"sequence_timeout", d.Timeout}, {"min_gap", d.MinGap}, {"max_gap", d.MaxGap}, {"cmd_timeout", d.CmdTimeout}} {
		if v.d < 0 {
			return problem(at, sec, v.key, "%v is negative", v.d)
		}
	}
	if d.MinGap > 0 && d.MaxGap > 0 && d.MinGap > d.MaxGap {
		return problem(at, sec, "max_gap", "%v is less than min_gap %v", d.MaxGap, d.MinGap)
	}
	for _, p := range d.Sources {
		if !p.IsValid() || p.Addr().Zone() != "" {
			return problem(at, sec, "sources", "%v is not valid", p)
		}
	}
	if d.Target.IsValid() && (d.Target.Zone() != "" || d.Target.Is4In6()) {
		return problem(at, sec, "target", "%v is not valid", d.Target)
	}
	if err := checkPorts(d.Open); err != nil {
		return problem(at, sec, "open", "%w", err)
	}
	if len(d.Open) > 0 {
		if fw == firewall.None {
			return problem(at, sec, "open", "firewall %s cannot open ports; use commands", firewall.None)
		}
		if d.OpenFor < MinOpenFor || d.OpenFor > MaxOpenFor {
			return problem(at, sec, "open_for", "%v is out of range %v-%v", d.OpenFor, MinOpenFor, MaxOpenFor)
		}
	}
	return nil
}

// maxSocketPath is the longest unix socket path Linux takes (sun_path less its NUL).
const maxSocketPath = 107

// validate checks the form of [control]: an absolute socket path that fits a unix socket
// address, a max_grant of at least MinOpenFor, group names without control characters.
func (c *Control) validate() error {
	switch s := c.Socket; {
	case s == "":
	case !filepath.IsAbs(s) || strings.HasSuffix(s, "/"):
		return problem(atControl, "control", "socket", "%q: want the absolute path of a socket file, as in %s", s, DefaultControlSocket)
	case len(s) > maxSocketPath:
		return problem(atControl, "control", "socket", "%q is %d bytes long; a unix socket path is at most %d", s, len(s), maxSocketPath)
	case strings.ContainsFunc(s, unicode.IsControl):
		return problem(atControl, "control", "socket", "%q has a control character", s)
	}
	if c.MaxGrant < 0 || c.MaxGrant > 0 && c.MaxGrant < MinOpenFor {
		return problem(atControl, "control", "max_grant", "%v is less than %v", c.MaxGrant, MinOpenFor)
	}
	for _, g := range []struct{ key, v string }{{"group", c.Group}, {"admin_group", c.AdminGroup}} {
		if strings.ContainsFunc(g.v, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) || r == ':' }) {
			return problem(atControl, "control", g.key, "%q is not a group name or gid", g.v)
		}
	}
	return nil
}

// validate checks the form of [metrics] listen: host:port with a port in 1-65535. Whether the
// host may be listened on (loopback unless allow_remote) is metrics.Config.Check's rule.
func (m *Metrics) validate() error {
	if m.Listen == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(m.Listen)
	if err != nil {
		return problem(atMetrics, "metrics", "listen", "%q: want host:port, as in 127.0.0.1:9741", m.Listen)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return problem(atMetrics, "metrics", "listen", "%q: the port must be a number in 1-65535", m.Listen)
	}
	return nil
}

// checkPorts refuses a port the gate cannot open and a port listed twice.
func checkPorts(ports []netport.Port) error {
	for i, p := range ports {
		if p.Proto != netport.TCP && p.Proto != netport.UDP || p.Num == 0 {
			return fmt.Errorf("%s is not a port", p)
		}
		if slices.Contains(ports[:i], p) {
			return fmt.Errorf("%s is listed twice", p)
		}
	}
	return nil
}

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
