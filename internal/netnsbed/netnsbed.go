// Package netnsbed builds throw-away test beds of network namespaces joined by a veth pair.
//
// A bed has a server namespace and a client namespace. Packets sent inside a bed stay inside it:
// the addresses (198.18.0.0/16, the benchmarking range, and fd5e:5a3e::/64) exist only in the
// bed's namespaces. Beds need root and the ip(8) command. Tests get their beds from package
// netnstest (SkipUnlessRoot, NewT), which keeps the testing package out of this one: the demo
// links it into the binary.
package netnsbed

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// Addresses of a bed. Extra client addresses come from ExtraClient4/6.
var (
	Server4 = netip.MustParseAddr("198.18.0.1")
	Client4 = netip.MustParseAddr("198.18.0.2")
	Server6 = netip.MustParseAddr("fd5e:5a3e::1")
	Client6 = netip.MustParseAddr("fd5e:5a3e::2")
)

// Bed is one server namespace and one client namespace joined by a veth pair.
type Bed struct {
	Server, Client     string // namespace names
	ServerIf, ClientIf string // interface names inside the namespaces
	extra              int
}

// New creates a bed with fresh, uniquely named namespaces.
func New(ctx context.Context) (*Bed, error) {
	var id [4]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("netnsbed: random name: %w", err)
	}
	tag := hex.EncodeToString(id[:])
	b := &Bed{
		Server:   "sesame-" + tag + "-srv",
		Client:   "sesame-" + tag + "-cli",
		ServerIf: "eth0",
		ClientIf: "eth0",
	}
	vs, vc := "vs"+tag, "vc"+tag
	for _, ns := range []string{b.Server, b.Client} {
		if err := ip(ctx, nil, "netns", "add", ns); err != nil {
			b.Close()
			return nil, err
		}
		if err := noDAD(ns); err != nil {
			b.Close()
			return nil, err
		}
	}
	steps := [][]string{
		{"link", "add", vs, "type", "veth", "peer", "name", vc},
		{"link", "set", vs, "netns", b.Server},
		{"link", "set", vc, "netns", b.Client},
		{"-n", b.Server, "link", "set", vs, "name", b.ServerIf},
		{"-n", b.Client, "link", "set", vc, "name", b.ClientIf},
		{"-n", b.Server, "addr", "add", Server4.String() + "/16", "dev", b.ServerIf},
		{"-n", b.Client, "addr", "add", Client4.String() + "/16", "dev", b.ClientIf},
		{"-n", b.Server, "addr", "add", Server6.String() + "/64", "dev", b.ServerIf, "nodad"},
		{"-n", b.Client, "addr", "add", Client6.String() + "/64", "dev", b.ClientIf, "nodad"},
		{"-n", b.Server, "link", "set", "lo", "up"},
		{"-n", b.Client, "link", "set", "lo", "up"},
		{"-n", b.Server, "link", "set", b.ServerIf, "up"},
		{"-n", b.Client, "link", "set", b.ClientIf, "up"},
	}
	for _, s := range steps {
		if err := ip(ctx, nil, s...); err != nil {
			b.Close()
			return nil, err
		}
	}
	// Wait until the link is up on both sides and IPv6 addresses are usable.
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ := exec.CommandContext(ctx, "ip", "-n", b.Client, "-6", "addr", "show", "dev", b.ClientIf, "tentative").Output()
		out2, _ := exec.CommandContext(ctx, "ip", "-n", b.Server, "-6", "addr", "show", "dev", b.ServerIf, "tentative").Output()
		if len(bytes.TrimSpace(out)) == 0 && len(bytes.TrimSpace(out2)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return b, nil
}

// noDAD turns IPv6 duplicate address detection off in namespace ns for the interfaces moved
// into it later: a bed's addresses are unique by construction, and the link-local address's
// detection would otherwise keep it tentative for a second or two after the link comes up.
func noDAD(ns string) error {
	return Do(ns, func() error {
		for _, conf := range []string{"all", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+conf+"/accept_dad", []byte("0\n"), 0o644); err != nil {
				return fmt.Errorf("netnsbed: %s: accept_dad: %w", ns, err)
			}
		}
		return nil
	})
}

// Close deletes both namespaces; the veth pair goes with them.
func (b *Bed) Close() error {
	var errs []error
	for _, ns := range []string{b.Server, b.Client} {
		if ns == "" {
			continue
		}
		if err := ip(context.Background(), nil, "netns", "del", ns); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// AddClientAddrs adds n more addresses of each family to the client side and returns them
// (IPv4 first, then IPv6 when v6 is true). At most 60000 per bed.
func (b *Bed) AddClientAddrs(ctx context.Context, n int, v6 bool) ([]netip.Addr, error) {
	if b.extra+n > 60000 {
		return nil, fmt.Errorf("netnsbed: too many client addresses")
	}
	var script strings.Builder
	var addrs []netip.Addr
	for i := 0; i < n; i++ {
		k := b.extra + i + 1
		a := ExtraClient4(k)
		addrs = append(addrs, a)
		fmt.Fprintf(&script, "addr add %s/16 dev %s\n", a, b.ClientIf)
		if v6 {
			a6 := ExtraClient6(k)
			addrs = append(addrs, a6)
			fmt.Fprintf(&script, "addr add %s/64 dev %s nodad\n", a6, b.ClientIf)
		}
	}
	b.extra += n
	if err := ip(ctx, strings.NewReader(script.String()), "-n", b.Client, "-batch", "-"); err != nil {
		return nil, err
	}
	return addrs, nil
}

// ExtraClient4 is the k-th extra client address (k >= 1): 198.18.1.0 upwards.
func ExtraClient4(k int) netip.Addr {
	k += 256
	return netip.AddrFrom4([4]byte{198, 18, byte(k >> 8), byte(k)})
}

// ExtraClient6 is the k-th extra IPv6 client address (k >= 1): fd5e:5a3e::1:k.
func ExtraClient6(k int) netip.Addr {
	a := Client6.As16()
	a[12], a[13], a[14], a[15] = 0, 1, byte(k>>8), byte(k)
	return netip.AddrFrom16(a)
}

// Command returns a command that runs name with args inside namespace ns.
func Command(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Do runs fn on an OS thread switched into namespace ns. Sockets that fn creates belong to ns
// for their whole life, so they may be used after Do returns.
func Do(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is left locked and dies with the goroutine if switching back fails.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("netnsbed: current namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			errc <- fmt.Errorf("netnsbed: namespace %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("netnsbed: enter %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("netnsbed: leave %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// NSFd opens a handle on namespace ns; the caller closes it.
func NSFd(ns string) (netns.NsHandle, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return 0, fmt.Errorf("netnsbed: namespace %s: %w", ns, err)
	}
	return h, nil
}

// Dial opens a TCP connection from namespace ns, from address src when it is valid, to dst,
// giving up after timeout. It returns the connection; the caller closes it.
func Dial(ns string, src netip.Addr, dst netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var conn net.Conn
	err := Do(ns, func() error {
		d := net.Dialer{Timeout: timeout}
		if src.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		c, err := d.Dial("tcp", dst.String())
		conn = c
		return err
	})
	return conn, err
}

// Greeting is the line a Listen service sends first on every connection.
const Greeting = "netnsbed hello\n"

// Bounds of a Listen service's connection: the longest line it echoes, the most lines, and how
// long it waits for the next one.
const (
	MaxLine   = 256
	maxLines  = 1000
	lineIdle  = 2 * time.Minute
	nonceSize = 16
)

// CanConnect reports whether the service at dst (a Listen service) answers from ns (and src,
// when valid) with data both ways within timeout: the TCP handshake completes, the service's
// Greeting arrives, and the echo of a random nonce sent by the client comes back, which proves
// the service received it. A refused or timed-out connection, and a connection on which the
// greeting or the echo does not arrive (a dropped ACK or data packet), is false; other errors,
// and a wrong greeting or echo, are returned.
func CanConnect(ns string, src netip.Addr, dst netip.AddrPort, timeout time.Duration) (bool, error) {
	s, err := Open(ns, src, dst, timeout)
	if err != nil {
		if NoAnswer(err) {
			return false, nil
		}
		return false, err
	}
	s.Close()
	return true, nil
}

// Session is a connection to a Listen service on which data has gone both ways. A test holds
// it to check later (with Echo) that the connection still carries data, e.g. after a grant
// expired. It keeps the connection's one reader, so nothing the service sent is lost.
type Session struct {
	conn net.Conn
	rd   *bufio.Reader
}

// Open connects from ns (and src, when valid) to the Listen service at dst and proves data
// both ways (the Greeting, then the echo of a nonce), all within timeout. On error the
// connection is closed; NoAnswer tells a dropped or refused path from a wrong answer.
func Open(ns string, src netip.Addr, dst netip.AddrPort, timeout time.Duration) (*Session, error) {
	deadline := time.Now().Add(timeout)
	c, err := Dial(ns, src, dst, timeout)
	if err != nil {
		return nil, err
	}
	s := &Session{conn: c, rd: bufio.NewReaderSize(c, MaxLine)}
	if err := s.exchange(deadline); err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}

// Echo sends a fresh nonce line on the session and requires its echo, before deadline: the
// held connection still carries data both ways. It may be called any number of times (up to
// the service's bound of lines).
func (s *Session) Echo(deadline time.Time) error {
	if err := s.conn.SetDeadline(deadline); err != nil {
		return fmt.Errorf("netnsbed: echo: %w", err)
	}
	if err := echo(s.conn, s.rd); err != nil {
		return err
	}
	return s.conn.SetDeadline(time.Time{})
}

// Conn returns the session's connection (for its addresses); reading from it directly would
// bypass the session's reader.
func (s *Session) Conn() net.Conn { return s.conn }

// Close closes the session's connection.
func (s *Session) Close() error { return s.conn.Close() }

// exchange reads the Greeting and echoes one nonce before deadline, then clears the deadline.
func (s *Session) exchange(deadline time.Time) error {
	if err := s.conn.SetDeadline(deadline); err != nil {
		return fmt.Errorf("netnsbed: exchange: %w", err)
	}
	if err := expectLine(s.rd, Greeting); err != nil {
		return fmt.Errorf("netnsbed: exchange with %s: greeting: %w", s.conn.RemoteAddr(), err)
	}
	if err := echo(s.conn, s.rd); err != nil {
		return err
	}
	return s.conn.SetDeadline(time.Time{})
}

// Exchange proves data both ways on a fresh connection to a Listen service: it reads the
// Greeting, sends a random nonce line, and reads it back, all before deadline. It then clears
// the connection's deadline, so a test may keep using c directly (every line it sends is
// echoed); to check the connection again later, Open and Session.Echo are simpler.
func Exchange(c net.Conn, deadline time.Time) error {
	s := &Session{conn: c, rd: bufio.NewReaderSize(c, MaxLine)}
	if err := s.exchange(deadline); err != nil {
		return err
	}
	if s.rd.Buffered() > 0 {
		return fmt.Errorf("netnsbed: exchange with %s: %d unexpected bytes after the echo", c.RemoteAddr(), s.rd.Buffered())
	}
	return nil
}

// echo sends a fresh nonce on c and reads its echo from rd, c's reader. Nothing else may
// follow the echo: the service sends only echoes.
func echo(c net.Conn, rd *bufio.Reader) error {
	nonce, err := Nonce()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(c, nonce); err != nil {
		return fmt.Errorf("netnsbed: echo with %s: send nonce: %w", c.RemoteAddr(), err)
	}
	if err := expectLine(rd, nonce); err != nil {
		return fmt.Errorf("netnsbed: echo with %s: %w", c.RemoteAddr(), err)
	}
	if rd.Buffered() > 0 {
		return fmt.Errorf("netnsbed: echo with %s: %w: %d bytes after the echo", c.RemoteAddr(), ErrWrongLine, rd.Buffered())
	}
	return nil
}

// Nonce returns a fresh random line (hex, ending in a newline) for a client to send.
func Nonce() (string, error) {
	var b [nonceSize]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("netnsbed: nonce: %w", err)
	}
	return "nonce " + hex.EncodeToString(b[:]) + "\n", nil
}

// ErrWrongLine is returned (wrapped) when a line differs from the one expected: the peer is not
// a Listen service, or the echo is not of what was sent.
var ErrWrongLine = errors.New("unexpected line")

// expectLine reads one line of at most MaxLine bytes and compares it with want.
func expectLine(rd *bufio.Reader, want string) error {
	line, err := rd.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return fmt.Errorf("%w: longer than %d bytes", ErrWrongLine, MaxLine)
		}
		return err
	}
	if string(line) != want {
		return fmt.Errorf("%w: got %q, want %q", ErrWrongLine, line, want)
	}
	return nil
}

// NoAnswer reports whether err (from Dial, Open or Session.Echo) means the peer did not answer
// (a dropped or refused packet, a reset or closed connection), as opposed to a local error or a
// wrong answer.
func NoAnswer(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.EPIPE)
}

// Listen starts a TCP service in ns on addr until ctx ends. On every connection it sends
// Greeting, then echoes each line it receives (at most MaxLine bytes, 1000 lines, two minutes
// apart) until the client closes. Connections still open when ctx ends are closed.
func Listen(ctx context.Context, ns string, addr netip.AddrPort) (net.Listener, error) {
	var ln net.Listener
	err := Do(ns, func() error {
		l, err := net.Listen("tcp", addr.String())
		ln = l
		return err
	})
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	stopped := false
	go func() {
		<-ctx.Done()
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		for c := range conns {
			c.Close()
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				time.Sleep(10 * time.Millisecond) // EMFILE and the like: do not spin
				continue
			}
			mu.Lock()
			if stopped {
				mu.Unlock()
				c.Close()
				return
			}
			conns[c] = struct{}{}
			mu.Unlock()
			go func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				serveEcho(c)
			}()
		}
	}()
	return ln, nil
}

// serveEcho sends the greeting and echoes lines on c, within Listen's bounds.
func serveEcho(c net.Conn) {
	if _, err := io.WriteString(c, Greeting); err != nil {
		return
	}
	rd := bufio.NewReaderSize(c, MaxLine)
	for range maxLines {
		c.SetReadDeadline(time.Now().Add(lineIdle))
		line, err := rd.ReadSlice('\n')
		if err != nil {
			return
		}
		if _, err := c.Write(line); err != nil {
			return
		}
	}
}

func ip(ctx context.Context, stdin *strings.Reader, args ...string) error {
	cmd := exec.CommandContext(ctx, "ip", args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("netnsbed: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
