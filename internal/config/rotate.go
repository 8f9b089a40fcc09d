package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/rotate"
	"github.com/sesame-knock/sesame/internal/spa"
)

// Rotation makes a door a rotating one ([[door]] secret_file and rotate): its sequence is
// derived from Secret for each time window (docs/PROTOCOL.md, "Rotating knock sequences"), so
// Door.Sequence is empty.
type Rotation struct {
	rotate.Params
	// SecretFile names the file Secret was read from (a `sesame keygen` shared key, mode 0600).
	SecretFile string
	// Secret is the key; its String is redacted.
	Secret spa.SharedKey
}

// MaxArmedKnocks bounds the knocks the rotating doors arm at once when the sweep guard is off.
const MaxArmedKnocks = 1536

// rotateRange is "LO-HI", an inclusive range of port numbers.
type rotateRange [2]uint16

func (r *rotateRange) UnmarshalText(b []byte) error {
	lo, hi, ok := strings.Cut(strings.TrimSpace(string(b)), "-")
	if !ok {
		return fmt.Errorf("%q: want a range of ports, as in \"10000-60000\"", b)
	}
	var v [2]uint16
	for i, s := range []string{lo, hi} {
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("%q: ports must be numbers in 1-65535", b)
		}
		v[i] = uint16(n)
	}
	if v[1] < v[0] {
		return fmt.Errorf("%q: the range ends before it starts", b)
	}
	*r = v
	return nil
}

// rotation decodes the rotation keys of a [[door]]; nil when it has none.
func (d *decoder) rotation(f *tomlDoor, at place, sec, name string) (*Rotation, error) {
	keys := []struct {
		key string
		set bool
	}{{"rotate_ports", f.RotatePorts.set}, {"rotate_length", f.RotateLength.set}, {"rotate_uses", f.RotateUses.set}, {"rotate_proto", f.RotateProto.set}}
	if !f.Rotate.set && !f.SecretFile.set {
		for _, k := range keys {
			if k.set {
				return nil, problem(at, sec, k.key, "only a rotating door (secret_file and rotate) takes %s", k.key)
			}
		}
		return nil, nil
	}
	switch {
	case !f.SecretFile.set:
		return nil, problem(at, sec, "secret_file", "a rotating door (rotate) needs secret_file: a key from `sesame keygen`, mode 0600")
	case !f.Rotate.set:
		return nil, problem(at, sec, "rotate", "secret_file needs rotate, the length of a window, as in \"30s\"")
	case f.Sequence.set:
		return nil, problem(at, sec, "sequence", "a rotating door derives its sequence: leave sequence out")
	}
	r := &Rotation{SecretFile: f.SecretFile.v, Params: rotate.Params{
		Door: name, Period: time.Duration(f.Rotate.v), Lo: rotate.DefaultLo, Hi: rotate.DefaultHi,
		Length: f.RotateLength.or(rotate.DefaultLen), Uses: f.RotateUses.or(rotate.DefaultUses), Proto: netport.TCP,
	}}
	if f.RotatePorts.set {
		r.Lo, r.Hi = f.RotatePorts.v[0], f.RotatePorts.v[1]
	}
	if f.RotateProto.set {
		switch strings.ToLower(f.RotateProto.v) {
		case "tcp":
		case "udp":
			r.Proto = netport.UDP
		default:
			return nil, problem(at, sec, "rotate_proto", "%q: want tcp or udp", f.RotateProto.v)
		}
	}
	if err := r.Params.Check(); err != nil {
		key := "rotate"
		switch {
		case r.Lo == 0 || int(r.Hi)-int(r.Lo)+1 < rotate.MinRange:
			key = "rotate_ports"
		case r.Length < 1 || r.Length > rotate.MaxLength:
			key = "rotate_length"
		case r.Uses < 1 || r.Uses > rotate.MaxUses:
			key = "rotate_uses"
		}
		return nil, problem(at, sec, key, "%w", err)
	}
	data, err := d.readSecret(r.SecretFile)
	if err != nil {
		return nil, problem(at, sec, "secret_file", "%w", err)
	}
	k, err := spa.ParseSharedKey(keyText(data))
	if err != nil {
		return nil, problem(at, sec, "secret_file", "%s: not a sesame shared key (want the file `sesame keygen` writes)", r.SecretFile)
	}
	r.Secret = k
	return r, nil
}

// checkRotations refuses a rotating door whose port range holds a port the gate protects, the
// SPA port, a decoy port, a port of another door's sequence, or overlaps another rotating
// door's range (of the same protocol): a derived knock must never be any of them.
func (c *Config) checkRotations() error {
	var taken []struct {
		what string
		p    netport.Port
	}
	add := func(what string, ps ...netport.Port) {
		for _, p := range ps {
			taken = append(taken, struct {
				what string
				p    netport.Port
			}{what, p})
		}
	}
	add("a port a door opens", c.OpenPorts()...)
	if c.SPA != nil {
		add("the SPA port", netport.Port{Proto: netport.UDP, Num: c.SPA.Port})
		add("a port SPA opens", c.SPA.Protected()...)
	}
	for _, d := range c.Decoys {
		add("a decoy port", d.Ports...)
	}
	for _, d := range c.Doors {
		add(fmt.Sprintf("a knock of door %q", d.Name), d.Sequence...)
	}
	armed := 0
	for i, d := range c.Doors {
		r := d.Rotate
		if r == nil {
			continue
		}
		at, sec := atDoor(i), doorSection(i, d.Name)
		// Without the sweep guard the kernel filter lists every armed knock (with it, the
		// guarded range covers them): keep the program well inside the kernel's limit.
		if armed += 3 * r.Uses * r.Length; c.Server.SweepGuard == 0 && armed > MaxArmedKnocks {
			return problem(at, sec, "rotate_uses", "with sweep_guard = 0 the capture filter lists every armed knock, 3 windows × rotate_uses × "+
				"rotate_length summed over the rotating doors, which must be at most %d (is %d)", MaxArmedKnocks, armed)
		}
		for _, t := range taken {
			if t.p.Proto == r.Proto && t.p.Num >= r.Lo && t.p.Num <= r.Hi {
				return problem(at, sec, "rotate_ports", "%d-%d holds %s (%s): pick a range without it", r.Lo, r.Hi, t.what, t.p)
			}
		}
		for j, o := range c.Doors[:i] {
			if o.Rotate != nil && o.Rotate.Proto == r.Proto && o.Rotate.Lo <= r.Hi && r.Lo <= o.Rotate.Hi {
				return problem(at, sec, "rotate_ports", "%d-%d overlaps the range of door %q: rotating doors need ranges of their own", r.Lo, r.Hi, c.Doors[j].Name)
			}
		}
	}
	return nil
}
