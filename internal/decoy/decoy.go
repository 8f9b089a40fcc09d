// Package decoy runs listeners on decoy ports: a completed TCP handshake bans its source, a UDP datagram only alerts.
package decoy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/sesame-knock/sesame/internal/alert"
	"github.com/sesame-knock/sesame/internal/netport"
)

// Defaults for zero Options fields.
const (
	DefaultReadFor = 2 * time.Second
	DefaultReadMax = 256
	maxHandlers    = 64 // TCP visitors read at once; more are banned without reading
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
	Alert   func(alert.Event)
	ReadFor time.Duration
	ReadMax int
	Log     *slog.Logger
}

// Server holds the decoy listeners.
type Server struct {
	o   Options
	sem chan struct{}
}

// New returns a Server; Run listens.
func New(o Options) *Server {
	if o.ReadFor <= 0 {
		o.ReadFor = DefaultReadFor
	}
	if o.ReadMax <= 0 {
		o.ReadMax = DefaultReadMax
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
	return &Server{o: o, sem: make(chan struct{}, maxHandlers)}
}

// Run listens on every decoy port and serves until ctx ends. It fails at once when a port
// cannot be bound; it returns nil when ctx ends.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	var closers []func()
	var wg sync.WaitGroup
	defer func() {
		for _, c := range closers {
			c()
		}
		wg.Wait()
	}()
	for _, d := range s.o.Decoys {
		for _, p := range d.Ports {
			addr := net.JoinHostPort(s.o.Host, strconv.Itoa(int(p.Num)))
			switch p.Proto {
			case netport.TCP:
				l, err := lc.Listen(ctx, "tcp", addr)
				if err != nil {
					return fmt.Errorf("decoy %s: %w", p, err)
				}
				closers = append(closers, func() { l.Close() })
				wg.Add(1)
				go func() { defer wg.Done(); s.serveTCP(ctx, l, d, p) }()
			case netport.UDP:
				c, err := lc.ListenPacket(ctx, "udp", addr)
				if err != nil {
					return fmt.Errorf("decoy %s: %w", p, err)
				}
				closers = append(closers, func() { c.Close() })
				wg.Add(1)
				go func() { defer wg.Done(); s.serveUDP(ctx, c, p) }()
			default:
				return fmt.Errorf("decoy %s: only tcp and udp ports", p)
			}
		}
	}
	<-ctx.Done()
	return nil
}

func addrOf(a net.Addr) netip.Addr {
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func (s *Server) serveTCP(ctx context.Context, l net.Listener, d Decoy, p netport.Port) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
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
		// accept() returned: the handshake completed, so the source address answered our
		// SYN-ACK and is not spoofed (short of an on-path attacker).
		src := addrOf(c.RemoteAddr())
		banned := s.ban(ctx, src, d.BanFor, p)
		select {
		case s.sem <- struct{}{}:
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-s.sem }()
				data := s.talk(c, d)
				s.o.Alert(alert.Event{Kind: "decoy_connect", Src: src, Port: p.String(), Banned: banned,
					BanFor: d.BanFor.Milliseconds(), Data: data})
			}()
		default:
			c.Close()
			s.o.Alert(alert.Event{Kind: "decoy_connect", Src: src, Port: p.String(), Banned: banned,
				BanFor: d.BanFor.Milliseconds(), Reason: "too many visitors at once: not read"})
		}
	}
}

// talk sends the banner and reads the visitor's first bytes, bounded in size and time.
func (s *Server) talk(c net.Conn, d Decoy) []byte {
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
		data := append([]byte(nil), buf[:min(n, s.o.ReadMax)]...)
		s.o.Alert(alert.Event{Kind: "decoy_touch", Src: addrOf(from), Port: p.String(), Data: data,
			Reason: "udp: spoofable, not banned"})
	}
}

// Touch reports a SYN-only or otherwise spoofable touch of a decoy port seen by the capture: it
// alerts and never bans.
func (s *Server) Touch(src netip.Addr, p netport.Port) {
	s.o.Alert(alert.Event{Kind: "decoy_touch", Src: src.Unmap(), Port: p.String(), Reason: "no completed handshake: spoofable, not banned"})
}
