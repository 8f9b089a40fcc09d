// Package knockclient implements the `sesame knock` client, a compatible and corrected knockd `knock`.
package knockclient

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/sesame-knock/sesame/internal/netport"
)

// Usage is the help text of the knock command.
const Usage = `usage: knock [options] <host> <port[:proto][:hex:BYTES]> [port[:proto][:hex:BYTES]] ...
  proto is tcp (the default), udp or icmp, in any case; a port may be a service name.
  "icmp" alone sends an ICMP echo request.
  :hex:BYTES sends that payload (1-64 bytes, in hexadecimal) in a udp or icmp hit, for
  doors whose knock requires one: 8000:udp:hex:cafe01, icmp:hex:cafe01.
options:
  -u, --udp          make every hit without a :proto suffix a UDP hit
  -d, --delay <ms>   wait this many milliseconds between hits (default 0)
  --source-port <n>  send every tcp and udp hit from local port n (for doors with
                     source_ports; a NAT on the way may rewrite it)
  -4, --ipv4         use IPv4 only
  -6, --ipv6         use IPv6 only
  -v, --verbose      print each hit
  -V, --version      print the version
  -h, --help         print this help
`

// Options is a parsed knock command line.
type Options struct {
	Host string
	// Hits are the knocks in order: TCP or UDP ports, or ICMP (Num 0).
	Hits []netport.Port
	// Payloads, when not nil, has one entry per hit: the payload of a UDP or ICMP hit (nil:
	// the default one).
	Payloads [][]byte
	Delay    time.Duration // between hits
	Family   int           // 4 or 6 to force an address family, 0 for either
	Verbose  bool
	Help     bool // -h given: nothing else was checked
	Version  bool // -V given: nothing else was checked
	// SourcePort, when not 0, is the local port TCP and UDP hits are sent from (--source-port).
	SourcePort uint16
	// Source, when valid, is the local address hits are sent from (not settable from the
	// command line; tests use it to knock from many addresses).
	Source netip.Addr
	// Rotate, when set (--door), asks for a rotating door's sequence instead of Hits
	// (SendRotating).
	Rotate *Rotating
}

// ParseArgs parses the arguments of knock (without the program name). Options may come before,
// between and after the host and ports, as with GNU getopt; "--" ends them. Unlike knockd's
// client it rejects an unknown protocol suffix, accepts suffixes in any case, rejects port
// numbers outside 1-65535 instead of wrapping them, and rejects a negative or non-numeric delay.
// With -h or -V it returns at once with Help or Version set.
func ParseArgs(args []string) (Options, error) {
	var o Options
	udp, v4, v6 := false, false, false
	var pos []string
	rotVals := map[string]string{}
	onlyPos := false
	delay := func(v string) error {
		ms, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("knock: delay %q is not a number of milliseconds", v)
		}
		if ms < 0 {
			return fmt.Errorf("knock: delay %d must not be negative", ms)
		}
		o.Delay = time.Duration(ms) * time.Millisecond
		return nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case onlyPos || a == "-" || !strings.HasPrefix(a, "-"):
			pos = append(pos, a)
			continue
		case a == "--":
			onlyPos = true
			continue
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			flags := map[string]*bool{"udp": &udp, "ipv4": &v4, "ipv6": &v6, "verbose": &o.Verbose, "help": &o.Help, "version": &o.Version}
			if p, ok := flags[name]; ok {
				if hasVal {
					return Options{}, fmt.Errorf("knock: option --%s takes no value", name)
				}
				*p = true
				continue
			}
			if name != "delay" && name != "source-port" && !slices.Contains(rotatingFlags, name) {
				return Options{}, fmt.Errorf("knock: unknown option --%s", name)
			}
			if !hasVal {
				if i+1 >= len(args) {
					return Options{}, fmt.Errorf("knock: option --%s needs a value", name)
				}
				i++
				val = args[i]
			}
			if name == "source-port" {
				p, err := netport.ParseNumber(val)
				if err != nil {
					return Options{}, fmt.Errorf("knock: --source-port %q: %v", val, err)
				}
				o.SourcePort = p
				continue
			}
			if name != "delay" {
				if o.Rotate == nil {
					o.Rotate = &Rotating{}
				}
				rotVals[name] = val
				continue
			}
			if err := delay(val); err != nil {
				return Options{}, err
			}
			continue
		}
	cluster:
		for j := 1; j < len(a); j++ {
			switch c := a[j]; c {
			case 'u':
				udp = true
			case '4':
				v4 = true
			case '6':
				v6 = true
			case 'v':
				o.Verbose = true
			case 'h':
				o.Help = true
			case 'V':
				o.Version = true
			case 'd':
				val := a[j+1:]
				if val == "" {
					if i+1 >= len(args) {
						return Options{}, errors.New("knock: option -d needs a value")
					}
					i++
					val = args[i]
				}
				if err := delay(val); err != nil {
					return Options{}, err
				}
				break cluster
			default:
				if c >= '0' && c <= '9' {
					return Options{}, fmt.Errorf("knock: unknown option -%c in %q (ports cannot be negative)", c, a)
				}
				return Options{}, fmt.Errorf("knock: unknown option -%c", c)
			}
		}
	}
	if o.Help || o.Version {
		return o, nil
	}
	switch {
	case v4 && v6:
		return Options{}, errors.New("knock: -4 and -6 exclude each other")
	case v4:
		o.Family = 4
	case v6:
		o.Family = 6
	}
	if len(pos) == 0 {
		return Options{}, errors.New("knock: no host given")
	}
	if o.Rotate != nil {
		if len(pos) > 1 {
			return Options{}, errors.New("knock: --door derives the ports: give HOST alone")
		}
		o.Host = pos[0]
		proto := netport.TCP
		if udp {
			proto = netport.UDP
		}
		if err := o.Rotate.parse(rotVals, proto); err != nil {
			return Options{}, err
		}
		return o, nil
	}
	if len(pos) == 1 {
		return Options{}, errors.New("knock: no ports given")
	}
	o.Host = pos[0]
	def := netport.TCP
	if udp {
		def = netport.UDP
	}
	payloads := make([][]byte, 0, len(pos)-1)
	for _, s := range pos[1:] {
		hit, payload, err := splitPayload(s)
		if err != nil {
			return Options{}, err
		}
		h, err := parseHit(hit, def)
		if err != nil {
			return Options{}, err
		}
		if payload != nil && h.Proto == netport.TCP {
			return Options{}, fmt.Errorf("knock: hit %q: only a udp or icmp hit carries a payload", s)
		}
		if o.SourcePort != 0 && h.Proto == netport.ICMP {
			return Options{}, fmt.Errorf("knock: hit %q: a ping has no source port (--source-port)", s)
		}
		o.Hits = append(o.Hits, h)
		payloads = append(payloads, payload)
	}
	for _, p := range payloads {
		if p != nil {
			o.Payloads = payloads
			break
		}
	}
	return o, nil
}

// MaxPayload is the longest payload of a hit, as a door may require it.
const MaxPayload = 64

// splitPayload cuts a ":hex:BYTES" suffix off a hit and decodes it (nil when there is none).
func splitPayload(s string) (string, []byte, error) {
	i := strings.Index(strings.ToLower(s), ":hex:")
	if i < 0 {
		return s, nil, nil
	}
	b, err := hex.DecodeString(s[i+5:])
	switch {
	case err != nil:
		return "", nil, fmt.Errorf("knock: hit %q: the payload is not hexadecimal bytes", s)
	case len(b) == 0 || len(b) > MaxPayload:
		return "", nil, fmt.Errorf("knock: hit %q: a payload is 1-%d bytes", s, MaxPayload)
	}
	return s[:i], b, nil
}

// parseHit parses PORT[:PROTO] or "icmp"; def is the protocol without a suffix.
func parseHit(s string, def netport.Proto) (netport.Port, error) {
	num, suffix, hasSuffix := strings.Cut(s, ":")
	proto := def
	if hasSuffix {
		p, err := netport.ParseProto(suffix)
		if err != nil {
			return netport.Port{}, fmt.Errorf("knock: hit %q: unknown protocol %q (want tcp, udp or icmp)", s, suffix)
		}
		proto = p
	} else if strings.EqualFold(num, "icmp") {
		return netport.Port{Proto: netport.ICMP}, nil
	}
	if proto == netport.ICMP {
		if num != "" && num != "0" {
			return netport.Port{}, fmt.Errorf("knock: hit %q: icmp takes no port", s)
		}
		return netport.Port{Proto: netport.ICMP}, nil
	}
	if num == "" {
		return netport.Port{}, fmt.Errorf("knock: hit %q: no port", s)
	}
	if strings.Trim(num, "0123456789") == "" {
		n, err := netport.ParseNumber(num)
		if err != nil {
			return netport.Port{}, fmt.Errorf("knock: hit %q: %v", s, err)
		}
		return netport.Port{Proto: proto, Num: n}, nil
	}
	n, err := net.DefaultResolver.LookupPort(context.Background(), proto.String(), num)
	if err != nil || n < 1 || n > 65535 {
		return netport.Port{}, fmt.Errorf("knock: hit %q: unknown %s service %q", s, proto, num)
	}
	return netport.Port{Proto: proto, Num: uint16(n)}, nil
}

// Resolve returns the address of host, an IP literal (with an optional zone or brackets) or a
// name. family 4 or 6 restricts it; with family 0 and a valid src, src's family is used; else
// the first address the resolver prefers is taken.
func Resolve(ctx context.Context, host string, family int, src netip.Addr) (netip.Addr, error) {
	if family == 0 && src.IsValid() {
		family = 6
		if src.Unmap().Is4() {
			family = 4
		}
	}
	literal := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if a, err := netip.ParseAddr(literal); err == nil {
		if a.Is4In6() && family != 6 {
			a = a.Unmap()
		}
		if family == 4 && !a.Is4() || family == 6 && !a.Is6() {
			return netip.Addr{}, fmt.Errorf("knock: resolve %s: not an IPv%d address", host, family)
		}
		return a, nil
	}
	network := "ip"
	if family != 0 {
		network = "ip" + strconv.Itoa(family)
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, network, host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("knock: resolve %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("knock: resolve %s: no address", host)
	}
	a := addrs[0]
	if family != 6 {
		a = a.Unmap()
	}
	return a, nil
}

// Send resolves opts.Host once and knocks opts.Hits in order, waiting opts.Delay between hits.
// With opts.Verbose it passes a line per hit to log (which may be nil). It stops at the first
// error or when ctx ends.
func Send(ctx context.Context, opts Options, log func(string)) error {
	if len(opts.Hits) == 0 {
		return errors.New("knock: no ports given")
	}
	dst, err := Resolve(ctx, opts.Host, opts.Family, opts.Source)
	if err != nil {
		return err
	}
	for i, h := range opts.Hits {
		if i > 0 && opts.Delay > 0 {
			t := time.NewTimer(opts.Delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("knock: %w", ctx.Err())
			case <-t.C:
			}
		}
		if opts.Verbose && log != nil {
			if h.Proto == netport.ICMP {
				log(fmt.Sprintf("hitting icmp %s", dst))
			} else {
				log(fmt.Sprintf("hitting %s %s", h.Proto, netip.AddrPortFrom(dst, h.Num)))
			}
		}
		var payload []byte
		if i < len(opts.Payloads) {
			payload = opts.Payloads[i]
		}
		if err := SendHit(ctx, opts.Source, opts.SourcePort, dst, h, payload); err != nil {
			return err
		}
	}
	return nil
}

// SendOne sends one hit from src (when valid) to dst: a TCP hit is a single SYN with no
// retransmission, a UDP hit a 1-byte datagram, an ICMP hit one echo request.
func SendOne(ctx context.Context, src, dst netip.Addr, el netport.Port) error {
	return SendHit(ctx, src, 0, dst, el, nil)
}

// SendHit is SendOne from local port sport (0: any; TCP and UDP hits only) with the payload of
// a UDP or ICMP hit (nil: the default, one zero byte or "sesame"); a TCP hit carries none.
func SendHit(ctx context.Context, src netip.Addr, sport uint16, dst netip.Addr, el netport.Port, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("knock: %w", err)
	}
	if !dst.IsValid() {
		return errors.New("knock: no destination address")
	}
	if src.IsValid() && src.Unmap().Is4() != dst.Unmap().Is4() {
		return fmt.Errorf("knock: source %s and destination %s differ in address family", src, dst)
	}
	var err error
	switch el.Proto {
	case netport.TCP:
		err = sendSYN(ctx, src, sport, dst, el.Num)
	case netport.UDP:
		if payload == nil {
			payload = []byte{0}
		}
		err = sendUDP(ctx, src, sport, dst, el.Num, payload)
	case netport.ICMP:
		if payload == nil {
			payload = []byte("sesame")
		}
		err = sendEcho(src, dst, os.Geteuid() <= 0, payload) // Windows reports -1: try raw there too
	default:
		err = fmt.Errorf("unsupported protocol %v", el.Proto)
	}
	if err != nil {
		return fmt.Errorf("knock: hit %v on %s: %w", el, dst, err)
	}
	return nil
}

func sendUDP(ctx context.Context, src netip.Addr, sport uint16, dst netip.Addr, port uint16, payload []byte) error {
	var d net.Dialer
	if src.IsValid() || sport != 0 {
		d.LocalAddr = &net.UDPAddr{IP: src.AsSlice(), Port: int(sport), Zone: src.Zone()}
	}
	c, err := d.DialContext(ctx, "udp", netip.AddrPortFrom(dst, port).String())
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write(payload)
	return err
}

// sendEcho sends an ICMP echo request over a raw socket when raw is true and that is
// permitted, else over an unprivileged ICMP ("ping") socket.
func sendEcho(src, dst netip.Addr, raw bool, payload []byte) error {
	v4 := dst.Unmap().Is4()
	rawNet, dgramNet, laddr := "ip6:ipv6-icmp", "udp6", "::"
	var typ icmp.Type = ipv6.ICMPTypeEchoRequest
	if v4 {
		rawNet, dgramNet, laddr = "ip4:icmp", "udp4", "0.0.0.0"
		typ = ipv4.ICMPTypeEcho
		dst = dst.Unmap()
	}
	if src.IsValid() {
		laddr = src.Unmap().String()
		if !v4 {
			laddr = src.String()
		}
	}
	var (
		c   *icmp.PacketConn
		err error
	)
	if raw {
		c, err = icmp.ListenPacket(rawNet, laddr)
		if err != nil && errors.Is(err, os.ErrPermission) {
			raw = false
		} else if err != nil {
			return err
		}
	}
	if !raw {
		if c, err = icmp.ListenPacket(dgramNet, laddr); err != nil {
			return err
		}
	}
	defer c.Close()
	// The kernel fills in the ICMPv6 checksum, and the identifier of an unprivileged socket.
	msg, err := (&icmp.Message{Type: typ, Body: &icmp.Echo{ID: os.Getpid() & 0xffff, Seq: 1, Data: payload}}).Marshal(nil)
	if err != nil {
		return err
	}
	var to net.Addr = &net.IPAddr{IP: dst.AsSlice(), Zone: dst.Zone()}
	if !raw {
		to = &net.UDPAddr{IP: dst.AsSlice(), Zone: dst.Zone()}
	}
	_, err = c.WriteTo(msg, to)
	return err
}
