// Package udpintake receives SPA datagrams on ordinary UDP sockets (IPv4 and IPv6) as capture packets.
package udpintake

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv6"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/netport"
)

// Listener is a pair of bound UDP sockets on one port: an IPv6-only one and an IPv4 one.
//
// Not one dual-stack socket: it reports IPv4 senders as IPv4-mapped IPv6 addresses, and Linux
// (since it stopped dropping them in ip6_rcv_core) also delivers IPv6 packets whose source is an
// IPv4-mapped address, which look the same. With two sockets an IPv4 source is always an IPv4
// packet's, and a mapped source from the IPv6 socket is reported as it is, for the SPA handler
// to refuse.
type Listener struct {
	conns []*net.UDPConn // IPv4 first, then IPv6 when the host has it
	port  uint16

	mu     sync.Mutex
	closed bool
}

// Listen binds 0.0.0.0:port and [::]:port (IPv6 only). When the host has no IPv6, it binds only
// 0.0.0.0:port. Port 0 picks a port free in both families (see Port).
func Listen(port uint16) (*Listener, error) {
	var err error
	for range 16 { // port 0: the port picked for IPv4 may be taken for IPv6; pick again
		var l *Listener
		if l, err = listen(port); err == nil {
			return l, nil
		}
		if port != 0 {
			break
		}
	}
	if errors.Is(err, syscall.EACCES) && port < 1024 {
		return nil, fmt.Errorf("udpintake: listen on udp/%d: %w: needs CAP_NET_BIND_SERVICE (or a port above 1023)", port, err)
	}
	return nil, fmt.Errorf("udpintake: listen on udp/%d: %w", port, err)
}

func listen(port uint16) (*Listener, error) {
	c4, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero, Port: int(port)})
	if err != nil {
		return nil, err
	}
	l := &Listener{conns: []*net.UDPConn{c4}, port: uint16(c4.LocalAddr().(*net.UDPAddr).Port)}
	// "udp6" on the unspecified address sets IPV6_V6ONLY.
	c6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6unspecified, Port: int(l.port)})
	switch {
	case err == nil:
		l.conns = append(l.conns, c6)
	case errors.Is(err, syscall.EADDRINUSE):
		c4.Close()
		return nil, err
	}
	// Any other error: no IPv6 on this host; IPv4 alone.
	for _, c := range l.conns {
		growReceiveBuffer(c)
	}
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

// Run reads datagrams, up to Batch per system call and socket, and calls handle for each, one
// at a time, until ctx ends or Close. The packet's Payload aliases the read buffer and is valid
// only during the call. Dst is not reported (the zero Addr); DstPort is the listening port. Src
// is the sender as the socket reports it: IPv4 for the IPv4 socket, and for the IPv6 socket the
// IPv6 address, also when it is IPv4-mapped.
func (l *Listener) Run(ctx context.Context, handle func(*capture.Packet)) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var (
		handleMu sync.Mutex // one handle call at a time
		wg       sync.WaitGroup
		errs     = make([]error, len(l.conns))
	)
	for i, c := range l.conns {
		v4 := i == 0
		wg.Go(func() {
			errs[i] = l.read(ctx, c, v4, func(p *capture.Packet) {
				handleMu.Lock()
				defer handleMu.Unlock()
				handle(p)
			})
			l.Close() // one socket failing stops the other
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.Join(errs...)
}

func (l *Listener) read(ctx context.Context, conn *net.UDPConn, v4 bool, handle func(*capture.Packet)) error {
	pc := ipv6.NewPacketConn(conn) // the batch API is the same for IPv4 sockets
	msgs := make([]ipv6.Message, Batch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, ReadBuffer)}
	}
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
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
			src := ap.Addr()
			if v4 {
				src = src.Unmap() // the IPv4 socket's sender in 16-byte form: IPv4 all the same
			}
			handle(&capture.Packet{
				Time:    now,
				Src:     src,
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

// Close closes the sockets; Run then returns.
func (l *Listener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	for _, c := range l.conns {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
