package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

// Forward is one forward an SPA client may be granted: `forward = ["tcp/8022 -> 198.19.0.2:22"]`.
// A request for Port from this client is granted as destination NAT of the client's new
// connections to Port on this host, to To, instead of a grant of Port itself.
type Forward struct {
	// Port is this host's port the client connects to. Num 0 (written tcp/*) is any port the
	// request names, for local forwards only (fwknop's --nat-rand-port).
	Port netport.Port
	// To is the destination. For a local forward (written local:PORT) the address is invalid
	// and the client's connections are redirected to port To.Port() of this host.
	To    netip.AddrPort
	Local bool
	// NATOnly (written with a leading "nat ") serves only fwknop NAT requests (-N, --nat-local),
	// never a plain request for Port: fwknopd's ENABLE_IPT_LOCAL_NAT.
	NATOnly bool
}

// String is the configuration's spelling of f.
func (f Forward) String() string {
	from := f.Port.String()
	if f.Port.Num == 0 {
		from = f.Port.Proto.String() + "/*"
	}
	if f.NATOnly {
		from = "nat " + from
	}
	if f.Local {
		return fmt.Sprintf("%s -> local:%d", from, f.To.Port())
	}
	return fmt.Sprintf("%s -> %s", from, f.To)
}

// Matches reports whether f serves a request for port p granted to addr: the same protocol and
// port (any port for tcp/* local forwards) and, for a remote forward, a destination of addr's
// family.
func (f Forward) Matches(p netport.Port, addr netip.Addr) bool {
	if f.Port.Proto != p.Proto || (f.Port.Num != p.Num && f.Port.Num != 0) {
		return false
	}
	return f.Local || f.To.Addr().Is4() == addr.Unmap().Is4()
}

// Target is the destination of f for a grant to addr (local: this host, as the unspecified
// address of addr's family).
func (f Forward) Target(addr netip.Addr) netip.AddrPort {
	if !f.Local {
		return f.To
	}
	un := netip.IPv6Unspecified()
	if addr.Unmap().Is4() {
		un = netip.IPv4Unspecified()
	}
	return netip.AddrPortFrom(un, f.To.Port())
}

// ParseForward parses "PROTO/PORT -> ADDRESS:PORT" (IPv6 in brackets), "PROTO/PORT ->
// local:PORT" or "PROTO/* -> local:PORT", each optionally after "nat " (NATOnly).
func ParseForward(s string) (Forward, error) {
	if rest, ok := strings.CutPrefix(strings.TrimSpace(s), "nat "); ok {
		f, err := ParseForward(rest)
		f.NATOnly = true
		return f, err
	}
	from, to, ok := strings.Cut(s, "->")
	if !ok {
		return Forward{}, fmt.Errorf("%q: want PROTO/PORT -> ADDRESS:PORT or PROTO/PORT -> local:PORT", s)
	}
	from, to = strings.TrimSpace(from), strings.TrimSpace(to)
	var f Forward
	if proto, ok := strings.CutSuffix(from, "/*"); ok {
		pr, err := netport.ParseProto(proto)
		if err != nil {
			return Forward{}, fmt.Errorf("%q: %w", s, err)
		}
		f.Port = netport.Port{Proto: pr}
	} else {
		p, err := parseOpen(from)
		if err != nil {
			return Forward{}, fmt.Errorf("%q: %w", s, err)
		}
		f.Port = p
	}
	if f.Port.Proto != netport.TCP && f.Port.Proto != netport.UDP {
		return Forward{}, fmt.Errorf("%q: only tcp and udp ports are forwarded", s)
	}
	if port, ok := strings.CutPrefix(to, "local:"); ok {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return Forward{}, fmt.Errorf("%q: local:%s: want a port 1-65535", s, port)
		}
		f.Local, f.To = true, netip.AddrPortFrom(netip.Addr{}, uint16(n))
		return f, nil
	}
	if f.Port.Num == 0 {
		return Forward{}, fmt.Errorf("%q: any port (%s/*) is only for local forwards (-> local:PORT)", s, f.Port.Proto)
	}
	ap, err := netip.ParseAddrPort(to)
	if err != nil {
		return Forward{}, fmt.Errorf("%q: %q is not ADDRESS:PORT ([ADDRESS]:PORT for IPv6) or local:PORT", s, to)
	}
	if err := checkForwardTo(ap); err != nil {
		return Forward{}, fmt.Errorf("%q: %w", s, err)
	}
	f.To = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return f, nil
}

// checkForwardTo refuses destinations a forward cannot sensibly reach.
func checkForwardTo(ap netip.AddrPort) error {
	a := ap.Addr()
	switch {
	case ap.Port() == 0:
		return errors.New("destination port 0")
	case a.Zone() != "":
		return errors.New("a destination with a zone")
	case a.IsUnspecified(), a.IsMulticast(), a.IsLoopback(), a.IsLinkLocalUnicast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("%s is not a unicast address of another host (for this host write local:PORT)", a)
	}
	return nil
}

// forwardEntry is a forward list entry in TOML.
type forwardEntry Forward

func (f *forwardEntry) UnmarshalText(b []byte) error {
	v, err := ParseForward(string(b))
	*f = forwardEntry(v)
	return err
}

// checkForwards refuses forward lists a request could not be matched against unambiguously:
// two entries for one port and family, and a port both opened and forwarded.
func checkForwards(fs []Forward, open []netport.Port) error {
	for i, f := range fs {
		if f.NATOnly {
			// A NAT request names its destination, which picks among NAT-only forwards, and a
			// plain request never takes one: neither is ambiguous.
			continue
		}
		for _, g := range fs[:i] {
			if g.NATOnly {
				continue
			}
			sameFam := f.Local || g.Local || f.To.Addr().Is4() == g.To.Addr().Is4()
			overlap := f.Port.Proto == g.Port.Proto && (f.Port.Num == g.Port.Num || f.Port.Num == 0 || g.Port.Num == 0)
			if sameFam && overlap {
				return fmt.Errorf("%s and %s: two forwards for one port", g, f)
			}
		}
		for _, p := range open {
			if f.Port.Proto == p.Proto && (f.Port.Num == p.Num || f.Port.Num == 0) {
				return fmt.Errorf("%s: %s is in open too: a request for it would be ambiguous", f, p)
			}
		}
	}
	return nil
}

// Destinations lists the remote destinations of every client's forwards, each once: the forward
// chain drops new connections to them that no forward admitted.
func (s *SPA) Destinations() []firewall.Destination {
	if s == nil {
		return nil
	}
	var out []firewall.Destination
	for _, c := range s.Clients {
		for _, f := range c.Forward {
			if f.Local {
				continue
			}
			d := firewall.Destination{Addr: f.To.Addr(), Port: netport.Port{Proto: f.Port.Proto, Num: f.To.Port()}}
			if !containsDest(out, d) {
				out = append(out, d)
			}
		}
	}
	return out
}

func containsDest(ds []firewall.Destination, d firewall.Destination) bool {
	for _, x := range ds {
		if x == d {
			return true
		}
	}
	return false
}

// HasForwards reports whether any client may be granted a forward.
func (s *SPA) HasForwards() bool {
	if s == nil {
		return false
	}
	for _, c := range s.Clients {
		if len(c.Forward) > 0 {
			return true
		}
	}
	return false
}
