// Package capture reads knock, guard and SPA packets from AF_PACKET sockets filtered in the kernel by classic BPF.
package capture

import (
	"log/slog"
	"net/netip"
	"time"

	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

// Packet is one decoded IPv4 or IPv6 packet.
type Packet struct {
	// Time is the kernel receive time when the kernel supplied one, else the time the batch
	// holding the packet was read.
	Time     time.Time
	Src, Dst netip.Addr
	// Proto is TCP, UDP or ICMP; ICMP stands for an ICMP echo request (ICMPv6 on IPv6) or, on
	// IPv4 only, an ICMP echo reply (the fwknop client's default carriage for SPA).
	Proto            netport.Proto
	SrcPort, DstPort uint16 // zero for ICMP
	// ICMPType is the ICMP type of an ICMP packet (ICMPEcho, ICMPEchoReply or ICMPv6Echo),
	// zero for TCP and UDP.
	ICMPType uint8
	// TCPFlags is the TCP header's flags byte (CWR and ECE included), zero for UDP and ICMP.
	TCPFlags uint8
	// Payload is the transport payload, cut at the snap length. It aliases the read buffer.
	Payload []byte
	// Ifindex is the interface the packet arrived on (0 when unknown).
	Ifindex int
}

// Filter says which packets reach user space. The zero Filter passes nothing.
type Filter struct {
	// Knocks are TCP and UDP ports, each with a TCP flag condition, and ICMP echo.
	Knocks []Knock
	// Guards are port ranges watched for sweeps: for UDP every datagram passes, for TCP every
	// segment whose flags satisfy one of GuardFlags.
	Guards []PortRange
	// GuardFlags are the flag conditions of TCP guard segments: those of the doors with a TCP
	// knock (knock.GuardFlags), so that the guard sees every segment a door would count. None
	// means a connection attempt: SYN set, ACK clear.
	GuardFlags []knock.TCPFlags
	// SPA lists UDP ports whose whole payload is wanted (snap length 65535 instead of 256).
	SPA []uint16
	// SPAICMP passes ICMP echo requests (IPv4 and IPv6) and IPv4 echo replies whole, for SPA
	// carried in a ping: every echo request then returns SnapSPA (an ICMP knock needs only the
	// header, so it is served too).
	SPAICMP bool
	// Decoys lists TCP decoy ports whose connection attempts (SYN set, ACK clear) pass, so
	// that a SYN-only touch is seen.
	Decoys []uint16
}

// ICMP types of the packets Decode accepts.
const (
	ICMPEcho      = 8   // ICMPv4 echo request
	ICMPEchoReply = 0   // ICMPv4 echo reply
	ICMPv6Echo    = 128 // ICMPv6 echo request
)

// Knock is one knockable port and, for TCP, the flag condition a segment must satisfy.
type Knock struct {
	Port  netport.Port
	Flags knock.TCPFlags
	// Payload, when not empty, is the exact payload (UDP data, ICMP echo data; at most
	// MaxPayload bytes) a UDP or ICMP knock must carry to pass: the program compares it.
	Payload string
}

// MaxPayload is the longest Knock.Payload.
const MaxPayload = 64

// PortRange is the ports Lo through Hi (inclusive) of one protocol.
type PortRange struct {
	Proto  netport.Proto
	Lo, Hi uint16
}

// Snap lengths returned by the filter: bytes kept from the start of the IP header.
const (
	SnapKnock = 256
	SnapSPA   = 65535
)

// Config configures Open.
type Config struct {
	// Interfaces names the interfaces to capture on; empty means all interfaces.
	Interfaces []string
	Filter     Filter
	// Logger receives warnings (an interface that is down, read errors); nil means slog.Default().
	Logger *slog.Logger
}

// Stats are cumulative counters of a capture.
type Stats struct {
	Received     uint64 // packets handed to user space and decoded
	KernelDrops  uint64 // packets the kernel dropped because the socket queue was full
	DecodeErrors uint64 // packets that passed the filter but could not be decoded
	Truncated    uint64 // packets longer than the read buffer
}
