package firewall

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/sesame-knock/sesame/internal/netport"
)

// Stealth is how the gate answers what it refuses ([server] stealth).
type Stealth string

// The stealth modes. The empty Stealth of a Gate is StealthOff.
const (
	// StealthClosed refuses a new connection to a gated port the way the kernel refuses one to
	// a port where nothing listens: a TCP reset, an ICMP port unreachable for UDP.
	StealthClosed Stealth = "closed"
	// StealthDark drops gated ports like StealthOff and also every other new inbound packet
	// that is not loopback, IPv6 neighbour discovery or in the gate's Allow list.
	StealthDark Stealth = "dark"
	// StealthOff drops new connections to gated ports and leaves everything else alone.
	StealthOff Stealth = "off"
)

// Stealths lists the modes in the order messages name them.
func Stealths() []Stealth { return []Stealth{StealthClosed, StealthDark, StealthOff} }

// Allow is one [server] allow entry: new packets from Prefix pass a dark gate, to every port
// or, when Port.Num is not 0, to that TCP or UDP port only. It never opens a gated port: only a
// grant does.
type Allow struct {
	Prefix netip.Prefix
	Port   netport.Port
}

// String is the configuration form of a: "198.51.100.0/24" or "198.51.100.0/24 tcp/22".
func (a Allow) String() string {
	if a.Port.Num == 0 {
		return a.Prefix.String()
	}
	return a.Prefix.String() + " " + a.Port.String()
}

// ParseAllow parses an allow entry: a CIDR (or a bare address, a /32 or /128), optionally
// followed by one space and tcp/N or udp/N.
func ParseAllow(s string) (Allow, error) {
	f := strings.Fields(s)
	if len(f) == 0 || len(f) > 2 {
		return Allow{}, fmt.Errorf("%q: want \"CIDR\" or \"CIDR tcp/PORT\" or \"CIDR udp/PORT\"", s)
	}
	var a Allow
	if strings.Contains(f[0], "/") {
		p, err := netip.ParsePrefix(f[0])
		if err != nil {
			return Allow{}, fmt.Errorf("%q: %q is not a CIDR", s, f[0])
		}
		if p.Addr().Is4In6() {
			return Allow{}, fmt.Errorf("%q: write an IPv4 network in IPv4 form", s)
		}
		if p.Masked() != p {
			return Allow{}, fmt.Errorf("%q: %s has host bits set (the network is %s)", s, p, p.Masked())
		}
		a.Prefix = p
	} else {
		ad, err := netip.ParseAddr(f[0])
		if err != nil || ad.Zone() != "" || ad.Is4In6() {
			return Allow{}, fmt.Errorf("%q: %q is not an address or CIDR", s, f[0])
		}
		a.Prefix = netip.PrefixFrom(ad, ad.BitLen())
	}
	if len(f) == 2 {
		p, err := netport.Parse(f[1])
		if err != nil {
			return Allow{}, fmt.Errorf("%q: %w", s, err)
		}
		if err := CheckPort(p); err != nil {
			return Allow{}, fmt.Errorf("%q: %w", s, err)
		}
		a.Port = p
	}
	return a, nil
}
