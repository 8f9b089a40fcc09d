// Package udpintake receives SPA datagrams on an ordinary UDP socket (IPv4 and IPv6) as capture packets.
package udpintake

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/net/ipv6"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/netport"
)

// Listener is a bound dual-stack UDP socket.
type Listener struct {
	conn *net.UDPConn
	port uint16

	mu     sync.Mutex
	closed bool
}

// Listen binds [::]:port, which also receives IPv4 datagrams (as IPv4-mapped addresses, reported
// as plain IPv4). When the host has no IPv6, it falls back to 0.0.0.0:port. Port 0 picks a free
// port (see Port).
func Listen(port uint16) (*Listener, error) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6unspecified, Port: int(port)})
	if err != nil {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero, Port: int(port)})
	}
	if err != nil {
		return nil, fmt.Errorf("udpintake: listen on udp/%d: %w", port, err)
	}
	growReceiveBuffer(conn)
	l := &Listener{conn: conn, port: uint16(conn.LocalAddr().(*net.UDPAddr).Port)}
	return l, nil
}

// ReceiveBuffer is the socket receive buffer asked for: a burst of a few thousand SPA packets
// (many clients at once, or a flood with legitimate packets in it) waits in the kernel instead
// of being dropped while earlier ones are checked and granted.
const ReceiveBuffer = 8 << 20

// growReceiveBuffer raises the socket's receive buffer to ReceiveBuffer: past the system limit
// (net.core.rmem_max) when the process may (CAP_NET_ADMIN), else as far as the limit allows.
func growReceiveBuffer(conn *net.UDPConn) {
	if rc, err := conn.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			if forceReceiveBuffer(fd, ReceiveBuffer) != nil {
				conn.SetReadBuffer(ReceiveBuffer)
			}
		})
	}
}

// Port returns the bound port.
func (l *Listener) Port() uint16 { return l.port }

// Batch is how many datagrams one system call may read (recvmmsg on Linux).
const Batch = 32

// ReadBuffer is the room for one datagram. SPA packets are far smaller (fwknop's largest is
// 1500 bytes); a longer datagram arrives cut to this size, which every decoder refuses as too
// long.
const ReadBuffer = 4096

// Run reads datagrams, up to Batch per system call, and calls handle for each, one at a time,
// until ctx ends or Close. The packet's Payload aliases the read buffer and is valid only during
// the call. Dst is not reported (the zero Addr); DstPort is the listening port.
func (l *Listener) Run(ctx context.Context, handle func(*capture.Packet)) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	pc := ipv6.NewPacketConn(l.conn) // the batch API is the same for IPv4 sockets
	msgs := make([]ipv6.Message, Batch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, ReadBuffer)}
	}
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// Transient errors (ICMP-induced ECONNREFUSED and the like): keep reading.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		now := time.Now()
		for _, m := range msgs[:n] {
			from, ok := m.Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			ap := from.AddrPort()
			handle(&capture.Packet{
				Time:    now,
				Src:     ap.Addr().Unmap(),
				Proto:   netport.UDP,
				SrcPort: ap.Port(),
				DstPort: l.port,
				Payload: m.Buffers[0][:m.N],
			})
		}
	}
}

// SetFilter does nothing: the socket receives only its own port. It lets a Listener stand where
// a capture intake is expected.
func (l *Listener) SetFilter(capture.Filter) error { return nil }

// Close closes the socket; Run then returns.
func (l *Listener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	return l.conn.Close()
}
