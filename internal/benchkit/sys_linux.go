package benchkit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// LinkBetween returns the addressing for frames sent on ifname of ns to the interface peerIf
// of peerNS (the other end of a veth pair).
func LinkBetween(ns, ifname, peerNS, peerIf string) (Link, error) {
	var l Link
	err := netnsbed.Do(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		l.Src, l.Ifindex = ifi.HardwareAddr, ifi.Index
		return nil
	})
	if err != nil {
		return l, fmt.Errorf("link: %w", err)
	}
	err = netnsbed.Do(peerNS, func() error {
		ifi, err := net.InterfaceByName(peerIf)
		if err != nil {
			return err
		}
		l.Dst = ifi.HardwareAddr
		return nil
	})
	if err != nil {
		return l, fmt.Errorf("link: %w", err)
	}
	return l, nil
}

// ProcUsage is a sample of a process's CPU time and memory.
type ProcUsage struct {
	CPU   time.Duration // utime + stime
	HWM   int64         // peak resident set (VmHWM), bytes
	RSS   int64         // resident set now (VmRSS), bytes
	Taken time.Time
}

const clockTick = 100 // USER_HZ on Linux

// ReadProc samples /proc/PID/stat and /proc/PID/status.
func ReadProc(pid int) (ProcUsage, error) {
	u := ProcUsage{Taken: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, fmt.Errorf("proc: %w", err)
	}
	// Fields after the command name, which is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return u, errors.New("proc: malformed stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return u, errors.New("proc: short stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // field 14 utime
	st, _ := strconv.ParseInt(f[12], 10, 64) // field 15 stime
	u.CPU = time.Duration(ut+st) * time.Second / clockTick
	status, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, fmt.Errorf("proc: %w", err)
	}
	defer status.Close()
	sc := bufio.NewScanner(status)
	for sc.Scan() {
		line := sc.Text()
		for _, k := range []struct {
			name string
			dst  *int64
		}{{"VmHWM:", &u.HWM}, {"VmRSS:", &u.RSS}} {
			if strings.HasPrefix(line, k.name) {
				v := strings.Fields(line[len(k.name):])
				if len(v) > 0 {
					kb, _ := strconv.ParseInt(v[0], 10, 64)
					*k.dst = kb << 10
				}
			}
		}
	}
	return u, nil
}

// ResetPeak resets the VmHWM of pid to its current RSS (clear_refs 5).
func ResetPeak(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset peak rss: %w", err)
	}
	return nil
}

// IfCounters are the packet counters of one interface.
type IfCounters struct{ RxPackets, RxDropped, TxPackets, TxDropped uint64 }

// ReadIf reads the counters of ifname inside ns from /proc/thread-self/net/dev.
func ReadIf(ns, ifname string) (IfCounters, error) {
	var c IfCounters
	err := netnsbed.Do(ns, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/dev")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			name, rest, ok := strings.Cut(line, ":")
			if !ok || strings.TrimSpace(name) != ifname {
				continue
			}
			f := strings.Fields(rest)
			if len(f) < 12 {
				return errors.New("short net/dev line")
			}
			p := func(s string) uint64 { v, _ := strconv.ParseUint(s, 10, 64); return v }
			c = IfCounters{RxPackets: p(f[1]), RxDropped: p(f[3]), TxPackets: p(f[9]), TxDropped: p(f[11])}
			return nil
		}
		return fmt.Errorf("no interface %s", ifname)
	})
	if err != nil {
		return c, fmt.Errorf("interface counters: %w", err)
	}
	return c, nil
}

// ProbeInterval is how often ProbeConnect starts a new connection attempt, the resolution of
// every packet-to-connect measurement. An attempt (socket, bind, connect: the SYN crosses the
// veth pair and the server's firewall inside the call) costs the probing thread ~20-100 µs on
// the 2-vCPU test machine, so the real period is longer; a shorter interval takes CPU time the
// daemon under test needs.
const ProbeInterval = 100 * time.Microsecond

// ProbeConnect starts a fresh non-blocking TCP connect from src to dst every ProbeInterval until
// one completes, and returns the time from start to that completion. It must run on a thread in
// the client namespace (netnsbed.Do): all its sockets are created by the calling thread. For
// the duration it sets the thread's timer slack to 1 ns, so that its waits last ProbeInterval
// and not the default slack (50 µs) longer.
func ProbeConnect(src netip.Addr, dst netip.AddrPort, start time.Time, limit time.Duration) (time.Duration, error) {
	if slack, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0); err == nil && slack > 1 {
		if unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0) == nil {
			defer unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(slack), 0, 0, 0)
		}
	}
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	sa := &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	local := &unix.SockaddrInet4{Addr: src.As4()}
	pfds := make([]unix.PollFd, 0, 512)
	for time.Since(start) < limit {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return 0, fmt.Errorf("probe: socket: %w", err)
		}
		fds = append(fds, fd)
		if err := unix.Bind(fd, local); err != nil {
			return 0, fmt.Errorf("probe: bind %s: %w", src, err)
		}
		if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
			return 0, fmt.Errorf("probe: connect: %w", err)
		}
		pfds = pfds[:0]
		for _, fd := range fds {
			pfds = append(pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT})
		}
		deadline := time.Now().Add(ProbeInterval)
		for {
			// A negative timeout is EINVAL: the deadline may pass between check and call.
			left := time.Until(deadline)
			if left <= 0 {
				break
			}
			ts := unix.NsecToTimespec(int64(left))
			n, err := unix.Ppoll(pfds, &ts, nil)
			if err != nil && !errors.Is(err, unix.EINTR) {
				return 0, fmt.Errorf("probe: poll: %w", err)
			}
			if n > 0 {
				for _, p := range pfds {
					if p.Revents&(unix.POLLOUT|unix.POLLERR|unix.POLLHUP) == 0 {
						continue
					}
					if v, _ := unix.GetsockoptInt(int(p.Fd), unix.SOL_SOCKET, unix.SO_ERROR); v == 0 && p.Revents&unix.POLLOUT != 0 {
						return time.Since(start), nil
					}
				}
			}
		}
		if len(fds) > 500 {
			for _, fd := range fds[:250] {
				unix.Close(fd)
			}
			fds = append([]int(nil), fds[250:]...)
		}
	}
	return 0, fmt.Errorf("probe: no connection to %s within %s", dst, limit)
}

// MassConnect starts one non-blocking connect from each source to dst at once and reports
// which completed within limit. It must run on a thread in the client namespace.
func MassConnect(srcs []netip.Addr, dst netip.AddrPort, limit time.Duration) ([]bool, error) {
	ok := make([]bool, len(srcs))
	fds := make([]int, 0, len(srcs))
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	sa := &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	pfds := make([]unix.PollFd, 0, len(srcs))
	for _, src := range srcs {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return ok, fmt.Errorf("mass connect: socket: %w", err)
		}
		fds = append(fds, fd)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
			return ok, fmt.Errorf("mass connect: bind %s: %w", src, err)
		}
		if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
			return ok, fmt.Errorf("mass connect: connect: %w", err)
		}
		pfds = append(pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT})
	}
	deadline := time.Now().Add(limit)
	left := len(pfds)
	for left > 0 {
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		ts := unix.NsecToTimespec(int64(wait))
		n, err := unix.Ppoll(pfds, &ts, nil)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return ok, fmt.Errorf("mass connect: poll: %w", err)
		}
		if n <= 0 {
			continue
		}
		for i := range pfds {
			p := &pfds[i]
			if p.Fd < 0 || p.Revents == 0 {
				continue
			}
			if v, _ := unix.GetsockoptInt(int(p.Fd), unix.SOL_SOCKET, unix.SO_ERROR); v == 0 && p.Revents&unix.POLLOUT != 0 {
				ok[i] = true
			}
			p.Fd = -1 // ppoll ignores negative descriptors
			left--
		}
	}
	return ok, nil
}

// ConnectLoop opens and closes TCP connections from src to dst one after another for d (at most
// max connections) and returns the latency of each completed connect. It must run on a thread
// in the client namespace.
func ConnectLoop(src netip.Addr, dst netip.AddrPort, d time.Duration, max int) ([]time.Duration, int, error) {
	var lat []time.Duration
	failed := 0
	end := time.Now().Add(d)
	sa := &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	for time.Now().Before(end) && len(lat)+failed < max {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return lat, failed, fmt.Errorf("connect loop: socket: %w", err)
		}
		// Linger 0: close sends RST, so the client never runs out of ports to TIME_WAIT.
		_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
			unix.Close(fd)
			return lat, failed, fmt.Errorf("connect loop: bind: %w", err)
		}
		t0 := time.Now()
		err = unix.Connect(fd, sa)
		if err != nil && !errors.Is(err, unix.EINPROGRESS) {
			unix.Close(fd)
			failed++
			continue
		}
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		ts := unix.NsecToTimespec(int64(time.Second))
		n, _ := unix.Ppoll(p, &ts, nil)
		if v, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); n > 0 && v == 0 && p[0].Revents&unix.POLLOUT != 0 {
			lat = append(lat, time.Since(t0))
		} else {
			failed++
		}
		unix.Close(fd)
	}
	return lat, failed, nil
}
