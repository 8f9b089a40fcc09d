package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

// DefaultTCPFlags is the TCP flag condition of a native door that sets no tcp_flags: a plain SYN,
// the packet a client's connect() sends, and never a segment of an established connection.
var DefaultTCPFlags = knock.TCPFlags{Set: knock.SYN, Clear: knock.ACK}

// Load reads the native TOML configuration file at path, refused when someone other than root
// and the user running sesame could change it (ReadConfigFile), applies ov and validates it.
func Load(path string, ov Overrides) (*Config, error) {
	data, _, err := ReadConfigFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parse(path, data, ov)
}

// Parse parses a native TOML configuration; name is the file name used in messages and as
// Config.Source. The result is validated.
func Parse(name string, data []byte) (*Config, error) {
	return parse(name, data, Overrides{})
}

func parse(name string, data []byte, ov Overrides) (*Config, error) {
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	if err != nil {
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
	d := &decoder{md: md, file: name, pos: &positions{data: strings.TrimPrefix(string(data), bom), md: md, count: map[string]int{}}}
	cfg := &Config{Source: name, Server: DefaultServer()}
	err = d.config(top, cfg)
	if err == nil {
		cfg.Apply(ov)
		err = cfg.Validate()
	}
	if err == nil {
		err = opensSomething(cfg)
	}
	if err == nil {
		err = checkPayloads(cfg)
	}
	if err == nil {
		err = checkSourcePorts(cfg)
	}
	var e *Error
	if errors.As(err, &e) {
		e.File = name
		if !ov.sets(e) {
			e.Line = d.pos.line(e.at)
		}
	}
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// bom is the byte order mark BurntSushi/toml skips, and its positions with it.
const bom = "\ufeff"

// sets reports whether an override, not the file, gave the value e is about.
func (ov Overrides) sets(e *Error) bool {
	if slices.Equal(e.at.table, atControl.table) {
		return e.Key == "socket" && ov.ControlSocket != ""
	}
	if !slices.Equal(e.at.table, atServer.table) {
		return false
	}
	switch e.Key {
	case "firewall":
		return ov.Firewall != ""
	case "interfaces":
		return ov.Interfaces != nil
	case "state_dir":
		return ov.StateDir != ""
	}
	return false
}

// decoder turns the TOML tables of a native file into the model.
type decoder struct {
	md   toml.MetaData
	file string
	pos  *positions
}

// The tables of a native file. Every key is a field, which records its value or what is wrong
// with it; fields are checked in the order they are declared.
type (
	tomlServer struct {
		Interfaces field[[]string] `toml:"interfaces"`
		Firewall   field[string]   `toml:"firewall"`
		OnStop     field[string]   `toml:"on_stop"`
		MaxSources field[int]      `toml:"max_sources"`
		SweepGuard field[int]      `toml:"sweep_guard"`
		StateDir   field[string]   `toml:"state_dir"`
		LogFile    field[string]   `toml:"log_file"`
		UseSyslog  field[bool]     `toml:"use_syslog"`
		PidFile    field[string]   `toml:"pid_file"`
		NeverBan   field[[]source] `toml:"never_ban"`
		Stealth    field[string]   `toml:"stealth"`
		Allow      field[[]string] `toml:"allow"`
	}
	tomlControl struct {
		Socket     field[string]   `toml:"socket"`
		Group      field[string]   `toml:"group"`
		AdminGroup field[string]   `toml:"admin_group"`
		MaxGrant   field[duration] `toml:"max_grant"`
	}
	tomlMetrics struct {
		Listen      field[string] `toml:"listen"`
		AllowRemote field[bool]   `toml:"allow_remote"`
	}
	tomlDoor struct {
		Name            field[string]      `toml:"name"`
		Sequence        field[[]knockElem] `toml:"sequence"`
		SequenceTimeout field[duration]    `toml:"sequence_timeout"`
		TCPFlags        field[tcpFlags]    `toml:"tcp_flags"`
		MinGap          field[duration]    `toml:"min_gap"`
		MaxGap          field[duration]    `toml:"max_gap"`
		Sources         field[[]source]    `toml:"sources"`
		SourcePorts     field[[]portRange] `toml:"source_ports"`
		Target          field[target]      `toml:"target"`
		Open            field[[]openPort]  `toml:"open"`
		OpenFor         field[duration]    `toml:"open_for"`
		Command         field[string]      `toml:"command"`
		StartCommand    field[string]      `toml:"start_command"`
		Command6        field[string]      `toml:"command_6"`
		StartCommand6   field[string]      `toml:"start_command_6"`
		StopCommand     field[string]      `toml:"stop_command"`
		StopCommand6    field[string]      `toml:"stop_command_6"`
		CmdTimeout      field[duration]    `toml:"cmd_timeout"`
		SecretFile      field[string]      `toml:"secret_file"`
		Rotate          field[duration]    `toml:"rotate"`
		RotatePorts     field[rotateRange] `toml:"rotate_ports"`
		RotateLength    field[int]         `toml:"rotate_length"`
		RotateUses      field[int]         `toml:"rotate_uses"`
		RotateProto     field[string]      `toml:"rotate_proto"`
		Group           field[string]      `toml:"group"`
	}
)

// or returns the value, or def when the file does not set it.
func (f *field[T]) or(def T) T {
	if f.set {
		return f.v
	}
	return def
}

// decoded is what table found wrong with a table.
type decoded struct {
	notTable string // the TOML type of a value that is not a table
	unknown  string // the first key, in file order, that has no field
	badKey   string // the first field, in declaration order, with a bad value
	badErr   error
}

// table decodes the TOML table v into dst, a pointer to a struct of fields.
func (d *decoder) table(v toml.Primitive, at place, dst any) (decoded, error) {
	var raw any
	if err := d.md.PrimitiveDecode(v, &raw); err != nil {
		return decoded{}, err
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return decoded{notTable: typeName(raw)}, nil
	}
	if err := d.md.PrimitiveDecode(v, dst); err != nil {
		return decoded{}, err
	}
	var r decoded
	rv := reflect.ValueOf(dst).Elem()
	known := map[string]bool{}
	for i := range rv.NumField() {
		tag := rv.Type().Field(i).Tag.Get("toml")
		known[tag] = true
		if f, ok := rv.Field(i).Addr().Interface().(interface{ fieldErr() error }); ok && r.badKey == "" && f.fieldErr() != nil {
			r.badKey, r.badErr = tag, f.fieldErr()
		}
	}
	var unknown []string
	for k := range m {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	r.unknown = d.first(append(slices.Clone(at.table), ""), unknown)
	return r, nil
}

// first returns the name, of names, of the key under table (whose last element is a blank to
// fill in) that comes first in the file.
func (d *decoder) first(table toml.Key, names []string) string {
	if len(names) == 0 {
		return ""
	}
	n := len(table) - 1
	for _, k := range d.md.Keys() {
		if len(k) > n && slices.Equal(k[:n], table[:n]) && slices.Contains(names, k[n]) {
			return k[n]
		}
	}
	slices.Sort(names)
	return names[0]
}

// tables decodes an array of tables (or an inline array), or returns the TOML type of v.
func (d *decoder) tables(v toml.Primitive, key toml.Key) ([]toml.Primitive, string, error) {
	var raw any
	if err := d.md.PrimitiveDecode(v, &raw); err != nil {
		return nil, "", err
	}
	switch raw.(type) {
	case []map[string]any, []any:
	default:
		return nil, typeName(raw), nil
	}
	var list []toml.Primitive
	if err := d.md.PrimitiveDecode(v, &list); err != nil {
		return nil, "", err
	}
	d.pos.count[key.String()] = len(list)
	return list, "", nil
}

// unknownKey is the error about a key of the table at at that has no field. A key that would
// hold a secret is told to name a file instead, with fileKey (if set).
func unknownKey(at place, section, key, fileKey string) *Error {
	if fileKey != "" && slices.Contains(secretKeys, key) {
		return problem(at, section, key, "secrets do not belong in the configuration: put the key in a file of mode 0600 and name it with %s", fileKey)
	}
	e := &Error{Section: section, Err: fmt.Errorf("unknown key %q", key), at: at}
	e.at.key = toml.Key{key}
	return e
}

func (d *decoder) config(top map[string]toml.Primitive, cfg *Config) error {
	var other []string
	for k := range top {
		if !slices.Contains([]string{"server", "door", "spa", "control", "metrics", "decoy", "alert", "scan", "cluster", "firewall"}, k) {
			other = append(other, k)
		}
	}
	if k := d.first(toml.Key{""}, other); k != "" {
		return &Error{Err: fmt.Errorf("unknown key %q (want [server], [[door]], [spa], [control], [metrics], [[decoy]], [alert], [scan], [cluster] or [firewall.aws])", k), at: place{index: -1, key: toml.Key{k}}}
	}
	if v, ok := top["firewall"]; ok {
		if err := d.firewallAWS(v, cfg); err != nil {
			return err
		}
	}
	if v, ok := top["control"]; ok {
		if err := d.control(v, &cfg.Control); err != nil {
			return err
		}
	}
	if v, ok := top["metrics"]; ok {
		var f tomlMetrics
		if err := d.section(v, atMetrics, &f); err != nil {
			return err
		}
		cfg.Metrics = Metrics{Listen: f.Listen.v, AllowRemote: f.AllowRemote.v}
	}
	if v, ok := top["server"]; ok {
		if err := d.server(v, &cfg.Server); err != nil {
			return err
		}
	}
	if v, ok := top["door"]; ok {
		list, notArray, err := d.tables(v, toml.Key{"door"})
		if err != nil {
			return err
		}
		if notArray != "" {
			return problem(place{index: -1}, "", "door", "want [[door]] tables, got %s", notArray)
		}
		for i, e := range list {
			door, err := d.door(i, e)
			if err != nil {
				return err
			}
			// knockd.conf may repeat a section; a native door name is unique.
			if j := slices.IndexFunc(cfg.Doors, func(o Door) bool { return o.Name == door.Name }); j >= 0 {
				return problem(atDoor(i), doorSection(i, door.Name), "name", "door #%d has the same name", j+1)
			}
			cfg.Doors = append(cfg.Doors, door)
		}
	}
	if v, ok := top["spa"]; ok {
		s, err := d.spa(v)
		if err != nil {
			return err
		}
		cfg.SPA = s
	}
	return d.banSections(top, cfg)
}

// banSections decodes [[decoy]], [alert] and [scan].
func (d *decoder) banSections(top map[string]toml.Primitive, cfg *Config) error {
	if v, ok := top["decoy"]; ok {
		ds, err := d.decoys(v)
		if err != nil {
			return err
		}
		cfg.Decoys = ds
	}
	if v, ok := top["alert"]; ok {
		a, err := d.alert(v)
		if err != nil {
			return err
		}
		cfg.Alert = a
	}
	if v, ok := top["scan"]; ok {
		s, err := d.scan(v)
		if err != nil {
			return err
		}
		cfg.Scan = s
	}
	if v, ok := top["cluster"]; ok {
		c, err := d.cluster(v)
		if err != nil {
			return err
		}
		cfg.Cluster = c
	}
	return checkGroups(cfg)
}

func (d *decoder) server(v toml.Primitive, srv *Server) error {
	var f tomlServer
	r, err := d.table(v, atServer, &f)
	switch {
	case err != nil:
		return err
	case r.notTable != "":
		return problem(place{index: -1}, "", "server", "want a table, got %s", r.notTable)
	case r.unknown != "":
		return unknownKey(atServer, "server", r.unknown, "")
	case r.badKey != "":
		return problem(atServer, "server", r.badKey, "%w", r.badErr)
	}
	srv.Interfaces = f.Interfaces.or(srv.Interfaces)
	srv.Firewall = firewall.Kind(f.Firewall.or(string(srv.Firewall)))
	srv.OnStop = f.OnStop.or(srv.OnStop)
	srv.MaxSources = f.MaxSources.or(srv.MaxSources)
	srv.SweepGuard = f.SweepGuard.or(srv.SweepGuard)
	srv.StateDir = f.StateDir.or(srv.StateDir)
	srv.LogFile = f.LogFile.or(srv.LogFile)
	srv.UseSyslog = f.UseSyslog.or(srv.UseSyslog)
	srv.PidFile = f.PidFile.or(srv.PidFile)
	srv.NeverBan = convertList(f.NeverBan.v, func(s source) netip.Prefix { return netip.Prefix(s) })
	srv.Stealth = firewall.Stealth(f.Stealth.or(string(srv.Stealth)))
	if f.Allow.set {
		srv.Allow = nil
		for _, e := range f.Allow.v {
			a, err := firewall.ParseAllow(e)
			if err != nil {
				return problem(atServer, "server", "allow", "%w", err)
			}
			srv.Allow = append(srv.Allow, a)
		}
	}
	return nil
}

// section decodes the plain table at at (a top-level one, named by its key) into dst, a
// pointer to a struct of fields, and returns its first problem.
func (d *decoder) section(v toml.Primitive, at place, dst any) error {
	name := at.table[0]
	r, err := d.table(v, at, dst)
	switch {
	case err != nil:
		return err
	case r.notTable != "":
		return problem(place{index: -1}, "", name, "want a table, got %s", r.notTable)
	case r.unknown != "":
		return unknownKey(at, name, r.unknown, "")
	case r.badKey != "":
		return problem(at, name, r.badKey, "%w", r.badErr)
	}
	return nil
}

// control decodes [control]; Validate checks the values.
func (d *decoder) control(v toml.Primitive, c *Control) error {
	var f tomlControl
	if err := d.section(v, atControl, &f); err != nil {
		return err
	}
	if f.MaxGrant.set && f.MaxGrant.v == 0 {
		return problem(atControl, "control", "max_grant", "must be more than 0 (leave it out for the default: %v)", DefaultMaxGrant)
	}
	*c = Control{Socket: f.Socket.v, Group: f.Group.v, AdminGroup: f.AdminGroup.v, MaxGrant: time.Duration(f.MaxGrant.v)}
	return nil
}

var doorName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// door decodes the i-th [[door]] and checks the rules of native doors that Validate does not
// (knockd.conf allows what they refuse).
func (d *decoder) door(i int, v toml.Primitive) (Door, error) {
	var f tomlDoor
	at := atDoor(i)
	r, err := d.table(v, at, &f)
	sec := fmt.Sprintf("door #%d", i+1)
	switch {
	case err != nil:
		return Door{}, err
	case r.notTable != "":
		return Door{}, problem(at, sec, "", "want a table, got %s", r.notTable)
	}
	name := f.Name.v
	if f.Name.err == nil && doorName.MatchString(name) {
		sec = doorSection(i, name)
	}
	switch {
	case r.unknown != "":
		return Door{}, unknownKey(at, sec, r.unknown, "")
	case !f.Name.set:
		return Door{}, problem(at, sec, "", "name is required")
	case f.Name.err == nil && !doorName.MatchString(name):
		return Door{}, problem(at, sec, "name", "%q is not a valid name (want letters, digits, _ . and -)", name)
	case r.badKey != "":
		return Door{}, problem(at, sec, r.badKey, "%w", r.badErr)
	case !f.Sequence.set && !f.SecretFile.set && !f.Rotate.set:
		return Door{}, problem(at, sec, "", "sequence is required (or secret_file and rotate, for a rotating door)")
	case f.Command.set && f.StartCommand.set:
		return Door{}, problem(at, sec, "start_command", "is the same as command: set only one of them")
	case f.Command6.set && f.StartCommand6.set:
		return Door{}, problem(at, sec, "start_command_6", "is the same as command_6: set only one of them")
	}
	door := Door{
		Open:         convertList(f.Open.v, func(p openPort) netport.Port { return netport.Port(p) }),
		OpenFor:      time.Duration(f.OpenFor.or(duration(DefaultOpenFor))),
		StartCommand: f.Command.or(f.StartCommand.v),
		StopCommand:  f.StopCommand.v,
		CmdTimeout:   time.Duration(f.CmdTimeout.or(duration(DefaultCmdTimeout))),
		Group:        f.Group.v,
		Door: knock.Door{
			Name:     name,
			Sequence: convertList(f.Sequence.v, func(e knockElem) knock.Element { return e.el }),
			Timeout:  time.Duration(f.SequenceTimeout.or(duration(DefaultSequenceTimeout))),
			Flags:    knock.TCPFlags(f.TCPFlags.or(tcpFlags(DefaultTCPFlags))),
			MinGap:   time.Duration(f.MinGap.v),
			MaxGap:   time.Duration(f.MaxGap.v),
			Sources:  convertList(f.Sources.v, func(s source) netip.Prefix { return netip.Prefix(s) }),
			Target:   netip.Addr(f.Target.v),
		},
	}
	if door.Rotate, err = d.rotation(&f, at, sec, name); err != nil {
		return Door{}, err
	}
	door.SourcePorts = convertList(f.SourcePorts.v, func(r portRange) PortRange { return PortRange(r) })
	if f.SourcePorts.set && len(door.SourcePorts) == 0 {
		return Door{}, problem(at, sec, "source_ports", "is empty: leave it out to allow every source port")
	}
	if len(door.SourcePorts) > 0 && slices.Contains(door.Sequence, knock.Element{Proto: netport.ICMP}) {
		return Door{}, problem(at, sec, "source_ports", "a ping has no source port: a door with source_ports cannot have an icmp knock")
	}
	if slices.ContainsFunc(f.Sequence.v, func(e knockElem) bool { return e.payload != nil }) {
		door.Payloads = convertList(f.Sequence.v, func(e knockElem) []byte { return e.payload })
	}
	// knockd's fallback: an IPv6 source runs the IPv4 command when no _6 one is given.
	door.StartCommand6 = f.Command6.or(f.StartCommand6.or(door.StartCommand))
	door.StopCommand6 = f.StopCommand6.or(door.StopCommand)
	seq, n := door.Sequence, len(door.Sequence)
	for j := 1; j < n; j++ {
		if seq[j] == seq[j-1] {
			return Door{}, problem(at, sec, "sequence", "elements %d and %d are both %s: a knock that repeats the previous "+
				"one is taken for a retransmission and ignored, so use a different element", j, j+1, seq[j])
		}
	}
	switch {
	case door.Timeout == 0:
		return Door{}, problem(at, sec, "sequence_timeout", "must be more than 0")
	case n > 1 && door.MinGap > 0 && door.MinGap > door.Timeout/time.Duration(n-1):
		return Door{}, problem(at, sec, "min_gap", "%d knocks at least %v apart cannot fit in sequence_timeout %v", n, door.MinGap, door.Timeout)
	case door.CmdTimeout > MaxCmdTimeout:
		return Door{}, problem(at, sec, "cmd_timeout", "%v is more than %v", door.CmdTimeout, MaxCmdTimeout)
	}
	return door, nil
}

// opensSomething refuses a native door that neither opens a port nor runs a command.
func opensSomething(cfg *Config) error {
	for i, d := range cfg.Doors {
		if len(d.Open) == 0 && d.StartCommand == "" && d.StartCommand6 == "" {
			return problem(atDoor(i), doorSection(i, d.Name), "", "the door opens nothing: set open, or a command")
		}
	}
	return nil
}
