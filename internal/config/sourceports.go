package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

// PortRange is the source ports Lo through Hi, inclusive.
type PortRange struct{ Lo, Hi uint16 }

// String is the configuration form: "40000-40100", or "40000" for one port.
func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return fmt.Sprint(r.Lo)
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// ParsePortRange parses "N" or "LO-HI", ports 1-65535.
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	l, err := netport.ParseNumber(strings.TrimSpace(lo))
	if err != nil {
		return PortRange{}, fmt.Errorf("%q: %w", s, err)
	}
	h, err := netport.ParseNumber(strings.TrimSpace(hi))
	if err != nil {
		return PortRange{}, fmt.Errorf("%q: %w", s, err)
	}
	if l > h {
		return PortRange{}, fmt.Errorf("%q: the first port is above the last", s)
	}
	return PortRange{l, h}, nil
}

// PortsAllow reports whether port is in one of rs; with no rs every port is. Port 0 (none
// known: a ping) is in no range.
func PortsAllow(rs []PortRange, port uint16) bool {
	if len(rs) == 0 {
		return true
	}
	return slices.ContainsFunc(rs, func(r PortRange) bool { return port >= r.Lo && port <= r.Hi })
}

// portRange is a source_ports entry (ParsePortRange).
type portRange PortRange

func (r *portRange) UnmarshalText(b []byte) error {
	v, err := ParsePortRange(string(b))
	*r = portRange(v)
	return err
}

// checkSourcePorts refuses a knock port used by doors with different source_ports: the server
// decides by port whether a knock's source port counts.
func checkSourcePorts(cfg *Config) error {
	first := map[knock.Element]int{}
	for i, d := range cfg.Doors {
		for _, el := range d.Sequence {
			j, ok := first[el]
			if !ok {
				first[el] = i
				continue
			}
			if !slices.Equal(cfg.Doors[j].SourcePorts, d.SourcePorts) {
				return problem(atDoor(i), doorSection(i, d.Name), "source_ports", "%s is also a knock of %s, whose source_ports differ: "+
					"doors that share a knock port need the same source_ports", elementString(el), doorSection(j, cfg.Doors[j].Name))
			}
		}
	}
	return nil
}
