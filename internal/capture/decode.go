package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

// Errors of Decode, wrapped with details.
var (
	ErrTruncated        = errors.New("packet truncated")
	ErrVersion          = errors.New("not an IPv4 or IPv6 packet")
	ErrBadIHL           = errors.New("bad IPv4 header length")
	ErrBadLength        = errors.New("bad IP length")
	ErrFragment         = errors.New("IPv4 non-first fragment")
	ErrUnsupportedProto = errors.New("unsupported protocol")
	ErrBadTCPHeader     = errors.New("bad TCP data offset")
	ErrBadUDPLength     = errors.New("bad UDP length")
	ErrNotEcho          = errors.New("ICMP message is not an echo request or an IPv4 echo reply")
)

// Decode decodes an IPv4 or IPv6 packet (chosen by the version nibble) that starts at the IP
// header. Packets cut short by the snap length decode as long as their headers are complete;
// bytes past the IP length (link padding) are ignored. IPv4 first fragments decode, non-first
// fragments are ErrFragment. ICMP decodes for echo requests (ICMPv4 and ICMPv6) and ICMPv4 echo
// replies, the payload being what follows the 8-byte echo header. IPv6 extension headers are
// not followed (ErrUnsupportedProto). A source address no real sender has (SourceProblem) is
// ErrBadSource, naming the address and why. Payload aliases b. Decode never panics.
func Decode(b []byte, t time.Time, ifindex int) (Packet, error) {
	p := Packet{Time: t, Ifindex: ifindex}
	if len(b) == 0 {
		return p, fmt.Errorf("capture: decode: %w: empty packet", ErrTruncated)
	}
	var proto uint8
	var l4 []byte
	v6 := false
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return p, fmt.Errorf("capture: decode: %w: %d bytes of IPv4 header", ErrTruncated, len(b))
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 {
			return p, fmt.Errorf("capture: decode: %w: %d bytes", ErrBadIHL, ihl)
		}
		if len(b) < ihl {
			return p, fmt.Errorf("capture: decode: %w: %d bytes of a %d-byte IPv4 header", ErrTruncated, len(b), ihl)
		}
		total := int(binary.BigEndian.Uint16(b[2:4]))
		if total < ihl {
			return p, fmt.Errorf("capture: decode: %w: IPv4 total length %d shorter than header %d", ErrBadLength, total, ihl)
		}
		if off := binary.BigEndian.Uint16(b[6:8]) & 0x1fff; off != 0 {
			return p, fmt.Errorf("capture: decode: %w: offset %d", ErrFragment, int(off)*8)
		}
		if total < len(b) {
			b = b[:total]
		}
		p.Src = netip.AddrFrom4([4]byte(b[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		proto, l4 = b[9], b[ihl:]
	case 6:
		if len(b) < 40 {
			return p, fmt.Errorf("capture: decode: %w: %d bytes of IPv6 header", ErrTruncated, len(b))
		}
		if end := 40 + int(binary.BigEndian.Uint16(b[4:6])); end < len(b) {
			b = b[:end]
		}
		p.Src = netip.AddrFrom16([16]byte(b[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		proto, l4, v6 = b[6], b[40:], true
	default:
		return p, fmt.Errorf("capture: decode: %w: version %d", ErrVersion, b[0]>>4)
	}
	if why := SourceProblem(p.Src); why != "" {
		return p, fmt.Errorf("capture: decode: %w: %s (%s)", ErrBadSource, p.Src, why)
	}

	switch {
	case proto == ipProtoTCP:
		if len(l4) < 20 {
			return p, fmt.Errorf("capture: decode: %w: %d bytes of TCP header", ErrTruncated, len(l4))
		}
		doff := int(l4[12]>>4) * 4
		if doff < 20 {
			return p, fmt.Errorf("capture: decode: %w: %d bytes", ErrBadTCPHeader, doff)
		}
		if len(l4) < doff {
			return p, fmt.Errorf("capture: decode: %w: %d bytes of a %d-byte TCP header", ErrTruncated, len(l4), doff)
		}
		p.Proto = netport.TCP
		p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		p.DstPort = binary.BigEndian.Uint16(l4[2:4])
		p.TCPFlags = l4[13]
		p.Payload = l4[doff:]
	case proto == ipProtoUDP:
		if len(l4) < 8 {
			return p, fmt.Errorf("capture: decode: %w: %d bytes of UDP header", ErrTruncated, len(l4))
		}
		ulen := int(binary.BigEndian.Uint16(l4[4:6]))
		if ulen < 8 {
			return p, fmt.Errorf("capture: decode: %w: %d", ErrBadUDPLength, ulen)
		}
		if ulen < len(l4) {
			l4 = l4[:ulen]
		}
		p.Proto = netport.UDP
		p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		p.DstPort = binary.BigEndian.Uint16(l4[2:4])
		p.Payload = l4[8:]
	case proto == ipProtoICMP && !v6, proto == ipProtoICMPv6 && v6:
		if len(l4) < 8 {
			return p, fmt.Errorf("capture: decode: %w: %d bytes of ICMP header", ErrTruncated, len(l4))
		}
		switch typ := l4[0]; {
		case v6 && typ == ICMPv6Echo, !v6 && (typ == ICMPEcho || typ == ICMPEchoReply):
			p.ICMPType = typ
		default:
			return p, fmt.Errorf("capture: decode: %w: type %d", ErrNotEcho, typ)
		}
		p.Proto = netport.ICMP
		p.Payload = l4[8:]
	default:
		return p, fmt.Errorf("capture: decode: %w: IP protocol %d", ErrUnsupportedProto, proto)
	}
	return p, nil
}

// ErrBadSource is Decode's error for a packet whose source address no real sender has.
var ErrBadSource = errors.New("bad source address")

// SourceProblem says why a cannot be the source of a packet from a real sender, or returns ""
// when it can: the zero Addr, an IPv4-mapped IPv6 address (an IPv6 packet posing as IPv4:
// Linux drops such packets before any socket, so only a sniffer sees them), the unspecified
// addresses and 0.0.0.0/8, multicast, and the IPv4 limited broadcast. Loopback addresses pass:
// whether one may knock or send SPA is the configuration's business.
func SourceProblem(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "no address"
	case a.Is4In6():
		return "IPv4-mapped IPv6 address"
	case a.IsUnspecified() || a.Is4() && a.As4()[0] == 0:
		return "unspecified address"
	case a.IsMulticast():
		return "multicast address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "broadcast address"
	}
	return ""
}
