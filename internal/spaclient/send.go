package spaclient

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/spa"
)

// errNoAddr is Packet's error for a request whose route address was never filled in.
var errNoAddr = errors.New("build packet: no address to open for (give -a ADDRESS, or let Open use the route to the server)")

// Packet builds the datagram of r at time now, reading randomness from rnd. r must name an
// address (Allow, filled in by UseRoute when not given) or ask for the packet's source (Source).
func (r *Request) Packet(now time.Time, rnd io.Reader) ([]byte, error) {
	if !r.Source && !r.Allow.IsValid() {
		return nil, errNoAddr
	}
	switch r.Format {
	case FormatSesame:
		req := spa.Request{Ports: r.Ports, Duration: r.OpenFor}
		if !r.Source {
			req.Addr = r.Allow
		}
		return spa.Seal(req, r.cred, now, rnd)
	case FormatFwknop:
		allow := netip.IPv4Unspecified() // fwknop's "the packet's source address"
		if !r.Source {
			allow = r.Allow
		}
		m := &fwknop.Message{
			User: r.ID, Timestamp: now, Type: fwknop.TypeAccess, AllowIP: allow,
			Ports: r.Ports, ClientTimeout: r.OpenFor, Digest: r.digest,
		}
		return fwknop.Encode(m, r.keys, rnd)
	}
	return nil, fmt.Errorf("build packet: unknown format %q", r.Format)
}

// cgnat is the shared address space of carrier-grade NAT (RFC 6598).
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// behindNAT reports whether the route from local to server very likely crosses a NAT: a
// private local address (RFC 1918, RFC 6598, IPv6 ULA) and a public server address.
func behindNAT(local, server netip.Addr) bool {
	private := func(a netip.Addr) bool { return a.IsPrivate() || cgnat.Contains(a) }
	return private(local) && server.IsGlobalUnicast() && !private(server)
}

// UseRoute makes local, the client's address on the route to server (the local address of a
// UDP socket connected to it), the address r asks for, unless r names one (-a) or asks for the
// packet's source (-s). It refuses what cannot work: an address the format cannot carry, and a
// private address on the way to a public server (a NAT would rewrite it, and the grant would be
// for an address the server never sees).
func (r *Request) UseRoute(local, server netip.Addr) error {
	if r.Source || r.Allow.IsValid() {
		return nil
	}
	local, server = local.Unmap().WithZone(""), server.Unmap()
	switch {
	case !local.IsValid() || local.IsUnspecified():
		return fmt.Errorf("no local address on the route to %s: give -a ADDRESS", server)
	case r.Format == FormatFwknop && !local.Is4():
		return usagef("your address on the route to %s is %s, and fwknop's format carries only IPv4 addresses: "+
			"use sesame's format, -a with an IPv4 address, or -s (weaker, see -h)", server, local)
	case behindNAT(local, server):
		return usagef("your address on the route to %s is %s, a private address: a NAT on the way would rewrite "+
			"the packet's source and the grant would be for an address the server never sees. "+
			"Give your public address with -a ADDRESS, or use -s (weaker, see -h)", server, local)
	}
	r.Allow, r.routed = local, true
	return nil
}

// Lookup resolves r.Host to one address of the requested family.
func (r *Request) Lookup(ctx context.Context) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(r.Host); err == nil {
		a = a.Unmap()
		if (r.Family == 4 && !a.Is4()) || (r.Family == 6 && a.Is4()) {
			return netip.AddrPort{}, fmt.Errorf("resolve %s: not an IPv%d address", r.Host, r.Family)
		}
		return netip.AddrPortFrom(a, r.Port), nil
	}
	network := "ip"
	if r.Family != 0 {
		network = fmt.Sprintf("ip%d", r.Family)
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, network, r.Host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("resolve %s: %w", r.Host, err)
	}
	if len(addrs) == 0 {
		return netip.AddrPort{}, fmt.Errorf("resolve %s: no address", r.Host)
	}
	return netip.AddrPortFrom(addrs[0].Unmap(), r.Port), nil
}

// Dial connects a UDP socket to dst. Connecting sends nothing; it picks the route, so the
// socket's local address is the client's address on the route to dst, of dst's family.
func Dial(ctx context.Context, dst netip.AddrPort) (*net.UDPConn, netip.Addr, error) {
	return DialFrom(ctx, dst, 0)
}

// DialFrom is Dial from local port sport (0: any).
func DialFrom(ctx context.Context, dst netip.AddrPort, sport uint16) (*net.UDPConn, netip.Addr, error) {
	var d net.Dialer
	if sport != 0 {
		d.LocalAddr = &net.UDPAddr{Port: int(sport)}
	}
	c, err := d.DialContext(ctx, "udp", dst.String())
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("send: %w", err)
	}
	uc := c.(*net.UDPConn)
	local := uc.LocalAddr().(*net.UDPAddr).AddrPort().Addr()
	return uc, local, nil
}

// Send writes pkt to dst as one UDP datagram.
func Send(ctx context.Context, dst netip.AddrPort, pkt []byte) error {
	c, _, err := Dial(ctx, dst)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write(pkt); err != nil {
		return fmt.Errorf("send to %s: %w", dst, err)
	}
	return nil
}

// Open is `sesame open` after argument parsing: it resolves o, builds the packet and sends it
// (unless o.Test) from the socket whose local address it asks for when o names none, or with
// o.ICMP in an ICMP echo request (SendPing) from the host's address on the same route. With
// o.Verbose it describes the request, never the keys, on stdout; warnings go to stderr.
func Open(ctx context.Context, o Options, stdout, stderr io.Writer) error {
	r, err := Resolve(o, stderr)
	if err != nil {
		return err
	}
	dst, err := r.Lookup(ctx)
	if err != nil {
		return err
	}
	conn, local, err := DialFrom(ctx, dst, r.SourcePort)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := r.UseRoute(local, dst.Addr()); err != nil {
		return err
	}
	pkt, err := r.Packet(time.Now(), rand.Reader)
	if err != nil {
		return err
	}
	to := "udp " + dst.String()
	if r.ICMP {
		to = "an ICMP echo request to " + dst.Addr().String()
	}
	if o.Verbose || o.Test {
		fmt.Fprintf(stdout, "%s\nsettings from %s; %d-byte packet in %s\n", r, r.From, len(pkt), to)
	}
	if o.Test {
		fmt.Fprintln(stdout, "test mode (-T): not sent")
		return nil
	}
	if r.ICMP {
		how, err := SendPing(dst.Addr(), pkt)
		if err == nil && o.Verbose {
			fmt.Fprintf(stdout, "sent from a %s\n", how)
		}
		return err
	}
	if _, err := conn.Write(pkt); err != nil {
		return fmt.Errorf("send to %s: %w", dst, err)
	}
	return nil
}
