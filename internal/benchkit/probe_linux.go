package benchkit

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// The probes below conclude "open" only after data both ways with a netnsbed.Listen service:
// the TCP connect completes, the service's greeting arrives, and the echo of a random nonce the
// probe sent comes back (so the service received it). A connect whose last ACK, or whose data,
// the gate drops is not open.

// errWrongAnswer marks a connection whose peer answered with something other than a
// netnsbed.Listen service's greeting or echo.
var errWrongAnswer = errors.New("not a netnsbed service")

// convState is where a probe connection is in its exchange.
type convState int

const (
	convConnecting convState = iota
	convGreeting
	convEcho
	convDone
	convFailed
)

// conv is one probe connection on a non-blocking socket, created by the calling thread (and so
// in its namespace).
type conv struct {
	fd    int
	state convState
	nonce string
	buf   []byte
}

// dialConv starts a non-blocking connect from src to dst. A connect refused at once is a failed
// conv, not an error.
func dialConv(src netip.Addr, dst netip.AddrPort) (*conv, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("probe: socket: %w", err)
	}
	c := &conv{fd: fd}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
		c.close()
		return nil, fmt.Errorf("probe: bind %s: %w", src, err)
	}
	sa := &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		c.state = convFailed
	}
	return c, nil
}

// pollFd is c's entry for ppoll: negative (ignored) once c is done or failed.
func (c *conv) pollFd() unix.PollFd {
	switch c.state {
	case convConnecting:
		return unix.PollFd{Fd: int32(c.fd), Events: unix.POLLOUT}
	case convGreeting, convEcho:
		return unix.PollFd{Fd: int32(c.fd), Events: unix.POLLIN}
	}
	return unix.PollFd{Fd: -1}
}

// step moves c on after ppoll reported revents for it. A connection that fails (refused, reset,
// closed) becomes convFailed; only a wrong answer is an error.
func (c *conv) step(revents int16) error {
	if revents == 0 || c.state >= convDone {
		return nil
	}
	if c.state == convConnecting {
		if v, _ := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR); v != 0 || revents&unix.POLLOUT == 0 {
			c.state = convFailed
			return nil
		}
		c.state = convGreeting
	}
	// Read what has arrived; the greeting may already be there.
	for c.state == convGreeting || c.state == convEcho {
		line, ok := c.readLine()
		if !ok {
			return nil
		}
		want := netnsbed.Greeting
		if c.state == convEcho {
			want = c.nonce
		}
		if line != want {
			c.state = convFailed
			return fmt.Errorf("probe: %w: got %q, want %q", errWrongAnswer, line, want)
		}
		if c.state == convEcho {
			c.state = convDone
			return nil
		}
		nonce, err := netnsbed.Nonce()
		if err != nil {
			return err
		}
		// A fresh connection's send buffer takes a short line whole.
		if n, err := unix.Write(c.fd, []byte(nonce)); err != nil || n != len(nonce) {
			c.state = convFailed
			return nil
		}
		c.nonce, c.state = nonce, convEcho
	}
	return nil
}

// readLine reads what the socket holds and returns one complete line once it has arrived. It
// reports false while the line is incomplete, and when the connection failed (c.state says).
func (c *conv) readLine() (string, bool) {
	var b [netnsbed.MaxLine]byte
	for {
		if i := bytes.IndexByte(c.buf, '\n'); i >= 0 {
			if i != len(c.buf)-1 {
				// More than one line at once: the echo cannot be followed by anything.
				return string(c.buf), true
			}
			line := string(c.buf)
			c.buf = c.buf[:0]
			return line, true
		}
		if len(c.buf) >= netnsbed.MaxLine {
			return string(c.buf), true
		}
		n, err := unix.Read(c.fd, b[:netnsbed.MaxLine-len(c.buf)])
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return "", false
		}
		if err != nil || n == 0 {
			c.state = convFailed
			return "", false
		}
		c.buf = append(c.buf, b[:n]...)
	}
}

func (c *conv) close() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

// pollConvs waits up to d for any of cs to make progress and steps those that did.
func pollConvs(cs []*conv, pfds []unix.PollFd, d time.Duration) ([]unix.PollFd, error) {
	pfds = pfds[:0]
	for _, c := range cs {
		pfds = append(pfds, c.pollFd())
	}
	ts := unix.NsecToTimespec(int64(d))
	n, err := unix.Ppoll(pfds, &ts, nil)
	if err != nil && !errors.Is(err, unix.EINTR) {
		return pfds, fmt.Errorf("probe: poll: %w", err)
	}
	if n <= 0 {
		return pfds, nil
	}
	for i, c := range cs {
		if err := c.step(pfds[i].Revents); err != nil {
			return pfds, err
		}
	}
	return pfds, nil
}

// ProbeInterval is how often ProbeConnect starts a new connection attempt, the resolution of
// every packet-to-open measurement. An attempt (socket, bind, connect: the SYN crosses the
// veth pair and the server's firewall inside the call) costs the probing thread ~20-100 µs on
// the 2-vCPU test machine, so the real period is longer; a shorter interval takes CPU time the
// daemon under test needs.
const ProbeInterval = 100 * time.Microsecond

// ProbeConnect starts a fresh non-blocking TCP connect from src to dst (a netnsbed.Listen
// service) every ProbeInterval until one has carried data both ways (connect, the service's
// greeting, the echo of the probe's nonce), and returns the time from start to that echo. It
// must run on a thread in the client namespace (netnsbed.Do): all its sockets are created by
// the calling thread. For the duration it sets the thread's timer slack to 1 ns, so that its
// waits last ProbeInterval and not the default slack (50 µs) longer.
func ProbeConnect(src netip.Addr, dst netip.AddrPort, start time.Time, limit time.Duration) (time.Duration, error) {
	if slack, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0); err == nil && slack > 1 {
		if unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0) == nil {
			defer unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(slack), 0, 0, 0)
		}
	}
	var cs []*conv
	defer func() {
		for _, c := range cs {
			c.close()
		}
	}()
	pfds := make([]unix.PollFd, 0, 512)
	for time.Since(start) < limit {
		c, err := dialConv(src, dst)
		if err != nil {
			return 0, err
		}
		cs = append(cs, c)
		deadline := time.Now().Add(ProbeInterval)
		for {
			// A negative timeout is EINVAL: the deadline may pass between check and call.
			left := time.Until(deadline)
			if left <= 0 {
				break
			}
			if pfds, err = pollConvs(cs, pfds, left); err != nil {
				return 0, err
			}
			for _, c := range cs {
				if c.state == convDone {
					return time.Since(start), nil
				}
			}
		}
		if len(cs) > 500 {
			for _, c := range cs[:250] {
				c.close()
			}
			cs = append([]*conv(nil), cs[250:]...)
		}
	}
	return 0, fmt.Errorf("probe: no greeting and echo from %s within %s", dst, limit)
}

// MassConnect starts one non-blocking connect from each source to dst (a netnsbed.Listen
// service) at once and reports which carried data both ways (greeting and echo) within limit.
// It must run on a thread in the client namespace.
func MassConnect(srcs []netip.Addr, dst netip.AddrPort, limit time.Duration) ([]bool, error) {
	ok := make([]bool, len(srcs))
	cs := make([]*conv, 0, len(srcs))
	defer func() {
		for _, c := range cs {
			c.close()
		}
	}()
	for _, src := range srcs {
		c, err := dialConv(src, dst)
		if err != nil {
			return ok, fmt.Errorf("mass connect: %w", err)
		}
		cs = append(cs, c)
	}
	pfds := make([]unix.PollFd, 0, len(srcs))
	deadline := time.Now().Add(limit)
	for {
		left := 0
		for _, c := range cs {
			if c.state < convDone {
				left++
			}
		}
		wait := time.Until(deadline)
		if left == 0 || wait <= 0 {
			break
		}
		var err error
		if pfds, err = pollConvs(cs, pfds, wait); err != nil {
			return ok, fmt.Errorf("mass connect: %w", err)
		}
	}
	for i, c := range cs {
		ok[i] = c.state == convDone
	}
	return ok, nil
}

// ConnectLoop opens and closes TCP connections from src to dst (a netnsbed.Listen service) one
// after another for d (at most max connections), each carrying data both ways (greeting and
// echo), and returns the time from connect to echo of each that did, and how many did not. It
// must run on a thread in the client namespace.
func ConnectLoop(src netip.Addr, dst netip.AddrPort, d time.Duration, max int) ([]time.Duration, int, error) {
	var lat []time.Duration
	failed := 0
	end := time.Now().Add(d)
	pfds := make([]unix.PollFd, 0, 1)
	for time.Now().Before(end) && len(lat)+failed < max {
		t0 := time.Now()
		c, err := dialConv(src, dst)
		if err != nil {
			return lat, failed, fmt.Errorf("connect loop: %w", err)
		}
		// Linger 0: close sends RST, so the client never runs out of ports to TIME_WAIT.
		_ = unix.SetsockoptLinger(c.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		limit := t0.Add(time.Second)
		for c.state < convDone {
			wait := time.Until(limit)
			if wait <= 0 {
				break
			}
			if pfds, err = pollConvs([]*conv{c}, pfds, wait); err != nil {
				c.close()
				return lat, failed, fmt.Errorf("connect loop: %w", err)
			}
		}
		if c.state == convDone {
			lat = append(lat, time.Since(t0))
		} else {
			failed++
		}
		c.close()
	}
	return lat, failed, nil
}
