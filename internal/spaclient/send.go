package spaclient

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/spa"
)

// Packet builds the datagram of r at time now, reading randomness from rnd.
func (r *Request) Packet(now time.Time, rnd io.Reader) ([]byte, error) {
	switch r.Format {
	case FormatSesame:
		return spa.Seal(spa.Request{Addr: r.Allow, Ports: r.Ports, Duration: r.OpenFor}, r.cred, now, rnd)
	case FormatFwknop:
		allow := r.Allow
		if !allow.IsValid() {
			allow = netip.IPv4Unspecified()
		}
		m := &fwknop.Message{
			User: r.ID, Timestamp: now, Type: fwknop.TypeAccess, AllowIP: allow,
			Ports: r.Ports, ClientTimeout: r.OpenFor, Digest: r.digest,
		}
		return fwknop.Encode(m, r.keys, rnd)
	}
	return nil, fmt.Errorf("build packet: unknown format %q", r.Format)
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

// Send writes pkt to dst as one UDP datagram.
func Send(ctx context.Context, dst netip.AddrPort, pkt []byte) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", dst.String())
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	defer c.Close()
	if _, err := c.Write(pkt); err != nil {
		return fmt.Errorf("send to %s: %w", dst, err)
	}
	return nil
}

// Open is `sesame open` after argument parsing: it resolves o, builds the
// packet and sends it (unless o.Test). With o.Verbose it describes the
// request, never the keys, on stdout; warnings go to stderr.
func Open(ctx context.Context, o Options, stdout, stderr io.Writer) error {
	r, err := Resolve(o, stderr)
	if err != nil {
		return err
	}
	dst, err := r.Lookup(ctx)
	if err != nil {
		return err
	}
	pkt, err := r.Packet(time.Now(), rand.Reader)
	if err != nil {
		return err
	}
	if o.Verbose || o.Test {
		fmt.Fprintf(stdout, "%s\nsettings from %s; %d-byte packet to udp %s\n", r, r.From, len(pkt), dst)
	}
	if o.Test {
		fmt.Fprintln(stdout, "test mode (-T): not sent")
		return nil
	}
	return Send(ctx, dst, pkt)
}
