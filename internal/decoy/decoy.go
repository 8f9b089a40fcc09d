// Package decoy runs listeners on decoy ports: a completed TCP handshake bans its source, a UDP datagram or a SYN-only touch only alerts.
package decoy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sesame-knock/sesame/internal/alert"
	"github.com/sesame-knock/sesame/internal/netport"
)

// Defaults for zero Options fields.
const (
	DefaultReadFor = 2 * time.Second
	DefaultReadMax = 256
	// DefaultSYNGrace is how long a SYN seen by the capture waits for its handshake to
	// complete before it is reported as a SYN-only touch.
	DefaultSYNGrace = 3 * time.Second
	maxHandlers     = 64   // TCP visitors read at once; more are banned without reading
	maxPending      = 4096 // SYNs waiting for their handshake; past it a SYN alerts at once
)

// Decoy is one [[decoy]] section.
type Decoy struct {
	Ports  []netport.Port
	BanFor time.Duration // 0: alert only
	Banner string        // sent to a TCP visitor before reading
}

// Options configure a Server.
type Options struct {
	Decoys []Decoy
	// Host is the address the listeners bind to; empty is every address.
	Host string
	// Ban bans src for dur; reason names the decoy port.
	Ban func(ctx context.Context, src netip.Addr, dur time.Duration, reason string) error
	// NeverBan reports addresses that are never banned (they still alert).
	NeverBan func(netip.Addr) bool
	// Alert reports a visit; nil drops alerts.
	Alert    func(alert.Event)
	ReadFor  time.Duration
	ReadMax  int
	SYNGrace time.Duration
	Log      *slog.Logger
	Now      func() time.Time
}

// Stats count decoy touches by kind.
type Stats struct {
	Handshake uint64 // completed TCP handshakes (these may ban)
	SYN       uint64 // SYN-only touches: a SYN whose handshake did not complete (alert only)
	UDP       uint64 // UDP datagrams (alert only)
	// SYNOverflow counts SYNs reported at once because too many were waiting.
	SYNOverflow uint64
}

// Server holds the decoy listeners. Set changes them once started.
type Server struct {
	o   Options
	sem chan struct{}

	mu     sync.Mutex
	ctx    context.Context // Start's; nil before Start
	closed bool            // ctx ended and the listeners are closed
	wg     sync.WaitGroup
	ports  map[netport.Port]*listener
	// pending are SYNs seen by the capture that wait for their handshake; shook are
	// handshakes completed within the grace, for a SYN the capture reports late.
	pending map[touchKey]time.Time
	shook   map[touchKey]time.Time

	handshakes, syns, udps, synOverflow atomic.Uint64
}

type touchKey struct {
	src  netip.Addr
	port netport.Port
}

type listener struct {
	d     atomic.Pointer[Decoy]
	close func()
}

// New returns a Server; Run listens.
func New(o Options) *Server {
	if o.ReadFor <= 0 {
		o.ReadFor = DefaultReadFor
	}
	if o.ReadMax <= 0 {
		o.ReadMax = DefaultReadMax
	}
	if o.SYNGrace <= 0 {
		o.SYNGrace = DefaultSYNGrace
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Alert == nil {
		o.Alert = func(alert.Event) {}
	}
	if o.NeverBan == nil {
		o.NeverBan = func(netip.Addr) bool { return false }
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Server{o: o, sem: make(chan struct{}, maxHandlers), ports: map[netport.Port]*listener{},
		pending: map[touchKey]time.Time{}, shook: map[touchKey]time.Time{}}
}

// Run listens on every decoy port of Options and serves until ctx ends. It fails at once when
// a port cannot be bound; it returns nil when ctx ends, after every listener is closed.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	s.Wait()
	return nil
}

// Start binds every decoy port of Options and serves them until ctx ends; Set changes them
// meanwhile and Wait waits for the end. When a port cannot be bound nothing is left open.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.ctx != nil {
		s.mu.Unlock()
		return errors.New("decoy: start: already started")
	}
	s.ctx = ctx
	s.mu.Unlock()
	if err := s.Set(s.o.Decoys); err != nil {
		return err
	}
	s.wg.Go(func() {
		t := time.NewTicker(min(s.o.SYNGrace/4, 500*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				s.mu.Lock()
				s.closed = true
				for p, l := range s.ports {
					l.close()
					delete(s.ports, p)
				}
				s.mu.Unlock()
				return
			case <-t.C:
				s.flush(s.o.Now())
			}
		}
	})
	return nil
}

// Wait waits until the listeners of a started Server are closed and their visitors handled.
func (s *Server) Wait() { s.wg.Wait() }

// Set makes the listeners those of ds: ports new in ds are bound first (when one cannot be,
// those just bound are closed again and nothing changes), ports kept take their new settings,
// then ports gone from ds are closed. It needs Start first.
func (s *Server) Set(ds []Decoy) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil || s.closed {
		return errors.New("decoy: set: not running")
	}
	want := map[netport.Port]*Decoy{}
	for i := range ds {
		for _, p := range ds[i].Ports {
			want[p] = &ds[i]
		}
	}
	opened := map[netport.Port]*listener{}
	for p, d := range want {
		if _, ok := s.ports[p]; ok {
			continue
		}
		l, err := s.listen(p, d)
		if err != nil {
			for _, o := range opened {
				o.close()
			}
			return err
		}
		opened[p] = l
	}
	for p, l := range s.ports {
		if d, ok := want[p]; ok {
			l.d.Store(d)
			continue
		}
		l.close()
		delete(s.ports, p)
	}
	for p, l := range opened {
		s.ports[p] = l
	}
	return nil
}

// Ports lists the ports listened on now, sorted.
func (s *Server) Ports() []netport.Port {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netport.Port, 0, len(s.ports))
	for p := range s.ports {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netport.Port) int {
		if a.Proto != b.Proto {
			return int(a.Proto) - int(b.Proto)
		}
		return int(a.Num) - int(b.Num)
	})
	return out
}

// listen binds p and serves it; mu is held.
func (s *Server) listen(p netport.Port, d *Decoy) (*listener, error) {
	var lc net.ListenConfig
	addr := net.JoinHostPort(s.o.Host, strconv.Itoa(int(p.Num)))
	l := &listener{}
	l.d.Store(d)
	switch p.Proto {
	case netport.TCP:
		ln, err := lc.Listen(s.ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("decoy %s: %w", p, err)
		}
		l.close = func() { ln.Close() }
		s.wg.Go(func() { s.serveTCP(s.ctx, ln, l, p) })
	case netport.UDP:
		c, err := lc.ListenPacket(s.ctx, "udp", addr)
		if err != nil {
			return nil, fmt.Errorf("decoy %s: %w", p, err)
		}
		l.close = func() { c.Close() }
		s.wg.Go(func() { s.serveUDP(s.ctx, c, p) })
	default:
		return nil, fmt.Errorf("decoy %s: only tcp and udp ports", p)
	}
	return l, nil
}

func addrOf(a net.Addr) netip.Addr {
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func (s *Server) serveTCP(ctx context.Context, ln net.Listener, l *listener, p netport.Port) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.o.Log.Warn("decoy: accept", "port", p.String(), "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		d := l.d.Load()
		// accept() returned: the handshake completed, so the source address answered our
		// SYN-ACK and is not spoofed (short of an on-path attacker).
		src := addrOf(c.RemoteAddr())
		s.handshakes.Add(1)
		s.shake(src, p)
		banned := s.ban(ctx, src, d.BanFor, p)
		select {
		case s.sem <- struct{}{}:
			wg.Go(func() {
				defer func() { <-s.sem }()
				data := s.talk(c, d)
				s.o.Alert(alert.Event{Kind: "decoy_connect", Src: src, Port: p.String(), Banned: banned,
					BanFor: d.BanFor.Milliseconds(), Data: data})
			})
		default:
			c.Close()
			s.o.Alert(alert.Event{Kind: "decoy_connect", Src: src, Port: p.String(), Banned: banned,
				BanFor: d.BanFor.Milliseconds(), Reason: "too many visitors at once: not read"})
		}
	}
}

// talk sends the banner and reads the visitor's first bytes, bounded in size and time.
func (s *Server) talk(c net.Conn, d *Decoy) []byte {
	defer c.Close()
	c.SetDeadline(time.Now().Add(s.o.ReadFor))
	if d.Banner != "" {
		if _, err := c.Write([]byte(d.Banner)); err != nil {
			return nil
		}
	}
	buf := make([]byte, s.o.ReadMax)
	n := 0
	for n < len(buf) {
		k, err := c.Read(buf[n:])
		n += k
		if err != nil {
			break
		}
	}
	return buf[:n]
}

// ban bans src unless it is exempt or the decoy only alerts; it reports whether it banned.
func (s *Server) ban(ctx context.Context, src netip.Addr, dur time.Duration, p netport.Port) bool {
	if !src.IsValid() || dur <= 0 || s.o.Ban == nil {
		return false
	}
	if s.o.NeverBan(src) {
		s.o.Log.Info("decoy: not banning a never_ban address", "src", src.String(), "port", p.String())
		return false
	}
	if err := s.o.Ban(ctx, src, dur, "decoy "+p.String()); err != nil {
		s.o.Log.Error("decoy: ban failed", "src", src.String(), "port", p.String(), "err", err)
		return false
	}
	return true
}

// serveUDP alerts on every datagram (rate-limited per source by the alerter) and never bans or
// answers: a datagram's source address is trivially forged, and an answer would reflect.
func (s *Server) serveUDP(ctx context.Context, c net.PacketConn, p netport.Port) {
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.udps.Add(1)
		data := append([]byte(nil), buf[:min(n, s.o.ReadMax)]...)
		s.o.Alert(alert.Event{Kind: "decoy_touch", Src: addrOf(from), Port: p.String(), Data: data,
			Reason: "udp: spoofable, not banned"})
	}
}

// Touch reports a SYN to a TCP decoy port seen by the capture at t. When no handshake from the
// same source to the same port completes within the SYN grace, it alerts as a SYN-only touch
// and never bans: a SYN's source address is trivially forged. A handshake that completes is
// reported (and bans) through the listener alone.
func (s *Server) Touch(src netip.Addr, p netport.Port, t time.Time) {
	k := touchKey{src.Unmap(), p}
	s.mu.Lock()
	if st, ok := s.shook[k]; ok && t.Sub(st) < s.o.SYNGrace {
		s.mu.Unlock()
		return
	}
	if _, ok := s.pending[k]; ok {
		s.mu.Unlock()
		return // a retransmitted SYN
	}
	if len(s.pending) < maxPending {
		s.pending[k] = t
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.synOverflow.Add(1)
	s.synTouch(k)
}

// shake records a completed handshake: a SYN waiting for it is no touch.
func (s *Server) shake(src netip.Addr, p netport.Port) {
	k := touchKey{src, p}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, k)
	if len(s.shook) >= maxPending {
		s.expireShook(s.o.Now())
		if len(s.shook) >= maxPending {
			return
		}
	}
	s.shook[k] = s.o.Now()
}

func (s *Server) expireShook(now time.Time) {
	for k, t := range s.shook {
		if now.Sub(t) >= s.o.SYNGrace {
			delete(s.shook, k)
		}
	}
}

// flush reports the SYNs whose grace has passed at now.
func (s *Server) flush(now time.Time) {
	var due []touchKey
	s.mu.Lock()
	for k, t := range s.pending {
		if now.Sub(t) >= s.o.SYNGrace {
			due = append(due, k)
			delete(s.pending, k)
		}
	}
	s.expireShook(now)
	s.mu.Unlock()
	for _, k := range due {
		s.synTouch(k)
	}
}

func (s *Server) synTouch(k touchKey) {
	s.syns.Add(1)
	s.o.Alert(alert.Event{Kind: "decoy_touch", Src: k.src, Port: k.port.String(), Reason: "syn without a completed handshake: spoofable, not banned"})
}

// Stats returns the touch counters.
func (s *Server) Stats() Stats {
	return Stats{Handshake: s.handshakes.Load(), SYN: s.syns.Load(), UDP: s.udps.Load(), SYNOverflow: s.synOverflow.Load()}
}
