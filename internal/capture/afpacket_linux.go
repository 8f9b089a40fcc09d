package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Batch sizes of Run: messages per recvmmsg call and bytes per message.
const (
	batchLen   = 64
	bufLen     = 65536
	controlLen = 64 // room for an SCM_TIMESTAMPNS message
)

// AFPacket captures on one AF_PACKET socket per named interface, or on a single socket for all
// interfaces. Its methods are safe for concurrent use; Run reads in one goroutine.
type AFPacket struct {
	log   *slog.Logger
	socks []sock
	wake  int // eventfd that interrupts Run's poll

	mu      sync.Mutex // serialises socket options against Close
	closed  atomic.Bool
	running atomic.Bool
	runs    sync.WaitGroup

	received, kernelDrops, decodeErrors, truncated atomic.Uint64
}

type sock struct {
	fd      int
	name    string // interface name, "" for all interfaces
	ifindex int
}

// Open opens the capture sockets with cfg.Filter attached. Each socket gets a drop-all filter
// before it is bound, is drained, and only then gets the real filter, so nothing unfiltered is
// ever read. An unknown interface is an error; an interface that is down is logged and watched:
// its packets arrive once it comes up. Sockets opened inside a network namespace stay in it.
func Open(cfg Config) (*AFPacket, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	prog, err := Compile(cfg.Filter)
	if err != nil {
		return nil, fmt.Errorf("capture: open: %w", err)
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("capture: open: %w", err)
	}
	a := &AFPacket{log: log, wake: -1}
	targets := []sock{{}}
	if len(cfg.Interfaces) > 0 {
		targets = targets[:0]
		for _, name := range cfg.Interfaces {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				return nil, fmt.Errorf("capture: open: interface %q: %w", name, err)
			}
			if ifi.Flags&net.FlagUp == 0 {
				log.Warn("capture: interface is down; its packets are seen once it comes up", "interface", name)
			}
			targets = append(targets, sock{name: name, ifindex: ifi.Index})
		}
	}
	for _, t := range targets {
		fd, err := openSocket(t.ifindex, raw)
		if err != nil {
			a.closeFDs()
			if t.name != "" {
				return nil, fmt.Errorf("capture: open %s: %w", t.name, err)
			}
			return nil, fmt.Errorf("capture: open: %w", err)
		}
		t.fd = fd
		a.socks = append(a.socks, t)
	}
	a.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		a.closeFDs()
		return nil, fmt.Errorf("capture: open: eventfd: %w", err)
	}
	return a, nil
}

func openSocket(ifindex int, prog []bpf.RawInstruction) (int, error) {
	// Protocol 0: the socket receives nothing until bind names ETH_P_ALL.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if errors.Is(err, unix.EPERM) {
		return -1, fmt.Errorf("packet socket: %w: needs CAP_NET_RAW", err)
	}
	if err != nil {
		return -1, fmt.Errorf("packet socket: %w", err)
	}
	fail := func(op string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w", op, err)
	}
	if err := attach(fd, []bpf.RawInstruction{{Op: unix.BPF_RET | unix.BPF_K, K: 0}}); err != nil {
		return fail("attach drop-all filter", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return fail("SO_TIMESTAMPNS", err)
	}
	// A larger queue rides out bursts; as root the rmem_max cap does not apply.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		return fail("bind", err)
	}
	// Drain whatever was queued before the drop-all filter took effect; a down interface
	// reports ENETDOWN once here, which is not an error.
	var buf [1]byte
	for i := 0; i < 1<<16; i++ {
		_, _, err := unix.Recvfrom(fd, buf[:], unix.MSG_DONTWAIT|unix.MSG_TRUNC)
		if err != nil && err != unix.ENETDOWN && err != unix.EINTR {
			break
		}
	}
	if err := attach(fd, prog); err != nil {
		return fail("attach filter", err)
	}
	return fd, nil
}

func attach(fd int, prog []bpf.RawInstruction) error {
	if len(prog) == 0 {
		return errors.New("empty program")
	}
	fs := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		fs[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(fs)), Filter: &fs[0]})
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// SetFilter replaces the filter of every socket (on reload). Packets queued under the old
// filter may still be delivered afterwards; handlers check packets against their own state.
func (a *AFPacket) SetFilter(f Filter) error {
	prog, err := Compile(f)
	if err != nil {
		return fmt.Errorf("capture: set filter: %w", err)
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return fmt.Errorf("capture: set filter: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed.Load() {
		return fmt.Errorf("capture: set filter: %w", net.ErrClosed)
	}
	for _, s := range a.socks {
		if err := attach(s.fd, raw); err != nil {
			return fmt.Errorf("capture: set filter %s: %w", s.name, err)
		}
	}
	return nil
}

// Stats returns the counters so far. Kernel drops come from PACKET_STATISTICS.
func (a *AFPacket) Stats() Stats {
	a.mu.Lock()
	if !a.closed.Load() {
		a.pollKernelStats()
	}
	a.mu.Unlock()
	return Stats{
		Received:     a.received.Load(),
		KernelDrops:  a.kernelDrops.Load(),
		DecodeErrors: a.decodeErrors.Load(),
		Truncated:    a.truncated.Load(),
	}
}

// pollKernelStats adds the kernel's drop counts (which reset on reading) to a's; a.mu is held.
func (a *AFPacket) pollKernelStats() {
	for _, s := range a.socks {
		if st, err := unix.GetsockoptTpacketStats(s.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			a.kernelDrops.Add(uint64(st.Drops))
		}
	}
}

// Close stops Run, waits for it to return and closes the sockets.
func (a *AFPacket) Close() error {
	a.mu.Lock()
	if a.closed.Swap(true) {
		a.mu.Unlock()
		return nil
	}
	a.pollKernelStats()
	a.mu.Unlock()
	a.signal()
	a.runs.Wait()
	a.mu.Lock()
	a.closeFDs()
	a.mu.Unlock()
	return nil
}

func (a *AFPacket) closeFDs() {
	for _, s := range a.socks {
		unix.Close(s.fd)
	}
	a.socks = nil
	if a.wake >= 0 {
		unix.Close(a.wake)
		a.wake = -1
	}
}

// signal wakes Run. It may run after Run returned (from a context.AfterFunc), hence the lock.
func (a *AFPacket) signal() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.wake >= 0 {
		one := [8]byte{1}
		_, _ = unix.Write(a.wake, one[:])
	}
}

// Run reads packets until ctx is done or a is closed, then returns nil. It calls handle in
// Run's goroutine, one packet at a time; the Packet and its Payload are valid only during the
// call. Run blocks in poll(2) on the sockets and an eventfd that ctx cancellation and Close
// write to, so it neither spins nor sleeps; packets are read 64 at a time with recvmmsg(2).
// Packet.Time is the kernel receive timestamp (SO_TIMESTAMPNS), or the time of the batch when
// the kernel gave none. Only one Run may be active at a time.
func (a *AFPacket) Run(ctx context.Context, handle func(*Packet)) error {
	a.mu.Lock()
	if a.closed.Load() {
		a.mu.Unlock()
		return fmt.Errorf("capture: run: %w", net.ErrClosed)
	}
	if !a.running.CompareAndSwap(false, true) {
		a.mu.Unlock()
		return errors.New("capture: run: already running")
	}
	a.runs.Add(1)
	a.mu.Unlock()
	defer func() {
		a.running.Store(false)
		a.runs.Done()
	}()
	stop := context.AfterFunc(ctx, a.signal)
	defer stop()

	b := newBatch()
	pfds := make([]unix.PollFd, 0, len(a.socks)+1)
	for _, s := range a.socks {
		pfds = append(pfds, unix.PollFd{Fd: int32(s.fd), Events: unix.POLLIN})
	}
	pfds = append(pfds, unix.PollFd{Fd: int32(a.wake), Events: unix.POLLIN})
	var pkt Packet
	for {
		if ctx.Err() != nil || a.closed.Load() {
			return nil
		}
		if _, err := unix.Poll(pfds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return fmt.Errorf("capture: run: poll: %w", err)
		}
		if pfds[len(pfds)-1].Revents != 0 {
			var v [8]byte
			_, _ = unix.Read(a.wake, v[:])
			continue // the loop head decides whether to stop
		}
		for i, s := range a.socks {
			if pfds[i].Revents == 0 {
				continue
			}
			if err := a.readBatch(s, b, &pkt, handle); err != nil {
				return err
			}
		}
	}
}

// readBatch reads up to one batch from s and hands the packets to handle.
func (a *AFPacket) readBatch(s sock, b *batch, pkt *Packet, handle func(*Packet)) error {
	b.reset()
	n, err := b.recv(s.fd)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return nil
	case err == unix.ENETDOWN:
		a.log.Warn("capture: interface went down; waiting for it to come back", "interface", s.name)
		return nil
	case err != nil:
		return fmt.Errorf("capture: run: recvmmsg %s: %w", s.name, err)
	}
	now := time.Now()
	for i := 0; i < n; i++ {
		m := &b.msgs[i]
		size := int(m.Len)
		if m.Hdr.Flags&unix.MSG_TRUNC != 0 || size > bufLen {
			a.truncated.Add(1)
			size = min(size, bufLen)
		}
		if b.names[i].Pkttype == unix.PACKET_OUTGOING {
			continue // only when a filter swap left no filter in between; never counted
		}
		t := b.timestamp(i, now)
		p, err := Decode(b.bufs[i][:size], t, int(b.names[i].Ifindex))
		if err != nil {
			a.decodeErrors.Add(1)
			a.log.Debug("capture: undecodable packet", "interface", s.name, "err", err)
			continue
		}
		a.received.Add(1)
		*pkt = p
		handle(pkt)
	}
	return nil
}

// batch holds the buffers of one recvmmsg call.
type batch struct {
	msgs  [batchLen]unix.Mmsghdr
	iovs  [batchLen]unix.Iovec
	names [batchLen]unix.RawSockaddrLinklayer
	bufs  [batchLen][]byte
	ctrl  []uint64 // control buffers, 8-byte aligned
}

func newBatch() *batch {
	b := &batch{ctrl: make([]uint64, batchLen*controlLen/8)}
	mem := make([]byte, batchLen*bufLen)
	for i := range b.bufs {
		b.bufs[i] = mem[i*bufLen : (i+1)*bufLen : (i+1)*bufLen]
	}
	return b
}

func (b *batch) control(i int) []byte {
	all := unsafe.Slice((*byte)(unsafe.Pointer(&b.ctrl[0])), len(b.ctrl)*8)
	return all[i*controlLen : (i+1)*controlLen]
}

func (b *batch) reset() {
	for i := range b.msgs {
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(bufLen)
		h := &b.msgs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Namelen = unix.SizeofSockaddrLinklayer
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
		h.Control = &b.control(i)[0]
		h.SetControllen(controlLen)
		h.Flags = 0
		b.msgs[i].Len = 0
	}
}

func (b *batch) recv(fd int) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.msgs[0])),
		batchLen, unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// timestamp returns the SCM_TIMESTAMPNS time of message i, or def.
func (b *batch) timestamp(i int, def time.Time) time.Time {
	ctl := b.control(i)
	n := min(int(b.msgs[i].Hdr.Controllen), len(ctl))
	for off := 0; off+unix.SizeofCmsghdr <= n; {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[off]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || off+l > n {
			break
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && l >= unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{}))) {
			ts := (*unix.Timespec)(unsafe.Pointer(&ctl[off+unix.CmsgLen(0)]))
			if ts.Sec != 0 || ts.Nsec != 0 {
				return time.Unix(int64(ts.Sec), int64(ts.Nsec))
			}
		}
		off += unix.CmsgSpace(l - unix.CmsgLen(0))
	}
	return def
}
