package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
)

// applyForwarding puts cfg's forwarding rules in place when any SPA client may be granted a
// forward (its destinations, and the table the forwards live in); a backend that cannot
// forward is an error then. Without forwards it changes nothing, unless the running
// configuration (prev, nil at start) had them: then the destinations are cleared and live
// forwards run out their time.
func (s *Server) applyForwarding(ctx context.Context, cfg, prev *config.Config) error {
	if !cfg.SPA.HasForwards() && (prev == nil || !prev.SPA.HasForwards()) {
		return nil
	}
	fw := s.forwarder()
	if fw == nil {
		return errors.New("SPA clients have forwards, and this firewall backend cannot forward (use firewall = \"nftables\")")
	}
	if err := fw.ApplyForwarding(ctx, cfg.SPA.Destinations()); err != nil {
		return fmt.Errorf("apply forwarding: %w", err)
	}
	s.forwarding.Store(true)
	return nil
}

// liveForwards lists the live forwards once forwarding was set up in this run (nil before).
func (s *Server) liveForwards(ctx context.Context) ([]firewall.Grant, error) {
	fw := s.forwarder()
	if fw == nil || !s.forwarding.Load() {
		return nil, nil
	}
	return fw.ListForwards(ctx)
}

// grantAll applies grants: forwards through the backend's Forwarder, the others with Grant.
func (s *Server) grantAll(ctx context.Context, grants []firewall.Grant) error {
	var plain, fwds []firewall.Grant
	for _, g := range grants {
		if g.IsForward() {
			fwds = append(fwds, g)
		} else {
			plain = append(plain, g)
		}
	}
	if len(fwds) == 0 {
		return s.deps.Firewall.Grant(ctx, grants...)
	}
	fw := s.forwarder()
	if fw == nil {
		return errors.New("grant: a forward, and this firewall backend cannot forward")
	}
	if err := fw.Forward(ctx, fwds...); err != nil {
		return err
	}
	if len(plain) == 0 {
		return nil
	}
	return s.deps.Firewall.Grant(ctx, plain...)
}

// forwarder returns the firewall's Forwarder, or nil when it cannot forward; a wrapping
// backend exposes the one it wraps with Unwrap (as for banner).
func (s *Server) forwarder() firewall.Forwarder {
	fw := s.deps.Firewall
	for range 8 {
		if f, ok := fw.(firewall.Forwarder); ok {
			return f
		}
		u, ok := fw.(interface{ Unwrap() firewall.Backend })
		if !ok {
			return nil
		}
		fw = u.Unwrap()
	}
	return nil
}
