// Package sshproxy connects to a port that is about to open and pipes a stream through it, for OpenSSH's ProxyCommand.
package sshproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// Backoff bounds for Connect: the first attempt gives the SYN FirstAttempt to be answered, and
// each later one twice as long, up to MaxAttempt; between attempts it sleeps Pause.
const (
	FirstAttempt = 200 * time.Millisecond
	MaxAttempt   = time.Second
	Pause        = 50 * time.Millisecond
)

// ErrNoAnswer is Connect's error when the port did not open within the wait.
var ErrNoAnswer = errors.New("no answer")

// Dialer is Connect's way to open a connection (net.Dialer in the binary, a fake in tests).
type Dialer func(ctx context.Context, dst netip.AddrPort) (net.Conn, error)

// TCPDialer dials dst over TCP.
func TCPDialer(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", dst.String())
}

// Connect dials dst until it answers or wait has passed, retrying with a short backoff: a
// dropped SYN gets a fresh attempt after FirstAttempt..MaxAttempt, a refused one after Pause.
// Its error wraps ErrNoAnswer and says what the last attempt saw, and how many were made.
func Connect(ctx context.Context, dst netip.AddrPort, wait time.Duration, dial Dialer) (net.Conn, error) {
	if dial == nil {
		dial = TCPDialer
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	attempt := FirstAttempt
	var last error
	for n := 1; ; n++ {
		actx, acancel := context.WithTimeout(ctx, attempt)
		c, err := dial(actx, dst)
		acancel()
		if err == nil {
			return c, nil
		}
		last = err
		attempt = min(2*attempt, MaxAttempt)
		t := time.NewTimer(Pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w from %s after %v (%d attempts; last: %s)", ErrNoAnswer, dst, wait, n, describe(last))
		case <-t.C:
		}
	}
}

// describe says in words what a failed attempt saw.
func describe(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused: the port is closed or rejected"
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "no reply to the connection request: dropped"
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return "unreachable: " + err.Error()
	}
	return err.Error()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// halfCloser is a connection whose sending side can be closed alone (*net.TCPConn).
type halfCloser interface{ CloseWrite() error }

// Pipe copies in to c and c to out until c's peer is done sending. When in ends first, c's
// sending side is closed (a TCP FIN), and the peer's remaining output still reaches out. It
// returns when c's peer closes or fails, or ctx ends; it closes c. A read blocked on in is left
// behind (the process is about to exit; stdin cannot be interrupted portably).
func Pipe(ctx context.Context, c net.Conn, in io.Reader, out io.Writer) error {
	defer c.Close()
	up := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, in)
		if err == nil {
			if hc, ok := c.(halfCloser); ok {
				err = hc.CloseWrite()
			}
		}
		up <- err
	}()
	down := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, c)
		down <- err
	}()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	for {
		select {
		case err := <-down:
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("receive: %w", err)
			}
			return ctx.Err()
		case err := <-up:
			if err != nil {
				return fmt.Errorf("send: %w", err)
			}
			up = nil // in is done; wait for the peer
		}
	}
}
