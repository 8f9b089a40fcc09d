package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

// Kind names a firewall backend, as the configuration and the command line spell it.
type Kind string

// The firewall backends.
const (
	Nftables Kind = "nftables" // sesame's own nftables table
	Iptables Kind = "iptables" // sesame's own iptables chains
	None     Kind = "none"     // no firewall: doors can only run commands
	AWSSG    Kind = "aws-sg"   // AWS security groups ([firewall.aws]; docs/CLOUD.md)
)

// Kinds lists every backend, in the order messages name them.
func Kinds() []Kind { return []Kind{Nftables, Iptables, AWSSG, None} }

// KindList is the backends as a message names them: "nftables, iptables or none".
func KindList() string {
	ks := Kinds()
	s := ""
	for i, k := range ks {
		switch {
		case i == 0:
		case i == len(ks)-1:
			s += " or "
		default:
			s += ", "
		}
		s += string(k)
	}
	return s
}

// ConnMark is the one conntrack mark bit that both backends set on every connection a grant
// admitted (ct mark set ct mark or ConnMark; iptables -j CONNMARK --set-xmark ConnMark/ConnMark).
// Other bits of the mark are left alone. A host firewall accepts exactly the connections sesame
// admitted with "ct mark and 0x20000000 == 0x20000000 accept" or
// "iptables -I INPUT -m connmark --mark 0x20000000/0x20000000 -j ACCEPT".
const ConnMark uint32 = 0x20000000

// Gate is what sesame's own firewall table enforces: new connections to a protected port are
// refused unless their (source, protocol, port) has a live grant; established traffic passes.
// Stealth says how they are refused (empty: StealthOff, a drop); in StealthDark every other new
// inbound packet is dropped too unless it is loopback, IPv6 neighbour discovery or in Allow.
type Gate struct {
	Protected []netport.Port
	Stealth   Stealth
	Allow     []Allow
}

// Rejects reports whether g refuses with a reset or port unreachable rather than a drop.
func (g Gate) Rejects() bool { return g.Stealth == StealthClosed }

// Dark reports whether g drops every new inbound packet it does not allow.
func (g Gate) Dark() bool { return g.Stealth == StealthDark }

// Grant opens one protected port for one source address until Timeout has passed.
//
// With To valid it is a forward instead: new connections from Src to Port are translated to To
// (destination NAT) until Timeout has passed; an unspecified To address (0.0.0.0, ::) means this
// host (a redirect to port To.Port(), fwknop's local NAT). Backends only take forwards through
// the optional Forwarder interface; Backend.Grant refuses them (CheckGrants).
type Grant struct {
	Src     netip.Addr
	Port    netport.Port
	Timeout time.Duration
	To      netip.AddrPort
}

// IsForward reports whether g is a forward (To is set).
func (g Grant) IsForward() bool { return g.To.IsValid() }

// String is the log form of a grant.
func (g Grant) String() string {
	if g.IsForward() {
		return fmt.Sprintf("%s %s -> %s for %s", g.Src, g.Port, g.To, g.Timeout)
	}
	return fmt.Sprintf("%s %s for %s", g.Src, g.Port, g.Timeout)
}

// CheckPort reports whether a backend can gate p: a TCP or UDP port other than 0.
func CheckPort(p netport.Port) error {
	if p.Proto != netport.TCP && p.Proto != netport.UDP {
		return fmt.Errorf("cannot gate %s: only tcp and udp ports", p)
	}
	if p.Num == 0 {
		return fmt.Errorf("cannot gate %s: port 0", p)
	}
	return nil
}

// CheckGate checks every protected port of g.
func CheckGate(g Gate) error {
	if g.Stealth != "" && g.Stealth != StealthClosed && g.Stealth != StealthDark && g.Stealth != StealthOff {
		return fmt.Errorf("gate: %q is not a stealth mode", g.Stealth)
	}
	for _, a := range g.Allow {
		if !a.Prefix.IsValid() {
			return fmt.Errorf("gate: allow entry without a network")
		}
		if a.Port.Num != 0 {
			if err := CheckPort(a.Port); err != nil {
				return err
			}
		}
	}
	for _, p := range g.Protected {
		if err := CheckPort(p); err != nil {
			return err
		}
	}
	return nil
}

// CheckGrants checks grants before a backend applies them: each needs a source address and a
// port CheckPort accepts, and, when they are to be added (not revoked), a timeout of at least
// 1 ms (the kernel's resolution).
func CheckGrants(grants []Grant, add bool) error {
	for _, g := range grants {
		if !g.Src.IsValid() {
			return fmt.Errorf("grant %s: no source address", g)
		}
		if err := CheckPort(g.Port); err != nil {
			return err
		}
		if add && g.Timeout < time.Millisecond {
			return fmt.Errorf("grant %s: timeout must be at least 1ms", g)
		}
		if g.IsForward() {
			return fmt.Errorf("grant %s: a forward, which this backend does not take as a grant", g)
		}
	}
	return nil
}

// LiveGrant is a grant as the kernel holds it now, with the time it has left.
type LiveGrant struct {
	Src       netip.Addr
	Port      netport.Port
	Remaining time.Duration
}

// Backend keeps the gate and its grants in the kernel. Grants expire in the kernel, so they close
// on time even when the daemon is dead.
type Backend interface {
	// Apply atomically replaces sesame's own rules with gate, keeping every live grant, and
	// touches nothing else of the host's firewall. It is safe to call again (reload, restart).
	Apply(ctx context.Context, gate Gate) error
	// Grant adds or refreshes grants; a refreshed grant gets the new timeout.
	Grant(ctx context.Context, grants ...Grant) error
	// Revoke removes grants; removing an absent grant is not an error.
	Revoke(ctx context.Context, grants ...Grant) error
	// List returns the live grants.
	List(ctx context.Context) ([]LiveGrant, error)
	// Close releases the backend. With removeRules false the gate and its grants stay in the
	// kernel (fail closed); with true sesame's rules are removed and protected ports are no
	// longer gated by sesame.
	Close(ctx context.Context, removeRules bool) error
}

// LiveBan is a ban as the kernel holds it now, with the time it has left.
type LiveBan struct {
	Src       netip.Addr
	Remaining time.Duration
}

// Banner keeps bans in the kernel: a banned source's packets to every protected port are
// dropped, granted or not, until the ban times out. Bans expire in the kernel, so they end on
// time even when the daemon is dead, and Apply keeps the live ones as it keeps grants.
type Banner interface {
	// Ban adds or refreshes a ban of src for dur (at least 1 ms); a refreshed ban gets dur.
	Ban(ctx context.Context, src netip.Addr, dur time.Duration) error
	// Unban removes the ban of src; removing an absent ban is not an error.
	Unban(ctx context.Context, src netip.Addr) error
	// ListBans returns the live bans.
	ListBans(ctx context.Context) ([]LiveBan, error)
}

// CheckBan checks a ban before a backend applies it.
func CheckBan(src netip.Addr, dur time.Duration, add bool) error {
	if !src.IsValid() {
		return fmt.Errorf("ban: no source address")
	}
	if add && dur < time.Millisecond {
		return fmt.Errorf("ban %s: duration must be at least 1ms", src)
	}
	return nil
}
