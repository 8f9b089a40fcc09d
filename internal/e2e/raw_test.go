//go:build linux

package e2e

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"
	"testing"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// sendRawTCP sends one hand-made IPv4 TCP segment with the given flags from src to dst:dport,
// inside the bed's client namespace. Raw sockets let the tests set any flags and source.
func sendRawTCP(t *testing.T, bed *netnsbed.Bed, src, dst netip.Addr, dport uint16, flags uint8) {
	t.Helper()
	err := netnsbed.Do(bed.Client, func() error {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		defer syscall.Close(fd)
		pkt := tcpPacket(src, dst, 40000+dport%20000, dport, flags)
		sa := &syscall.SockaddrInet4{Addr: dst.As4()}
		return syscall.Sendto(fd, pkt, 0, sa)
	})
	if err != nil {
		t.Fatalf("raw TCP %s -> %s:%d: %v", src, dst, dport, err)
	}
}

func tcpPacket(src, dst netip.Addr, sport, dport uint16, flags uint8) []byte {
	b := make([]byte, 40)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], 40)
	binary.BigEndian.PutUint16(b[4:], 0x1234)
	b[8] = 64
	b[9] = syscall.IPPROTO_TCP
	s4, d4 := src.As4(), dst.As4()
	copy(b[12:16], s4[:])
	copy(b[16:20], d4[:])
	binary.BigEndian.PutUint16(b[10:], checksum(b[:20], 0))
	tcp := b[20:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], 0x01020304)
	tcp[12] = 5 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	// Pseudo-header sum.
	var sum uint32
	for i := 0; i < 4; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(s4[i:])) + uint32(binary.BigEndian.Uint16(d4[i:]))
	}
	sum += syscall.IPPROTO_TCP + 20
	binary.BigEndian.PutUint16(tcp[16:], checksum(tcp, sum))
	return b
}

func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
