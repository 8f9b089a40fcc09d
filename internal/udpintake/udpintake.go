// Package udpintake receives SPA datagrams on an ordinary UDP socket (IPv4 and IPv6) as capture packets.
package udpintake

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/netport"
)

// MaxDatagram is the read buffer: the largest UDP payload.
const MaxDatagram = 65535

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

// Run reads datagrams and calls handle for each, one at a time, until ctx ends or Close. The
// packet's Payload aliases the read buffer and is valid only during the call. Dst is not
// reported (the zero Addr); DstPort is the listening port.
func (l *Listener) Run(ctx context.Context, handle func(*capture.Packet)) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	buf := make([]byte, MaxDatagram)
	for {
		n, from, err := l.conn.ReadFromUDPAddrPort(buf)
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
		handle(&capture.Packet{
			Time:    time.Now(),
			Src:     from.Addr().Unmap(),
			Proto:   netport.UDP,
			SrcPort: from.Port(),
			DstPort: l.port,
			Payload: buf[:n],
		})
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
