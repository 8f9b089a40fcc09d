package capture

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"
)

// pk describes a crafted test packet.
type pk struct {
	v6       bool
	proto    uint8 // IP protocol / next header
	sport    uint16
	dport    uint16
	flags    uint8 // TCP flags
	icmpType uint8
	options  int    // IPv4 option bytes (multiple of 4)
	tcpOpts  int    // TCP option bytes (multiple of 4)
	frag     uint16 // IPv4 flags+fragment offset field
	payload  []byte
}

var (
	src4 = netip.MustParseAddr("192.0.2.7")
	dst4 = netip.MustParseAddr("192.0.2.1")
	src6 = netip.MustParseAddr("2001:db8::7")
	dst6 = netip.MustParseAddr("2001:db8::1")
)

// build returns the packet from its IP header on.
func (p pk) build() []byte {
	var l4 []byte
	switch p.proto {
	case ipProtoTCP:
		l4 = make([]byte, 20+p.tcpOpts)
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		l4[12] = byte((20+p.tcpOpts)/4) << 4
		l4[13] = p.flags
		for i := 20; i < len(l4); i++ {
			l4[i] = 1 // NOP options
		}
		l4 = append(l4, p.payload...)
	case ipProtoUDP:
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		binary.BigEndian.PutUint16(l4[4:], uint16(8+len(p.payload)))
		l4 = append(l4, p.payload...)
	case ipProtoICMP, ipProtoICMPv6:
		l4 = make([]byte, 8)
		l4[0] = p.icmpType
		l4 = append(l4, p.payload...)
	default:
		l4 = append(make([]byte, 8), p.payload...)
	}
	if p.v6 {
		h := make([]byte, 40)
		h[0] = 0x60
		binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
		h[6] = p.proto
		h[7] = 64
		s, d := src6.As16(), dst6.As16()
		copy(h[8:], s[:])
		copy(h[24:], d[:])
		return append(h, l4...)
	}
	ihl := 20 + p.options
	h := make([]byte, ihl)
	h[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(h[2:], uint16(ihl+len(l4)))
	binary.BigEndian.PutUint16(h[6:], p.frag)
	h[8] = 64
	h[9] = p.proto
	s, d := src4.As4(), dst4.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	for i := 20; i < ihl; i++ {
		h[i] = 1 // NOP options
	}
	return append(h, l4...)
}

// vmFor returns a VM running prog as the kernel would for a packet of the given link-layer
// protocol and packet type. bpf.VM has no SKF_AD_PROTOCOL or SKF_AD_PKTTYPE, so those loads
// are replaced by constants of the same length, which keeps every jump intact.
func vmFor(t testing.TB, prog []bpf.Instruction, ethProto, pktType uint32) *bpf.VM {
	t.Helper()
	p := make([]bpf.Instruction, len(prog))
	for i, in := range prog {
		if ext, ok := in.(bpf.LoadExtension); ok {
			switch ext.Num {
			case bpf.ExtProto:
				in = bpf.LoadConstant{Dst: bpf.RegA, Val: ethProto}
			case bpf.ExtType:
				in = bpf.LoadConstant{Dst: bpf.RegA, Val: pktType}
			}
		}
		p[i] = in
	}
	vm, err := bpf.NewVM(p)
	if err != nil {
		t.Fatalf("NewVM: %v", err)
	}
	return vm
}

// runFilter runs prog on pkt as an incoming packet of its IP version.
func runFilter(t testing.TB, prog []bpf.Instruction, pkt []byte, pktType uint32) int {
	t.Helper()
	eth := uint32(etherTypeIPv4)
	if len(pkt) > 0 && pkt[0]>>4 == 6 {
		eth = etherTypeIPv6
	}
	n, err := vmFor(t, prog, eth, pktType).Run(pkt)
	if err != nil {
		t.Fatalf("vm run: %v", err)
	}
	return n
}
