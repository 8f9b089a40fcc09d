package capture

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

func TestDecode(t *testing.T) {
	now := time.Unix(1700000000, 5)
	tests := []struct {
		name string
		pkt  []byte
		want Packet
	}{
		{"v4 tcp", pk{proto: ipProtoTCP, sport: 40000, dport: 7000, flags: knock.SYN, payload: []byte("hi")}.build(),
			Packet{Src: src4, Dst: dst4, Proto: netport.TCP, SrcPort: 40000, DstPort: 7000, TCPFlags: knock.SYN, Payload: []byte("hi")}},
		{"v4 tcp with options", pk{proto: ipProtoTCP, sport: 1, dport: 2, flags: 0xd2, options: 8, tcpOpts: 12}.build(),
			Packet{Src: src4, Dst: dst4, Proto: netport.TCP, SrcPort: 1, DstPort: 2, TCPFlags: 0xd2}},
		{"v4 udp", pk{proto: ipProtoUDP, sport: 5353, dport: 9000, payload: []byte{0}}.build(),
			Packet{Src: src4, Dst: dst4, Proto: netport.UDP, SrcPort: 5353, DstPort: 9000, Payload: []byte{0}}},
		{"v4 udp with link padding", append(pk{proto: ipProtoUDP, sport: 1, dport: 9, payload: []byte{7}}.build(), 0, 0, 0, 0),
			Packet{Src: src4, Dst: dst4, Proto: netport.UDP, SrcPort: 1, DstPort: 9, Payload: []byte{7}}},
		{"v4 udp snapped", pk{proto: ipProtoUDP, sport: 1, dport: 9, payload: bytes.Repeat([]byte{1}, 500)}.build()[:SnapKnock],
			Packet{Src: src4, Dst: dst4, Proto: netport.UDP, SrcPort: 1, DstPort: 9, Payload: bytes.Repeat([]byte{1}, SnapKnock-28)}},
		{"v4 first fragment", pk{proto: ipProtoUDP, sport: 1, dport: 9, frag: 0x2000}.build(),
			Packet{Src: src4, Dst: dst4, Proto: netport.UDP, SrcPort: 1, DstPort: 9, Payload: []byte{}}},
		{"v4 icmp echo", pk{proto: ipProtoICMP, icmpType: 8, payload: []byte("ping")}.build(),
			Packet{Src: src4, Dst: dst4, Proto: netport.ICMP, ICMPType: ICMPEcho, Payload: []byte("ping")}},
		{"v4 icmp echo reply", pk{proto: ipProtoICMP, icmpType: 0, payload: []byte("fwknop")}.build(),
			Packet{Src: src4, Dst: dst4, Proto: netport.ICMP, ICMPType: ICMPEchoReply, Payload: []byte("fwknop")}},
		{"v6 tcp", pk{v6: true, proto: ipProtoTCP, sport: 3, dport: 8000, flags: knock.SYN | knock.ACK}.build(),
			Packet{Src: src6, Dst: dst6, Proto: netport.TCP, SrcPort: 3, DstPort: 8000, TCPFlags: knock.SYN | knock.ACK, Payload: []byte{}}},
		{"v6 udp", pk{v6: true, proto: ipProtoUDP, sport: 3, dport: 62201, payload: []byte("spa")}.build(),
			Packet{Src: src6, Dst: dst6, Proto: netport.UDP, SrcPort: 3, DstPort: 62201, Payload: []byte("spa")}},
		{"v6 icmpv6 echo", pk{v6: true, proto: ipProtoICMPv6, icmpType: 128}.build(),
			Packet{Src: src6, Dst: dst6, Proto: netport.ICMP, ICMPType: ICMPv6Echo, Payload: []byte{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.pkt, now, 3)
			if err != nil {
				t.Fatal(err)
			}
			tt.want.Time, tt.want.Ifindex = now, 3
			if !bytes.Equal(got.Payload, tt.want.Payload) {
				t.Errorf("payload = %q, want %q", got.Payload, tt.want.Payload)
			}
			if len(got.Payload) > 0 && !aliases(got.Payload, tt.pkt) {
				t.Errorf("payload does not alias the input")
			}
			got.Payload, tt.want.Payload = nil, nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Decode = %+v\nwant     %+v", got, tt.want)
			}
		})
	}
}

func aliases(sub, b []byte) bool {
	s, e := uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(unsafe.Pointer(unsafe.SliceData(b)))+uintptr(len(b))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(sub)))
	return p >= s && p+uintptr(len(sub)) <= e
}

func TestDecodeErrors(t *testing.T) {
	tcp4 := pk{proto: ipProtoTCP, dport: 7000, flags: knock.SYN}.build()
	set := func(b []byte, i int, v byte) []byte {
		b = append([]byte(nil), b...)
		b[i] = v
		return b
	}
	udp4 := pk{proto: ipProtoUDP, dport: 9}.build()
	tcp6 := pk{v6: true, proto: ipProtoTCP, dport: 7000}.build()
	tests := []struct {
		name string
		pkt  []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"version 5", set(tcp4, 0, 0x55), ErrVersion},
		{"v4 short header", tcp4[:19], ErrTruncated},
		{"v4 ihl 4", set(tcp4, 0, 0x44), ErrBadIHL},
		{"v4 ihl 0", set(tcp4, 0, 0x40), ErrBadIHL},
		{"v4 header cut by options", pk{proto: ipProtoTCP, options: 20}.build()[:30], ErrTruncated},
		{"v4 total length below header", set(set(tcp4, 2, 0), 3, 10), ErrBadLength},
		{"v4 non-first fragment", pk{proto: ipProtoTCP, frag: 0x2001}.build(), ErrFragment},
		{"v4 last fragment", pk{proto: ipProtoUDP, frag: 0x0100}.build(), ErrFragment},
		{"v4 gre", pk{proto: 47}.build(), ErrUnsupportedProto},
		{"v4 icmpv6", pk{proto: ipProtoICMPv6, icmpType: 128}.build(), ErrUnsupportedProto},
		{"v4 tcp cut", tcp4[:30], ErrTruncated},
		{"v4 tcp data offset 4", set(tcp4, 32, 0x10), ErrBadTCPHeader},
		{"v4 tcp options cut", set(tcp4, 32, 0xf0), ErrTruncated},
		{"v4 udp cut", udp4[:27], ErrTruncated},
		{"v4 udp length 7", set(udp4, 25, 7), ErrBadUDPLength},
		{"v4 icmp cut", pk{proto: ipProtoICMP, icmpType: 8}.build()[:27], ErrTruncated},
		{"v4 icmp unreachable", pk{proto: ipProtoICMP, icmpType: 3}.build(), ErrNotEcho},
		{"v6 short header", tcp6[:39], ErrTruncated},
		{"v6 hop-by-hop", pk{v6: true, proto: 0}.build(), ErrUnsupportedProto},
		{"v6 icmpv4", pk{v6: true, proto: ipProtoICMP, icmpType: 8}.build(), ErrUnsupportedProto},
		{"v6 tcp cut", tcp6[:50], ErrTruncated},
		{"v6 payload length cuts tcp", set(tcp6, 5, 4), ErrTruncated},
		{"v6 icmpv6 reply", pk{v6: true, proto: ipProtoICMPv6, icmpType: 129}.build(), ErrNotEcho},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.pkt, time.Time{}, 0)
			if !errors.Is(err, tt.want) {
				t.Errorf("Decode error = %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, p := range []pk{
		{proto: ipProtoTCP, dport: 7000, flags: knock.SYN, options: 4, tcpOpts: 8, payload: []byte("x")},
		{v6: true, proto: ipProtoUDP, dport: 62201, payload: []byte("spa")},
		{proto: ipProtoICMP, icmpType: 8},
		{proto: ipProtoICMP, icmpType: 0, payload: []byte("hQ")},
		{v6: true, proto: ipProtoICMPv6, icmpType: 128, payload: []byte("SSM1")},
	} {
		f.Add(p.build())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b, time.Time{}, 1)
		if err != nil {
			return
		}
		if len(p.Payload) > 0 && !aliases(p.Payload, b) {
			t.Fatalf("payload does not alias the input")
		}
		if !p.Src.IsValid() || !p.Dst.IsValid() {
			t.Fatalf("decoded packet without addresses: %+v", p)
		}
		if p.Proto != netport.TCP && p.Proto != netport.UDP && p.Proto != netport.ICMP {
			t.Fatalf("decoded protocol %v", p.Proto)
		}
		switch {
		case p.Proto != netport.ICMP && p.ICMPType != 0:
			t.Fatalf("ICMP type %d on a %v packet", p.ICMPType, p.Proto)
		case p.Proto == netport.ICMP && p.Src.Is4() && p.ICMPType != ICMPEcho && p.ICMPType != ICMPEchoReply,
			p.Proto == netport.ICMP && p.Src.Is6() && p.ICMPType != ICMPv6Echo:
			t.Fatalf("decoded ICMP type %d from %s", p.ICMPType, p.Src)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	for _, bc := range []struct {
		name string
		p    pk
	}{
		{"v4 tcp syn", pk{proto: ipProtoTCP, dport: 7000, flags: knock.SYN, tcpOpts: 20}},
		{"v6 udp spa", pk{v6: true, proto: ipProtoUDP, dport: 62201, payload: make([]byte, 200)}},
	} {
		pkt := bc.p.build()
		now := time.Now()
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(pkt, now, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// withSrc returns pkt (built by pk.build) with its source address replaced by a.
func withSrc(pkt []byte, a netip.Addr) []byte {
	out := bytes.Clone(pkt)
	if a.Is4() {
		copy(out[12:16], a.AsSlice())
	} else {
		copy(out[8:24], a.AsSlice())
	}
	return out
}

// TestDecodeSources: packets from addresses no real sender has are refused with ErrBadSource,
// naming the address; IPv4-mapped IPv6 sources are not taken for the IPv4 address (issue 9
// item 7). Ordinary unicast, link-local and loopback sources decode.
func TestDecodeSources(t *testing.T) {
	v4 := pk{proto: ipProtoUDP, sport: 1, dport: 62201, payload: []byte("x")}.build()
	v6 := pk{v6: true, proto: ipProtoTCP, sport: 1, dport: 7000, flags: knock.SYN}.build()
	tests := []struct {
		src  string
		pkt  []byte
		want error
	}{
		{"198.18.0.2", v4, nil},
		{"127.0.0.1", v4, nil},
		{"fd5e:5a3e::2", v6, nil},
		{"fe80::1", v6, nil},
		{"::1", v6, nil},
		{"::ffff:198.18.0.2", v6, ErrBadSource},
		{"::ffff:127.0.0.1", v6, ErrBadSource},
		{"::", v6, ErrBadSource},
		{"0.0.0.0", v4, ErrBadSource},
		{"0.1.2.3", v4, ErrBadSource},
		{"224.0.0.1", v4, ErrBadSource},
		{"239.255.255.250", v4, ErrBadSource},
		{"255.255.255.255", v4, ErrBadSource},
		{"ff02::1", v6, ErrBadSource},
	}
	for _, tc := range tests {
		t.Run(tc.src, func(t *testing.T) {
			a := netip.MustParseAddr(tc.src)
			p, err := Decode(withSrc(tc.pkt, a), time.Time{}, 1)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.want != nil && !strings.Contains(err.Error(), a.String()) {
				t.Errorf("error %q does not name the source", err)
			}
			if tc.want == nil && p.Src != a {
				t.Errorf("Src = %v, want %v", p.Src, a)
			}
		})
	}
}
