package spaclient

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Ways SendPing sends, for messages.
const (
	PingSocket = "ping socket"
	RawSocket  = "raw socket"
)

// ErrNoICMPSocket is SendPing's error when the system gives the caller neither kind of ICMP
// socket.
var ErrNoICMPSocket = errors.New("no ICMP socket: allow unprivileged ping sockets for your group " +
	"(Linux: sysctl net.ipv4.ping_group_range, e.g. \"0 2147483647\"), or run as root (or with CAP_NET_RAW)")

// SendPing sends pkt as the data of one ICMP echo request to dst (ICMPv6 for an IPv6 dst): from
// an unprivileged ping socket where the system allows one (on Linux when
// net.ipv4.ping_group_range holds the caller's group; the kernel then sets the echo identifier),
// else from a raw socket (root or CAP_NET_RAW). It returns which kind of socket sent it. The
// echo reply, if the server's host sends one, is not waited for.
func SendPing(dst netip.Addr, pkt []byte) (string, error) {
	dst = dst.Unmap()
	pingNet, rawNet, laddr := "udp6", "ip6:ipv6-icmp", "::"
	var typ icmp.Type = ipv6.ICMPTypeEchoRequest
	if dst.Is4() {
		pingNet, rawNet, laddr = "udp4", "ip4:icmp", "0.0.0.0"
		typ = ipv4.ICMPTypeEcho
	}
	var id [2]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", fmt.Errorf("send ping: %w", err)
	}
	// Marshal computes the ICMPv4 checksum; the kernel computes ICMPv6's.
	msg, err := (&icmp.Message{Type: typ, Body: &icmp.Echo{ID: int(binary.BigEndian.Uint16(id[:])), Seq: 1, Data: pkt}}).Marshal(nil)
	if err != nil {
		return "", fmt.Errorf("send ping: %w", err)
	}
	how, to := PingSocket, net.Addr(&net.UDPAddr{IP: dst.AsSlice(), Zone: dst.Zone()})
	c, pingErr := icmp.ListenPacket(pingNet, laddr)
	if pingErr != nil {
		var rawErr error
		if c, rawErr = icmp.ListenPacket(rawNet, laddr); rawErr != nil {
			return "", fmt.Errorf("send ping to %s: %w (ping socket: %v; raw socket: %v)", dst, ErrNoICMPSocket, pingErr, rawErr)
		}
		how, to = RawSocket, &net.IPAddr{IP: dst.AsSlice(), Zone: dst.Zone()}
	}
	defer c.Close()
	if _, err := c.WriteTo(msg, to); err != nil {
		return how, fmt.Errorf("send ping to %s (%s): %w", dst, how, err)
	}
	return how, nil
}
