//go:build !unix

package knockclient

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"
)

// synTimeout is how long the fallback waits for a connection: long enough for the SYN to leave,
// far shorter than the first retransmission.
const synTimeout = 20 * time.Millisecond

// sendSYN starts a TCP connection and abandons it after synTimeout. Without raw socket control
// this is the closest to a single SYN; an open port gets a connection that is closed at once.
func sendSYN(ctx context.Context, src netip.Addr, sport uint16, dst netip.Addr, port uint16) error {
	d := net.Dialer{Timeout: synTimeout}
	if src.IsValid() || sport != 0 {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice(), Port: int(sport), Zone: src.Zone()}
	}
	c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(dst, port).String())
	if err == nil {
		return c.Close()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || isRefused(err) {
		return nil
	}
	return err
}

// isRefused reports a refused connection, which means the SYN was sent and answered. The
// error numbers differ per system (WSAECONNREFUSED on Windows), so the text is checked.
func isRefused(err error) bool {
	return strings.Contains(strings.ToLower(err.Error()), "refused")
}
