package server

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/netport"
)

// SPAPorts lists the UDP ports whose packets the capture hands whole to the SPA handler: the SPA
// port in sniff mode, none otherwise (a socket receives them).
func SPAPorts(cfg *config.Config) []uint16 {
	if cfg.SPA == nil || !cfg.SPA.Sniff {
		return nil
	}
	return []uint16{cfg.SPA.Port}
}

// spaProtected lists the ports the gate protects for SPA: every port a client may open and, in
// sniff mode, the SPA port itself, so that nothing answers on it.
func spaProtected(cfg *config.Config, have []netport.Port) []netport.Port {
	out := have
	for _, p := range cfg.SPA.Protected() {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// spaPacket hands p to the SPA handler when it is a sniffed SPA packet, and reports whether it
// did.
func (s *Server) spaPacket(p *capture.Packet) bool {
	if s.deps.SPA == nil || p.Proto != netport.UDP {
		return false
	}
	s.mu.Lock()
	spa := s.cfg.SPA
	s.mu.Unlock()
	if spa == nil || !spa.Sniff || p.DstPort != spa.Port {
		return false
	}
	s.handleSPA(p.Src, p.Payload)
	return true
}

// handleSPA checks one SPA payload and applies the grants it earns.
func (s *Server) handleSPA(src netip.Addr, payload []byte) {
	ctx := s.ctx
	if ctx == nil || ctx.Err() != nil {
		ctx = context.Background()
	}
	grants, err := s.deps.SPA.Handle(ctx, src, payload, s.deps.Firewall.Grant)
	if len(grants) == 0 {
		return
	}
	s.Counters.Opened.Add(1)
	if err != nil {
		s.Counters.GrantErrors.Add(1) // logged by the handler, with the request
	}
}

// startSPA runs the SPA socket intake, when there is one, until ctx ends; the returned function
// waits for it.
func (s *Server) startSPA(ctx context.Context) (wait func()) {
	s.mu.Lock()
	cfg := s.cfg.SPA
	s.mu.Unlock()
	if cfg != nil && s.deps.SPA != nil {
		mode := "udp socket"
		if cfg.Sniff {
			mode = "sniff"
		}
		s.log.Info("spa enabled", "port", cfg.Port, "mode", mode, "clients", len(cfg.Clients), "max_age", cfg.MaxAge)
		for _, w := range cfg.Warnings {
			s.log.Warn("spa configuration: " + w)
		}
	}
	if s.deps.SPAIntake == nil || s.deps.SPA == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		err := s.deps.SPAIntake.Run(ctx, func(p *capture.Packet) {
			s.Counters.Packets.Add(1)
			s.handleSPA(p.Src, p.Payload)
		})
		if err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
			s.log.Error("spa listener stopped", "err", err)
		}
	})
	return func() { cancel(); wg.Wait() }
}
