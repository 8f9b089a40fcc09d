package benchkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// Bounds every flood obeys whatever its configuration says.
const (
	MaxFloodDuration = 10 * time.Minute
	MaxFloodRate     = 10_000_000
	frameBuf         = 2048
	maxBatch         = 64
)

// Rand is a small xorshift64* generator, one per flood thread; not for secrets.
type Rand struct{ s uint64 }

// NewRand returns a generator seeded with seed (0 is replaced).
func NewRand(seed uint64) *Rand {
	if seed == 0 {
		seed = 0x9E3779B97F4A7C15
	}
	return &Rand{s: seed}
}

// Uint64 returns the next value.
func (r *Rand) Uint64() uint64 {
	r.s ^= r.s >> 12
	r.s ^= r.s << 25
	r.s ^= r.s >> 27
	return r.s * 2685821657736338717
}

// Uint32 returns the next value's high half.
func (r *Rand) Uint32() uint32 { return uint32(r.Uint64() >> 32) }

// Intn returns a value in [0, n).
func (r *Rand) Intn(n int) int { return int((r.Uint64() >> 1) % uint64(n)) }

// Pattern writes frame number i of a flood into buf (2048 bytes) and returns its length.
// It runs concurrently on every flood thread, each with its own rng.
type Pattern func(buf []byte, i uint64, rng *Rand) int

// FloodConfig describes one bounded flood.
type FloodConfig struct {
	NS     string // namespace of the sending interface (the client side of the wire)
	Ifname string // the sending interface
	DstMAC net.HardwareAddr
	// Rate is the target in frames per second; 0 means as fast as the bed goes.
	Rate float64
	// Count caps the frames sent (0: no cap but Duration); Duration caps the time. At least
	// one must be set; both are further capped by MaxFloodDuration.
	Count    uint64
	Duration time.Duration
	Threads  int // sending threads (default 1)
	Pattern  Pattern
	Seed     uint64
}

// FloodResult is what a flood achieved.
type FloodResult struct {
	Requested float64       `json:"requested_pps"` // 0: unlimited
	Sent      uint64        `json:"sent"`
	Errors    uint64        `json:"send_errors"`
	Elapsed   time.Duration `json:"elapsed_ns"`
	Achieved  float64       `json:"achieved_pps"`
}

// Flood injects frames made by cfg.Pattern into cfg.Ifname of cfg.NS with AF_PACKET raw sockets
// (PACKET_QDISC_BYPASS, sendmmsg batches), paced by a token bucket per batch, until Count frames,
// Duration or ctx ends it. The frames leave towards the peer of the interface only.
func Flood(ctx context.Context, cfg FloodConfig) (FloodResult, error) {
	res := FloodResult{Requested: cfg.Rate}
	if cfg.Pattern == nil {
		return res, errors.New("flood: no pattern")
	}
	if cfg.Rate < 0 || cfg.Rate > MaxFloodRate {
		return res, fmt.Errorf("flood: rate %.0f out of range 0-%d", cfg.Rate, MaxFloodRate)
	}
	if cfg.Duration <= 0 && cfg.Count == 0 {
		return res, errors.New("flood: needs a count or a duration")
	}
	if cfg.Duration <= 0 || cfg.Duration > MaxFloodDuration {
		cfg.Duration = MaxFloodDuration
	}
	if cfg.Threads < 1 {
		cfg.Threads = 1
	}
	link := Link{Dst: cfg.DstMAC}
	fds := make([]int, 0, cfg.Threads)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for range cfg.Threads {
		var fd int
		err := netnsbed.Do(cfg.NS, func() error {
			ifi, err := net.InterfaceByName(cfg.Ifname)
			if err != nil {
				return err
			}
			link.Ifindex = ifi.Index
			link.Src = ifi.HardwareAddr
			fd, err = openTX(ifi.Index)
			return err
		})
		if err != nil {
			return res, fmt.Errorf("flood: %w", err)
		}
		fds = append(fds, fd)
	}
	batch := maxBatch
	if cfg.Rate > 0 {
		batch = min(maxBatch, max(1, int(cfg.Rate/4000)))
	}
	var next, sent, errs atomic.Uint64
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	var wg sync.WaitGroup
	for t, fd := range fds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := NewRand(cfg.Seed + uint64(t)*0x9E3779B97F4A7C15 + uint64(start.UnixNano()))
			s := newSender(fd, &link)
			for ctx.Err() == nil {
				n := uint64(batch)
				i := next.Add(n) - n
				if cfg.Count > 0 {
					if i >= cfg.Count {
						return
					}
					n = min(n, cfg.Count-i)
				}
				if cfg.Rate > 0 {
					due := start.Add(time.Duration(float64(i) / cfg.Rate * 1e9))
					if d := time.Until(due); d > 0 {
						if due.After(deadline) {
							return
						}
						time.Sleep(d)
					}
				}
				if time.Now().After(deadline) {
					return
				}
				for k := range int(n) {
					s.lens[k] = cfg.Pattern(s.bufs[k][:], i+uint64(k), rng)
				}
				ok, err := s.send(int(n))
				sent.Add(uint64(ok))
				if err != nil {
					errs.Add(n - uint64(ok))
				}
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.Sent = sent.Load()
	res.Errors = errs.Load()
	if res.Elapsed > 0 {
		res.Achieved = float64(res.Sent) / res.Elapsed.Seconds()
	}
	return res, nil
}

func openTX(ifindex int) (int, error) {
	// Protocol 0: the socket never receives.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("packet socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("PACKET_QDISC_BYPASS: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind: %w", err)
	}
	return fd, nil
}

type sender struct {
	fd   int
	to   unix.RawSockaddrLinklayer
	msgs [maxBatch]unix.Mmsghdr
	iovs [maxBatch]unix.Iovec
	bufs [maxBatch][frameBuf]byte
	lens [maxBatch]int
}

func newSender(fd int, l *Link) *sender {
	s := &sender{fd: fd}
	s.to.Family = unix.AF_PACKET
	s.to.Protocol = htons(unix.ETH_P_IP)
	s.to.Ifindex = int32(l.Ifindex)
	s.to.Halen = 6
	for i := range 6 {
		s.to.Addr[i] = l.Dst[i]
	}
	return s
}

func (s *sender) send(n int) (int, error) {
	for i := range n {
		s.iovs[i].Base = &s.bufs[i][0]
		s.iovs[i].SetLen(s.lens[i])
		h := &s.msgs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&s.to))
		h.Namelen = unix.SizeofSockaddrLinklayer
		h.Iov = &s.iovs[i]
		h.SetIovlen(1)
		s.msgs[i].Len = 0
	}
	done := 0
	for done < n {
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.msgs[done])), uintptr(n-done), 0, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return done, errno
		}
		if r == 0 {
			return done, unix.EAGAIN
		}
		done += int(r)
	}
	return done, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// InjectOnce sends frames, in order, as fast as the wire takes them (for the concurrency and
// sweep set-ups that need exact frames).
func InjectOnce(ns, ifname string, dst net.HardwareAddr, frames [][]byte) (FloodResult, error) {
	return Flood(context.Background(), FloodConfig{
		NS: ns, Ifname: ifname, DstMAC: dst, Count: uint64(len(frames)), Duration: time.Minute,
		Pattern: func(buf []byte, i uint64, _ *Rand) int { return copy(buf, frames[i]) },
	})
}
