// Package benchkit holds the pieces of sesame's attack benchmark: frame builders, a paced AF_PACKET flood generator, a connect prober and process and plot helpers.
package benchkit

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// Header sizes of the frames benchkit builds (IPv4 only, no options).
const (
	EthLen  = 14
	IPv4Len = 20
	TCPLen  = 20
	UDPLen  = 8
)

// Protocol numbers.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// Link is the Ethernet addressing of injected frames.
type Link struct {
	Src, Dst net.HardwareAddr
	Ifindex  int
}

// WriteTCPSYN writes an Ethernet/IPv4/TCP SYN frame from src:sport to dst:dport into buf and
// returns its length. buf must hold at least 54 bytes.
func WriteTCPSYN(buf []byte, l *Link, src, dst netip.Addr, sport, dport uint16, seq uint32) int {
	n := EthLen + IPv4Len + TCPLen
	writeEthIP(buf, l, src, dst, ProtoTCP, IPv4Len+TCPLen, uint16(seq))
	t := buf[EthLen+IPv4Len : n]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], 0)
	t[12] = 5 << 4
	t[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(t[14:], 64240)
	t[16], t[17], t[18], t[19] = 0, 0, 0, 0
	binary.BigEndian.PutUint16(t[16:], l4Checksum(buf[EthLen+12:EthLen+20], ProtoTCP, t))
	return n
}

// WriteUDP writes an Ethernet/IPv4/UDP frame carrying payload into buf and returns its length.
// The UDP checksum is left zero (allowed for IPv4), so payloads may be rewritten cheaply.
func WriteUDP(buf []byte, l *Link, src, dst netip.Addr, sport, dport uint16, payload []byte) int {
	n := EthLen + IPv4Len + UDPLen + len(payload)
	writeEthIP(buf, l, src, dst, ProtoUDP, IPv4Len+UDPLen+len(payload), sport)
	u := buf[EthLen+IPv4Len : n]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(UDPLen+len(payload)))
	u[6], u[7] = 0, 0
	copy(u[UDPLen:], payload)
	return n
}

func writeEthIP(buf []byte, l *Link, src, dst netip.Addr, proto byte, ipLen int, id uint16) {
	copy(buf[0:6], l.Dst)
	copy(buf[6:12], l.Src)
	buf[12], buf[13] = 0x08, 0x00
	h := buf[EthLen : EthLen+IPv4Len]
	h[0] = 0x45
	h[1] = 0
	binary.BigEndian.PutUint16(h[2:], uint16(ipLen))
	binary.BigEndian.PutUint16(h[4:], id)
	binary.BigEndian.PutUint16(h[6:], 0x4000) // DF
	h[8] = 64
	h[9] = proto
	h[10], h[11] = 0, 0
	s, d := src.As4(), dst.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	binary.BigEndian.PutUint16(h[10:], checksum(h, 0))
}

// checksum is the Internet checksum of b, starting from the partial sum sum.
func checksum(b []byte, sum uint32) uint16 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// l4Checksum is the TCP/UDP checksum of seg (with its checksum field zero) under the IPv4
// pseudo-header made of addrs (source and destination, 8 bytes).
func l4Checksum(addrs []byte, proto byte, seg []byte) uint16 {
	var sum uint32
	for i := 0; i < 8; i += 2 {
		sum += uint32(addrs[i])<<8 | uint32(addrs[i+1])
	}
	sum += uint32(proto) + uint32(len(seg))
	return checksum(seg, sum)
}

// Addr10 maps v onto 10.0.0.0/8, the bed's range of spoofed sources (no route leads back to it).
func Addr10(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(v >> 16), byte(v >> 8), byte(v)})
}

// Distinct10 returns the i-th of 2^24 distinct addresses of 10.0.0.0/8 in a scattered order.
func Distinct10(i uint32) netip.Addr {
	// An odd multiplier is a bijection modulo 2^24.
	return Addr10((i*0x9E3779 + 0x5bd1e9) & 0xffffff)
}
