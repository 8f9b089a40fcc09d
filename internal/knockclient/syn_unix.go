//go:build unix

package knockclient

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"syscall"

	"golang.org/x/sys/unix"
)

// sendSYN sends exactly one SYN: a non-blocking connect(2), which puts the SYN on the wire at
// once, followed by close(2) of the half-open socket, so there is no retransmission and no RST.
func sendSYN(_ context.Context, src netip.Addr, sport uint16, dst netip.Addr, port uint16) error {
	to, err := sockaddr(dst, port)
	if err != nil {
		return err
	}
	domain := unix.AF_INET
	if _, ok := to.(*unix.SockaddrInet6); ok {
		domain = unix.AF_INET6
	}
	syscall.ForkLock.RLock()
	fd, err := unix.Socket(domain, unix.SOCK_STREAM, unix.IPPROTO_TCP)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		return fmt.Errorf("set non-blocking: %w", err)
	}
	if src.IsValid() || sport != 0 {
		local := src
		if !local.IsValid() {
			local = netip.IPv4Unspecified()
			if domain == unix.AF_INET6 {
				local = netip.IPv6Unspecified()
			}
		}
		from, err := sockaddr(local, sport)
		if err != nil {
			return err
		}
		if sport != 0 {
			// The previous hit's socket from this port may not be gone yet.
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
				return fmt.Errorf("reuse address: %w", err)
			}
		}
		if err := unix.Bind(fd, from); err != nil {
			return fmt.Errorf("bind %s: %w", netip.AddrPortFrom(local, sport), err)
		}
	}
	if err := unix.Connect(fd, to); err != nil && err != unix.EINPROGRESS {
		return fmt.Errorf("connect: %w", err)
	}
	return nil
}

func sockaddr(a netip.Addr, port uint16) (unix.Sockaddr, error) {
	if a.Unmap().Is4() {
		return &unix.SockaddrInet4{Port: int(port), Addr: a.Unmap().As4()}, nil
	}
	sa := &unix.SockaddrInet6{Port: int(port), Addr: a.As16()}
	if z := a.Zone(); z != "" {
		if n, err := strconv.Atoi(z); err == nil {
			sa.ZoneId = uint32(n)
		} else {
			ifi, err := net.InterfaceByName(z)
			if err != nil {
				return nil, fmt.Errorf("zone %q: %w", z, err)
			}
			sa.ZoneId = uint32(ifi.Index)
		}
	}
	return sa, nil
}
